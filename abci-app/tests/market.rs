//! The marketplace and escrow end to end on in-process nodes: listings, purchases, key delivery
//! with real wrapped keys, confirmations, refunds, wrong-key disputes, the end-of-block sweep,
//! validation, browse queries; every refusal the issue lists; and property tests of the money.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{Consortium, START_BALANCE, TestNode, Twin, listing};
use neurodata_abci::address::Address;
use neurodata_abci::amount::Amount;
use neurodata_abci::escrow::{EscrowRead, escrow_account, fee_of};
use neurodata_abci::ledger::LedgerRead;
use neurodata_abci::market::MarketRead;
use neurodata_certs::Role;
use neurodata_client::msg;
use neurodata_crypto::{DataKey, dleq, wrap};
use neurodata_proto::chain::v1 as pb;
use proptest::prelude::*;

const PRICE: u128 = 10_000;

fn spki(c: &Consortium, org: usize, role: Role) -> Vec<u8> {
    c.orgs[org].members[&role]
        .cert
        .public_key()
        .unwrap()
        .public_key_to_der()
        .unwrap()
}

fn addr(c: &Consortium, org: usize, role: Role) -> Address {
    c.signer(org, role).address()
}

fn purchase(n: &TestNode, id: u64) -> pb::Purchase {
    n.storage().purchase(id).unwrap().unwrap()
}

fn status(n: &TestNode, id: u64) -> pb::PurchaseStatus {
    pb::PurchaseStatus::try_from(purchase(n, id).status).unwrap()
}

#[test]
fn a_sale_escrows_delivers_a_working_key_and_pays_the_provider_minus_the_fee() {
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let key = DataKey::generate().unwrap();
    let provider = c.signer(0, Role::Provider);
    let buyer = c.signer(1, Role::Buyer);
    let supply = n.storage().supply().unwrap();

    let o = n.ok(
        &provider,
        vec![msg::register_dataset(listing(&key, "10000", 1))],
    );
    assert!(o.events.iter().any(|e| e.kind == "dataset.registered"));
    let d = n.storage().dataset(1).unwrap().unwrap();
    assert_eq!((d.provider_org.as_str(), d.rows), ("org0", 2));

    n.ok(&buyer, vec![msg::buy(1, Amount(PRICE))]);
    assert_eq!(n.balance(escrow_account()), PRICE);
    assert_eq!(n.balance(buyer.address()), START_BALANCE - PRICE - 1);
    assert_eq!(status(&n, 1), pb::PurchaseStatus::AwaitingKey);

    let wrapped = wrap::wrap(&key, &spki(&c, 1, Role::Buyer)).unwrap();
    n.ok(
        &provider,
        vec![msg::deliver_key(1, buyer.address(), wrapped.to_bytes())],
    );
    let p = purchase(&n, 1);
    assert_eq!(status(&n, 1), pb::PurchaseStatus::KeyDelivered);
    let got = wrap::unwrap(
        &wrap::WrappedKey::parse(&p.wrapped_key).unwrap(),
        &c.orgs[1].members[&Role::Buyer].key,
    )
    .unwrap();
    assert_eq!(got.commitment().to_vec(), d.key_commitment);

    let pool_before = n.balance(Address::reward_pool());
    n.ok(&buyer, vec![msg::confirm(1)]);
    let fee = fee_of(Amount(PRICE), 200).0;
    assert_eq!(fee, 200);
    assert_eq!(n.balance(escrow_account()), 0);
    assert_eq!(
        n.balance(provider.address()),
        START_BALANCE - 2 + PRICE - fee,
        "provider paid two tx fees and got the price minus the market fee"
    );
    assert_eq!(n.balance(Address::reward_pool()), pool_before + fee + 1);
    assert_eq!(status(&n, 1), pb::PurchaseStatus::Confirmed);
    let stats = n.storage().dataset_stats(1).unwrap();
    assert_eq!((stats.purchases, stats.paid, stats.refunded), (1, 1, 0));
    assert_eq!(stats.revenue, (PRICE - fee).to_string());
    assert_eq!(n.storage().supply().unwrap(), supply);
}

