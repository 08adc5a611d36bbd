//! Who may call the gateway: every call (but health checks and reflection) carries a member
//! certificate over mTLS, checked against the chain's membership as it is now — the same rules
//! the chain applies to a tx signer: issued and signed by the current root CA of an active org,
//! not revoked, within its validity at the latest block time, and a role allowed for the call.
//!
//! TLS itself only proves the client holds the certificate's key; the chain check happens per
//! call, so an org admitted, removed or rotated by governance, or a certificate revoked, takes
//! effect at the next block without restarting the gateway, and a refused client gets a gRPC
//! status that says why rather than a bare handshake alert.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use neurodata_abci::membership::Role;
use neurodata_abci::membership::{CaCertificate, MemberCertificate};
use neurodata_proto::chain::v1 as pb;
use prost::Message as _;
use tonic::Status;

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
    not_before: i64,
    not_after: i64,
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
            not_before: 0,
            not_after: i64::MAX,
        }
    }
}

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
    // Datasets are uploaded by providers and models by trainers; everything else is open to any
    // member role, because the chain checks each message's role itself and downloads go through
    // the blob authorization hook.
    if path == "/neurodata.gateway.v1.Blobs/Upload" {
        return Some(&[Role::Provider, Role::Trainer, Role::Admin]);
    }
    // Data keys are deposited by the providers (or admins) of the gateway's own org; the service
    // checks the org.
    if path == "/neurodata.gateway.v1.Keys/Deposit" {
        return Some(&[Role::Provider, Role::Admin]);
    }
    Some(&Role::ALL)
}

fn denied(msg: String) -> Status {
    Status::permission_denied(msg)
}

fn unauthenticated(msg: String) -> Status {
    Status::unauthenticated(msg)
}

/// Maps a chain failure to the status a caller sees.
pub fn chain_status(e: ChainError) -> Status {
    match e {
        ChainError::Unreachable { .. } => Status::unavailable(e.to_string()),
        ChainError::Bad { .. } => Status::internal(e.to_string()),
    }
}

/// Most verdicts the cache keeps. Anyone who can open a TLS connection can present any number
/// of self-made certificates, so the cache must not grow with them: verdicts about certificates
/// of no admitted org are not cached at all, and the rest are capped, oldest evicted first.
const MAX_VERDICTS: usize = 4096;

/// Verdicts and the org list, valid for one membership epoch.
#[derive(Default)]
struct Cache {
    epoch: u64,
    orgs: Option<Vec<pb::Org>>,
    verdicts: BTreeMap<[u8; 32], Result<Member, Status>>,
    /// Insertion order of `verdicts`, for eviction.
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

    fn verdict(&mut self, epoch: u64, fingerprint: &[u8; 32]) -> Option<Result<Member, Status>> {
        self.at(epoch)?.verdicts.get(fingerprint).cloned()
    }

    fn orgs(&mut self, epoch: u64) -> Option<Vec<pb::Org>> {
        self.at(epoch)?.orgs.clone()
    }

    /// Keeps a verdict computed from membership as of epoch `seen`, unless membership changed
    /// since (`now`): a verdict computed before a revocation must not be cached after it, where
    /// it would outlive the revocation until the next membership change. Returns whether kept.
    fn keep_verdict(
        &mut self,
        seen: u64,
        now: u64,
        fingerprint: [u8; 32],
        verdict: Result<Member, Status>,
    ) -> bool {
        if seen != now {
            return false;
        }
        let Some(cache) = self.at(now) else {
            return false;
        };
        if cache.verdicts.insert(fingerprint, verdict).is_none() {
            cache.order.push_back(fingerprint);
        }
        while cache.verdicts.len() > MAX_VERDICTS {
            match cache.order.pop_front() {
                Some(old) => {
                    cache.verdicts.remove(&old);
                }
                None => break,
            }
        }
        true
    }

    /// As [`Cache::keep_verdict`], for the org list.
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

/// Whether a verdict is worth caching: admitted members, and refusals of certificates an
/// admitted (or removed) org's CA really signed (revoked, org removed). A certificate of no
/// admitted org is refused without any chain query, so re-checking it costs little, while
/// caching it would let a client grow the cache with self-made certificates.
fn cacheable(verdict: &Result<Member, Status>) -> bool {
    match verdict {
        Ok(_) => true,
        Err(s) => s.code() == tonic::Code::PermissionDenied,
    }
}

/// The org whose current CA issued and signed a certificate. Only active orgs can admit it; a
/// removed org whose CA signed it only explains the refusal. Looking at active orgs first means
/// a removed org can never shadow a later org whose CA has the same subject name.
fn issuing_org<'a>(
    orgs: &'a [pb::Org],
    cert_der: &[u8],
    cert: &MemberCertificate,
) -> Result<&'a pb::Org, Status> {
    let named: Vec<&pb::Org> = orgs
        .iter()
        .filter(|o| {
            CaCertificate::from_der(&o.ca_cert_der)
                .map(|ca| ca.subject_hash == cert.issuer_hash)
                .unwrap_or(false)
        })
        .collect();
    let active = |o: &pb::Org| o.status == pb::OrgStatus::Active as i32;
    if let Some(org) = named
        .iter()
        .find(|o| active(o) && signed_by(&o.ca_cert_der, cert_der))
    {
        return Ok(org);
    }
    if let Some(org) = named.iter().find(|o| signed_by(&o.ca_cert_der, cert_der)) {
        return Err(denied(format!(
            "org {} has been removed from the consortium",
            org.org_id
        )));
    }
    if let Some(org) = named.iter().find(|o| active(o)) {
        return Err(unauthenticated(format!(
            "client certificate is not signed by the current CA of org {}",
            org.org_id
        )));
    }
    Err(unauthenticated(format!(
        "client certificate issuer {:?} is not the CA of an admitted org",
        cert.issuer
    )))
}

