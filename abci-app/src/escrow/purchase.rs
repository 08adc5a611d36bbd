//! Opening purchases: `BuyDataset` (price into escrow), `RequestValidation` (a validator's key
//! request of a dataset or a model listing, no money), the chain's key requests for training and evaluation, and the model sales
//! `crate::models::BuyModel` opens ([`open_model_sale`]).

use neurodata_proto::chain::v1 as pb;

use super::apply::apply;
use super::lifecycle::{Item, Opening, PurchaseKind, Royalty};
use super::{EscrowError, EscrowRead, EscrowWrite, fee_of};
use crate::TxError;
use crate::address::Address;
use crate::amount::Amount;
use crate::ledger::signer_address;
use crate::market::{existing_dataset, require_listed};
use crate::membership::{MembershipRead, Signer};
use crate::models::ModelsError;
use crate::state::{StateError, StateWrite};
use crate::tx::{ExecCtx, amount_field, invalid};

/// Refuses a dataset whose provider org is no longer an active member: nobody there can deliver
/// its key, and the buyer's NRC would sit in escrow until the deadline.
fn require_active_provider_org<S: StateWrite>(
    state: &S,
    dataset: &pb::Dataset,
) -> Result<(), TxError> {
    if !state.org_is_active(&dataset.provider_org)? {
        return Err(EscrowError::ProviderOrgInactive {
            dataset: dataset.id,
            org: dataset.provider_org.clone(),
        }
        .into());
    }
    Ok(())
}

/// Buy a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuyDataset {
    /// The dataset.
    pub dataset_id: u64,
    /// Most the buyer pays.
    pub max_price: Amount,
}

impl TryFrom<pb::BuyDataset> for BuyDataset {
    type Error = TxError;
    fn try_from(m: pb::BuyDataset) -> Result<Self, TxError> {
        Ok(BuyDataset {
            dataset_id: m.dataset_id,
            max_price: amount_field("buy_dataset.max_price", &m.max_price)?,
        })
    }
}

/// Opens a purchase (shared by sales and validation requests) once its handler checked the
/// dataset and the signer.
fn open<S: StateWrite>(
    state: &mut S,
    dataset: &pb::Dataset,
    signer: &Signer,
    kind: PurchaseKind,
    ctx: &ExecCtx,
) -> Result<(), TxError> {
    let buyer = signer_address(signer)?;
    open_for(state, dataset, buyer, &signer.identity.org_id, kind, ctx).map(|_| ())
}

/// Opens a purchase for `buyer` of `buyer_org`; returns its id.
fn open_for<S: StateWrite>(
    state: &mut S,
    dataset: &pb::Dataset,
    buyer: Address,
    buyer_org: &str,
    kind: PurchaseKind,
    ctx: &ExecCtx,
) -> Result<u64, TxError> {
    if let Some(purchase) = state.live_purchase(&buyer, dataset.id)? {
        return Err(EscrowError::AlreadyPurchased {
            dataset: dataset.id,
            purchase,
        }
        .into());
    }
    let provider = Address::from_slice(&dataset.provider).ok_or_else(|| StateError::Corrupt {
        key: crate::market::state_key::dataset(dataset.id),
        reason: "provider is not 32 bytes".into(),
    })?;
    open_item(
        state,
        Opening {
            id: 0,
            item: Item::Dataset(dataset.id),
            kind,
            buyer,
            buyer_org: buyer_org.to_owned(),
            provider,
            provider_org: dataset.provider_org.clone(),
            royalties: Vec::new(),
        },
        ctx,
    )
}

/// Opens `opening` under the next purchase id (its own `id` is ignored); returns the id.
fn open_item<S: StateWrite>(
    state: &mut S,
    opening: Opening,
    ctx: &ExecCtx,
) -> Result<u64, TxError> {
    let id = state.next_purchase_id()?;
    state.put_next_purchase_id(id + 1);
    let params = &ctx.params;
    apply(
        state,
        None,
        Opening { id, ..opening }.open(
            ctx.height,
            params.key_delivery_blocks,
            params.confirm_blocks,
        ),
    )?;
    Ok(id)
}

