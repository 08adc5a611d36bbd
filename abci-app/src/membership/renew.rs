//! `RenewCertificate`: a member replaces its own certificate before it expires, with no admin
//! transaction. The org admin issues the new certificate off chain (`ndctl ca reissue`, the same
//! common name, role and usually the same key); the member signs the renewal with the current
//! certificate, which proves it holds the identity being renewed.
//!
//! The new certificate must be one the old one's holder could have got from its org and nothing
//! more: issued by the org's **current** CA (so a renewal cannot outlive a CA rotation or leave
//! the org; during a rotation's grace period it is how members move to the new CA), the same common name and role (a renewal is not a promotion: a new role is a new
//! certificate and, for funds, an admin's `MoveIdentity`), live at the block time, and expiring
//! later than the old one. A certificate whose notBefore is still ahead is refused
//! ([`MembershipError::NotYetValid`]): between the renewal and its notBefore the member would
//! hold no certificate that signs. And it must be new to the chain
//! ([`MembershipError::AlreadyRegistered`]): a registered identity may hold records of its own
//! that a renewal would merge.
//!
//! Execution is a succession ([`super::succession`]) like an admin's move, so the same things
//! carry over, plus the link both ways (`Identity.renewed_to` on the old record, `renewed_from`
//! on the new) and the old certificate's retirement: from the next tx on it is refused everywhere
//! ([`MembershipError::Renewed`], which names its successor). A tx's signer is judged once, so
//! a renewal must be its tx's last message (checked with the envelope): a message after it would
//! act as the retired certificate and own what it made.
//!
//! An expired certificate cannot sign its renewal (the membership rule refuses it first); its
//! org's admin moves it to a new certificate instead (`MoveIdentity`).

use neurodata_proto::chain::v1 as pb;

use super::{MemberCertificate, MembershipError, MembershipRead, MembershipWrite, Signer};
use crate::TxError;
use crate::address::Address;
use crate::events::{EventKind, attr};
use crate::state::{Event, StateWrite};
use crate::tx::{ExecCtx, invalid};

/// Renew the signer's certificate to `certificate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewCertificate {
    /// The new certificate, parsed (a P-256 member certificate with one role).
    pub certificate: MemberCertificate,
}

impl TryFrom<pb::RenewCertificate> for RenewCertificate {
    type Error = TxError;
    fn try_from(m: pb::RenewCertificate) -> Result<Self, TxError> {
        if m.new_certificate.is_empty() {
            return Err(invalid(
                "renew_certificate.new_certificate",
                "is empty: attach the DER of the renewed certificate",
            ));
        }
        Ok(RenewCertificate {
            certificate: MemberCertificate::parse(&m.new_certificate)?,
        })
    }
}

impl RenewCertificate {
    /// Links the signer's identity to the new certificate, moves what it holds there and retires
    /// it.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let new = &self.certificate;
        let to = Address(new.fingerprint);
        if new.fingerprint.as_slice() == signer.identity.fingerprint.as_slice() {
            return Err(MembershipError::RenewalToSelf.into());
        }
        // The stored record, not the one authenticated: an earlier message of this tx may have
        // renewed it already.
        let mut old = match <[u8; 32]>::try_from(signer.identity.fingerprint.as_slice()) {
            Ok(fp) => state.identity(&fp)?,
            Err(_) => None,
        }
        .unwrap_or_else(|| signer.identity.clone());
        if !old.renewed_to.is_empty() {
            return Err(MembershipError::Renewed {
                fingerprint: hex::encode(&old.fingerprint),
                successor: hex::encode(&old.renewed_to),
            }
            .into());
        }
        let (org, issuer) = new.issuing_org(&*state, ctx.time)?;
        // A renewal moves a member onto its org's current CA, never onto one a rotation is
        // retiring.
        if issuer != org.ca_fingerprint {
            return Err(MembershipError::RenewalFromRetiringCa {
                org: org.org_id.clone(),
            }
            .into());
        }
        let kept = [
            ("org", &old.org_id, &org.org_id),
            ("common name", &old.common_name, &new.common_name),
            ("role", &old.role, &new.role.to_string()),
        ];
        for (what, current, renewed) in kept {
            if current != renewed {
                return Err(MembershipError::RenewalMismatch {
                    what,
                    current: current.clone(),
                    new: renewed.clone(),
                }
                .into());
            }
        }
        if new.not_after <= old.not_after {
            return Err(MembershipError::RenewalNotLater {
                current_not_after: old.not_after,
                new_not_after: new.not_after,
            }
            .into());
        }
        if state.identity(&new.fingerprint)?.is_some() {
            return Err(MembershipError::AlreadyRegistered(to.to_hex()).into());
        }
        let mut renewed = new.identity(&org, issuer, ctx.height);
        renewed.renewed_from = old.fingerprint.clone();
        super::check_live(&*state, &renewed, ctx.time)?;
        super::succession::check_successor_replaceable(&*state, &old, &to, ctx.time)?;

        state.put_identity(&renewed)?;
        state.emit(
            Event::new(EventKind::IdentityRegistered)
                .attr(attr::FINGERPRINT, to)
                .attr(attr::ORG, &renewed.org_id)
                .attr(attr::ROLE, &renewed.role)
                .attr(attr::COMMON_NAME, &renewed.common_name),
        );
        old.renewed_to = to.0.to_vec();
        let moved = super::succession::hand_over(state, &mut old, &to)?;
        state.emit(
            Event::new(EventKind::CertificateRenewed)
                .attr(attr::FROM, hex::encode(&old.fingerprint))
                .attr(attr::TO, to)
                .attr(attr::ORG, &renewed.org_id)
                .attr(attr::ROLE, &renewed.role)
                .attr(attr::COMMON_NAME, &renewed.common_name)
                .attr(attr::NOT_AFTER, renewed.not_after)
                .attr(attr::AMOUNT, moved.amount)
                .attr(attr::PURCHASES, moved.purchases)
                .attr(attr::LISTINGS, moved.listings)
                .attr(attr::VALIDATORS, moved.validators)
                .attr(attr::JOBS, moved.jobs),
        );
        Ok(())
    }
}
