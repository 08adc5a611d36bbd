//! Misbehaviour: CometBFT's evidence in FinalizeBlock is recorded, jails the validator by the
//! rule in `governance::jail` (within its safety limits), and only governance re-admits it. Every
//! block runs on two nodes that must agree on the app hash and the validator updates.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::*;
use neurodata_abci::abci::FinalizedBlock;
use neurodata_abci::governance::GovernanceRead;
use neurodata_abci::governance::jail::{Evidence, EvidenceKind};
use neurodata_abci::training::attest::validator_address;
use neurodata_certs::Role;
use neurodata_client::msg;
use neurodata_proto::chain::v1 as pb;
use pb::MisbehaviourOutcome as Outcome;
use pb::proposal_action::Action as A;

/// The block-level events of kind `kind`.
fn events<'a>(b: &'a FinalizedBlock, kind: &str) -> Vec<&'a neurodata_abci::state::Event> {
    b.block_events.iter().filter(|e| e.kind == kind).collect()
}

fn record(n: &TestNode, e: &Evidence) -> pb::Misbehaviour {
    let kind = pb::MisbehaviourKind::from(e.kind) as i32;
    n.storage()
        .misbehaviour(&e.address, kind, e.height)
        .unwrap()
        .expect("the evidence is recorded")
}

fn outcome(n: &TestNode, e: &Evidence) -> Outcome {
    Outcome::try_from(record(n, e).outcome).unwrap()
}

fn power(n: &TestNode, key: &[u8; 32]) -> Option<i64> {
    n.storage().validator(key).unwrap().map(|v| v.power)
}

/// The state without the per-block record every block rewrites.
fn state(n: &TestNode) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut s = all_state(n.storage());
    // Written by every block, evidence or not.
    s.remove("chain/block");
    s.remove("membership/expiry-cursor");
    s
}

#[test]
fn double_signing_jails_the_validator_and_finalize_block_removes_it() {
    // Four validators of power 10; v1 is run by org1.
    let c = Consortium::new(3, 4);
    let mut t = Twin::start(&c);
    t.apply(&[]);
    let key = c.validators[1].0;
    let e = double_sign(&key, 1);
    let b = t.apply_with_misbehaviour(&[], std::slice::from_ref(&e));

    assert_eq!(b.validator_updates, vec![(key, 0)], "CometBFT removes it");
    assert_eq!(power(&t.a, &key), None);
    assert_eq!(t.a.storage().validators().unwrap().len(), 3);
    let jailed = t.a.storage().jailed(&key).unwrap().expect("jailed");
    assert_eq!(jailed.jailed_height, 2);
    assert_eq!(jailed.evidence_height, 1);
    let was = jailed.validator.unwrap();
    assert_eq!((was.power, was.org_id.as_str()), (10, "org1"));

    let m = record(&t.a, &e);
    assert_eq!(m.address, validator_address(&key).to_vec());
    assert_eq!(m.pub_key, key.to_vec());
    assert_eq!((m.org_id.as_str(), m.power), ("org1", 10));
    assert_eq!((m.evidence_height, m.reported_height), (1, 2));
    assert_eq!(m.evidence_time, block_time(1));
    assert_eq!(m.kind, pb::MisbehaviourKind::DuplicateVote as i32);
    assert_eq!(outcome(&t.a, &e), Outcome::Jailed);

    let recorded = events(&b, "validator.misbehaviour");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].get("outcome"), Some("jailed"));
    assert_eq!(recorded[0].get("kind"), Some("duplicate_vote"));
    assert_eq!(recorded[0].get("evidence_height"), Some("1"));
    assert_eq!(
        recorded[0].get("address"),
        Some(hex::encode(validator_address(&key)).as_str())
    );
    let j = events(&b, "validator.jailed");
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].get("pub_key"), Some(hex::encode(key).as_str()));
    assert_eq!(j[0].get("org"), Some("org1"));
    assert_eq!(j[0].get("power"), Some("10"));

    // The query operators list it with.
    let list =
        neurodata_abci::query::list(&neurodata_abci::query::misbehaviours().query, t.a.storage())
            .unwrap()
            .unwrap();
    let list = <pb::MisbehaviourList as prost::Message>::decode(list.as_slice()).unwrap();
    assert_eq!(list.misbehaviours, vec![m]);
    assert_eq!(
        t.a.storage().jailed_validators().unwrap().len(),
        1,
        "one jailed validator"
    );

    // The next blocks change nothing more.
    let b = t.apply(&[]);
    assert!(b.validator_updates.is_empty());
    assert!(b.block_events.is_empty());
}

