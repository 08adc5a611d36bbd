//! Consortium certificate authority tooling.
//!
//! Identity on the NeuroData chain is X.509, Fabric style: every org has a self-signed root CA
//! (ECDSA P-256) and issues its members certificates whose organizational unit (OU) is their
//! [`Role`]. A member's on-chain identity is the SHA-256 [`fingerprint`] of its DER certificate.
//!
//! Start with [`OrgCa::create`] and [`OrgCa::issue`]; [`dev_consortium`] writes the three-org
//! consortium the tests and the local network use.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::sha::sha256;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

/// What can go wrong while creating or loading CA material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// OpenSSL refused an operation (bad key, bad PEM, ...).
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A role name that is not one of the five roles.
    #[error("unknown role {0:?}: expected provider, buyer, trainer, validator or admin")]
    UnknownRole(String),
    /// A certificate to renew that is not a member certificate of this CA.
    #[error("cannot renew: {0}")]
    NotRenewable(String),
    /// A validity window that ends before it starts.
    #[error("validity window ends ({not_after}) before it starts ({not_before})")]
    EmptyValidity {
        /// Start, Unix seconds.
        not_before: i64,
        /// End, Unix seconds.
        not_after: i64,
    },
}

/// A member's role, carried in its certificate's OU and checked by the chain for every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Uploads and sells datasets.
    Provider,
    /// Buys datasets and models.
    Buyer,
    /// Runs training jobs.
    Trainer,
    /// Operates a validator and attests results.
    Validator,
    /// Org administrator: governance votes and revocations.
    Admin,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 5] = [
        Role::Provider,
        Role::Buyer,
        Role::Trainer,
        Role::Validator,
        Role::Admin,
    ];

    /// The OU string in certificates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Provider => "provider",
            Role::Buyer => "buyer",
            Role::Trainer => "trainer",
            Role::Validator => "validator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CertError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| CertError::UnknownRole(s.to_owned()))
    }
}

/// Validity window of a certificate, Unix seconds (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// First second the certificate is valid.
    pub not_before: i64,
    /// Last second the certificate is valid.
    pub not_after: i64,
}

impl Validity {
    /// `days` days starting one hour before `now` (clock skew between orgs).
    pub fn days_from(now: i64, days: i64) -> Self {
        Validity {
            not_before: now - 3600,
            not_after: now + days * 86_400,
        }
    }

