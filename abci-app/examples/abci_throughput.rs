//! FinalizeBlock throughput for blocks of signed P-256 transfers, single-threaded, and Commit
//! latency as the account set grows. Run by `scripts/bench/abci-throughput.sh`, which measures
//! the signature-verification limit (`openssl speed ecdsap256`) in the same run and prints ratios.
//!
//! Prints one JSON object on its last line.

use std::time::Instant;

use neurodata_abci::abci::Node;
use neurodata_abci::address::Address;
use neurodata_abci::genesis::{Allocation, AppState, GenesisOrg};
use neurodata_abci::ledger::state_key;
use neurodata_abci::storage::Storage;
use neurodata_certs::{OrgCa, Role, Validity};
use neurodata_client::{Amount, Signer, TxParams, msg};
use neurodata_proto::chain::v1 as pb;
use prost::Message as _;

const CHAIN: &str = "bench";
const T0: i64 = 1_800_000_000;

/// A distinct stand-in for the header hash of block `height`.
fn block_hash(height: u64) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(height.to_be_bytes()).into()
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Bench {
    node: Node,
    height: u64,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn new(signers: &[Signer], ca: &OrgCa) -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Node::new(Storage::open(dir.path()).expect("open store"));
        let app_state = AppState {
            orgs: vec![GenesisOrg {
                org_id: "bench".into(),
                name: "Bench".into(),
                ca_cert_pem: String::from_utf8(ca.cert.to_pem().expect("pem")).expect("utf8"),
            }],
            validators: vec![],
            allocations: signers
                .iter()
                .map(|s| Allocation {
                    address: s.address().to_hex(),
                    amount: "1000000000".into(),
                })
                .collect(),
            params: None,
        };
        let json = serde_json::to_vec(&app_state).expect("json");
        node.init(CHAIN, &json, &[([1; 32], 10)], T0, 1)
            .expect("init");
        Bench {
            node,
            height: 0,
            _dir: dir,
        }
    }

    fn txs(&self, signers: &[Signer], nonce: u64) -> Vec<Vec<u8>> {
        signers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let to = signers[(i + 1) % signers.len()].address();
                s.sign(
                    TxParams {
                        chain_id: CHAIN.into(),
                        nonce,
                        fee: Amount(0),
                        attach_certificate: nonce == 0,
                        memo: String::new(),
                    },
                    vec![msg::transfer(to, Amount(1))],
                )
                .expect("sign")
            })
            .collect()
    }

    /// Returns (finalize seconds, commit seconds).
    fn block(&mut self, txs: &[Vec<u8>]) -> (f64, f64) {
        let h = self.height + 1;
        let t = Instant::now();
        let b = self
            .node
            .finalize(h, T0 + 5 * h as i64, 0, block_hash(h), txs)
            .expect("finalize");
        let finalize = t.elapsed().as_secs_f64();
        assert!(
            b.outcomes.iter().all(|o| o.code == 0),
            "{:?}",
            b.outcomes.iter().find(|o| o.code != 0)
        );
        let t = Instant::now();
        self.node.commit_block().expect("commit");
        self.height = h;
        (finalize, t.elapsed().as_secs_f64())
    }

    /// Adds `n` more accounts in blocks of 100k writes (raw store blocks, no txs).
    fn grow_accounts(&mut self, n: usize, start: usize) {
        let mut done = 0;
        while done < n {
            let chunk = (n - done).min(100_000);
            let writes = (start + done..start + done + chunk)
                .map(|i| {
                    let mut a = [0u8; 32];
                    a[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    a[31] = 0xee;
                    let acct = pb::Account {
                        address: a.to_vec(),
                        balance: "0".into(),
                        nonce: 0,
                    };
                    (state_key::account(&Address(a)), Some(acct.encode_to_vec()))
                })
                .collect();
            let h = self.height + 1;
            let s = self.node.storage();
            let p = s.prepare(h, false, writes).expect("prepare");
            s.commit(p).expect("commit");
            self.height = h;
            done += chunk;
        }
    }
}