/// A model sale about to open, checked by `crate::models::BuyModel`: the listing is for sale,
/// the buyer may buy it and holds no live purchase of it, and the price, fee and royalties are
/// the chain's (`fee + sum(royalties) <= price`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSale {
    /// The model listing.
    pub listing: u64,
    /// The signer.
    pub buyer: Address,
    /// The signer's org.
    pub buyer_org: String,
    /// The listing's owner, paid when the sale is.
    pub owner: Address,
    /// The owner's org, whose members deliver the key.
    pub owner_org: String,
    /// The listing's price, escrowed now.
    pub price: Amount,
    /// The reward pool's part of it.
    pub fee: Amount,
    /// The data providers' parts of it.
    pub royalties: Vec<Royalty>,
}

/// Opens a model sale in the market's escrow, the same lifecycle as a dataset sale (key delivery,
/// confirm, refund, dispute against the listing's key commitment); returns its id.
pub fn open_model_sale<S: StateWrite>(
    state: &mut S,
    sale: ModelSale,
    ctx: &ExecCtx,
) -> Result<u64, TxError> {
    open_item(
        state,
        Opening {
            id: 0,
            item: Item::Model(sale.listing),
            kind: PurchaseKind::Sale {
                price: sale.price,
                fee: sale.fee,
            },
            buyer: sale.buyer,
            buyer_org: sale.buyer_org,
            provider: sale.owner,
            provider_org: sale.owner_org,
            royalties: sale.royalties,
        },
        ctx,
    )
}

/// Opens the key request of a training job's worker or verifier for `dataset_id` (the chain
/// opens it: no signer, no money, no quota); the provider's gateway delivers the key wrapped to
/// `recipient`'s certificate as for a sale. A recipient that already holds a live purchase of
/// the dataset has (or is getting) the key, so none is opened: `None`.
pub fn open_training_key_request<S: StateWrite>(
    state: &mut S,
    dataset_id: u64,
    recipient: Address,
    recipient_org: &str,
    job: u64,
    ctx: &ExecCtx,
) -> Result<Option<u64>, TxError> {
    if state.live_purchase(&recipient, dataset_id)?.is_some() {
        return Ok(None);
    }
    let dataset = existing_dataset(state, dataset_id)?;
    open_for(
        state,
        &dataset,
        recipient,
        recipient_org,
        PurchaseKind::Training { job },
        ctx,
    )
    .map(Some)
}

/// Opens the key request of a validator operator scoring a model on a hidden evaluation split
/// (the chain opens it for each attestor's first operator: no signer, no money, no quota); the
/// split provider's gateway delivers it as for a training key. A recipient that already holds a
/// live purchase of the split has (or is getting) the key, so none is opened: `None`.
pub fn open_evaluation_key_request<S: StateWrite>(
    state: &mut S,
    split_dataset_id: u64,
    recipient: Address,
    recipient_org: &str,
    evaluation: u64,
    ctx: &ExecCtx,
) -> Result<Option<u64>, TxError> {
    if state.live_purchase(&recipient, split_dataset_id)?.is_some() {
        return Ok(None);
    }
    let split = existing_dataset(state, split_dataset_id)?;
    open_for(
        state,
        &split,
        recipient,
        recipient_org,
        PurchaseKind::Evaluation { evaluation },
        ctx,
    )
    .map(Some)
}

