//! Who may call the gateway: every call (but health checks and reflection) carries a member
//! certificate over mTLS, judged per call by the chain's own membership rule
//! ([`check_member`]) on the records the chain holds now: the org list, the certificate's
//! registered identity and its revocation. So a caller is admitted exactly when the chain would
//! accept it as a tx signer at the latest block time: a registered identity as registered, a new
//! certificate issued and signed by the current root CA of an active org; not revoked; within
//! its validity; a role allowed for the call. The gateway has no rule of its own: it fetches and
//! caches the records, and maps the rule's refusal to a gRPC status ([`status`]).
//!
//! TLS itself only proves the client holds the certificate's key; the chain check happens per
//! call, so an org admitted, removed or rotated by governance, or a certificate revoked, takes
//! effect at the next block without restarting the gateway, and a refused client gets a gRPC
//! status that says why rather than a bare handshake alert.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use neurodata_abci::address::Address;
use neurodata_abci::membership::rule::org_in;
use neurodata_abci::membership::{
    MemberCertificate, MembershipError, Permission, Presented, Role, check_member,
};
use neurodata_abci::query::{self, Record, Typed};
use neurodata_client::{ChainAccess, ClientError};
use neurodata_proto::chain::v1 as pb;
use tonic::{Code, Status};

use crate::chain::{Chain, ChainError};

/// A caller that passed every membership check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// SHA-256 of the certificate DER (the signer id on chain).
    pub fingerprint: [u8; 32],
    /// The issuing org.
    pub org_id: String,
    /// The role in the certificate's OU.
    pub role: Role,
    /// Subject CN.
    pub common_name: String,
}

impl Member {
    /// Hex fingerprint.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    /// A member as the guard would admit it, for unit tests of the services' rules.
    #[cfg(test)]
    pub fn for_tests(fingerprint: [u8; 32], org_id: &str, role: Role) -> Self {
        Member {
            fingerprint,
            org_id: org_id.to_owned(),
            role,
            common_name: format!("{role}@{org_id}"),
        }
    }
}

/// Blob uploads: datasets by providers, run artifacts by trainers, models' ciphertexts by the
/// members who own or bought them.
const UPLOAD: &str = "/neurodata.gateway.v1.Blobs/Upload";

/// Which roles may call a gRPC method; None: no certificate needed (health, reflection).
pub fn roles_for(path: &str) -> Option<&'static [Role]> {
    const PUBLIC: [&str; 3] = [
        "/grpc.health.v1.Health/",
        "/grpc.reflection.v1.ServerReflection/",
        "/grpc.reflection.v1alpha.ServerReflection/",
    ];
    if PUBLIC.iter().any(|p| path.starts_with(p)) {
        return None;
    }
    // Datasets are uploaded by providers, run artifacts by trainers, and a model's ciphertexts
    // by whoever owns it (a job's submitter, often a buyer) or bought it (to install it at its
    // own gateway); validators' operators upload nothing. Everything else is open to any member
    // role, because the chain checks each message's role itself, downloads go through the blob
    // authorization hook, and the services check the org (a data key is deposited by its
    // owner, a dataset's provider or a model's owner, whatever the role: Keys.Deposit).
    if path == UPLOAD {
        return Some(&[Role::Provider, Role::Trainer, Role::Buyer, Role::Admin]);
    }
    Some(&Role::ALL)
}

/// How a role refusal names a call: its method, for the methods only some roles may call (every
/// other method is open to every role, so it is never refused for the role).
fn call_name(path: &str) -> &'static str {
    if path == UPLOAD { UPLOAD } else { "this call" }
}

/// What a call to the gRPC method `path` asks of its caller's certificate; None: nothing, no
/// certificate needed (health, reflection).
pub fn permission(path: &str) -> Option<Permission<'static>> {
    roles_for(path).map(|roles| Permission {
        action: call_name(path),
        roles,
    })
}

fn unauthenticated(msg: String) -> Status {
    Status::unauthenticated(msg)
}