fn main() {
    let block_size = arg("--block", 1000);
    let blocks = arg("--blocks", 5) as u64;
    let big = arg("--accounts", 1_000_000);
    let validity = Validity {
        not_before: T0 - 3600,
        not_after: T0 + 86_400 * 365,
    };
    let ca = OrgCa::create("bench", "Bench", validity).expect("ca");
    let signers: Vec<Signer> = (0..block_size)
        .map(|i| {
            let m = ca
                .issue(&format!("m{i}"), Role::Buyer, validity)
                .expect("issue");
            Signer::new(&m.cert, m.key).expect("signer")
        })
        .collect();

    // 1. No signature cache: FinalizeBlock verifies every signature itself.
    let mut b = Bench::new(&signers, &ca);
    b.block(&b.txs(&signers, 0)); // registers the certificates (not measured)
    let mut secs = 0.0;
    for n in 1..=blocks {
        let txs = b.txs(&signers, n);
        secs += b.block(&txs).0;
    }
    let tx_per_s = (blocks as usize * block_size) as f64 / secs;

    // 2. With the cache CheckTx fills: the mempool verified them already.
    let mut cached_secs = 0.0;
    for n in blocks + 1..=2 * blocks {
        let txs = b.txs(&signers, n);
        for tx in &txs {
            b.node.check(tx).expect("check").expect("valid tx");
        }
        cached_secs += b.block(&txs).0;
    }
    let cached_tx_per_s = (blocks as usize * block_size) as f64 / cached_secs;

    // Where the time goes: the Merkle root alone for one block's account writes.
    let merkle_ms = {
        use neurodata_abci::ledger::LedgerRead;
        let s = b.node.storage();
        let writes = signers
            .iter()
            .map(|x| {
                let a = s.account(&x.address()).expect("account");
                (state_key::account(&x.address()), Some(a.encode_to_vec()))
            })
            .collect();
        let t = Instant::now();
        let _ = s.prepare(b.height + 1, false, writes).expect("prepare");
        1000.0 * t.elapsed().as_secs_f64()
    };

    // 3. Commit latency of a block of transfers with 10^5 and then `big` accounts in the store.
    let mut commit_ms = Vec::new();
    let mut have = 0;
    for target in [100_000usize, big] {
        b.grow_accounts(target - have, have);
        have = target;
        let (mut f, mut c) = (0.0, 0.0);
        let rounds = 3;
        for _ in 0..rounds {
            let nonce = next_nonce(&b, &signers[0]);
            let txs = b.txs(&signers, nonce);
            let (ff, cc) = b.block(&txs);
            f += ff;
            c += cc;
        }
        commit_ms.push((
            target,
            1000.0 * f / rounds as f64,
            1000.0 * c / rounds as f64,
        ));
    }

    for (accounts, finalize_ms, commit) in &commit_ms {
        println!(
            "accounts {accounts:>8}: finalize {finalize_ms:8.1} ms  commit {commit:6.1} ms  (block of {block_size})"
        );
    }
    println!(
        "finalize without cache: {tx_per_s:.0} tx/s; with CheckTx cache: {cached_tx_per_s:.0} tx/s"
    );
    let json = serde_json::json!({
        "block_size": block_size,
        "tx_per_s": tx_per_s.round(),
        "cached_tx_per_s": cached_tx_per_s.round(),
        "commit_ms_1e5": commit_ms[0].2,
        "finalize_ms_1e5": commit_ms[0].1,
        "commit_ms_big": commit_ms[1].2,
        "finalize_ms_big": commit_ms[1].1,
        "big_accounts": big,
        "merkle_ms": merkle_ms,
    });
    println!("{json}");
}

fn next_nonce(b: &Bench, s: &Signer) -> u64 {
    use neurodata_abci::ledger::LedgerRead;
    b.node
        .storage()
        .account(&s.address())
        .expect("account")
        .nonce
}
