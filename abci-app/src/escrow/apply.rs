//! Carrying out a lifecycle [`Transition`]: the one place where purchase records, escrowed money,
//! access marks, validation slots, the schedule and the sales statistics (a dataset's, a model
//! listing's, and the royalties of the datasets a model was trained on) change.

use neurodata_proto::chain::v1 as pb;

use super::lifecycle::{Effect, Item, Notice, Purchase, Transition};
use super::{EscrowRead, EscrowWrite, escrow_account};
use crate::TxError;
use crate::address::Address;
use crate::amount::Amount;
use crate::events::{EventKind, attr};
use crate::ledger::{LedgerError, LedgerWrite};
use crate::market::{MarketRead, MarketWrite};
use crate::models::{ModelsRead, ModelsWrite};
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
            Effect::CountSale => match p.item {
                Item::Dataset(d) => count(state, d, |s| {
                    s.purchases += 1;
                    Ok(())
                })?,
                Item::Model(l) => count_model(state, l, |s| {
                    s.purchases += 1;
                    Ok(())
                })?,
            },
            Effect::CountPaid { revenue } => match p.item {
                Item::Dataset(d) => count(state, d, |s| {
                    s.paid += 1;
                    let key = || crate::market::state_key::stats(d);
                    s.revenue = add(&s.revenue, revenue, key, "dataset revenue")?;
                    Ok(())
                })?,
                Item::Model(l) => count_model(state, l, |s| {
                    s.paid += 1;
                    let key = || crate::models::state_key::stats(l);
                    s.revenue = add(&s.revenue, revenue, key, "model revenue")?;
                    let royalties = p.royalties_total();
                    s.royalties = add(&s.royalties, royalties, key, "model royalties")?;
                    Ok(())
                })?,
            },
            Effect::CountRefund => match p.item {
                Item::Dataset(d) => count(state, d, |s| {
                    s.refunded += 1;
                    Ok(())
                })?,
                Item::Model(l) => count_model(state, l, |s| {
                    s.refunded += 1;
                    Ok(())
                })?,
            },
            Effect::CountRoyalty { dataset, amount } => count(state, dataset, |s| {
                s.model_sales += 1;
                let key = || crate::market::state_key::stats(dataset);
                s.royalties = add(&s.royalties, amount, key, "dataset royalties")?;
                Ok(())
            })?,
            Effect::MarkLive { buyer } => state.put_live_mark(&buyer, p.item, p.id),
            Effect::DropLive { buyer } => state.drop_live_mark(&buyer, p.item),
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

/// `total` (a stored decimal, empty in records written before the field existed: zero) plus
/// `amount`, as stored.
fn add(
    total: &str,
    amount: Amount,
    key: impl FnOnce() -> String,
    what: &str,
) -> Result<String, TxError> {
    let total = match total {
        "" => Amount::ZERO,
        t => stored_amount(t, key)?,
    };
    Ok(total
        .checked_add(amount)
        .ok_or_else(|| LedgerError::Overflow(what.into()))?
        .to_string())
}

/// Updates a model listing's statistics.
fn count_model<S: StateWrite>(
    state: &mut S,
    listing: u64,
    update: impl FnOnce(&mut pb::ModelStats) -> Result<(), TxError>,
) -> Result<(), TxError> {
    let mut stats = state.model_stats(listing)?;
    update(&mut stats)?;
    state.put_model_stats(&stats);
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

/// The event of `notice`, with the attributes of purchase `p` after the transition: its item is
/// a `dataset` or a model `listing` attribute.
fn event(p: &Purchase, notice: Notice) -> Event {
    let price = p.kind.price();
    let item = |e: Event| match p.item {
        Item::Dataset(d) => e.attr(attr::DATASET, d),
        Item::Model(l) => e.attr(attr::LISTING, l),
    };
    match notice {
        Notice::Opened => item(Event::new(EventKind::PurchaseOpened).attr(attr::PURCHASE, p.id))
            .attr(attr::KIND, p.kind.wire().as_str_name())
            .attr(attr::BUYER, p.buyer)
            .attr(attr::PROVIDER_ORG, &p.provider_org)
            .attr(attr::PRICE, price)
            .attr(attr::KEY_DEADLINE, p.key_deadline),
        Notice::KeyDelivered => {
            item(Event::new(EventKind::PurchaseKeyDelivered).attr(attr::PURCHASE, p.id))
                .attr(attr::BUYER, p.buyer)
                .attr(attr::CONFIRM_BY, p.due_height)
        }
        Notice::DisputeUpheld => {
            item(Event::new(EventKind::PurchaseDisputeUpheld).attr(attr::PURCHASE, p.id))
                .attr(attr::PROVIDER_ORG, &p.provider_org)
        }
        Notice::Closed => item(Event::new(EventKind::PurchaseClosed).attr(attr::PURCHASE, p.id))
            .attr(attr::STATUS, p.state.status().as_str_name())
            .attr(attr::BUYER, p.buyer)
            .attr(attr::PRICE, price),
    }
}
