//! Hidden evaluation splits end to end on in-process nodes: a provider registers its dataset's
//! split through a real tx; the split is never browsed, bought, previewed, validated, repriced or
//! delisted; every refused registration (and evaluation request without a model) changes nothing
//! but the fee; the evaluation queries answer through the ABCI query path.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{Consortium, TestNode, Twin, listing};
use neurodata_abci::market::MarketRead;
use neurodata_abci::query::{self, Query};
use neurodata_certs::Role;
use neurodata_client::{Amount, msg};
use neurodata_crypto::DataKey;
use neurodata_proto::chain::v1 as pb;
use prost::Message as _;

/// The split of dataset `dataset_id`: a listing's ciphertext and key under its own names.
fn split(dataset_id: u64, key: &DataKey, salt: u8) -> pb::RegisterEvalSplit {
    let l = listing(key, "0", salt);
    pb::RegisterEvalSplit {
        dataset_id,
        cid: l.cid,
        plaintext_sha256: l.plaintext_sha256,
        key_commitment: l.key_commitment,
        size: l.size,
        ciphertext_size: l.ciphertext_size,
        rows: l.rows,
        schema: l.schema,
        format: l.format,
        location: l.location,
    }
}

fn query(n: &TestNode, q: Query) -> Vec<u8> {
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
    r.value.to_vec()
}

/// Two orgs, two validators (one each); org0's provider lists dataset 1 and registers its
/// split, dataset 2.
fn with_split() -> (Consortium, Twin) {
    let c = Consortium::new(2, 2);
    let mut t = Twin::start(&c);
    let provider = c.signer(0, Role::Provider);
    t.ok(
        &provider,
        vec![msg::register_dataset(listing(
            &DataKey::generate().unwrap(),
            "100",
            1,
        ))],
    );
    let o = t.ok(
        &provider,
        vec![msg::register_eval_split(split(
            1,
            &DataKey::generate().unwrap(),
            2,
        ))],
    );
    assert!(
        o.events
            .iter()
            .any(|e| e.kind == "dataset.eval_split_registered")
    );
    (c, t)
}

#[test]
fn a_registered_split_is_hidden_and_refused_wherever_listings_go() {
    let (c, mut t) = with_split();
    let storage = t.a.storage();
    assert_eq!(storage.dataset(1).unwrap().unwrap().evaluation_split, 2);
    let s = storage.dataset(2).unwrap().unwrap();
    assert_eq!(s.status, pb::DatasetStatus::Hidden as i32);
    assert_eq!(s.evaluation_split_of, 1);
    let browse = pb::DatasetList::decode(
        query(
            &t.a,
            query::datasets(pb::DatasetFilter {
                include_delisted: true,
                ..Default::default()
            })
            .query,
        )
        .as_slice(),
    )
    .unwrap();
    assert_eq!(
        browse.datasets.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![1],
        "the split is never browsed"
    );
    let hidden = ("market", 96);
    let refused: Vec<(Role, usize, pb::Message)> = vec![
        (Role::Buyer, 1, msg::buy(2, Amount(0))),
        (Role::Buyer, 1, msg::request_preview(2)),
        (Role::Validator, 1, msg::request_validation(2)),
        (Role::Provider, 0, msg::update_price(2, Amount(5))),
        (Role::Provider, 0, msg::delist(2)),
    ];
    for (role, org, m) in refused {
        let o = t.reject_signed(&c.signer(org, role), vec![m], hidden.0, hidden.1);
        assert!(o.log.contains("hidden evaluation split"), "{}", o.log);
    }
}

#[test]
fn refused_splits_change_nothing_but_the_fee() {
    let (c, mut t) = with_split();
    let provider0 = c.signer(0, Role::Provider);
    // A second split of dataset 1, and a split of the split.
    let key = DataKey::generate().unwrap();
    t.reject_signed(
        &provider0,
        vec![msg::register_eval_split(split(1, &key, 3))],
        "market",
        97,
    );
    t.reject_signed(
        &provider0,
        vec![msg::register_eval_split(split(2, &key, 3))],
        "market",
        96,
    );
    // Dataset 3 without a split: a split whose schema differs, one by another org's provider,
    // one of a dataset that does not exist, one sent by a buyer.
    t.ok(
        &provider0,
        vec![msg::register_dataset(listing(
            &DataKey::generate().unwrap(),
            "100",
            4,
        ))],
    );
    let mut other_schema = split(3, &key, 5);
    if let Some(s) = other_schema.schema.as_mut() {
        s.columns.swap(0, 1);
    }
    let o = t.reject_signed(
        &provider0,
        vec![msg::register_eval_split(other_schema)],
        "market",
        98,
    );
    assert!(o.log.contains("column 0"), "{}", o.log);
    t.reject_signed(
        &c.signer(1, Role::Provider),
        vec![msg::register_eval_split(split(3, &key, 5))],
        "market",
        83,
    );
    t.reject_signed(
        &provider0,
        vec![msg::register_eval_split(split(9, &key, 5))],
        "market",
        80,
    );
    t.reject_signed(
        &c.signer(0, Role::Buyer),
        vec![msg::register_eval_split(split(3, &key, 5))],
        "membership",
        30,
    );
    assert_eq!(
        t.a.storage().dataset(3).unwrap().unwrap().evaluation_split,
        0
    );
}

#[test]
fn evaluations_need_a_model_version_and_the_queries_answer_empty_boards() {
    let (c, mut t) = with_split();
    t.reject_signed(
        &c.signer(1, Role::Buyer),
        vec![msg::request_evaluation(1, 1)],
        "evaluation",
        160,
    );
    let board =
        pb::Leaderboard::decode(query(&t.a, query::leaderboard(1).query).as_slice()).unwrap();
    assert_eq!((board.dataset_id, board.split_id), (1, 2));
    assert!(board.entries.is_empty());
    let all =
        pb::EvaluationList::decode(query(&t.a, query::evaluations().query).as_slice()).unwrap();
    assert!(all.evaluations.is_empty());
    assert!(query(&t.a, query::evaluation(1).query).is_empty());
}
