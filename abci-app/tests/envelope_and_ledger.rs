//! Ledger transfers and every way a transaction envelope can be bad. Each rejection is checked to
//! change nothing (see `Twin::reject`).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::*;
use neurodata_abci::address::Address;
use neurodata_abci::ledger::LedgerRead;
use neurodata_certs::Role;
use neurodata_client::{Amount, TxParams, msg};
use neurodata_proto::chain::v1 as pb;
use prost::Message as _;

fn sign_raw(signer: &neurodata_client::Signer, body_bytes: Vec<u8>) -> Vec<u8> {
    signer.sign_bytes(body_bytes).unwrap()
}

#[test]
fn transfer_moves_funds_and_pays_the_fee_to_the_reward_pool() {
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let alice = c.signer(0, Role::Buyer);
    let bob = c.signer(1, Role::Provider);
    let o = n.ok(&alice, vec![msg::transfer(bob.address(), Amount(250))]);
    assert_eq!(n.balance(alice.address()), START_BALANCE - 250 - 1);
    assert_eq!(n.balance(bob.address()), START_BALANCE + 250);
    assert_eq!(n.balance(Address::reward_pool()), 1);
    let kinds: Vec<_> = o.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["identity.registered", "fee.paid", "nrc.transfer"]);
    assert_eq!(n.storage().account(&alice.address()).unwrap().nonce, 1);
    // Second tx: the certificate is known now and need not be attached.
    n.ok(&alice, vec![msg::transfer(bob.address(), Amount(1))]);
}

#[test]
fn malformed_bytes_are_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    t.reject(b"\xff\xff\xff not protobuf".to_vec(), "tx", 2);
    // A valid Tx envelope whose body is garbage.
    let tx = pb::Tx {
        body: vec![0xff, 0x01],
        signature: vec![1],
    }
    .encode_to_vec();
    t.reject(tx, "tx", 2);
}

#[test]
fn unknown_message_type_is_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    t.reject_signed(&s, vec![pb::Message { action: None }], "tx", 4);
}

#[test]
fn empty_and_too_many_messages_are_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    t.reject_signed(&s, vec![], "tx", 5);
    let nine = (0..9)
        .map(|_| msg::transfer(s.address(), Amount(1)))
        .collect();
    t.reject_signed(&s, nine, "tx", 5);
}

#[test]
fn wrong_chain_id_is_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    let tx = s
        .sign(
            TxParams {
                chain_id: "another-chain".into(),
                nonce: 0,
                fee: Amount(1),
                attach_certificate: true,
                memo: String::new(),
            },
            vec![msg::transfer(s.address(), Amount(1))],
        )
        .unwrap();
    let o = t.reject(tx, "tx", 6);
    assert!(o.log.contains("another-chain"), "{}", o.log);
}

#[test]
fn bad_signature_is_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    let other = c.signer(0, Role::Provider);
    let good =
        t.a.sign(&s, vec![msg::transfer(other.address(), Amount(5))]);
    // Flip a bit of the signature.
    let mut env = pb::Tx::decode(good.as_slice()).unwrap();
    let last = env.signature.len() - 3;
    env.signature[last] ^= 1;
    t.reject(env.encode_to_vec(), "tx", 7);
    // Someone else's signature over the same body.
    let mut env = pb::Tx::decode(good.as_slice()).unwrap();
    env.signature = pb::Tx::decode(sign_raw(&other, env.body.clone()).as_slice())
        .unwrap()
        .signature;
    t.reject(env.encode_to_vec(), "tx", 7);
    // No signature at all.
    let mut env = pb::Tx::decode(good.as_slice()).unwrap();
    env.signature.clear();
    t.reject(env.encode_to_vec(), "tx", 7);
}

#[test]
fn non_canonical_body_encoding_is_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    let good = t.a.sign(&s, vec![msg::transfer(s.address(), Amount(5))]);
    let env = pb::Tx::decode(good.as_slice()).unwrap();
    // An unknown field (number 15, varint 1) appended: same decoded body, different bytes.
    let mut body = env.body.clone();
    body.extend_from_slice(&[0x78, 0x01]);
    t.reject(sign_raw(&s, body), "tx", 3);
}

#[test]
fn nonce_replay_and_gap_are_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    let to = c.signer(0, Role::Provider).address();
    let first = t.a.sign_with(&s, 0, vec![msg::transfer(to, Amount(5))]);
    assert_eq!(t.apply(std::slice::from_ref(&first)).outcomes[0].code, 0);
    // The exact same bytes again.
    t.reject(first, "tx", 8);
    // A fresh signature over nonce 0.
    let again = t.a.sign_with(&s, 0, vec![msg::transfer(to, Amount(5))]);
    t.reject(again, "tx", 8);
    let gap = t.a.sign_with(&s, 5, vec![msg::transfer(to, Amount(5))]);
    let o = t.reject(gap, "tx", 9);
    assert!(o.log.contains("next nonce is 1"), "{}", o.log);
}

#[test]
fn insufficient_funds_is_rejected_with_what_was_needed() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    let to = c.signer(0, Role::Provider).address();
    let o = t.reject_signed(
        &s,
        vec![msg::transfer(to, Amount(START_BALANCE))],
        "ledger",
        40,
    );
    assert!(
        o.log.contains(&format!("has {} NRC", START_BALANCE - 1)),
        "{}",
        o.log
    );
}

