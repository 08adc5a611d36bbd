//! Proving a delivered key wrong without giving away the private key.
//!
//! A wrapping's ECDH shared point is `S = b·E` (`b` the buyer's private key, `E` the ephemeral
//! point in the wrapping, `B = b·G` the buyer's certified public key). The buyer reveals `S` with
//! a Chaum–Pedersen proof that `log_G(B) = log_E(S)`, made non-interactive with SHA-256
//! (Fiat–Shamir). Anyone holding the wrapping, the buyer's certificate and the proof can then
//! derive the wrapping key, open the wrapped data key and compare it with the dataset's
//! commitment, deterministically, which is what the chain does to settle a dispute. `S` opens
//! only this one wrapping; `b` stays secret.
//!
//! Wire form (129 bytes): `S` uncompressed (65) | challenge `c` (32) | response `z` (32).

use openssl::bn::{BigNum, BigNumContext, BigNumRef};
use openssl::ec::{EcGroupRef, EcPoint, EcPointRef};
use openssl::pkey::{PKey, Private};
use openssl::sha::Sha256;

use crate::wrap::{WrappedKey, group, point, point_bytes, recipient_key, wrapping_key};
use crate::{CryptoError, DataKey};

/// Bytes of a proof.
pub const PROOF_LEN: usize = 65 + 32 + 32;
const DOMAIN: &[u8] = b"neurodata/dleq/v1";

/// The revealed shared point of one wrapping and the proof that it is correct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedSecretProof {
    /// `S = b·E`, uncompressed.
    pub shared_point: [u8; 65],
    /// Challenge.
    pub c: [u8; 32],
    /// Response.
    pub z: [u8; 32],
}

impl SharedSecretProof {
    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.shared_point[..], &self.c, &self.z].concat()
    }

    /// Parses the wire form.
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != PROOF_LEN {
            return Err(CryptoError::Malformed {
                what: "shared-secret proof",
                reason: format!("{} bytes, expected {PROOF_LEN}", bytes.len()),
            });
        }
        let mut p = SharedSecretProof {
            shared_point: [0; 65],
            c: [0; 32],
            z: [0; 32],
        };
        p.shared_point.copy_from_slice(&bytes[..65]);
        p.c.copy_from_slice(&bytes[65..97]);
        p.z.copy_from_slice(&bytes[97..]);
        Ok(p)
    }
}

fn challenge(
    group: &EcGroupRef,
    points: [&EcPointRef; 5],
    ctx: &mut BigNumContext,
) -> Result<BigNum, CryptoError> {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    for p in points {
        h.update(&point_bytes(p)?);
    }
    let digest = BigNum::from_slice(&h.finish())?;
    let mut order = BigNum::new()?;
    group.order(&mut order, ctx)?;
    let mut c = BigNum::new()?;
    c.nnmod(&digest, &order, ctx)?;
    Ok(c)
}

fn to32(n: &BigNumRef) -> Result<[u8; 32], CryptoError> {
    let v = n.to_vec_padded(32)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&v);
    Ok(out)
}

/// The recipient proves the shared point of `wrapped`.
pub fn prove(
    wrapped: &WrappedKey,
    private: &PKey<Private>,
) -> Result<SharedSecretProof, CryptoError> {
    let group = group()?;
    let mut ctx = BigNumContext::new()?;
    let ec = private.ec_key()?;
    let b = ec.private_key();
    let big_b = ec.public_key();
    let e = point(&wrapped.ephemeral)?;
    let mut s = EcPoint::new(&group)?;
    s.mul2(&group, &e, b, &mut ctx)?;

    let mut order = BigNum::new()?;
    group.order(&mut order, &mut ctx)?;
    let mut k = BigNum::new()?;
    order.rand_range(&mut k)?;
    let mut a1 = EcPoint::new(&group)?;
    a1.mul_generator2(&group, &k, &mut ctx)?;
    let mut a2 = EcPoint::new(&group)?;
    a2.mul2(&group, &e, &k, &mut ctx)?;
    let c = challenge(&group, [big_b, &e, &s, &a1, &a2], &mut ctx)?;
    // z = k + c·b (mod n)
    let mut cb = BigNum::new()?;
    cb.mod_mul(&c, b, &order, &mut ctx)?;
    let mut z = BigNum::new()?;
    z.mod_add(&k, &cb, &order, &mut ctx)?;
    Ok(SharedSecretProof {
        shared_point: point_bytes(&s)?,
        c: to32(&c)?,
        z: to32(&z)?,
    })
}

