//! End-to-end: an org rotates its root CA by governance, with a grace period, on a devnet of four
//! validators (real CometBFT and app processes, driven by `ndctl`). Its members hold certificates
//! the org admin renewed under the new CA before the rotation passed, and send their renewals
//! during the grace period: a member signs before the rotation, during the grace period (with the
//! old certificate, then the renewed one) and after it, with no block in between where it could
//! not. A member that did not renew is refused once the grace period ends, on every node.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::DevnetDir;
use neurodata_abci::query;
use neurodata_client::{ChainAccess as _, NodeClient};
use tendermint_rpc::{Client, HttpClient};

const T: Duration = Duration::from_secs(90);
/// Long enough for the renewals below on a loaded machine, short enough to wait out.
const GRACE_SECS: i64 = 90;

/// The ndctl under test: `NEURODATA_TEST_NDCTL` when set (a private copy, with its
/// `neurodata-abci` beside it, for a target directory other builds share), else cargo's.
fn ndctl_bin() -> PathBuf {
    std::env::var_os("NEURODATA_TEST_NDCTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ndctl")))
}

/// Runs ndctl with `NEURODATA_DEVNET=dir`: Ok(stdout) on success, Err(stdout and stderr).
fn ndctl(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(ndctl_bin())
        .args(args)
        .env("NEURODATA_DEVNET", dir)
        .env("NEURODATA_TRUST_DIR", dir.join("trusted"))
        .output()
        .expect("run ndctl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

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
        let dir = DevnetDir::new("ndca");
        let port = base_port.to_string();
        let args = ["devnet", "up", "--validators", "4", "--base-port", &port];
        let out = ndctl(dir.path(), &args).unwrap_or_else(|e| panic!("devnet up failed: {e}"));
        assert!(out.contains("producing blocks"), "{out}");
        let spec = dir.json("devnet.json");
        let rpcs = spec["nodes"]
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

    fn member(&self, org: &str, role: &str) -> (String, String) {
        let c = self.path().join("consortium").join(org);
        let s = |ext| c.join(format!("{role}.{ext}")).display().to_string();
        (s("pem"), s("key"))
    }

    /// `ndctl ARGS... --node RPC --cert CERT --key KEY` against node `node`.
    fn signed(&self, node: usize, cert: &str, key: &str, args: &[&str]) -> Result<String, String> {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--node", &self.rpcs[node], "--cert", cert, "--key", key]);
        ndctl(self.path(), &full)
    }

    /// A transfer of 1 NRC to itself.
    fn transfer(&self, node: usize, cert: &str, key: &str) -> Result<String, String> {
        self.signed(
            node,
            cert,
            key,
            &["tx", "transfer", "--to", cert, "--amount", "1"],
        )
    }

    fn status(&self, node: usize) -> Option<(u64, i64)> {
        let c = HttpClient::new(self.rpcs[node].as_str()).ok()?;
        rt().block_on(async {
            c.status().await.ok().map(|s| {
                (
                    s.sync_info.latest_block_height.value(),
                    s.sync_info.latest_block_time.unix_timestamp(),
                )
            })
        })
    }

    /// Waits until node `node` has a block at or after height `h` and Unix time `t`.
    fn wait_until(&self, node: usize, h: u64, t: i64) {
        let deadline = Instant::now() + T + Duration::from_secs(GRACE_SECS as u64);
        loop {
            if self
                .status(node)
                .is_some_and(|(height, time)| height >= h && time >= t)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node{node} did not reach height {h} and time {t} (at {:?})",
                self.status(node)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn org(&self, org: &str) -> neurodata_proto::chain::v1::Org {
        let node = NodeClient::new(&self.rpcs[0]).unwrap();
        rt().block_on(node.record(query::org(org.into())))
            .unwrap()
            .expect("org exists")
    }

    /// Every node has the same app hash at a common height.
    fn assert_converged(&self) {
        let top = (0..4)
            .filter_map(|n| self.status(n))
            .map(|s| s.0)
            .min()
            .unwrap();
        let h = tendermint::block::Height::try_from(top).unwrap();
        let hashes: Vec<_> = (0..4)
            .map(|n| {
                self.wait_until(n, top, 0);
                let c = HttpClient::new(self.rpcs[n].as_str()).unwrap();
                rt().block_on(async { c.header(h).await.unwrap().header.app_hash })
            })
            .collect();
        assert!(
            hashes.windows(2).all(|w| w[0] == w[1]),
            "{hashes:?} at {top}"
        );
    }
}

fn fingerprint(pem_path: &str) -> String {
    let cert = openssl::x509::X509::from_pem(&std::fs::read(pem_path).unwrap()).unwrap();
    hex::encode(neurodata_certs::fingerprint(&cert).unwrap())
}

#[test]
fn members_renewed_under_the_new_ca_keep_signing_through_a_rotation_with_a_grace_period() {
    let net = Net::up(29200);
    let dir = net.path();
    let (buyer, buyer_key) = net.member("medlab", "buyer");
    let (admin, admin_key) = net.member("medlab", "admin");
    let (trainer, trainer_key) = net.member("medlab", "trainer");
    net.transfer(0, &buyer, &buyer_key).unwrap();
    net.transfer(0, &trainer, &trainer_key).unwrap();

    // Before the rotation: the org makes its new CA and renews its members' certificates under
    // it, for their own keys (the dev certificates run 3650 days; the renewals run longer).
    let old_ca = dir.join("consortium/medlab/ca.pem");
    let new_ca = dir.join("medlab-2027");
    let new_ca_dir = new_ca.display().to_string();
    ndctl(
        dir,
        &[
            "ca",
            "init",
            "--org",
            "medlab",
            "--name",
            "Medical Research Lab 2027",
            "--dir",
            &new_ca_dir,
        ],
    )
    .unwrap();
    let renewed = |member: &str, name: &str| {
        let out = new_ca.join(name).display().to_string();
        let printed = ndctl(
            dir,
            &[
                "ca",
                "reissue",
                "--ca-dir",
                &new_ca_dir,
                "--previous-ca",
                old_ca.to_str().unwrap(),
                member,
                "--out",
                &out,
                "--days",
                "4000",
            ],
        )
        .unwrap();
        assert!(printed.contains("ndctl ca renew"), "{printed}");
        out
    };
    let buyer_2027 = renewed(&buyer, "buyer.pem");
    let admin_2027 = renewed(&admin, "admin.pem");

    // The rotation, with a grace period: medlab proposes, the other orgs' admins vote.
    let out = net
        .signed(
            0,
            &admin,
            &admin_key,
            &[
                "tx",
                "propose",
                "rotate-ca",
                "--org",
                "medlab",
                "--ca",
                &format!("{new_ca_dir}/ca.pem"),
                "--grace-secs",
                &GRACE_SECS.to_string(),
            ],
        )
        .unwrap();
    let height = |out: &str| -> u64 {
        out.split("at height ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no height in {out}"))
    };
    let mut last = height(&out);
    for (node, org) in [(1, "healthtech"), (2, "datacorp")] {
        // Each voter's node checks the vote against its committed state, which must hold the
        // proposal.
        net.wait_until(node, last, 0);
        let (cert, key) = net.member(org, "admin");
        let out = net
            .signed(node, &cert, &key, &["tx", "vote", "--proposal", "1"])
            .unwrap();
        last = height(&out);
    }
    // The last vote executed the rotation; node0's query answers may trail its height by a
    // block.
    net.wait_until(0, last, 0);
    let new_fingerprint = fingerprint(&format!("{new_ca_dir}/ca.pem"));
    let deadline = Instant::now() + T;
    let org = loop {
        let org = net.org("medlab");
        if hex::encode(&org.ca_fingerprint) == new_fingerprint {
            break org;
        }
        assert!(Instant::now() < deadline, "medlab's CA did not rotate");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        hex::encode(&org.previous_ca_fingerprint),
        fingerprint(old_ca.to_str().unwrap())
    );
    let until = org.previous_ca_until;

    // The grace period: the old certificate signs, renews, and the renewed one signs on.
    net.transfer(1, &buyer, &buyer_key).unwrap();
    let out = net
        .signed(
            1,
            &buyer,
            &buyer_key,
            &["ca", "renew", "--new-cert", &buyer_2027],
        )
        .unwrap();
    assert!(out.contains("(same key)"), "{out}");
    // The other nodes judge txs by their committed state: let them commit the renewal.
    let renewed_at = height(&out);
    for node in 0..4 {
        net.wait_until(node, renewed_at, 0);
    }
    net.transfer(2, &buyer_2027, &buyer_key).unwrap();
    let err = net.transfer(3, &buyer, &buyer_key).unwrap_err();
    assert!(
        err.contains("membership code 222") && err.contains(&fingerprint(&buyer_2027)),
        "the renewed certificate is retired: {err}"
    );
    net.signed(
        0,
        &admin,
        &admin_key,
        &["ca", "renew", "--new-cert", &admin_2027],
    )
    .unwrap();
    // The chain lists what expires, the new CA among the org CAs.
    let listed = net
        .signed(
            0,
            &admin_2027,
            &admin_key,
            &["ca", "expiring", "--days", "4100", "--json"],
        )
        .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let fingerprints: Vec<&str> = listed["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["fingerprint"].as_str().unwrap())
        .collect();
    assert!(
        fingerprints.contains(&fingerprint(&format!("{new_ca_dir}/ca.pem")).as_str())
            && fingerprints.contains(&fingerprint(&buyer_2027).as_str())
            && !fingerprints.contains(&fingerprint(&buyer).as_str()),
        "{listed}"
    );

    // After the grace period: every node refuses the member that did not renew, and the renewed
    // ones sign as before.
    let (top, _) = net.status(0).unwrap();
    for node in 0..4 {
        net.wait_until(node, top, until + 1);
    }
    for node in 0..4 {
        let err = net.transfer(node, &trainer, &trainer_key).unwrap_err();
        assert!(
            err.contains("membership code 26"),
            "node{node} refuses the old CA's certificate: {err}"
        );
    }
    net.transfer(3, &buyer_2027, &buyer_key).unwrap();
    net.transfer(0, &admin_2027, &admin_key).unwrap();
    net.assert_converged();
}