#[test]
fn zero_and_overflowing_amounts_are_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    let to = c.signer(0, Role::Provider).address();
    t.reject_signed(&s, vec![msg::transfer(to, Amount(0))], "ledger", 42);
    let too_big = pb::Message {
        action: Some(pb::message::Action::Transfer(pb::Transfer {
            to: to.0.to_vec(),
            amount: "340282366920938463463374607431768211456".into(),
        })),
    };
    let o = t.reject_signed(&s, vec![too_big], "tx", 11);
    assert!(o.log.contains("overflows u128"), "{}", o.log);
}

#[test]
fn minting_past_u128_is_rejected() {
    // One org, so its admin's proposals pass at once: mint the supply up to u128::MAX, then one
    // more. (No single balance can overflow while supply is conserved: the sum of balances is
    // the supply, so supply is where the overflow check bites.)
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let admin = c.signer(0, Role::Admin);
    let supply = t.a.storage().supply().unwrap().0;
    t.ok(
        &admin,
        vec![msg::propose(
            "mint to the limit",
            pb::proposal_action::Action::Mint(pb::Mint {
                amount: (u128::MAX - supply).to_string(),
            }),
        )],
    );
    assert_eq!(t.a.storage().supply().unwrap().0, u128::MAX);
    let one_more = msg::propose(
        "one more",
        pb::proposal_action::Action::Mint(pb::Mint { amount: "1".into() }),
    );
    let o = t.reject_signed(&admin, vec![one_more], "ledger", 41);
    assert!(o.log.contains("total supply"), "{}", o.log);
}

#[test]
fn fee_below_minimum_is_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    let tx = s
        .sign(
            TxParams {
                chain_id: CHAIN.into(),
                nonce: 0,
                fee: Amount(0),
                attach_certificate: true,
                memo: String::new(),
            },
            vec![msg::transfer(s.address(), Amount(1))],
        )
        .unwrap();
    t.reject(tx, "tx", 10);
}

#[test]
fn oversize_tx_is_rejected_before_decoding() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Admin);
    let huge = msg::revoke(Address([1; 32]), Some(vec![0u8; 20 * 1024]), "x");
    let o = t.reject_signed(&s, vec![huge], "tx", 1);
    assert!(o.log.contains("limit is 16384"), "{}", o.log);
}

#[test]
fn hand_built_body_with_the_right_fields_is_accepted() {
    // The sign bytes are the body's canonical encoding: a body built field by field by another
    // implementation (here: by hand) is accepted when encoded canonically.
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    let body = pb::TxBody {
        chain_id: CHAIN.into(),
        signer: s.address().0.to_vec(),
        nonce: 0,
        fee: "1".into(),
        certificate: s.certificate_der().to_vec(),
        memo: "hand built".into(),
        messages: vec![msg::transfer(s.address(), Amount(3))],
    };
    let tx = sign_raw(&s, body.encode_to_vec());
    assert_eq!(t.apply(&[tx]).outcomes[0].code, 0);
}

#[test]
fn a_proposal_puts_each_signers_txs_in_nonce_order_and_holds_back_gaps_and_reused_nonces() {
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let alice = c.signer(0, Role::Buyer);
    let bob = c.signer(1, Role::Provider);
    n.ok(&bob, vec![msg::transfer(alice.address(), Amount(1))]);
    let pay = |who, nonce, amount| {
        n.sign_with(
            who,
            nonce,
            vec![msg::transfer(bob.address(), Amount(amount))],
        )
    };
    let (a0, a1, a2, a4) = (
        pay(&alice, 0, 10),
        pay(&alice, 1, 11),
        pay(&alice, 2, 12),
        pay(&alice, 4, 14),
    );
    let a1_again = pay(&alice, 1, 99);
    let (b0, b1, b2) = (pay(&bob, 0, 1), pay(&bob, 1, 2), pay(&bob, 2, 3));
    // As a busy node's mempool may list them: alice's 1 before her 0, a gap to 4, a re-signed 1;
    // bob's 0 already committed (a replay), then his 1 and 2.
    let mempool: Vec<bytes::Bytes> = [
        &a1,
        &b0,
        &a0,
        &b1,
        &a4,
        &a1_again,
        &a2,
        &b2,
        &b"junk"[..].to_vec(),
    ]
    .into_iter()
    .map(|t| bytes::Bytes::from(t.clone()))
    .collect();
    let proposed = n.node.in_nonce_order(mempool).unwrap();
    let expect: Vec<bytes::Bytes> = [&a0, &a1, &b1, &a2, &b2]
        .into_iter()
        .map(|t| bytes::Bytes::from(t.clone()))
        .collect();
    assert_eq!(proposed, expect);
    // Every tx of that block succeeds.
    let block: Vec<Vec<u8>> = proposed.iter().map(|b| b.to_vec()).collect();
    let outcomes = n.block(&block).outcomes;
    assert!(outcomes.iter().all(|o| o.code == 0), "{outcomes:?}");
    assert_eq!(n.storage().account(&alice.address()).unwrap().nonce, 3);
}
