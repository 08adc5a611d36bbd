//! Parsing and checking X.509 certificates: structure with x509-parser, signatures with OpenSSL.
//! Nothing here reads the wall clock: validity is compared with the block time by the caller.

use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{MembershipError, MembershipRead};
use crate::TxError;
use crate::state::StateRead;
use neurodata_proto::chain::v1 as pb;

fn bad(reason: impl std::fmt::Display) -> MembershipError {
    MembershipError::BadCertificate(reason.to_string())
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, MembershipError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| bad(format!("not DER X.509: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the certificate"));
    }
    Ok(cert)
}

/// Loads a SubjectPublicKeyInfo and insists on ECDSA P-256, the one signature scheme the chain
/// verifies (one rule everywhere keeps verification consensus-safe).
pub fn p256_public_key(spki: &[u8]) -> Result<PKey<Public>, MembershipError> {
    let key = PKey::public_key_from_der(spki).map_err(|e| bad(format!("public key: {e}")))?;
    let ec = key.ec_key().map_err(|_| MembershipError::KeyNotP256)?;
    if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
        return Err(MembershipError::KeyNotP256);
    }
    Ok(key)
}

/// SHA-256 of bytes, as a fixed array.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// An org root CA certificate, checked for use as a membership anchor.
#[derive(Clone, Debug)]
pub struct CaCertificate {
    /// DER bytes.
    pub der: Vec<u8>,
    /// SHA-256 of `der`.
    pub fingerprint: [u8; 32],
    /// SHA-256 of the subject name DER (what member certificates name as issuer).
    pub subject_hash: [u8; 32],
    /// Subject CN (for expiry notices and listings).
    pub common_name: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

impl CaCertificate {
    /// Parses a PEM root CA: a self-signed, CA:TRUE, P-256 certificate.
    pub fn from_pem(pem: &str) -> Result<Self, MembershipError> {
        let x509 = X509::from_pem(pem.as_bytes()).map_err(|e| bad(format!("CA PEM: {e}")))?;
        let der = x509.to_der().map_err(bad)?;
        Self::from_der(&der)
    }