#[test]
fn every_bad_market_action_is_refused_and_changes_nothing() {
    let c = Consortium::new(3, 1);
    let mut t = Twin::start(&c);
    let key = DataKey::generate().unwrap();
    let provider = c.signer(0, Role::Provider);
    let buyer = c.signer(1, Role::Buyer);
    let other_buyer = c.signer(2, Role::Buyer);
    let first = listing(&key, "10000", 1);
    t.ok(&provider, vec![msg::register_dataset(first.clone())]);

    // Malformed schema, unknown column type, bad CID, bad digests, price overflow.
    let mut bad = listing(&key, "5", 2);
    bad.schema = Some(pb::Schema { columns: vec![] });
    t.reject_signed(&provider, vec![msg::register_dataset(bad)], "market", 89);
    let mut bad = listing(&key, "5", 3);
    bad.schema = None;
    t.reject_signed(&provider, vec![msg::register_dataset(bad)], "market", 82);
    let mut bad = listing(&key, "5", 3);
    bad.schema.as_mut().unwrap().columns[0].r#type = 42;
    t.reject_signed(&provider, vec![msg::register_dataset(bad)], "market", 92);
    let mut bad = listing(&key, "5", 4);
    bad.cid = "Qm-not-a-cid".into();
    t.reject_signed(&provider, vec![msg::register_dataset(bad)], "tx", 11);
    let mut bad = listing(&key, "5", 5);
    bad.key_commitment = vec![1; 31];
    t.reject_signed(&provider, vec![msg::register_dataset(bad)], "tx", 11);
    let overflow = "340282366920938463463374607431768211456"; // 2^128
    t.reject_signed(
        &provider,
        vec![msg::register_dataset(listing(&key, overflow, 6))],
        "tx",
        11,
    );
    // The same ciphertext twice; a buyer may not list.
    t.reject_signed(&provider, vec![msg::register_dataset(first)], "market", 81);
    t.reject_signed(
        &buyer,
        vec![msg::register_dataset(listing(&key, "1", 7))],
        "membership",
        30,
    );

    // Unknown dataset, own org, price above max, price beyond any balance.
    t.reject_signed(&buyer, vec![msg::buy(99, Amount(PRICE))], "market", 80);
    t.reject_signed(
        &c.signer(0, Role::Buyer),
        vec![msg::buy(1, Amount(PRICE))],
        "escrow",
        101,
    );
    t.reject_signed(&buyer, vec![msg::buy(1, Amount(PRICE - 1))], "escrow", 103);
    t.ok(
        &provider,
        vec![msg::register_dataset(listing(
            &DataKey::generate().unwrap(),
            &u128::MAX.to_string(),
            8,
        ))],
    );
    t.reject_signed(&buyer, vec![msg::buy(2, Amount(u128::MAX))], "ledger", 40);

    // Double purchase.
    t.ok(&buyer, vec![msg::buy(1, Amount(PRICE))]);
    t.reject_signed(&buyer, vec![msg::buy(1, Amount(PRICE))], "escrow", 102);

    // Confirm before the key, by a non-buyer; refund before the window; delivery by another
    // org, with a malformed wrapping.
    t.reject_signed(&buyer, vec![msg::confirm(1)], "escrow", 106);
    t.reject_signed(&other_buyer, vec![msg::confirm(1)], "escrow", 104);
    t.reject_signed(&buyer, vec![msg::refund(1)], "escrow", 108);
    let wrapped = wrap::wrap(&key, &spki(&c, 1, Role::Buyer))
        .unwrap()
        .to_bytes();
    t.reject_signed(
        &c.signer(2, Role::Provider),
        vec![msg::deliver_key(1, buyer.address(), wrapped.clone())],
        "escrow",
        105,
    );
    t.reject_signed(
        &provider,
        vec![msg::deliver_key(1, buyer.address(), wrapped[..50].to_vec())],
        "escrow",
        109,
    );
    t.reject_signed(
        &provider,
        vec![msg::deliver_key(7, buyer.address(), wrapped.clone())],
        "escrow",
        100,
    );

    // Past the delivery window: late delivery refused, refund allowed, delivery after the
    // refund refused.
    for _ in 0..5 {
        t.apply(&[]);
    }
    t.reject_signed(
        &provider,
        vec![msg::deliver_key(1, buyer.address(), wrapped.clone())],
        "escrow",
        107,
    );
    // Refunds and disputes: the buyer or an admin of the buyer's org.
    t.reject_signed(&other_buyer, vec![msg::refund(1)], "escrow", 114);
    t.ok(&buyer, vec![msg::refund(1)]);
    assert_eq!(status(&t.a, 1), pb::PurchaseStatus::Refunded);
    t.reject_signed(
        &provider,
        vec![msg::deliver_key(1, buyer.address(), wrapped)],
        "escrow",
        106,
    );
    t.reject_signed(&buyer, vec![msg::refund(1)], "escrow", 106);
    assert_eq!(t.a.balance(escrow_account()), 0);
    // A refunded buyer may buy again.
    t.ok(&buyer, vec![msg::buy(1, Amount(PRICE))]);

    // Price changes and delisting: only the provider side.
    t.reject_signed(
        &c.signer(2, Role::Provider),
        vec![msg::update_price(1, Amount(1))],
        "market",
        83,
    );
    t.ok(
        &c.signer(0, Role::Admin),
        vec![msg::update_price(1, Amount(1))],
    );
    t.ok(&provider, vec![msg::delist(1)]);
    t.reject_signed(&other_buyer, vec![msg::buy(1, Amount(1))], "market", 84);
    t.reject_signed(&provider, vec![msg::delist(1)], "market", 84);
}