    fn check(self) -> Result<Self, CertError> {
        if self.not_after < self.not_before {
            return Err(CertError::EmptyValidity {
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        Ok(self)
    }
}

/// SHA-256 of a certificate's DER encoding: the member's signer id and account address.
pub fn fingerprint(cert: &X509) -> Result<[u8; 32], CertError> {
    Ok(sha256(&cert.to_der()?))
}

/// A fresh ECDSA P-256 private key.
pub fn new_p256_key() -> Result<PKey<Private>, CertError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

/// An org's root CA: its self-signed certificate and private key.
pub struct OrgCa {
    /// The self-signed root certificate registered on chain.
    pub cert: X509,
    /// The CA's private key (keep offline in production).
    pub key: PKey<Private>,
}

/// A member certificate with its private key.
pub struct Member {
    /// Certificate issued by the org CA.
    pub cert: X509,
    /// The member's private key.
    pub key: PKey<Private>,
}

fn serial_from(seed: &[u8]) -> Result<Asn1Integer, CertError> {
    // A positive 128-bit serial derived from the subject and a random salt keeps serials unique
    // without a counter file.
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt)?;
    let mut input = seed.to_vec();
    input.extend_from_slice(&salt);
    let digest = sha256(&input);
    let mut bytes = digest[..16].to_vec();
    bytes[0] &= 0x7f;
    Ok(BigNum::from_slice(&bytes)?.to_asn1_integer()?)
}

impl OrgCa {
    /// Creates a self-signed root CA for `org_id` (CN `<org_id> CA`, O `<org_name>`).
    pub fn create(org_id: &str, org_name: &str, validity: Validity) -> Result<Self, CertError> {
        let validity = validity.check()?;
        let key = new_p256_key()?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, &format!("{org_id} CA"))?;
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, org_name)?;
        let name = name.build();
        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        let serial = serial_from(org_id.as_bytes())?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&key)?;
        let (not_before, not_after) = (
            Asn1Time::from_unix(validity.not_before)?,
            Asn1Time::from_unix(validity.not_after)?,
        );
        b.set_not_before(&not_before)?;
        b.set_not_after(&not_after)?;
        b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .digital_signature()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
        b.append_extension(ski)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(OrgCa {
            cert: b.build(),
            key,
        })
    }

    /// A certificate builder for a non-CA subject issued by this CA: version, serial, names, key,
    /// validity and basicConstraints CA:FALSE; the caller adds its usages and signs.
    fn end_entity<K: HasPublic>(
        &self,
        subject: &openssl::x509::X509NameRef,
        common_name: &str,
        key: &PKeyRef<K>,
        validity: Validity,
    ) -> Result<X509Builder, CertError> {
        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        let serial = serial_from(common_name.as_bytes())?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(subject)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(key)?;
        let not_before = Asn1Time::from_unix(validity.not_before)?;
        let not_after = Asn1Time::from_unix(validity.not_after)?;
        b.set_not_before(&not_before)?;
        b.set_not_after(&not_after)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        Ok(b)
    }

    /// Issues a member certificate with `role` in its OU, for a fresh P-256 key.
    pub fn issue(
        &self,
        common_name: &str,
        role: Role,
        validity: Validity,
    ) -> Result<Member, CertError> {
        let key = new_p256_key()?;
        let cert = self.issue_for_key(common_name, role, validity, &key)?;
        Ok(Member { cert, key })
    }

    /// Renews a member certificate this CA issued, or `previous` (the org's CA before a
    /// rotation, when moving members to this one): a new certificate for the same public key,
    /// common name and role, valid for `validity`. The member keeps its key (the CA never sees
    /// it) and sends the chain its renewal signed with the old certificate (`RenewCertificate`).
    pub fn reissue(
        &self,
        old: &X509,
        previous: Option<&X509>,
        validity: Validity,
    ) -> Result<X509, CertError> {
        let mut issued_by_us = false;
        for ca in std::iter::once(&self.cert).chain(previous) {
            let key = ca.public_key()?;
            if old.issuer_name().to_der()? == ca.subject_name().to_der()? && old.verify(&key)? {
                issued_by_us = true;
            }
        }
        if !issued_by_us {
            return Err(CertError::NotRenewable(
                "it was not issued by this CA (nor by the previous CA given)".into(),
            ));
        }
        let text = |nid| {
            let mut entries = old.subject_name().entries_by_nid(nid);
            match (entries.next(), entries.next()) {
                (Some(e), None) => Ok(String::from_utf8_lossy(e.data().as_slice()).into_owned()),
                _ => Err(CertError::NotRenewable(format!(
                    "its subject does not hold exactly one {}",
                    nid.short_name().unwrap_or("entry")
                ))),
            }
        };
        let common_name = text(Nid::COMMONNAME)?;
        let role: Role = text(Nid::ORGANIZATIONALUNITNAME)?.parse()?;
        let key = old.public_key()?;
        self.issue_for_key(&common_name, role, validity, &key)
    }

    /// Issues a member certificate for an existing key (certificate renewal keeps the key).
    pub fn issue_for_key<K: HasPublic>(
        &self,
        common_name: &str,
        role: Role,
        validity: Validity,
        key: &PKeyRef<K>,
    ) -> Result<X509, CertError> {
        let validity = validity.check()?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
        name.append_entry_by_nid(Nid::ORGANIZATIONALUNITNAME, role.as_str())?;
        if let Some(o) = self
            .cert
            .subject_name()
            .entries_by_nid(Nid::ORGANIZATIONNAME)
            .next()
        {
            name.append_entry_by_nid(
                Nid::ORGANIZATIONNAME,
                &String::from_utf8_lossy(o.data().as_slice()),
            )?;
        }
        let mut b = self.end_entity(&name.build(), common_name, key, validity)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_agreement()
                .build()?,
        )?;
        b.append_extension(
            ExtendedKeyUsage::new()
                .client_auth()
                .server_auth()
                .build()?,
        )?;
        let ctx = b.x509v3_context(Some(&self.cert), None);
        let aki = AuthorityKeyIdentifier::new().keyid(true).build(&ctx)?;
        b.append_extension(aki)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok(b.build())
    }

    /// Issues a TLS server certificate (for the org's gateway) valid for `hosts`: DNS names or IP
    /// addresses, written into the subjectAltName that TLS clients check. It has no role OU, so
    /// the chain never accepts it as a member.
    pub fn issue_server(
        &self,
        common_name: &str,
        hosts: &[&str],
        validity: Validity,
    ) -> Result<Member, CertError> {
        let validity = validity.check()?;
        let key = new_p256_key()?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
        let mut b = self.end_entity(&name.build(), common_name, &key, validity)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        let mut san = SubjectAlternativeName::new();
        for h in hosts {
            if h.parse::<std::net::IpAddr>().is_ok() {
                san.ip(h);
            } else {
                san.dns(h);
            }
        }
        let ctx = b.x509v3_context(Some(&self.cert), None);
        let san = san.build(&ctx)?;
        let aki = AuthorityKeyIdentifier::new().keyid(true).build(&ctx)?;
        b.append_extension(san)?;
        b.append_extension(aki)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok(Member {
            cert: b.build(),
            key,
        })
    }

    /// Loads a CA written by [`OrgCa::save`].
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        Ok(OrgCa {
            cert: X509::from_pem(&read(&dir.join("ca.pem"))?)?,
            key: PKey::private_key_from_pem(&read(&dir.join("ca.key"))?)?,
        })
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        write(&dir.join("ca.pem"), &self.cert.to_pem()?, false)?;
        write(
            &dir.join("ca.key"),
            &self.key.private_key_to_pem_pkcs8()?,
            true,
        )
    }
}

