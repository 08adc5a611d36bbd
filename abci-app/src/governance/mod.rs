//! Governance: org admins propose and vote; a proposal passes when more than two thirds of the
//! active orgs approve (one vote per org), and its action runs in the same transaction as the
//! deciding vote.
//!
//! Actions: admit or remove an org, rotate an org CA, add/reweight/remove a validator (returned to
//! CometBFT as validator updates), change parameters, mint NRC to the treasury, spend from the
//! treasury or the reward pool. See
//! [`ProposalAction`] for each action's rules and [`tally`] for the threshold.

pub mod action;
pub mod params;
pub mod rewards;
pub mod state_key;
mod submit;
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
    /// An action field is out of range.
    #[error("invalid proposal: {0}")]
    InvalidAction(String),
    /// The validator set's total power would exceed CometBFT's limit (which halts the chain).
    #[error("the validator set's total power would exceed CometBFT's maximum {max}")]
    TotalPowerTooHigh {
        /// CometBFT's MaxTotalVotingPower.
        max: i64,
    },
}

impl GovernanceError {
    /// Stable code (60..80).
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
            GovernanceError::InvalidAction(_) => 70,
            GovernanceError::TotalPowerTooHigh { .. } => 71,
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