#[test]
fn a_wrong_key_is_proven_on_chain_and_refunded_and_a_right_key_cannot_be_disputed() {
    let c = Consortium::new(2, 1);
    let mut t = Twin::start(&c);
    let key = DataKey::generate().unwrap();
    let provider = c.signer(0, Role::Provider);
    let buyer = c.signer(1, Role::Buyer);
    let buyer_key = &c.orgs[1].members[&Role::Buyer].key;
    // Dataset 1 gets a wrong key anyway; dataset 2 is listed under `key`.
    t.ok(
        &provider,
        vec![msg::register_dataset(listing(
            &DataKey::generate().unwrap(),
            "10000",
            1,
        ))],
    );
    t.ok(
        &provider,
        vec![msg::register_dataset(listing(&key, "10000", 2))],
    );
    t.ok(&buyer, vec![msg::buy(1, Amount(PRICE))]);
    t.ok(&buyer, vec![msg::buy(2, Amount(PRICE))]);

    // Purchase 1 gets a wrong key.
    let wrong = wrap::wrap(&DataKey::generate().unwrap(), &spki(&c, 1, Role::Buyer)).unwrap();
    t.ok(
        &provider,
        vec![msg::deliver_key(1, buyer.address(), wrong.to_bytes())],
    );
    let before = t.a.balance(buyer.address());
    // A proof made with someone else's key does not verify.
    let forged = dleq::prove(&wrong, &c.orgs[1].members[&Role::Admin].key).unwrap();
    t.reject_signed(
        &buyer,
        vec![msg::dispute(1, forged.to_bytes())],
        "escrow",
        110,
    );
    t.reject_signed(&buyer, vec![msg::dispute(1, vec![0; 12])], "tx", 11);
    let proof = dleq::prove(&wrong, buyer_key).unwrap();
    let o = t.ok(&buyer, vec![msg::dispute(1, proof.to_bytes())]);
    assert!(o.events.iter().any(|e| e.kind == "purchase.dispute_upheld"));
    assert_eq!(status(&t.a, 1), pb::PurchaseStatus::WrongKeyRefunded);
    // The refused forged dispute paid its fee too (the malformed one was refused before it
    // could be charged).
    assert_eq!(t.a.balance(buyer.address()), before + PRICE - 2);

    // Purchase 2 gets the right key: disputing it fails.
    let right = wrap::wrap(&key, &spki(&c, 1, Role::Buyer)).unwrap();
    t.ok(
        &provider,
        vec![msg::deliver_key(2, buyer.address(), right.to_bytes())],
    );
    let proof = dleq::prove(&right, buyer_key).unwrap();
    t.reject_signed(
        &buyer,
        vec![msg::dispute(2, proof.to_bytes())],
        "escrow",
        111,
    );
    assert_eq!(t.a.balance(escrow_account()), PRICE);
}