    /// Parses a DER root CA.
    pub fn from_der(der: &[u8]) -> Result<Self, MembershipError> {
        let cert = parse(der)?;
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| bad(format!("basicConstraints: {e}")))?
            .map(|b| b.value.ca)
            .unwrap_or(false);
        if !is_ca {
            return Err(MembershipError::RootNotCa);
        }
        if cert.subject().as_raw() != cert.issuer().as_raw() {
            return Err(MembershipError::RootNotSelfSigned);
        }
        let key = p256_public_key(cert.public_key().raw)?;
        let x509 = X509::from_der(der).map_err(bad)?;
        if !x509.verify(&key).map_err(bad)? {
            return Err(MembershipError::RootSignatureInvalid);
        }
        Ok(CaCertificate {
            der: der.to_vec(),
            fingerprint: sha256(der),
            subject_hash: sha256(cert.subject().as_raw()),
            common_name: common_name(&cert),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

/// A member certificate, parsed but not yet checked against the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberCertificate {
    /// DER bytes.
    pub der: Vec<u8>,
    /// SHA-256 of `der`: the signer id.
    pub fingerprint: [u8; 32],
    /// SHA-256 of the issuer name DER.
    pub issuer_hash: [u8; 32],
    /// Issuer name, for error messages.
    pub issuer: String,
    /// Subject CN.
    pub common_name: String,
    /// OU (the role, checked against the known roles).
    pub role: super::Role,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
}

impl MemberCertificate {
    /// Parses a DER member certificate: one known role in the OU, a P-256 key, not a CA.
    pub fn parse(der: &[u8]) -> Result<Self, MembershipError> {
        let cert = parse(der)?;
        let subject = cert.subject();
        let ous: Vec<_> = subject.iter_organizational_unit().collect();
        let [ou] = ous.as_slice() else {
            return Err(MembershipError::RoleCount { count: ous.len() });
        };
        let ou = ou.as_str().map_err(|e| bad(format!("OU: {e}")))?;
        let role = ou
            .parse()
            .map_err(|_| MembershipError::UnknownRole { ou: ou.to_owned() })?;
        let common_name = common_name(&cert);
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| bad(format!("basicConstraints: {e}")))?
            .map(|b| b.value.ca)
            .unwrap_or(false);
        if is_ca {
            return Err(MembershipError::CaCannotSign);
        }
        let spki = cert.public_key().raw.to_vec();
        p256_public_key(&spki)?;
        Ok(MemberCertificate {
            der: der.to_vec(),
            fingerprint: sha256(der),
            issuer_hash: sha256(cert.issuer().as_raw()),
            issuer: cert.issuer().to_string(),
            common_name,
            role,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            spki,
        })
    }

    /// The identity record of this certificate as a member of `org`, issued by its CA with
    /// fingerprint `issuer_ca_fingerprint` (see [`MemberCertificate::issuer_in`]), registered at
    /// `height`.
    pub fn identity(
        &self,
        org: &pb::Org,
        issuer_ca_fingerprint: Vec<u8>,
        height: u64,
    ) -> pb::Identity {
        pb::Identity {
            fingerprint: self.fingerprint.to_vec(),
            org_id: org.org_id.clone(),
            role: self.role.to_string(),
            common_name: self.common_name.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            issuer_ca_fingerprint,
            public_key_spki: self.spki.clone(),
            certificate_der: self.der.clone(),
            registered_height: height,
            successor: vec![],
            renewed_to: vec![],
            renewed_from: vec![],
        }
    }

    /// Which of `org`'s CAs issued this certificate at `now`: its current CA, or the CA its last
    /// rotation replaced while that rotation's grace lasts ([`super::rule::ca_accepted`]). The
    /// CA's subject must be the certificate's issuer ([`MembershipError::UnknownCa`] if neither
    /// is) and its P-256 key must verify the certificate's signature
    /// ([`MembershipError::NotSignedByCa`] if not). Returns that CA's fingerprint. Whether the
    /// org is active is for [`super::rule::live`].
    pub fn issuer_in(&self, org: &pb::Org, now: i64) -> Result<Vec<u8>, MembershipError> {
        let previous = !org.previous_ca_fingerprint.is_empty()
            && super::rule::ca_accepted(org, &org.previous_ca_fingerprint, now);
        self.issuer_among(org, previous)
    }

    /// As [`Self::issuer_in`], for a certificate the chain has never seen: only the org's
    /// current CA. A rotation's grace keeps the members the retiring CA already registered
    /// signing; it must not let that CA (perhaps rotated out because its key leaked) register
    /// new identities, a new admin among them.
    pub fn current_issuer_in(&self, org: &pb::Org) -> Result<Vec<u8>, MembershipError> {
        self.issuer_among(org, false)
    }

    fn issuer_among(&self, org: &pb::Org, previous: bool) -> Result<Vec<u8>, MembershipError> {
        let mut cas = vec![(&org.ca_cert_der, &org.ca_fingerprint)];
        if previous {
            cas.push((&org.previous_ca_cert_der, &org.previous_ca_fingerprint));
        }
        let mut named = false;
        for (der, fingerprint) in cas {
            let ca = parse(der)?;
            if sha256(ca.subject().as_raw()) != self.issuer_hash {
                continue;
            }
            named = true;
            let ca_key = p256_public_key(ca.public_key().raw)?;
            let x509 = X509::from_der(&self.der).map_err(bad)?;
            if x509.verify(&ca_key).map_err(bad)? {
                return Ok(fingerprint.clone());
            }
        }
        Err(if named {
            MembershipError::NotSignedByCa {
                org: org.org_id.clone(),
            }
        } else {
            MembershipError::UnknownCa {
                issuer: self.issuer.clone(),
            }
        })
    }

    /// Finds the org whose current CA issued this certificate, checks the CA's signature on it,
    /// and returns the identity record to register at `height` (a retiring CA registers nobody
    /// new: [`Self::current_issuer_in`]).
    pub fn register<S: StateRead>(
        &self,
        state: &S,
        now: i64,
        height: u64,
    ) -> Result<pb::Identity, TxError> {
        let (org, _) = self.issuing_org(state, now)?;
        let issuer = self.current_issuer_in(&org)?;
        Ok(self.identity(&org, issuer, height))
    }

    /// The active org whose CA issued and signed this certificate (found through the ca-subject
    /// index: see [`super::rule`]), with that CA's fingerprint.
    pub fn issuing_org<S: StateRead>(
        &self,
        state: &S,
        now: i64,
    ) -> Result<(pb::Org, Vec<u8>), TxError> {
        let org = state
            .org_of(&super::rule::Presented::Certificate(self))?
            .ok_or_else(|| MembershipError::UnknownCa {
                issuer: self.issuer.clone(),
            })?;
        let issuer = self.issuer_in(&org, now)?;
        Ok((org, issuer))
    }
}

/// The validity window (notBefore, notAfter; Unix seconds) of any DER X.509 certificate: a
/// member's, a CA's or a TLS server's.
pub fn validity(der: &[u8]) -> Result<(i64, i64), MembershipError> {
    let cert = parse(der)?;
    Ok((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

/// The first subject CN of a certificate ("" if none or not a string).
fn common_name(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// SHA-256 of a certificate's subject name DER: for a CA, what the certificates it issues name
/// as their issuer.
pub fn subject_hash(der: &[u8]) -> Result<[u8; 32], MembershipError> {
    Ok(sha256(parse(der)?.subject().as_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::pkey::Private;
    use openssl::x509::extension::BasicConstraints;
    use openssl::x509::{X509Builder, X509NameBuilder};

    fn key(curve: Nid) -> PKey<Private> {
        let group = EcGroup::from_curve_name(curve).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    /// DER of a certificate for `key` with subject CN `cn` and `ous`, CA:`ca`, issued by `issuer`
    /// (self-issued and self-signed without one).
    fn cert(
        cn: &str,
        ous: &[&str],
        ca: bool,
        key: &PKey<Private>,
        issuer: Option<(&X509, &PKey<Private>)>,
    ) -> Vec<u8> {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
        for ou in ous {
            name.append_entry_by_nid(Nid::ORGANIZATIONALUNITNAME, ou)
                .unwrap();
        }
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name).unwrap();
        match issuer {
            Some((c, _)) => b.set_issuer_name(c.subject_name()).unwrap(),
            None => b.set_issuer_name(&name).unwrap(),
        }
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::from_unix(4_000_000_000).unwrap())
            .unwrap();
        let mut bc = BasicConstraints::new();
        if ca {
            bc.critical().ca();
        }
        b.append_extension(bc.build().unwrap()).unwrap();
        b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256())
            .unwrap();
        b.build().to_der().unwrap()
    }

    #[test]
    fn each_certificate_check_has_its_own_error() {
        let p256 = || key(Nid::X9_62_PRIME256V1);
        let (ca_key, other_key) = (p256(), p256());
        let ca_der = cert("ca", &[], true, &ca_key, None);
        assert!(CaCertificate::from_der(&ca_der).is_ok());
        let ca = X509::from_der(&ca_der).unwrap();
        let root = |der: Vec<u8>| CaCertificate::from_der(&der).err();
        assert!(matches!(
            root(b"junk".to_vec()),
            Some(MembershipError::BadCertificate(_))
        ));
        assert_eq!(
            root(cert("ca", &[], false, &ca_key, None)),
            Some(MembershipError::RootNotCa)
        );
        assert_eq!(
            root(cert("sub", &[], true, &other_key, Some((&ca, &ca_key)))),
            Some(MembershipError::RootNotSelfSigned)
        );
        // Names itself as issuer, but signed by another key.
        assert_eq!(
            root(cert("ca", &[], true, &ca_key, Some((&ca, &other_key)))),
            Some(MembershipError::RootSignatureInvalid)
        );
        let p384 = key(Nid::SECP384R1);
        assert_eq!(
            root(cert("ca", &[], true, &p384, None)),
            Some(MembershipError::KeyNotP256)
        );

        let issued = Some((&ca, &ca_key));
        let member = |ous: &[&str], is_ca: bool, key: &PKey<Private>| {
            MemberCertificate::parse(&cert("m", ous, is_ca, key, issued)).err()
        };
        assert_eq!(member(&["buyer"], false, &other_key), None);
        assert_eq!(
            member(&[], false, &other_key),
            Some(MembershipError::RoleCount { count: 0 })
        );
        assert_eq!(
            member(&["buyer", "admin"], false, &other_key),
            Some(MembershipError::RoleCount { count: 2 })
        );
        assert_eq!(
            member(&["chef"], false, &other_key),
            Some(MembershipError::UnknownRole { ou: "chef".into() })
        );
        assert_eq!(
            member(&["buyer"], true, &other_key),
            Some(MembershipError::CaCannotSign)
        );
        assert_eq!(
            member(&["buyer"], false, &p384),
            Some(MembershipError::KeyNotP256)
        );
    }
}