impl BuyDataset {
    /// Escrows the current price and opens the purchase.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let dataset = existing_dataset(state, self.dataset_id)?;
        require_listed(&dataset)?;
        require_active_provider_org(state, &dataset)?;
        if dataset.provider_org == signer.identity.org_id {
            return Err(EscrowError::OwnDataset {
                dataset: dataset.id,
                org: dataset.provider_org,
            }
            .into());
        }
        let price = crate::state::stored_amount(&dataset.price, || {
            crate::market::state_key::dataset(dataset.id)
        })?;
        if price > self.max_price {
            return Err(EscrowError::PriceAboveMax {
                price,
                max: self.max_price,
            }
            .into());
        }
        let fee = fee_of(price, ctx.params.market_fee_bps);
        open(
            state,
            &dataset,
            signer,
            PurchaseKind::Sale { price, fee },
            ctx,
        )
    }
}

/// A validator member's request for the key of a dataset, to validate it, or of a model listing,
/// to attest its ciphertexts (`crate::models::AttestModelListing`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestValidation {
    /// The dataset or model listing.
    pub item: Item,
}

impl TryFrom<pb::RequestValidation> for RequestValidation {
    type Error = TxError;
    fn try_from(m: pb::RequestValidation) -> Result<Self, TxError> {
        // A dataset id of 0 stays a dataset (refused as unknown, as before model listings).
        let item = match (m.dataset_id, m.model_listing_id) {
            (dataset, 0) => Item::Dataset(dataset),
            (0, listing) => Item::Model(listing),
            (_, _) => {
                return Err(invalid(
                    "request_validation.model_listing_id",
                    "set together with dataset_id; a request names a dataset or a model \
                     listing, not both",
                ));
            }
        };
        Ok(RequestValidation { item })
    }
}

/// Refuses a validation request of `org` once the org has as many open as the chain allows.
fn require_validation_slot<S: StateWrite>(
    state: &S,
    org: &str,
    ctx: &ExecCtx,
) -> Result<(), TxError> {
    let open_now = state.open_validations(org)?;
    let max = ctx.params.max_open_validations_per_org;
    if open_now >= u64::from(max) {
        return Err(EscrowError::ValidationQuota {
            org: org.to_owned(),
            open: open_now,
            max,
        }
        .into());
    }
    Ok(())
}

impl RequestValidation {
    /// Opens a no-money purchase the provider's (owner's) gateway answers. Only a registered
    /// validator operator may ask, only for a listed item not yet verified, and within its org's
    /// quota of open requests: a validation request hands out the data (or the model) for free,
    /// so it must not be a way around buying it.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        match self.item {
            Item::Dataset(id) => {
                let dataset = existing_dataset(state, id)?;
                crate::market::require_operator(state, signer)?;
                require_listed(&dataset)?;
                require_active_provider_org(state, &dataset)?;
                if dataset.verified {
                    return Err(crate::market::MarketError::AlreadyVerified(dataset.id).into());
                }
                require_validation_slot(state, &signer.identity.org_id, ctx)?;
                open(state, &dataset, signer, PurchaseKind::Validation, ctx)
            }
            Item::Model(id) => {
                let listing = crate::models::validatable_listing(state, id, signer)?;
                require_validation_slot(state, &signer.identity.org_id, ctx)?;
                let buyer = signer_address(signer)?;
                if let Some(purchase) = state.live_mark(&buyer, Item::Model(id))? {
                    return Err(ModelsError::AlreadyBought {
                        listing: id,
                        purchase,
                    }
                    .into());
                }
                let owner =
                    Address::from_slice(&listing.owner).ok_or_else(|| StateError::Corrupt {
                        key: crate::models::state_key::listing(id),
                        reason: "owner is not 32 bytes".into(),
                    })?;
                open_item(
                    state,
                    Opening {
                        id: 0,
                        item: Item::Model(id),
                        kind: PurchaseKind::Validation,
                        buyer,
                        buyer_org: signer.identity.org_id.clone(),
                        provider: owner,
                        provider_org: listing.owner_org,
                        royalties: Vec::new(),
                    },
                    ctx,
                )
                .map(|_| ())
            }
        }
    }
}
