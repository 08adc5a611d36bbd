//! End-to-end: the real CometBFT v0.38 binary and our app as separate processes on loopback,
//! started by `ndctl devnet`, under faults. Each scenario ends by checking that every running node
//! has the same header and app hash at the same height. Networks are stopped on drop, also when a
//! test fails.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{DevnetDir, ndctl, ndctl_env};
use neurodata_abci::query::{self, Query};
use neurodata_client::gateway::{GatewayClient, GatewayTls};
use neurodata_client::{
    Answer, ChainAccess, ClientError, Committed, LightBlock, Signer, verify_proof,
};
use neurodata_proto::chain::v1 as pb;
use prost::Message as _;
use tendermint_rpc::{Client, HttpClient, Paging};

/// Scenarios run one at a time: four validators already fill two cores.
static SERIAL: Mutex<()> = Mutex::new(());

struct Net {
    dir: DevnetDir,
    rpcs: Vec<String>,
    /// Environment of the processes `ndctl devnet up` starts (app settings).
    env: Vec<(&'static str, String)>,
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl Net {
    fn up(base_port: u16) -> Net {
        Self::up_with(base_port, &[])
    }

    fn up_with(base_port: u16, extra: &[&str]) -> Net {
        Self::up_with_env(base_port, extra, vec![])
    }

    fn up_with_env(base_port: u16, extra: &[&str], env: Vec<(&'static str, String)>) -> Net {
        let dir = DevnetDir::new("nd");
        let mut net = Net {
            dir,
            rpcs: vec![],
            env,
        };
        let base_port = base_port.to_string();
        let args = [
            &[
                "devnet",
                "up",
                "--validators",
                "4",
                "--base-port",
                &base_port,
            ][..],
            extra,
        ]
        .concat();
        let out = ndctl_env(net.path(), &args, &net.env)
            .unwrap_or_else(|e| panic!("devnet up failed: {e}"));
        assert!(out.contains("producing blocks"), "{out}");
        net.reload();
        net
    }

    fn reload(&mut self) {
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.path().join("devnet.json")).unwrap())
                .unwrap();
        self.rpcs = spec["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["rpc"].as_str().unwrap().to_owned())
            .collect();
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cert(&self, org: &str, role: &str) -> (PathBuf, PathBuf) {
        let c = self.path().join("consortium").join(org);
        (c.join(format!("{role}.pem")), c.join(format!("{role}.key")))
    }

    /// `ndctl tx` as ORG/ROLE against node `node`.
    fn tx(&self, node: usize, org: &str, role: &str, args: &[&str]) -> Result<String, String> {
        let (cert, key) = self.cert(org, role);
        let mut full = vec![
            "tx".to_string(),
            "--node".into(),
            self.rpcs[node].clone(),
            "--signer-cert".into(),
            cert.display().to_string(),
            "--signer-key".into(),
            key.display().to_string(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        ndctl(self.path(), &refs)
    }

    fn pids(&self, node: usize) -> (u32, u32) {
        let p: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.path().join("pids.json")).unwrap()).unwrap();
        let e = p["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[0] == node)
            .expect("node running");
        (e[1].as_u64().unwrap() as u32, e[2].as_u64().unwrap() as u32)
    }

    fn signal(&self, pid: u32, sig: &str) {
        assert!(
            Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status()
                .unwrap()
                .success()
        );
    }

    fn start(&self, node: usize) {
        ndctl_env(
            self.path(),
            &["devnet", "up", "--only", &node.to_string()],
            &self.env,
        )
        .unwrap_or_else(|e| panic!("restart node{node}: {e}"));
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
        loop {
            if self.height(node).is_some_and(|x| x >= h) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node{node} did not reach height {h} (at {:?})",
                self.height(node)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Polls node0's validator set until `found` returns Some (bounded by `T`).
    /// Waits until the validator of base64 ed25519 `key` is in the set, then asserts that it
    /// signs the next block's commit; returns its address.
    fn wait_signing(&self, client: &HttpClient, key: &str, node: &str) -> tendermint::account::Id {
        let pub_key = tendermint::PublicKey::from_raw_ed25519(&base64_decode(key)).unwrap();
        let address = self.wait_validators(
            client,
            &format!("{node} to join the validator set"),
            |vals| {
                vals.iter()
                    .find(|v| v.pub_key == pub_key)
                    .map(|v| v.address)
            },
        );
        let h = self.height(0).unwrap();
        self.wait_height(0, h + 2, T);
        let commit = rt()
            .block_on(client.commit(tendermint::block::Height::try_from(h + 1).unwrap()))
            .unwrap();
        assert!(
            commit
                .signed_header
                .commit
                .signatures
                .iter()
                .any(|s| s.validator_address() == Some(address)),
            "{node} signs blocks"
        );
        address
    }

    fn wait_validators<R>(
        &self,
        client: &HttpClient,
        what: &str,
        found: impl Fn(&[tendermint::validator::Info]) -> Option<R>,
    ) -> R {
        let deadline = Instant::now() + T;
        loop {
            let height = tendermint::block::Height::try_from(self.height(0).expect("node0 up"));
            let vals = rt()
                .block_on(client.validators(height.unwrap(), Paging::All))
                .unwrap();
            if let Some(r) = found(&vals.validators) {
                return r;
            }
            assert!(Instant::now() < deadline, "waited in vain for {what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every node in `nodes` has the same header (hence app hash) at a common height.
    fn assert_converged(&self, nodes: &[usize]) {
        let top = nodes
            .iter()
            .map(|&n| self.height(n).expect("node up"))
            .min()
            .unwrap();
        for &n in nodes {
            self.wait_height(n, top, Duration::from_secs(60));
        }
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

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const ALL: [usize; 4] = [0, 1, 2, 3];
const T: Duration = Duration::from_secs(90);

#[test]
fn txs_commit_on_four_validators_and_query_proofs_verify() {
    let _g = lock();
    let net = Net::up(27000);
    let (to, _) = net.cert("healthtech", "buyer");
    let out = net
        .tx(
            1,
            "medlab",
            "buyer",
            &["transfer", "--to", to.to_str().unwrap(), "--amount", "77"],
        )
        .unwrap();
    assert!(out.contains("committed tx"), "{out}");
    // Node 3 may be a block behind node 1; its answer must come from a state that has the tx.
    let committed: u64 = out
        .split("at height ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("no commit height in {out}"));
    net.wait_height(3, committed, T);
    // The query verifies the proof against the next block's header before printing.
    let q = ndctl(
        net.path(),
        &[
            "query",
            "account",
            to.to_str().unwrap(),
            "--node",
            &net.rpcs[3],
        ],
    )
    .unwrap();
    assert!(q.contains("balance 1000077 NRC"), "{q}");
    assert!(q.contains("proof verified"), "{q}");
    net.assert_converged(&ALL);
}

#[test]
fn a_killed_validator_catches_up_and_a_killed_app_replays() {
    let _g = lock();
    let net = Net::up(27100);
    let (comet, abci) = net.pids(3);
    net.signal(comet, "KILL");
    net.signal(abci, "KILL");
    let h = net.height(0).unwrap();
    net.wait_height(0, h + 3, T); // three of four keep making blocks
    net.start(3);
    net.wait_height(3, h + 4, T);
    net.assert_converged(&ALL);

    // Only the app dies: CometBFT stops on the lost ABCI connection; on restart the handshake
    // replays what the app had not committed.
    let (_, abci) = net.pids(2);
    net.signal(abci, "KILL");
    let h = net.height(0).unwrap();
    net.wait_height(0, h + 2, T);
    net.start(2);
    net.wait_height(2, h + 3, T);
    net.assert_converged(&ALL);
}

#[test]
fn a_paused_or_isolated_validator_catches_up() {
    let _g = lock();
    let net = Net::up(27200);
    let (comet, abci) = net.pids(1);
    net.signal(comet, "STOP");
    net.signal(abci, "STOP");
    let h = net.height(0).unwrap();
    std::thread::sleep(Duration::from_secs(10));
    assert!(net.height(0).unwrap() > h + 2, "the others kept going");
    net.signal(comet, "CONT");
    net.signal(abci, "CONT");
    let top = net.height(0).unwrap();
    net.wait_height(1, top, T);
    net.assert_converged(&ALL);

    // Cut node1 off its peers for 10 s: its CometBFT restarts with no peers, no peer exchange and
    // its p2p listener on another port, so nobody can reach it; its app keeps running.
    let (comet, _) = net.pids(1);
    net.signal(comet, "TERM");
    let deadline = Instant::now() + T;
    while Path::new(&format!("/proc/{comet}/cmdline")).exists()
        && std::fs::read_to_string(format!("/proc/{comet}/stat")).is_ok_and(|s| !s.contains(") Z"))
    {
        assert!(Instant::now() < deadline, "cometbft of node1 did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.path().join("devnet.json")).unwrap()).unwrap();
    let home = net.path().join("node1");
    let log = std::fs::File::create(home.join("isolated.log")).unwrap();
    let mut isolated = Command::new(spec["cometbft"].as_str().unwrap())
        .arg("start")
        .arg("--home")
        .arg(&home)
        .arg("--p2p.persistent_peers=")
        .arg("--p2p.pex=false")
        .arg("--p2p.laddr=tcp://127.0.0.1:27219")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    net.wait_height(1, 1, T); // its RPC answers again
    let alone = net.height(1).unwrap();
    let others = net.height(0).unwrap();
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        net.height(1).unwrap() <= alone,
        "an isolated validator cannot make blocks alone"
    );
    assert!(
        net.height(0).unwrap() > others + 2,
        "the other three kept going"
    );
    isolated.kill().unwrap();
    isolated.wait().unwrap();
    net.start(1);
    let top = net.height(0).unwrap();
    net.wait_height(1, top, T);
    net.assert_converged(&ALL);
}

#[test]
fn two_of_four_down_halts_the_chain_and_one_back_resumes_it() {
    let _g = lock();
    let net = Net::up(27300);
    let (to, _) = net.cert("datacorp", "provider");
    net.tx(
        0,
        "medlab",
        "provider",
        &["transfer", "--to", to.to_str().unwrap(), "--amount", "5"],
    )
    .unwrap();
    ndctl(
        net.path(),
        &["devnet", "down", "--only", "2", "--only", "3"],
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let h = net.height(0).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        net.height(0).unwrap() <= h + 1,
        "no 2/3 majority: the chain must halt"
    );
    net.start(2);
    net.wait_height(0, h + 3, T);
    net.start(3);
    net.wait_height(3, h + 3, T);
    net.assert_converged(&ALL);
    // Nothing was lost: the transfer before the halt is still there.
    let q = ndctl(
        net.path(),
        &[
            "query",
            "account",
            to.to_str().unwrap(),
            "--node",
            &net.rpcs[2],
        ],
    )
    .unwrap();
    assert!(q.contains("balance 1000005 NRC"), "{q}");
}

#[test]
fn a_validator_added_by_governance_signs_blocks_and_a_removed_one_leaves() {
    let _g = lock();
    let mut net = Net::up_with(27400, &["--gateways"]);
    let out = ndctl(net.path(), &["devnet", "add-node"]).unwrap();
    let key = out
        .split("validator key ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_owned();
    net.reload();
    net.start(4);
    let top = net.height(0).unwrap();
    net.wait_height(4, top, T); // block sync from genesis through our app

    let propose = |power: &str, key: &str, org: &str| {
        net.tx(
            0,
            "medlab",
            "admin",
            &[
                "propose",
                "set-validator",
                "--pub-key",
                key,
                "--power",
                power,
                "--org",
                org,
            ],
        )
        .unwrap()
    };
    let vote = |id: &str| {
        // Nodes 1 and 2 check the vote against their own committed state, which must hold the
        // proposal first.
        let top = net.height(0).expect("node0 up");
        net.wait_height(1, top, T);
        net.wait_height(2, top, T);
        net.tx(1, "healthtech", "admin", &["vote", "--proposal", id])
            .unwrap();
        net.tx(2, "datacorp", "admin", &["vote", "--proposal", id])
            .unwrap();
    };
    propose("10", &key, "medlab");
    vote("1");
    let client = HttpClient::new(net.rpcs[0].as_str()).unwrap();
    // Validator updates take effect two blocks after the block that made them.
    net.wait_signing(&client, &key, "node4");
    let new_key = tendermint::PublicKey::from_raw_ed25519(&base64_decode(&key)).unwrap();

    // Audit finding: two passing set-validator proposals for one key whose last approvals land
    // in one block (the last voter sends both votes in one tx) used to hand CometBFT two updates
    // for that key, and every node halted with "duplicate entry". The chain keeps going and the
    // last update wins.
    propose("20", &key, "medlab");
    propose("30", &key, "medlab");
    let top = net.height(0).expect("node0 up");
    net.wait_height(1, top, T);
    net.wait_height(2, top, T);
    net.tx(
        1,
        "healthtech",
        "admin",
        &["vote", "--proposal", "2", "--proposal", "3"],
    )
    .unwrap();
    net.tx(
        2,
        "datacorp",
        "admin",
        &["vote", "--proposal", "2", "--proposal", "3"],
    )
    .unwrap();
    let passed = net.height(2).expect("node2 up");
    for node in [0, 1, 2, 3, 4] {
        net.wait_height(node, passed + 4, T);
    }
    net.wait_validators(&client, "node4 to get power 30", |vals| {
        vals.iter()
            .any(|v| v.pub_key == new_key && v.power.value() == 30)
            .then_some(())
    });

    // Remove node0's validator.
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.path().join("devnet.json")).unwrap()).unwrap();
    let key0 = spec["nodes"][0]["validator_key"]
        .as_str()
        .unwrap()
        .to_owned();
    propose("0", &key0, "");
    vote("4");
    let key0 = tendermint::PublicKey::from_raw_ed25519(&base64_decode(&key0)).unwrap();
    let left = net.wait_validators(&client, "node0 to leave the validator set", |vals| {
        (!vals.iter().any(|v| v.pub_key == key0)).then_some(vals.len())
    });
    assert_eq!(left, 4);
    net.assert_converged(&[0, 1, 2, 3, 4]);
    rt().block_on(verified_reads_through_a_lying_gateway(&net));
}

/// A gateway (or node) that lies about the latest state: it answers with the value and proof
/// of the state at height `at`, claiming the latest height, and with `forge_header` also
/// rewrites the app hash in the later headers to the one that old proof verifies against, so
/// the answer is consistent in everything but the commit signatures.
struct Liar<'a, C> {
    inner: &'a C,
    at: u64,
    forge_header: bool,
}

impl<C: ChainAccess> ChainAccess for Liar<'_, C> {
    async fn chain_id(&self) -> Result<String, ClientError> {
        self.inner.chain_id().await
    }

    async fn latest_height(&self) -> Result<u64, ClientError> {
        self.inner.latest_height().await
    }

    async fn read(&self, q: &Query, height: u64, prove: bool) -> Result<Answer, ClientError> {
        let real = self.inner.read(q, height, prove).await?;
        let old = self.inner.read(q, self.at, prove).await?;
        Ok(Answer {
            height: real.height,
            ..old
        })
    }

    async fn light_block(&self, height: u64) -> Result<LightBlock, ClientError> {
        let mut lb = self.inner.light_block(height).await?;
        if self.forge_header && height > self.at + 1 {
            let old = self.inner.light_block(self.at + 1).await?;
            lb.signed_header.header.app_hash = old.signed_header.header.app_hash;
        }
        Ok(lb)
    }

    async fn broadcast(&self, tx: Vec<u8>) -> Result<Committed, ClientError> {
        self.inner.broadcast(tx).await
    }
}

/// After governance added a validator, re-weighted it and removed a genesis one: a light client
/// trusting only the genesis validators verifies reads through healthtech's gateway, and refuses
/// a forged header and a proof from another height.
async fn verified_reads_through_a_lying_gateway(net: &Net) {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.path().join("devnet.json")).unwrap()).unwrap();
    let url = spec["nodes"][1]["gateway"]["url"].as_str().unwrap();
    let org = net.path().join("consortium/healthtech");
    let tls = GatewayTls::from_files(
        &org.join("ca.pem"),
        &org.join("admin.pem"),
        &org.join("admin.key"),
    )
    .unwrap();
    let gateway = GatewayClient::connect(url, Some(tls)).await.unwrap();
    let admin = Signer::load(&org, "admin").unwrap();
    let account = query::account(admin.address()).query;

    // The signers of the latest blocks are not the genesis set, and the client follows.
    let light = common::light(net.path());
    let honest = light.read(&gateway, &account, 0).await.unwrap();
    let nonce = pb::Account::decode(honest.value.as_deref().unwrap())
        .unwrap()
        .nonce;
    assert!(nonce >= 3, "healthtech's admin voted three times");

    // Lies: the account as it was at height 2, before the admin's votes, claimed as the
    // latest state.
    let stale = Liar {
        inner: &gateway,
        at: 2,
        forge_header: false,
    };
    let forged = Liar {
        forge_header: true,
        ..stale
    };
    // The forged answer is self-consistent: its proof verifies against its forged header, which
    // is all a proof check without the commit's signatures could see.
    let answer = forged.read(&account, 0, true).await.unwrap();
    let header = forged.light_block(answer.height + 1).await.unwrap();
    let forged_app_hash: [u8; 32] = header
        .signed_header
        .header
        .app_hash
        .as_bytes()
        .try_into()
        .unwrap();
    assert!(
        verify_proof(
            &answer.key,
            (!answer.value.is_empty()).then_some(answer.value.as_slice()),
            &answer.proof,
            forged_app_hash
        )
        .is_ok()
    );
    for (liar, what) in [
        (&stale, "a proof from another height"),
        (&forged, "a forged header"),
    ] {
        let light = common::light(net.path());
        match light.read(liar, &account, 0).await {
            Err(ClientError::Proof(reason)) => eprintln!("{what} refused: {reason}"),
            other => panic!("{what} accepted: {other:?}"),
        }
    }
}

#[test]
fn txs_of_a_revoked_certificate_are_rejected_on_every_node() {
    let _g = lock();
    let net = Net::up(27500);
    let (trainer, _) = net.cert("medlab", "trainer");
    ndctl(
        net.path(),
        &[
            "ca",
            "revoke",
            "--node",
            &net.rpcs[0],
            "--cert",
            net.cert("medlab", "admin").0.to_str().unwrap(),
            "--key",
            net.cert("medlab", "admin").1.to_str().unwrap(),
            trainer.to_str().unwrap(),
        ],
    )
    .unwrap();
    // A node that has not yet committed the revoking block would still admit the tx to its
    // mempool (CheckTx runs against its last committed state) and the tx would then never be
    // included; wait until every node has the block so each must refuse it up front.
    let top = net.height(0).expect("node0 up");
    for node in ALL {
        net.wait_height(node, top, T);
    }
    let (to, _) = net.cert("medlab", "buyer");
    for node in ALL {
        let err = net
            .tx(
                node,
                "medlab",
                "trainer",
                &["transfer", "--to", to.to_str().unwrap(), "--amount", "1"],
            )
            .unwrap_err();
        assert!(
            err.contains("membership code 29") && err.contains("revoked"),
            "node{node}: {err}"
        );
    }
    net.assert_converged(&ALL);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Waits until process `pid` has ended (or is a zombie nobody reaped yet).
fn wait_dead(pid: u32, what: &str) {
    let deadline = Instant::now() + T;
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        assert!(Instant::now() < deadline, "{what} did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The app of node 3 killed at each step of a block (its fault points: inside FinalizeBlock,
/// between FinalizeBlock and Commit, before and after Commit's write), and its CometBFT WAL cut
/// short: each time the node restarts, recovers through the handshake and follows the chain
/// with the others' app hash; every transfer sent meanwhile is applied exactly once.
#[test]
fn a_node_crashed_inside_a_block_step_or_with_a_cut_wal_recovers_through_the_handshake() {
    let _g = lock();
    let net = Net::up(27600);
    let (to, _) = net.cert("healthtech", "buyer");
    let to = to.to_str().unwrap().to_owned();
    let send = || {
        let out = net
            .tx(
                0,
                "medlab",
                "buyer",
                &["transfer", "--to", &to, "--amount", "1"],
            )
            .unwrap();
        assert!(out.contains("committed tx"), "{out}");
    };
    let node3 = net.path().join("node3");
    let mut sent = 0;
    for point in ["finalize", "before-commit", "commit-write", "after-write"] {
        let (comet, abci) = net.pids(3);
        net.signal(comet, "KILL");
        net.signal(abci, "KILL");
        wait_dead(abci, "node3's app");
        let at = net.height(0).unwrap() + 4;
        let fault = format!("{point}@{at}");
        common::ndctl_env(
            net.path(),
            &["devnet", "up", "--only", "3"],
            &[("NEURODATA_FAULT", fault.clone())],
        )
        .unwrap_or_else(|e| panic!("start node3 with {fault}: {e}"));
        send();
        sent += 1;
        let (comet, abci) = net.pids(3);
        wait_dead(abci, &format!("node3's app armed with {fault}"));
        let log = std::fs::read_to_string(node3.join("abci.log")).unwrap();
        assert!(
            log.contains(&format!("fault point {fault} reached")),
            "node3's app stopped elsewhere than {fault}"
        );
        // CometBFT stops on the lost ABCI connection; make sure before restarting both.
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(comet.to_string())
            .status();
        wait_dead(comet, "node3's cometbft");
        net.start(3);
        let top = net.height(0).unwrap();
        net.wait_height(3, top + 1, T);
        net.assert_converged(&ALL);
    }

    // CometBFT's consensus WAL cut in the middle of a record: on restart it repairs the WAL (or
    // replays what it can) and catches up from its peers.
    let (comet, abci) = net.pids(3);
    net.signal(comet, "KILL");
    net.signal(abci, "KILL");
    wait_dead(comet, "node3's cometbft");
    let wal = node3.join("data/cs.wal/wal");
    let len = std::fs::metadata(&wal).unwrap().len();
    assert!(len > 64, "a WAL with records ({len} bytes)");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - len / 3 - 7)
        .unwrap();
    send();
    sent += 1;
    net.start(3);
    let top = net.height(0).unwrap();
    net.wait_height(3, top + 1, T);
    net.assert_converged(&ALL);

    // Exactly once: node 3's proven state holds every transfer, no more.
    let q = ndctl(
        net.path(),
        &["query", "account", &to, "--node", &net.rpcs[3]],
    )
    .unwrap();
    assert!(
        q.contains(&format!("balance {} NRC", 1_000_000 + sent)),
        "{sent} transfers of 1 NRC: {q}"
    );
}

/// Restarts the network with every CometBFT dialling its peers through the test's proxies and
/// peer exchange off (a node never learns another's real address), so the test decides which
/// links are up.
fn through_proxies(net: &Net, base: u16) -> common::proxy::Network {
    use common::proxy::Network;
    ndctl(net.path(), &["devnet", "down"]).unwrap();
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.path().join("devnet.json")).unwrap()).unwrap();
    let nodes = spec["nodes"].as_array().unwrap();
    let p2p: Vec<u16> = nodes
        .iter()
        .map(|n| n["p2p_port"].as_u64().unwrap() as u16)
        .collect();
    for i in 0..nodes.len() {
        let path = net.path().join(format!("node{i}/config/config.toml"));
        let mut doc: toml_edit::DocumentMut =
            std::fs::read_to_string(&path).unwrap().parse().unwrap();
        let peers: Vec<String> = (0..nodes.len())
            .filter(|&j| j != i)
            .map(|j| {
                let id = nodes[j]["node_id"].as_str().unwrap();
                format!("{id}@127.0.0.1:{}", Network::port(base, i, j))
            })
            .collect();
        doc["p2p"]["persistent_peers"] = toml_edit::value(peers.join(","));
        doc["p2p"]["pex"] = toml_edit::value(false);
        std::fs::write(&path, doc.to_string()).unwrap();
    }
    let proxies = Network::start(base, &p2p);
    ndctl(net.path(), &["devnet", "up"]).unwrap();
    proxies
}

/// The highest height any node reports.
fn top(net: &Net) -> u64 {
    (0..4).filter_map(|n| net.height(n)).max().unwrap_or(0)
}

/// Jepsen-style partitions through loopback proxies: 2|2 halts and resumes when healed, 1|3
/// keeps the majority going while the minority catches up afterwards, a bridge node carries
/// consensus between two sides that cannot see each other, and flapping, slowed links leave
/// the chain live. Every node ends with the same header and app hash, and every transfer sent
/// is applied exactly once.
#[test]
fn partitions_halt_or_continue_by_majority_and_heal() {
    let _g = lock();
    let net = Net::up(27800);
    let proxies = through_proxies(&net, 27850);
    let start = top(&net);
    net.wait_height(3, start + 2, T);
    let (to, _) = net.cert("healthtech", "buyer");
    let to = to.to_str().unwrap().to_owned();
    let mut sent = 0u64;
    let mut send = |node: usize| {
        let out = net
            .tx(
                node,
                "medlab",
                "buyer",
                &["transfer", "--to", &to, "--amount", "1"],
            )
            .unwrap();
        assert!(out.contains("committed tx"), "{out}");
        sent += 1;
    };
    send(0);

    // 2|2: neither side holds more than 2/3 of the power.
    proxies.partition(&[0, 1], &[2, 3]);
    std::thread::sleep(Duration::from_secs(3));
    let halted = top(&net);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(top(&net), halted, "no side of a 2|2 split can commit");
    proxies.heal_all();
    for n in ALL {
        net.wait_height(n, halted + 3, T);
    }
    net.assert_converged(&ALL);

    // 1|3: the three go on (a transfer commits among them); node 3 stands still, then catches up.
    proxies.partition(&[3], &[0, 1, 2]);
    std::thread::sleep(Duration::from_secs(2));
    let alone = net.height(3).unwrap();
    send(0);
    net.wait_height(0, top(&net) + 3, T);
    assert!(
        net.height(3).unwrap() <= alone + 1,
        "a lone validator cannot commit"
    );
    proxies.heal_all();
    net.wait_height(3, net.height(0).unwrap(), T);
    net.assert_converged(&ALL);

    // A bridge: node 1 cannot reach 2 or 3, node 0 reaches everyone and relays.
    proxies.cut(1, 2);
    proxies.cut(1, 3);
    let h = top(&net);
    send(1);
    for n in ALL {
        net.wait_height(n, h + 3, T);
    }
    proxies.heal_all();
    net.assert_converged(&ALL);

    // Flapping: every 300 ms one link (a fixed pseudo-random sequence) goes down or up, every
    // link held back 50 ms, for 12 s; a transfer goes through meanwhile.
    proxies.delay_all(Duration::from_millis(50));
    let h = top(&net);
    let mut x: u32 = 0x9e37_79b9;
    let mut down = std::collections::BTreeSet::new();
    let flapping_until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < flapping_until {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let a = (x % 4) as usize;
        let b = (a + 1 + (x / 4 % 3) as usize) % 4;
        let pair = (a.min(b), a.max(b));
        if down.remove(&pair) {
            proxies.heal(pair.0, pair.1);
        } else {
            proxies.cut(pair.0, pair.1);
            down.insert(pair);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    proxies.heal_all();
    proxies.delay_all(Duration::ZERO);
    send(2);
    for n in ALL {
        net.wait_height(n, h + 3, T);
    }
    net.assert_converged(&ALL);

    // Exactly once, on every node's proven state.
    for n in ALL {
        let q = ndctl(
            net.path(),
            &["query", "account", &to, "--node", &net.rpcs[n]],
        )
        .unwrap();
        assert!(
            q.contains(&format!("balance {} NRC", 1_000_000 + sent)),
            "node{n} after {sent} transfers of 1 NRC: {q}"
        );
    }
}

/// Node 3's app runs with its clock 30 days behind (libfaketime: every certificate of the
/// consortium is "not yet valid" by that clock). Certificate validity follows block time, which
/// CometBFT agrees on from the validators' votes, so a transfer sent through node 3 is checked and
/// committed like any other; block times stay strictly increasing; all nodes converge.
/// (libfaketime hooks libc's clock calls: it skews our Rust app, not CometBFT, whose Go runtime
/// reads the clock through the vDSO.)
#[test]
fn a_node_whose_app_clock_is_skewed_still_judges_certificates_by_block_time() {
    let _g = lock();
    let faketime = glob_one("/usr/lib", "faketime/libfaketime.so.1")
        .expect("libfaketime is missing: scripts/install-deps.sh installs it");
    // A wrapper the devnet starts as its app: skewed only where NEURODATA_SKEW is set.
    let wrap = tempfile::tempdir().unwrap();
    let real = std::env::var("NEURODATA_ABCI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_BIN_EXE_ndctl")).with_file_name("neurodata-abci")
        });
    let app = wrap.path().join("neurodata-abci");
    std::fs::write(
        &app,
        format!(
            "#!/bin/sh\nif [ -n \"$NEURODATA_SKEW\" ]; then\n  export LD_PRELOAD={} FAKETIME=\"$NEURODATA_SKEW\" FAKETIME_DONT_FAKE_MONOTONIC=1\nfi\nexec {} \"$@\"\n",
            faketime.display(),
            real.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&app).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&app, perms).unwrap();

    let net = Net::up_with(28400, &["--abci", app.to_str().unwrap()]);
    let (comet, abci) = net.pids(3);
    net.signal(comet, "KILL");
    net.signal(abci, "KILL");
    wait_dead(abci, "node3's app");
    wait_dead(comet, "node3's cometbft");
    common::ndctl_env(
        net.path(),
        &["devnet", "up", "--only", "3"],
        &[("NEURODATA_SKEW", "-30d".to_owned())],
    )
    .unwrap();
    net.wait_height(3, net.height(0).unwrap(), T);

    // The skew took: the app's log lines are dated 30 days back.
    let month_ago = Command::new("date")
        .args(["-u", "-d", "-30 days", "+%Y-%m-%d"])
        .output()
        .unwrap();
    let month_ago = String::from_utf8(month_ago.stdout).unwrap();
    let log = std::fs::read_to_string(net.path().join("node3/abci.log")).unwrap();
    let resumed = log.lines().rfind(|l| l.contains("resuming")).unwrap();
    assert!(
        resumed.starts_with(month_ago.trim()),
        "not skewed: {resumed}"
    );

    // CheckTx and FinalizeBlock on node 3 judge the sender's certificate at block time.
    let (to, _) = net.cert("healthtech", "buyer");
    let out = net
        .tx(
            3,
            "medlab",
            "buyer",
            &["transfer", "--to", to.to_str().unwrap(), "--amount", "5"],
        )
        .unwrap();
    assert!(out.contains("committed tx"), "{out}");
    let h = net.height(0).unwrap();
    net.wait_height(3, h + 2, T);
    net.assert_converged(&ALL);

    // Block times strictly increase, on the skewed node's chain as on the others'.
    let c = HttpClient::new(net.rpcs[3].as_str()).unwrap();
    let top = net.height(3).unwrap();
    let mut last = None;
    let mut from = 1;
    while from <= top {
        let to_h = (from + 19).min(top);
        let metas = rt()
            .block_on(c.blockchain(
                tendermint::block::Height::try_from(from).unwrap(),
                tendermint::block::Height::try_from(to_h).unwrap(),
            ))
            .unwrap()
            .block_metas;
        let mut metas: Vec<_> = metas.into_iter().map(|m| m.header).collect();
        metas.sort_by_key(|h| h.height);
        for hd in metas {
            if let Some(prev) = last {
                assert!(
                    hd.time > prev,
                    "block {} time {} after {}",
                    hd.height,
                    hd.time,
                    prev
                );
            }
            last = Some(hd.time);
        }
        from = to_h + 1;
    }
}

/// The one path matching `dir/*/suffix`.
fn glob_one(dir: &str, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(suffix))
        .find(|p| p.exists())
}

/// State sync and pruning on the real chain: validators take snapshots every 5 heights and keep
/// the last 12 heights; a new node restores the newest snapshot (verified by CometBFT's light
/// client against the app hash), follows the chain, becomes a validator by governance and signs
/// blocks. Heights it never executed, and heights the validators pruned, answer a clear error.
#[test]
fn a_new_validator_joins_by_state_sync_and_pruned_heights_answer_a_clear_error() {
    let _g = lock();
    let env = vec![
        ("NEURODATA_SNAPSHOT_INTERVAL", "5".to_string()),
        ("NEURODATA_PRUNING_KEEP_RECENT", "12".to_string()),
        // Three kept: a snapshot is not removed under a joining node while it fetches chunks.
        ("NEURODATA_SNAPSHOT_KEEP", "3".to_string()),
    ];
    let mut net = Net::up_with_env(29400, &[], env);
    let (to, _) = net.cert("healthtech", "buyer");
    let to = to.display().to_string();
    let pay = |net: &Net, node: usize, amount: &str| {
        let out = net
            .tx(
                node,
                "medlab",
                "buyer",
                &["transfer", "--to", &to, "--amount", amount],
            )
            .unwrap();
        assert!(out.contains("committed tx"), "{out}");
    };
    for amount in ["21", "22", "23"] {
        pay(&net, 0, amount);
    }
    net.wait_height(0, 22, T);
    // Snapshots of the newest three multiples of 5 are on every validator's disk.
    let snaps: Vec<u64> = std::fs::read_dir(net.path().join("node1/snapshots"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    assert!(
        snaps.iter().all(|h| h.is_multiple_of(5) && *h >= 10),
        "{snaps:?}"
    );

    // A validator's pruned height answers a clear error; a recent one answers with a proof.
    let medlab = buyer_address(&net, "medlab");
    let client0 = HttpClient::new(net.rpcs[0].as_str()).unwrap();
    let at = |client: &HttpClient, height: u64| {
        rt().block_on(client.abci_query(
            Some(query::account(medlab).query.path().to_owned()),
            query::account(medlab).query.data(),
            Some(tendermint::block::Height::try_from(height).unwrap()),
            true,
        ))
        .unwrap()
    };
    let old = at(&client0, 2);
    assert_ne!(old.code.value(), 0);
    assert!(old.log.contains("height 2 was pruned"), "{}", old.log);
    let recent = net.height(0).unwrap() - 1;
    assert_eq!(
        at(&client0, recent).code.value(),
        0,
        "{}",
        at(&client0, recent).log
    );

    // A new node joins by state sync: it restores a snapshot instead of replaying from genesis.
    let out = ndctl(net.path(), &["devnet", "add-node", "--state-sync"]).unwrap();
    assert!(out.contains("joins by state sync"), "{out}");
    let key = out
        .split("validator key ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_owned();
    net.reload();
    net.start(4);
    let top = net.height(0).unwrap();
    net.wait_height(4, top, T);
    let log = std::fs::read_to_string(net.path().join("node4/abci.log")).unwrap();
    assert!(log.contains("state restored from a snapshot"), "{log}");
    let restored: u64 = log
        .lines()
        .find(|l| l.contains("state restored from a snapshot"))
        .and_then(|l| l.split("height=").nth(1))
        .and_then(|h| h.split_whitespace().next())
        .and_then(|h| h.parse().ok())
        .unwrap();
    assert!(
        restored >= 15 && restored.is_multiple_of(5),
        "restored at {restored}"
    );
    let client4 = HttpClient::new(net.rpcs[4].as_str()).unwrap();
    let before = at(&client4, restored - 1);
    assert!(
        before
            .log
            .contains(&format!("height {} was pruned", restored - 1)),
        "{}",
        before.log
    );
    // From the snapshot on, it answers as the validators do (node0 may have pruned `restored`
    // itself by now: compare at a recent height).
    let recent = net.height(4).unwrap() - 1;
    let (mine, theirs) = (at(&client4, recent), at(&client0, recent));
    assert_eq!(mine.code.value(), 0, "{}", mine.log);
    assert_eq!(theirs.code.value(), 0, "{}", theirs.log);
    assert_eq!(mine.value, theirs.value);

    // Governance makes it a validator, and it signs blocks.
    net.tx(
        0,
        "medlab",
        "admin",
        &[
            "propose",
            "set-validator",
            "--pub-key",
            &key,
            "--power",
            "10",
            "--org",
            "medlab",
        ],
    )
    .unwrap();
    let top = net.height(0).unwrap();
    net.wait_height(1, top, T);
    net.wait_height(2, top, T);
    net.tx(1, "healthtech", "admin", &["vote", "--proposal", "1"])
        .unwrap();
    net.tx(2, "datacorp", "admin", &["vote", "--proposal", "1"])
        .unwrap();
    net.wait_signing(&client0, &key, "node4");
    pay(&net, 4, "24");
    net.assert_converged(&[0, 1, 2, 3, 4]);
    let balance = ndctl(
        net.path(),
        &["query", "account", &to, "--node", &net.rpcs[4]],
    )
    .unwrap();
    assert!(balance.contains("balance 1000090 NRC"), "{balance}");
}

fn buyer_address(net: &Net, org: &str) -> neurodata_abci::address::Address {
    let (cert, _) = net.cert(org, "buyer");
    let cert = openssl::x509::X509::from_pem(&std::fs::read(cert).unwrap()).unwrap();
    neurodata_abci::address::Address(neurodata_certs::fingerprint(&cert).unwrap())
}

/// The build of the app that knows the rehearsal upgrade (`abci-app/examples/
/// neurodata_abci_next.rs`, built by `cargo test` with the other examples).
fn next_build() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_ndctl"));
    let next = exe.with_file_name("examples").join("neurodata_abci_next");
    assert!(
        next.exists(),
        "{} is missing: cargo build -p neurodata-abci --example neurodata_abci_next",
        next.display()
    );
    next
}

fn min_fee(client: &HttpClient) -> String {
    let q = query::params();
    let r = rt()
        .block_on(client.abci_query(Some(q.query.path().to_owned()), q.query.data(), None, false))
        .unwrap();
    pb::Params::decode(r.value.as_slice()).unwrap().min_fee
}

/// A governance-scheduled upgrade: every node of the current build stops at the upgrade height
/// with a message and nothing of that height executed; the next build (which differs by the
/// upgrade's state migration) continues the chain from the same block on every node, the
/// migration's effect in the state; the old build then refuses the migrated state.
#[test]
fn a_scheduled_upgrade_stops_the_old_build_at_its_height_and_the_new_build_migrates_and_goes_on() {
    let _g = lock();
    let next = next_build();
    let net = Net::up(29700);
    let client = HttpClient::new(net.rpcs[0].as_str()).unwrap();
    assert_eq!(min_fee(&client), "1");
    let at = net.height(0).unwrap() + 25;
    let at_s = at.to_string();
    net.tx(
        0,
        "medlab",
        "admin",
        &[
            "propose",
            "schedule-upgrade",
            "--name",
            "rehearsal-v2",
            "--height",
            &at_s,
            "--info",
            "rehearsal build",
        ],
    )
    .unwrap();
    let top = net.height(0).unwrap();
    net.wait_height(1, top, T);
    net.wait_height(2, top, T);
    net.tx(1, "healthtech", "admin", &["vote", "--proposal", "1"])
        .unwrap();
    net.tx(2, "datacorp", "admin", &["vote", "--proposal", "1"])
        .unwrap();
    let pending = ndctl(net.path(), &["query", "upgrade", "--node", &net.rpcs[0]]).unwrap();
    assert!(
        pending.contains(&format!("upgrade rehearsal-v2 at height {at}")),
        "{pending}"
    );

    // The apps stop at the upgrade height, saying why, with height at-1 committed. Once a
    // quorum has stopped, their CometBFT processes follow (the ABCI connection is gone), so a
    // node that had not yet received block `at` cannot get it and waits at at-1: that is the
    // real behaviour (it fetches the block from its peers once they run the next build), so
    // such a node must be at at-1 and must not have executed anything of `at`.
    let stopped = |i: usize| {
        std::fs::read_to_string(net.path().join(format!("node{i}/abci.log")))
            .unwrap_or_default()
            .contains("UPGRADE NEEDED")
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while ALL.iter().filter(|&&i| stopped(i)).count() < 3 {
        assert!(
            Instant::now() < deadline,
            "no quorum of apps stopped for the upgrade"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let grace = Instant::now() + Duration::from_secs(15);
    while !ALL.iter().all(|&i| stopped(i)) && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(250));
    }
    for i in ALL {
        let log = std::fs::read_to_string(net.path().join(format!("node{i}/abci.log")))
            .unwrap_or_default();
        if stopped(i) {
            assert!(
                log.contains(&format!(
                    "upgrade \"rehearsal-v2\" is scheduled at height {at}"
                )),
                "{log}"
            );
        } else {
            eprintln!("node{i} had not received block {at} when its peers stopped");
        }
    }
    ndctl(net.path(), &["devnet", "down"]).unwrap();
    for i in ALL {
        let store = neurodata_abci::storage::Storage::open_existing(
            &net.path().join(format!("node{i}/app")),
        )
        .unwrap();
        assert_eq!(
            store.committed().unwrap().unwrap().height,
            at - 1,
            "node{i}"
        );
    }

    // The next build continues the chain: the handshake replays height `at` into it, which
    // migrates first.
    let next_s = next.display().to_string();
    let out = ndctl(net.path(), &["devnet", "up", "--abci", &next_s]).unwrap();
    assert!(out.contains("app binary now"), "{out}");
    for i in ALL {
        net.wait_height(i, at + 3, T);
    }
    assert_eq!(min_fee(&client), "2");
    let log = std::fs::read_to_string(net.path().join("node2/abci.log")).unwrap();
    assert!(
        log.contains("running the upgrade's state migration"),
        "{log}"
    );
    let none = ndctl(net.path(), &["query", "upgrade", "--node", &net.rpcs[0]]).unwrap();
    assert!(none.contains("no upgrade pending"), "{none}");
    net.assert_converged(&ALL);

    // The old build refuses the migrated state by name.
    ndctl(net.path(), &["devnet", "down", "--only", "3"]).unwrap();
    let spec = net.dir.json("devnet.json");
    let old = PathBuf::from(env!("CARGO_BIN_EXE_ndctl")).with_file_name("neurodata-abci");
    let out = Command::new(&old)
        .arg("--home")
        .arg(net.path().join("node3/app"))
        .arg("--listen")
        .arg(format!(
            "unix://{}",
            net.path().join("node3/old.sock").display()
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("went through upgrade \"rehearsal-v2\"")
            && err.contains("older than the chain"),
        "{err}"
    );
    assert_eq!(spec["abci"].as_str().unwrap(), next_s);
    net.start(3);
    let top = net.height(0).unwrap();
    net.wait_height(3, top + 2, T);
    net.assert_converged(&ALL);
}
