//! A leaderboard score end to end on an in-process validator node: a model version made final
//! by a real job, the dataset's hidden split registered, an evaluation requested; the verifier's
//! verdict files in the node's inbox, ExtendVote turning them into commits and reveals, those
//! extensions signed and injected into the next blocks, and FinalizeBlock settling the
//! evaluation — then the /leaderboard query shows the model with its score and lineage.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{CHAIN, Consortium, TestNode, block_time, listing};
use neurodata_abci::abci::Node;
use neurodata_abci::escrow::EscrowRead;
use neurodata_abci::extension::{Attester, EvaluationVerdictFile, VerdictFile, sign_bytes};
use neurodata_abci::models::EvaluationRead;
use neurodata_abci::query;
use neurodata_abci::training::attest::validator_address;
use neurodata_abci::training::{INJECTED_MARKER, TrainingRead};
use neurodata_certs::Role;
use neurodata_client::{Amount, msg};
use neurodata_crypto::cid::Cid;
use neurodata_crypto::{DataKey, wrap};
use neurodata_proto::chain::v1 as pb;
use openssl::pkey::{PKey, Private};
use prost::Message as _;

const SCORE: &str = r#"{"higher_is_better":true,"metric":"accuracy","rows":2,"value":0.5}"#;

fn cid(i: u8) -> String {
    Cid::of(&[i]).to_string()
}

/// A logistic regression on the test listing's columns, predicting `target`.
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

/// Three orgs and one validator (org0's) with a real Ed25519 key, whose node reads verdicts
/// from `inbox`.
fn validator_node(inbox: &std::path::Path) -> (Consortium, PKey<Private>, TestNode) {
    let mut c = Consortium::new(3, 1);
    let key = PKey::generate_ed25519().unwrap();
    c.validators = vec![(key.raw_public_key().unwrap().try_into().unwrap(), 10)];
    let TestNode {
        node,
        dir,
        height,
        genesis_hash,
    } = TestNode::start(&c);
    let node: Node = node.with_attester(Attester {
        address: validator_address(&key.raw_public_key().unwrap()),
        verdicts: inbox.to_owned(),
    });
    let n = TestNode {
        node,
        dir,
        height,
        genesis_hash,
    };
    (c, key, n)
}

/// The next block, carrying what the validator's node extends its vote with now (signed and
/// injected as its proposer would).
fn block_with_extension(n: &mut TestNode, key: &PKey<Private>) {
    let vote_height = n.height;
    let ext = n.node.extend_vote(vote_height);
    let mut txs = Vec::new();
    if !ext.is_empty() {
        let h = i64::try_from(vote_height).unwrap();
        let signature = openssl::sign::Signer::new_without_digest(key)
            .unwrap()
            .sign_oneshot_to_vec(&sign_bytes(CHAIN, h, 0, &ext))
            .unwrap();
        let mut tx = INJECTED_MARKER.to_vec();
        tx.extend(
            pb::InjectedVotes {
                height: h,
                round: 0,
                votes: vec![pb::InjectedVote {
                    validator: validator_address(&key.raw_public_key().unwrap()).to_vec(),
                    extension: ext,
                    signature,
                }],
            }
            .encode_to_vec(),
        );
        txs.push(tx);
    }
    let b = n.block(&txs);
    if !txs.is_empty() {
        assert_eq!(b.outcomes[0].code, 0, "{}", b.outcomes[0].log);
    }
}

