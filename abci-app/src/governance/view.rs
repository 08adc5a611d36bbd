//! Typed reads and writes of parameters, proposals and validators.

use neurodata_proto::chain::v1 as pb;

use super::{Params, state_key};
use crate::membership::MembershipRead;
use crate::state::{StateError, StateRead, StateWrite};

/// Reads of governance records.
pub trait GovernanceRead: StateRead + Sized {
    /// Current parameters (defaults before genesis wrote them).
    fn params(&self) -> Result<Params, StateError> {
        match self.get_proto::<pb::Params>(state_key::params())? {
            None => Ok(Params::default()),
            Some(p) => Params::try_from(p).map_err(|e| StateError::Corrupt {
                key: state_key::params().into(),
                reason: e.to_string(),
            }),
        }
    }

    /// Proposal `id`.
    fn proposal(&self, id: u64) -> Result<Option<pb::Proposal>, StateError> {
        self.get_proto(&state_key::proposal(id))
    }

    /// Every proposal, ascending by id.
    fn proposals(&self) -> Result<Vec<pb::Proposal>, StateError> {
        self.prefix_proto(state_key::PROPOSALS)
    }

    /// The id the next proposal gets.
    fn next_proposal_id(&self) -> Result<u64, StateError> {
        Ok(match self.get_raw(state_key::next_proposal_id())? {
            None => 1,
            Some(b) => {
                u64::from_be_bytes(b.as_slice().try_into().map_err(|_| StateError::Corrupt {
                    key: state_key::next_proposal_id().into(),
                    reason: "not 8 bytes".into(),
                })?)
            }
        })
    }

    /// The validator with this key.
    fn validator(&self, pub_key: &[u8; 32]) -> Result<Option<pb::Validator>, StateError> {
        self.get_proto(&state_key::validator(pub_key))
    }

    /// Validators with power > 0, ascending by key.
    fn validators(&self) -> Result<Vec<pb::Validator>, StateError> {
        self.prefix_proto(state_key::VALIDATORS)
    }

    /// The jail record of the validator with this key, if it is jailed.
    fn jailed(&self, pub_key: &[u8; 32]) -> Result<Option<pb::JailedValidator>, StateError> {
        self.get_proto(&state_key::jailed(pub_key))
    }

    /// Every jailed validator, ascending by key.
    fn jailed_validators(&self) -> Result<Vec<pb::JailedValidator>, StateError> {
        self.prefix_proto(state_key::JAILED)
    }

    /// The record of one piece of evidence (`kind`: the proto enum's number), if recorded.
    fn misbehaviour(
        &self,
        address: &[u8; 20],
        kind: i32,
        evidence_height: u64,
    ) -> Result<Option<pb::Misbehaviour>, StateError> {
        self.get_proto(&state_key::misbehaviour(address, kind, evidence_height))
    }

    /// Every misbehaviour record, ascending by address, kind and evidence height.
    fn misbehaviours(&self) -> Result<Vec<pb::Misbehaviour>, StateError> {
        self.prefix_proto(state_key::MISBEHAVIOURS)
    }

    /// Validators of active orgs (a removed org's validators, should any remain, count for
    /// nothing in attestations or rewards), ascending by key.
    fn active_validators(&self) -> Result<Vec<pb::Validator>, StateError> {
        let mut validators = self.validators()?;
        let mut active = std::collections::BTreeMap::new();
        for v in &validators {
            if !active.contains_key(&v.org_id) {
                active.insert(v.org_id.clone(), self.org_is_active(&v.org_id)?);
            }
        }
        validators.retain(|v| active.get(&v.org_id).copied().unwrap_or(false));
        Ok(validators)
    }
}

impl<T: StateRead> GovernanceRead for T {}

/// Writes of governance records.
pub trait GovernanceWrite: StateWrite + GovernanceRead {
    /// Stores parameters.
    fn put_params(&mut self, params: &Params) {
        self.put_proto(state_key::params().into(), &pb::Params::from(params));
    }

    /// Stores a proposal.
    fn put_proposal(&mut self, proposal: &pb::Proposal) {
        self.put_proto(state_key::proposal(proposal.id), proposal);
    }

    /// Sets the next proposal id.
    fn put_next_proposal_id(&mut self, id: u64) {
        self.put_raw(
            state_key::next_proposal_id().into(),
            id.to_be_bytes().to_vec(),
        );
    }

    /// Stores a validator (power > 0) or removes it (power 0).
    fn put_validator(&mut self, pub_key: &[u8; 32], validator: &pb::Validator) {
        if validator.power > 0 {
            self.put_proto(state_key::validator(pub_key), validator);
        } else {
            self.delete(state_key::validator(pub_key));
        }
    }

    /// Stores a misbehaviour record of the validator with CometBFT address `address` under its
    /// (address, kind, evidence height).
    fn put_misbehaviour(&mut self, address: &[u8; 20], m: &pb::Misbehaviour) {
        self.put_proto(
            state_key::misbehaviour(address, m.kind, m.evidence_height),
            m,
        );
    }

    /// Marks a validator jailed.
    fn put_jailed(&mut self, pub_key: &[u8; 32], jailed: &pb::JailedValidator) {
        self.put_proto(state_key::jailed(pub_key), jailed);
    }

    /// Clears a validator's jail mark.
    fn clear_jailed(&mut self, pub_key: &[u8; 32]) {
        self.delete(state_key::jailed(pub_key));
    }
}

impl<T: StateWrite> GovernanceWrite for T {}
