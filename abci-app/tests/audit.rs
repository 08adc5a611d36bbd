//! The security audit's attacks on the chain (issue: free dataset access through validation
//! requests, a governance vote that halts the chain, rejected txs that cost nothing, malleable tx
//! hashes, stranded funds, a decoy listing with a colleague's key commitment, and the low
//! findings), each replayed against the app and now refused.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{Consortium, START_BALANCE, TestNode, Twin, block_time, listing, validity};
use neurodata_abci::address::Address;
use neurodata_abci::amount::Amount;
use neurodata_abci::escrow::{EscrowRead, escrow_account};
use neurodata_abci::governance::GovernanceRead;
use neurodata_abci::governance::action::MAX_TOTAL_POWER;
use neurodata_abci::ledger::LedgerRead;
use neurodata_abci::market::MarketRead;
use neurodata_abci::membership::MembershipRead;
use neurodata_certs::{Role, Validity};
use neurodata_client::{Signer, TxParams, msg};
use neurodata_crypto::{DataKey, dleq, wrap};
use neurodata_proto::chain::v1 as pb;
use pb::proposal_action::Action as A;
use prost::Message as _;

fn list(n: &mut TestNode, provider: &Signer, salt: u8) -> u64 {
    let key = DataKey::generate().unwrap();
    n.ok(
        provider,
        vec![msg::register_dataset(listing(&key, "100", salt))],
    );
    n.storage().next_dataset_id().unwrap() - 1
}

fn spki(member: &neurodata_certs::Member) -> Vec<u8> {
    member
        .cert
        .public_key()
        .unwrap()
        .public_key_to_der()
        .unwrap()
}

fn signer_of(member: &neurodata_certs::Member) -> Signer {
    Signer::new(&member.cert, member.key.clone()).unwrap()
}

fn set_validator(key: [u8; 32], power: i64, org: &str) -> A {
    A::SetValidator(pb::SetValidator {
        pub_key: key.to_vec(),
        power,
        org_id: org.into(),
        name: "v".into(),
        operators: vec![],
    })
}

fn proposal_status(n: &TestNode, id: u64) -> pb::ProposalStatus {
    pb::ProposalStatus::try_from(n.storage().proposal(id).unwrap().unwrap().status).unwrap()
}

// --- Finding 1: validation rights ---------------------------------------------------------

#[test]
fn a_self_declared_validator_certificate_cannot_request_keys_or_attest() {
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let id = list(&mut n, &c.signer(1, Role::Provider), 1);
    // org0 runs the validator; its admin issues itself another `validator` certificate.
    let rogue = signer_of(
        &c.orgs[0]
            .ca
            .issue("rogue", Role::Validator, validity())
            .unwrap(),
    );
    n.ok(
        &c.signer(0, Role::Buyer),
        vec![msg::transfer(rogue.address(), Amount(10))],
    );
    let o = n.run(&rogue, vec![msg::request_validation(id)]);
    assert_eq!((o.codespace, o.code), ("market", 86), "{}", o.log);
    let attest = msg::attest(pb::AttestDataset {
        dataset_id: id,
        ciphertext_matches_cid: true,
        plaintext_matches: true,
        rows: 2,
        schema_matches: true,
    });
    let o = n.run(&rogue, vec![attest.clone()]);
    assert_eq!((o.codespace, o.code), ("market", 86), "{}", o.log);
    // org1 runs no validator: its validator-OU member cannot either.
    let o = n.run(
        &c.signer(1, Role::Validator),
        vec![msg::request_validation(id)],
    );
    assert_eq!((o.codespace, o.code), ("market", 86), "{}", o.log);
    assert_eq!(
        n.storage().purchases().unwrap().len(),
        0,
        "no key request opened"
    );
    // The registered operator may.
    n.ok(
        &c.signer(0, Role::Validator),
        vec![msg::request_validation(id)],
    );
    n.ok(&c.signer(0, Role::Validator), vec![attest]);
}

