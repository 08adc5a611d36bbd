//! Settling purchases: key delivery, confirmation, refunds, wrong-key disputes, and the
//! end-of-block sweep that closes what is due.

use crate::events::{EventKind, attr};
use neurodata_crypto::dleq::{SharedSecretProof, reveal};
use neurodata_crypto::wrap::WrappedKey;
use neurodata_proto::chain::v1 as pb;

use super::{EscrowError, EscrowRead, EscrowWrite, escrow_account, status_name};
use crate::TxError;
use crate::address::Address;
use crate::amount::Amount;
use crate::ledger::LedgerWrite;
use crate::market::{MarketRead, MarketWrite, existing_dataset};
use crate::membership::{MembershipRead, Role, Signer};
use crate::state::{Event, StateError, StateWrite};
use crate::tx::{ExecCtx, invalid};

fn corrupt(key: String, reason: impl ToString) -> TxError {
    StateError::Corrupt {
        key,
        reason: reason.to_string(),
    }
    .into()
}

fn amount(p: &pb::Purchase, s: &str) -> Result<Amount, TxError> {
    Ok(crate::state::stored_amount(s, || {
        super::state_key::purchase(p.id)
    })?)
}

fn address(p: &pb::Purchase, b: &[u8]) -> Result<Address, TxError> {
    Address::from_slice(b).ok_or_else(|| corrupt(super::state_key::purchase(p.id), "address"))
}

fn load<S: EscrowRead>(state: &S, id: u64) -> Result<pb::Purchase, TxError> {
    Ok(state
        .purchase(id)?
        .ok_or(EscrowError::UnknownPurchase(id))?)
}

fn require_status(
    p: &pb::Purchase,
    status: pb::PurchaseStatus,
    action: &'static str,
) -> Result<(), TxError> {
    if p.status != status as i32 {
        return Err(EscrowError::WrongStatus {
            purchase: p.id,
            status: status_name(p.status),
            action,
        }
        .into());
    }
    Ok(())
}

fn require_buyer(p: &pb::Purchase, signer: &Signer) -> Result<(), TxError> {
    if p.buyer != signer.identity.fingerprint {
        return Err(EscrowError::NotBuyer(p.id).into());
    }
    Ok(())
}

/// The buyer, or an admin of the buyer's org acting for it: a buyer whose certificate expired or
/// was revoked inside the confirm window can no longer sign, and without its org a provider that
/// timed a garbage key to that moment would be paid by the silence.
fn require_buyer_or_org_admin(p: &pb::Purchase, signer: &Signer) -> Result<(), TxError> {
    let admin = signer.role == Role::Admin && signer.identity.org_id == p.buyer_org;
    if p.buyer != signer.identity.fingerprint && !admin {
        return Err(EscrowError::NotBuyerOrAdmin(p.id).into());
    }
    Ok(())
}

fn is_sale(p: &pb::Purchase) -> bool {
    p.kind == pb::PurchaseKind::Sale as i32
}

/// Closes `p` with `status` at `height`: moves its escrow to the provider (minus the fee) or back
/// to the buyer, updates the dataset's statistics, and drops its schedule entry.
fn close<S: StateWrite>(
    state: &mut S,
    mut p: pb::Purchase,
    status: pb::PurchaseStatus,
    height: u64,
) -> Result<(), TxError> {
    use pb::PurchaseStatus as St;
    let price = amount(&p, &p.price)?;
    let fee = amount(&p, &p.fee)?;
    let buyer = address(&p, &p.buyer)?;
    let paid = matches!(status, St::Confirmed | St::Released);
    if is_sale(&p) {
        let mut stats = state.dataset_stats(p.dataset_id)?;
        if paid {
            let provider = address(&p, &p.provider)?;
            let to_provider = price
                .checked_sub(fee)
                .ok_or_else(|| corrupt(super::state_key::purchase(p.id), "fee above price"))?;
            if to_provider > Amount::ZERO {
                state.move_funds(&escrow_account(), &provider, to_provider)?;
            }
            if fee > Amount::ZERO {
                state.move_funds(&escrow_account(), &Address::reward_pool(), fee)?;
            }
            stats.paid += 1;
            let revenue = amount(&p, &stats.revenue)?
                .checked_add(to_provider)
                .ok_or_else(|| crate::ledger::LedgerError::Overflow("dataset revenue".into()))?;
            stats.revenue = revenue.to_string();
        } else {
            if price > Amount::ZERO {
                state.move_funds(&escrow_account(), &buyer, price)?;
            }
            stats.refunded += 1;
        }
        state.put_dataset_stats(&stats);
    }
    if !paid {
        // A refunded buyer loses access and may buy again.
        state.drop_live_purchase(&buyer, p.dataset_id);
    }
    if p.kind == pb::PurchaseKind::Validation as i32 {
        let open = state.open_validations(&p.buyer_org)?;
        state.put_open_validations(&p.buyer_org, open.saturating_sub(1));
    }
    state.unschedule(p.due_height, p.id);
    p.status = status as i32;
    p.closed_height = height;
    state.put_purchase(&p);
    state.emit(
        Event::new(EventKind::PurchaseClosed)
            .attr(attr::PURCHASE, p.id)
            .attr(attr::DATASET, p.dataset_id)
            .attr(attr::STATUS, status.as_str_name())
            .attr(attr::BUYER, hex::encode(&p.buyer))
            .attr(attr::PRICE, price),
    );
    Ok(())
}

