//! Typed reads and writes of membership records; the only code that uses membership state keys.

use neurodata_proto::chain::v1 as pb;

use super::rule::Presented;
use super::state_key;
use crate::state::{StateError, StateRead, StateWrite};

/// Reads of orgs, identities and revocations.
pub trait MembershipRead: StateRead + Sized {
    /// Org `org_id`, whatever its status.
    fn org(&self, org_id: &str) -> Result<Option<pb::Org>, StateError> {
        self.get_proto(&state_key::org(org_id))
    }

    /// Every org, ascending by id.
    fn orgs(&self) -> Result<Vec<pb::Org>, StateError> {
        self.prefix_proto(state_key::ORGS)
    }

    /// Active orgs, ascending by id.
    fn active_orgs(&self) -> Result<Vec<pb::Org>, StateError> {
        Ok(self
            .orgs()?
            .into_iter()
            .filter(|o| o.status == pb::OrgStatus::Active as i32)
            .collect())
    }

    /// Whether `org_id` is an active member org.
    fn org_is_active(&self, org_id: &str) -> Result<bool, StateError> {
        Ok(self
            .org(org_id)?
            .is_some_and(|o| o.status == pb::OrgStatus::Active as i32))
    }

    /// The org whose current CA has this subject hash.
    fn org_by_ca_subject(&self, subject_hash: &[u8; 32]) -> Result<Option<String>, StateError> {
        Ok(self
            .get_raw(&state_key::ca_subject(subject_hash))?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The org a presented certificate names (see [`super::rule`]): a registered identity's org,
    /// or the active org whose current CA's subject is a new certificate's issuer (from the
    /// ca-subject index governance keeps).
    fn org_of(&self, presented: &Presented<'_>) -> Result<Option<pb::Org>, StateError> {
        match presented {
            Presented::Registered(identity) => self.org(&identity.org_id),
            Presented::Certificate(cert) => match self.org_by_ca_subject(&cert.issuer_hash)? {
                Some(org_id) => self.org(&org_id),
                None => Ok(None),
            },
        }
    }

    /// The identity registered for a certificate fingerprint.
    fn identity(&self, fingerprint: &[u8; 32]) -> Result<Option<pb::Identity>, StateError> {
        self.get_proto(&state_key::identity(fingerprint))
    }

    /// The revocation of a certificate, if revoked.
    fn revocation(&self, fingerprint: &[u8; 32]) -> Result<Option<pb::Revocation>, StateError> {
        self.get_proto(&state_key::revocation(fingerprint))
    }
}

impl<T: StateRead> MembershipRead for T {}

/// Writes of membership records.
pub trait MembershipWrite: StateWrite + MembershipRead {
    /// Stores an org and points its CA subject at it.
    fn put_org(&mut self, org: &pb::Org, ca_subject_hash: &[u8; 32]) {
        self.put_proto(state_key::org(&org.org_id), org);
        if org.status == pb::OrgStatus::Active as i32 {
            self.put_raw(
                state_key::ca_subject(ca_subject_hash),
                org.org_id.as_bytes().to_vec(),
            );
        }
    }

    /// Forgets a CA subject (org removed or CA rotated).
    fn drop_ca_subject(&mut self, ca_subject_hash: &[u8; 32]) {
        self.delete(state_key::ca_subject(ca_subject_hash));
    }

    /// Registers an identity.
    fn put_identity(&mut self, identity: &pb::Identity) {
        let key = state_key::identity(&fingerprint_of(&identity.fingerprint));
        self.put_proto(key, identity);
    }

    /// Records a revocation.
    fn put_revocation(&mut self, revocation: &pb::Revocation) {
        let key = state_key::revocation(&fingerprint_of(&revocation.fingerprint));
        self.put_proto(key, revocation);
    }
}

impl<T: StateWrite> MembershipWrite for T {}

fn fingerprint_of(bytes: &[u8]) -> [u8; 32] {
    // Records are only ever built from checked 32-byte fingerprints.
    let mut out = [0u8; 32];
    let n = bytes.len().min(32);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}