#[test]
fn validation_requests_are_for_listed_unverified_datasets_within_the_org_quota() {
    let mut c = Consortium::new(2, 1);
    c.params.max_open_validations_per_org = 2;
    let mut t = Twin::start(&c);
    let provider = c.signer(1, Role::Provider);
    let operator = c.signer(0, Role::Validator);
    let ids: Vec<u64> = (1..=4)
        .map(|salt| {
            let key = DataKey::generate().unwrap();
            t.ok(
                &provider,
                vec![msg::register_dataset(listing(&key, "100", salt))],
            );
            t.a.storage().next_dataset_id().unwrap() - 1
        })
        .collect();
    t.ok(&operator, vec![msg::request_validation(ids[0])]);
    t.ok(&operator, vec![msg::request_validation(ids[1])]);
    // Quota: two open requests for org0.
    t.reject_signed(
        &operator,
        vec![msg::request_validation(ids[2])],
        "escrow",
        113,
    );
    // Delisted: nothing to validate.
    t.ok(&provider, vec![msg::delist(ids[3])]);
    t.reject_signed(
        &operator,
        vec![msg::request_validation(ids[3])],
        "market",
        84,
    );
    // The requests close at their due height and free the quota.
    for _ in 0..(c.params.key_delivery_blocks + c.params.confirm_blocks + 1) {
        t.apply(&[]);
    }
    assert_eq!(t.a.storage().open_validations("org0").unwrap(), 0);
    t.ok(&operator, vec![msg::request_validation(ids[2])]);
    // Verified: org0 holds all the power and attests.
    t.ok(
        &operator,
        vec![msg::attest(pb::AttestDataset {
            dataset_id: ids[0],
            ciphertext_matches_cid: true,
            plaintext_matches: true,
            rows: 2,
            schema_matches: true,
        })],
    );
    assert!(t.a.storage().dataset(ids[0]).unwrap().unwrap().verified);
    t.reject_signed(
        &operator,
        vec![msg::request_validation(ids[0])],
        "market",
        87,
    );
}

// --- Finding 2: validator updates that halt CometBFT ---------------------------------------

#[test]
fn two_passing_proposals_for_one_validator_key_in_one_block_give_one_update() {
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let key = [7u8; 32];
    let a0 = c.signer(0, Role::Admin);
    let a1 = c.signer(1, Role::Admin);
    n.ok(
        &a0,
        vec![msg::propose("add", set_validator(key, 5, "org0"))],
    );
    n.ok(
        &a0,
        vec![msg::propose("reweight", set_validator(key, 7, "org0"))],
    );
    // The last voter passes both in one tx.
    let tx = n.sign(&a1, vec![msg::vote(1, true), msg::vote(2, true)]);
    let b = n.block(&[tx]);
    assert_eq!(b.outcomes[0].code, 0, "{}", b.outcomes[0].log);
    assert_eq!(
        b.validator_updates,
        vec![(key, 7)],
        "one update per key, the last"
    );
    assert_eq!(n.storage().validator(&key).unwrap().unwrap().power, 7);

    // Reweight and remove in one block: only the removal reaches CometBFT.
    n.ok(
        &a0,
        vec![msg::propose("reweight", set_validator(key, 9, "org0"))],
    );
    n.ok(&a0, vec![msg::propose("remove", set_validator(key, 0, ""))]);
    let t1 = n.sign(&a1, vec![msg::vote(3, true)]);
    let t2 = n.sign_with(
        &a1,
        1 + n.storage().account(&a1.address()).unwrap().nonce,
        vec![msg::vote(4, true)],
    );
    let b = n.block(&[t1, t2]);
    assert!(b.outcomes.iter().all(|o| o.code == 0));
    assert_eq!(b.validator_updates, vec![(key, 0)]);
    assert!(n.storage().validator(&key).unwrap().is_none());
}

#[test]
fn a_validator_added_and_removed_in_one_block_reaches_cometbft_as_nothing() {
    use std::collections::BTreeMap;
    let start = BTreeMap::from([([1u8; 32], 10i64)]);
    let changes = BTreeMap::from([([2u8; 32], 0i64), ([1u8; 32], 10), ([3u8; 32], 4)]);
    assert_eq!(
        neurodata_abci::app::validator_updates(&start, &changes),
        vec![([3u8; 32], 4)],
        "a removal of a key not in the set and an unchanged power are dropped"
    );
}

#[test]
fn a_validator_set_above_cometbfts_total_power_limit_is_refused() {
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let a0 = c.signer(0, Role::Admin);
    let a1 = c.signer(1, Role::Admin);
    // Alone above the limit with the existing validator's 10: refused at submission.
    let o = n.run(
        &a0,
        vec![msg::propose(
            "big",
            set_validator([8; 32], MAX_TOTAL_POWER, "org0"),
        )],
    );
    assert_eq!((o.codespace, o.code), ("governance", 71), "{}", o.log);
    // Each fine alone, together above: the second fails when it executes.
    let half = MAX_TOTAL_POWER / 2;
    n.ok(
        &a0,
        vec![msg::propose("a", set_validator([8; 32], half, "org0"))],
    );
    n.ok(
        &a0,
        vec![msg::propose("b", set_validator([9; 32], half, "org0"))],
    );
    let b = n.block(&[n.sign(&a1, vec![msg::vote(1, true), msg::vote(2, true)])]);
    assert_eq!(b.outcomes[0].code, 0, "{}", b.outcomes[0].log);
    assert_eq!(proposal_status(&n, 1), pb::ProposalStatus::Passed);
    assert_eq!(proposal_status(&n, 2), pb::ProposalStatus::Failed);
    let total: i64 = n
        .storage()
        .validators()
        .unwrap()
        .iter()
        .map(|v| v.power)
        .sum();
    assert!(total <= MAX_TOTAL_POWER);
    assert_eq!(b.validator_updates, vec![([8; 32], half)]);
}

