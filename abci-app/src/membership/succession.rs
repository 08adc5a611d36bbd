//! Succession: what passes from an identity to its successor, the one rule both
//! [`super::MoveIdentity`] (an org admin's move) and [`super::RenewCertificate`] (a member's own
//! renewal) apply, so a renewal carries over exactly what a move does.
//!
//! Everything the chain keys by the old fingerprint and its holder still needs: the balance, open
//! purchases (as buyer and as provider, with the royalties they owe), dataset and model listings,
//! validator operator roles, the worker registration with the jobs it runs, and the jobs it
//! submitted. Closed records (finished purchases, final model versions, past votes) stay as they
//! were: they are history, and a model version's owner is resolved through the successor link
//! (`crate::models::listing`).

use neurodata_proto::chain::v1 as pb;

use super::{MembershipError, MembershipRead, MembershipWrite, check_live};
use crate::TxError;
use crate::address::Address;
use crate::amount::Amount;
use crate::ledger::{LedgerRead, LedgerWrite};
use crate::state::StateWrite;

/// What moved to the successor, for the event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handover {
    /// The balance moved.
    pub amount: Amount,
    /// Open purchases moved.
    pub purchases: u64,
    /// Dataset and model listings moved.
    pub listings: u64,
    /// Validators whose operator it was.
    pub validators: u64,
    /// Training jobs it ran or submitted that are still open.
    pub jobs: u64,
}

/// Refuses to replace a successor that can still act: a recorded successor is final while it is
/// live; once it cannot act (expired, revoked, renewed, its CA rotated), what still reaches `from`
/// may go to a new successor.
pub fn check_successor_replaceable<S: MembershipRead>(
    state: &S,
    from: &pb::Identity,
    to: &Address,
    now: i64,
) -> Result<(), TxError> {
    if from.successor.is_empty() || from.successor == to.0 {
        return Ok(());
    }
    let successor_live = match <[u8; 32]>::try_from(from.successor.as_slice()) {
        Ok(fp) => match state.identity(&fp)? {
            Some(s) => check_live(state, &s, now).is_ok(),
            None => false,
        },
        Err(_) => false,
    };
    if successor_live {
        return Err(MembershipError::AlreadyMoved {
            from: hex::encode(&from.fingerprint),
            successor: hex::encode(&from.successor),
        }
        .into());
    }
    Ok(())
}

/// Moves everything `from` holds to `to` and records `to` as its successor (the caller checked
/// that both are of one org, that `to` is live and [`check_successor_replaceable`]; it stores
/// `from` and emits the event).
pub fn hand_over<S: StateWrite>(
    state: &mut S,
    from: &mut pb::Identity,
    to: &Address,
) -> Result<Handover, TxError> {
    let source = Address::from_slice(&from.fingerprint)
        .ok_or_else(|| MembershipError::BadCertificate("fingerprint is not 32 bytes".into()))?;
    let amount = state.balance(&source)?;
    if amount > Amount::ZERO {
        state.move_funds(&source, to, amount)?;
    }
    let purchases = crate::escrow::move_purchases(state, &source, to)?;
    let listings = crate::market::move_listings(state, &source, to)?
        + crate::models::move_listings(state, &source, to)?;
    let validators = crate::governance::move_operator(state, &source, to)?;
    let jobs = crate::training::move_member(state, &source, to)?;
    from.successor = to.0.to_vec();
    state.put_identity(from)?;
    Ok(Handover {
        amount,
        purchases,
        listings,
        validators,
        jobs,
    })
}