#[test]
fn the_same_evidence_twice_is_recorded_and_acted_on_once() {
    let c = Consortium::new(3, 4);
    let mut t = Twin::start(&c);
    let key = c.validators[0].0;
    let e = double_sign(&key, 1);
    // Twice in one block.
    let b = t.apply_with_misbehaviour(&[], &[e.clone(), e.clone()]);
    assert_eq!(b.validator_updates, vec![(key, 0)]);
    assert_eq!(events(&b, "validator.misbehaviour").len(), 1);
    assert_eq!(events(&b, "validator.jailed").len(), 1);
    let after = state(&t.a);
    // And again in a later block.
    let b = t.apply_with_misbehaviour(&[], std::slice::from_ref(&e));
    assert!(b.validator_updates.is_empty());
    assert!(b.block_events.is_empty(), "{:?}", b.block_events);
    assert_eq!(state(&t.a), after, "nothing changed");
    assert_eq!(
        record(&t.a, &e).reported_height,
        1,
        "the first report stands"
    );
    assert_eq!(t.a.storage().misbehaviours().unwrap().len(), 1);
}

#[test]
fn evidence_against_an_address_outside_the_set_is_recorded_only() {
    let c = Consortium::new(3, 4);
    let mut t = Twin::start(&c);
    let before = state(&t.a);
    let e = Evidence {
        kind: EvidenceKind::LightClientAttack,
        address: [7; 20],
        height: 1,
        time: block_time(1),
    };
    let b = t.apply_with_misbehaviour(&[], std::slice::from_ref(&e));
    assert!(b.validator_updates.is_empty());
    assert_eq!(outcome(&t.a, &e), Outcome::NotInSet);
    let m = record(&t.a, &e);
    assert!(m.pub_key.is_empty() && m.org_id.is_empty() && m.power == 0);
    let recorded = events(&b, "validator.misbehaviour");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].get("outcome"), Some("not_in_set"));
    assert_eq!(recorded[0].get("kind"), Some("light_client_attack"));
    assert_eq!(recorded[0].get("pub_key"), None);
    assert!(events(&b, "validator.jailed").is_empty());
    // Only the record was written.
    let mut after = state(&t.a);
    let key = format!(
        "governance/misbehaviour/{}/02/{:020}",
        hex::encode([7u8; 20]),
        1
    );
    assert!(after.remove(&key).is_some(), "recorded under {key}");
    assert_eq!(after, before);

    // A validator governance removed is outside the set too: its evidence changes nothing.
    let removed = c.validators[3].0;
    let a0 = c.signer(0, Role::Admin);
    let propose = |power| {
        msg::propose(
            "validator",
            A::SetValidator(pb::SetValidator {
                pub_key: removed.to_vec(),
                power,
                org_id: "org0".into(),
                name: "v3".into(),
                operators: vec![],
            }),
        )
    };
    t.ok(&a0, vec![propose(0)]);
    t.ok(&c.signer(1, Role::Admin), vec![msg::vote(1, true)]);
    t.ok(&c.signer(2, Role::Admin), vec![msg::vote(1, true)]);
    assert_eq!(power(&t.a, &removed), None, "governance removed it");
    let e = double_sign(&removed, 2);
    let b = t.apply_with_misbehaviour(&[], std::slice::from_ref(&e));
    assert!(b.validator_updates.is_empty());
    assert_eq!(outcome(&t.a, &e), Outcome::NotInSet);
    assert!(t.a.storage().jailed(&removed).unwrap().is_none());
}