#[test]
fn validators_scores_reach_the_leaderboard_through_vote_extensions() {
    let inbox = tempfile::tempdir().unwrap();
    let (c, key, mut n) = validator_node(inbox.path());
    let provider = c.signer(0, Role::Provider);
    let owner = c.signer(1, Role::Buyer);
    let worker = c.signer(2, Role::Trainer);

    // Dataset 1, bought by the model's owner.
    let data_key = DataKey::generate().unwrap();
    n.ok(
        &provider,
        vec![msg::register_dataset(listing(&data_key, "1000", 1))],
    );
    n.ok(&owner, vec![msg::buy(1, Amount(1000))]);
    let purchase = n
        .storage()
        .live_purchase(&owner.address(), 1)
        .unwrap()
        .unwrap();
    let spki = c.orgs[1].members[&Role::Buyer]
        .cert
        .public_key()
        .unwrap()
        .public_key_to_der()
        .unwrap();
    let wrapped = wrap::wrap(&data_key, &spki).unwrap();
    n.ok(
        &provider,
        vec![msg::deliver_key(
            purchase,
            owner.address(),
            wrapped.to_bytes(),
        )],
    );
    n.ok(&owner, vec![msg::confirm(purchase)]);

    // Job 1, made final by the validator's verdict from its inbox.
    n.ok(
        &worker,
        vec![msg::register_worker(1, "https://gw.org2.example:27008")],
    );
    let height = n.height;
    n.ok(
        &owner,
        vec![msg::submit_job(pb::SubmitJob {
            dataset_ids: vec![1],
            spec_json: spec(),
            bounty: "5000".into(),
            stake: "1000".into(),
            deadline: block_time(height + 1) + 7_200,
            sample_bps: 2_500,
        })],
    );
    n.block(&[]); // the draw
    n.ok(&worker, vec![msg::accept_job(1)]);
    n.ok(
        &worker,
        vec![msg::submit_result(pb::SubmitResult {
            job_id: 1,
            model_sha256: vec![1; 32],
            trace_root: vec![2; 32],
            segments: 3,
            metrics_json: r#"{"accuracy":0.5}"#.into(),
            model_cid: cid(1),
            onnx_cid: cid(2),
            trace_cid: cid(3),
            checkpoint_cids: (0..=3).map(|i| cid(10 + i)).collect(),
            sandbox_sha256: Vec::new(),
        })],
    );
    n.block(&[]); // the beacon
    let digest = n.storage().job(1).unwrap().unwrap().result.unwrap().digest;
    VerdictFile {
        job_id: 1,
        result_digest: digest.try_into().unwrap(),
        matches: true,
        segments_digest: [0x5e; 32],
        salt: [0x5a; 32],
    }
    .write_atomically(inbox.path())
    .unwrap();
    for _ in 0..40 {
        if n.storage().job(1).unwrap().unwrap().status == pb::JobStatus::Final as i32 {
            break;
        }
        block_with_extension(&mut n, &key);
    }
    let mv = n
        .storage()
        .model_version(1)
        .unwrap()
        .expect("job 1 is final");
    assert_eq!(mv.dataset_ids, vec![1]);

    // The hidden split, and an evaluation asked by a member of another org.
    let split_key = DataKey::generate().unwrap();
    let l = listing(&split_key, "0", 9);
    n.ok(
        &provider,
        vec![msg::register_eval_split(pb::RegisterEvalSplit {
            dataset_id: 1,
            cid: l.cid,
            plaintext_sha256: l.plaintext_sha256,
            key_commitment: l.key_commitment,
            size: l.size,
            ciphertext_size: l.ciphertext_size,
            rows: l.rows,
            schema: l.schema,
            format: l.format,
            location: l.location,
        })],
    );
    let o = n.ok(
        &c.signer(1, Role::Buyer),
        vec![msg::request_evaluation(1, 1)],
    );
    assert!(o.events.iter().any(|e| e.kind == "evaluation.requested"));
    let e = n.storage().evaluation(1).unwrap().unwrap();
    let operator = c.signer(0, Role::Validator).address();
    let request = n.storage().live_purchase(&operator, e.split_id).unwrap();
    let request = n.storage().purchase(request.unwrap()).unwrap().unwrap();
    assert_eq!(request.kind, pb::PurchaseKind::Evaluation as i32);

    // The verifier's score in the inbox; the node commits, then reveals it.
    EvaluationVerdictFile {
        evaluation_id: 1,
        subject_digest: e.subject_digest.clone().try_into().unwrap(),
        matches: true,
        score_json: SCORE.into(),
        salt: [0x77; 32],
    }
    .write_atomically(inbox.path())
    .unwrap();
    for _ in 0..40 {
        let e = n.storage().evaluation(1).unwrap().unwrap();
        if e.status != pb::EvaluationStatus::Attesting as i32 {
            break;
        }
        block_with_extension(&mut n, &key);
    }
    let e = n.storage().evaluation(1).unwrap().unwrap();
    assert_eq!(
        e.status,
        pb::EvaluationStatus::Scored as i32,
        "{}",
        e.failure
    );
    assert_eq!((e.metric.as_str(), e.score.as_str()), ("accuracy", "0.5"));

    let r = n
        .node
        .query(tendermint::abci::request::Query {
            data: query::leaderboard(1).query.data().into(),
            path: query::leaderboard(1).query.path().into(),
            height: 0u32.into(),
            prove: false,
        })
        .unwrap();
    let board = pb::Leaderboard::decode(r.value).unwrap();
    assert_eq!(board.entries.len(), 1);
    let entry = &board.entries[0];
    assert_eq!(
        (entry.rank, entry.model_version, entry.score.as_str()),
        (1, 1, "0.5")
    );
    assert_eq!(
        (entry.owner_org.as_str(), entry.trainer_org.as_str()),
        ("org1", "org2")
    );
    assert_eq!(
        (entry.target.as_str(), entry.algorithm.as_str()),
        ("target", "logistic_regression")
    );
    assert_eq!(entry.lineage, vec![1]);
    assert_eq!(entry.score_json, SCORE);
}
