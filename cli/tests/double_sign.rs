//! End-to-end: a validator's key run twice. The real CometBFT v0.38 binary and our app on
//! loopback (`ndctl devnet`, four validators); a fifth node starts with a copy of node3's
//! `priv_validator_key.json` and a fresh `priv_validator_state.json`, as a restored backup or a
//! pod scheduled twice would. When node3's key proposes, each copy proposes its own block and
//! prevotes it, so the key signs two different votes for one height and round; CometBFT turns
//! them into evidence, the app jails the key by its rule (`governance::jail`), CometBFT drops it
//! from the set and the other three validators go on.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{DevnetDir, ndctl};
use neurodata_abci::query;
use neurodata_client::{ChainAccess as _, NodeClient};
use neurodata_proto::chain::v1 as pb;
use pb::MisbehaviourOutcome as Outcome;
use tendermint_rpc::{Client, HttpClient, Paging};

const BASE_PORT: u16 = 29100;
const T: Duration = Duration::from_secs(90);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

struct Net {
    dir: DevnetDir,
    rpcs: Vec<String>,
}

impl Net {
    fn up() -> Net {
        let dir = DevnetDir::new("nd");
        let port = BASE_PORT.to_string();
        let out = ndctl(
            dir.path(),
            &["devnet", "up", "--validators", "4", "--base-port", &port],
        )
        .unwrap_or_else(|e| panic!("devnet up failed: {e}"));
        assert!(out.contains("producing blocks"), "{out}");
        let mut net = Net { dir, rpcs: vec![] };
        net.reload();
        net
    }

    fn reload(&mut self) {
        self.rpcs = self.dir.json("devnet.json")["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["rpc"].as_str().unwrap().to_owned())
            .collect();
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn height(&self, node: usize) -> Option<u64> {
        let c = HttpClient::new(self.rpcs[node].as_str()).ok()?;
        rt().block_on(async {
            c.status()
                .await
                .ok()
                .map(|s| s.sync_info.latest_block_height.value())
        })
    }

    fn wait_height(&self, node: usize, h: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.height(node).is_none_or(|x| x < h) {
            assert!(
                Instant::now() < deadline,
                "node{node} did not reach height {h} (at {:?})",
                self.height(node)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The misbehaviour records node `node`'s app holds, or why they could not be read.
    fn misbehaviours(&self, node: usize) -> Result<Vec<pb::Misbehaviour>, String> {
        let client = NodeClient::new(&self.rpcs[node]).map_err(|e| e.to_string())?;
        rt().block_on(client.record(query::misbehaviours()))
            .map(|l| l.map(|l| l.misbehaviours).unwrap_or_default())
            .map_err(|e| e.to_string())
    }

    /// CometBFT's validator set at node0's latest height.
    fn validators(&self) -> Vec<tendermint::validator::Info> {
        let client = HttpClient::new(self.rpcs[0].as_str()).unwrap();
        let h = tendermint::block::Height::try_from(self.height(0).expect("node0 up")).unwrap();
        rt().block_on(client.validators(h, Paging::All))
            .unwrap()
            .validators
    }

    /// Every node in `nodes` has the same header (hence app hash) at a common height.
    fn assert_converged(&self, nodes: &[usize]) {
        let top = nodes
            .iter()
            .map(|&n| self.height(n).expect("node up"))
            .min()
            .unwrap();
        let h = tendermint::block::Height::try_from(top).unwrap();
        let headers: Vec<_> = nodes
            .iter()
            .map(|&n| {
                let c = HttpClient::new(self.rpcs[n].as_str()).unwrap();
                rt().block_on(async { c.header(h).await.unwrap().header })
            })
            .collect();
        for (n, hd) in nodes.iter().zip(&headers) {
            assert_eq!(
                hd.app_hash, headers[0].app_hash,
                "node{n} app hash at {top}"
            );
            assert_eq!(hd.hash(), headers[0].hash(), "node{n} header at {top}");
        }
    }
}

#[test]
fn a_validator_key_run_twice_is_jailed_and_three_validators_go_on() {
    let mut net = Net::up();
    let spec = net.dir.json("devnet.json");
    let key3 = base64::engine::general_purpose::STANDARD
        .decode(spec["nodes"][3]["validator_key"].as_str().unwrap())
        .unwrap();

    // node4: its own node key and ports, node3's validator key, a signing state at height 0.
    ndctl(net.path(), &["devnet", "add-node"]).unwrap();
    net.reload();
    std::fs::copy(
        net.path().join("node3/config/priv_validator_key.json"),
        net.path().join("node4/config/priv_validator_key.json"),
    )
    .unwrap();
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(net.path().join("node4/data/priv_validator_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["height"], "0", "a fresh signing state");
    let started = Instant::now();
    ndctl(net.path(), &["devnet", "up", "--only", "4"]).unwrap();

    // The evidence reaches a block, and the app jails node3's key.
    let jailed = loop {
        let records = net.misbehaviours(0);
        if let Some(m) = records
            .iter()
            .flatten()
            .find(|m| m.outcome == Outcome::Jailed as i32)
        {
            break m.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no jailing within 120 s of starting the copy (node0 at {:?}, node4 at {:?}); \
             records: {records:?}",
            net.height(0),
            net.height(4)
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!(
        "jailed {:?} after {:?}: evidence at height {}, reported in block {}",
        jailed.name,
        started.elapsed(),
        jailed.evidence_height,
        jailed.reported_height
    );
    assert_eq!(jailed.pub_key, key3);
    assert_eq!(jailed.kind, pb::MisbehaviourKind::DuplicateVote as i32);
    assert_eq!(jailed.org_id, "medlab", "node3 is run by org 3 mod 3");
    assert!(jailed.evidence_height < jailed.reported_height);

    // CometBFT applies the removal two blocks after the block that made it.
    net.wait_height(0, jailed.reported_height + 2, T);
    let deadline = Instant::now() + T;
    loop {
        let vals = net.validators();
        if vals.len() == 3 {
            assert!(vals.iter().all(|v| v.pub_key.to_bytes() != key3));
            break;
        }
        assert!(Instant::now() < deadline, "node3's key still in {vals:?}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // The three others go on, and operators see what happened.
    let h = net.height(0).unwrap();
    net.wait_height(0, h + 3, T);
    let out = ndctl(
        net.path(),
        &["query", "misbehaviour", "--node", &net.rpcs[1]],
    )
    .unwrap();
    assert!(out.contains("duplicate_vote"), "{out}");
    assert!(out.contains(": jailed"), "{out}");
    assert!(out.contains("jailed validators:"), "{out}");
    let out = ndctl(net.path(), &["query", "validators", "--node", &net.rpcs[2]]).unwrap();
    assert!(out.contains("jailed (out of the set"), "{out}");

    // Every node, the two holders of the jailed key too, follows the same chain.
    let top = net.height(0).unwrap();
    for n in 1..=4 {
        net.wait_height(n, top, T);
    }
    net.assert_converged(&[0, 1, 2, 3, 4]);
}