/// The provider org hands over the data key, wrapped to the buyer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliverKey {
    /// The purchase.
    pub purchase_id: u64,
    /// The checked wrapping.
    pub wrapped_key: WrappedKey,
    /// The buyer the key is wrapped to.
    pub recipient: Address,
}

impl TryFrom<pb::DeliverKey> for DeliverKey {
    type Error = TxError;
    fn try_from(m: pb::DeliverKey) -> Result<Self, TxError> {
        Ok(DeliverKey {
            purchase_id: m.purchase_id,
            wrapped_key: WrappedKey::parse(&m.wrapped_key)
                .map_err(|e| EscrowError::BadWrappedKey(e.to_string()))?,
            recipient: Address::from_slice(&m.recipient)
                .ok_or_else(|| invalid("deliver_key.recipient", "must be 32 bytes"))?,
        })
    }
}

impl DeliverKey {
    /// Records the wrapped key and starts the confirm window.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mut p = load(state, self.purchase_id)?;
        let may_deliver = p.provider_org == signer.identity.org_id
            && matches!(signer.role, Role::Provider | Role::Admin);
        if !may_deliver {
            return Err(EscrowError::NotProviderOrg {
                purchase: p.id,
                provider_org: p.provider_org,
            }
            .into());
        }
        require_status(&p, pb::PurchaseStatus::AwaitingKey, "deliver a key for")?;
        // The wrapping was made for the buyer the provider saw; if the purchase moved to a
        // successor since, recording it as delivered to the successor would let the buyer's org
        // keep the key (the old identity opens it) and win a dispute (the successor's cannot).
        if p.buyer != self.recipient.0 {
            return Err(EscrowError::RecipientNotBuyer {
                purchase: p.id,
                buyer: hex::encode(&p.buyer),
            }
            .into());
        }
        if ctx.height > p.key_deadline_height {
            return Err(EscrowError::DeliveryWindowClosed {
                purchase: p.id,
                deadline: p.key_deadline_height,
            }
            .into());
        }
        state.unschedule(p.due_height, p.id);
        p.status = pb::PurchaseStatus::KeyDelivered as i32;
        p.wrapped_key = self.wrapped_key.to_bytes();
        p.delivered_by = signer.identity.fingerprint.clone();
        p.key_recipient = self.recipient.0.to_vec();
        p.delivered_height = ctx.height;
        p.due_height = ctx.height + ctx.params.confirm_blocks;
        state.schedule(p.due_height, p.id);
        state.put_purchase(&p);
        state.emit(
            Event::new(EventKind::PurchaseKeyDelivered)
                .attr(attr::PURCHASE, p.id)
                .attr(attr::DATASET, p.dataset_id)
                .attr(attr::BUYER, hex::encode(&p.buyer))
                .attr(attr::CONFIRM_BY, p.due_height),
        );
        Ok(())
    }
}

/// The buyer confirms it got the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmAccess {
    /// The purchase.
    pub purchase_id: u64,
}

impl ConfirmAccess {
    /// Pays the provider out of escrow.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let p = load(state, self.purchase_id)?;
        require_buyer(&p, signer)?;
        require_status(&p, pb::PurchaseStatus::KeyDelivered, "confirm")?;
        close(state, p, pb::PurchaseStatus::Confirmed, ctx.height)
    }
}

/// The buyer takes its money back after the delivery window passed without a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundPurchase {
    /// The purchase.
    pub purchase_id: u64,
}

impl RefundPurchase {
    /// Refunds the buyer.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let p = load(state, self.purchase_id)?;
        require_buyer_or_org_admin(&p, signer)?;
        require_status(&p, pb::PurchaseStatus::AwaitingKey, "refund")?;
        // A removed provider org can deliver nothing: no need to wait out its window.
        let provider_gone = !state.org_is_active(&p.provider_org)?;
        if ctx.height <= p.key_deadline_height && !provider_gone {
            return Err(EscrowError::RefundTooEarly {
                purchase: p.id,
                deadline: p.key_deadline_height,
            }
            .into());
        }
        close(state, p, pb::PurchaseStatus::Refunded, ctx.height)
    }
}

