//! ECIES key wrapping to a member certificate's P-256 key: an ephemeral key pair, ECDH with the
//! recipient's public key, HKDF-SHA256 over the shared x-coordinate (salted with both public
//! points, so a wrapping is bound to its recipient), and AES-256-GCM over the 32-byte data key.
//!
//! Wire form (114 bytes): version `1` | ephemeral public point, uncompressed (65) | encrypted key
//! (32) | tag (16).

use openssl::bn::BigNumContext;
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey, EcPoint, EcPointRef, PointConversionForm};
use openssl::md::Md;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::pkey_ctx::PkeyCtx;

use crate::{CryptoError, DataKey};

/// Bytes of a wrapped key.
pub const WRAPPED_LEN: usize = 1 + 65 + 32 + 16;
const VERSION: u8 = 1;
const INFO: &[u8] = b"neurodata/key-wrap/v1";

/// A data key wrapped to one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    /// The ephemeral public point, uncompressed SEC1.
    pub ephemeral: [u8; 65],
    /// The encrypted key followed by its tag.
    pub sealed: [u8; 48],
}

impl WrappedKey {
    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(WRAPPED_LEN);
        v.push(VERSION);
        v.extend_from_slice(&self.ephemeral);
        v.extend_from_slice(&self.sealed);
        v
    }

    /// Parses the wire form (the ephemeral point must be on P-256).
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        let bad = |reason: String| CryptoError::Malformed {
            what: "wrapped key",
            reason,
        };
        if bytes.len() != WRAPPED_LEN {
            return Err(bad(format!(
                "{} bytes, expected {WRAPPED_LEN}",
                bytes.len()
            )));
        }
        if bytes[0] != VERSION {
            return Err(bad(format!("version {}, expected {VERSION}", bytes[0])));
        }
        let mut ephemeral = [0u8; 65];
        ephemeral.copy_from_slice(&bytes[1..66]);
        point(&ephemeral).map_err(|_| bad("ephemeral key is not a P-256 point".into()))?;
        let mut sealed = [0u8; 48];
        sealed.copy_from_slice(&bytes[66..]);
        Ok(WrappedKey { ephemeral, sealed })
    }
}

pub(crate) fn group() -> Result<EcGroup, CryptoError> {
    Ok(EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?)
}

/// Decodes an uncompressed or compressed P-256 point (checked to be on the curve, not infinity).
pub(crate) fn point(bytes: &[u8]) -> Result<EcPoint, CryptoError> {
    let group = group()?;
    let mut ctx = BigNumContext::new()?;
    let p = EcPoint::from_bytes(&group, bytes, &mut ctx)?;
    if p.is_infinity(&group) || !p.is_on_curve(&group, &mut ctx)? {
        return Err(CryptoError::Malformed {
            what: "point",
            reason: "not a P-256 point".into(),
        });
    }
    Ok(p)
}

pub(crate) fn point_bytes(p: &EcPointRef) -> Result<[u8; 65], CryptoError> {
    let group = group()?;
    let mut ctx = BigNumContext::new()?;
    let v = p.to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)?;
    <[u8; 65]>::try_from(v.as_slice()).map_err(|_| CryptoError::Malformed {
        what: "point",
        reason: "not 65 bytes uncompressed".into(),
    })
}

/// The P-256 public key in a SubjectPublicKeyInfo (DER), as the chain stores it per identity.
pub fn recipient_key(spki_der: &[u8]) -> Result<EcKey<Public>, CryptoError> {
    let bad = |reason: &str| CryptoError::Malformed {
        what: "recipient public key",
        reason: reason.into(),
    };
    let pkey = PKey::public_key_from_der(spki_der).map_err(|_| bad("not an SPKI DER"))?;
    let ec = pkey.ec_key().map_err(|_| bad("not an EC key"))?;
    if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
        return Err(bad("not a P-256 key"));
    }
    Ok(ec)
}

/// AES key and nonce for one wrapping, from the shared x-coordinate and both public points.
pub(crate) fn wrapping_key(
    shared_x: &[u8],
    ephemeral: &[u8; 65],
    recipient: &[u8; 65],
) -> Result<[u8; 44], CryptoError> {
    let mut salt = Vec::with_capacity(130);
    salt.extend_from_slice(ephemeral);
    salt.extend_from_slice(recipient);
    let mut ctx = PkeyCtx::new_id(Id::HKDF)?;
    ctx.derive_init()?;
    ctx.set_hkdf_md(Md::sha256())?;
    ctx.set_hkdf_key(shared_x)?;
    ctx.set_hkdf_salt(&salt)?;
    ctx.add_hkdf_info(INFO)?;
    let mut okm = [0u8; 44];
    ctx.derive(Some(&mut okm))?;
    Ok(okm)
}

fn seal(okm: &[u8; 44], key: &DataKey) -> Result<[u8; 48], CryptoError> {
    let mut ctx = CipherCtx::new()?;
    ctx.encrypt_init(
        Some(Cipher::aes_256_gcm()),
        Some(&okm[..32]),
        Some(&okm[32..]),
    )?;
    ctx.cipher_update(INFO, None)?;
    let mut out = [0u8; 48];
    let n = ctx.cipher_update(key.as_bytes(), Some(&mut out[..32]))?;
    ctx.cipher_final(&mut out[n..32])?;
    ctx.tag(&mut out[32..])?;
    Ok(out)
}

