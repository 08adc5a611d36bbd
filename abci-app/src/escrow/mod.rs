//! Escrow: purchases of datasets and models, key delivery, and settlement.
//!
//! A [`BuyDataset`] moves the price from the buyer into the escrow module account and opens a
//! purchase. The provider's org answers with [`DeliverKey`] (the data key wrapped to the buyer's
//! certificate key) within `key_delivery_blocks`. Every coin in escrow then goes one of two
//! ways:
//! - the provider (minus `market_fee_bps` for the reward pool) when the buyer confirms
//!   ([`ConfirmAccess`]) or stays silent until the purchase is due ([`end_block`]); for a model
//!   sale ([`open_model_sale`], opened by `crate::models::BuyModel`) the royalties fixed at
//!   opening also go to the providers of the model's training data, out of the same price;
//! - the buyer, when no key came in time ([`RefundPurchase`], or automatically when due), or when
//!   the buyer proves the delivered key wrong ([`DisputeKey`]).
//!
//! Each open purchase has a `due_height`; [`end_block`] closes what is due in FinalizeBlock, so
//! nothing stays in escrow past its windows (property-tested with the supply in
//! `tests/market.rs` for datasets and `tests/models.rs` for model sales and their royalties).
//! Key requests ride the same delivery path with no money attached: validators'
//! ([`RequestValidation`]), and those the chain opens for training jobs and evaluations.
//!
//! The lifecycle itself is one pure function, [`Purchase::step`] in [`lifecycle`] (start
//! there): the handlers check who signed, gather what an input needs, and hand its effects to
//! `apply`, the one place escrow state changes.

mod apply;
pub mod lifecycle;
mod purchase;
mod settle;
pub mod state_key;
pub mod view;

pub use lifecycle::{
    Delivery, Effect, Input, Item, Purchase, PurchaseKind, PurchaseState, Royalty, Transition,
};
pub use purchase::{
    BuyDataset, ModelSale, RequestValidation, open_evaluation_key_request, open_model_sale,
    open_training_key_request,
};
pub use settle::{
    ConfirmAccess, DeliverKey, DisputeKey, RefundPurchase, end_block, move_purchases,
};
pub use view::{EscrowRead, EscrowWrite};

use crate::address::Address;
use crate::amount::Amount;

/// The module account holding escrowed NRC.
pub fn escrow_account() -> Address {
    Address::module("escrow")
}

/// The reward-pool share of `price` at `bps` basis points, rounded down; never overflows.
pub fn fee_of(price: Amount, bps: u32) -> Amount {
    let bps = u128::from(bps.min(10_000));
    Amount(price.0 / 10_000 * bps + price.0 % 10_000 * bps / 10_000)
}

/// Why an escrow action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscrowError {
    /// No purchase with this id.
    #[error("purchase {0} does not exist")]
    UnknownPurchase(u64),
    /// Buying from one's own org.
    #[error(
        "dataset {dataset} belongs to your org {org}; members of the provider org do not buy it"
    )]
    OwnDataset {
        /// The dataset.
        dataset: u64,
        /// The org.
        org: String,
    },
    /// The buyer already holds a live purchase of the dataset.
    #[error("you already bought dataset {dataset} (purchase {purchase})")]
    AlreadyPurchased {
        /// The dataset.
        dataset: u64,
        /// The live purchase.
        purchase: u64,
    },
    /// The price rose above what the buyer agreed to.
    #[error("dataset costs {price} NRC, above your max_price {max}")]
    PriceAboveMax {
        /// Current price.
        price: Amount,
        /// Buyer's limit.
        max: Amount,
    },
    /// Only the purchase's buyer may do this.
    #[error("only the buyer of purchase {0} may do this")]
    NotBuyer(u64),
    /// Only the provider's org may deliver the key.
    #[error(
        "purchase {purchase} is for a dataset of org {provider_org}; only its providers or admins deliver keys"
    )]
    NotProviderOrg {
        /// The purchase.
        purchase: u64,
        /// The provider org.
        provider_org: String,
    },
    /// The purchase is not in a state that allows the action.
    #[error("cannot {action} purchase {purchase}: it is {status}")]
    WrongStatus {
        /// The purchase.
        purchase: u64,
        /// Its status.
        status: String,
        /// What was attempted.
        action: &'static str,
    },
    /// The key came after the delivery window.
    #[error("the key for purchase {purchase} was due by height {deadline}")]
    DeliveryWindowClosed {
        /// The purchase.
        purchase: u64,
        /// Last height for delivery.
        deadline: u64,
    },
    /// A refund asked for while the provider may still deliver.
    #[error(
        "purchase {purchase} can be refunded after height {deadline} if no key arrives by then"
    )]
    RefundTooEarly {
        /// The purchase.
        purchase: u64,
        /// Last height for delivery.
        deadline: u64,
    },
    /// The wrapped key is not a wrapping.
    #[error("wrapped key: {0}")]
    BadWrappedKey(String),
    /// The dispute's proof does not verify.
    #[error("dispute proof: {0}")]
    BadProof(String),
    /// The dispute proves the key right.
    #[error(
        "the key delivered for purchase {0} matches the key commitment of what was bought; dispute refused"
    )]
    KeyMatches(u64),
    /// The dataset's provider org was removed.
    #[error("dataset {dataset} belongs to org {org}, which is no longer an active member")]
    ProviderOrgInactive {
        /// The dataset.
        dataset: u64,
        /// Its org.
        org: String,
    },
    /// The org has as many validation requests open as the chain allows.
    #[error(
        "org {org} has {open} validation requests open; the limit is {max} (max_open_validations_per_org)"
    )]
    ValidationQuota {
        /// The org.
        org: String,
        /// Open now.
        open: u64,
        /// The limit.
        max: u32,
    },
    /// Only the buyer or an admin of the buyer's org may do this.
    #[error("only the buyer of purchase {0} or an admin of the buyer's org may do this")]
    NotBuyerOrAdmin(u64),
    /// The key is wrapped to someone who is not (or no longer) the purchase's buyer.
    #[error(
        "purchase {purchase} now belongs to buyer {buyer}; wrap the key to that buyer's certificate"
    )]
    RecipientNotBuyer {
        /// The purchase.
        purchase: u64,
        /// Its buyer now.
        buyer: String,
    },
}