/// Whether the CA certificate's key verifies the certificate's signature.
fn signed_by(ca_der: &[u8], cert_der: &[u8]) -> bool {
    (|| {
        let ca = openssl::x509::X509::from_der(ca_der).ok()?;
        let ca_key = ca.public_key().ok()?;
        openssl::x509::X509::from_der(cert_der)
            .ok()?
            .verify(&ca_key)
            .ok()
    })()
    .unwrap_or(false)
}

/// Checks certificates against on-chain membership, caching verdicts until a block changes
/// membership (see [`Chain::membership_epoch`]).
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
        let value = self.query("/orgs", vec![]).await?;
        let orgs = pb::OrgList::decode(value.as_slice())
            .map_err(|e| Status::internal(format!("org list does not decode: {e}")))?
            .orgs;
        let now = self.epoch();
        self.cache().keep_orgs(seen, now, orgs.clone());
        Ok(orgs)
    }

    async fn query(&self, path: &str, data: Vec<u8>) -> Result<Vec<u8>, Status> {
        self.chain
            .query_latest(path, data)
            .await
            .map_err(chain_status)
    }

    /// Checks the certificate a caller presented, for a call that needs one of `roles`.
    pub async fn check(&self, cert_der: &[u8], roles: &[Role]) -> Result<Member, Status> {
        let fingerprint = openssl::sha::sha256(cert_der);
        // The epoch is read before anything is looked up, so a verdict is cached only if no
        // membership change happened while it was being computed.
        let seen = self.epoch();
        let cached = self.cache().verdict(seen, &fingerprint);
        let member = match cached {
            Some(verdict) => verdict?,
            None => {
                let verdict = self.verify(cert_der, fingerprint).await;
                // Failures to reach the chain are not verdicts.
                if cacheable(&verdict) {
                    let now = self.epoch();
                    self.cache()
                        .keep_verdict(seen, now, fingerprint, verdict.clone());
                }
                verdict?
            }
        };
        self.admit(&member, roles)?;
        Ok(member)
    }

    /// Re-checks a member already admitted (for long-running streams after membership changed).
    pub async fn recheck(&self, cert_der: &[u8], member: &Member) -> Result<(), Status> {
        self.check(cert_der, &[member.role]).await.map(|_| ())
    }

    fn admit(&self, member: &Member, roles: &[Role]) -> Result<(), Status> {
        // Validity is judged at the chain's time, like a tx; the wall clock is the fallback
        // before the first block is seen.
        let tip = self.chain.tip();
        let now = if tip.height > 0 {
            tip.time_unix
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        };
        if now < member.not_before {
            return Err(unauthenticated(format!(
                "client certificate is not valid before {} (chain time {now})",
                member.not_before
            )));
        }
        if now > member.not_after {
            return Err(unauthenticated(format!(
                "client certificate expired at {} (chain time {now})",
                member.not_after
            )));
        }
        if !roles.contains(&member.role) {
            return Err(denied(format!(
                "role {} may not make this call (allowed: {})",
                member.role,
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }

    async fn verify(&self, cert_der: &[u8], fingerprint: [u8; 32]) -> Result<Member, Status> {
        let cert = MemberCertificate::parse(cert_der).map_err(|e| {
            unauthenticated(format!(
                "client certificate is not a NeuroData member certificate: {e}"
            ))
        })?;
        let orgs = self.orgs().await?;
        let org = issuing_org(&orgs, cert_der, &cert)?;
        let revocation = self.query("/revocation", fingerprint.to_vec()).await?;
        if !revocation.is_empty() {
            let r = pb::Revocation::decode(revocation.as_slice()).unwrap_or_default();
            return Err(denied(format!(
                "certificate {} was revoked at height {} ({})",
                hex::encode(fingerprint),
                r.height,
                r.reason
            )));
        }
        Ok(Member {
            fingerprint,
            org_id: org.org_id.clone(),
            role: cert.role,
            common_name: cert.common_name,
            not_before: cert.not_before,
            not_after: cert.not_after,
        })
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
    let Some(roles) = roles_for(path) else {
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
    let member = membership.check(&cert_der, roles).await?;
    Ok(Some(Caller { member, cert_der }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_reflection_need_no_certificate_and_uploads_need_a_producer_role() {
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
        assert!(upload.contains(&Role::Provider) && !upload.contains(&Role::Buyer));
    }

    fn fp(i: usize) -> [u8; 32] {
        let mut f = [0u8; 32];
        f[..8].copy_from_slice(&(i as u64).to_be_bytes());
        f
    }

    #[test]
    fn a_verdict_computed_across_a_membership_change_is_not_cached() {
        let mut cache = Cache::default();
        let alice = Member::for_tests(fp(1), "medlab", Role::Buyer);
        // Checked while epoch 0 was current, finished after a revocation moved it to 1.
        assert!(!cache.keep_verdict(0, 1, fp(1), Ok(alice.clone())));
        assert!(cache.verdict(1, &fp(1)).is_none());
        assert!(!cache.keep_orgs(0, 1, vec![]));
        assert!(cache.orgs(1).is_none());
        // Computed within one epoch: kept for that epoch only.
        assert!(cache.keep_verdict(1, 1, fp(1), Ok(alice)));
        assert!(cache.verdict(1, &fp(1)).is_some());
        assert!(cache.verdict(2, &fp(1)).is_none());
        // A caller that read the epoch before it moved on neither sees nor wipes newer ones.
        assert!(cache.keep_verdict(2, 2, fp(2), Err(denied("revoked".into()))));
        assert!(cache.verdict(1, &fp(2)).is_none());
        assert!(cache.verdict(2, &fp(2)).is_some());
    }

    #[test]
    fn the_verdict_cache_is_bounded_and_skips_certificates_of_no_admitted_org() {
        let mut cache = Cache::default();
        for i in 0..MAX_VERDICTS + 10 {
            cache.keep_verdict(0, 0, fp(i), Err(denied("revoked".into())));
        }
        assert_eq!(cache.verdicts.len(), MAX_VERDICTS);
        assert!(cache.verdict(0, &fp(0)).is_none(), "the oldest is evicted");
        assert!(cache.verdict(0, &fp(MAX_VERDICTS + 9)).is_some());
        assert!(!cacheable(&Err(unauthenticated(
            "client certificate issuer is not the CA of an admitted org".into()
        ))));
        assert!(!cacheable(&Err(Status::unavailable("node down"))));
        assert!(cacheable(&Err(denied("revoked".into()))));
    }

    mod issuing_org {
        use super::super::*;
        use neurodata_certs::{OrgCa, Validity};

        fn now() -> i64 {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        }

        fn org(id: &str, status: pb::OrgStatus, ca: &OrgCa) -> pb::Org {
            pb::Org {
                org_id: id.into(),
                ca_cert_der: ca.cert.to_der().unwrap(),
                status: status as i32,
                ..Default::default()
            }
        }

        fn member_of(ca: &OrgCa) -> (Vec<u8>, MemberCertificate) {
            let m = ca
                .issue(
                    "alice",
                    neurodata_certs::Role::Buyer,
                    Validity::days_from(now(), 5),
                )
                .unwrap();
            let der = m.cert.to_der().unwrap();
            let cert = MemberCertificate::parse(&der).unwrap();
            (der, cert)
        }

        #[test]
        fn a_removed_org_does_not_shadow_a_later_org_with_the_same_ca_subject() {
            let v = Validity::days_from(now(), 10);
            // Same org id and name: the same CA subject, another key.
            let old = OrgCa::create("acme", "Acme", v).unwrap();
            let new = OrgCa::create("acme", "Acme", v).unwrap();
            let orgs = vec![
                org("acme", pb::OrgStatus::Removed, &old),
                org("acme-labs", pb::OrgStatus::Active, &new),
            ];
            let (der, cert) = member_of(&new);
            assert_eq!(
                issuing_org(&orgs, &der, &cert)
                    .map(|o| o.org_id.clone())
                    .ok(),
                Some("acme-labs".to_owned())
            );
            // The removed org's members are refused as such.
            let (der, cert) = member_of(&old);
            let s = issuing_org(&orgs, &der, &cert).unwrap_err();
            assert_eq!(s.code(), tonic::Code::PermissionDenied);
            assert!(
                s.message().contains("org acme has been removed"),
                "{}",
                s.message()
            );
            // A self-made CA with the same subject signs nothing the active org accepts.
            let (der, cert) = member_of(&OrgCa::create("acme", "Acme", v).unwrap());
            let s = issuing_org(&orgs, &der, &cert).unwrap_err();
            assert_eq!(s.code(), tonic::Code::Unauthenticated);
            assert!(
                s.message()
                    .contains("not signed by the current CA of org acme-labs"),
                "{}",
                s.message()
            );
            // An unknown issuer.
            let (der, cert) = member_of(&OrgCa::create("rogue", "Rogue", v).unwrap());
            let s = issuing_org(&orgs, &der, &cert).unwrap_err();
            assert!(
                s.message().contains("not the CA of an admitted org"),
                "{}",
                s.message()
            );
        }
    }
}
