//! `MoveIdentity`: an org admin moves one of its org's identities to a successor identity of the
//! same org. Funds are held by a certificate fingerprint; once that certificate expires, is
//! revoked or its CA rotates, nobody can sign for it again, so without a move its balance, its
//! open purchases and its listings' income would be stranded for good.

use crate::events::{EventKind, attr};
use neurodata_proto::chain::v1 as pb;

use super::{
    MemberCertificate, MembershipError, MembershipRead, MembershipWrite, Signer, check_live,
};
use crate::TxError;
use crate::address::Address;
use crate::state::{Event, StateWrite};
use crate::tx::{ExecCtx, invalid};

/// Move an identity to its successor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveIdentity {
    /// The identity moved from.
    pub from: Address,
    /// The successor.
    pub to: Address,
    /// The successor's DER, when the chain never saw it.
    pub to_certificate: Option<Vec<u8>>,
    /// The DER moved from, when the chain never saw it (funded but never signed).
    pub from_certificate: Option<Vec<u8>>,
    /// Why (audit trail).
    pub reason: String,
}

impl TryFrom<pb::MoveIdentity> for MoveIdentity {
    type Error = TxError;
    fn try_from(m: pb::MoveIdentity) -> Result<Self, TxError> {
        let from = Address::from_slice(&m.from)
            .ok_or_else(|| invalid("move_identity.from", "must be 32 bytes"))?;
        let to = Address::from_slice(&m.to)
            .ok_or_else(|| invalid("move_identity.to", "must be 32 bytes"))?;
        if from == to {
            return Err(invalid("move_identity.to", "is the identity moved from"));
        }
        if m.reason.len() > 256 {
            return Err(invalid("move_identity.reason", "at most 256 bytes"));
        }
        let to_certificate = (!m.to_certificate.is_empty()).then_some(m.to_certificate);
        if let Some(der) = &to_certificate
            && super::certificate::sha256(der) != to.0
        {
            return Err(invalid(
                "move_identity.to_certificate",
                "its SHA-256 is not the successor's fingerprint",
            ));
        }
        let from_certificate = (!m.from_certificate.is_empty()).then_some(m.from_certificate);
        if let Some(der) = &from_certificate
            && super::certificate::sha256(der) != from.0
        {
            return Err(invalid(
                "move_identity.from_certificate",
                "its SHA-256 is not the fingerprint moved from",
            ));
        }
        Ok(MoveIdentity {
            from,
            to,
            to_certificate,
            from_certificate,
            reason: m.reason,
        })
    }
}

impl MoveIdentity {
    /// Moves what `from` holds (see [`super::succession`]) to `to`, both of the admin's org,
    /// `to` live at the block time.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let admin_org = &signer.identity.org_id;
        let mut from = own_identity(
            state,
            &self.from,
            self.from_certificate.as_deref(),
            signer,
            ctx,
        )?;
        super::succession::check_successor_replaceable(&*state, &from, &self.to, ctx.time)?;
        let to = own_identity(state, &self.to, self.to_certificate.as_deref(), signer, ctx)?;
        check_live(state, &to, ctx.time)?;
        let moved = super::succession::hand_over(state, &mut from, &self.to)?;
        state.emit(
            Event::new(EventKind::IdentityMoved)
                .attr(attr::FROM, self.from)
                .attr(attr::TO, self.to)
                .attr(attr::ORG, admin_org)
                .attr(attr::AMOUNT, moved.amount)
                .attr(attr::PURCHASES, moved.purchases)
                .attr(attr::LISTINGS, moved.listings)
                .attr(attr::VALIDATORS, moved.validators)
                .attr(attr::JOBS, moved.jobs)
                .attr(attr::REASON, &self.reason),
        );
        Ok(())
    }
}

/// The identity `fingerprint` of the admin's org: registered, or registered now from its attached
/// certificate (issued and signed by its org's current CA).
fn own_identity<S: StateWrite>(
    state: &mut S,
    fingerprint: &Address,
    certificate: Option<&[u8]>,
    admin: &Signer,
    ctx: &ExecCtx,
) -> Result<pb::Identity, TxError> {
    let identity = match state.identity(&fingerprint.0)? {
        Some(identity) => identity,
        None => {
            let der = certificate
                .ok_or_else(|| MembershipError::UnknownCertificate(fingerprint.to_hex()))?;
            register(state, der, ctx)?
        }
    };
    if identity.org_id != admin.identity.org_id {
        return Err(MembershipError::ForeignCertificate {
            cert_org: identity.org_id,
            admin_org: admin.identity.org_id.clone(),
        }
        .into());
    }
    Ok(identity)
}

/// Registers a certificate the chain never saw (issued and signed by its org's current CA).
pub(super) fn register<S: StateWrite>(
    state: &mut S,
    der: &[u8],
    ctx: &ExecCtx,
) -> Result<pb::Identity, TxError> {
    let identity = MemberCertificate::parse(der)?.register(state, ctx.time, ctx.height)?;
    state.put_identity(&identity)?;
    state.emit(
        Event::new(EventKind::IdentityRegistered)
            .attr(attr::FINGERPRINT, hex::encode(&identity.fingerprint))
            .attr(attr::ORG, &identity.org_id)
            .attr(attr::ROLE, &identity.role)
            .attr(attr::COMMON_NAME, &identity.common_name),
    );
    Ok(identity)
}
