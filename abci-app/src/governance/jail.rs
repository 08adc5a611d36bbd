//! Misbehaviour: what the app does with CometBFT's evidence against a validator.
//!
//! CometBFT verifies evidence itself — a validator that signed two different votes for one
//! height, round and step (its key run twice: double signing), or signed a conflicting header to
//! fool light clients — and hands it to FinalizeBlock as `misbehavior`, naming the validator by
//! its CometBFT address (the first 20 bytes of SHA-256 of its Ed25519 key). The app applies one
//! rule to each piece of evidence, in the order the block lists it, before the block's
//! transactions:
//!
//! 1. **Record.** Every piece of evidence is recorded ([`pb::Misbehaviour`]: the address; the
//!    validator's key, org and name when the app knows them; kind, height and time of the
//!    offence; the block that reported it; what the app did) and announced by a
//!    `validator.misbehaviour` event whose `outcome` says what the app did. The same evidence
//!    (address, kind, evidence height) reported again changes nothing: recorded and acted on once.
//! 2. **Jail.** A validator of the set with evidence against it is jailed: its power goes to 0,
//!    so the block's validator updates remove it from CometBFT's set (which takes effect two
//!    blocks later), a [`pb::JailedValidator`] keeps what it was, and `validator.jailed` is
//!    emitted. Out of the set, it earns no rewards, counts in no new attestation, and its
//!    operators lose their validation rights.
//! 3. **Safety.** Jailing never leaves the set without voting power (CometBFT halts on an empty
//!    set), and never takes out more than a third of the power the set had when the block began,
//!    counting the validators the block's earlier evidence jailed: more than a third misbehaving
//!    at once is beyond what BFT consensus tolerates, a matter for the consortium rather than a
//!    rule (and a set that loses more than a third in one step is one light clients cannot
//!    follow without the intermediate headers). Such evidence is recorded with outcome
//!    `kept_last_power` or `kept_over_one_third` and the validator keeps its power; evidence in a
//!    later block is judged again on that block's set.
//! 4. **Not in the set.** Evidence against an address no validator of the set has — jailed
//!    already, removed by governance since, or never a validator — is recorded only
//!    (`already_jailed`, `not_in_set`).
//! 5. **The way back** is a vote of the consortium: a governance `SetValidator` that gives the
//!    key power again re-admits the validator and clears its jail (`validator.unjailed`). Its
//!    operators should first make sure the key runs in one place only. The proposal must have
//!    been submitted at or after the jail's height: one opened before it fails
//!    (`JailedAfterProposal`), its voters not having weighed the misbehaviour.
//!
//! Everything here is a function of the block (its evidence list and height) and the state, so
//! every node jails the same validators and returns the same validator updates.

use neurodata_proto::chain::v1 as pb;

use super::{GovernanceRead, GovernanceWrite};
use crate::events::{EventKind, attr};
use crate::state::{Event, StateError, StateWrite};
use crate::training::attest::validator_address;

/// What a piece of evidence says the validator did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvidenceKind {
    /// Two different votes for one height, round and step.
    DuplicateVote,
    /// A conflicting header signed for light clients.
    LightClientAttack,
    /// A kind this app does not know (CometBFT's proto default); handled like the others, since
    /// CometBFT verified it.
    Unknown,
}

impl From<EvidenceKind> for pb::MisbehaviourKind {
    fn from(k: EvidenceKind) -> Self {
        match k {
            EvidenceKind::DuplicateVote => pb::MisbehaviourKind::DuplicateVote,
            EvidenceKind::LightClientAttack => pb::MisbehaviourKind::LightClientAttack,
            EvidenceKind::Unknown => pb::MisbehaviourKind::Unspecified,
        }
    }
}

/// One piece of CometBFT's evidence, as FinalizeBlock's `misbehavior` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// What the validator did.
    pub kind: EvidenceKind,
    /// The validator's CometBFT address.
    pub address: [u8; 20],
    /// Height of the offence.
    pub height: u64,
    /// Time of the offence, Unix seconds.
    pub time: i64,
}

/// The event name of a misbehaviour kind (`duplicate_vote`).
pub fn kind_name(kind: i32) -> String {
    pb::MisbehaviourKind::try_from(kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("MISBEHAVIOUR_KIND_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown({kind})"))
}

