//! End-to-end: `ndctl node backup` of a stopped validator of the 4-validator devnet, and its
//! restore into a fresh home that replaces it: the restored node replays and catches up, signs
//! blocks with the validator's key again, and agrees with the others on every header. A
//! tampered copy of the backup is refused.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{DevnetDir, ndctl};
use tendermint::block::CommitSig;
use tendermint_rpc::{Client, HttpClient};

const T: Duration = Duration::from_secs(90);
const ALL: [usize; 4] = [0, 1, 2, 3];

struct Net {
    dir: DevnetDir,
    rpcs: Vec<String>,
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl Net {
    fn up(base_port: u16) -> Net {
        let dir = DevnetDir::new("nd");
        let base_port = base_port.to_string();
        let out = ndctl(
            dir.path(),
            &[
                "devnet",
                "up",
                "--validators",
                "4",
                "--base-port",
                &base_port,
            ],
        )
        .unwrap_or_else(|e| panic!("devnet up failed: {e}"));
        assert!(out.contains("producing blocks"), "{out}");
        let rpcs = dir.json("devnet.json")["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["rpc"].as_str().unwrap().to_owned())
            .collect();
        Net { dir, rpcs }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cert(&self, org: &str, role: &str) -> (PathBuf, PathBuf) {
        let c = self.path().join("consortium").join(org);
        (c.join(format!("{role}.pem")), c.join(format!("{role}.key")))
    }

    /// A transfer from medlab's buyer to healthtech's, sent to node `node`.
    fn transfer(&self, node: usize, amount: &str) {
        let (cert, key) = self.cert("medlab", "buyer");
        let (to, _) = self.cert("healthtech", "buyer");
        let out = ndctl(
            self.path(),
            &[
                "tx",
                "--node",
                &self.rpcs[node],
                "--signer-cert",
                cert.to_str().unwrap(),
                "--signer-key",
                key.to_str().unwrap(),
                "transfer",
                "--to",
                to.to_str().unwrap(),
                "--amount",
                amount,
            ],
        )
        .unwrap();
        assert!(out.contains("committed tx"), "{out}");
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

/// Processes this test starts itself (the restored node), stopped when it ends.
struct Started(Vec<Child>);

impl Drop for Started {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn args(list: &[&Path]) -> Vec<String> {
    list.iter().map(|p| p.display().to_string()).collect()
}

#[test]
fn a_restored_backup_replaces_a_stopped_validator_and_follows_the_chain() {
    let net = Net::up(29300);
    for amount in ["11", "12", "13"] {
        net.transfer(0, amount);
    }
    let home = net.path().join("node3");
    let app = home.join("app");
    let backup = net.path().join("backup");
    let [home_s, app_s, backup_s] = <[String; 3]>::try_from(args(&[&home, &app, &backup])).unwrap();
    let backup_args = [
        "node", "backup", "--home", &home_s, "--app-db", &app_s, "--out", &backup_s,
    ];

    // A running node is refused, and nothing is written.
    let e = ndctl(net.path(), &backup_args).unwrap_err();
    assert!(e.contains("Stop the node"), "{e}");
    assert!(!backup.exists());

    // Stopped (CometBFT first, then its app), it is backed up.
    ndctl(net.path(), &["devnet", "down", "--only", "3"]).unwrap();
    let out = ndctl(net.path(), &backup_args).unwrap();
    assert!(
        out.contains("backed up the node of chain neurodata-devnet"),
        "{out}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    let backed_up = manifest["app"]["height"].as_u64().unwrap();
    assert!(backed_up >= 2, "{manifest}");

    // The other three keep the chain going without it.
    for amount in ["14", "15"] {
        net.transfer(1, amount);
    }
    net.wait_height(0, backed_up + 5, T);

    // A tampered copy is refused by name, before anything is written.
    let tampered = net.path().join("tampered");
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(&backup)
            .arg(&tampered)
            .status()
            .unwrap()
            .success()
    );
    let victim = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            let p = f["path"].as_str().unwrap();
            p.starts_with("cometbft/data/blockstore.db/") && f["size"].as_u64().unwrap() > 0
        })
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .unwrap();
    let mut bytes = std::fs::read(tampered.join(&victim)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(tampered.join(&victim), bytes).unwrap();
    let t = net.path().join("t");
    let [tampered_s, t_home, t_app] =
        <[String; 3]>::try_from(args(&[&tampered, &t, &t.join("app")])).unwrap();
    let e = ndctl(
        net.path(),
        &[
            "node",
            "restore",
            "--from",
            &tampered_s,
            "--home",
            &t_home,
            "--app-db",
            &t_app,
            "--with-validator-key",
        ],
    )
    .unwrap_err();
    assert!(
        e.contains(&victim) && e.contains("does not match the manifest"),
        "{e}"
    );
    assert!(!t.exists());

    // Restored into a fresh home with the validator key, it replaces node3 (whose home is never
    // started again): same node key, validator key and ports.
    let fresh = net.path().join("r3");
    let [fresh_s, fresh_app] =
        <[String; 2]>::try_from(args(&[&fresh, &fresh.join("app")])).unwrap();
    let out = ndctl(
        net.path(),
        &[
            "node",
            "restore",
            "--from",
            &backup_s,
            "--home",
            &fresh_s,
            "--app-db",
            &fresh_app,
            "--with-validator-key",
        ],
    )
    .unwrap();
    assert!(out.contains("restored with its sign state"), "{out}");
    assert!(
        out.contains("never start the backed-up node again"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(fresh.join("config/priv_validator_key.json")).unwrap(),
        std::fs::read(home.join("config/priv_validator_key.json")).unwrap()
    );

    let spec = net.dir.json("devnet.json");
    let socket = fresh.join("abci.sock");
    let mut started = Started(vec![]);
    started.0.push(spawn(
        Command::new(spec["abci"].as_str().unwrap())
            .arg("--home")
            .arg(fresh.join("app"))
            .arg("--listen")
            .arg(format!("unix://{}", socket.display())),
        &fresh.join("abci.log"),
    ));
    let deadline = Instant::now() + T;
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the restored app did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.0.push(spawn(
        Command::new(spec["cometbft"].as_str().unwrap())
            .arg("start")
            .arg("--home")
            .arg(&fresh)
            .arg(format!("--proxy_app=unix://{}", socket.display())),
        &fresh.join("cometbft.log"),
    ));

    // It catches up (the handshake replays the blocks its app lacks, block sync the rest).
    let top = net.height(0).unwrap();
    net.wait_height(3, top + 2, T);

    // It signs blocks as node3 again.
    let key: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fresh.join("config/priv_validator_key.json")).unwrap(),
    )
    .unwrap();
    let address: tendermint::account::Id = key["address"].as_str().unwrap().parse().unwrap();
    let client = HttpClient::new(net.rpcs[0].as_str()).unwrap();
    let deadline = Instant::now() + T;
    loop {
        let h = net.height(0).unwrap();
        let commit = rt()
            .block_on(client.commit(tendermint::block::Height::try_from(h).unwrap()))
            .unwrap();
        let signed = commit.signed_header.commit.signatures.iter().any(|s| {
            matches!(s, CommitSig::BlockIdFlagCommit { validator_address, .. } if *validator_address == address)
        });
        if signed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restored node3 does not sign blocks"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // It follows the chain: same headers later on, and the transfers made while it was down.
    let top = net.height(0).unwrap();
    net.wait_height(3, top + 3, T);
    net.assert_converged(&ALL);
    let (to, _) = net.cert("healthtech", "buyer");
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
    assert!(q.contains("balance 1000065 NRC"), "{q}");
    drop(started);
}
