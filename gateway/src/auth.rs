//! Who may call the gateway: every call (but health checks and reflection) carries a member
//! certificate over mTLS, checked against the chain's membership as it is now — the same rules
//! the chain applies to a tx signer: issued and signed by the current root CA of an active org,
//! not revoked, within its validity at the latest block time, and a role allowed for the call.
//!
//! TLS itself only proves the client holds the certificate's key; the chain check happens per
//! call, so an org admitted, removed or rotated by governance, or a certificate revoked, takes
//! effect at the next block without restarting the gateway, and a refused client gets a gRPC
//! status that says why rather than a bare handshake alert.

use std::collections::BTreeMap;
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

struct Cache {
    epoch: u64,
    orgs: Option<Vec<pb::Org>>,
    verdicts: BTreeMap<[u8; 32], Result<Member, Status>>,
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
            cache: Mutex::new(Cache {
                epoch: 0,
                orgs: None,
                verdicts: BTreeMap::new(),
            }),
        }
    }

    fn cached(&self, fingerprint: &[u8; 32]) -> Option<Result<Member, Status>> {
        let epoch = *self.chain.membership_epoch().borrow();
        let mut cache = self.cache.lock().ok()?;
        if cache.epoch != epoch {
            cache.epoch = epoch;
            cache.orgs = None;
            cache.verdicts.clear();
        }
        cache.verdicts.get(fingerprint).cloned()
    }

    async fn orgs(&self) -> Result<Vec<pb::Org>, Status> {
        if let Some(orgs) = self.cache.lock().ok().and_then(|c| c.orgs.clone()) {
            return Ok(orgs);
        }
        let value = self.query("/orgs", vec![]).await?;
        let orgs = pb::OrgList::decode(value.as_slice())
            .map_err(|e| Status::internal(format!("org list does not decode: {e}")))?
            .orgs;
        if let Ok(mut c) = self.cache.lock() {
            c.orgs = Some(orgs.clone());
        }
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
        let member = match self.cached(&fingerprint) {
            Some(verdict) => verdict?,
            None => {
                let verdict = self.verify(cert_der, fingerprint).await;
                // Failures to reach the chain are not verdicts; everything else is, until
                // membership changes.
                if !matches!(&verdict, Err(s) if s.code() == tonic::Code::Unavailable
                    || s.code() == tonic::Code::Internal)
                    && let Ok(mut c) = self.cache.lock()
                {
                    c.verdicts.insert(fingerprint, verdict.clone());
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
        let org = orgs
            .iter()
            .find(|o| {
                CaCertificate::from_der(&o.ca_cert_der)
                    .map(|ca| ca.subject_hash == cert.issuer_hash)
                    .unwrap_or(false)
            })
            .ok_or_else(|| {
                unauthenticated(format!(
                    "client certificate issuer {:?} is not the CA of an admitted org",
                    cert.issuer
                ))
            })?;
        if org.status != pb::OrgStatus::Active as i32 {
            return Err(denied(format!(
                "org {} has been removed from the consortium",
                org.org_id
            )));
        }
        let signed_by_ca = (|| {
            let ca = openssl::x509::X509::from_der(&org.ca_cert_der).ok()?;
            let ca_key = ca.public_key().ok()?;
            openssl::x509::X509::from_der(cert_der)
                .ok()?
                .verify(&ca_key)
                .ok()
        })()
        .unwrap_or(false);
        if !signed_by_ca {
            return Err(unauthenticated(format!(
                "client certificate is not signed by the current CA of org {}",
                org.org_id
            )));
        }
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
}
