//! The models marketplace: published model versions, their sales, and validator-scored
//! evaluations on datasets' hidden splits with the leaderboards they make.
//!
//! Selling a model:
//! 1. [`PublishModel`]: the owner of a final model version (its job's submitter, or an admin of
//!    that org) lists it, its model file and ONNX export encrypted with one data key in the
//!    owner org's blob store. The chain writes the model card itself ([`model_card`]) from its
//!    records of the model version, its job and its datasets; a card the publisher claims must
//!    match it fact for fact. One open listing per model version.
//! 2. [`BuyModel`]: the price goes into the market's escrow (`crate::escrow`, the same purchase
//!    lifecycle as a dataset: key delivery by the owner org, confirm, refund, wrong-key dispute
//!    against the listing's key commitment), with the royalties fixed as it opens.
//! 3. When the sale is paid, the providers of the datasets the model was trained on get their
//!    royalties, the reward pool the market fee, the owner the rest ([`royalty`] has the rule);
//!    a refund pays nobody but the buyer.
//!
//! [`UpdateModelPrice`] and [`DelistModel`] change a listing; open purchases keep their terms.
//!
//! Verifying a listing ([`AttestModelListing`]): the escrow's dispute proves only a wrong *key*,
//! so validators attest the ciphertexts themselves. A validator operator asks for the listing's
//! key (`crate::escrow::RequestValidation` naming the listing, no money; the owner's gateway
//! delivers it as to a buyer), downloads both ciphertexts, checks them against the listing's
//! CIDs, decrypts them and compares the model file's SHA-256 and the ONNX export's CID with the
//! card. A listing is `verified` once orgs holding more than two thirds of the validator voting
//! power attested positively: the rule of datasets (`crate::market::verified_by_power`). The
//! chain sells unverified listings as it sells unverified datasets; `ndctl model buy` refuses
//! them unless told `--unverified`.

mod attest;
mod buy;
pub mod evaluation;
mod evaluation_view;
pub mod leaderboard;
mod listing;
pub mod royalty;
pub mod state_key;
pub mod view;

pub use attest::{AttestModelListing, validatable_listing};
pub use buy::BuyModel;
pub use evaluation::{EvaluationError, RequestEvaluation};
pub use evaluation_view::{EvaluationRead, EvaluationWrite};
pub use leaderboard::leaderboard;
pub use listing::{
    DelistModel, PublishModel, UpdateModelPrice, matches_filter, model_card, require_listed,
};
pub use royalty::{RoyaltySource, split_royalties};
pub use view::{ModelsRead, ModelsWrite};

/// Evaluation state keys.
pub use evaluation_view::state_key as evaluation_state_key;

#[cfg(test)]
mod evaluation_tests;

use neurodata_proto::chain::v1 as pb;

use crate::TxError;
use crate::address::Address;
use crate::amount::Amount;
use crate::state::StateWrite;

/// Model listing `id`, or [`ModelsError::UnknownListing`].
pub fn existing_listing<S: ModelsRead>(state: &S, id: u64) -> Result<pb::ModelListing, TxError> {
    Ok(state
        .model_listing(id)?
        .ok_or(ModelsError::UnknownListing(id))?)
}

/// Makes `to` the owner of every model listing `from` owns (its successor, see
/// [`crate::membership::MoveIdentity`]): future sales pay the successor. Returns how many.
pub fn move_listings<S: StateWrite>(
    state: &mut S,
    from: &Address,
    to: &Address,
) -> Result<u64, TxError> {
    let mut moved = 0;
    for mut listing in state.model_listings()? {
        if listing.owner == from.0 {
            listing.owner = to.0.to_vec();
            state.put_model_listing(&listing);
            moved += 1;
        }
    }
    Ok(moved)
}