/// The status a caller sees for a membership refusal, with the chain's message.
/// UNAUTHENTICATED: the certificate does not make its holder a member (not a member
/// certificate, no admitted org's current CA issued it, outside its validity). PERMISSION_DENIED:
/// it does, but the member may not act (its org removed, the certificate revoked, its role).
pub fn status(e: &MembershipError) -> Status {
    use MembershipError as M;
    let code = match e {
        M::BadCertificate(_)
        | M::FingerprintMismatch { .. }
        | M::UnknownSigner(_)
        | M::UnknownCa { .. }
        | M::NotSignedByCa { .. }
        | M::CaRotated { .. }
        | M::NotYetValid { .. }
        | M::Expired { .. }
        | M::KeyNotP256
        | M::RoleCount { .. }
        | M::UnknownRole { .. }
        | M::CaCannotSign => Code::Unauthenticated,
        M::OrgNotActive { .. }
        | M::Revoked { .. }
        | M::Renewed { .. }
        | M::RoleNotAllowed { .. }
        | M::ForeignCertificate { .. } => Code::PermissionDenied,
        // Refusals of membership actions and of org root CAs, which the rule never returns;
        // mapped by their meaning so that the match stays exhaustive.
        M::AlreadyRevoked(_)
        | M::AlreadyMoved { .. }
        | M::AlreadyRegistered(_)
        | M::RenewalNotLater { .. } => Code::FailedPrecondition,
        M::RenewalMismatch { .. } | M::RenewalToSelf | M::RenewalFromRetiringCa { .. } => {
            Code::InvalidArgument
        }
        M::UnknownCertificate(_) => Code::NotFound,
        M::RootNotCa | M::RootNotSelfSigned | M::RootSignatureInvalid => Code::InvalidArgument,
    };
    Status::new(code, e.to_string())
}

/// Maps a chain failure to the status a caller sees.
pub fn chain_status(e: ChainError) -> Status {
    match e {
        ChainError::Unreachable { .. } => Status::unavailable(e.to_string()),
        ChainError::Bad { .. } => Status::internal(e.to_string()),
    }
}

/// What the chain holds about one certificate: the records the rule reads besides the org list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Records {
    /// Its identity, if a tx registered it.
    pub identity: Option<pb::Identity>,
    /// Its revocation, if revoked.
    pub revocation: Option<pb::Revocation>,
}

/// The verdict on a certificate for a call needing `permission` at `now`: the chain's rule on
/// the records fetched for it (`orgs`, the org list; `records`, its identity and revocation),
/// found and read as the chain reads them, a refusal mapped by [`status`].
pub fn judge(
    cert_der: &[u8],
    orgs: &[pb::Org],
    records: &Records,
    now: i64,
    permission: Permission<'_>,
) -> Result<Member, Status> {
    verdict(cert_der, orgs, records, now, permission).map_err(|e| status(&e))
}

/// [`judge`]'s verdict before a refusal is mapped to a status: the rule's own error, whose code
/// is the one the chain gives a tx signer refused for the same reason.
pub fn verdict(
    cert_der: &[u8],
    orgs: &[pb::Org],
    records: &Records,
    now: i64,
    permission: Permission<'_>,
) -> Result<Member, MembershipError> {
    let parsed;
    // Like the chain: a registered identity is judged by its record, so the certificate is
    // parsed only when the chain has not registered it.
    let presented = match &records.identity {
        Some(identity) => Presented::Registered(identity),
        None => {
            parsed = MemberCertificate::parse(cert_der)?;
            Presented::Certificate(&parsed)
        }
    };
    let org = org_in(orgs, &presented);
    let member = check_member(
        presented,
        org,
        records.revocation.as_ref(),
        now,
        &[permission],
    )?;
    Ok(Member {
        fingerprint: openssl::sha::sha256(cert_der),
        org_id: member.identity.org_id,
        role: member.role,
        common_name: member.identity.common_name,
    })
}

/// Most certificates whose records the cache keeps. Anyone who can open a TLS connection can
/// present any number of self-made certificates, so the cache must not grow with them: records
/// of certificates of no admitted org are not cached at all, and the rest are capped, oldest
/// evicted first.
const MAX_RECORDS: usize = 4096;

/// Records and the org list, valid for one membership epoch.
#[derive(Default)]
struct Cache {
    epoch: u64,
    orgs: Option<Vec<pb::Org>>,
    records: BTreeMap<[u8; 32], Records>,
    /// Insertion order of `records`, for eviction.
    order: VecDeque<[u8; 32]>,
}

