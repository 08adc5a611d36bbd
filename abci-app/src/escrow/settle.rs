//! Settling purchases: key delivery, confirmation, refunds, wrong-key disputes, and the
//! end-of-block sweep that closes what is due.

use neurodata_crypto::dleq::{SharedSecretProof, reveal};
use neurodata_crypto::wrap::WrappedKey;
use neurodata_proto::chain::v1 as pb;

use super::apply::apply;
use super::lifecycle::{Input, Item, Purchase};
use super::{EscrowError, EscrowRead, EscrowWrite, state_key};
use crate::TxError;
use crate::address::Address;
use crate::ledger::signer_address;
use crate::market::existing_dataset;
use crate::membership::{MembershipRead, Role, Signer};
use crate::state::{StateError, StateWrite};
use crate::tx::{ExecCtx, invalid};

fn load<S: EscrowRead>(state: &S, id: u64) -> Result<Purchase, TxError> {
    Ok(state
        .load_purchase(id)?
        .ok_or(EscrowError::UnknownPurchase(id))?)
}

/// Steps `purchase` with `input` and applies the transition.
fn step<S: StateWrite>(state: &mut S, purchase: &Purchase, input: Input) -> Result<(), TxError> {
    let transition = purchase.step(input)?;
    apply(state, Some(purchase), transition)
}

fn is_buyer(p: &Purchase, signer: &Signer) -> bool {
    p.buyer.0.as_slice() == signer.identity.fingerprint
}

/// The buyer, or an admin of the buyer's org acting for it: a buyer whose certificate expired or
/// was revoked inside the confirm window can no longer sign, and without its org a provider that
/// timed a garbage key to that moment would be paid by the silence.
fn require_buyer_or_org_admin(p: &Purchase, signer: &Signer) -> Result<(), TxError> {
    let admin = signer.role == Role::Admin && signer.identity.org_id == p.buyer_org;
    if !is_buyer(p, signer) && !admin {
        return Err(EscrowError::NotBuyerOrAdmin(p.id).into());
    }
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
        let purchase = load(state, self.purchase_id)?;
        let may_deliver = purchase.provider_org == signer.identity.org_id
            && matches!(signer.role, Role::Provider | Role::Admin);
        if !may_deliver {
            return Err(EscrowError::NotProviderOrg {
                purchase: purchase.id,
                provider_org: purchase.provider_org,
            }
            .into());
        }
        let input = Input::Deliver {
            wrapped_key: self.wrapped_key.clone(),
            recipient: self.recipient,
            delivered_by: signer_address(signer)?,
            height: ctx.height,
            confirm_blocks: ctx.params.confirm_blocks,
        };
        step(state, &purchase, input)
    }
}

/// The buyer confirms it got the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmAccess {
    /// The purchase.
    pub purchase_id: u64,
}

impl From<pb::ConfirmAccess> for ConfirmAccess {
    fn from(m: pb::ConfirmAccess) -> Self {
        ConfirmAccess {
            purchase_id: m.purchase_id,
        }
    }
}

impl ConfirmAccess {
    /// Pays the provider out of escrow.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let purchase = load(state, self.purchase_id)?;
        if !is_buyer(&purchase, signer) {
            return Err(EscrowError::NotBuyer(purchase.id).into());
        }
        let input = Input::Confirm { height: ctx.height };
        step(state, &purchase, input)
    }
}

/// The buyer takes its money back after the delivery window passed without a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundPurchase {
    /// The purchase.
    pub purchase_id: u64,
}

impl From<pb::RefundPurchase> for RefundPurchase {
    fn from(m: pb::RefundPurchase) -> Self {
        RefundPurchase {
            purchase_id: m.purchase_id,
        }
    }
}

impl RefundPurchase {
    /// Refunds the buyer.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let purchase = load(state, self.purchase_id)?;
        require_buyer_or_org_admin(&purchase, signer)?;
        let input = Input::Refund {
            height: ctx.height,
            provider_org_active: state.org_is_active(&purchase.provider_org)?,
        };
        step(state, &purchase, input)
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
        let purchase = load(state, self.purchase_id)?;
        require_buyer_or_org_admin(&purchase, signer)?;
        let delivery = purchase.delivery_to_dispute()?;
        let commitment = match purchase.item {
            Item::Dataset(d) => existing_dataset(state, d)?.key_commitment,
            Item::Model(l) => crate::models::existing_listing(state, l)?.key_commitment,
        };
        // The key was wrapped to the buyer at delivery; the purchase may since have moved to a
        // successor identity, whose key is another.
        let recipient = delivery.key_recipient.unwrap_or(purchase.buyer);
        let buyer_key = state
            .identity(&recipient.0)?
            .ok_or_else(|| StateError::Corrupt {
                key: state_key::purchase(purchase.id),
                reason: "buyer identity".into(),
            })?
            .public_key_spki;
        let revealed = reveal(&delivery.wrapped_key, &buyer_key, &self.proof)
            .map_err(|e| EscrowError::BadProof(e.to_string()))?;
        let key_matches =
            revealed.is_some_and(|k| k.commitment().as_slice() == commitment.as_slice());
        let input = Input::Dispute {
            height: ctx.height,
            key_matches,
        };
        step(state, &purchase, input)
    }
}

/// Moves `from`'s purchases to its successor `to`: every access mark (live purchases of datasets
/// and models, open or paid; an item `to` already holds one for stays with `from`) with the buyer
/// of the open ones,
/// and the provider side of every open purchase. Returns how many purchases changed. A delivered
/// key stays wrapped to `from`: its `key_recipient` is kept (and set if empty), which disputes
/// check.
pub fn move_purchases<S: StateWrite>(
    state: &mut S,
    from: &Address,
    to: &Address,
) -> Result<u64, TxError> {
    let (from, to) = (*from, *to);
    let mut moved = 0;
    for (item, id) in state.live_marks_of(&from)? {
        if state.live_mark(&to, item)?.is_some() {
            continue;
        }
        state.drop_live_mark(&from, item);
        state.put_live_mark(&to, item, id);
        moved += move_side(state, id, Input::MoveBuyer { from, to })?;
    }
    // The provider side: a sale's provider and a model sale's royalty recipients.
    for id in state.open_purchase_ids()? {
        moved += move_side(state, id, Input::MoveProvider { from, to })?;
    }
    Ok(moved)
}

/// Steps purchase `id` with a move; 1 if that changed it.
fn move_side<S: StateWrite>(state: &mut S, id: u64, input: Input) -> Result<u64, TxError> {
    let purchase = load(state, id)?;
    let transition = purchase.step(input)?;
    let changed = transition.purchase != purchase;
    apply(state, Some(&purchase), transition)?;
    Ok(u64::from(changed))
}

/// End of block `height`: closes every purchase due now: refunded if its key never came,
/// released to the provider if the buyer neither confirmed nor disputed.
pub fn end_block<S: StateWrite>(state: &mut S, height: u64) -> Result<(), TxError> {
    for id in state.due_at(height)? {
        let purchase = load(state, id)?;
        step(state, &purchase, Input::Due { height })?;
    }
    Ok(())
}
