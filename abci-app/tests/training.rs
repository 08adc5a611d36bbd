//! Training jobs on in-process nodes: submission and its refusals, the worker draw, accepting
//! with a stake, results and their refusals, the beacon and attestor set, windows that pass
//! (a worker that never accepts is replaced, a job nobody finishes is refunded), cancellation,
//! and NRC conservation throughout.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{Consortium, START_BALANCE, TestNode, block_time, listing};
use neurodata_abci::amount::Amount;
use neurodata_abci::escrow::EscrowRead;
use neurodata_abci::ledger::LedgerRead;
use neurodata_abci::market::MarketRead;
use neurodata_abci::training::{self, TrainingRead};
use neurodata_certs::Role;
use neurodata_client::msg;
use neurodata_crypto::{DataKey, wrap};
use neurodata_proto::chain::v1 as pb;

const BOUNTY: u128 = 5_000;
const STAKE: u128 = 1_000;

/// A logistic regression on the test listing's columns.
fn spec() -> String {
    serde_json::json!({
        "schema": {
            "columns": [
                {"name": "age", "type": "numeric"},
                {"name": "chol", "type": "numeric"},
                {"name": "target", "type": "categorical"}
            ],
            "target": "target"
        },
        "model": {"algorithm": "logistic_regression", "l2": 0.001},
        "seed": 7,
        "training": {"epochs": 5, "batch_size": 4, "optimizer": {"kind": "adam", "lr": 0.01}},
        "checkpoint_every": 2
    })
    .to_string()
}

fn submit(n: &TestNode, dataset: u64) -> pb::SubmitJob {
    pb::SubmitJob {
        dataset_ids: vec![dataset],
        spec_json: spec(),
        bounty: BOUNTY.to_string(),
        stake: STAKE.to_string(),
        deadline: block_time(n.height + 1) + 7_200,
        sample_bps: 2_500,
    }
}

fn cid(i: u8) -> String {
    neurodata_crypto::cid::Cid::of(&[i]).to_string()
}

fn result(job_id: u64, segments: u32) -> pb::SubmitResult {
    pb::SubmitResult {
        job_id,
        model_sha256: vec![1; 32],
        trace_root: vec![2; 32],
        segments,
        metrics_json: r#"{"accuracy":0.5}"#.into(),
        model_cid: cid(1),
        onnx_cid: cid(2),
        trace_cid: cid(3),
        checkpoint_cids: (0..=segments as u8).map(|i| cid(10 + i)).collect(),
        sandbox_sha256: Vec::new(),
    }
}

/// org0 provides dataset 1, org1 bought it (confirmed), org2's trainer is a worker.
fn setup() -> (Consortium, TestNode) {
    let (c, n, _) = setup_with_key();
    (c, n)
}

/// As [`setup`], with the dataset's key.
fn setup_with_key() -> (Consortium, TestNode, DataKey) {
    let c = Consortium::new(3, 4);
    let mut n = TestNode::start(&c);
    let key = DataKey::generate().unwrap();
    let provider = c.signer(0, Role::Provider);
    let buyer = c.signer(1, Role::Buyer);
    n.ok(
        &provider,
        vec![msg::register_dataset(listing(&key, "10000", 1))],
    );
    n.ok(&buyer, vec![msg::buy(1, Amount(10_000))]);
    let spki = c.orgs[1].members[&Role::Buyer]
        .cert
        .public_key()
        .unwrap()
        .public_key_to_der()
        .unwrap();
    let wrapped = wrap::wrap(&key, &spki).unwrap();
    n.ok(
        &provider,
        vec![msg::deliver_key(1, buyer.address(), wrapped.to_bytes())],
    );
    n.ok(&buyer, vec![msg::confirm(1)]);
    n.ok(
        &c.signer(2, Role::Trainer),
        vec![msg::register_worker(1, "https://gw.org2.example:27008")],
    );
    (c, n, key)
}

fn job(n: &TestNode, id: u64) -> pb::Job {
    n.storage().job(id).unwrap().unwrap()
}

fn status(n: &TestNode, id: u64) -> pb::JobStatus {
    training::status(&job(n, id))
}

fn steps(n: &TestNode, id: u64) -> Vec<String> {
    job(n, id).steps.into_iter().map(|s| s.step).collect()
}