impl Cache {
    /// The cache for `epoch`, forgetting what was learned in earlier ones; None for an epoch
    /// older than the cache's (a caller that read the epoch just before it moved on).
    fn at(&mut self, epoch: u64) -> Option<&mut Self> {
        if epoch > self.epoch {
            *self = Cache {
                epoch,
                ..Cache::default()
            };
        }
        (epoch == self.epoch).then_some(self)
    }

    fn records(&mut self, epoch: u64, fingerprint: &[u8; 32]) -> Option<Records> {
        self.at(epoch)?.records.get(fingerprint).cloned()
    }

    fn orgs(&mut self, epoch: u64) -> Option<Vec<pb::Org>> {
        self.at(epoch)?.orgs.clone()
    }

    /// Keeps records fetched as of membership epoch `seen`, unless membership changed since
    /// (`now`): records fetched before a revocation must not be cached after it, where they would
    /// outlive the revocation until the next membership change. Returns whether kept.
    fn keep_records(
        &mut self,
        seen: u64,
        now: u64,
        fingerprint: [u8; 32],
        records: Records,
    ) -> bool {
        if seen != now {
            return false;
        }
        let Some(cache) = self.at(now) else {
            return false;
        };
        if cache.records.insert(fingerprint, records).is_none() {
            cache.order.push_back(fingerprint);
        }
        while cache.records.len() > MAX_RECORDS {
            match cache.order.pop_front() {
                Some(old) => {
                    cache.records.remove(&old);
                }
                None => break,
            }
        }
        true
    }

    /// As [`Cache::keep_records`], for the org list.
    fn keep_orgs(&mut self, seen: u64, now: u64, orgs: Vec<pb::Org>) -> bool {
        if seen != now {
            return false;
        }
        let Some(cache) = self.at(now) else {
            return false;
        };
        cache.orgs = Some(orgs);
        true
    }
}

/// Whether a certificate's records are worth caching: those of a certificate the chain knows
/// (registered or revoked) or that an admitted org's current CA signed. Re-fetching a
/// certificate of no admitted org costs two queries, while caching its records would let a
/// client grow the cache with self-made certificates.
fn cacheable(cert_der: &[u8], orgs: &[pb::Org], records: &Records) -> bool {
    if records.identity.is_some() || records.revocation.is_some() {
        return true;
    }
    MemberCertificate::parse(cert_der).is_ok_and(|cert| {
        org_in(orgs, &Presented::Certificate(&cert))
            // Any CA the org still lists: whether a rotation's grace still covers it is the
            // rule's decision at each call, not the cache's.
            .is_some_and(|org| cert.issuer_in(org, i64::MIN).is_ok())
    })
}

/// A record as the chain's query returns it: empty when absent.
/// Checks certificates against on-chain membership, caching the chain's records until a block
/// changes membership (see [`Chain::membership_epoch`]).
pub struct Membership {
    chain: Arc<Chain>,
    cache: Mutex<Cache>,
}

impl Membership {
    /// A checker reading the chain through `chain`.
    pub fn new(chain: Arc<Chain>) -> Self {
        Membership {
            chain,
            cache: Mutex::new(Cache::default()),
        }
    }

    fn epoch(&self) -> u64 {
        *self.chain.membership_epoch().borrow()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // Every update leaves the cache consistent, so a poisoned lock is still usable.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn orgs(&self) -> Result<Vec<pb::Org>, Status> {
        let seen = self.epoch();
        if let Some(orgs) = self.cache().orgs(seen) {
            return Ok(orgs);
        }
        let orgs = self.read(query::orgs()).await?.unwrap_or_default().orgs;
        let now = self.epoch();
        self.cache().keep_orgs(seen, now, orgs.clone());
        Ok(orgs)
    }

    async fn read<R: Record + Send>(&self, query: Typed<R>) -> Result<Option<R>, Status> {
        self.chain.record(query).await.map_err(|e| match e {
            // A stored record that does not decode is the chain's fault, not the caller's.
            ClientError::Query { path, log } => Status::internal(format!("{path}: {log}")),
            other => chain_status(other.into()),
        })
    }

