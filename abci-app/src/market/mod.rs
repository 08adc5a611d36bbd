//! The data marketplace: encrypted datasets listed by providers, browsed by everyone, validated
//! by validator members.
//!
//! A listing ([`RegisterDataset`]) records what a buyer needs to check what it gets: the
//! ciphertext's CID, the plaintext's SHA-256, the SHA-256 commitment to the data key, sizes, row
//! count and schema. The ciphertext itself stays in the provider org's blob store; the key goes
//! to buyers through [`crate::escrow`]. Validator members attest listings ([`AttestDataset`]); a
//! dataset is `verified` once orgs holding more than two thirds of the validator voting power
//! attested positively.
//!
//! A provider may register its dataset's hidden evaluation split ([`RegisterEvalSplit`]): a
//! dataset record of status HIDDEN that leaderboards score models on, never browsed, sold,
//! previewed or validated ([`require_listed`] refuses it by name).
//!
//! Checks run in the usual order: stateless in `TryFrom<pb::…>` (field shapes, schema, price),
//! then stateful in `check_and_execute` (who may, what exists).

mod attest;
mod dataset;
mod preview;
mod split;
pub mod state_key;
pub mod view;

pub use attest::{AttestDataset, require_operator, require_voting_power, verified_by_power};
pub use dataset::{
    DelistDataset, MAX_PREVIEW_ROWS, RegisterDataset, UpdateDatasetPrice, matches_filter,
};
pub use preview::RequestPreview;
pub use split::{RegisterEvalSplit, first_schema_difference};
pub use view::{MarketRead, MarketWrite};

use neurodata_proto::chain::v1 as pb;

use crate::TxError;
use crate::state::StateRead;

/// Dataset `id`, or [`MarketError::UnknownDataset`].
pub fn existing_dataset<S: MarketRead>(state: &S, id: u64) -> Result<pb::Dataset, TxError> {
    Ok(state.dataset(id)?.ok_or(MarketError::UnknownDataset(id))?)
}

/// Makes `to` the provider of every dataset `from` provides (its successor, see
/// [`crate::membership::MoveIdentity`]): future sales pay the successor. Returns how many.
pub fn move_listings<S: crate::state::StateWrite>(
    state: &mut S,
    from: &crate::address::Address,
    to: &crate::address::Address,
) -> Result<u64, TxError> {
    let mut moved = 0;
    for mut d in state.datasets()? {
        if d.provider == from.0 {
            d.provider = to.0.to_vec();
            state.put_dataset(&d);
            moved += 1;
        }
    }
    Ok(moved)
}

/// Refuses ciphertexts or a data key that a listing of `org` (a dataset, a hidden split or a
/// model listing) already uses. The org's gateway finds a listing's key by its commitment and a
/// download's listing by its CID, so a second listing sharing either would hand the first one's
/// key or ciphertext to the second one's buyers.
pub fn require_unused_ciphertexts<S: StateRead>(
    state: &S,
    org: &str,
    cids: &[String],
    key_commitment: &[u8; 32],
) -> Result<(), TxError> {
    use crate::models::{ModelsError, ModelsRead};
    for cid in cids {
        if let Some(dataset) = state.dataset_by_cid(org, cid)? {
            return Err(MarketError::DuplicateCid {
                cid: cid.clone(),
                dataset,
            }
            .into());
        }
        if let Some(listing) = state.listing_by_cid(org, cid)? {
            return Err(ModelsError::DuplicateCid {
                cid: cid.clone(),
                holder: format!("model listing {listing}"),
            }
            .into());
        }
    }
    if let Some(dataset) = state.dataset_by_key_commitment(org, key_commitment)? {
        return Err(MarketError::DuplicateKeyCommitment { dataset }.into());
    }
    if let Some(listing) = state.listing_by_key_commitment(org, key_commitment)? {
        return Err(ModelsError::DuplicateKeyCommitment {
            holder: format!("model listing {listing}"),
        }
        .into());
    }
    Ok(())
}

/// Refuses a hidden evaluation split ([`RegisterEvalSplit`]) with [`MarketError::HiddenSplit`]:
/// what only public listings do (a sale, a preview, validation, a price change, a split of its
/// own) is never done to one.
pub fn require_public(dataset: &pb::Dataset) -> Result<(), TxError> {
    if dataset.status == pb::DatasetStatus::Hidden as i32 {
        return Err(MarketError::HiddenSplit(dataset.id).into());
    }
    Ok(())
}

/// Refuses a hidden evaluation split with [`MarketError::HiddenSplit`] and a delisted dataset
/// with [`MarketError::Delisted`].
pub fn require_listed(dataset: &pb::Dataset) -> Result<(), TxError> {
    require_public(dataset)?;
    if dataset.status != pb::DatasetStatus::Listed as i32 {
        return Err(MarketError::Delisted(dataset.id).into());
    }
    Ok(())
}

