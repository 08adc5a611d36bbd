//! The certificate path: DER parse (`CaCertificate::from_der`, `MemberCertificate::parse`) →
//! the org lookup (`rule::org_in`) → the membership rule (`check_member`), as the chain judges a
//! new signer and the gateway a caller (`auth::verdict` is exactly this sequence).
//!
//! Input: certificate DER. Orgs: the fixture org (its CA `fixtures/ca`, active) and a rotated
//! org whose current CA is a fresh key and whose previous CA, in its grace period, is the
//! fixture CA. Properties: no panic; an accepted root CA is self-signed (OpenSSL) and hashes to
//! its fingerprint; a parsed member certificate's validity, fingerprint and key agree with
//! independent parses; an admitted certificate is signed by the org's current CA (OpenSSL),
//! names it as issuer, is within its validity at the block time, and is admitted with the same
//! role when presented as the identity the chain registers; a revoked one, or one asking a
//! permission its role lacks, is refused; the rotated org admits no new certificate of its
//! retiring CA.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use neurodata_abci::membership::certificate::{p256_public_key, subject_hash, validity};
use neurodata_abci::membership::rule::org_in;
use neurodata_abci::membership::{
    CaCertificate, MemberCertificate, MembershipError, Permission, Presented, Role, check_member,
};
use neurodata_certs::{OrgCa, Validity};
use neurodata_fuzz as fx;
use neurodata_proto::chain::v1 as pb;
use openssl::x509::X509;

struct Orgs {
    org: pb::Org,
    rotated: pb::Org,
    rotated_ca: OrgCa,
}

fn orgs() -> &'static Orgs {
    static ORGS: OnceLock<Orgs> = OnceLock::new();
    ORGS.get_or_init(|| {
        let org = fx::org_record(fx::ORG, fx::ca());
        let rotated_ca = OrgCa::create(fx::ORG, "Fuzz Lab 2", Validity::days_from(fx::NOW, 30))
            .expect("CA");
        let rotated = pb::Org {
            previous_ca_cert_der: org.ca_cert_der.clone(),
            previous_ca_fingerprint: org.ca_fingerprint.clone(),
            previous_ca_until: fx::NOW + 60,
            ..fx::org_record(fx::ORG, &rotated_ca)
        };
        Orgs {
            org,
            rotated,
            rotated_ca,
        }
    })
}

fn signed_by(der: &[u8], ca: &X509) -> bool {
    let (Ok(cert), Ok(key)) = (X509::from_der(der), ca.public_key()) else {
        return false;
    };
    cert.verify(&key).unwrap_or(false)
}

const ANY: [Permission<'static>; 1] = [Permission {
    action: "fuzz",
    roles: &Role::ALL,
}];

fuzz_target!(init: fx::seed_mode("certificate", fx::seeds::certificate), |der: &[u8]| {
    let f = orgs();
    if let Ok(ca) = CaCertificate::from_der(der) {
        assert_eq!(ca.fingerprint, fx::sha256(der));
        let x = X509::from_der(der).expect("an accepted CA parses with OpenSSL");
        assert!(signed_by(der, &x), "an accepted root CA is self-signed");
        assert_eq!(subject_hash(der).ok(), Some(ca.subject_hash));
    }
    let window = validity(der);
    let Ok(cert) = MemberCertificate::parse(der) else {
        return;
    };
    assert_eq!(window.ok(), Some((cert.not_before, cert.not_after)));
    assert_eq!(cert.fingerprint, fx::sha256(der));
    assert!(p256_public_key(&cert.spki).is_ok(), "a parsed member key is P-256");
    let ca_x509 = &fx::ca().cert;
    let orgs = [f.org.clone()];
    let presented = Presented::Certificate(&cert);
    let org = org_in(&orgs, &presented);
    let revoked = pb::Revocation::default();
    assert!(
        check_member(presented, org, Some(&revoked), fx::NOW, &ANY).is_err(),
        "a revoked certificate is refused"
    );
    if let Ok(member) = check_member(presented, org, None, fx::NOW, &ANY) {
        assert!(signed_by(der, ca_x509), "admitted, but not signed by the org's CA");
        let issuer = X509::from_der(der).expect("parses").issuer_name().to_der().expect("DER");
        assert_eq!(issuer, ca_x509.subject_name().to_der().expect("DER"));
        assert!(cert.not_before <= fx::NOW && fx::NOW <= cert.not_after);
        assert_eq!(member.role, cert.role);
        assert_eq!(member.identity.org_id, fx::ORG);
        assert_eq!(member.identity.fingerprint, cert.fingerprint.to_vec());
        assert_eq!(member.identity.issuer_ca_fingerprint, f.org.ca_fingerprint);
        let registered = check_member(
            Presented::Registered(&member.identity),
            Some(&f.org),
            None,
            fx::NOW,
            &ANY,
        );
        assert_eq!(registered.map(|m| m.role).ok(), Some(cert.role), "registered, it is the same member");
        let others: Vec<Role> = Role::ALL.into_iter().filter(|r| *r != cert.role).collect();
        let asked = [Permission {
            action: "other roles",
            roles: &others,
        }];
        assert!(matches!(
            check_member(presented, org, None, fx::NOW, &asked),
            Err(MembershipError::RoleNotAllowed { .. })
        ));
    }
    let rotated = [f.rotated.clone()];
    if check_member(presented, org_in(&rotated, &presented), None, fx::NOW, &ANY).is_ok() {
        assert!(
            signed_by(der, &f.rotated_ca.cert),
            "a rotated org admitted a new certificate its current CA did not sign"
        );
    }
});