    /// The chain's records of a certificate: its registered identity and its revocation.
    async fn fetch(&self, fingerprint: [u8; 32]) -> Result<Records, Status> {
        let address = Address(fingerprint);
        let (identity, revocation) = tokio::try_join!(
            self.read(query::identity(address)),
            self.read(query::revocation(address)),
        )?;
        Ok(Records {
            identity,
            revocation,
        })
    }

    /// The time certificates are judged at: the latest block's. The chain judges a tx signer at
    /// its block's time, and the latest block's is the closest the gateway knows to the next
    /// one's, so a caller admitted here is a signer the chain accepts now, whatever the gateway
    /// host's clock says. The wall clock is the fallback before the first block is seen.
    fn now(&self) -> i64 {
        let tip = self.chain.tip();
        if tip.height > 0 {
            tip.time_unix
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        }
    }

    /// Checks the certificate a caller presented, for a call that needs `permission`.
    pub async fn check(
        &self,
        cert_der: &[u8],
        permission: Permission<'_>,
    ) -> Result<Member, Status> {
        let fingerprint = openssl::sha::sha256(cert_der);
        // The epoch is read before anything is looked up, so records are cached only if no
        // membership change happened while they were being fetched.
        let seen = self.epoch();
        let orgs = self.orgs().await?;
        let cached = self.cache().records(seen, &fingerprint);
        let records = match cached {
            Some(records) => records,
            None => {
                // Failures to reach the chain are not records: nothing is cached.
                let records = self.fetch(fingerprint).await?;
                if cacheable(cert_der, &orgs, &records) {
                    let now = self.epoch();
                    self.cache()
                        .keep_records(seen, now, fingerprint, records.clone());
                }
                records
            }
        };
        judge(cert_der, &orgs, &records, self.now(), permission)
    }

    /// Re-checks a member already admitted (for long-running streams after membership changed).
    pub async fn recheck(&self, cert_der: &[u8], member: &Member) -> Result<(), Status> {
        let permission = Permission {
            action: "this call",
            roles: &[member.role],
        };
        self.check(cert_der, permission).await.map(|_| ())
    }
}

/// The DER certificate a caller presented over mTLS, from the request's connection info.
pub fn peer_certificate(ext: &http::Extensions) -> Option<Vec<u8>> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    ext.get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?
        .first()
        .map(|c| c.as_ref().to_vec())
}

/// The member of a call, put into its extensions by the guard (None in plaintext dev mode).
#[derive(Clone, Debug)]
pub struct Caller {
    /// The member.
    pub member: Member,
    /// Its certificate, for re-checks.
    pub cert_der: Vec<u8>,
}

/// Admits or refuses one call by its path and connection.
pub async fn admit_call(
    membership: &Membership,
    plaintext: bool,
    path: &str,
    ext: &http::Extensions,
) -> Result<Option<Caller>, Status> {
    let Some(permission) = permission(path) else {
        return Ok(None);
    };
    if plaintext {
        return Ok(None);
    }
    let cert_der = peer_certificate(ext).ok_or_else(|| {
        unauthenticated(
            "no client certificate: connect with mTLS using your member certificate and key"
                .to_owned(),
        )
    })?;
    let member = membership.check(&cert_der, permission).await?;
    Ok(Some(Caller { member, cert_der }))
}

#[cfg(test)]
mod matrix;

#[cfg(test)]
mod tests {
    use super::*;
    use neurodata_certs::{OrgCa, Validity};