/// Why a market action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarketError {
    /// No dataset with this id.
    #[error("dataset {0} does not exist")]
    UnknownDataset(u64),
    /// The ciphertext is already listed.
    #[error("ciphertext {cid} is already listed as dataset {dataset}")]
    DuplicateCid {
        /// The CID.
        cid: String,
        /// The existing listing.
        dataset: u64,
    },
    /// The listing has no schema.
    #[error("dataset has no schema")]
    NoSchema,
    /// Only the provider (or an admin of its org) may change a listing.
    #[error(
        "dataset {dataset} belongs to {provider_org}; only its provider or an admin of that org may change it"
    )]
    NotProvider {
        /// The dataset.
        dataset: u64,
        /// Its org.
        provider_org: String,
    },
    /// The dataset was delisted.
    #[error("dataset {0} is delisted")]
    Delisted(u64),
    /// The attesting validator's org has no voting power.
    #[error("org {0} runs no validator with voting power; only validator orgs attest datasets")]
    NoVotingPower(String),
    /// The signer is not a registered operator of a validator of its org.
    #[error(
        "{fingerprint} is not a registered operator of a validator of org {org}; operators are named by governance (SetValidator operators)"
    )]
    NotOperator {
        /// The signer.
        fingerprint: String,
        /// Its org.
        org: String,
    },
    /// Validating a dataset that is already verified.
    #[error("dataset {0} is already verified; validation requests are for unverified datasets")]
    AlreadyVerified(u64),
    /// Another listing already uses this key commitment.
    #[error(
        "dataset {dataset} already uses this key commitment; every listing needs its own data key"
    )]
    DuplicateKeyCommitment {
        /// The existing listing.
        dataset: u64,
    },
    /// The schema has no columns or too many.
    #[error("schema has {count} columns; allowed 1..={max}")]
    ColumnCount {
        /// Columns given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A column name is empty, too long or has a character outside `[A-Za-z0-9_.-]`.
    #[error("schema column {index} name {name:?} must be 1..=64 of [A-Za-z0-9_.-]")]
    BadColumnName {
        /// The column's position.
        index: usize,
        /// Its name.
        name: String,
    },
    /// Two columns have the same name.
    #[error("schema column name {name:?} appears twice")]
    DuplicateColumn {
        /// The name.
        name: String,
    },
    /// The listing offers no previews.
    #[error("dataset {0} offers no previews (its provider listed it with preview_rows 0)")]
    NoPreview(u64),
    /// One preview per member and dataset.
    #[error(
        "you requested a preview of dataset {dataset} at height {height} already; one per member"
    )]
    PreviewRequested {
        /// The dataset.
        dataset: u64,
        /// The earlier request's height.
        height: u64,
    },
    /// The provider's own org holds the data.
    #[error("dataset {dataset} is your org's ({org}): read it from your org's blob store")]
    OwnPreview {
        /// The dataset.
        dataset: u64,
        /// The org.
        org: String,
    },
    /// A column's type is unset or unknown.
    #[error(
        "schema column {name:?} has type {type_code}, not a known type (int, float, string, bool, category)"
    )]
    UnknownColumnType {
        /// The column.
        name: String,
        /// Its wire type value.
        type_code: i32,
    },
    /// A hidden evaluation split is never sold, previewed, validated or repriced.
    #[error(
        "dataset {0} is a hidden evaluation split: it is never sold, previewed, validated or repriced; its key goes only to validators scoring models on it"
    )]
    HiddenSplit(u64),
    /// The dataset already has its hidden evaluation split.
    #[error(
        "dataset {dataset} already has its hidden evaluation split (dataset {split}); a split is never replaced, so the scores on its leaderboard stay comparable"
    )]
    SplitExists {
        /// The dataset.
        dataset: u64,
        /// Its split.
        split: u64,
    },
    /// The split's schema is not the dataset's.
    #[error("the evaluation split's schema must equal dataset {dataset}'s: {difference}")]
    SplitSchemaMismatch {
        /// The dataset.
        dataset: u64,
        /// The first difference, column by column.
        difference: String,
    },
}

impl MarketError {
    /// Stable code (80..99; 99 is the `state` codespace's, see [`crate::CODE_BLOCKS`]).
    pub fn code(&self) -> u32 {
        match self {
            MarketError::UnknownDataset(_) => 80,
            MarketError::DuplicateCid { .. } => 81,
            MarketError::NoSchema => 82,
            MarketError::NotProvider { .. } => 83,
            MarketError::Delisted(_) => 84,
            MarketError::NoVotingPower(_) => 85,
            MarketError::NotOperator { .. } => 86,
            MarketError::AlreadyVerified(_) => 87,
            MarketError::DuplicateKeyCommitment { .. } => 88,
            MarketError::ColumnCount { .. } => 89,
            MarketError::BadColumnName { .. } => 90,
            MarketError::DuplicateColumn { .. } => 91,
            MarketError::UnknownColumnType { .. } => 92,
            MarketError::NoPreview(_) => 93,
            MarketError::PreviewRequested { .. } => 94,
            MarketError::OwnPreview { .. } => 95,
            MarketError::HiddenSplit(_) => 96,
            MarketError::SplitExists { .. } => 97,
            MarketError::SplitSchemaMismatch { .. } => 98,
        }
    }
}
