//! The membership rule: whether a certificate may act now, and as whom.
//!
//! [`check_member`] is a pure function of records its caller fetched first — no state access, no
//! clock — so there is one rule and two callers: the chain, for every tx signer at the block
//! time ([`super::check_signer`]), and the gateway, for every call at the chain tip's time
//! (`neurodata-gateway`'s `auth`, which maps the [`MembershipError`] to a gRPC status). A
//! caller the gateway admits is a signer the chain accepts, and both refuse for the same reason.
//!
//! The records, and how each side fetches them:
//! - [`Presented`]: the certificate's identity if the chain registered it (a tx carried it
//!   before), else the parsed certificate. A registered identity is what counts, as the chain
//!   recorded it: its org and issuing CA were fixed when it was registered.
//! - The org the presented certificate names ([`org_in`]): a registered identity's org; for a
//!   new certificate, the **active org whose current root CA's subject (or the subject of the CA
//!   its last rotation replaced) is the certificate's issuer** (governance keeps at most one).
//!   The chain keeps that mapping as its ca-subject
//!   index ([`super::MembershipRead::org_of`]), written when governance admits, rotates or
//!   removes; a holder of the org list finds the same org with [`org_in`]. Either way the rule
//!   checks the org it is given, so a wrong lookup can only refuse, never admit.
//! - The revocation of the certificate's fingerprint, if any.
//!
//! The checks, in order, each with its own error: for a new certificate, an org names its
//! issuer ([`MembershipError::UnknownCa`]) and that org's CA key (P-256) signed it
//! ([`MembershipError::NotSignedByCa`]); then [`live`]: the org is active
//! ([`MembershipError::OrgNotActive`]), the CA that issued the certificate is its current CA or
//! the one its last rotation replaced, while that rotation's grace lasts ([`ca_accepted`];
//! [`MembershipError::CaRotated`]), not revoked ([`MembershipError::Revoked`]), not renewed
//! ([`MembershipError::Renewed`]), `now` within
//! notBefore ([`MembershipError::NotYetValid`]) and notAfter ([`MembershipError::Expired`]); last
//! the role, for every permission asked ([`MembershipError::RoleNotAllowed`]).

use neurodata_proto::chain::v1 as pb;

use super::{MemberCertificate, MembershipError, Role};

/// A certificate as the chain knows it.
#[derive(Clone, Copy, Debug)]
pub enum Presented<'a> {
    /// Registered by an earlier tx: the record decides, not the certificate.
    Registered(&'a pb::Identity),
    /// Never seen on chain: checked against the org that names its issuer.
    Certificate(&'a MemberCertificate),
}

impl Presented<'_> {
    /// SHA-256 of the certificate (the key of its revocation); None for a registered record whose
    /// fingerprint is not 32 bytes, which [`live`] refuses.
    pub fn fingerprint(&self) -> Option<[u8; 32]> {
        match self {
            Presented::Registered(identity) => identity.fingerprint.as_slice().try_into().ok(),
            Presented::Certificate(cert) => Some(cert.fingerprint),
        }
    }
}

/// Something a member asks to do and the roles that may: a tx message on chain, a gRPC method
/// at the gateway.
#[derive(Clone, Copy, Debug)]
pub struct Permission<'a> {
    /// What is asked, as a refusal names it (a message type, a method).
    pub action: &'static str,
    /// The roles that may.
    pub roles: &'a [Role],
}

/// A certificate that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The registered identity, or for a new certificate the record the chain registers (its
    /// `registered_height` is 0: the chain sets it when it writes the record).
    pub identity: pb::Identity,
    /// The role in its OU.
    pub role: Role,
}