impl Member {
    /// Writes `<name>.pem` and `<name>.key` (mode 0600) into `dir`.
    pub fn save(&self, dir: &Path, name: &str) -> Result<(), CertError> {
        write(
            &dir.join(format!("{name}.pem")),
            &self.cert.to_pem()?,
            false,
        )?;
        write(
            &dir.join(format!("{name}.key")),
            &self.key.private_key_to_pem_pkcs8()?,
            true,
        )
    }

    /// Loads `<name>.pem` and `<name>.key` from `dir`.
    pub fn load(dir: &Path, name: &str) -> Result<Self, CertError> {
        Ok(Member {
            cert: X509::from_pem(&read(&dir.join(format!("{name}.pem")))?)?,
            key: PKey::private_key_from_pem(&read(&dir.join(format!("{name}.key")))?)?,
        })
    }
}

/// Reads a file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, bytes).map_err(io)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// The founding orgs of the dev consortium: (id, name).
pub const DEV_ORGS: [(&str, &str); 3] = [
    ("medlab", "Medical Research Lab"),
    ("healthtech", "HealthTech Analytics"),
    ("datacorp", "DataCorp Models"),
];

/// Writes the dev consortium under `dir`: for each org in [`DEV_ORGS`] a folder `<org>/` with
/// `ca.pem`, `ca.key`, one member per role (`admin.pem`, `provider.pem`, ...) and the org
/// gateway's TLS server certificate (`gateway.pem`, for `localhost` and `127.0.0.1`), valid for
/// ten years from `now`. Returns the org folders.
pub fn dev_consortium(dir: &Path, now: i64) -> Result<Vec<PathBuf>, CertError> {
    let validity = Validity::days_from(now, 3650);
    let mut out = Vec::new();
    for (org_id, name) in DEV_ORGS {
        let org_dir = dir.join(org_id);
        let ca = OrgCa::create(org_id, name, validity)?;
        ca.save(&org_dir)?;
        for role in Role::ALL {
            let member = ca.issue(&format!("{role}@{org_id}"), role, validity)?;
            member.save(&org_dir, role.as_str())?;
        }
        ca.issue_server(
            &format!("gateway.{org_id}"),
            &["localhost", "127.0.0.1"],
            validity,
        )?
        .save(&org_dir, "gateway")?;
        out.push(org_dir);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509StoreContext, X509VerifyResult};

    const NOW: i64 = 1_790_000_000;

    fn verifies(ca: &X509, leaf: &X509) -> bool {
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(ca.clone()).unwrap();
        // Check at a fixed time rather than the wall clock, like the chain does.
        let mut param = openssl::x509::verify::X509VerifyParam::new().unwrap();
        param.set_time(NOW);
        store.set_param(&param).unwrap();
        let store = store.build();
        let mut ctx = X509StoreContext::new().unwrap();
        let chain = Stack::new().unwrap();
        ctx.init(&store, leaf, &chain, |c| {
            let ok = c.verify_cert()?;
            assert_eq!(c.error(), X509VerifyResult::OK, "{}", c.error());
            Ok(ok)
        })
        .unwrap()
    }

    #[test]
    fn issued_member_certificate_verifies_against_its_org_ca() {
        let ca = OrgCa::create("org1", "Org One", Validity::days_from(NOW, 10)).unwrap();
        let m = ca
            .issue("alice", Role::Buyer, Validity::days_from(NOW, 5))
            .unwrap();
        assert!(verifies(&ca.cert, &m.cert));
        let ou = m
            .cert
            .subject_name()
            .entries_by_nid(Nid::ORGANIZATIONALUNITNAME)
            .next()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(ou.data().as_slice()), "buyer");
    }

    #[test]
    fn member_of_another_org_does_not_verify() {
        let a = OrgCa::create("a", "A", Validity::days_from(NOW, 10)).unwrap();
        let b = OrgCa::create("b", "B", Validity::days_from(NOW, 10)).unwrap();
        let m = b
            .issue("bob", Role::Admin, Validity::days_from(NOW, 5))
            .unwrap();
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(a.cert.clone()).unwrap();
        let store = store.build();
        let mut ctx = X509StoreContext::new().unwrap();
        let ok = ctx
            .init(&store, &m.cert, &Stack::new().unwrap(), |c| c.verify_cert())
            .unwrap();
        assert!(!ok);
    }

    #[test]
    fn a_reissued_certificate_keeps_key_name_and_role_and_only_its_ca_reissues() {
        let ca = OrgCa::create("acme", "Acme", Validity::days_from(NOW, 800)).unwrap();
        let old = ca
            .issue("alice", Role::Trainer, Validity::days_from(NOW, 30))
            .unwrap();
        let new = ca
            .reissue(&old.cert, None, Validity::days_from(NOW, 400))
            .unwrap();
        assert!(verifies(&ca.cert, &new));
        assert!(new.public_key().unwrap().public_eq(&old.key), "same key");
        assert_eq!(
            new.subject_name().to_der().unwrap(),
            old.cert.subject_name().to_der().unwrap(),
            "same CN, OU and O"
        );
        assert_ne!(fingerprint(&new).unwrap(), fingerprint(&old.cert).unwrap());
        // Another CA, even one with the same name, does not renew it.
        let impostor = OrgCa::create("acme", "Acme", Validity::days_from(NOW, 9)).unwrap();
        let other = OrgCa::create("other", "Other", Validity::days_from(NOW, 9)).unwrap();
        for ca in [&impostor, &other] {
            assert!(matches!(
                ca.reissue(&old.cert, None, Validity::days_from(NOW, 9)),
                Err(CertError::NotRenewable(_))
            ));
        }
        // After a rotation the new CA renews what the previous one issued, when given it.
        let rotated = ca
            .reissue(&old.cert, None, Validity::days_from(NOW, 9))
            .unwrap();
        let renamed = OrgCa::create("acme", "Acme 2027", Validity::days_from(NOW, 900)).unwrap();
        assert!(matches!(
            renamed.reissue(&rotated, None, Validity::days_from(NOW, 9)),
            Err(CertError::NotRenewable(_))
        ));
        let moved = renamed
            .reissue(&rotated, Some(&ca.cert), Validity::days_from(NOW, 9))
            .unwrap();
        assert!(verifies(&renamed.cert, &moved));
        assert!(moved.public_key().unwrap().public_eq(&old.key));
        // Nor is a CA or server certificate a member's.
        let server = ca
            .issue_server("gw", &["localhost"], Validity::days_from(NOW, 9))
            .unwrap();
        assert!(matches!(
            ca.reissue(&server.cert, None, Validity::days_from(NOW, 9)),
            Err(CertError::NotRenewable(_))
        ));
    }

    #[test]
    fn role_names_round_trip_and_unknown_roles_are_rejected() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!(matches!(
            "root".parse::<Role>(),
            Err(CertError::UnknownRole(_))
        ));
    }

    #[test]
    fn inverted_validity_is_rejected() {
        let v = Validity {
            not_before: 10,
            not_after: 5,
        };
        assert!(matches!(
            OrgCa::create("x", "X", v),
            Err(CertError::EmptyValidity { .. })
        ));
    }

    #[test]
    fn dev_consortium_round_trips_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let orgs = dev_consortium(dir.path(), NOW).unwrap();
        assert_eq!(orgs.len(), 3);
        let ca = OrgCa::load(&orgs[0]).unwrap();
        let admin = Member::load(&orgs[0], "admin").unwrap();
        assert!(verifies(&ca.cert, &admin.cert));
        assert_ne!(
            fingerprint(&admin.cert).unwrap(),
            fingerprint(&ca.cert).unwrap()
        );
    }
}
