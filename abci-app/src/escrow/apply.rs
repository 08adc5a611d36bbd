//! Carrying out a lifecycle [`Transition`]: the one place where purchase records, escrowed money,
//! access marks, validation slots and the schedule change.

use neurodata_proto::chain::v1 as pb;

use super::lifecycle::{Effect, Notice, Purchase, Transition};
use super::{EscrowRead, EscrowWrite, escrow_account};
use crate::TxError;
use crate::address::Address;
use crate::events::{EventKind, attr};
use crate::ledger::{LedgerError, LedgerWrite};
use crate::market::{MarketRead, MarketWrite};
use crate::state::{Event, StateWrite, stored_amount};

/// Writes `transition` of a purchase that was `before` (`None` when it opens): the record when it
/// changed, then every effect in order.
pub(super) fn apply<S: StateWrite>(
    state: &mut S,
    before: Option<&Purchase>,
    transition: Transition,
) -> Result<(), TxError> {
    let Transition {
        purchase: p,
        effects,
    } = transition;
    if before != Some(&p) {
        state.put_purchase(&p);
    }
    for effect in effects {
        match effect {
            Effect::Escrow { from, amount } => {
                state.move_funds(&from, &escrow_account(), amount)?
            }
            Effect::Pay { to, amount } => state.move_funds(&escrow_account(), &to, amount)?,
            Effect::Fee { amount } => {
                state.move_funds(&escrow_account(), &Address::reward_pool(), amount)?
            }
            Effect::CountSale => count(state, p.dataset, |s| {
                s.purchases += 1;
                Ok(())
            })?,
            Effect::CountPaid { revenue } => count(state, p.dataset, |s| {
                s.paid += 1;
                let total =
                    stored_amount(&s.revenue, || crate::market::state_key::stats(p.dataset))?;
                s.revenue = total
                    .checked_add(revenue)
                    .ok_or_else(|| LedgerError::Overflow("dataset revenue".into()))?
                    .to_string();
                Ok(())
            })?,
            Effect::CountRefund => count(state, p.dataset, |s| {
                s.refunded += 1;
                Ok(())
            })?,
            Effect::MarkLive { buyer } => state.put_live_purchase(&buyer, p.dataset, p.id),
            Effect::DropLive { buyer } => state.drop_live_purchase(&buyer, p.dataset),
            Effect::TakeValidationSlot { org } => {
                let open = state.open_validations(&org)?;
                state.put_open_validations(&org, open + 1);
            }
            Effect::FreeValidationSlot { org } => {
                let open = state.open_validations(&org)?;
                state.put_open_validations(&org, open.saturating_sub(1));
            }
            Effect::Schedule { height } => state.schedule(height, p.id),
            Effect::Unschedule { height } => state.unschedule(height, p.id),
            Effect::Emit(notice) => state.emit(event(&p, notice)),
        }
    }
    Ok(())
}

/// Updates the dataset's statistics.
fn count<S: StateWrite>(
    state: &mut S,
    dataset: u64,
    update: impl FnOnce(&mut pb::DatasetStats) -> Result<(), TxError>,
) -> Result<(), TxError> {
    let mut stats = state.dataset_stats(dataset)?;
    update(&mut stats)?;
    state.put_dataset_stats(&stats);
    Ok(())
}

/// The event of `notice`, with the attributes of purchase `p` after the transition.
fn event(p: &Purchase, notice: Notice) -> Event {
    let price = p.kind.price();
    match notice {
        Notice::Opened => Event::new(EventKind::PurchaseOpened)
            .attr(attr::PURCHASE, p.id)
            .attr(attr::DATASET, p.dataset)
            .attr(attr::KIND, p.kind.wire().as_str_name())
            .attr(attr::BUYER, p.buyer)
            .attr(attr::PROVIDER_ORG, &p.provider_org)
            .attr(attr::PRICE, price)
            .attr(attr::KEY_DEADLINE, p.key_deadline),
        Notice::KeyDelivered => Event::new(EventKind::PurchaseKeyDelivered)
            .attr(attr::PURCHASE, p.id)
            .attr(attr::DATASET, p.dataset)
            .attr(attr::BUYER, p.buyer)
            .attr(attr::CONFIRM_BY, p.due_height),
        Notice::DisputeUpheld => Event::new(EventKind::PurchaseDisputeUpheld)
            .attr(attr::PURCHASE, p.id)
            .attr(attr::DATASET, p.dataset)
            .attr(attr::PROVIDER_ORG, &p.provider_org),
        Notice::Closed => Event::new(EventKind::PurchaseClosed)
            .attr(attr::PURCHASE, p.id)
            .attr(attr::DATASET, p.dataset)
            .attr(attr::STATUS, p.state.status().as_str_name())
            .attr(attr::BUYER, p.buyer)
            .attr(attr::PRICE, price),
    }
}