impl EscrowError {
    /// Stable code (100..120).
    pub fn code(&self) -> u32 {
        match self {
            EscrowError::UnknownPurchase(_) => 100,
            EscrowError::OwnDataset { .. } => 101,
            EscrowError::AlreadyPurchased { .. } => 102,
            EscrowError::PriceAboveMax { .. } => 103,
            EscrowError::NotBuyer(_) => 104,
            EscrowError::NotProviderOrg { .. } => 105,
            EscrowError::WrongStatus { .. } => 106,
            EscrowError::DeliveryWindowClosed { .. } => 107,
            EscrowError::RefundTooEarly { .. } => 108,
            EscrowError::BadWrappedKey(_) => 109,
            EscrowError::BadProof(_) => 110,
            EscrowError::KeyMatches(_) => 111,
            EscrowError::ProviderOrgInactive { .. } => 112,
            EscrowError::ValidationQuota { .. } => 113,
            EscrowError::NotBuyerOrAdmin(_) => 114,
            EscrowError::RecipientNotBuyer { .. } => 115,
        }
    }
}

/// Whether `p` passes the `/purchases` filter.
pub fn matches_filter(
    p: &neurodata_proto::chain::v1::Purchase,
    f: &neurodata_proto::chain::v1::PurchaseFilter,
) -> bool {
    use neurodata_proto::chain::v1::PurchaseStatus as S;
    let open = p.status == S::AwaitingKey as i32 || p.status == S::KeyDelivered as i32;
    (f.buyer.is_empty() || f.buyer == p.buyer)
        && (f.dataset_id == 0 || f.dataset_id == p.dataset_id)
        && (f.model_listing == 0 || f.model_listing == p.model_listing)
        && (f.provider_org.is_empty() || f.provider_org == p.provider_org)
        && (!f.open_only || open)
}

/// A purchase status as users read it.
pub fn status_name(status: i32) -> String {
    use neurodata_proto::chain::v1::PurchaseStatus as S;
    match S::try_from(status) {
        Ok(S::AwaitingKey) => "awaiting its key",
        Ok(S::KeyDelivered) => "key delivered",
        Ok(S::Confirmed) => "confirmed",
        Ok(S::Released) => "released to the provider",
        Ok(S::Refunded) => "refunded",
        Ok(S::WrongKeyRefunded) => "refunded after a wrong key",
        _ => "unknown",
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_round_down_and_never_overflow() {
        assert_eq!(fee_of(Amount(10_000), 200), Amount(200));
        assert_eq!(fee_of(Amount(99), 200), Amount(1));
        assert_eq!(fee_of(Amount(49), 200), Amount(0));
        assert_eq!(fee_of(Amount(u128::MAX), 10_000), Amount(u128::MAX));
        assert!(fee_of(Amount(u128::MAX), 200) < Amount(u128::MAX));
        assert_eq!(fee_of(Amount(5), 0), Amount::ZERO);
    }
}
