//! Shared by the end-to-end tests: running `ndctl` against a devnet directory, and a directory
//! whose network is stopped when the test ends (also when it fails).
#![allow(dead_code)] // each test file uses its own part

pub mod proxy;

use std::path::Path;
use std::process::Command;

use neurodata_abci::address::Address;
use neurodata_abci::query;
use neurodata_client::light::default_options;
use neurodata_client::{ChainAccess, LightClient};
use neurodata_proto::chain::v1 as pb;

/// A light client trusting the genesis of the devnet in `dir`.
pub fn light(dir: &Path) -> LightClient {
    let genesis = std::fs::read(dir.join("node0/config/genesis.json")).unwrap();
    LightClient::from_genesis(&genesis, default_options()).unwrap()
}

/// The account of `address` read through `chain`, its proof checked against a verified header
/// (absent: a zero balance).
pub async fn account<C: ChainAccess>(
    light: &LightClient,
    chain: &C,
    address: Address,
) -> pb::Account {
    light
        .record(chain, query::account(address))
        .await
        .unwrap()
        .unwrap_or(pb::Account {
            address: address.0.to_vec(),
            balance: "0".into(),
            nonce: 0,
        })
}

/// Runs `ndctl` with `NEURODATA_DEVNET=dir`: Ok(stdout+stderr) on success, Err(the same) on
/// failure.
pub fn ndctl(dir: &Path, args: &[&str]) -> Result<String, String> {
    ndctl_env(dir, args, &[])
}

/// As [`ndctl`] with extra environment variables (inherited by the processes it starts).
pub fn ndctl_env(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_ndctl"))
        .args(args)
        .env("NEURODATA_DEVNET", dir)
        // Verified blocks saved with the network, not in the home directory.
        .env("NEURODATA_TRUST_DIR", dir.join("trusted"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run ndctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// A temporary devnet directory under /tmp (short paths: Unix socket names are limited); the
/// network in it is stopped on drop.
pub struct DevnetDir(Option<tempfile::TempDir>);

impl DevnetDir {
    /// A fresh directory named `<prefix>…`.
    pub fn new(prefix: &str) -> Self {
        DevnetDir(Some(
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in("/tmp")
                .unwrap(),
        ))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// A JSON file `ndctl devnet` keeps there (`devnet.json`, `pids.json`).
    pub fn json(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path().join(name)).unwrap()).unwrap()
    }
}

impl Drop for DevnetDir {
    fn drop(&mut self) {
        let _ = ndctl(self.path(), &["devnet", "down"]);
        // A failed test keeps its network's directory: the node, app and gateway logs are the
        // report.
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("kept {} for its logs", dir.keep().display());
        }
    }
}