// --- Finding 3: rejected txs cost nothing --------------------------------------------------

#[test]
fn a_failed_tx_pays_its_fee_and_uses_its_nonce_so_it_cannot_be_replayed_later() {
    let c = Consortium::new(2, 1);
    let mut t = Twin::start(&c);
    let poor = c.signer(1, Role::Trainer);
    let rich = c.signer(0, Role::Buyer);
    // A transfer the signer cannot afford fails in the block ...
    let greedy = t.a.sign(
        &poor,
        vec![msg::transfer(rich.address(), Amount(START_BALANCE))],
    );
    let o = t.reject(greedy.clone(), "ledger", 40);
    assert!(
        o.events.iter().any(|e| e.kind == "fee.paid"),
        "the fee is charged"
    );
    assert_eq!(t.a.storage().account(&poor.address()).unwrap().nonce, 1);
    assert_eq!(t.a.balance(poor.address()), START_BALANCE - 1);
    // ... and once it could succeed, nobody can include it again.
    t.ok(&rich, vec![msg::transfer(poor.address(), Amount(10))]);
    t.reject(greedy, "tx", 8);
    assert_eq!(t.a.balance(poor.address()), START_BALANCE - 1 + 10);
}

#[test]
fn checktx_counts_the_fees_and_spending_the_signer_has_queued() {
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let fresh = signer_of(
        &c.orgs[1]
            .ca
            .issue("fresh", Role::Buyer, validity())
            .unwrap(),
    );
    let to = c.signer(0, Role::Buyer).address();
    n.ok(
        &c.signer(1, Role::Buyer),
        vec![msg::transfer(fresh.address(), Amount(4))],
    );
    let tx = |nonce| {
        fresh
            .sign(
                TxParams {
                    chain_id: common::CHAIN.into(),
                    nonce,
                    fee: Amount(1),
                    attach_certificate: true,
                    memo: String::new(),
                },
                vec![msg::transfer(to, Amount(1))],
            )
            .unwrap()
    };
    // Each costs 2 (fee + amount): the account covers two, not three.
    assert_eq!(n.node.check(&tx(0)).unwrap(), Ok(()));
    assert_eq!(n.node.check(&tx(1)).unwrap(), Ok(()));
    let third = n.node.check(&tx(2)).unwrap().unwrap_err();
    assert_eq!((third.codespace(), third.code()), ("ledger", 40), "{third}");
    // After the block commits, the mempool view starts again from the state.
    let b = n.block(&[tx(0), tx(1)]);
    assert!(b.outcomes.iter().all(|o| o.code == 0));
    assert_eq!(n.balance(fresh.address()), 0);
    let again = n.node.check(&tx(2)).unwrap().unwrap_err();
    assert_eq!((again.codespace(), again.code()), ("ledger", 40));
}

// --- Finding 4: malleable tx hashes ---------------------------------------------------------

/// P-256's group order.
fn order() -> openssl::bn::BigNum {
    use openssl::ec::EcGroup;
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let mut n = openssl::bn::BigNum::new().unwrap();
    group
        .order(&mut n, &mut openssl::bn::BigNumContext::new().unwrap())
        .unwrap();
    n
}

#[test]
fn re_encodings_of_a_signed_tx_under_a_new_hash_are_refused() {
    use openssl::ecdsa::EcdsaSig;
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    let tx =
        t.a.sign(&s, vec![msg::transfer(Address([5; 32]), Amount(3))]);
    let env = pb::Tx::decode(tx.as_slice()).unwrap();

    // An unknown field appended to the envelope.
    let mut extra = tx.clone();
    extra.extend_from_slice(&[0x18, 0x01]);
    t.reject(extra, "tx", 12);
    // The envelope's fields in the other order.
    let mut swapped = Vec::new();
    prost::encoding::bytes::encode(2, &env.signature, &mut swapped);
    prost::encoding::bytes::encode(1, &env.body, &mut swapped);
    t.reject(swapped, "tx", 12);
    // The signature's twin (r, n - s).
    let sig = EcdsaSig::from_der(&env.signature).unwrap();
    let mut high = openssl::bn::BigNum::new().unwrap();
    high.checked_sub(&order(), sig.s()).unwrap();
    let twin = EcdsaSig::from_private_components(sig.r().to_owned().unwrap(), high).unwrap();
    let twin_tx = pb::Tx {
        body: env.body.clone(),
        signature: twin.to_der().unwrap(),
    }
    .encode_to_vec();
    t.reject(twin_tx, "tx", 14);
    // DER with a byte after it.
    let mut padded = env.signature.clone();
    padded.push(0);
    let padded_tx = pb::Tx {
        body: env.body.clone(),
        signature: padded,
    }
    .encode_to_vec();
    t.reject(padded_tx, "tx", 13);
    // The original still commits, once.
    let b = t.apply(std::slice::from_ref(&tx));
    assert_eq!(b.outcomes[0].code, 0, "{}", b.outcomes[0].log);
    t.reject(tx, "tx", 8);
}