#[test]
fn purchases_close_by_themselves_when_due() {
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let key = DataKey::generate().unwrap();
    let provider = c.signer(0, Role::Provider);
    let buyer = c.signer(1, Role::Buyer);
    let trainer = c.signer(1, Role::Trainer);
    n.ok(
        &provider,
        vec![msg::register_dataset(listing(&key, "10000", 1))],
    );
    n.ok(&buyer, vec![msg::buy(1, Amount(PRICE))]); // never delivered
    n.ok(&trainer, vec![msg::buy(1, Amount(PRICE))]); // delivered, never confirmed
    let wrapped = wrap::wrap(&key, &spki(&c, 1, Role::Trainer)).unwrap();
    n.ok(
        &provider,
        vec![msg::deliver_key(2, trainer.address(), wrapped.to_bytes())],
    );
    let (due1, due2) = (purchase(&n, 1).due_height, purchase(&n, 2).due_height);
    let provider_before = n.balance(provider.address());
    let mut closed = vec![];
    while n.height < due1.max(due2) {
        let b = n.block(&[]);
        closed.extend(
            b.block_events
                .iter()
                .filter(|e| e.kind == "purchase.closed")
                .map(|e| (n.height, e.get("status").unwrap().to_owned())),
        );
        for id in [1, 2] {
            let p = purchase(&n, id);
            let open = matches!(
                status(&n, id),
                pb::PurchaseStatus::AwaitingKey | pb::PurchaseStatus::KeyDelivered
            );
            assert!(
                !open || n.height < p.due_height,
                "purchase {id} open past due"
            );
        }
    }
    let mut expected = vec![
        (due1, "PURCHASE_STATUS_REFUNDED".to_owned()),
        (due2, "PURCHASE_STATUS_RELEASED".to_owned()),
    ];
    expected.sort();
    assert_eq!(closed, expected);
    assert_eq!(n.balance(escrow_account()), 0);
    assert_eq!(n.balance(buyer.address()), START_BALANCE - 1);
    assert_eq!(n.balance(provider.address()), provider_before + PRICE - 200);
}

#[test]
fn a_dataset_is_verified_by_more_than_two_thirds_of_validator_power() {
    let c = Consortium::new(3, 3);
    let mut n = TestNode::start(&c);
    let key = DataKey::generate().unwrap();
    n.ok(
        &c.signer(0, Role::Provider),
        vec![msg::register_dataset(listing(&key, "1", 1))],
    );
    let attest = |rows| {
        msg::attest(pb::AttestDataset {
            dataset_id: 1,
            ciphertext_matches_cid: true,
            plaintext_matches: true,
            rows,
            schema_matches: true,
        })
    };
    // A validator asks for the key like a buyer; no money moves.
    n.ok(
        &c.signer(1, Role::Validator),
        vec![msg::request_validation(1)],
    );
    assert_eq!(purchase(&n, 1).kind, pb::PurchaseKind::Validation as i32);
    assert_eq!(n.balance(escrow_account()), 0);

    n.ok(&c.signer(0, Role::Validator), vec![attest(2)]);
    n.ok(&c.signer(1, Role::Validator), vec![attest(3)]); // wrong row count: negative
    n.ok(&c.signer(2, Role::Validator), vec![attest(2)]);
    assert!(
        !n.storage().dataset(1).unwrap().unwrap().verified,
        "20 of 30 is not > 2/3"
    );
    n.ok(&c.signer(1, Role::Validator), vec![attest(2)]); // org1 corrects itself
    let d = n.storage().dataset(1).unwrap().unwrap();
    assert!(d.verified);
    assert_eq!(d.attestations.len(), 3);
    // A buyer cannot attest.
    let o = n.run(&c.signer(1, Role::Buyer), vec![attest(2)]);
    assert_eq!((o.codespace, o.code), ("membership", 30));
}

