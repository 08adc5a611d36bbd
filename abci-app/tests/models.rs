//! The models marketplace end to end on in-process nodes: a model version made final by a real
//! job (worker, result, validators' commit–reveal injected as signed vote extensions), published
//! with the chain's model card, bought through the market's escrow, delivered, confirmed and
//! paid out to its owner, the reward pool and each data provider by the royalty rule; wrong-key
//! disputes and refunds that pay no royalty; every refusal the issue lists, with nothing changed;
//! and a property test of where every coin goes.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{CHAIN, Consortium, TestNode, Twin, block_time, listing};
use neurodata_abci::address::Address;
use neurodata_abci::amount::Amount;
use neurodata_abci::escrow::{EscrowRead, escrow_account, fee_of};
use neurodata_abci::extension::sign_bytes;
use neurodata_abci::governance::GovernanceRead;
use neurodata_abci::ledger::LedgerRead;
use neurodata_abci::market::MarketRead;
use neurodata_abci::models::{ModelsRead, model_card};
use neurodata_abci::storage::Storage;
use neurodata_abci::training::attest::{commitment, validator_address};
use neurodata_abci::training::{INJECTED_MARKER, TrainingRead};
use neurodata_certs::Role;
use neurodata_client::{Signer, msg};
use neurodata_crypto::cid::Cid;
use neurodata_crypto::{DataKey, dleq, wrap};
use neurodata_proto::chain::v1 as pb;
use openssl::pkey::{PKey, Private};
use proptest::prelude::*;
use prost::Message as _;

/// Dataset 1 (org0's provider) has three times the rows of dataset 2 (org2's provider).
const ROWS_A: u64 = 300;
const ROWS_B: u64 = 100;
const PRICE: u128 = 10_000;
/// The harness's market fee (`common::Consortium`) and the default royalty.
const FEE_BPS: u32 = 200;
const ROYALTY_BPS: u32 = 1_000;
const SEGMENTS_DIGEST: [u8; 32] = [0x5e; 32];
const SALT: [u8; 32] = [0x5a; 32];

/// What the royalty rule gives datasets 1 and 2 of a sale at `price`, written out independently
/// of `models::royalty`: the pool split 300:100 by rows, the remainder to dataset 1 (most rows).
fn expected_royalties(price: u128) -> (u128, u128) {
    let pool = price * u128::from(ROYALTY_BPS) / 10_000;
    let b = pool * u128::from(ROWS_B) / u128::from(ROWS_A + ROWS_B);
    (pool - b, b)
}

/// Three orgs and one validator (org0's) with a real Ed25519 key, so its vote extensions can be
/// signed and injected.
fn consortium() -> (Consortium, PKey<Private>) {
    let mut c = Consortium::new(3, 1);
    let key = PKey::generate_ed25519().unwrap();
    c.validators = vec![(key.raw_public_key().unwrap().try_into().unwrap(), 10)];
    (c, key)
}

/// Who is who: org0 and org2 provide the data, org1 owns the model, org2's trainer trains it.
struct Cast {
    provider_a: Signer,
    provider_b: Signer,
    owner: Signer,
    owner_provider: Signer,
    worker: Signer,
}

fn cast(c: &Consortium) -> Cast {
    Cast {
        provider_a: c.signer(0, Role::Provider),
        provider_b: c.signer(2, Role::Provider),
        owner: c.signer(1, Role::Buyer),
        owner_provider: c.signer(1, Role::Provider),
        worker: c.signer(2, Role::Trainer),
    }
}

/// A node under test: one node, or twins that must agree.
trait Chain {
    fn node(&self) -> &TestNode;
    fn block(&mut self, txs: &[Vec<u8>]);
    fn ok(&mut self, signer: &Signer, msgs: Vec<pb::Message>);
}

impl Chain for TestNode {
    fn node(&self) -> &TestNode {
        self
    }
    fn block(&mut self, txs: &[Vec<u8>]) {
        TestNode::block(self, txs);
    }
    fn ok(&mut self, signer: &Signer, msgs: Vec<pb::Message>) {
        TestNode::ok(self, signer, msgs);
    }
}

impl Chain for Twin {
    fn node(&self) -> &TestNode {
        &self.a
    }
    fn block(&mut self, txs: &[Vec<u8>]) {
        self.apply(txs);
    }
    fn ok(&mut self, signer: &Signer, msgs: Vec<pb::Message>) {
        Twin::ok(self, signer, msgs);
    }
}

fn spki(c: &Consortium, org: usize, role: Role) -> Vec<u8> {
    c.orgs[org].members[&role]
        .cert
        .public_key()
        .unwrap()
        .public_key_to_der()
        .unwrap()
}

/// A logistic regression on the test listings' columns.
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

fn cid(i: u8) -> String {
    Cid::of(&[i]).to_string()
}

/// The injected tx of the next block: `key`'s signed extension of the last height.
fn injected(chain: &dyn Chain, key: &PKey<Private>, votes: Vec<pb::JobVote>) -> Vec<u8> {
    let vote_height = i64::try_from(chain.node().height).unwrap();
    let ext = pb::VoteExtension { votes }.encode_to_vec();
    let signature = openssl::sign::Signer::new_without_digest(key)
        .unwrap()
        .sign_oneshot_to_vec(&sign_bytes(CHAIN, vote_height, 0, &ext))
        .unwrap();
    let mut tx = INJECTED_MARKER.to_vec();
    tx.extend(
        pb::InjectedVotes {
            height: vote_height,
            round: 0,
            votes: vec![pb::InjectedVote {
                validator: validator_address(&key.raw_public_key().unwrap()).to_vec(),
                extension: ext,
                signature,
            }],
        }
        .encode_to_vec(),
    );
    tx
}