#[test]
fn the_client_always_signs_with_low_s() {
    let c = Consortium::new(1, 1);
    let s = c.signer(0, Role::Buyer);
    let mut half = openssl::bn::BigNum::new().unwrap();
    half.rshift1(&order()).unwrap();
    for nonce in 0..64 {
        let tx = s
            .sign(
                TxParams {
                    chain_id: common::CHAIN.into(),
                    nonce,
                    fee: Amount(1),
                    attach_certificate: false,
                    memo: String::new(),
                },
                vec![msg::transfer(Address([1; 32]), Amount(1))],
            )
            .unwrap();
        let sig = pb::Tx::decode(tx.as_slice()).unwrap().signature;
        let sig = openssl::ecdsa::EcdsaSig::from_der(&sig).unwrap();
        assert!(sig.s() <= &*half, "nonce {nonce}: high S");
    }
}

// --- Finding 5: stranded funds --------------------------------------------------------------

/// A buyer of org1 whose certificate expires after block `last`.
fn expiring_buyer(c: &Consortium, last: u64) -> neurodata_certs::Member {
    c.orgs[1]
        .ca
        .issue(
            "short-lived",
            Role::Buyer,
            Validity {
                not_before: validity().not_before,
                not_after: block_time(last),
            },
        )
        .unwrap()
}

#[test]
fn an_admin_moves_an_expired_members_funds_and_open_purchase_to_a_successor() {
    let mut c = Consortium::new(2, 1);
    c.params.key_delivery_blocks = 50;
    let mut n = TestNode::start(&c);
    let provider = c.signer(0, Role::Provider);
    let admin = c.signer(1, Role::Admin);
    let successor = c.signer(1, Role::Buyer);
    let member = expiring_buyer(&c, 8);
    let dying = signer_of(&member);
    n.ok(
        &successor,
        vec![msg::transfer(dying.address(), Amount(1_000))],
    );
    let id = list(&mut n, &provider, 1);
    n.ok(&dying, vec![msg::buy(id, Amount(100))]);
    while n.height < 8 {
        n.block(&[]);
    }
    let o = n.run(&dying, vec![msg::transfer(successor.address(), Amount(1))]);
    assert_eq!(
        (o.codespace, o.code),
        ("membership", 28),
        "expired: {}",
        o.log
    );
    let stranded = n.balance(dying.address());
    assert_eq!(stranded, 1_000 - 1 - 100);
    // The org admin moves it; the successor gets balance, purchase and access.
    let before = n.balance(successor.address());
    n.ok(
        &admin,
        vec![msg::move_identity(
            dying.address(),
            successor.address(),
            None,
            "expired",
        )],
    );
    assert_eq!(n.balance(dying.address()), 0);
    assert_eq!(n.balance(successor.address()), before + stranded);
    let p = n.storage().purchase(1).unwrap().unwrap();
    assert_eq!(p.buyer, successor.address().0.to_vec());
    assert_eq!(
        n.storage().live_purchase(&successor.address(), id).unwrap(),
        Some(1)
    );
    assert_eq!(
        n.storage().live_purchase(&dying.address(), id).unwrap(),
        None
    );
    let record = n.storage().identity(&dying.address().0).unwrap().unwrap();
    assert_eq!(record.successor, successor.address().0.to_vec());
    // The provider wraps to the successor, who confirms.
    let key = DataKey::generate().unwrap();
    let wrapped = wrap::wrap(&key, &spki(&c.orgs[1].members[&Role::Buyer])).unwrap();
    n.ok(
        &provider,
        vec![msg::deliver_key(1, successor.address(), wrapped.to_bytes())],
    );
    n.ok(&successor, vec![msg::confirm(1)]);
    assert_eq!(n.balance(escrow_account()), 0);
}

#[test]
fn a_buyers_org_admin_disputes_a_garbage_key_timed_to_the_buyers_certificate_expiry() {
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let provider = c.signer(0, Role::Provider);
    let admin = c.signer(1, Role::Admin);
    let member = expiring_buyer(&c, 8);
    let dying = signer_of(&member);
    n.ok(
        &c.signer(1, Role::Buyer),
        vec![msg::transfer(dying.address(), Amount(1_000))],
    );
    let id = list(&mut n, &provider, 1);
    n.ok(&dying, vec![msg::buy(id, Amount(100))]);
    // The provider delivers a garbage key just before the buyer's certificate expires.
    let garbage = wrap::wrap(&DataKey::generate().unwrap(), &spki(&member)).unwrap();
    n.ok(
        &provider,
        vec![msg::deliver_key(1, dying.address(), garbage.to_bytes())],
    );
    while n.height < 8 {
        n.block(&[]);
    }
    let proof = dleq::prove(&garbage, &member.key).unwrap();
    let o = n.run(&dying, vec![msg::dispute(1, proof.to_bytes())]);
    assert_eq!((o.codespace, o.code), ("membership", 28), "{}", o.log);
    // Someone else's admin may not; the buyer's org admin may.
    let o = n.run(
        &c.signer(0, Role::Admin),
        vec![msg::dispute(1, proof.to_bytes())],
    );
    assert_eq!((o.codespace, o.code), ("escrow", 114), "{}", o.log);
    n.ok(&admin, vec![msg::dispute(1, proof.to_bytes())]);
    let p = n.storage().purchase(1).unwrap().unwrap();
    assert_eq!(p.status, pb::PurchaseStatus::WrongKeyRefunded as i32);
    assert_eq!(n.balance(dying.address()), 1_000 - 1 - 100 + 100);
}