#[test]
fn browse_and_purchase_queries_filter_on_the_node() {
    use neurodata_abci::query::{self, Query};
    use prost::Message as _;
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let key = DataKey::generate().unwrap();
    let p0 = c.signer(0, Role::Provider);
    n.ok(&p0, vec![msg::register_dataset(listing(&key, "100", 1))]);
    let other = DataKey::generate().unwrap();
    n.ok(&p0, vec![msg::register_dataset(listing(&other, "900", 2))]);
    n.ok(&c.signer(1, Role::Buyer), vec![msg::buy(2, Amount(900))]);
    let query = |q: Query| {
        let (path, data) = (q.path(), q.data());
        let r = n
            .node
            .query(tendermint::abci::request::Query {
                data: data.into(),
                path: path.into(),
                height: 0u32.into(),
                prove: false,
            })
            .unwrap();
        assert_eq!(r.code.value(), 0, "{}", r.log);
        r.value
    };
    let cheap = pb::DatasetList::decode(query(
        query::datasets(pb::DatasetFilter {
            max_price: "500".into(),
            column: "chol".into(),
            ..Default::default()
        })
        .query,
    ))
    .unwrap();
    assert_eq!(
        cheap.datasets.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![1]
    );
    let mine = pb::PurchaseList::decode(query(
        query::purchases(pb::PurchaseFilter {
            buyer: addr(&c, 1, Role::Buyer).0.to_vec(),
            ..Default::default()
        })
        .query,
    ))
    .unwrap();
    assert_eq!(mine.purchases.len(), 1);
    assert_eq!(mine.purchases[0].dataset_id, 2);
    let stats = pb::DatasetStats::decode(query(query::dataset_stats(2).query)).unwrap();
    assert_eq!(stats.purchases, 1);
}

