//! `Vote`: one vote per org per proposal; the deciding vote runs the proposal's action.

use crate::events::{EventKind, attr};
use neurodata_proto::chain::v1 as pb;

use super::{
    GovernanceError, GovernanceRead, GovernanceWrite, ProposalAction, Tally, status_name, tally,
};
use crate::TxError;
use crate::membership::{MembershipRead, Signer};
use crate::state::{Event, StateDelta, StateWrite};
use crate::tx::ExecCtx;

/// An admin's vote on behalf of its org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    /// The proposal.
    pub proposal_id: u64,
    /// Approve (true) or reject.
    pub approve: bool,
}

impl TryFrom<pb::Vote> for Vote {
    type Error = TxError;
    fn try_from(m: pb::Vote) -> Result<Self, TxError> {
        Ok(Vote {
            proposal_id: m.proposal_id,
            approve: m.approve,
        })
    }
}

impl Vote {
    /// Records the vote and settles the proposal if the tally is decided.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let proposal = state
            .proposal(self.proposal_id)?
            .ok_or(GovernanceError::ProposalNotFound(self.proposal_id))?;
        record_vote(state, proposal, &signer.identity.org_id, self.approve, ctx)
    }
}

/// Adds `org`'s vote to `proposal`, tallies among active orgs, and on a decision closes the
/// proposal; a passing proposal's action runs on a fork, and if it fails the proposal is marked
/// FAILED with the reason while the vote itself still counts.
pub(super) fn record_vote<S: StateWrite>(
    state: &mut S,
    mut proposal: pb::Proposal,
    org: &str,
    approve: bool,
    ctx: &ExecCtx,
) -> Result<(), TxError> {
    let id = proposal.id;
    if proposal.status != pb::ProposalStatus::Voting as i32 {
        return Err(GovernanceError::ProposalClosed {
            id,
            status: status_name(proposal.status),
        }
        .into());
    }
    if ctx.height > proposal.voting_end_height {
        return Err(GovernanceError::VotingEnded {
            id,
            end: proposal.voting_end_height,
        }
        .into());
    }
    if proposal
        .approvals
        .iter()
        .chain(&proposal.rejections)
        .any(|o| o == org)
    {
        return Err(GovernanceError::DoubleVote {
            id,
            org: org.to_owned(),
        }
        .into());
    }
    let list = if approve {
        &mut proposal.approvals
    } else {
        &mut proposal.rejections
    };
    list.push(org.to_owned());
    list.sort();
    state.emit(
        Event::new(EventKind::ProposalVoted)
            .attr(attr::ID, id)
            .attr(attr::ORG, org)
            .attr(attr::APPROVE, approve),
    );

    let active: Vec<String> = state.active_orgs()?.into_iter().map(|o| o.org_id).collect();
    let count = |orgs: &[String]| orgs.iter().filter(|o| active.contains(o)).count();
    match tally(
        count(&proposal.approvals),
        count(&proposal.rejections),
        active.len(),
    ) {
        Tally::Open => {}
        Tally::Fails => {
            proposal.status = pb::ProposalStatus::Rejected as i32;
            state.emit(Event::new(EventKind::ProposalRejected).attr(attr::ID, id));
        }
        Tally::Passes => {
            let action = ProposalAction::try_from(proposal.action.clone().unwrap_or_default())?;
            let mut fork = StateDelta::new(&*state);
            match action.execute(&mut fork, ctx, id) {
                Ok(()) => {
                    let changes = fork.into_changes();
                    state.apply_changes(changes);
                    proposal.status = pb::ProposalStatus::Passed as i32;
                    state.emit(Event::new(EventKind::ProposalPassed).attr(attr::ID, id));
                }
                Err(e) => {
                    drop(fork);
                    proposal.status = pb::ProposalStatus::Failed as i32;
                    proposal.failure = e.to_string();
                    state.emit(
                        Event::new(EventKind::ProposalFailed)
                            .attr(attr::ID, id)
                            .attr(attr::REASON, e.to_string()),
                    );
                }
            }
        }
    }
    state.put_proposal(&proposal);
    Ok(())
}