#[test]
fn a_move_is_refused_across_orgs_and_to_a_successor_that_cannot_sign() {
    let c = Consortium::new(2, 1);
    let mut t = Twin::start(&c);
    let a0 = c.signer(0, Role::Admin);
    let a1 = c.signer(1, Role::Admin);
    let b0 = c.signer(0, Role::Buyer);
    let b1 = c.signer(1, Role::Buyer);
    let t1 = c.signer(1, Role::Trainer);
    t.ok(&b1, vec![msg::transfer(b0.address(), Amount(1))]);
    t.ok(&t1, vec![msg::transfer(b0.address(), Amount(1))]);
    // Another org's identity.
    t.reject_signed(
        &a0,
        vec![msg::move_identity(b1.address(), b0.address(), None, "")],
        "membership",
        31,
    );
    let b0_der = c.orgs[0].members[&Role::Buyer].cert.to_der().unwrap();
    t.reject_signed(
        &a1,
        vec![msg::move_identity(
            b1.address(),
            b0.address(),
            Some(b0_der),
            "",
        )],
        "membership",
        31,
    );
    // A revoked successor.
    t.ok(&a1, vec![msg::revoke(t1.address(), None, "left")]);
    t.reject_signed(
        &a1,
        vec![msg::move_identity(b1.address(), t1.address(), None, "")],
        "membership",
        29,
    );
    // Not an admin.
    t.reject_signed(
        &b1,
        vec![msg::move_identity(b1.address(), t1.address(), None, "")],
        "membership",
        30,
    );
    // A successor never seen needs its certificate attached, which registers it.
    let fresh = c.orgs[1]
        .ca
        .issue("fresh", Role::Buyer, validity())
        .unwrap();
    let fresh_addr = signer_of(&fresh).address();
    t.reject_signed(
        &a1,
        vec![msg::move_identity(t1.address(), fresh_addr, None, "")],
        "membership",
        33,
    );
    let der = fresh.cert.to_der().unwrap();
    t.ok(
        &a1,
        vec![msg::move_identity(
            t1.address(),
            fresh_addr,
            Some(der),
            "left",
        )],
    );
    assert_eq!(t.a.balance(fresh_addr), START_BALANCE - 2);
    // Moved once: moving it elsewhere is refused.
    t.reject_signed(
        &a1,
        vec![msg::move_identity(t1.address(), b1.address(), None, "")],
        "membership",
        34,
    );
}

#[test]
fn governance_spends_from_the_treasury_and_the_reward_pool() {
    let c = Consortium::new(1, 1);
    let mut n = TestNode::start(&c);
    let admin = c.signer(0, Role::Admin);
    let to = c.signer(0, Role::Buyer).address();
    n.ok(
        &admin,
        vec![msg::propose(
            "mint",
            A::Mint(pb::Mint {
                amount: "500".into(),
            }),
        )],
    );
    let spend = |source: pb::SpendSource, amount: &str| {
        msg::propose(
            "spend",
            A::Spend(pb::Spend {
                source: source as i32,
                to: to.0.to_vec(),
                amount: amount.into(),
            }),
        )
    };
    let before = n.balance(to);
    n.ok(&admin, vec![spend(pb::SpendSource::Treasury, "300")]);
    assert_eq!(n.balance(to), before + 300);
    assert_eq!(n.balance(Address::treasury()), 200);
    let o = n.run(&admin, vec![spend(pb::SpendSource::Treasury, "201")]);
    assert_eq!((o.codespace, o.code), ("ledger", 40), "{}", o.log);
    let pool = n.balance(Address::reward_pool());
    assert!(pool >= 3, "fees went to the pool");
    n.ok(&admin, vec![spend(pb::SpendSource::RewardPool, "3")]);
    assert_eq!(n.balance(to), before + 303);
}