/// One market action in a random sequence.
#[derive(Clone, Debug)]
enum Op {
    List { price: u64 },
    Buy { dataset: u64, buyer: usize },
    Deliver { purchase: u64, right: bool },
    Confirm { purchase: u64 },
    Refund { purchase: u64 },
    Dispute { purchase: u64 },
    Wait { blocks: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..5_000).prop_map(|price| Op::List { price }),
        (1u64..4, 0usize..3).prop_map(|(dataset, buyer)| Op::Buy { dataset, buyer }),
        (1u64..6, any::<bool>()).prop_map(|(purchase, right)| Op::Deliver { purchase, right }),
        (1u64..6).prop_map(|purchase| Op::Confirm { purchase }),
        (1u64..6).prop_map(|purchase| Op::Refund { purchase }),
        (1u64..6).prop_map(|purchase| Op::Dispute { purchase }),
        (1u64..8).prop_map(|blocks| Op::Wait { blocks }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Supply is constant; the escrow holds exactly the prices of open sales; every closed sale's
    /// price went to exactly one of provider (+ pool fee) or buyer, as a model of the balances
    /// predicts; no purchase is open past its due height.
    #[test]
    fn escrow_conserves_every_coin_and_nothing_stays_open(ops in proptest::collection::vec(op(), 1..30)) {
        let c = Consortium::new(2, 1);
        let mut n = TestNode::start(&c);
        let supply = n.storage().supply().unwrap();
        let provider = c.signer(0, Role::Provider);
        let buyers = [c.signer(1, Role::Buyer), c.signer(1, Role::Trainer), c.signer(0, Role::Buyer)];
        let buyer_keys: Vec<_> = [(1, Role::Buyer), (1, Role::Trainer), (0, Role::Buyer)]
            .iter().map(|(o, r)| (spki(&c, *o, *r), c.orgs[*o].members[r].key.clone())).collect();
        let mut keys: BTreeMap<u64, DataKey> = BTreeMap::new();
        // Model: expected balance changes from tx fees alone (prices are checked per purchase).
        let mut fees: BTreeMap<Address, u128> = BTreeMap::new();
        let start: BTreeMap<Address, u128> = n.storage().accounts().unwrap().iter()
            .map(|a| (Address::from_slice(&a.address).unwrap(), a.balance.parse().unwrap())).collect();
        let mut salt = 0u8;
        for op in ops {
            let (signer, msgs) = match &op {
                Op::List { price } => {
                    salt = salt.wrapping_add(1);
                    let k = DataKey::generate().unwrap();
                    let id = n.storage().next_dataset_id().unwrap();
                    keys.insert(id, k.clone());
                    (&provider, vec![msg::register_dataset(listing(&k, &price.to_string(), salt))])
                }
                Op::Buy { dataset, buyer } => (&buyers[*buyer], vec![msg::buy(*dataset, Amount(u128::MAX))]),
                Op::Deliver { purchase, right } => {
                    let Some(p) = n.storage().purchase(*purchase).unwrap() else { continue };
                    let b = buyers.iter().position(|s| s.address().0.as_slice() == p.buyer).unwrap();
                    let k = if *right { keys[&p.dataset_id].clone() } else { DataKey::generate().unwrap() };
                    (&provider, vec![msg::deliver_key(*purchase, buyers[b].address(), wrap::wrap(&k, &buyer_keys[b].0).unwrap().to_bytes())])
                }
                Op::Confirm { purchase } | Op::Refund { purchase } | Op::Dispute { purchase } => {
                    let Some(p) = n.storage().purchase(*purchase).unwrap() else { continue };
                    let b = buyers.iter().position(|s| s.address().0.as_slice() == p.buyer).unwrap();
                    let m = match op {
                        Op::Confirm { .. } => msg::confirm(*purchase),
                        Op::Refund { .. } => msg::refund(*purchase),
                        _ => {
                            let Ok(w) = wrap::WrappedKey::parse(&p.wrapped_key) else { continue };
                            msg::dispute(*purchase, dleq::prove(&w, &buyer_keys[b].1).unwrap().to_bytes())
                        }
                    };
                    (&buyers[b], vec![m])
                }
                Op::Wait { blocks } => {
                    for _ in 0..*blocks { n.block(&[]); }
                    (&provider, vec![])
                }
            };
            if !msgs.is_empty() {
                let o = n.run(signer, msgs);
                // A tx pays its fee when it succeeds and when only its messages fail.
                if o.events.iter().any(|e| e.kind == "fee.paid") {
                    *fees.entry(signer.address()).or_default() += 1;
                }
            }
            prop_assert_eq!(n.storage().supply().unwrap(), supply);
            let purchases = n.storage().purchases().unwrap();
            let open: Vec<_> = purchases.iter().filter(|p| matches!(
                pb::PurchaseStatus::try_from(p.status).unwrap(),
                pb::PurchaseStatus::AwaitingKey | pb::PurchaseStatus::KeyDelivered)).collect();
            let escrowed: u128 = open.iter().map(|p| p.price.parse::<u128>().unwrap()).sum();
            prop_assert_eq!(n.balance(escrow_account()), escrowed);
            for p in &open {
                prop_assert!(n.height < p.due_height, "purchase {} open at {} past due {}", p.id, n.height, p.due_height);
            }
            // Balance model: start - tx fees - prices paid + payouts.
            let mut expected = start.clone();
            for (a, f) in &fees {
                *expected.get_mut(a).unwrap() -= f;
                *expected.entry(Address::reward_pool()).or_default() += f;
            }
            for p in &purchases {
                let price: u128 = p.price.parse().unwrap();
                let fee: u128 = p.fee.parse().unwrap();
                let buyer = Address::from_slice(&p.buyer).unwrap();
                *expected.get_mut(&buyer).unwrap() -= price;
                let to = match pb::PurchaseStatus::try_from(p.status).unwrap() {
                    pb::PurchaseStatus::Confirmed | pb::PurchaseStatus::Released => {
                        *expected.entry(Address::from_slice(&p.provider).unwrap()).or_default() += price - fee;
                        *expected.entry(Address::reward_pool()).or_default() += fee;
                        continue;
                    }
                    pb::PurchaseStatus::Refunded | pb::PurchaseStatus::WrongKeyRefunded => buyer,
                    _ => escrow_account(),
                };
                *expected.entry(to).or_default() += price;
            }
            for (a, want) in &expected {
                prop_assert_eq!(n.balance(*a), *want, "balance of {}", a);
            }
        }
    }
}

#[test]
fn previews_are_requested_once_per_member_of_another_org_and_only_where_offered() {
    use neurodata_abci::query::{BuyerDataset, Query};
    use prost::Message as _;
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let key = DataKey::generate().unwrap();
    let p0 = c.signer(0, Role::Provider);
    // Listing rules: a preview needs a rows root and fits the dataset and the cap.
    let mut offered = listing(&key, "100", 1);
    offered.preview_rows = 2;
    let o = n.run(&p0, vec![msg::register_dataset(offered.clone())]);
    assert_eq!((o.codespace, o.code), ("tx", 11), "{}", o.log);
    assert!(o.log.contains("rows root"), "{}", o.log);
    offered.rows_root = vec![7; 32];
    offered.preview_rows = 3;
    let o = n.run(&p0, vec![msg::register_dataset(offered.clone())]);
    assert!(
        o.log.contains("at most"),
        "more rows than the dataset: {}",
        o.log
    );
    offered.preview_rows = 2;
    offered.format = pb::DataFormat::JsonLines as i32;
    n.ok(&p0, vec![msg::register_dataset(offered)]);
    let d = n.storage().dataset(1).unwrap().unwrap();
    assert_eq!(
        (d.preview_rows, d.rows_root.len(), d.format),
        (2, 32, pb::DataFormat::JsonLines as i32)
    );
    let other = DataKey::generate().unwrap();
    n.ok(&p0, vec![msg::register_dataset(listing(&other, "100", 2))]);

    let buyer = c.signer(1, Role::Buyer);
    // No previews offered; the provider's own org; a role that does not buy.
    let o = n.run(&buyer, vec![msg::request_preview(2)]);
    assert_eq!((o.codespace, o.code), ("market", 93), "{}", o.log);
    let o = n.run(&c.signer(0, Role::Buyer), vec![msg::request_preview(1)]);
    assert_eq!((o.codespace, o.code), ("market", 95), "{}", o.log);
    let o = n.run(&c.signer(1, Role::Validator), vec![msg::request_preview(1)]);
    assert_eq!(o.codespace, "membership", "{}", o.log);

    // Recorded once, readable through the query table.
    let done = n.ok(&buyer, vec![msg::request_preview(1)]);
    let o = n.run(&buyer, vec![msg::request_preview(1)]);
    assert_eq!((o.codespace, o.code), ("market", 94), "{}", o.log);
    let q = Query::PreviewRequest(BuyerDataset {
        buyer: buyer.address(),
        dataset: 1,
    });
    let r = n
        .node
        .query(tendermint::abci::request::Query {
            data: q.data().into(),
            path: q.path().into(),
            height: 0u32.into(),
            prove: false,
        })
        .unwrap();
    let request = pb::PreviewRequest::decode(r.value).unwrap();
    assert_eq!(
        (
            request.dataset_id,
            request.rows,
            request.requester_org.as_str()
        ),
        (1, 2, "org1")
    );
    assert_eq!(request.requester, buyer.address().0.to_vec());
    assert!(request.height > 0 && done.code == 0);
}