/// Why a models-marketplace action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelsError {
    /// No model version with this id (a job that is not final has none yet).
    #[error(
        "model version {0} does not exist: a model is published once validators made its job final, which records its model version"
    )]
    UnknownModelVersion(u64),
    /// Only the model's owner (its job's submitter) or an admin of that org may list it.
    #[error(
        "model version {model_version} belongs to org {owner_org}; only its owner (the job's submitter) or an admin of that org may publish it"
    )]
    NotModelOwner {
        /// The model version.
        model_version: u64,
        /// Its owner org.
        owner_org: String,
    },
    /// The claimed model card states a fact the chain's records do not.
    #[error(
        "model card claims {field} = {claimed}, but the chain records {chain}; leave the card out or correct it"
    )]
    CardMismatch {
        /// The first field that differs.
        field: String,
        /// What the card claimed.
        claimed: String,
        /// What the chain derives.
        chain: String,
    },
    /// The model version already has an open listing.
    #[error(
        "model version {model_version} is already listed as model listing {listing}; change its price, or delist it first"
    )]
    AlreadyListed {
        /// The model version.
        model_version: u64,
        /// Its open listing.
        listing: u64,
    },
    /// The ciphertext is already listed by the org.
    #[error(
        "ciphertext {cid} is already listed as {holder}; every listing needs its own ciphertexts"
    )]
    DuplicateCid {
        /// The CID.
        cid: String,
        /// The listing holding it ("dataset N" or "model listing N").
        holder: String,
    },
    /// The data key is already used by a listing of the org.
    #[error("{holder} already uses this key commitment; encrypt with a fresh data key")]
    DuplicateKeyCommitment {
        /// The listing holding it ("dataset N" or "model listing N").
        holder: String,
    },
    /// No model listing with this id.
    #[error("model listing {0} does not exist")]
    UnknownListing(u64),
    /// Only the listing's owner or an admin of its org may change it.
    #[error(
        "model listing {listing} belongs to org {owner_org}; only its owner or an admin of that org may change it"
    )]
    NotListingOwner {
        /// The listing.
        listing: u64,
        /// Its org.
        owner_org: String,
    },
    /// The listing was delisted.
    #[error("model listing {0} is delisted")]
    Delisted(u64),
    /// Buying a model of one's own org.
    #[error(
        "model listing {listing} belongs to your org {org}; members of the owner org do not buy it"
    )]
    OwnModel {
        /// The listing.
        listing: u64,
        /// The org.
        org: String,
    },
    /// The price rose above what the buyer agreed to.
    #[error("model costs {price} NRC, above your max_price {max}")]
    PriceAboveMax {
        /// Current price.
        price: Amount,
        /// Buyer's limit.
        max: Amount,
    },
    /// The buyer already holds a live purchase of the listing.
    #[error(
        "you already hold purchase {purchase} of model listing {listing} (bought, or asked for to validate it)"
    )]
    AlreadyBought {
        /// The listing.
        listing: u64,
        /// The live purchase.
        purchase: u64,
    },
    /// The owner org was removed: nobody there can deliver the key.
    #[error("model listing {listing} belongs to org {org}, which is no longer an active member")]
    OwnerOrgInactive {
        /// The listing.
        listing: u64,
        /// Its org.
        org: String,
    },
    /// A validation request for a listing the validators already verified.
    #[error(
        "model listing {0} is already verified; validation requests are for unverified listings"
    )]
    AlreadyVerified(u64),
    /// An attestation by an operator that holds no key of the listing.
    #[error(
        "you hold no purchase of model listing {listing} with its key delivered: send RequestValidation (model_listing_id {listing}) and attest once the owner's gateway delivered the key"
    )]
    NoKeyDelivered {
        /// The listing.
        listing: u64,
    },
    /// A listed ciphertext CID is the model version's own plaintext artifact.
    #[error(
        "{cid} is model version {model_version}'s plaintext artifact, not a ciphertext; list the encrypted files"
    )]
    PlaintextArtifact {
        /// The CID.
        cid: String,
        /// The model version.
        model_version: u64,
    },
}

impl ModelsError {
    /// Stable code (140..160).
    pub fn code(&self) -> u32 {
        match self {
            ModelsError::UnknownModelVersion(_) => 140,
            ModelsError::NotModelOwner { .. } => 141,
            ModelsError::CardMismatch { .. } => 142,
            ModelsError::AlreadyListed { .. } => 143,
            ModelsError::DuplicateCid { .. } => 144,
            ModelsError::DuplicateKeyCommitment { .. } => 145,
            ModelsError::UnknownListing(_) => 146,
            ModelsError::NotListingOwner { .. } => 147,
            ModelsError::Delisted(_) => 148,
            ModelsError::OwnModel { .. } => 149,
            ModelsError::PriceAboveMax { .. } => 150,
            ModelsError::AlreadyBought { .. } => 151,
            ModelsError::OwnerOrgInactive { .. } => 152,
            ModelsError::PlaintextArtifact { .. } => 153,
            ModelsError::AlreadyVerified(_) => 154,
            ModelsError::NoKeyDelivered { .. } => 155,
        }
    }
}