#[test]
fn the_reward_pool_pays_validator_operators_by_power_each_epoch() {
    let mut c = Consortium::new(2, 2);
    c.params.reward_epoch_blocks = 4;
    c.validators[1].1 = 30;
    let mut n = TestNode::start(&c);
    let op0 = c.signer(0, Role::Validator).address();
    let op1 = c.signer(1, Role::Validator).address();
    let buyer = c.signer(0, Role::Buyer);
    for _ in 0..3 {
        n.ok(&buyer, vec![msg::transfer(Address([3; 32]), Amount(1))]);
    }
    assert_eq!(n.height, 3);
    assert_eq!(n.balance(Address::reward_pool()), 3);
    n.ok(&buyer, vec![msg::transfer(Address([3; 32]), Amount(1))]);
    // Pool 4 at the end of block 4: 10/40 → 1, 30/40 → 3.
    assert_eq!(n.balance(op0), START_BALANCE + 1);
    assert_eq!(n.balance(op1), START_BALANCE + 3);
    assert_eq!(n.balance(Address::reward_pool()), 0);
}

// --- Finding 7: a decoy listing with a colleague's key commitment ---------------------------

#[test]
fn a_listing_that_reuses_a_listed_key_commitment_is_refused() {
    let c = Consortium::new(2, 1);
    let mut t = Twin::start(&c);
    let key = DataKey::generate().unwrap();
    t.ok(
        &c.signer(0, Role::Provider),
        vec![msg::register_dataset(listing(&key, "100", 1))],
    );
    let rogue = signer_of(
        &c.orgs[0]
            .ca
            .issue("rogue", Role::Provider, validity())
            .unwrap(),
    );
    t.ok(
        &c.signer(0, Role::Buyer),
        vec![msg::transfer(rogue.address(), Amount(10))],
    );
    let decoy = listing(&key, "1", 2);
    t.reject_signed(&rogue, vec![msg::register_dataset(decoy)], "market", 88);
}

// --- Low findings ---------------------------------------------------------------------------

#[test]
fn removing_an_org_removes_its_validators_and_their_attestation_power() {
    let c = Consortium::new(4, 4);
    let mut n = TestNode::start(&c);
    let remove = msg::propose(
        "remove",
        A::RemoveOrg(pb::RemoveOrg {
            org_id: "org3".into(),
        }),
    );
    n.ok(&c.signer(0, Role::Admin), vec![remove]);
    n.ok(&c.signer(1, Role::Admin), vec![msg::vote(1, true)]);
    let b = n.block(&[n.sign(&c.signer(2, Role::Admin), vec![msg::vote(1, true)])]);
    assert_eq!(b.outcomes[0].code, 0, "{}", b.outcomes[0].log);
    assert_eq!(proposal_status(&n, 1), pb::ProposalStatus::Passed);
    assert_eq!(b.validator_updates, vec![(c.validators[3].0, 0)]);
    let left = n.storage().validators().unwrap();
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|v| v.org_id != "org3"));
}

#[test]
fn buying_from_a_removed_org_is_refused_and_its_open_purchases_refund_at_once() {
    let c = Consortium::new(4, 1);
    let mut n = TestNode::start(&c);
    let id = list(&mut n, &c.signer(3, Role::Provider), 1);
    let buyer = c.signer(1, Role::Buyer);
    n.ok(&buyer, vec![msg::buy(id, Amount(100))]);
    let o = n.run(&buyer, vec![msg::refund(1)]);
    assert_eq!(
        (o.codespace, o.code),
        ("escrow", 108),
        "too early while org3 is a member"
    );
    let remove = msg::propose(
        "remove",
        A::RemoveOrg(pb::RemoveOrg {
            org_id: "org3".into(),
        }),
    );
    n.ok(&c.signer(0, Role::Admin), vec![remove]);
    n.ok(&c.signer(1, Role::Admin), vec![msg::vote(1, true)]);
    n.ok(&c.signer(2, Role::Admin), vec![msg::vote(1, true)]);
    let o = n.run(&c.signer(2, Role::Buyer), vec![msg::buy(id, Amount(100))]);
    assert_eq!((o.codespace, o.code), ("escrow", 112), "{}", o.log);
    let before = n.balance(buyer.address());
    n.ok(&buyer, vec![msg::refund(1)]);
    assert_eq!(n.balance(buyer.address()), before - 1 + 100);
}

// --- Review follow-ups: moves racing deliveries, disputes after a move, repeated moves ------

/// org1's buyer X with a purchase of a fresh org0 dataset; returns (node, X's member, dataset).
fn bought(c: &Consortium) -> (TestNode, neurodata_certs::Member, u64) {
    let mut n = TestNode::start(c);
    let x = c.orgs[1].ca.issue("x", Role::Buyer, validity()).unwrap();
    n.ok(
        &c.signer(1, Role::Buyer),
        vec![msg::transfer(signer_of(&x).address(), Amount(1_000))],
    );
    let id = list(&mut n, &c.signer(0, Role::Provider), 1);
    n.ok(&signer_of(&x), vec![msg::buy(id, Amount(100))]);
    (n, x, id)
}