#[test]
fn no_block_jails_more_than_a_third_of_the_power() {
    let c = Consortium::new(3, 4);
    let mut t = Twin::start(&c);
    let (k0, k1) = (c.validators[0].0, c.validators[1].0);
    let (e0, e1) = (double_sign(&k0, 1), double_sign(&k1, 1));
    let b = t.apply_with_misbehaviour(&[], &[e0.clone(), e1.clone()]);
    // The first in the block's order goes; the second would take 20 of 40.
    assert_eq!(b.validator_updates, vec![(k0, 0)]);
    assert_eq!(outcome(&t.a, &e0), Outcome::Jailed);
    assert_eq!(outcome(&t.a, &e1), Outcome::KeptOverOneThird);
    assert_eq!(power(&t.a, &k1), Some(10), "v1 keeps its power");
    assert!(t.a.storage().jailed(&k1).unwrap().is_none());
    let recorded = events(&b, "validator.misbehaviour");
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1].get("outcome"), Some("kept_over_one_third"));
    assert_eq!(recorded[1].get("pub_key"), Some(hex::encode(k1).as_str()));
    assert_eq!(events(&b, "validator.jailed").len(), 1);

    // Later evidence is judged on the set of its block: 10 of 30 is a third, not more.
    let e1_later = double_sign(&k1, 2);
    let b = t.apply_with_misbehaviour(&[], std::slice::from_ref(&e1_later));
    assert_eq!(b.validator_updates, vec![(k1, 0)]);
    assert_eq!(outcome(&t.a, &e1_later), Outcome::Jailed);
    assert_eq!(t.a.storage().validators().unwrap().len(), 2);
}

#[test]
fn the_last_validator_and_one_of_two_are_never_jailed() {
    // One validator: jailing it would leave no power.
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let key = c.validators[0].0;
    let e = double_sign(&key, 1);
    let b = t.apply_with_misbehaviour(&[], std::slice::from_ref(&e));
    assert!(b.validator_updates.is_empty());
    assert_eq!(outcome(&t.a, &e), Outcome::KeptLastPower);
    assert_eq!(power(&t.a, &key), Some(10));
    let recorded = events(&b, "validator.misbehaviour");
    assert_eq!(recorded[0].get("outcome"), Some("kept_last_power"));
    assert!(events(&b, "validator.jailed").is_empty());
    assert!(t.a.storage().jailed_validators().unwrap().is_empty());

    // Two of equal power: either one is half the power.
    let c = Consortium::new(1, 2);
    let mut t = Twin::start(&c);
    let evidence: Vec<_> = c
        .validators
        .iter()
        .map(|(k, _)| double_sign(k, 1))
        .collect();
    let b = t.apply_with_misbehaviour(&[], &evidence);
    assert!(b.validator_updates.is_empty());
    for e in &evidence {
        assert_eq!(outcome(&t.a, e), Outcome::KeptOverOneThird);
    }
    assert_eq!(t.a.storage().validators().unwrap().len(), 2);
}

#[test]
fn governance_re_admits_a_jailed_validator_and_clears_its_jail() {
    let c = Consortium::new(3, 4);
    let mut t = Twin::start(&c);
    let key = c.validators[2].0;
    t.apply_with_misbehaviour(&[], &[double_sign(&key, 1)]);
    let was =
        t.a.storage()
            .jailed(&key)
            .unwrap()
            .unwrap()
            .validator
            .unwrap();

    // Evidence of another offence while jailed is recorded only.
    let again = double_sign(&key, 2);
    let b = t.apply_with_misbehaviour(&[], std::slice::from_ref(&again));
    assert!(b.validator_updates.is_empty());
    assert_eq!(outcome(&t.a, &again), Outcome::AlreadyJailed);
    assert_eq!(record(&t.a, &again).org_id, "org2");

    // A vote of the consortium (all three orgs) brings it back.
    let readmit = msg::propose(
        "re-admit v2",
        A::SetValidator(pb::SetValidator {
            pub_key: key.to_vec(),
            power: was.power,
            org_id: was.org_id.clone(),
            name: was.name.clone(),
            operators: was.operators.clone(),
        }),
    );
    t.ok(&c.signer(2, Role::Admin), vec![readmit]);
    t.ok(&c.signer(0, Role::Admin), vec![msg::vote(1, true)]);
    assert!(
        t.a.storage().jailed(&key).unwrap().is_some(),
        "still jailed while the vote is open"
    );
    let tx =
        t.a.sign(&c.signer(1, Role::Admin), vec![msg::vote(1, true)]);
    let b = t.apply(&[tx]);
    let o = &b.outcomes[0];
    assert_eq!(o.code, 0, "{}", o.log);
    assert!(
        o.events.iter().any(|e| e.kind == "validator.unjailed"
            && e.get("pub_key") == Some(hex::encode(key).as_str()))
    );
    assert_eq!(b.validator_updates, vec![(key, 10)]);
    assert_eq!(power(&t.a, &key), Some(10));
    assert!(t.a.storage().jailed(&key).unwrap().is_none());
    assert_eq!(t.a.storage().validators().unwrap().len(), 4);
    // The records of what it did stay.
    assert_eq!(t.a.storage().misbehaviours().unwrap().len(), 2);

    // Back in the set, new evidence jails it again.
    let third = double_sign(&key, 6);
    let b = t.apply_with_misbehaviour(&[], std::slice::from_ref(&third));
    assert_eq!(b.validator_updates, vec![(key, 0)]);
    assert_eq!(outcome(&t.a, &third), Outcome::Jailed);
}