#[test]
fn a_job_is_drawn_accepted_and_its_result_gets_a_beacon_and_the_validator_set() {
    let (c, mut n) = setup();
    let buyer = c.signer(1, Role::Buyer);
    let trainer = c.signer(2, Role::Trainer);
    let supply = n.storage().supply().unwrap();
    let before = n.balance(buyer.address());

    let o = n.ok(&buyer, vec![msg::submit_job(submit(&n, 1))]);
    assert!(o.events.iter().any(|e| e.kind == "training.submitted"));
    assert_eq!(n.balance(training::escrow_account()), BOUNTY);
    assert_eq!(n.balance(buyer.address()), before - BOUNTY - 1);
    // The draw waits for a block whose hash did not exist at submission.
    assert_eq!(status(&n, 1), pb::JobStatus::Queued);
    let b = n.block(&[]);
    assert!(b.block_events.iter().any(|e| e.kind == "training.assigned"));
    let j = job(&n, 1);
    assert_eq!(training::status(&j), pb::JobStatus::Assigned);
    assert_eq!(j.worker, trainer.address().0.to_vec());

    // Only the drawn worker accepts; acceptance locks the stake.
    let other = n.run(&c.signer(0, Role::Trainer), vec![msg::accept_job(1)]);
    assert_eq!((o.code, other.codespace, other.code), (0, "training", 125));
    n.ok(&trainer, vec![msg::accept_job(1)]);
    assert_eq!(status(&n, 1), pb::JobStatus::Training);
    assert_eq!(n.balance(training::escrow_account()), BOUNTY + STAKE);
    assert!(job(&n, 1).stake_locked);

    // A result must describe a whole trace.
    let mut bad = result(1, 3);
    bad.checkpoint_cids.pop();
    let r = n.run(&trainer, vec![msg::submit_result(bad)]);
    assert_eq!((r.codespace, r.code), ("training", 129));
    assert!(r.log.contains("n+1 checkpoints"), "{}", r.log);
    let mut bad = result(1, 3);
    bad.model_sha256 = vec![1; 31];
    assert_eq!(n.run(&trainer, vec![msg::submit_result(bad)]).code, 129);
    let r = n.run(
        &c.signer(1, Role::Trainer),
        vec![msg::submit_result(result(1, 3))],
    );
    assert_eq!(r.code, 125);

    n.ok(&trainer, vec![msg::submit_result(result(1, 3))]);
    let j = job(&n, 1);
    assert_eq!(training::status(&j), pb::JobStatus::Attesting);
    let digest = j.result.as_ref().unwrap().digest.clone();
    assert_eq!(digest.len(), 32);
    assert!(j.attestation.as_ref().unwrap().beacon.is_empty());
    // A second result is refused: the job is attesting now.
    assert_eq!(
        n.run(&trainer, vec![msg::submit_result(result(1, 3))]).code,
        124
    );

    n.block(&[]);
    let att = job(&n, 1).attestation.unwrap();
    assert_eq!(att.beacon.len(), 32);
    assert_eq!(att.attestors.len(), 4, "every validator with power attests");
    assert!(att.commit_until > att.beacon_height);
    assert_eq!(
        steps(&n, 1),
        ["submitted", "assigned", "accepted", "result", "beacon"]
    );
    let stats = n.storage().dataset_stats(1).unwrap();
    assert_eq!(stats.training_runs, 1);
    assert_eq!(n.storage().supply().unwrap(), supply);
}