#[test]
fn a_delivery_wrapped_for_a_buyer_who_moved_meanwhile_is_refused() {
    let c = Consortium::new(2, 1);
    let (mut n, x, _) = bought(&c);
    let provider = c.signer(0, Role::Provider);
    let y = c.signer(1, Role::Trainer);
    // The provider wraps to X; before its delivery executes, X's admin moves X to Y.
    let key = DataKey::generate().unwrap();
    let to_x = wrap::wrap(&key, &spki(&x)).unwrap();
    let delivery = n.sign(
        &provider,
        vec![msg::deliver_key(
            1,
            signer_of(&x).address(),
            to_x.to_bytes(),
        )],
    );
    n.ok(
        &c.signer(1, Role::Admin),
        vec![msg::move_identity(
            signer_of(&x).address(),
            y.address(),
            Some(c.orgs[1].members[&Role::Trainer].cert.to_der().unwrap()),
            "",
        )],
    );
    let o = n.block(&[delivery]).outcomes.remove(0);
    assert_eq!((o.codespace, o.code), ("escrow", 115), "{}", o.log);
    let p = n.storage().purchase(1).unwrap().unwrap();
    assert_eq!(
        p.status,
        pb::PurchaseStatus::AwaitingKey as i32,
        "not recorded as delivered"
    );
    // The gateway's next scan wraps to the buyer now.
    let to_y = wrap::wrap(&key, &spki(&c.orgs[1].members[&Role::Trainer])).unwrap();
    n.ok(
        &provider,
        vec![msg::deliver_key(1, y.address(), to_y.to_bytes())],
    );
    assert_eq!(
        n.storage().purchase(1).unwrap().unwrap().key_recipient,
        y.address().0.to_vec()
    );
}

#[test]
fn a_key_delivered_before_a_move_is_disputed_against_the_old_certificate_only() {
    let c = Consortium::new(2, 1);
    let (mut n, x, _) = bought(&c);
    let provider = c.signer(0, Role::Provider);
    let y_member = &c.orgs[1].members[&Role::Trainer];
    let y = c.signer(1, Role::Trainer);
    let admin = c.signer(1, Role::Admin);
    // The right key of a listing, wrapped to X; then X moves to Y.
    let right = DataKey::generate().unwrap();
    n.ok(
        &provider,
        vec![msg::register_dataset(listing(&right, "100", 9))],
    );
    n.ok(&signer_of(&x), vec![msg::buy(2, Amount(100))]);
    let wrapped = wrap::wrap(&right, &spki(&x)).unwrap();
    n.ok(
        &provider,
        vec![msg::deliver_key(
            2,
            signer_of(&x).address(),
            wrapped.to_bytes(),
        )],
    );
    n.ok(
        &admin,
        vec![msg::move_identity(
            signer_of(&x).address(),
            y.address(),
            Some(y_member.cert.to_der().unwrap()),
            "",
        )],
    );
    let p = n.storage().purchase(2).unwrap().unwrap();
    assert_eq!(p.buyer, y.address().0.to_vec());
    assert_eq!(p.key_recipient, signer_of(&x).address().0.to_vec());
    // The successor's own key proves nothing about a wrapping made for X ...
    let with_y = dleq::prove(&wrapped, &y_member.key).unwrap();
    let o = n.run(&y, vec![msg::dispute(2, with_y.to_bytes())]);
    assert_eq!((o.codespace, o.code), ("escrow", 110), "{}", o.log);
    // ... and X's proves the key right: no refund for a key the org holds.
    let with_x = dleq::prove(&wrapped, &x.key).unwrap();
    let o = n.run(&admin, vec![msg::dispute(2, with_x.to_bytes())]);
    assert_eq!((o.codespace, o.code), ("escrow", 111), "{}", o.log);
    n.ok(&y, vec![msg::confirm(2)]);
}

#[test]
fn a_move_carries_paid_access_and_operator_roles_and_may_be_redone_once_the_successor_died() {
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let admin0 = c.signer(0, Role::Admin);
    let op = c.signer(0, Role::Validator);
    let succ = signer_of(
        &c.orgs[0]
            .ca
            .issue("op2", Role::Validator, validity())
            .unwrap(),
    );
    let succ2 = signer_of(
        &c.orgs[0]
            .ca
            .issue("op3", Role::Validator, validity())
            .unwrap(),
    );
    for s in [&succ, &succ2] {
        n.ok(
            &c.signer(0, Role::Buyer),
            vec![msg::transfer(s.address(), Amount(10))],
        );
        n.ok(s, vec![msg::transfer(admin0.address(), Amount(1))]);
    }
    // The operator's paid access to a dataset.
    let id = list(&mut n, &c.signer(1, Role::Provider), 1);
    n.ok(&op, vec![msg::request_validation(id)]);
    n.ok(
        &admin0,
        vec![msg::move_identity(
            op.address(),
            succ.address(),
            None,
            "rotated",
        )],
    );
    let v = &n.storage().validators().unwrap()[0];
    assert_eq!(
        v.operators,
        vec![succ.address().0.to_vec()],
        "the operator role moved"
    );
    assert_eq!(
        n.storage().live_purchase(&succ.address(), id).unwrap(),
        Some(1)
    );
    n.ok(
        &c.signer(1, Role::Buyer),
        vec![msg::transfer(op.address(), Amount(5))],
    );
    let o = n.run(&op, vec![msg::request_validation(id)]);
    assert_eq!(
        (o.codespace, o.code),
        ("market", 86),
        "the old operator lost its role"
    );
    // While the successor lives, the move is final; once it is revoked, it may be redone.
    let again = msg::move_identity(op.address(), succ2.address(), None, "");
    let o = n.run(&admin0, vec![again.clone()]);
    assert_eq!((o.codespace, o.code), ("membership", 34), "{}", o.log);
    n.ok(&admin0, vec![msg::revoke(succ.address(), None, "lost")]);
    // What reached the old identity meanwhile (5, less the refused request's fee) goes on.
    n.ok(&admin0, vec![again]);
    assert_eq!(n.balance(op.address()), 0);
    assert_eq!(n.balance(succ2.address()), 10 - 2 + 4);
}

