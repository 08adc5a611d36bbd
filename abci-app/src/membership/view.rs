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

    /// The expiry index entries of `day` (days since 1970), ascending by notAfter.
    fn expiry_bucket(&self, day: u64) -> Result<Vec<Expiry>, StateError> {
        self.prefix_raw(&state_key::expiry_day(day))?
            .into_iter()
            .map(|(key, value)| Expiry::read(key, value))
            .collect()
    }

    /// Certificates registered after the notice window had passed their notAfter, not yet
    /// announced.
    fn late_expiries(&self) -> Result<Vec<Expiry>, StateError> {
        self.prefix_raw(state_key::EXPIRY_LATE)?
            .into_iter()
            .map(|(key, value)| Expiry::read(key, value))
            .collect()
    }

    /// The end of the notice window as of the last block, if a block set it.
    fn expiry_cursor(&self) -> Result<Option<i64>, StateError> {
        match self.get_raw(state_key::expiry_cursor())? {
            None => Ok(None),
            Some(b) => <[u8; 8]>::try_from(b.as_slice())
                .map(|b| Some(i64::from_be_bytes(b)))
                .map_err(|_| StateError::Corrupt {
                    key: state_key::expiry_cursor().into(),
                    reason: "not 8 bytes".into(),
                }),
        }
    }
}

/// Which certificate an expiry index entry is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpiringCertificate {
    /// A member certificate (its fingerprint is its identity's).
    Member,
    /// The root CA of an org (it may have been rotated out since).
    OrgCa {
        /// The org.
        org_id: String,
    },
}

/// One expiry index entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// Its key (to drop a late entry).
    pub key: String,
    /// The certificate's notAfter, Unix seconds.
    pub not_after: i64,
    /// The certificate's fingerprint.
    pub fingerprint: [u8; 32],
    /// What it is.
    pub certificate: ExpiringCertificate,
}

const MEMBER: &str = "member";
const ORG_CA: &str = "ca";

impl Expiry {
    fn read(key: String, value: Vec<u8>) -> Result<Self, StateError> {
        let corrupt = |key: String| StateError::Corrupt {
            key,
            reason: "not an expiry index entry".into(),
        };
        let Some((not_after, kind, fingerprint)) = state_key::parse_expiry(&key) else {
            return Err(corrupt(key));
        };
        let certificate = match kind {
            MEMBER => ExpiringCertificate::Member,
            ORG_CA => ExpiringCertificate::OrgCa {
                org_id: String::from_utf8(value).map_err(|_| corrupt(key.clone()))?,
            },
            _ => return Err(corrupt(key)),
        };
        Ok(Expiry {
            key,
            not_after,
            fingerprint,
            certificate,
        })
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

    /// Points a CA subject at an org (the CA a rotation replaced, during its grace period).
    fn put_ca_subject(&mut self, ca_subject_hash: &[u8; 32], org_id: &str) {
        self.put_raw(
            state_key::ca_subject(ca_subject_hash),
            org_id.as_bytes().to_vec(),
        );
    }

    /// Forgets a CA subject (org removed or CA rotated).
    fn drop_ca_subject(&mut self, ca_subject_hash: &[u8; 32]) {
        self.delete(state_key::ca_subject(ca_subject_hash));
    }

    /// Registers (or updates) an identity and files it in the expiry index.
    fn put_identity(&mut self, identity: &pb::Identity) -> Result<(), StateError> {
        let fingerprint = fingerprint_of(&identity.fingerprint);
        self.put_proto(state_key::identity(&fingerprint), identity);
        self.track_expiry(identity.not_after, MEMBER, &fingerprint, Vec::new())
    }

    /// Files an org's (new) root CA in the expiry index.
    fn track_ca_expiry(
        &mut self,
        org_id: &str,
        ca: &super::CaCertificate,
    ) -> Result<(), StateError> {
        self.track_expiry(
            ca.not_after,
            ORG_CA,
            &ca.fingerprint,
            org_id.as_bytes().to_vec(),
        )
    }

    /// Files a certificate in the expiry index; one the notice window already passed (the end
    /// of block will not reach it again) is queued for a late notice, once.
    fn track_expiry(
        &mut self,
        not_after: i64,
        kind: &str,
        fingerprint: &[u8; 32],
        value: Vec<u8>,
    ) -> Result<(), StateError> {
        let key = state_key::expiry(not_after, kind, fingerprint);
        if self.get_raw(&key)?.is_some() {
            return Ok(());
        }
        if self
            .expiry_cursor()?
            .is_some_and(|cursor| not_after <= cursor)
        {
            self.put_raw(
                state_key::expiry_late(not_after, kind, fingerprint),
                value.clone(),
            );
        }
        self.put_raw(key, value);
        Ok(())
    }

    /// Records how far the notice window reached.
    fn put_expiry_cursor(&mut self, cursor: i64) {
        self.put_raw(
            state_key::expiry_cursor().into(),
            cursor.to_be_bytes().to_vec(),
        );
    }

    /// Drops an announced late entry.
    fn drop_late_expiry(&mut self, entry: &Expiry) {
        self.delete(entry.key.clone());
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