#[test]
fn submissions_that_cannot_run_are_refused_and_cost_only_the_fee() {
    let (c, mut n) = setup();
    let buyer = c.signer(1, Role::Buyer);
    let stranger = c.signer(2, Role::Buyer);

    // Data the submitter never bought.
    let r = n.run(&stranger, vec![msg::submit_job(submit(&n, 1))]);
    assert_eq!((r.codespace, r.code), ("training", 121), "{}", r.log);
    // A spec the trainer refuses.
    let mut m = submit(&n, 1);
    m.spec_json = spec().replace("\"epochs\":5", "\"epochs\":0");
    let r = n.run(&buyer, vec![msg::submit_job(m)]);
    assert_eq!(r.code, 122, "{}", r.log);
    assert!(r.log.contains("epochs"), "{}", r.log);
    let mut m = submit(&n, 1);
    m.spec_json = "{not json".into();
    assert_eq!(n.run(&buyer, vec![msg::submit_job(m)]).code, 122);
    // A column the dataset does not have.
    let mut m = submit(&n, 1);
    m.spec_json = spec().replace("\"chol\"", "\"bp\"");
    let r = n.run(&buyer, vec![msg::submit_job(m)]);
    assert_eq!(r.code, 123, "{}", r.log);
    assert!(r.log.contains("\"bp\""), "{}", r.log);
    // A deadline too near, no bounty, a bad sample fraction, an unknown dataset.
    let mut m = submit(&n, 1);
    m.deadline = block_time(n.height + 1) + 10;
    assert_eq!(n.run(&buyer, vec![msg::submit_job(m)]).code, 127);
    let mut m = submit(&n, 1);
    m.bounty = "0".into();
    assert_eq!(n.run(&buyer, vec![msg::submit_job(m)]).code, 11);
    let mut m = submit(&n, 1);
    m.sample_bps = 10_001;
    assert_eq!(n.run(&buyer, vec![msg::submit_job(m)]).code, 11);
    let mut m = submit(&n, 1);
    m.dataset_ids = vec![7];
    assert_eq!(n.run(&buyer, vec![msg::submit_job(m)]).code, 80);
    // More than the submitter has.
    let mut m = submit(&n, 1);
    m.bounty = (START_BALANCE * 10).to_string();
    assert_eq!(n.run(&buyer, vec![msg::submit_job(m)]).codespace, "ledger");
    assert!(n.storage().jobs().unwrap().is_empty());
    assert_eq!(n.balance(training::escrow_account()), 0);
}