/// The buyer proves the delivered key wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisputeKey {
    /// The purchase.
    pub purchase_id: u64,
    /// The revealed shared secret and its proof.
    pub proof: SharedSecretProof,
}

impl TryFrom<pb::DisputeKey> for DisputeKey {
    type Error = TxError;
    fn try_from(m: pb::DisputeKey) -> Result<Self, TxError> {
        Ok(DisputeKey {
            purchase_id: m.purchase_id,
            proof: SharedSecretProof::parse(&m.shared_secret_proof)
                .map_err(|e| invalid("dispute_key.shared_secret_proof", e))?,
        })
    }
}

impl DisputeKey {
    /// Verifies the proof, opens the wrapping with the revealed secret, and refunds the buyer if
    /// the key inside does not hash to the dataset's commitment.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let p = load(state, self.purchase_id)?;
        require_buyer_or_org_admin(&p, signer)?;
        require_status(&p, pb::PurchaseStatus::KeyDelivered, "dispute")?;
        let dataset = existing_dataset(state, p.dataset_id)?;
        let wrapped = WrappedKey::parse(&p.wrapped_key)
            .map_err(|e| corrupt(super::state_key::purchase(p.id), e))?;
        // The key was wrapped to the buyer at delivery; the purchase may since have moved to a
        // successor identity, whose key is another.
        let recipient = if p.key_recipient.is_empty() {
            &p.buyer
        } else {
            &p.key_recipient
        };
        let buyer_key = state
            .identity(&address(&p, recipient)?.0)?
            .ok_or_else(|| corrupt(super::state_key::purchase(p.id), "buyer identity"))?
            .public_key_spki;
        let revealed = reveal(&wrapped, &buyer_key, &self.proof)
            .map_err(|e| EscrowError::BadProof(e.to_string()))?;
        let key_ok = revealed.is_some_and(|k| k.commitment().as_slice() == dataset.key_commitment);
        if key_ok {
            return Err(EscrowError::KeyMatches(p.id).into());
        }
        state.emit(
            Event::new(EventKind::PurchaseDisputeUpheld)
                .attr(attr::PURCHASE, p.id)
                .attr(attr::DATASET, p.dataset_id)
                .attr(attr::PROVIDER_ORG, &p.provider_org),
        );
        close(state, p, pb::PurchaseStatus::WrongKeyRefunded, ctx.height)
    }
}

/// Moves `from`'s purchases to its successor `to`: every access mark (live purchases, open or
/// paid; a dataset `to` already holds one for stays with `from`) with the buyer of the open ones,
/// and the provider side of every open purchase. Returns how many purchases changed. A delivered
/// key stays wrapped to `from`: its `key_recipient` is kept (and set if empty), which disputes
/// check.
pub fn move_purchases<S: StateWrite>(
    state: &mut S,
    from: &Address,
    to: &Address,
) -> Result<u64, TxError> {
    let mut moved = 0;
    for (dataset, id) in state.live_purchases_of(from)? {
        if state.live_purchase(to, dataset)?.is_some() {
            continue;
        }
        state.drop_live_purchase(from, dataset);
        state.put_live_purchase(to, dataset, id);
        let mut p = load(state, id)?;
        let open = matches!(
            pb::PurchaseStatus::try_from(p.status),
            Ok(pb::PurchaseStatus::AwaitingKey | pb::PurchaseStatus::KeyDelivered)
        );
        if open && p.buyer == from.0 {
            if p.status == pb::PurchaseStatus::KeyDelivered as i32 && p.key_recipient.is_empty() {
                p.key_recipient = from.0.to_vec();
            }
            p.buyer = to.0.to_vec();
            state.put_purchase(&p);
            moved += 1;
        }
    }
    for id in state.open_purchase_ids()? {
        let mut p = load(state, id)?;
        if p.provider == from.0 {
            p.provider = to.0.to_vec();
            state.put_purchase(&p);
            moved += 1;
        }
    }
    Ok(moved)
}

/// End of block `height`: closes every purchase due now: refunded if its key never came,
/// released to the provider if the buyer neither confirmed nor disputed.
pub fn end_block<S: StateWrite>(state: &mut S, height: u64) -> Result<(), TxError> {
    for id in state.due_at(height)? {
        let p = load(state, id)?;
        match pb::PurchaseStatus::try_from(p.status) {
            Ok(pb::PurchaseStatus::AwaitingKey) => {
                close(state, p, pb::PurchaseStatus::Refunded, height)?
            }
            Ok(pb::PurchaseStatus::KeyDelivered) => {
                close(state, p, pb::PurchaseStatus::Released, height)?
            }
            // Closed purchases drop their entry when they close; a leftover is only removed.
            _ => state.unschedule(height, id),
        }
    }
    Ok(())
}
