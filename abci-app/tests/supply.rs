//! Property: random sequences of transfers, mints, spends, reward payouts, failed txs (which pay
//! their fee) and governance actions conserve total supply: it changes only by mint, and always
//! equals the sum of all balances.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::*;
use neurodata_abci::ledger::LedgerRead;
use neurodata_certs::Role;
use neurodata_client::{Amount, msg};
use neurodata_proto::chain::v1 as pb;
use proptest::prelude::*;
use std::sync::OnceLock;

#[derive(Clone, Debug)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        amount: u128,
    },
    Mint(u128),
    AddValidator(u8),
    Params(u64),
    Spend {
        pool: bool,
        amount: u128,
    },
    Garbage,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..5usize, 0..5usize, 0..2 * START_BALANCE).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        2 => (0..u128::MAX / 4).prop_map(Op::Mint),
        1 => any::<u8>().prop_map(Op::AddValidator),
        1 => (1..100u64).prop_map(Op::Params),
        1 => (any::<bool>(), 0..1_000u128).prop_map(|(pool, amount)| Op::Spend { pool, amount }),
        1 => Just(Op::Garbage),
    ]
}

fn consortium() -> &'static Consortium {
    static C: OnceLock<Consortium> = OnceLock::new();
    // Rewards are paid every 3 blocks, so payouts are part of every sequence.
    C.get_or_init(|| {
        let mut c = Consortium::new(1, 1);
        c.params.reward_epoch_blocks = 3;
        c
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn supply_changes_only_by_mint_and_equals_the_sum_of_balances(ops in prop::collection::vec(op(), 1..25)) {
        let c = consortium();
        let mut n = TestNode::start(c);
        let roles = [Role::Buyer, Role::Provider, Role::Trainer, Role::Validator, Role::Admin];
        let admin = c.signer(0, Role::Admin);
        let mut expected = n.storage().supply().unwrap().0;
        for op in ops {
            let (tx, minted) = match op {
                Op::Transfer { from, to, amount } => (
                    n.sign(&c.signer(0, roles[from]), vec![msg::transfer(c.signer(0, roles[to]).address(), Amount(amount))]),
                    0,
                ),
                Op::Mint(amount) => (
                    n.sign(&admin, vec![msg::propose("mint", pb::proposal_action::Action::Mint(pb::Mint { amount: amount.to_string() }))]),
                    amount,
                ),
                Op::AddValidator(k) => (
                    n.sign(&admin, vec![msg::propose("val", pb::proposal_action::Action::SetValidator(pb::SetValidator {
                        pub_key: vec![k; 32], power: 1, org_id: "org0".into(), name: String::new(), operators: vec![] }))]),
                    0,
                ),
                Op::Params(blocks) => (
                    n.sign(&admin, vec![msg::propose("params", pb::proposal_action::Action::SetParams(pb::Params {
                        min_fee: "1".into(), proposal_voting_blocks: blocks, max_tx_bytes: 16384, max_messages_per_tx: 8, key_delivery_blocks: 10, confirm_blocks: 10, market_fee_bps: 100, max_open_validations_per_org: 4, reward_epoch_blocks: 3, model_royalty_bps: 1_000, cert_expiry_notice_secs: 30 * 86_400 }))]),
                    0,
                ),
                Op::Spend { pool, amount } => {
                    let source = if pool { pb::SpendSource::RewardPool } else { pb::SpendSource::Treasury };
                    (
                        n.sign(&admin, vec![msg::propose("spend", pb::proposal_action::Action::Spend(pb::Spend {
                            source: source as i32, to: c.signer(0, Role::Buyer).address().0.to_vec(), amount: amount.to_string() }))]),
                        0,
                    )
                }
                Op::Garbage => (vec![1, 2, 3], 0),
            };
            let b = n.block(&[tx]);
            if b.outcomes[0].code == 0 {
                expected = expected.checked_add(minted).unwrap();
            }
            let supply = n.storage().supply().unwrap().0;
            prop_assert_eq!(supply, expected);
            let sum = n
                .storage()
                .accounts()
                .unwrap()
                .iter()
                .map(|a| a.balance.parse::<u128>().unwrap())
                .fold(0u128, |acc, b| acc.checked_add(b).unwrap());
            prop_assert_eq!(sum, supply);
        }
    }
}