#[test]
fn validator_operators_must_be_members_of_the_validators_org() {
    let c = Consortium::new(2, 1);
    let mut t = Twin::start(&c);
    let admin = c.signer(0, Role::Admin);
    let other_org = c.signer(1, Role::Validator);
    t.ok(&other_org, vec![msg::transfer(admin.address(), Amount(1))]);
    let with = |operators: Vec<Vec<u8>>| {
        msg::propose(
            "v",
            A::SetValidator(pb::SetValidator {
                pub_key: vec![4; 32],
                power: 1,
                org_id: "org0".into(),
                name: "v".into(),
                operators,
            }),
        )
    };
    t.reject_signed(
        &admin,
        vec![with(vec![Address::reward_pool().0.to_vec()])],
        "governance",
        78,
    );
    let o = t.reject_signed(
        &admin,
        vec![with(vec![other_org.address().0.to_vec()])],
        "governance",
        79,
    );
    assert!(o.log.contains("not of the validator's org"), "{}", o.log);
    t.reject_signed(&admin, vec![with(vec![vec![1; 31]])], "governance", 77);
    t.ok(
        &admin,
        vec![with(vec![
            c.signer(0, Role::Validator).address().0.to_vec(),
        ])],
    );
}

#[test]
fn removing_the_org_that_runs_every_validator_is_refused() {
    let c = Consortium::new(4, 1);
    let mut t = Twin::start(&c);
    let remove = msg::propose(
        "remove",
        A::RemoveOrg(pb::RemoveOrg {
            org_id: "org0".into(),
        }),
    );
    t.reject_signed(&c.signer(1, Role::Admin), vec![remove], "governance", 65);
}

#[test]
fn a_validator_removed_and_readded_at_its_power_in_one_block_gives_cometbft_nothing() {
    let c = Consortium::new(2, 2);
    let mut n = TestNode::start(&c);
    let key = c.validators[1].0;
    let a0 = c.signer(0, Role::Admin);
    let a1 = c.signer(1, Role::Admin);
    n.ok(&a0, vec![msg::propose("remove", set_validator(key, 0, ""))]);
    n.ok(
        &a0,
        vec![msg::propose("re-add", set_validator(key, 10, "org1"))],
    );
    let b = n.block(&[n.sign(&a1, vec![msg::vote(1, true), msg::vote(2, true)])]);
    assert_eq!(b.outcomes[0].code, 0, "{}", b.outcomes[0].log);
    assert_eq!(proposal_status(&n, 1), pb::ProposalStatus::Passed);
    assert_eq!(proposal_status(&n, 2), pb::ProposalStatus::Passed);
    assert!(b.validator_updates.is_empty(), "{:?}", b.validator_updates);
}

#[test]
fn another_org_listing_a_cid_or_commitment_first_does_not_lock_out_its_owner() {
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let key = DataKey::generate().unwrap();
    let own = listing(&key, "100", 1);
    // org1 saw org0's listing in the mempool and gets the same CID and commitment in first.
    n.ok(
        &c.signer(1, Role::Provider),
        vec![msg::register_dataset(own.clone())],
    );
    n.ok(
        &c.signer(0, Role::Provider),
        vec![msg::register_dataset(own.clone())],
    );
    assert_eq!(
        n.storage().dataset_by_cid("org0", &own.cid).unwrap(),
        Some(2)
    );
    assert_eq!(
        n.storage().dataset_by_cid("org1", &own.cid).unwrap(),
        Some(1)
    );
    // Within org0, the same CID again is a duplicate.
    let o = n.run(
        &c.signer(0, Role::Provider),
        vec![msg::register_dataset(own)],
    );
    assert_eq!((o.codespace, o.code), ("market", 81), "{}", o.log);
}