/// Opens the sealed key with a derived wrapping key; None if it does not authenticate.
pub(crate) fn open(okm: &[u8; 44], sealed: &[u8; 48]) -> Result<Option<DataKey>, CryptoError> {
    let mut ctx = CipherCtx::new()?;
    ctx.decrypt_init(
        Some(Cipher::aes_256_gcm()),
        Some(&okm[..32]),
        Some(&okm[32..]),
    )?;
    ctx.set_tag(&sealed[32..])?;
    ctx.cipher_update(INFO, None)?;
    let mut key = [0u8; 32];
    let ok = ctx
        .cipher_update(&sealed[..32], Some(&mut key))
        .and_then(|n| ctx.cipher_final(&mut key[n..]))
        .is_ok();
    Ok(ok.then(|| DataKey::from_bytes(key)))
}

/// Wraps `key` to the holder of the private key of `recipient_spki` (SPKI DER).
pub fn wrap(key: &DataKey, recipient_spki: &[u8]) -> Result<WrappedKey, CryptoError> {
    let recipient = recipient_key(recipient_spki)?;
    let group = group()?;
    let ephemeral = EcKey::generate(&group)?;
    let ephemeral_pub = point_bytes(ephemeral.public_key())?;
    let recipient_pub = point_bytes(recipient.public_key())?;
    let ephemeral = PKey::from_ec_key(ephemeral)?;
    let peer = PKey::from_ec_key(recipient)?;
    let mut deriver = Deriver::new(&ephemeral)?;
    deriver.set_peer(&peer)?;
    let shared_x = deriver.derive_to_vec()?;
    let okm = wrapping_key(&shared_x, &ephemeral_pub, &recipient_pub)?;
    Ok(WrappedKey {
        ephemeral: ephemeral_pub,
        sealed: seal(&okm, key)?,
    })
}

/// Unwraps with the recipient's private key.
pub fn unwrap(wrapped: &WrappedKey, private: &PKey<Private>) -> Result<DataKey, CryptoError> {
    let ec = private.ec_key()?;
    let recipient_pub = point_bytes(ec.public_key())?;
    let group = group()?;
    let eph = EcKey::from_public_key(&group, &*point(&wrapped.ephemeral)?)?;
    let eph = PKey::from_ec_key(eph)?;
    let mut deriver = Deriver::new(private)?;
    deriver.set_peer(&eph)?;
    let shared_x = deriver.derive_to_vec()?;
    let okm = wrapping_key(&shared_x, &wrapped.ephemeral, &recipient_pub)?;
    open(&okm, &wrapped.sealed)?.ok_or(CryptoError::UnwrapFailed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use neurodata_certs::{OrgCa, Role, Validity};

    /// A real member certificate's SPKI and private key.
    pub(crate) fn member(role: Role, cn: &str) -> (Vec<u8>, PKey<Private>) {
        let validity = Validity::days_from(1_700_000_000, 30);
        let ca = OrgCa::create("medlab", "MedLab", validity).unwrap();
        let m = ca.issue(cn, role, validity).unwrap();
        let spki = m.cert.public_key().unwrap().public_key_to_der().unwrap();
        (spki, m.key)
    }

    #[test]
    fn wraps_to_a_certificate_key_and_only_that_key_unwraps() {
        let (spki, private) = member(Role::Buyer, "bob");
        let (_, other) = member(Role::Buyer, "eve");
        let key = DataKey::generate().unwrap();
        let w = wrap(&key, &spki).unwrap();
        let bytes = w.to_bytes();
        assert_eq!(bytes.len(), WRAPPED_LEN);
        let parsed = WrappedKey::parse(&bytes).unwrap();
        assert_eq!(unwrap(&parsed, &private).unwrap(), key);
        assert!(matches!(
            unwrap(&parsed, &other).unwrap_err(),
            CryptoError::UnwrapFailed
        ));
        // Two wrappings of one key differ (fresh ephemeral key each time).
        assert_ne!(wrap(&key, &spki).unwrap(), w);
    }

    #[test]
    fn altered_or_malformed_wrappings_are_refused() {
        let (spki, private) = member(Role::Buyer, "bob");
        let w = wrap(&DataKey::generate().unwrap(), &spki).unwrap();
        let mut bytes = w.to_bytes();
        bytes[70] ^= 1;
        let altered = WrappedKey::parse(&bytes).unwrap();
        assert!(matches!(
            unwrap(&altered, &private).unwrap_err(),
            CryptoError::UnwrapFailed
        ));
        assert!(WrappedKey::parse(&bytes[..100]).is_err());
        let mut v2 = w.to_bytes();
        v2[0] = 2;
        assert!(WrappedKey::parse(&v2).is_err());
        let mut off_curve = w.to_bytes();
        off_curve[5] ^= 0xff;
        assert!(WrappedKey::parse(&off_curve).is_err());
        assert!(wrap(&DataKey::generate().unwrap(), b"not a key").is_err());
    }

    #[test]
    fn known_answer_of_the_key_derivation() {
        // RFC 5869 test case 1 shape, through our call: pins that HKDF-SHA256 (extract+expand)
        // is what runs. IKM 22 x 0x0b, salt 0x00..0x0c, info f0..f9, first 42 bytes.
        let mut ctx = PkeyCtx::new_id(Id::HKDF).unwrap();
        ctx.derive_init().unwrap();
        ctx.set_hkdf_md(Md::sha256()).unwrap();
        ctx.set_hkdf_key(&[0x0b; 22]).unwrap();
        ctx.set_hkdf_salt(&(0u8..=0x0c).collect::<Vec<_>>())
            .unwrap();
        ctx.add_hkdf_info(&(0xf0u8..=0xf9).collect::<Vec<_>>())
            .unwrap();
        let mut okm = [0u8; 42];
        ctx.derive(Some(&mut okm)).unwrap();
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }
}