/// The event name of an outcome (`jailed`, `kept_over_one_third`).
pub fn outcome_name(outcome: i32) -> String {
    pb::MisbehaviourOutcome::try_from(outcome)
        .map(|o| {
            o.as_str_name()
                .trim_start_matches("MISBEHAVIOUR_OUTCOME_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown({outcome})"))
}

/// Whether jailing a validator of power `power` is allowed, `jailed` being the power the block
/// has jailed already and `total` the set's power when the block began: the safety rule, pure.
pub fn may_jail(total: u128, jailed: u128, power: u128) -> Result<(), pb::MisbehaviourOutcome> {
    let after = jailed.saturating_add(power);
    if after >= total {
        Err(pb::MisbehaviourOutcome::KeptLastPower)
    } else if after.saturating_mul(3) > total {
        Err(pb::MisbehaviourOutcome::KeptOverOneThird)
    } else {
        Ok(())
    }
}

fn key_of(v: &pb::Validator, prefix: &str) -> Result<[u8; 32], StateError> {
    <[u8; 32]>::try_from(v.pub_key.as_slice()).map_err(|_| StateError::Corrupt {
        key: format!("{prefix}{}", hex::encode(&v.pub_key)),
        reason: "validator key is not 32 bytes".into(),
    })
}

fn power_of(v: &pb::Validator) -> u128 {
    u128::try_from(v.power).unwrap_or(0)
}

/// Applies the rule (see the module docs) to the evidence of the block at `height`, in order.
pub fn punish<S: StateWrite>(
    state: &mut S,
    evidence: &[Evidence],
    height: u64,
) -> Result<(), StateError> {
    if evidence.is_empty() {
        return Ok(());
    }
    let total: u128 = state.validators()?.iter().map(power_of).sum();
    let mut jailed_power = 0u128;
    for e in evidence {
        let kind = pb::MisbehaviourKind::from(e.kind) as i32;
        if state.misbehaviour(&e.address, kind, e.height)?.is_some() {
            continue;
        }
        let mut record = pb::Misbehaviour {
            address: e.address.to_vec(),
            kind,
            evidence_height: e.height,
            evidence_time: e.time,
            reported_height: height,
            ..Default::default()
        };
        // The set as the block's earlier evidence left it.
        let member = state
            .validators()?
            .into_iter()
            .find(|v| validator_address(&v.pub_key) == e.address);
        let mut jail = None;
        let outcome = match member {
            Some(v) => {
                record.pub_key = v.pub_key.clone();
                record.org_id = v.org_id.clone();
                record.name = v.name.clone();
                record.power = v.power;
                match may_jail(total, jailed_power, power_of(&v)) {
                    Ok(()) => {
                        jailed_power = jailed_power.saturating_add(power_of(&v));
                        jail = Some(v);
                        pb::MisbehaviourOutcome::Jailed
                    }
                    Err(kept) => kept,
                }
            }
            None => match state
                .jailed_validators()?
                .into_iter()
                .filter_map(|j| j.validator)
                .find(|v| validator_address(&v.pub_key) == e.address)
            {
                Some(v) => {
                    record.pub_key = v.pub_key;
                    record.org_id = v.org_id;
                    record.name = v.name;
                    pb::MisbehaviourOutcome::AlreadyJailed
                }
                None => pb::MisbehaviourOutcome::NotInSet,
            },
        };
        record.outcome = outcome as i32;
        state.put_misbehaviour(&e.address, &record);
        let mut event = Event::new(EventKind::ValidatorMisbehaviour)
            .attr(attr::ADDRESS, hex::encode(e.address))
            .attr(attr::KIND, kind_name(kind))
            .attr(attr::EVIDENCE_HEIGHT, e.height);
        if !record.pub_key.is_empty() {
            event = event
                .attr(attr::PUB_KEY, hex::encode(&record.pub_key))
                .attr(attr::ORG, &record.org_id);
        }
        state.emit(event.attr(attr::OUTCOME, outcome_name(record.outcome)));
        if let Some(v) = jail {
            let key = key_of(&v, super::state_key::VALIDATORS)?;
            state.put_validator(
                &key,
                &pb::Validator {
                    power: 0,
                    ..v.clone()
                },
            );
            state.push_validator_update(key, 0);
            state.emit(
                Event::new(EventKind::ValidatorJailed)
                    .attr(attr::PUB_KEY, hex::encode(key))
                    .attr(attr::ADDRESS, hex::encode(e.address))
                    .attr(attr::ORG, &v.org_id)
                    .attr(attr::POWER, v.power)
                    .attr(attr::KIND, kind_name(kind))
                    .attr(attr::EVIDENCE_HEIGHT, e.height),
            );
            state.put_jailed(
                &key,
                &pb::JailedValidator {
                    validator: Some(v),
                    jailed_height: height,
                    kind,
                    evidence_height: e.height,
                },
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryState, StateDelta};

    #[test]
    fn jailing_keeps_power_in_the_set_and_takes_at_most_a_third_per_block() {
        use pb::MisbehaviourOutcome as O;
        assert_eq!(may_jail(40, 0, 10), Ok(()));
        assert_eq!(may_jail(40, 10, 10), Err(O::KeptOverOneThird));
        assert_eq!(may_jail(30, 0, 10), Ok(()), "exactly a third may go");
        assert_eq!(may_jail(20, 0, 10), Err(O::KeptOverOneThird));
        assert_eq!(may_jail(10, 0, 10), Err(O::KeptLastPower));
        assert_eq!(may_jail(0, 0, 0), Err(O::KeptLastPower));
        assert_eq!(may_jail(u128::MAX, u128::MAX, 1), Err(O::KeptLastPower));
    }

    #[test]
    fn names_are_the_proto_names_in_lower_case() {
        assert_eq!(
            kind_name(pb::MisbehaviourKind::DuplicateVote as i32),
            "duplicate_vote"
        );
        assert_eq!(
            kind_name(pb::MisbehaviourKind::LightClientAttack as i32),
            "light_client_attack"
        );
        assert_eq!(kind_name(99), "unknown(99)");
        assert_eq!(
            outcome_name(pb::MisbehaviourOutcome::KeptOverOneThird as i32),
            "kept_over_one_third"
        );
    }

    fn validator(i: u8, power: i64) -> pb::Validator {
        pb::Validator {
            pub_key: vec![i; 32],
            power,
            org_id: format!("org{i}"),
            name: format!("v{i}"),
            operators: vec![],
        }
    }

    fn evidence(i: u8, height: u64) -> Evidence {
        Evidence {
            kind: EvidenceKind::DuplicateVote,
            address: validator_address(&[i; 32]),
            height,
            time: 1_800_000_000,
        }
    }

    #[test]
    fn in_one_block_the_first_evidence_jails_and_the_next_one_is_judged_on_what_is_left() {
        let base = MemoryState::default();
        let mut s = StateDelta::new(&base);
        for i in 1..=4 {
            s.put_validator(&[i; 32], &validator(i, 10));
        }
        // v1 twice (two offences), v2 (would take a second quarter), an unknown key.
        let list = [
            evidence(1, 5),
            evidence(1, 6),
            evidence(2, 5),
            evidence(9, 5),
        ];
        punish(&mut s, &list, 8).unwrap();
        let outcomes: Vec<_> = list
            .iter()
            .map(|e| {
                let m = s
                    .misbehaviour(
                        &e.address,
                        pb::MisbehaviourKind::DuplicateVote as i32,
                        e.height,
                    )
                    .unwrap()
                    .unwrap();
                assert_eq!(m.reported_height, 8);
                pb::MisbehaviourOutcome::try_from(m.outcome).unwrap()
            })
            .collect();
        use pb::MisbehaviourOutcome as O;
        assert_eq!(
            outcomes,
            [
                O::Jailed,
                O::AlreadyJailed,
                O::KeptOverOneThird,
                O::NotInSet
            ]
        );
        let changes = s.take_changes();
        assert_eq!(
            changes.validator_updates.into_iter().collect::<Vec<_>>(),
            vec![([1; 32], 0)]
        );
        let jailed = changes
            .events
            .iter()
            .filter(|e| e.kind == EventKind::ValidatorJailed)
            .count();
        assert_eq!(jailed, 1);
        assert_eq!(
            changes
                .events
                .iter()
                .filter(|e| e.kind == EventKind::ValidatorMisbehaviour)
                .count(),
            4
        );
    }
}
