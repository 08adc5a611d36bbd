//! Governance: org admins propose and vote; a proposal passes when more than two thirds of the
//! active orgs approve (one vote per org), and its action runs in the same transaction as the
//! deciding vote.
//!
//! Actions: admit or remove an org, rotate an org CA, add/reweight/remove a validator (returned to
//! CometBFT as validator updates), change parameters, mint NRC to the treasury, spend from the
//! treasury or the reward pool. See
//! [`ProposalAction`] for each action's rules and [`tally`] for the threshold.
//!
//! Validators that CometBFT's evidence shows misbehaving (double signing) are jailed by rule and
//! come back only by governance: see [`jail`].

pub mod action;
pub mod jail;
pub mod params;
pub mod rewards;
pub mod state_key;
mod submit;
pub mod upgrade;
pub mod view;
mod vote;

pub use action::ProposalAction;
pub use params::Params;
pub use submit::SubmitProposal;
pub use view::{GovernanceRead, GovernanceWrite};
pub use vote::Vote;

use neurodata_proto::chain::v1 as pb;

/// Why a governance action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GovernanceError {
    /// No proposal with this id.
    #[error("proposal {0} does not exist")]
    ProposalNotFound(u64),
    /// The proposal already passed, was rejected or failed.
    #[error("proposal {id} is closed ({status})")]
    ProposalClosed {
        /// The proposal.
        id: u64,
        /// Its status.
        status: String,
    },
    /// The voting period ended.
    #[error("voting on proposal {id} ended at height {end}")]
    VotingEnded {
        /// The proposal.
        id: u64,
        /// Last voting height.
        end: u64,
    },
    /// The org already voted on this proposal.
    #[error("org {org} already voted on proposal {id}")]
    DoubleVote {
        /// The proposal.
        id: u64,
        /// The org.
        org: String,
    },
    /// Removing the only active org would leave nobody to govern.
    #[error("cannot remove {0}: it is the last active org")]
    LastOrg(String),
    /// Removing the only validator would halt the chain.
    #[error("cannot remove the last validator")]
    LastValidator,
    /// The org id is taken.
    #[error("org {0} already exists")]
    OrgExists(String),
    /// No such org (or not active).
    #[error("org {0} is not an active member")]
    UnknownOrg(String),
    /// Another org's CA already has this subject name.
    #[error("CA subject is already used by org {0}")]
    CaSubjectInUse(String),
    /// No validator with this key.
    #[error("validator {0} does not exist")]
    UnknownValidator(String),
    /// The proposal carries no action.
    #[error("proposal has no action")]
    NoAction,
    /// The validator set's total power would exceed CometBFT's limit (which halts the chain).
    #[error("the validator set's total power would exceed CometBFT's maximum {max}")]
    TotalPowerTooHigh {
        /// CometBFT's MaxTotalVotingPower.
        max: i64,
    },
    /// An org id is not 2..=32 characters of `a-z`, `0-9` and `-`.
    #[error("org id {org_id:?} must be 2..=32 characters of a-z, 0-9 and '-'")]
    BadOrgId {
        /// The org id given.
        org_id: String,
    },
    /// An admitted org's display name is empty or too long.
    #[error("org name is {len} bytes; it must be 1..=128")]
    BadOrgName {
        /// Its length in bytes.
        len: usize,
    },
    /// A validator key is not an Ed25519 public key.
    #[error("validator pub_key is {len} bytes; it must be 32 (Ed25519)")]
    BadValidatorKey {
        /// Its length in bytes.
        len: usize,
    },
    /// A validator power is negative or above CometBFT's maximum.
    #[error("validator power {power} must be in 0..={max}")]
    PowerOutOfRange {
        /// The power given.
        power: i64,
        /// CometBFT's MaxTotalVotingPower.
        max: i64,
    },
    /// A validator names more operators than allowed.
    #[error("a validator names at most {max} operators, not {count}")]
    TooManyOperators {
        /// Operators named.
        count: usize,
        /// The limit, [`action::MAX_OPERATORS`].
        max: usize,
    },
    /// A validator operator is not a certificate fingerprint.
    #[error(
        "validator operator {index} is {len} bytes; it must be a 32-byte certificate fingerprint"
    )]
    BadOperator {
        /// Its position among the operators.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// A validator operator is the treasury, the reward pool or the escrow account.
    #[error("validator operator {operator} is a module account; name a member certificate")]
    OperatorIsModuleAccount {
        /// The operator.
        operator: String,
    },
    /// A validator operator is a member of another org than the validator's.
    #[error("operator {operator} is a member of {member_of}, not of the validator's org {org}")]
    OperatorOfOtherOrg {
        /// The operator.
        operator: String,
        /// The org it is a member of.
        member_of: String,
        /// The validator's org.
        org: String,
    },
    /// A validator's display name is too long.
    #[error("validator name is {len} bytes; at most 64")]
    BadValidatorName {
        /// Its length in bytes.
        len: usize,
    },
    /// An amount is not a decimal NRC amount.
    #[error("invalid {field}: {reason}")]
    BadAmount {
        /// The field, e.g. `mint.amount`.
        field: &'static str,
        /// Why it does not parse.
        reason: String,
    },
    /// A mint or spend of zero, which would do nothing.
    #[error("{field} must be positive")]
    ZeroAmount {
        /// The field, e.g. `spend.amount`.
        field: &'static str,
    },
    /// A spend names neither the treasury nor the reward pool.
    #[error("spend source {given} must be the treasury or the reward pool")]
    BadSpendSource {
        /// The wire value given.
        given: i32,
    },
    /// A spend recipient is not an address.
    #[error("spend recipient is {len} bytes; it must be a 32-byte address")]
    BadSpendRecipient {
        /// Its length in bytes.
        len: usize,
    },
    /// A chain parameter is outside its bounds.
    #[error("parameter {param} is {value}; it must be in {min}..={max}")]
    ParamOutOfRange {
        /// The parameter.
        param: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// The `min_fee` parameter is not a decimal NRC amount.
    #[error("parameter min_fee: {reason}")]
    BadMinFee {
        /// Why it does not parse.
        reason: String,
    },
    /// The market fee and the model royalty together take more than a model sale's price.
    #[error(
        "market_fee_bps {market_fee_bps} + model_royalty_bps {model_royalty_bps} is above 10000: together they may take at most the whole price of a model sale"
    )]
    SaleSharesAboveWhole {
        /// The market fee asked for.
        market_fee_bps: u32,
        /// The model royalty asked for.
        model_royalty_bps: u32,
    },
    /// An upgrade name that is not 1..=64 of `a-z0-9.-`.
    #[error("upgrade name {name:?} must be 1..=64 of a-z, 0-9, '.' and '-'")]
    BadUpgradeName {
        /// The name given.
        name: String,
    },
    /// An upgrade height that is not after the current block.
    #[error("upgrade height {height} is not after the current height {current}")]
    UpgradeHeightPassed {
        /// The height given.
        height: u64,
        /// The block executing the proposal.
        current: u64,
    },
    /// An upgrade that already ran.
    #[error("upgrade {name} was already applied at height {height}: name the next one")]
    UpgradeAlreadyApplied {
        /// Its name.
        name: String,
        /// Where it ran.
        height: u64,
    },
    /// A cancellation that names no pending plan.
    #[error("no pending upgrade named {name:?} to cancel (pending: {pending})")]
    NoUpgradeToCancel {
        /// The name given.
        name: String,
        /// The pending plan's name, or "none".
        pending: String,
    },
    /// Upgrade info over 1024 bytes.
    #[error("upgrade info is {len} bytes; at most 1024")]
    UpgradeInfoTooLong {
        /// Its length.
        len: usize,
    },
    /// A proposal to give power back to a validator that was jailed after the proposal was
    /// submitted: its voters could not have weighed the misbehaviour.
    #[error(
        "validator {pub_key} was jailed at height {jailed_height}, after this proposal was \
         submitted at height {submitted_height}: submit a new proposal to re-admit it"
    )]
    JailedAfterProposal {
        /// The validator's key, hex.
        pub_key: String,
        /// When it was jailed.
        jailed_height: u64,
        /// When the proposal was submitted.
        submitted_height: u64,
    },
}