#[test]
fn evidence_and_a_re_admission_in_one_block_hand_cometbft_one_update() {
    // The evidence is handled before the block's txs: a SetValidator passing in the same block
    // re-admits at the power it sets, and CometBFT gets only that block's last word, without a
    // no-op.
    let c = Consortium::new(1, 4);
    let mut t = Twin::start(&c);
    let key = c.validators[1].0;
    let readmit = |power| {
        msg::propose(
            "keep v1",
            A::SetValidator(pb::SetValidator {
                pub_key: key.to_vec(),
                power,
                org_id: "org0".into(),
                name: "v1".into(),
                operators: vec![],
            }),
        )
    };
    let tx = t.a.sign(&c.signer(0, Role::Admin), vec![readmit(10)]);
    let b = t.apply_with_misbehaviour(&[tx], &[double_sign(&key, 1)]);
    assert_eq!(b.outcomes[0].code, 0, "{}", b.outcomes[0].log);
    assert!(b.validator_updates.is_empty(), "10 -> 0 -> 10 is no change");
    assert_eq!(power(&t.a, &key), Some(10));
    assert!(t.a.storage().jailed(&key).unwrap().is_none());
    assert_eq!(events(&b, "validator.jailed").len(), 1);

    let tx = t.a.sign(&c.signer(0, Role::Admin), vec![readmit(5)]);
    let b = t.apply_with_misbehaviour(&[tx], &[double_sign(&key, 2)]);
    assert_eq!(b.validator_updates, vec![(key, 5)]);
}

#[test]
fn a_proposal_submitted_before_the_jail_does_not_re_admit() {
    // Its voters weighed the validator as it was: giving power back after a double sign takes a
    // proposal submitted after the jail.
    let c = Consortium::new(3, 4);
    let mut t = Twin::start(&c);
    let key = c.validators[2].0;
    let v = t.a.storage().validator(&key).unwrap().unwrap();
    let rename = msg::propose(
        "rename v2",
        A::SetValidator(pb::SetValidator {
            pub_key: key.to_vec(),
            power: v.power,
            org_id: v.org_id.clone(),
            name: "v2-renamed".into(),
            operators: v.operators.clone(),
        }),
    );
    t.ok(&c.signer(2, Role::Admin), vec![rename]);
    t.ok(&c.signer(0, Role::Admin), vec![msg::vote(1, true)]);
    t.apply_with_misbehaviour(&[], &[double_sign(&key, 1)]);
    let tx =
        t.a.sign(&c.signer(1, Role::Admin), vec![msg::vote(1, true)]);
    let b = t.apply(&[tx]);
    let o = &b.outcomes[0];
    assert_eq!(o.code, 0, "the vote itself counts: {}", o.log);
    let failed: Vec<_> = o
        .events
        .iter()
        .filter(|e| e.kind == "proposal.failed")
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", o.events);
    let reason = failed[0].get("reason").unwrap_or_default();
    assert!(
        reason.contains("was jailed at height") && reason.contains("submit a new proposal"),
        "{reason}"
    );
    assert!(b.validator_updates.is_empty());
    assert!(t.a.storage().jailed(&key).unwrap().is_some());
    assert_ne!(power(&t.a, &key), Some(v.power), "still out of the set");
}
