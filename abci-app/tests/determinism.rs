//! Two app instances in separate RocksDB directories fed the same blocks (accepted and rejected
//! txs mixed) have the same app hash at every height, also across a restart.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::*;
use neurodata_abci::abci::Node;
use neurodata_abci::storage::Storage;
use neurodata_certs::Role;
use neurodata_client::{Amount, msg};
use neurodata_proto::chain::v1 as pb;

/// A small deterministic generator so the block sequence is the same on every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn random_block(c: &Consortium, n: &TestNode, rng: &mut Lcg) -> Vec<Vec<u8>> {
    let roles = [Role::Buyer, Role::Provider, Role::Trainer];
    let mut txs = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for _ in 0..(rng.next() % 6) {
        let from = c.signer((rng.next() % 3) as usize, roles[(rng.next() % 3) as usize]);
        let to = c.signer((rng.next() % 3) as usize, roles[(rng.next() % 3) as usize]);
        if !used.insert(from.address()) {
            continue;
        }
        let tx = match rng.next() % 5 {
            // Too much: rejected in the block.
            0 => n.sign(
                &from,
                vec![msg::transfer(to.address(), Amount(START_BALANCE * 10))],
            ),
            // Garbage bytes: rejected.
            1 => vec![0xde, 0xad, (rng.next() % 256) as u8],
            _ => n.sign(
                &from,
                vec![msg::transfer(
                    to.address(),
                    Amount(1 + u128::from(rng.next() % 500)),
                )],
            ),
        };
        txs.push(tx);
    }
    if rng.next().is_multiple_of(7) {
        txs.push(n.sign(
            &c.signer(0, Role::Admin),
            vec![msg::propose(
                "mint",
                pb::proposal_action::Action::Mint(pb::Mint {
                    amount: "100".into(),
                }),
            )],
        ));
    }
    txs
}

#[test]
fn two_instances_fed_the_same_blocks_agree_at_every_height_and_after_restart() {
    let c = Consortium::new(3, 2);
    let mut a = TestNode::start(&c);
    let mut b = TestNode::start(&c);
    assert_eq!(a.genesis_hash, b.genesis_hash);
    let mut rng = Lcg(42);
    let mut rejected = 0;
    for _ in 0..30 {
        let txs = random_block(&c, &a, &mut rng);
        let x = a.block(&txs);
        let y = b.block(&txs);
        assert_eq!(x.app_hash, y.app_hash, "height {}", a.height);
        assert_eq!(x.outcomes, y.outcomes);
        rejected += x.outcomes.iter().filter(|o| o.code != 0).count();
    }
    assert!(rejected > 0, "the sequence exercised rejected txs");

    // Restart `a` from disk: Info reports the last height and hash, and it keeps agreeing.
    let height = a.height;
    let hash = a.storage().committed().unwrap().unwrap().app_hash;
    let dir = std::mem::replace(&mut a.dir, tempfile::tempdir().unwrap());
    drop(a.node);
    a.node = Node::new(Storage::open(dir.path()).unwrap());
    a.dir = dir;
    let info = a.node.info().unwrap();
    assert_eq!(info.last_block_height.value(), height);
    assert_eq!(info.last_block_app_hash.as_bytes(), hash);
    for _ in 0..10 {
        let txs = random_block(&c, &a, &mut rng);
        assert_eq!(a.block(&txs).app_hash, b.block(&txs).app_hash);
    }
}

#[test]
fn genesis_app_hash_depends_on_the_consortium() {
    let c1 = Consortium::new(2, 1);
    let c2 = Consortium::new(2, 1);
    assert_ne!(
        TestNode::start(&c1).genesis_hash,
        TestNode::start(&c2).genesis_hash
    );
}

#[test]
fn init_chain_rejects_a_bad_genesis() {
    let c = Consortium::new(1, 1);
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(Storage::open(dir.path()).unwrap());
    assert!(
        node.init(CHAIN, b"{not json", &c.validators, T0, 1)
            .is_err()
    );
    let mut app_state = c.app_state();
    app_state.orgs.push(app_state.orgs[0].clone());
    let json = serde_json::to_vec(&app_state).unwrap();
    let err = node.init(CHAIN, &json, &c.validators, T0, 1).unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
    let json = serde_json::to_vec(&c.app_state()).unwrap();
    assert!(
        node.init(CHAIN, &json, &[], T0, 1).is_err(),
        "no validators"
    );
}