/// Checks the proof against the wrapping and the recipient's SPKI, then opens the wrapping with
/// the revealed shared point: `Some(key)` is the key the sender actually delivered, `None` means
/// the wrapping does not even open (garbage was delivered). Err: the proof is invalid.
pub fn reveal(
    wrapped: &WrappedKey,
    recipient_spki: &[u8],
    proof: &SharedSecretProof,
) -> Result<Option<DataKey>, CryptoError> {
    let group = group()?;
    let mut ctx = BigNumContext::new()?;
    let recipient = recipient_key(recipient_spki)?;
    let big_b = recipient.public_key();
    let e = point(&wrapped.ephemeral)?;
    let s = point(&proof.shared_point).map_err(|_| CryptoError::BadProof)?;
    let mut order = BigNum::new()?;
    group.order(&mut order, &mut ctx)?;
    let c = BigNum::from_slice(&proof.c)?;
    let z = BigNum::from_slice(&proof.z)?;
    if c >= order || z >= order {
        return Err(CryptoError::BadProof);
    }
    // A1 = z·G − c·B, A2 = z·E − c·S
    let mut neg_c = BigNum::new()?;
    neg_c.mod_sub(&order, &c, &order, &mut ctx)?;
    let mut a1 = EcPoint::new(&group)?;
    a1.mul_full(&group, &z, big_b, &neg_c, &mut ctx)?;
    let mut ze = EcPoint::new(&group)?;
    ze.mul2(&group, &e, &z, &mut ctx)?;
    let mut cs = EcPoint::new(&group)?;
    cs.mul2(&group, &s, &neg_c, &mut ctx)?;
    let mut a2 = EcPoint::new(&group)?;
    a2.add(&group, &ze, &cs, &mut ctx)?;
    if a1.is_infinity(&group) || a2.is_infinity(&group) {
        return Err(CryptoError::BadProof);
    }
    let expected = challenge(&group, [big_b, &e, &s, &a1, &a2], &mut ctx)?;
    if expected != c {
        return Err(CryptoError::BadProof);
    }
    let (x, _) = affine_x(&group, &s, &mut ctx)?;
    let okm = wrapping_key(&x, &wrapped.ephemeral, &point_bytes(big_b)?)?;
    crate::wrap::open(&okm, &wrapped.sealed)
}

fn affine_x(
    group: &EcGroupRef,
    p: &EcPointRef,
    ctx: &mut BigNumContext,
) -> Result<([u8; 32], [u8; 32]), CryptoError> {
    let mut x = BigNum::new()?;
    let mut y = BigNum::new()?;
    p.affine_coordinates(group, &mut x, &mut y, ctx)?;
    Ok((to32(&x)?, to32(&y)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrap::{tests::member, wrap};
    use neurodata_certs::Role;

    #[test]
    fn a_valid_proof_reveals_exactly_the_delivered_key() {
        let (spki, private) = member(Role::Buyer, "bob");
        let delivered = DataKey::generate().unwrap();
        let w = wrap(&delivered, &spki).unwrap();
        let proof = prove(&w, &private).unwrap();
        let parsed = SharedSecretProof::parse(&proof.to_bytes()).unwrap();
        assert_eq!(reveal(&w, &spki, &parsed).unwrap(), Some(delivered));
    }

    #[test]
    fn garbage_wrappings_open_to_none_under_a_valid_proof() {
        let (spki, private) = member(Role::Buyer, "bob");
        let mut w = wrap(&DataKey::generate().unwrap(), &spki).unwrap();
        w.sealed[0] ^= 1;
        let proof = prove(&w, &private).unwrap();
        assert_eq!(reveal(&w, &spki, &proof).unwrap(), None);
    }

    #[test]
    fn forged_or_mismatched_proofs_are_refused() {
        let (spki, private) = member(Role::Buyer, "bob");
        let (other_spki, other) = member(Role::Buyer, "eve");
        let w = wrap(&DataKey::generate().unwrap(), &spki).unwrap();
        let good = prove(&w, &private).unwrap();
        // Someone else's proof for this wrapping (a different S) does not verify for bob.
        let eve = prove(&w, &other).unwrap();
        assert!(matches!(
            reveal(&w, &spki, &eve).unwrap_err(),
            CryptoError::BadProof
        ));
        // Nor does bob's proof for eve's key.
        assert!(reveal(&w, &other_spki, &good).is_err());
        // Tweaked challenge or response.
        let mut bad = good.clone();
        bad.z[31] ^= 1;
        assert!(reveal(&w, &spki, &bad).is_err());
        let mut bad = good.clone();
        bad.c[0] ^= 0x80;
        assert!(reveal(&w, &spki, &bad).is_err());
        // A point not on the curve.
        let mut bad = good.clone();
        bad.shared_point[10] ^= 1;
        assert!(reveal(&w, &spki, &bad).is_err());
        // A proof for another wrapping of the same recipient.
        let w2 = wrap(&DataKey::generate().unwrap(), &spki).unwrap();
        assert!(reveal(&w2, &spki, &good).is_err());
        assert!(SharedSecretProof::parse(&[0; 10]).is_err());
    }
}