impl GovernanceError {
    /// Stable code: 60..80, then 200..220 once that block filled (see
    /// [`crate::CODE_BLOCKS`]).
    pub fn code(&self) -> u32 {
        match self {
            GovernanceError::ProposalNotFound(_) => 60,
            GovernanceError::ProposalClosed { .. } => 61,
            GovernanceError::VotingEnded { .. } => 62,
            GovernanceError::DoubleVote { .. } => 63,
            GovernanceError::LastOrg(_) => 64,
            GovernanceError::LastValidator => 65,
            GovernanceError::OrgExists(_) => 66,
            GovernanceError::UnknownOrg(_) => 67,
            GovernanceError::CaSubjectInUse(_) => 68,
            GovernanceError::UnknownValidator(_) => 69,
            GovernanceError::NoAction => 70,
            GovernanceError::TotalPowerTooHigh { .. } => 71,
            GovernanceError::BadOrgId { .. } => 72,
            GovernanceError::BadOrgName { .. } => 73,
            GovernanceError::BadValidatorKey { .. } => 74,
            GovernanceError::PowerOutOfRange { .. } => 75,
            GovernanceError::TooManyOperators { .. } => 76,
            GovernanceError::BadOperator { .. } => 77,
            GovernanceError::OperatorIsModuleAccount { .. } => 78,
            GovernanceError::OperatorOfOtherOrg { .. } => 79,
            GovernanceError::BadValidatorName { .. } => 200,
            GovernanceError::BadAmount { .. } => 201,
            GovernanceError::ZeroAmount { .. } => 202,
            GovernanceError::BadSpendSource { .. } => 203,
            GovernanceError::BadSpendRecipient { .. } => 204,
            GovernanceError::ParamOutOfRange { .. } => 205,
            GovernanceError::BadMinFee { .. } => 206,
            GovernanceError::SaleSharesAboveWhole { .. } => 207,
            GovernanceError::BadUpgradeName { .. } => 208,
            GovernanceError::UpgradeHeightPassed { .. } => 209,
            GovernanceError::UpgradeAlreadyApplied { .. } => 210,
            GovernanceError::NoUpgradeToCancel { .. } => 211,
            GovernanceError::UpgradeInfoTooLong { .. } => 212,
            GovernanceError::JailedAfterProposal { .. } => 213,
        }
    }
}

