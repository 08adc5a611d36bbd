//! `SubmitProposal`: an org admin opens a proposal; the proposer's org approves it.

use crate::events::{EventKind, attr};
use neurodata_proto::chain::v1 as pb;

use super::vote::record_vote;
use super::{GovernanceRead, GovernanceWrite, ProposalAction};
use crate::TxError;
use crate::membership::Signer;
use crate::state::{Event, StateWrite};
use crate::tx::{ExecCtx, invalid};

/// Open a proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitProposal {
    /// Short title, 1..=128 bytes.
    pub title: String,
    /// What it does.
    pub action: ProposalAction,
}

impl TryFrom<pb::SubmitProposal> for SubmitProposal {
    type Error = TxError;
    fn try_from(m: pb::SubmitProposal) -> Result<Self, TxError> {
        if m.title.is_empty() || m.title.len() > 128 {
            return Err(invalid("submit_proposal.title", "must be 1..=128 bytes"));
        }
        let action = m
            .action
            .ok_or_else(|| invalid("submit_proposal.action", "missing"))?
            .try_into()?;
        Ok(SubmitProposal {
            title: m.title,
            action,
        })
    }
}

impl SubmitProposal {
    /// Stores the proposal with the proposer org's approval, and runs it at once if that alone
    /// passes the threshold (a one-org consortium).
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        self.action.preflight(&*state)?;
        let id = state.next_proposal_id()?;
        state.put_next_proposal_id(id + 1);
        let voting_end_height = ctx
            .height
            .saturating_add(state.params()?.proposal_voting_blocks);
        let proposal = pb::Proposal {
            id,
            title: self.title.clone(),
            action: Some((&self.action).into()),
            proposer: signer.identity.fingerprint.clone(),
            proposer_org: signer.identity.org_id.clone(),
            submitted_height: ctx.height,
            voting_end_height,
            status: pb::ProposalStatus::Voting as i32,
            approvals: vec![],
            rejections: vec![],
            failure: String::new(),
        };
        state.put_proposal(&proposal);
        state.emit(
            Event::new(EventKind::ProposalSubmitted)
                .attr(attr::ID, id)
                .attr(attr::PROPOSER_ORG, &signer.identity.org_id)
                .attr(attr::TITLE, &self.title)
                .attr(attr::VOTING_END_HEIGHT, voting_end_height),
        );
        record_vote(state, proposal, &signer.identity.org_id, true, ctx)
    }
}
