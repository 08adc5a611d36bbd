//! `RevokeCertificate`: an org admin revokes one of its own org's member certificates.

use crate::events::{EventKind, attr};
use neurodata_proto::chain::v1 as pb;

use super::{MemberCertificate, MembershipError, MembershipRead, MembershipWrite, Signer};
use crate::TxError;
use crate::address::Address;
use crate::state::{Event, StateWrite};
use crate::tx::{ExecCtx, invalid};

/// Revoke a member certificate of the signer's org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokeCertificate {
    /// The certificate to revoke.
    pub fingerprint: Address,
    /// Its DER, when the chain never saw it.
    pub certificate: Option<Vec<u8>>,
    /// Why (audit trail).
    pub reason: String,
}

impl TryFrom<pb::RevokeCertificate> for RevokeCertificate {
    type Error = TxError;
    fn try_from(m: pb::RevokeCertificate) -> Result<Self, TxError> {
        let fingerprint = Address::from_slice(&m.fingerprint)
            .ok_or_else(|| invalid("revoke_certificate.fingerprint", "must be 32 bytes"))?;
        if m.reason.len() > 256 {
            return Err(invalid("revoke_certificate.reason", "at most 256 bytes"));
        }
        let certificate = (!m.certificate.is_empty()).then_some(m.certificate);
        if let Some(der) = &certificate
            && crate::membership::certificate::sha256(der) != fingerprint.0
        {
            return Err(invalid(
                "revoke_certificate.certificate",
                "its SHA-256 is not the fingerprint",
            ));
        }
        Ok(RevokeCertificate {
            fingerprint,
            certificate,
            reason: m.reason,
        })
    }
}

impl RevokeCertificate {
    /// Revokes the certificate if it belongs to the admin's org.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let hex_fp = self.fingerprint.to_hex();
        if state.revocation(&self.fingerprint.0)?.is_some() {
            return Err(MembershipError::AlreadyRevoked(hex_fp).into());
        }
        let cert_org = match state.identity(&self.fingerprint.0)? {
            Some(identity) => identity.org_id,
            None => match &self.certificate {
                Some(der) => {
                    MemberCertificate::parse(der)?
                        .issuing_org(state, ctx.time)?
                        .0
                        .org_id
                }
                None => return Err(MembershipError::UnknownCertificate(hex_fp).into()),
            },
        };
        if cert_org != signer.identity.org_id {
            return Err(MembershipError::ForeignCertificate {
                cert_org,
                admin_org: signer.identity.org_id.clone(),
            }
            .into());
        }
        state.put_revocation(&pb::Revocation {
            fingerprint: self.fingerprint.0.to_vec(),
            org_id: cert_org.clone(),
            reason: self.reason.clone(),
            height: ctx.height,
            revoked_by: signer.identity.fingerprint.clone(),
        });
        state.emit(
            Event::new(EventKind::CertificateRevoked)
                .attr(attr::FINGERPRINT, &hex_fp)
                .attr(attr::ORG, &cert_org)
                .attr(attr::REASON, &self.reason),
        );
        Ok(())
    }
}