/// Whether `presented` may do every one of `permissions` at `now` (Unix seconds), given `org`
/// (the org it names: see [`org_in`]) and the revocation of its fingerprint, if any.
pub fn check_member(
    presented: Presented<'_>,
    org: Option<&pb::Org>,
    revocation: Option<&pb::Revocation>,
    now: i64,
    permissions: &[Permission<'_>],
) -> Result<Member, MembershipError> {
    let identity = match presented {
        Presented::Registered(identity) => identity.clone(),
        Presented::Certificate(cert) => {
            let org = org.ok_or_else(|| MembershipError::UnknownCa {
                issuer: cert.issuer.clone(),
            })?;
            // Not registered yet: only the current CA vouches for it (see
            // `MemberCertificate::current_issuer_in`).
            let issuer = cert.current_issuer_in(org)?;
            cert.identity(org, issuer, 0)
        }
    };
    live(&identity, org, revocation, now)?;
    let role: Role = identity
        .role
        .parse()
        .map_err(|_| MembershipError::BadCertificate(format!("role {:?}", identity.role)))?;
    for permission in permissions {
        if !permission.roles.contains(&role) {
            return Err(MembershipError::RoleNotAllowed {
                role: role.to_string(),
                message: permission.action,
                allowed: permission
                    .roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(Member { identity, role })
}

/// Whether a registered `identity` can act at `now`, whatever it asks: its org (`org`, the
/// record of `identity.org_id`) active and still on the CA that issued it, not revoked
/// (`revocation`, the record of its fingerprint), within its validity. The part of
/// [`check_member`] that also decides whether a moved identity's successor can act.
pub fn live(
    identity: &pb::Identity,
    org: Option<&pb::Org>,
    revocation: Option<&pb::Revocation>,
    now: i64,
) -> Result<(), MembershipError> {
    let org = org
        .filter(|o| o.org_id == identity.org_id && o.status == pb::OrgStatus::Active as i32)
        .ok_or_else(|| MembershipError::OrgNotActive {
            org: identity.org_id.clone(),
        })?;
    if !ca_accepted(org, &identity.issuer_ca_fingerprint, now) {
        return Err(MembershipError::CaRotated {
            org: org.org_id.clone(),
        });
    }
    if identity.fingerprint.len() != 32 {
        return Err(MembershipError::BadCertificate(
            "fingerprint is not 32 bytes".into(),
        ));
    }
    if let Some(rev) = revocation {
        return Err(MembershipError::Revoked {
            fingerprint: hex::encode(&identity.fingerprint),
            height: rev.height,
        });
    }
    // A renewal retires the certificate it renews: what it held moved to its successor, and two
    // live certificates for one member would let the old one act (spend what reaches it, sign
    // as the member) after the member stopped guarding its key.
    if !identity.renewed_to.is_empty() {
        return Err(MembershipError::Renewed {
            fingerprint: hex::encode(&identity.fingerprint),
            successor: hex::encode(&identity.renewed_to),
        });
    }
    if now < identity.not_before {
        return Err(MembershipError::NotYetValid {
            not_before: identity.not_before,
            block_time: now,
        });
    }
    if now > identity.not_after {
        return Err(MembershipError::Expired {
            not_after: identity.not_after,
            block_time: now,
        });
    }
    Ok(())
}

/// Whether `org` accepts certificates issued by its CA with fingerprint `issuer` at `now`: its
/// current CA's always; the CA its last rotation replaced until the rotation's grace period ends
/// (`previous_ca_until`, inclusive), so members move to certificates of the new CA while their
/// old ones still sign.
pub fn ca_accepted(org: &pb::Org, issuer: &[u8], now: i64) -> bool {
    issuer == org.ca_fingerprint.as_slice()
        || (!org.previous_ca_fingerprint.is_empty()
            && issuer == org.previous_ca_fingerprint.as_slice()
            && now <= org.previous_ca_until)
}

/// The org `presented` names, found in a list of org records (the gateway's view): a registered
/// identity's org by id, a new certificate's by issuer — the active org whose current CA's
/// subject (or, during a rotation's grace, its previous CA's) is the certificate's issuer, which
/// is what the chain's ca-subject index holds.
pub fn org_in<'a>(orgs: &'a [pb::Org], presented: &Presented<'_>) -> Option<&'a pb::Org> {
    match presented {
        Presented::Registered(identity) => orgs.iter().find(|o| o.org_id == identity.org_id),
        Presented::Certificate(cert) => orgs.iter().find(|o| {
            let names = |der: &[u8]| {
                !der.is_empty()
                    && super::certificate::subject_hash(der).ok() == Some(cert.issuer_hash)
            };
            o.status == pb::OrgStatus::Active as i32
                && (names(&o.ca_cert_der) || names(&o.previous_ca_cert_der))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neurodata_certs::{OrgCa, Validity};

    const NOW: i64 = 1_800_000_000;

    fn org(id: &str, ca: &OrgCa) -> pb::Org {
        let der = ca.cert.to_der().unwrap();
        pb::Org {
            org_id: id.into(),
            ca_fingerprint: super::super::certificate::sha256(&der).to_vec(),
            ca_cert_der: der,
            status: pb::OrgStatus::Active as i32,
            ..Default::default()
        }
    }

    fn member(ca: &OrgCa, role: Role) -> MemberCertificate {
        let m = ca
            .issue("alice", role, Validity::days_from(NOW, 5))
            .unwrap();
        MemberCertificate::parse(&m.cert.to_der().unwrap()).unwrap()
    }

    fn any() -> [Permission<'static>; 1] {
        [Permission {
            action: "Transfer",
            roles: &Role::ALL,
        }]
    }

    #[test]
    fn a_new_certificate_of_an_active_orgs_current_ca_is_a_member_of_that_org() {
        let ca = OrgCa::create("medlab", "Medlab", Validity::days_from(NOW, 9)).unwrap();
        let (medlab, cert) = (org("medlab", &ca), member(&ca, Role::Buyer));
        let m = check_member(
            Presented::Certificate(&cert),
            Some(&medlab),
            None,
            NOW,
            &any(),
        )
        .unwrap();
        assert_eq!(
            (m.identity.org_id.as_str(), m.role),
            ("medlab", Role::Buyer)
        );
        assert_eq!(m.identity.issuer_ca_fingerprint, medlab.ca_fingerprint);
        assert_eq!(m.identity.fingerprint, cert.fingerprint.to_vec());
    }

    #[test]
    fn a_new_certificate_is_refused_by_an_org_whose_ca_does_not_name_its_issuer() {
        let v = Validity::days_from(NOW, 9);
        let (medlab, other) = (
            OrgCa::create("medlab", "Medlab", v).unwrap(),
            OrgCa::create("other", "Other", v).unwrap(),
        );
        let cert = member(&medlab, Role::Buyer);
        // A caller that looked up the wrong org cannot make the rule admit the certificate.
        assert!(matches!(
            check_member(
                Presented::Certificate(&cert),
                Some(&org("other", &other)),
                None,
                NOW,
                &any()
            ),
            Err(MembershipError::UnknownCa { .. })
        ));
    }

    #[test]
    fn a_registered_identity_is_judged_by_its_record_not_by_a_certificate() {
        let ca = OrgCa::create("medlab", "Medlab", Validity::days_from(NOW, 9)).unwrap();
        let medlab = org("medlab", &ca);
        let identity = member(&ca, Role::Admin).identity(&medlab, medlab.ca_fingerprint.clone(), 7);
        let m = check_member(
            Presented::Registered(&identity),
            Some(&medlab),
            None,
            NOW,
            &any(),
        )
        .unwrap();
        assert_eq!(m.identity, identity, "the record as registered");
        // The org's record is what names it, so another org's record is not its org.
        let mut other = medlab.clone();
        other.org_id = "other".into();
        assert_eq!(
            check_member(
                Presented::Registered(&identity),
                Some(&other),
                None,
                NOW,
                &any()
            ),
            Err(MembershipError::OrgNotActive {
                org: "medlab".into()
            })
        );
    }

    #[test]
    fn every_permission_asked_must_allow_the_role() {
        let ca = OrgCa::create("medlab", "Medlab", Validity::days_from(NOW, 9)).unwrap();
        let (medlab, cert) = (org("medlab", &ca), member(&ca, Role::Buyer));
        let asked = [
            any()[0],
            Permission {
                action: "RegisterDataset",
                roles: &[Role::Provider, Role::Admin],
            },
        ];
        assert_eq!(
            check_member(
                Presented::Certificate(&cert),
                Some(&medlab),
                None,
                NOW,
                &asked
            ),
            Err(MembershipError::RoleNotAllowed {
                role: "buyer".into(),
                message: "RegisterDataset",
                allowed: "provider, admin".into(),
            })
        );
    }

    #[test]
    fn a_rotated_out_cas_certificates_are_live_through_the_grace_period_and_not_after() {
        let v = Validity::days_from(NOW, 9);
        let (old_ca, new_ca) = (
            OrgCa::create("medlab", "Medlab", v).unwrap(),
            OrgCa::create("medlab", "Medlab 2027", v).unwrap(),
        );
        let (old, new) = (org("medlab", &old_ca), org("medlab", &new_ca));
        let rotated = pb::Org {
            previous_ca_cert_der: old.ca_cert_der.clone(),
            previous_ca_fingerprint: old.ca_fingerprint.clone(),
            previous_ca_until: NOW + 60,
            ..new.clone()
        };
        let cert = member(&old_ca, Role::Buyer);
        let at = |org: &pb::Org, now| {
            let presented = Presented::Certificate(&cert);
            let found = org_in(std::slice::from_ref(org), &presented);
            check_member(presented, found, None, now, &any()).map(|m| m.identity)
        };
        // Never registered: a retiring CA registers nobody new, grace or not.
        assert!(matches!(
            at(&rotated, NOW),
            Err(MembershipError::UnknownCa { .. })
        ));
        assert!(
            matches!(at(&new, NOW), Err(MembershipError::UnknownCa { .. })),
            "no grace: refused at once"
        );
        // Registered before the rotation: live through the grace period, inclusive.
        let identity = at(&old, NOW).unwrap();
        assert_eq!(
            identity.issuer_ca_fingerprint, old.ca_fingerprint,
            "registered as the old CA's"
        );
        let registered = Presented::Registered(&identity);
        assert!(check_member(registered, Some(&rotated), None, NOW + 60, &any()).is_ok());
        assert_eq!(
            check_member(registered, Some(&rotated), None, NOW + 61, &any()).map(|_| ()),
            Err(MembershipError::CaRotated {
                org: "medlab".into()
            })
        );
        // The new CA's certificates are live all along.
        let fresh = member(&new_ca, Role::Buyer);
        let presented = Presented::Certificate(&fresh);
        let found = org_in(std::slice::from_ref(&rotated), &presented);
        assert!(check_member(presented, found, None, NOW, &any()).is_ok());
    }

    #[test]
    fn validity_bounds_are_inclusive() {
        let ca = OrgCa::create("medlab", "Medlab", Validity::days_from(NOW, 9)).unwrap();
        let (medlab, cert) = (org("medlab", &ca), member(&ca, Role::Buyer));
        let at = |now| {
            check_member(
                Presented::Certificate(&cert),
                Some(&medlab),
                None,
                now,
                &any(),
            )
            .map(|_| ())
        };
        assert_eq!(at(cert.not_before), Ok(()));
        assert_eq!(at(cert.not_after), Ok(()));
        assert!(matches!(
            at(cert.not_before - 1),
            Err(MembershipError::NotYetValid { .. })
        ));
        assert!(matches!(
            at(cert.not_after + 1),
            Err(MembershipError::Expired { .. })
        ));
    }
}