/// Replaces `from` by its successor `to` among every validator's operators (keeping its place,
/// so a first operator's rewards follow it). Returns how many validators changed.
pub fn move_operator<S: crate::state::StateWrite>(
    state: &mut S,
    from: &crate::address::Address,
    to: &crate::address::Address,
) -> Result<u64, crate::TxError> {
    let mut moved = 0;
    for mut v in state.validators()? {
        if !v.operators.iter().any(|o| o.as_slice() == from.0) {
            continue;
        }
        for o in v.operators.iter_mut() {
            if o.as_slice() == from.0 {
                *o = to.0.to_vec();
            }
        }
        v.operators.dedup();
        let key = <[u8; 32]>::try_from(v.pub_key.as_slice()).map_err(|_| {
            crate::state::StateError::Corrupt {
                key: state_key::VALIDATORS.into(),
                reason: "validator key is not 32 bytes".into(),
            }
        })?;
        state.put_validator(&key, &v);
        moved += 1;
    }
    Ok(moved)
}

/// The outcome of counting votes among `active_orgs` orgs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tally {
    /// More than two thirds approve.
    Passes,
    /// Enough orgs rejected that two thirds can no longer be reached.
    Fails,
    /// Neither yet.
    Open,
}

/// Counts votes: passes when `approvals * 3 > active_orgs * 2`; fails once the orgs that have not
/// rejected cannot reach that. Pure, so the threshold is tested on its own.
pub fn tally(approvals: usize, rejections: usize, active_orgs: usize) -> Tally {
    if approvals * 3 > active_orgs * 2 {
        Tally::Passes
    } else if active_orgs.saturating_sub(rejections) * 3 <= active_orgs * 2 {
        Tally::Fails
    } else {
        Tally::Open
    }
}

/// The human name of a proposal status.
pub fn status_name(status: i32) -> String {
    pb::ProposalStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("PROPOSAL_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown({status})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_orgs_need_all_three_and_four_orgs_need_three() {
        assert_eq!(tally(2, 0, 3), Tally::Open);
        assert_eq!(tally(3, 0, 3), Tally::Passes);
        assert_eq!(tally(2, 1, 3), Tally::Fails);
        assert_eq!(tally(3, 1, 4), Tally::Passes);
        assert_eq!(tally(2, 1, 4), Tally::Open);
        assert_eq!(tally(2, 2, 4), Tally::Fails);
        assert_eq!(tally(1, 0, 1), Tally::Passes);
    }
}