    #[test]
    fn health_and_reflection_need_no_certificate_and_uploads_need_a_producer_role() {
        // Data keys are deposited by any member of the org: a model's owner may be a buyer.
        assert_eq!(
            roles_for("/neurodata.gateway.v1.Keys/Deposit"),
            Some(&Role::ALL[..])
        );
        assert_eq!(roles_for("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            roles_for("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            None
        );
        assert_eq!(
            roles_for("/neurodata.gateway.v1.Tx/Broadcast"),
            Some(&Role::ALL[..])
        );
        let upload = roles_for("/neurodata.gateway.v1.Blobs/Upload").unwrap_or_default();
        assert!(upload.contains(&Role::Provider) && upload.contains(&Role::Buyer));
        assert!(!upload.contains(&Role::Validator));
    }

    fn fp(i: usize) -> [u8; 32] {
        let mut f = [0u8; 32];
        f[..8].copy_from_slice(&(i as u64).to_be_bytes());
        f
    }

    fn revoked() -> Records {
        Records {
            identity: None,
            revocation: Some(pb::Revocation::default()),
        }
    }

    #[test]
    fn records_fetched_across_a_membership_change_are_not_cached() {
        let mut cache = Cache::default();
        // Fetched while epoch 0 was current, finished after a revocation moved it to 1.
        assert!(!cache.keep_records(0, 1, fp(1), Records::default()));
        assert!(cache.records(1, &fp(1)).is_none());
        assert!(!cache.keep_orgs(0, 1, vec![]));
        assert!(cache.orgs(1).is_none());
        // Fetched within one epoch: kept for that epoch only.
        assert!(cache.keep_records(1, 1, fp(1), Records::default()));
        assert!(cache.records(1, &fp(1)).is_some());
        assert!(cache.records(2, &fp(1)).is_none());
        // A caller that read the epoch before it moved on neither sees nor wipes newer ones.
        assert!(cache.keep_records(2, 2, fp(2), revoked()));
        assert!(cache.records(1, &fp(2)).is_none());
        assert!(cache.records(2, &fp(2)).is_some());
    }

    #[test]
    fn the_record_cache_is_bounded_and_skips_certificates_of_no_admitted_org() {
        let mut cache = Cache::default();
        for i in 0..MAX_RECORDS + 10 {
            cache.keep_records(0, 0, fp(i), revoked());
        }
        assert_eq!(cache.records.len(), MAX_RECORDS);
        assert!(cache.records(0, &fp(0)).is_none(), "the oldest is evicted");
        assert!(cache.records(0, &fp(MAX_RECORDS + 9)).is_some());

        let v = Validity::days_from(NOW, 30);
        let medlab = OrgCa::create("medlab", "Medlab", v).unwrap();
        let orgs = [pb::Org {
            org_id: "medlab".into(),
            ca_cert_der: medlab.cert.to_der().unwrap(),
            status: pb::OrgStatus::Active as i32,
            ..Default::default()
        }];
        let member_of = |ca: &OrgCa| {
            let m = ca.issue("alice", Role::Buyer, v).unwrap();
            m.cert.to_der().unwrap()
        };
        let unknown = Records::default();
        assert!(cacheable(&member_of(&medlab), &orgs, &unknown));
        // Self-made: another CA, and one with medlab's CA subject.
        let rogue = OrgCa::create("rogue", "Rogue", v).unwrap();
        let impostor = OrgCa::create("medlab", "Medlab", v).unwrap();
        assert!(!cacheable(&member_of(&rogue), &orgs, &unknown));
        assert!(!cacheable(&member_of(&impostor), &orgs, &unknown));
        assert!(!cacheable(b"junk", &orgs, &unknown));
        // Whatever the chain knows about a certificate is kept.
        assert!(cacheable(&member_of(&rogue), &orgs, &revoked()));
    }

    #[test]
    fn refusals_say_unauthenticated_for_a_non_member_and_permission_denied_for_a_member() {
        let e = MembershipError::Expired {
            not_after: 1,
            block_time: 2,
        };
        let s = status(&e);
        assert_eq!(s.code(), Code::Unauthenticated);
        assert_eq!(s.message(), e.to_string(), "the chain's message");
        let revoked = MembershipError::Revoked {
            fingerprint: "ab".into(),
            height: 3,
        };
        assert_eq!(status(&revoked).code(), Code::PermissionDenied);
    }

    const NOW: i64 = 1_800_000_000;

    /// One list of cases run through the chain's membership check ([`check_signer`], on a chain
    /// state built by governance's own actions) and through the gateway's ([`judge`], on the
    /// records the gateway's queries return from that state): the same verdict, the same status.
    mod same_verdict_as_the_chain {
        use super::super::*;
        use super::NOW;
        use neurodata_abci::TxError;
        use neurodata_abci::address::Address;
        use neurodata_abci::governance::{GovernanceWrite, Params, ProposalAction};
        use neurodata_abci::membership::{MembershipRead, MembershipWrite, check_signer};
        use neurodata_abci::state::{MemoryState, StateDelta};
        use neurodata_abci::tx::ExecCtx;
        use neurodata_certs::{OrgCa, Validity};

        type State = StateDelta<MemoryState>;

        const DAY: i64 = 86_400;

        /// One certificate presented for one permission, and what the chain says.
        struct Case {
            desc: &'static str,
            cert: Vec<u8>,
            permission: Permission<'static>,
            /// The org and role admitted, or the chain's membership error code.
            expected: Result<(&'static str, Role), u32>,
        }

        fn any_role() -> Permission<'static> {
            Permission {
                action: "Transfer",
                roles: &Role::ALL,
            }
        }

        fn ctx(height: u64) -> ExecCtx {
            ExecCtx {
                height,
                time: NOW - 10 * DAY + height as i64,
                params: Params::default(),
            }
        }

        fn pem(ca: &OrgCa) -> String {
            String::from_utf8(ca.cert.to_pem().unwrap()).unwrap()
        }

        fn govern(state: &mut State, height: u64, action: ProposalAction) {
            action.execute(state, &ctx(height), 0).unwrap();
        }

        fn admit(state: &mut State, org_id: &str, ca: &OrgCa) {
            let name = org_id.to_owned();
            let ca_cert_pem = pem(ca);
            govern(
                state,
                1,
                ProposalAction::AdmitOrg {
                    org_id: org_id.into(),
                    name,
                    ca_cert_pem,
                },
            );
        }

        fn issue(ca: &OrgCa, role: Role, validity: Validity) -> Vec<u8> {
            ca.issue("someone", role, validity)
                .unwrap()
                .cert
                .to_der()
                .unwrap()
        }

        /// Registers a certificate as its first tx would.
        fn register(state: &mut State, der: &[u8]) {
            let identity = MemberCertificate::parse(der)
                .unwrap()
                .register(&*state, NOW, 2)
                .unwrap();
            state.put_identity(&identity).unwrap();
        }

        fn revoke(state: &mut State, der: &[u8]) {
            state.put_revocation(&pb::Revocation {
                fingerprint: openssl::sha::sha256(der).to_vec(),
                org_id: "medlab".into(),
                reason: "lost laptop".into(),
                height: 2,
                revoked_by: vec![],
            });
        }

        /// The consortium and its history, and the cases it makes.
        fn world() -> (State, Vec<Case>) {
            let ca_validity = Validity::days_from(NOW, 3650);
            let ok = Validity::days_from(NOW, 30);
            let ca = |id: &str, name: &str| OrgCa::create(id, name, ca_validity).unwrap();
            let mut state = StateDelta::new(MemoryState::default());

            // Height 1: governance admits four orgs; medlab runs the only validator.
            let medlab = ca("medlab", "Medlab");
            let acme = ca("acme", "Acme");
            let bio = ca("bio", "Bio");
            let labx = ca("labx", "Labx");
            let gracy = ca("gracy", "Gracy");
            let lapsed = ca("lapsed", "Lapsed");
            for (id, ca) in [
                ("medlab", &medlab),
                ("acme", &acme),
                ("bio", &bio),
                ("labx", &labx),
                ("gracy", &gracy),
                ("lapsed", &lapsed),
            ] {
                admit(&mut state, id, ca);
            }
            state.put_validator(
                &[7; 32],
                &pb::Validator {
                    pub_key: vec![7; 32],
                    power: 10,
                    org_id: "medlab".into(),
                    ..Default::default()
                },
            );

            // Height 2: members register (their first tx) and admins revoke.
            let registered = issue(&medlab, Role::Trainer, ok);
            let registered_then_expired = issue(
                &medlab,
                Role::Buyer,
                Validity {
                    not_before: NOW - 20 * DAY,
                    not_after: NOW - 1,
                },
            );
            let revoked_unregistered = issue(&medlab, Role::Buyer, ok);
            let revoked_registered = issue(&medlab, Role::Buyer, ok);
            let acme_registered = issue(&acme, Role::Buyer, ok);
            let acme_unregistered = issue(&acme, Role::Buyer, ok);
            let bio_old_registered = issue(&bio, Role::Buyer, ok);
            let bio_old_unregistered = issue(&bio, Role::Buyer, ok);
            let labx_old_registered = issue(&labx, Role::Buyer, ok);
            let labx_old_unregistered = issue(&labx, Role::Buyer, ok);
            let gracy_old_registered = issue(&gracy, Role::Buyer, ok);
            let gracy_old_unregistered = issue(&gracy, Role::Buyer, ok);
            let lapsed_old_registered = issue(&lapsed, Role::Buyer, ok);
            let lapsed_old_unregistered = issue(&lapsed, Role::Buyer, ok);
            for der in [
                &registered,
                &registered_then_expired,
                &revoked_registered,
                &acme_registered,
                &bio_old_registered,
                &labx_old_registered,
                &gracy_old_registered,
                &lapsed_old_registered,
            ] {
                register(&mut state, der);
            }
            revoke(&mut state, &revoked_unregistered);
            revoke(&mut state, &revoked_registered);

            // Height 3: acme is removed and another org admitted with a CA of the same subject;
            // bio rotates to a CA with the same subject, labx to one with another subject.
            govern(
                &mut state,
                3,
                ProposalAction::RemoveOrg {
                    org_id: "acme".into(),
                },
            );
            let acme_labs = ca("acme", "Acme");
            admit(&mut state, "acme-labs", &acme_labs);
            let bio_new = ca("bio", "Bio");
            let labx_new = ca("labx", "Labx Two");
            for (org_id, ca) in [("bio", &bio_new), ("labx", &labx_new)] {
                let ca_cert_pem = pem(ca);
                govern(
                    &mut state,
                    3,
                    ProposalAction::RotateOrgCa {
                        org_id: org_id.into(),
                        ca_cert_pem,
                        grace_secs: 0,
                    },
                );
            }
            // gracy and lapsed rotate to CAs of other subjects with a grace period: gracy's
            // lasts past NOW, lapsed's ended before.
            for (org_id, grace) in [("gracy", 20 * DAY), ("lapsed", DAY)] {
                govern(
                    &mut state,
                    3,
                    ProposalAction::RotateOrgCa {
                        org_id: org_id.into(),
                        ca_cert_pem: pem(&ca(org_id, "Renamed")),
                        grace_secs: grace as u64,
                    },
                );
            }

            let upload = Permission {
                action: UPLOAD,
                roles: roles_for(UPLOAD).unwrap_or_default(),
            };
            let case = |desc, cert, permission, expected| Case {
                desc,
                cert,
                permission,
                expected,
            };
            let cases = vec![
                case(
                    "a new certificate of an active org's CA",
                    issue(&medlab, Role::Buyer, ok),
                    any_role(),
                    Ok(("medlab", Role::Buyer)),
                ),
                case(
                    "a registered certificate",
                    registered,
                    any_role(),
                    Ok(("medlab", Role::Trainer)),
                ),
                case(
                    "expired",
                    issue(
                        &medlab,
                        Role::Buyer,
                        Validity {
                            not_before: NOW - 20 * DAY,
                            not_after: NOW - 1,
                        },
                    ),
                    any_role(),
                    Err(28),
                ),
                case(
                    "expired after it was registered",
                    registered_then_expired,
                    any_role(),
                    Err(28),
                ),
                case(
                    "not yet valid",
                    issue(
                        &medlab,
                        Role::Buyer,
                        Validity {
                            not_before: NOW + 1,
                            not_after: NOW + DAY,
                        },
                    ),
                    any_role(),
                    Err(27),
                ),
                case(
                    "revoked before the chain saw it",
                    revoked_unregistered,
                    any_role(),
                    Err(29),
                ),
                case(
                    "revoked after it was registered",
                    revoked_registered,
                    any_role(),
                    Err(29),
                ),
                case(
                    "issued by no org's CA",
                    issue(&ca("rogue", "Rogue"), Role::Buyer, ok),
                    any_role(),
                    Err(23),
                ),
                case(
                    "issued by a self-made CA with an admitted org's CA subject",
                    issue(&ca("medlab", "Medlab"), Role::Admin, ok),
                    any_role(),
                    Err(24),
                ),
                case(
                    "its org removed, registered before",
                    acme_registered,
                    any_role(),
                    Err(25),
                ),
                case(
                    // The removed org's CA subject now names acme-labs, whose CA did not sign it.
                    "its org removed, never registered",
                    acme_unregistered,
                    any_role(),
                    Err(24),
                ),
                case(
                    "of the org admitted with a removed org's CA subject",
                    issue(&acme_labs, Role::Provider, ok),
                    any_role(),
                    Ok(("acme-labs", Role::Provider)),
                ),
                case(
                    "its CA rotated to one with the same subject, registered before",
                    bio_old_registered,
                    any_role(),
                    Err(26),
                ),
                case(
                    "its CA rotated to one with the same subject, never registered",
                    bio_old_unregistered,
                    any_role(),
                    Err(24),
                ),
                case(
                    "its CA rotated to one with another subject, registered before",
                    labx_old_registered,
                    any_role(),
                    Err(26),
                ),
                case(
                    "its CA rotated to one with another subject, never registered",
                    labx_old_unregistered,
                    any_role(),
                    Err(23),
                ),
                case(
                    "its CA rotated with a grace period that lasts, registered before",
                    gracy_old_registered,
                    any_role(),
                    Ok(("gracy", Role::Buyer)),
                ),
                case(
                    "its CA rotated with a grace period that lasts, never registered (a \
                     retiring CA registers nobody new)",
                    gracy_old_unregistered,
                    any_role(),
                    Err(23),
                ),
                case(
                    "its CA rotated with a grace period that ended, registered before",
                    lapsed_old_registered,
                    any_role(),
                    Err(26),
                ),
                case(
                    "its CA rotated with a grace period that ended, never registered",
                    lapsed_old_unregistered,
                    any_role(),
                    Err(23),
                ),
                case(
                    "issued by an org's new CA after a rotation",
                    issue(&labx_new, Role::Validator, ok),
                    any_role(),
                    Ok(("labx", Role::Validator)),
                ),
                case(
                    "a role the call does not allow",
                    issue(&medlab, Role::Validator, ok),
                    upload,
                    Err(30),
                ),
                case(
                    "a role the call allows",
                    issue(&bio_new, Role::Provider, ok),
                    upload,
                    Ok(("bio", Role::Provider)),
                ),
                case(
                    "a CA certificate",
                    medlab.cert.to_der().unwrap(),
                    any_role(),
                    Err(39),
                ),
                case("not a certificate", b"junk".to_vec(), any_role(), Err(20)),
            ];
            (state, cases)
        }

        #[test]
        fn the_gateway_admits_and_refuses_exactly_as_the_chain_does() {
            let (state, cases) = world();
            let orgs = state.orgs().unwrap();
            for c in cases {
                let fingerprint = openssl::sha::sha256(&c.cert);
                let chain = match check_signer(
                    &state,
                    &Address(fingerprint),
                    Some(&c.cert),
                    &[c.permission],
                    NOW,
                    4,
                ) {
                    Ok(signer) => Ok(signer),
                    Err(TxError::Membership(e)) => Err(e),
                    Err(other) => panic!("{}: not a membership refusal: {other}", c.desc),
                };
                let records = Records {
                    identity: state.identity(&fingerprint).unwrap(),
                    revocation: state.revocation(&fingerprint).unwrap(),
                };
                let gateway = judge(&c.cert, &orgs, &records, NOW, c.permission);
                match (&c.expected, chain, gateway) {
                    (Ok((org, role)), Ok(signer), Ok(member)) => {
                        assert_eq!(
                            (signer.identity.org_id.as_str(), signer.role),
                            (*org, *role),
                            "{}: the chain's member",
                            c.desc
                        );
                        assert_eq!(
                            (member.org_id.as_str(), member.role, member.fingerprint),
                            (*org, *role, fingerprint),
                            "{}: the gateway's member",
                            c.desc
                        );
                    }
                    (Err(code), Err(e), Err(s)) => {
                        assert_eq!(e.code(), *code, "{}: the chain's refusal: {e}", c.desc);
                        let want = status(&e);
                        assert_eq!(
                            (s.code(), s.message()),
                            (want.code(), want.message()),
                            "{}: the gateway's status",
                            c.desc
                        );
                    }
                    (expected, chain, gateway) => panic!(
                        "{}: expected {expected:?}, the chain said {:?}, the gateway {:?}",
                        c.desc,
                        chain.map(|s| (s.identity.org_id, s.role)),
                        gateway.map(|m| (m.org_id, m.role)),
                    ),
                }
            }
        }
    }
}