/// Lists datasets 1 and 2, has the model's owner buy both, and runs job 1 on them until the
/// validator's commit and reveal make it final: model version 1, owned by org1.
fn final_model(c: &Consortium, validator: &PKey<Private>, chain: &mut dyn Chain) {
    let who = cast(c);
    for (id, provider, rows, salt) in [
        (1u64, &who.provider_a, ROWS_A, 1u8),
        (2, &who.provider_b, ROWS_B, 2),
    ] {
        let key = DataKey::generate().unwrap();
        let mut d = listing(&key, "1000", salt);
        d.rows = rows;
        d.title = format!("heart {id}");
        chain.ok(provider, vec![msg::register_dataset(d)]);
        // Verified: only attested rows weigh in the royalty split.
        chain.ok(
            &c.signer(0, Role::Validator),
            vec![msg::attest(pb::AttestDataset {
                dataset_id: id,
                ciphertext_matches_cid: true,
                plaintext_matches: true,
                rows,
                schema_matches: true,
            })],
        );
        chain.ok(&who.owner, vec![msg::buy(id, Amount(1000))]);
        let purchase = chain
            .node()
            .storage()
            .live_purchase(&who.owner.address(), id);
        let purchase = purchase.unwrap().unwrap();
        let wrapped = wrap::wrap(&key, &spki(c, 1, Role::Buyer)).unwrap();
        chain.ok(
            provider,
            vec![msg::deliver_key(
                purchase,
                who.owner.address(),
                wrapped.to_bytes(),
            )],
        );
        chain.ok(&who.owner, vec![msg::confirm(purchase)]);
    }
    chain.ok(
        &who.worker,
        vec![msg::register_worker(1, "https://gw.org2.example:27008")],
    );
    let height = chain.node().height;
    chain.ok(
        &who.owner,
        vec![msg::submit_job(pb::SubmitJob {
            dataset_ids: vec![1, 2],
            spec_json: spec(),
            bounty: "5000".into(),
            stake: "1000".into(),
            deadline: block_time(height + 1) + 7_200,
            sample_bps: 2_500,
        })],
    );
    chain.block(&[]); // the draw
    chain.ok(&who.worker, vec![msg::accept_job(1)]);
    chain.ok(
        &who.worker,
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
    chain.block(&[]); // the beacon
    let me = validator_address(&validator.raw_public_key().unwrap());
    for _ in 0..40 {
        let job = chain.node().storage().job(1).unwrap().unwrap();
        if job.status == pb::JobStatus::Final as i32 {
            assert_eq!(job.model_version, 1);
            return;
        }
        let att = job.attestation.unwrap();
        let slot = att.attestors.iter().find(|a| a.validator == me).unwrap();
        let step = if !att.revealing && slot.commit.is_empty() {
            let digest = job.result.unwrap().digest;
            Some(pb::job_vote::Step::Commit(
                commitment(1, &digest, &me, true, &SEGMENTS_DIGEST, &SALT).to_vec(),
            ))
        } else if att.revealing && !slot.revealed {
            Some(pb::job_vote::Step::Reveal(pb::Reveal {
                matches: true,
                segments_digest: SEGMENTS_DIGEST.to_vec(),
                salt: SALT.to_vec(),
                score_json: String::new(),
            }))
        } else {
            None
        };
        let txs = match step {
            Some(step) => vec![injected(
                chain,
                validator,
                vec![pb::JobVote {
                    job_id: 1,
                    step: Some(step),
                    evaluation_id: 0,
                }],
            )],
            None => vec![],
        };
        chain.block(&txs);
    }
    panic!("job 1 did not become final");
}

/// Runs empty blocks until no purchase is open (the setup's training key requests close when
/// due), so a later block changes only what its own txs change.
fn settle(chain: &mut dyn Chain) {
    for _ in 0..100 {
        if chain
            .node()
            .storage()
            .open_purchase_ids()
            .unwrap()
            .is_empty()
        {
            return;
        }
        chain.block(&[]);
    }
    panic!("purchases still open");
}

/// A listing of model version 1 whose two ciphertexts are encrypted under `key`; `salt` makes
/// the ciphertexts new.
fn publication(key: &DataKey, price: u128, salt: u8) -> pb::PublishModel {
    let encrypt = |plain: Vec<u8>| {
        let mut ct = Vec::new();
        neurodata_crypto::stream::encrypt(plain.as_slice(), &mut ct, key, 1024).unwrap();
        ct
    };
    let model = encrypt(vec![salt; 300]);
    let onnx = encrypt(vec![salt.wrapping_add(1); 200]);
    pb::PublishModel {
        model_version: 1,
        price: price.to_string(),
        license: "CC-BY-4.0".into(),
        intended_use: "screening research, not diagnosis".into(),
        model_cid: Cid::of(&model).to_string(),
        onnx_cid: Cid::of(&onnx).to_string(),
        key_commitment: key.commitment().to_vec(),
        model_ciphertext_size: model.len() as u64,
        onnx_ciphertext_size: onnx.len() as u64,
        location: "https://gw.org1.example:27008".into(),
        card: None,
    }
}

fn balance(n: &TestNode, a: Address) -> u128 {
    n.balance(a)
}

fn purchase_status(storage: &Storage, id: u64) -> pb::PurchaseStatus {
    let p = storage.purchase(id).unwrap().unwrap();
    pb::PurchaseStatus::try_from(p.status).unwrap()
}

#[test]
fn a_model_sale_pays_the_owner_the_reward_pool_and_each_provider_by_the_royalty_rule() {
    let (c, validator) = consortium();
    let mut n = TestNode::start(&c);
    final_model(&c, &validator, &mut n);
    let who = cast(&c);
    let supply = n.storage().supply().unwrap();

    // The card is the chain's: lineage, spec, metrics and hashes from its records.
    let key = DataKey::generate().unwrap();
    let o = n.ok(
        &who.owner,
        vec![msg::publish_model(publication(&key, PRICE, 1))],
    );
    assert!(o.events.iter().any(|e| e.kind == "model.published"));
    let listing = n.storage().model_listing(1).unwrap().unwrap();
    let card = listing.card.clone().unwrap();
    let lineage: Vec<_> = card
        .datasets
        .iter()
        .map(|d| (d.dataset_id, d.provider_org.as_str(), d.rows))
        .collect();
    assert_eq!(lineage, [(1, "org0", ROWS_A), (2, "org2", ROWS_B)]);
    assert_eq!(
        (card.owner_org.as_str(), card.trainer_org.as_str()),
        ("org1", "org2")
    );
    assert_eq!(
        (card.algorithm.as_str(), card.target.as_str()),
        ("logistic_regression", "target")
    );
    assert_eq!(card.model_sha256, vec![1; 32]);
    assert_eq!(card.onnx_plain_cid, cid(2));
    assert_eq!(card.metrics_json, r#"{"accuracy":0.5}"#);
    assert_eq!(listing.owner, who.owner.address().0.to_vec());

    // Bought and escrowed, with the royalties fixed as it opens.
    let buyer = c.signer(0, Role::Buyer);
    n.ok(&buyer, vec![msg::buy_model(1, Amount(PRICE))]);
    let id = n
        .storage()
        .live_mark(&buyer.address(), neurodata_abci::escrow::Item::Model(1))
        .unwrap()
        .unwrap();
    let p = n.storage().purchase(id).unwrap().unwrap();
    assert_eq!((p.dataset_id, p.model_listing), (0, 1));
    assert_eq!(p.provider_org, "org1");
    assert_eq!(p.price, PRICE.to_string());
    let (royalty_a, royalty_b) = expected_royalties(PRICE);
    assert_eq!((royalty_a, royalty_b), (750, 250));
    let royalties: Vec<_> = p
        .royalties
        .iter()
        .map(|r| (r.dataset_id, r.to.clone(), r.amount.clone()))
        .collect();
    assert_eq!(
        royalties,
        [
            (
                1,
                who.provider_a.address().0.to_vec(),
                royalty_a.to_string()
            ),
            (
                2,
                who.provider_b.address().0.to_vec(),
                royalty_b.to_string()
            ),
        ]
    );
    assert_eq!(balance(&n, escrow_account()), PRICE);

    // The owner org delivers the listing's key; the buyer unwraps it and confirms.
    let wrapped = wrap::wrap(&key, &spki(&c, 0, Role::Buyer)).unwrap();
    n.ok(
        &who.owner_provider,
        vec![msg::deliver_key(id, buyer.address(), wrapped.to_bytes())],
    );
    let delivered = n.storage().purchase(id).unwrap().unwrap();
    let got = wrap::unwrap(
        &wrap::WrappedKey::parse(&delivered.wrapped_key).unwrap(),
        &c.orgs[0].members[&Role::Buyer].key,
    )
    .unwrap();
    assert_eq!(got.commitment().to_vec(), listing.key_commitment);

    let accounts = [
        who.owner.address(),
        who.provider_a.address(),
        who.provider_b.address(),
        Address::reward_pool(),
        buyer.address(),
    ];
    let before: Vec<u128> = accounts.iter().map(|a| balance(&n, *a)).collect();
    n.ok(&buyer, vec![msg::confirm(id)]);
    let after: Vec<u128> = accounts.iter().map(|a| balance(&n, *a)).collect();
    let fee = fee_of(Amount(PRICE), FEE_BPS).0;
    assert_eq!(fee, 200);
    let to_owner = PRICE - fee - royalty_a - royalty_b;
    assert_eq!(to_owner, 8_800);
    let tx_fee = 1;
    assert_eq!(
        after,
        [
            before[0] + to_owner,
            before[1] + royalty_a,
            before[2] + royalty_b,
            before[3] + fee + tx_fee,
            before[4] - tx_fee,
        ],
        "owner, provider of dataset 1, provider of dataset 2, reward pool, buyer"
    );
    assert_eq!(balance(&n, escrow_account()), 0);
    assert_eq!(n.storage().supply().unwrap(), supply);

    // Usage stats: the model's and each dataset's royalties.
    let stats = n.storage().model_stats(1).unwrap();
    assert_eq!((stats.purchases, stats.paid, stats.refunded), (1, 1, 0));
    assert_eq!(
        (stats.revenue.as_str(), stats.royalties.as_str()),
        ("8800", "1000")
    );
    let a = n.storage().dataset_stats(1).unwrap();
    let b = n.storage().dataset_stats(2).unwrap();
    assert_eq!((a.royalties.as_str(), a.model_sales), ("750", 1));
    assert_eq!((b.royalties.as_str(), b.model_sales), ("250", 1));
    assert_eq!((a.derived_models, b.derived_models), (1, 1));
}

#[test]
fn refunds_and_wrong_key_disputes_return_the_whole_price_and_pay_no_royalty() {
    let (c, validator) = consortium();
    let mut t = Twin::start(&c);
    final_model(&c, &validator, &mut t);
    let who = cast(&c);
    let key = DataKey::generate().unwrap();
    t.ok(
        &who.owner,
        vec![msg::publish_model(publication(&key, PRICE, 1))],
    );
    let (buyer, trainer) = (c.signer(0, Role::Buyer), c.signer(2, Role::Trainer));
    t.ok(&buyer, vec![msg::buy_model(1, Amount(PRICE))]);
    t.ok(&trainer, vec![msg::buy_model(1, Amount(PRICE))]);
    let first = t.a.storage().next_purchase_id().unwrap() - 2;
    let (p_buyer, p_trainer) = (first, first + 1);
    let providers = [who.provider_a.address(), who.provider_b.address()];
    let before: Vec<u128> = providers.iter().map(|a| t.a.balance(*a)).collect();

    // The buyer's key is wrong, and proven so against the listing's commitment.
    let wrong = wrap::wrap(&DataKey::generate().unwrap(), &spki(&c, 0, Role::Buyer)).unwrap();
    t.ok(
        &who.owner_provider,
        vec![msg::deliver_key(p_buyer, buyer.address(), wrong.to_bytes())],
    );
    let buyer_before = t.a.balance(buyer.address());
    let proof = dleq::prove(&wrong, &c.orgs[0].members[&Role::Buyer].key).unwrap();
    t.ok(&buyer, vec![msg::dispute(p_buyer, proof.to_bytes())]);
    assert_eq!(
        purchase_status(t.a.storage(), p_buyer),
        pb::PurchaseStatus::WrongKeyRefunded
    );
    assert_eq!(t.a.balance(buyer.address()), buyer_before + PRICE - 1);

    // The right key cannot be disputed.
    let right = wrap::wrap(&key, &spki(&c, 2, Role::Trainer)).unwrap();
    t.ok(
        &who.owner_provider,
        vec![msg::deliver_key(
            p_trainer,
            trainer.address(),
            right.to_bytes(),
        )],
    );
    let proof = dleq::prove(&right, &c.orgs[2].members[&Role::Trainer].key).unwrap();
    t.reject_signed(
        &trainer,
        vec![msg::dispute(p_trainer, proof.to_bytes())],
        "escrow",
        111,
    );
    let trainer_escrowed = t.a.balance(escrow_account());
    assert_eq!(trainer_escrowed, PRICE);

    // A purchase whose key never comes is refunded in full when due.
    let silent_buyer = c.signer(0, Role::Trainer);
    t.ok(&silent_buyer, vec![msg::buy_model(1, Amount(PRICE))]);
    let silent = t.a.storage().next_purchase_id().unwrap() - 1;
    let due = t.a.storage().purchase(silent).unwrap().unwrap().due_height;
    let silent_before = t.a.balance(silent_buyer.address());
    while t.a.height < due {
        t.apply(&[]);
    }
    assert_eq!(
        purchase_status(t.a.storage(), silent),
        pb::PurchaseStatus::Refunded
    );
    assert_eq!(t.a.balance(silent_buyer.address()), silent_before + PRICE);

    // Neither refund paid a royalty; the trainer's purchase was released in silence meanwhile,
    // and paid exactly one round of royalties.
    assert_eq!(
        purchase_status(t.a.storage(), p_trainer),
        pb::PurchaseStatus::Released
    );
    let (royalty_a, royalty_b) = expected_royalties(PRICE);
    let after: Vec<u128> = providers.iter().map(|a| t.a.balance(*a)).collect();
    assert_eq!(after, [before[0] + royalty_a, before[1] + royalty_b]);
    let stats = t.a.storage().model_stats(1).unwrap();
    assert_eq!((stats.purchases, stats.paid, stats.refunded), (3, 1, 2));
    assert_eq!(t.a.storage().dataset_stats(1).unwrap().model_sales, 1);
    assert_eq!(t.a.balance(escrow_account()), 0);
}

/// A change to a claimed model card.
type CardChange = fn(&mut pb::ModelCard);

#[test]
fn every_bad_model_action_is_refused_and_changes_nothing() {
    let (c, validator) = consortium();
    let mut t = Twin::start(&c);
    final_model(&c, &validator, &mut t);
    settle(&mut t);
    let who = cast(&c);
    let key = DataKey::generate().unwrap();
    let good = publication(&key, PRICE, 1);

    // Not final (a job without a model version has none to publish), not yours.
    let o = t.reject_signed(
        &who.owner,
        vec![msg::publish_model(pb::PublishModel {
            model_version: 2,
            ..good.clone()
        })],
        "models",
        140,
    );
    assert!(o.log.contains("final"), "{}", o.log);
    t.reject_signed(
        &c.signer(0, Role::Buyer),
        vec![msg::publish_model(good.clone())],
        "models",
        141,
    );
    t.reject_signed(
        &c.signer(1, Role::Trainer),
        vec![msg::publish_model(good.clone())],
        "models",
        141,
    );
    t.reject_signed(
        &c.signer(1, Role::Validator),
        vec![msg::publish_model(good.clone())],
        "membership",
        30,
    );

    // Malformed: one CID for both ciphertexts, a short key commitment, a tiny ciphertext.
    let mut bad = good.clone();
    bad.onnx_cid = bad.model_cid.clone();
    t.reject_signed(&who.owner, vec![msg::publish_model(bad)], "tx", 11);
    let mut bad = good.clone();
    bad.key_commitment.pop();
    t.reject_signed(&who.owner, vec![msg::publish_model(bad)], "tx", 11);
    let mut bad = good.clone();
    bad.onnx_ciphertext_size = 36;
    t.reject_signed(&who.owner, vec![msg::publish_model(bad)], "tx", 11);

    // A card claim that differs from the chain in any fact names the field.
    let chain_card = model_card(t.a.storage(), 1, &good.intended_use, &good.license).unwrap();
    let claims: Vec<(&str, CardChange)> = vec![
        ("model_version", (|c| c.model_version = 2)),
        ("job_id", (|c| c.job_id = 7)),
        (
            "datasets",
            (|c| {
                c.datasets.pop();
            }),
        ),
        ("datasets[0].rows", (|c| c.datasets[0].rows = 9_999)),
        (
            "datasets[1].provider_org",
            (|c| c.datasets[1].provider_org = "org1".into()),
        ),
        (
            "datasets[0].title",
            (|c| c.datasets[0].title = "cleaner data".into()),
        ),
        (
            "datasets[1].plaintext_sha256",
            (|c| c.datasets[1].plaintext_sha256 = vec![0; 32]),
        ),
        ("algorithm", (|c| c.algorithm = "mlp".into())),
        ("spec_json", (|c| c.spec_json.push(' '))),
        (
            "metrics_json",
            (|c| c.metrics_json = r#"{"accuracy":0.99}"#.into()),
        ),
        ("model_sha256", (|c| c.model_sha256 = vec![2; 32])),
        ("onnx_plain_cid", (|c| c.onnx_plain_cid = cid(9))),
        ("owner_org", (|c| c.owner_org = "org0".into())),
        ("trainer_org", (|c| c.trainer_org = "org1".into())),
        ("target", (|c| c.target = "age".into())),
        ("license", (|c| c.license = "MIT".into())),
        ("intended_use", (|c| c.intended_use = "diagnosis".into())),
    ];
    for (field, change) in &claims {
        let mut claimed = chain_card.clone();
        change(&mut claimed);
        let o = t.reject_signed(
            &who.owner,
            vec![msg::publish_model(pb::PublishModel {
                card: Some(Box::new(claimed)),
                ..good.clone()
            })],
            "models",
            142,
        );
        assert!(
            o.log.contains(&format!("claims {field} =")),
            "{field}: {}",
            o.log
        );
    }

    // The ciphertexts or the key of a dataset of the org.
    let dataset_key = DataKey::generate().unwrap();
    // The model version's own plaintext artifact named as a ciphertext.
    t.reject_signed(
        &who.owner,
        vec![msg::publish_model(pb::PublishModel {
            onnx_cid: cid(2),
            ..good.clone()
        })],
        "models",
        153,
    );
    let dataset = listing(&dataset_key, "5", 9);
    t.ok(
        &who.owner_provider,
        vec![msg::register_dataset(dataset.clone())],
    );
    t.reject_signed(
        &who.owner,
        vec![msg::publish_model(pb::PublishModel {
            model_cid: dataset.cid.clone(),
            ..good.clone()
        })],
        // The holder's codespace: a dataset holds it (crate::market::require_unused_ciphertexts).
        "market",
        81,
    );
    t.reject_signed(
        &who.owner,
        vec![msg::publish_model(pb::PublishModel {
            key_commitment: dataset_key.commitment().to_vec(),
            ..good.clone()
        })],
        "market",
        88,
    );

    // The claim that matches is accepted (with intended_use and license left to the message).
    let mut claimed = chain_card.clone();
    claimed.intended_use.clear();
    claimed.license.clear();
    t.ok(
        &who.owner,
        vec![msg::publish_model(pb::PublishModel {
            card: Some(Box::new(claimed)),
            ..good.clone()
        })],
    );
    // One open listing per model version; its ciphertexts and key are taken.
    let fresh = publication(&DataKey::generate().unwrap(), PRICE, 2);
    t.reject_signed(&who.owner, vec![msg::publish_model(fresh)], "models", 143);
    // Nor may a dataset of the org reuse the model's key: its buyers would be handed it.
    t.reject_signed(
        &who.owner_provider,
        vec![msg::register_dataset(pb::RegisterDataset {
            key_commitment: good.key_commitment.clone(),
            ..listing(&DataKey::generate().unwrap(), "5", 10)
        })],
        "models",
        145,
    );

    // Buying: own org's model, max_price below the price, an unknown listing, twice.
    t.reject_signed(
        &c.signer(1, Role::Trainer),
        vec![msg::buy_model(1, Amount(PRICE))],
        "models",
        149,
    );
    let buyer = c.signer(0, Role::Buyer);
    t.reject_signed(
        &buyer,
        vec![msg::buy_model(1, Amount(PRICE - 1))],
        "models",
        150,
    );
    t.reject_signed(
        &buyer,
        vec![msg::buy_model(9, Amount(PRICE))],
        "models",
        146,
    );
    t.ok(&buyer, vec![msg::buy_model(1, Amount(PRICE))]);
    t.reject_signed(
        &buyer,
        vec![msg::buy_model(1, Amount(PRICE))],
        "models",
        151,
    );

    // Changing a listing: only its owner side; a delisted one is not for sale.
    t.reject_signed(
        &c.signer(2, Role::Admin),
        vec![msg::update_model_price(1, Amount(1))],
        "models",
        147,
    );
    t.ok(
        &c.signer(1, Role::Admin),
        vec![msg::update_model_price(1, Amount(PRICE / 2))],
    );
    t.ok(&who.owner, vec![msg::delist_model(1)]);
    t.reject_signed(
        &c.signer(2, Role::Buyer),
        vec![msg::buy_model(1, Amount(PRICE))],
        "models",
        148,
    );
    t.reject_signed(&who.owner, vec![msg::delist_model(1)], "models", 148);
    // Delisted, the model version may be listed again (with new ciphertexts and key); the open
    // purchase of the old listing still completes.
    t.ok(
        &who.owner,
        vec![msg::publish_model(publication(
            &DataKey::generate().unwrap(),
            7,
            3,
        ))],
    );
    assert_eq!(t.a.storage().open_listing_of(1).unwrap(), Some(2));
}

#[test]
fn model_listings_are_browsed_by_owner_dataset_and_price() {
    use neurodata_abci::query::{self, BuyerDataset, OrgCid, Query};
    let (c, validator) = consortium();
    let mut n = TestNode::start(&c);
    final_model(&c, &validator, &mut n);
    let who = cast(&c);
    let published = publication(&DataKey::generate().unwrap(), PRICE, 1);
    n.ok(&who.owner, vec![msg::publish_model(published.clone())]);
    let buyer = c.signer(0, Role::Buyer);
    n.ok(&buyer, vec![msg::buy_model(1, Amount(PRICE))]);
    let ask = |q: Query| {
        let r = n
            .node
            .query(tendermint::abci::request::Query {
                data: q.data().into(),
                path: q.path().into(),
                height: 0u32.into(),
                prove: false,
            })
            .unwrap();
        assert_eq!(r.code.value(), 0, "{}", r.log);
        r.value
    };
    let ids = |f: pb::ModelListingFilter| {
        pb::ModelListingList::decode(ask(query::model_listings(f).query))
            .unwrap()
            .listings
            .iter()
            .map(|l| l.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(Default::default()), [1]);
    let f = |owner_org: &str, dataset_id, max_price: &str| pb::ModelListingFilter {
        owner_org: owner_org.into(),
        dataset_id,
        max_price: max_price.into(),
        include_delisted: false,
        verified_only: false,
    };
    assert_eq!(ids(f("org1", 2, &PRICE.to_string())), [1]);
    assert!(ids(f("org0", 0, "")).is_empty());
    assert!(ids(f("", 3, "")).is_empty(), "not trained on dataset 3");
    assert!(ids(f("", 0, "9999")).is_empty());
    let by_cid = ask(query::model_listing_by_cid(OrgCid {
        org: "org1".into(),
        cid: published.onnx_cid.clone(),
    })
    .query);
    assert_eq!(by_cid.as_ref(), 1u64.to_be_bytes());
    let live = ask(query::live_model_purchase(BuyerDataset {
        buyer: buyer.address(),
        dataset: 1,
    })
    .query);
    let purchase = u64::from_be_bytes(live.as_ref().try_into().unwrap());
    let mine = pb::PurchaseList::decode(ask(query::purchases(pb::PurchaseFilter {
        model_listing: 1,
        ..Default::default()
    })
    .query))
    .unwrap();
    assert_eq!(
        mine.purchases.iter().map(|p| p.id).collect::<Vec<_>>(),
        [purchase]
    );
    // A model mark is not a dataset mark: the buyer holds no purchase of dataset 1.
    assert_eq!(
        n.storage().live_purchase(&buyer.address(), 1).unwrap(),
        None
    );
    let stats = pb::ModelStats::decode(ask(query::model_stats(1).query)).unwrap();
    assert_eq!(stats.purchases, 1);
}

#[test]
fn a_royalty_above_100_percent_alone_or_with_the_market_fee_is_refused_and_changes_nothing() {
    use pb::proposal_action::Action as A;
    let (c, _) = consortium();
    let mut t = Twin::start(&c);
    let admin = c.signer(0, Role::Admin);
    let with = |market_fee_bps, model_royalty_bps| {
        let mut p = pb::Params::from(&t.a.storage().params().unwrap());
        p.market_fee_bps = market_fee_bps;
        p.model_royalty_bps = model_royalty_bps;
        msg::propose("royalties", A::SetParams(p))
    };
    let (over, sum_over, whole) = (with(0, 10_001), with(200, 9_801), with(200, 9_800));
    let o = t.reject_signed(&admin, vec![over], "governance", 205);
    assert!(o.log.contains("model_royalty_bps"), "{}", o.log);
    let o = t.reject_signed(&admin, vec![sum_over], "governance", 207);
    assert!(
        o.log.contains("market_fee_bps 200") && o.log.contains("model_royalty_bps 9801"),
        "{}",
        o.log
    );
    // Fee and royalties may take the whole price together: the owner then gets nothing.
    t.ok(&admin, vec![whole]);
    assert_eq!(t.a.storage().params().unwrap().model_royalty_bps, 1_000);
}

/// Adds a validator of power 10 for each org in `orgs`, operated by the org's validator member,
/// through governance (org0 proposes, org1 and org2 approve).
fn add_validators(c: &Consortium, chain: &mut dyn Chain, orgs: &[usize]) {
    use pb::proposal_action::Action as A;
    for &org in orgs {
        let mut key = [0u8; 32];
        openssl::rand::rand_bytes(&mut key).unwrap();
        let next = chain.node().storage().next_proposal_id().unwrap();
        chain.ok(
            &c.signer(0, Role::Admin),
            vec![msg::propose(
                "validator",
                A::SetValidator(pb::SetValidator {
                    pub_key: key.to_vec(),
                    power: 10,
                    org_id: c.orgs[org].id.clone(),
                    name: format!("v-org{org}"),
                    operators: vec![c.signer(org, Role::Validator).address().0.to_vec()],
                }),
            )],
        );
        for voter in [1, 2] {
            chain.ok(&c.signer(voter, Role::Admin), vec![msg::vote(next, true)]);
        }
    }
}

/// Findings about listing `listing`: every one true, or the ONNX export's false (junk
/// encrypted under the right key: the ciphertexts match their CIDs, the model file its hash).
fn findings(listing: u64, onnx_matches: bool) -> pb::Message {
    msg::attest_model_listing(pb::AttestModelListing {
        listing_id: listing,
        ciphertexts_match_cids: true,
        model_matches: true,
        onnx_matches,
    })
}

/// Org `org`'s validator operator asks for listing `listing`'s key and the owner org delivers
/// it; returns the validation purchase.
fn validation_key(
    c: &Consortium,
    chain: &mut dyn Chain,
    key: &DataKey,
    listing: u64,
    org: usize,
) -> u64 {
    let operator = c.signer(org, Role::Validator);
    chain.ok(&operator, vec![msg::request_model_validation(listing)]);
    let id = chain
        .node()
        .storage()
        .live_mark(
            &operator.address(),
            neurodata_abci::escrow::Item::Model(listing),
        )
        .unwrap()
        .unwrap();
    let wrapped = wrap::wrap(key, &spki(c, org, Role::Validator)).unwrap();
    chain.ok(
        &cast(c).owner_provider,
        vec![msg::deliver_key(id, operator.address(), wrapped.to_bytes())],
    );
    id
}

/// Model version 1 listed by org1 with three validator orgs of power 10 each (org0's from
/// genesis, org1's and org2's added), nothing else open: returns the listing's key.
fn listed_before_three_validators(
    c: &Consortium,
    validator: &PKey<Private>,
    chain: &mut dyn Chain,
) -> DataKey {
    final_model(c, validator, chain);
    settle(chain);
    add_validators(c, chain, &[1, 2]);
    let key = DataKey::generate().unwrap();
    chain.ok(
        &cast(c).owner,
        vec![msg::publish_model(publication(&key, PRICE, 1))],
    );
    key
}

#[test]
fn a_model_listing_is_verified_by_validators_holding_more_than_two_thirds_of_the_power() {
    let (c, validator) = consortium();
    let mut n = TestNode::start(&c);
    let key = listed_before_three_validators(&c, &validator, &mut n);
    let listing = n.storage().model_listing(1).unwrap().unwrap();
    assert!(!listing.verified && listing.attestations.is_empty());

    // Each validator org asks for the key like a buyer; no money moves, a slot is held.
    let escrowed = n.balance(escrow_account());
    let purchases: Vec<u64> = (0..3)
        .map(|org| validation_key(&c, &mut n, &key, 1, org))
        .collect();
    let p = n.storage().purchase(purchases[0]).unwrap().unwrap();
    assert_eq!(p.kind, pb::PurchaseKind::Validation as i32);
    assert_eq!((p.dataset_id, p.model_listing), (0, 1));
    assert_eq!((p.provider_org.as_str(), p.price.as_str()), ("org1", "0"));
    assert_eq!(n.balance(escrow_account()), escrowed);
    assert_eq!(n.storage().open_validations("org0").unwrap(), 1);
    assert_eq!(
        n.storage().model_stats(1).unwrap().purchases,
        0,
        "a validation request is not a sale"
    );

    // org0 and org1 attest positive: 20 of 30 is not more than two thirds.
    n.ok(&c.signer(0, Role::Validator), vec![findings(1, true)]);
    n.ok(&c.signer(1, Role::Validator), vec![findings(1, true)]);
    // org2 found junk in the ONNX export: still unverified.
    let o = n.ok(&c.signer(2, Role::Validator), vec![findings(1, false)]);
    let event = o
        .events
        .iter()
        .find(|e| e.kind == "model.attested")
        .unwrap();
    assert_eq!(
        (
            event.get("org"),
            event.get("positive"),
            event.get("verified")
        ),
        (Some("org2"), Some("false"), Some("false"))
    );
    let l = n.storage().model_listing(1).unwrap().unwrap();
    assert!(!l.verified, "20 of 30 is not > 2/3");
    let orgs: Vec<(&str, bool, bool)> = l
        .attestations
        .iter()
        .map(|a| (a.org_id.as_str(), a.positive, a.onnx_matches))
        .collect();
    assert_eq!(
        orgs,
        [
            ("org0", true, true),
            ("org1", true, true),
            ("org2", false, false)
        ]
    );
    // org2 checks again and corrects itself (one attestation per org, the latest).
    let o = n.ok(&c.signer(2, Role::Validator), vec![findings(1, true)]);
    let event = o
        .events
        .iter()
        .find(|e| e.kind == "model.attested")
        .unwrap();
    assert_eq!(event.get("verified"), Some("true"));
    let l = n.storage().model_listing(1).unwrap().unwrap();
    assert!(l.verified);
    assert_eq!(l.verified_height, n.height);
    assert_eq!(l.attestations.len(), 3);
    assert_eq!(
        l.attestations[2].validator,
        c.signer(2, Role::Validator).address().0.to_vec()
    );

    // Confirming frees the slot; the key stays the operator's, so it may still attest.
    n.ok(
        &c.signer(0, Role::Validator),
        vec![msg::confirm(purchases[0])],
    );
    assert_eq!(n.storage().open_validations("org0").unwrap(), 0);
    assert_eq!(n.balance(escrow_account()), escrowed);
    n.ok(&c.signer(0, Role::Validator), vec![findings(1, true)]);
}

#[test]
fn a_listing_attested_negative_stays_unverified_and_the_chain_still_sells_it() {
    let (c, validator) = consortium();
    let mut t = Twin::start(&c);
    let key = listed_before_three_validators(&c, &validator, &mut t);
    for org in 0..3 {
        validation_key(&c, &mut t, &key, 1, org);
        t.ok(&c.signer(org, Role::Validator), vec![findings(1, false)]);
    }
    let l = t.a.storage().model_listing(1).unwrap().unwrap();
    assert!(!l.verified);
    assert_eq!(l.verified_height, 0);
    assert!(
        l.attestations
            .iter()
            .all(|a| !a.positive && a.ciphertexts_match_cids && a.model_matches && !a.onnx_matches),
        "{:?}",
        l.attestations
    );
    // Like an unverified dataset, an unverified listing is for sale on chain; `ndctl model buy`
    // refuses it unless told --unverified, and `install` checks the files before confirming.
    t.ok(
        &c.signer(0, Role::Buyer),
        vec![msg::buy_model(1, Amount(PRICE))],
    );
}

#[test]
fn every_bad_validation_request_or_attestation_of_a_listing_is_refused_and_changes_nothing() {
    let (mut c, validator) = consortium();
    c.params.max_open_validations_per_org = 2;
    let mut t = Twin::start(&c);
    final_model(&c, &validator, &mut t);
    settle(&mut t);
    let who = cast(&c);
    let key = DataKey::generate().unwrap();
    t.ok(
        &who.owner,
        vec![msg::publish_model(publication(&key, PRICE, 1))],
    );
    let (op0, op1) = (c.signer(0, Role::Validator), c.signer(1, Role::Validator));

    // Both a dataset and a listing named: refused before anything is read.
    let both = pb::Message {
        action: Some(pb::message::Action::RequestValidation(
            pb::RequestValidation {
                dataset_id: 1,
                model_listing_id: 1,
            },
        )),
    };
    let o = t.reject_signed(&op0, vec![both], "tx", 11);
    assert!(o.log.contains("not both"), "{}", o.log);
    // No such listing.
    t.reject_signed(&op0, vec![msg::request_model_validation(9)], "models", 146);
    t.reject_signed(&op0, vec![findings(9, true)], "models", 146);
    // Not a validator member; a validator member of an org that operates no validator.
    t.reject_signed(
        &c.signer(0, Role::Buyer),
        vec![msg::request_model_validation(1)],
        "membership",
        30,
    );
    t.reject_signed(
        &c.signer(0, Role::Buyer),
        vec![findings(1, true)],
        "membership",
        30,
    );
    t.reject_signed(&op1, vec![msg::request_model_validation(1)], "market", 86);
    t.reject_signed(&op1, vec![findings(1, true)], "market", 86);
    // An operator without the key: none asked for, then asked for but not delivered yet.
    let o = t.reject_signed(&op0, vec![findings(1, true)], "models", 155);
    assert!(o.log.contains("RequestValidation"), "{}", o.log);
    t.ok(&op0, vec![msg::request_model_validation(1)]);
    let request =
        t.a.storage()
            .live_mark(&op0.address(), neurodata_abci::escrow::Item::Model(1))
            .unwrap()
            .unwrap();
    t.reject_signed(&op0, vec![findings(1, true)], "models", 155);
    // A second request while the first is open.
    t.reject_signed(&op0, vec![msg::request_model_validation(1)], "models", 151);
    // The org's quota of open validation requests (2): one dataset's request and the listing's.
    let dataset_key = DataKey::generate().unwrap();
    t.ok(
        &who.provider_a,
        vec![msg::register_dataset(listing(&dataset_key, "5", 7))],
    );
    let dataset = t.a.storage().next_dataset_id().unwrap() - 1;
    t.ok(&op0, vec![msg::request_validation(dataset)]);
    let wrapped = wrap::wrap(&key, &spki(&c, 0, Role::Validator)).unwrap();
    t.ok(
        &who.owner_provider,
        vec![msg::deliver_key(request, op0.address(), wrapped.to_bytes())],
    );
    // Verified: nothing left to request. (org0 holds all the power.)
    t.ok(&op0, vec![findings(1, true)]);
    assert!(t.a.storage().model_listing(1).unwrap().unwrap().verified);
    t.ok(&op0, vec![msg::confirm(request)]);
    t.reject_signed(&op0, vec![msg::request_model_validation(1)], "models", 154);
    // A second listing of the model version (after a delisting): the quota, then delisted.
    t.ok(&who.owner, vec![msg::delist_model(1)]);
    t.reject_signed(&op0, vec![findings(1, true)], "models", 148);
    t.reject_signed(&op0, vec![msg::request_model_validation(1)], "models", 148);
    let second = DataKey::generate().unwrap();
    t.ok(
        &who.owner,
        vec![msg::publish_model(publication(&second, PRICE, 2))],
    );
    let dataset_key = DataKey::generate().unwrap();
    t.ok(
        &who.provider_a,
        vec![msg::register_dataset(listing(&dataset_key, "5", 8))],
    );
    t.ok(&op0, vec![msg::request_validation(dataset + 1)]);
    let o = t.reject_signed(&op0, vec![msg::request_model_validation(2)], "escrow", 113);
    assert!(o.log.contains("max_open_validations_per_org"), "{}", o.log);
}

/// One step of a random sequence of model sales; `purchase` picks one of the sales so far (by
/// index, modulo their number).
#[derive(Clone, Debug)]
enum Op {
    Buy { buyer: usize },
    Deliver { purchase: u64, right: bool },
    Confirm { purchase: u64 },
    Refund { purchase: u64 },
    Dispute { purchase: u64 },
    Wait { blocks: u64 },
    Reprice { price: u64 },
    Relist { price: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..4).prop_map(|buyer| Op::Buy { buyer }),
        3 => (0u64..16, any::<bool>()).prop_map(|(purchase, right)| Op::Deliver { purchase, right }),
        2 => (0u64..16).prop_map(|purchase| Op::Confirm { purchase }),
        1 => (0u64..16).prop_map(|purchase| Op::Refund { purchase }),
        2 => (0u64..16).prop_map(|purchase| Op::Dispute { purchase }),
        2 => (1u64..8).prop_map(|blocks| Op::Wait { blocks }),
        1 => (0u64..50_000).prop_map(|price| Op::Reprice { price }),
        1 => (0u64..50_000).prop_map(|price| Op::Relist { price }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]
    /// Over random model sales, deliveries (right and wrong keys), confirmations, refunds,
    /// disputes, price changes, relistings and blocks: the supply is constant, the escrow holds
    /// exactly the prices of open purchases (nothing when none is open), every royalty is what
    /// the rule gives, and every account's balance is what a model of the rule predicts —
    /// buyers pay prices and get refunds, owners get price - fee - royalties, the reward pool
    /// fees, each provider exactly the royalties of paid sales.
    #[test]
    fn model_sales_conserve_every_coin_and_pay_royalties_by_the_rule(
        ops in proptest::collection::vec(op(), 1..30)
    ) {
        let (c, validator) = consortium();
        let mut n = TestNode::start(&c);
        final_model(&c, &validator, &mut n);
        let who = cast(&c);
        let supply = n.storage().supply().unwrap();
        let first_key = DataKey::generate().unwrap();
        n.ok(&who.owner, vec![msg::publish_model(publication(&first_key, PRICE, 1))]);
        // Keys by listing id.
        let mut keys: BTreeMap<u64, DataKey> = BTreeMap::from([(1, first_key)]);
        let mut listing = 1u64;
        let members = [(0, Role::Buyer), (0, Role::Trainer), (2, Role::Buyer), (2, Role::Trainer)];
        let buyers: Vec<Signer> = members.iter().map(|(o, r)| c.signer(*o, *r)).collect();
        let buyer_keys: Vec<_> = members
            .iter()
            .map(|(o, r)| (spki(&c, *o, *r), c.orgs[*o].members[r].key.clone()))
            .collect();
        // Every purchase before this one is of the setup (datasets, training keys), all closed
        // or moneyless.
        let first_sale = n.storage().next_purchase_id().unwrap();
        let start: BTreeMap<Address, u128> = n.storage().accounts().unwrap().iter()
            .map(|a| (Address::from_slice(&a.address).unwrap(), a.balance.parse().unwrap()))
            .collect();
        let mut fees: BTreeMap<Address, u128> = BTreeMap::new();
        let mut salt = 10u8;
        for op in ops {
            let sale = |n: &TestNode, i: u64| {
                let count = n.storage().next_purchase_id().unwrap() - first_sale;
                (count > 0).then(|| n.storage().purchase(first_sale + i % count).unwrap().unwrap())
            };
            let (signer, msgs) = match &op {
                Op::Buy { buyer } => (&buyers[*buyer], vec![msg::buy_model(listing, Amount(u128::MAX))]),
                Op::Deliver { purchase, right } => {
                    let Some(p) = sale(&n, *purchase) else { continue };
                    let b = buyers.iter().position(|s| s.address().0.as_slice() == p.buyer).unwrap();
                    let k = if *right { keys[&p.model_listing].clone() } else { DataKey::generate().unwrap() };
                    let wrapped = wrap::wrap(&k, &buyer_keys[b].0).unwrap().to_bytes();
                    (&who.owner_provider, vec![msg::deliver_key(p.id, buyers[b].address(), wrapped)])
                }
                Op::Confirm { purchase } | Op::Refund { purchase } | Op::Dispute { purchase } => {
                    let Some(p) = sale(&n, *purchase) else { continue };
                    let b = buyers.iter().position(|s| s.address().0.as_slice() == p.buyer).unwrap();
                    let m = match op {
                        Op::Confirm { .. } => msg::confirm(p.id),
                        Op::Refund { .. } => msg::refund(p.id),
                        _ => {
                            let Ok(w) = wrap::WrappedKey::parse(&p.wrapped_key) else { continue };
                            msg::dispute(p.id, dleq::prove(&w, &buyer_keys[b].1).unwrap().to_bytes())
                        }
                    };
                    (&buyers[b], vec![m])
                }
                Op::Wait { blocks } => {
                    for _ in 0..*blocks {
                        n.block(&[]);
                    }
                    (&who.owner, vec![])
                }
                Op::Reprice { price } => {
                    (&who.owner, vec![msg::update_model_price(listing, Amount(u128::from(*price)))])
                }
                Op::Relist { price } => {
                    salt = salt.wrapping_add(1);
                    let k = DataKey::generate().unwrap();
                    let next = n.storage().next_listing_id().unwrap();
                    let o = n.run(&who.owner, vec![msg::delist_model(listing)]);
                    *fees.entry(who.owner.address()).or_default() += 1;
                    prop_assert_eq!(o.code, 0, "{}", o.log);
                    keys.insert(next, k.clone());
                    listing = next;
                    (&who.owner, vec![msg::publish_model(publication(&k, u128::from(*price), salt))])
                }
            };
            if !msgs.is_empty() {
                let o = n.run(signer, msgs);
                // A tx pays its fee when it succeeds and when only its messages fail.
                if o.events.iter().any(|e| e.kind == "fee.paid") {
                    *fees.entry(signer.address()).or_default() += 1;
                }
                if matches!(op, Op::Relist { .. }) {
                    prop_assert_eq!(o.code, 0, "{}", o.log);
                }
            }

            prop_assert_eq!(n.storage().supply().unwrap(), supply);
            let sales: Vec<pb::Purchase> = n.storage().purchases().unwrap().into_iter()
                .filter(|p| p.id >= first_sale)
                .collect();
            let is_open = |p: &pb::Purchase| matches!(
                pb::PurchaseStatus::try_from(p.status).unwrap(),
                pb::PurchaseStatus::AwaitingKey | pb::PurchaseStatus::KeyDelivered);
            let escrowed: u128 = sales.iter().filter(|p| is_open(p))
                .map(|p| p.price.parse::<u128>().unwrap()).sum();
            prop_assert_eq!(n.balance(escrow_account()), escrowed);
            if !sales.iter().any(is_open) {
                prop_assert_eq!(n.balance(escrow_account()), 0, "escrow empty when nothing is open");
            }
            // The balance model: start, minus tx fees, plus the flows of every sale.
            let mut expected = start.clone();
            for (a, f) in &fees {
                *expected.get_mut(a).unwrap() -= f;
                *expected.entry(Address::reward_pool()).or_default() += f;
            }
            let mut royalties_of: BTreeMap<u64, u128> = BTreeMap::new();
            for p in &sales {
                prop_assert!(p.model_listing != 0 && p.dataset_id == 0, "only model sales here");
                let price: u128 = p.price.parse().unwrap();
                let fee: u128 = p.fee.parse().unwrap();
                prop_assert_eq!(fee, fee_of(Amount(price), FEE_BPS).0);
                // Every royalty is the rule's, to the provider of its dataset.
                let (a, b) = expected_royalties(price);
                let want: Vec<(u64, Vec<u8>, String)> = [
                    (1, who.provider_a.address(), a),
                    (2, who.provider_b.address(), b),
                ]
                .into_iter()
                .filter(|(_, _, amount)| *amount > 0)
                .map(|(d, to, amount)| (d, to.0.to_vec(), amount.to_string()))
                .collect();
                let got: Vec<(u64, Vec<u8>, String)> = p.royalties.iter()
                    .map(|r| (r.dataset_id, r.to.clone(), r.amount.clone()))
                    .collect();
                prop_assert_eq!(got, want, "royalties of purchase {}", p.id);
                let buyer = Address::from_slice(&p.buyer).unwrap();
                *expected.get_mut(&buyer).unwrap() -= price;
                match pb::PurchaseStatus::try_from(p.status).unwrap() {
                    pb::PurchaseStatus::Confirmed | pb::PurchaseStatus::Released => {
                        let royalties = a + b;
                        *expected.entry(Address::from_slice(&p.provider).unwrap()).or_default() +=
                            price - fee - royalties;
                        *expected.entry(who.provider_a.address()).or_default() += a;
                        *expected.entry(who.provider_b.address()).or_default() += b;
                        *royalties_of.entry(1).or_default() += a;
                        *royalties_of.entry(2).or_default() += b;
                        *expected.entry(Address::reward_pool()).or_default() += fee;
                    }
                    pb::PurchaseStatus::Refunded | pb::PurchaseStatus::WrongKeyRefunded => {
                        *expected.get_mut(&buyer).unwrap() += price;
                    }
                    _ => *expected.entry(escrow_account()).or_default() += price,
                }
            }
            for (a, want) in &expected {
                prop_assert_eq!(n.balance(*a), *want, "balance of {}", a);
            }
            // Each dataset's stats count exactly the royalties paid for it.
            for d in [1u64, 2] {
                let stats = n.storage().dataset_stats(d).unwrap();
                let earned: u128 = if stats.royalties.is_empty() { 0 } else { stats.royalties.parse().unwrap() };
                prop_assert_eq!(earned, royalties_of.get(&d).copied().unwrap_or(0));
            }
            for p in sales.iter().filter(|p| is_open(p)) {
                prop_assert!(n.height < p.due_height, "purchase {} open past due", p.id);
            }
        }
    }
}