#[test]
fn a_worker_that_does_not_accept_is_replaced_and_a_job_nobody_takes_is_refunded() {
    let (c, mut n) = setup();
    let buyer = c.signer(1, Role::Buyer);
    let first = c.signer(2, Role::Trainer);
    let second = c.signer(0, Role::Trainer);
    n.ok(
        &second,
        vec![msg::register_worker(2, "https://gw.org0.example:27008")],
    );
    let before = n.balance(buyer.address());
    n.ok(&buyer, vec![msg::submit_job(submit(&n, 1))]);
    n.block(&[]);
    let drawn = job(&n, 1).worker;
    let accept_by = job(&n, 1).accept_by;
    while n.height <= accept_by {
        n.block(&[]);
    }
    let j = job(&n, 1);
    assert!(
        steps(&n, 1).contains(&"missed".to_owned()),
        "{:?}",
        steps(&n, 1)
    );
    assert_eq!(j.tried, vec![drawn.clone()]);
    // The other worker is drawn at the next block.
    n.block(&[]);
    let j = job(&n, 1);
    assert_eq!(training::status(&j), pb::JobStatus::Assigned);
    assert_ne!(j.worker, drawn);
    let missed = n
        .storage()
        .worker(&neurodata_abci::address::Address::from_slice(&drawn).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!((missed.missed, missed.active), (1, 0));
    let _ = (first, second);

    // Past the deadline with no accepted worker: the bounty goes back.
    let deadline = j.deadline;
    while block_time(n.height + 1) <= deadline + 5
        && training::status(&job(&n, 1)) != pb::JobStatus::Refunded
    {
        n.block(&[]);
    }
    assert_eq!(status(&n, 1), pb::JobStatus::Refunded);
    assert_eq!(n.balance(buyer.address()), before - 1);
    assert_eq!(n.balance(training::escrow_account()), 0);
}

#[test]
fn a_worker_that_never_posts_its_result_loses_its_stake_unless_its_key_never_came() {
    let (c, mut n) = setup();
    let buyer = c.signer(1, Role::Buyer);
    let trainer = c.signer(2, Role::Trainer);
    let mut m = submit(&n, 1);
    // The spec's limit decides the result window.
    m.spec_json = spec().replace(
        "\"seed\":7",
        "\"seed\":7,\"limits\":{\"max_seconds\":10,\"max_memory_mb\":512}",
    );
    n.ok(&buyer, vec![msg::submit_job(m)]);
    n.block(&[]);
    n.ok(&trainer, vec![msg::accept_job(1)]);
    // The chain opened the worker's key request; the provider never answers it.
    let p = n
        .storage()
        .live_purchase(&trainer.address(), 1)
        .unwrap()
        .unwrap();
    let p = n.storage().purchase(p).unwrap().unwrap();
    assert_eq!(
        (p.kind, p.training_job),
        (pb::PurchaseKind::Training as i32, 1)
    );
    let result_by = job(&n, 1).result_by;
    let (buyer_before, worker_before) = (n.balance(buyer.address()), n.balance(trainer.address()));
    let pool_before = n.balance(neurodata_abci::address::Address::reward_pool());
    while block_time(n.height + 1) <= result_by {
        n.block(&[]);
    }
    n.block(&[]);
    let j = job(&n, 1);
    assert!(!j.stake_locked);
    assert!(
        j.steps.iter().any(|s| s.detail.contains("never reached")),
        "{:?}",
        j.steps
    );
    assert_eq!(
        n.balance(trainer.address()),
        worker_before + STAKE,
        "not its fault"
    );
    assert_eq!(n.balance(buyer.address()), buyer_before);
    assert_eq!(
        n.balance(training::escrow_account()),
        BOUNTY,
        "the bounty stays for the next worker"
    );
    assert_eq!(
        n.balance(neurodata_abci::address::Address::reward_pool()),
        pool_before
    );
    let late = n.run(&trainer, vec![msg::submit_result(result(1, 3))]);
    assert_eq!(late.code, 124);
}

#[test]
fn a_worker_that_got_its_key_and_posts_nothing_loses_its_stake_to_the_reward_pool() {
    let (c, mut n, key) = setup_with_key();
    let buyer = c.signer(1, Role::Buyer);
    let trainer = c.signer(2, Role::Trainer);
    let mut m = submit(&n, 1);
    m.spec_json = spec().replace(
        "\"seed\":7",
        "\"seed\":7,\"limits\":{\"max_seconds\":10,\"max_memory_mb\":512}",
    );
    n.ok(&buyer, vec![msg::submit_job(m)]);
    n.block(&[]);
    n.ok(&trainer, vec![msg::accept_job(1)]);
    let id = n
        .storage()
        .live_purchase(&trainer.address(), 1)
        .unwrap()
        .unwrap();
    let spki = c.orgs[2].members[&Role::Trainer]
        .cert
        .public_key()
        .unwrap()
        .public_key_to_der()
        .unwrap();
    let wrapped = wrap::wrap(&key, &spki).unwrap();
    n.ok(
        &c.signer(0, Role::Provider),
        vec![msg::deliver_key(id, trainer.address(), wrapped.to_bytes())],
    );
    let result_by = job(&n, 1).result_by;
    let (buyer_before, worker_before) = (n.balance(buyer.address()), n.balance(trainer.address()));
    let pool = neurodata_abci::address::Address::reward_pool();
    let pool_before = n.balance(pool);
    while block_time(n.height + 1) <= result_by {
        n.block(&[]);
    }
    n.block(&[]);
    assert!(!job(&n, 1).stake_locked);
    // Not to the submitter, who set the terms: to the reward pool.
    assert_eq!(n.balance(pool), pool_before + STAKE);
    assert_eq!(n.balance(buyer.address()), buyer_before);
    assert_eq!(n.balance(trainer.address()), worker_before);
}

#[test]
fn only_the_submitter_cancels_and_only_before_acceptance() {
    let (c, mut n) = setup();
    let buyer = c.signer(1, Role::Buyer);
    let trainer = c.signer(2, Role::Trainer);
    n.ok(&buyer, vec![msg::submit_job(submit(&n, 1))]);
    n.ok(&buyer, vec![msg::submit_job(submit(&n, 1))]);
    assert_eq!(n.run(&trainer, vec![msg::cancel_job(1)]).code, 126);
    let before = n.balance(buyer.address());
    n.ok(&buyer, vec![msg::cancel_job(1)]);
    assert_eq!(status(&n, 1), pb::JobStatus::Refunded);
    assert_eq!(n.balance(buyer.address()), before - 1 + BOUNTY);
    // Job 2 is drawn and accepted; it can no longer be cancelled.
    n.block(&[]);
    n.ok(&trainer, vec![msg::accept_job(2)]);
    assert_eq!(n.run(&buyer, vec![msg::cancel_job(2)]).code, 124);
    let w = n.storage().worker(&trainer.address()).unwrap().unwrap();
    assert_eq!(w.active, 1);
}
