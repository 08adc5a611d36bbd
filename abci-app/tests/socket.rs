//! The app over its real ABCI socket, driven by tendermint-abci's client as CometBFT would drive
//! it, including crashes of the app process at every step of a block (fault points), a full disk
//! during Commit and a damaged store.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use neurodata_certs::Role;
use neurodata_client::{Amount, msg, verify_proof};
use tendermint_abci::{Client, ClientBuilder};
use tendermint_proto::google::protobuf::{Duration as PbDuration, Timestamp};
use tendermint_proto::v0_38::abci::{
    CommitInfo, Misbehavior, MisbehaviorType, RequestCheckTx, RequestFinalizeBlock, RequestInfo,
    RequestInitChain, RequestQuery, Validator, ValidatorUpdate,
};
use tendermint_proto::v0_38::crypto::{PublicKey, public_key::Sum};
use tendermint_proto::v0_38::types::{
    BlockParams, ConsensusParams, EvidenceParams, ValidatorParams,
};

/// The `neurodata-abci` process; killed on drop.
struct App {
    child: Child,
    port: u16,
    stderr: Option<std::path::PathBuf>,
}

/// How a crash test starts the app.
#[derive(Default)]
struct Launch<'a> {
    /// `NEURODATA_FAULT`.
    fault: Option<&'a str>,
    /// RLIMIT_FSIZE in bytes: no file may grow past it, as on a full disk (SIGXFSZ ignored, so
    /// a write past it fails with EFBIG instead of killing the process).
    file_size_limit: Option<u64>,
    /// Where its stderr goes (inherited otherwise).
    stderr: Option<std::path::PathBuf>,
}

impl App {
    fn start(home: &std::path::Path, port: u16) -> App {
        Self::launch(home, port, Launch::default())
    }

    fn launch(home: &std::path::Path, port: u16, how: Launch) -> App {
        let bin = env!("CARGO_BIN_EXE_neurodata-abci");
        let mut cmd = match how.file_size_limit {
            // An ignored signal stays ignored across exec; prlimit sets the limit and execs.
            Some(limit) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!(
                        "trap '' XFSZ; exec prlimit --fsize={limit} -- \"$0\" \"$@\""
                    ))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--home")
            .arg(home)
            .arg("--listen")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--log")
            .arg("warn")
            .env_remove("NEURODATA_FAULT")
            .stdout(Stdio::null());
        if let Some(f) = how.fault {
            cmd.env("NEURODATA_FAULT", f);
        }
        match &how.stderr {
            Some(path) => cmd.stderr(std::fs::File::create(path).unwrap()),
            None => cmd.stderr(Stdio::inherit()),
        };
        let child = cmd.spawn().expect("start neurodata-abci");
        App {
            child,
            port,
            stderr: how.stderr,
        }
    }

    /// Waits for the process to end by itself.
    fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let err = self
                    .stderr
                    .as_ref()
                    .map(|p| std::fs::read_to_string(p).unwrap_or_default())
                    .unwrap_or_default();
                return (status, err);
            }
            assert!(Instant::now() < deadline, "the app did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn connect(&self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match ClientBuilder::new(1 << 20).connect(("127.0.0.1", self.port)) {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("app did not listen: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn kill(mut self) {
        // SIGKILL: no chance to flush anything.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn init_request(c: &Consortium) -> RequestInitChain {
    RequestInitChain {
        time: Some(Timestamp {
            seconds: T0,
            nanos: 0,
        }),
        chain_id: CHAIN.into(),
        consensus_params: Some(ConsensusParams {
            block: Some(BlockParams {
                max_bytes: 22_020_096,
                max_gas: -1,
            }),
            evidence: Some(EvidenceParams {
                max_age_num_blocks: 100_000,
                max_age_duration: Some(PbDuration {
                    seconds: 172_800,
                    nanos: 0,
                }),
                max_bytes: 1_048_576,
            }),
            validator: Some(ValidatorParams {
                pub_key_types: vec!["ed25519".into()],
            }),
            version: None,
            abci: None,
        }),
        validators: c
            .validators
            .iter()
            .map(|(k, p)| ValidatorUpdate {
                pub_key: Some(PublicKey {
                    sum: Some(Sum::Ed25519(k.to_vec())),
                }),
                power: *p,
            })
            .collect(),
        app_state_bytes: serde_json::to_vec(&c.app_state()).unwrap().into(),
        initial_height: 1,
    }
}

fn finalize(height: i64, txs: Vec<Vec<u8>>) -> RequestFinalizeBlock {
    RequestFinalizeBlock {
        txs: txs.into_iter().map(Bytes::from).collect(),
        decided_last_commit: Some(CommitInfo {
            round: 0,
            votes: vec![],
        }),
        misbehavior: vec![],
        hash: vec![7u8; 32].into(),
        height,
        time: Some(Timestamp {
            seconds: block_time(height as u64),
            nanos: 0,
        }),
        next_validators_hash: vec![1u8; 32].into(),
        proposer_address: vec![2u8; 20].into(),
    }
}

fn info(client: &mut Client) -> (i64, Vec<u8>) {
    let i = client.info(RequestInfo::default()).unwrap();
    (i.last_block_height, i.last_block_app_hash.to_vec())
}

#[test]
fn blocks_queries_and_check_tx_over_the_socket() {
    let c = Consortium::new(2, 1);
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(dir.path(), free_port());
    let mut client = app.connect();
    assert_eq!(info(&mut client).0, 0);
    let genesis = client.init_chain(init_request(&c)).unwrap();
    assert_eq!(genesis.app_hash.len(), 32);

    // A reference node in-process computes the same hashes.
    let mut reference = TestNode::start(&c);
    assert_eq!(reference.genesis_hash.to_vec(), genesis.app_hash.to_vec());

    let alice = c.signer(0, Role::Buyer);
    let bob = c.signer(1, Role::Buyer);
    let tx = reference.sign(&alice, vec![msg::transfer(bob.address(), Amount(42))]);

    let check = client
        .check_tx(RequestCheckTx {
            tx: tx.clone().into(),
            r#type: 0,
        })
        .unwrap();
    assert_eq!(check.code, 0, "{}", check.log);
    let bad = client
        .check_tx(RequestCheckTx {
            tx: b"junk".to_vec().into(),
            r#type: 0,
        })
        .unwrap();
    assert_eq!((bad.code, bad.codespace.as_str()), (2, "tx"));

    let r = client
        .finalize_block(finalize(1, vec![tx.clone(), b"junk".to_vec()]))
        .unwrap();
    assert_eq!(r.tx_results[0].code, 0, "{}", r.tx_results[0].log);
    assert_eq!(r.tx_results[1].code, 2);
    assert!(
        r.tx_results[0]
            .events
            .iter()
            .any(|e| e.r#type == "nrc.transfer")
    );
    client.commit().unwrap();
    let expected = reference.block(&[tx.clone(), b"junk".to_vec()]);
    assert_eq!(r.app_hash.to_vec(), expected.app_hash.to_vec());
    assert_eq!(info(&mut client), (1, expected.app_hash.to_vec()));

    // Replaying the same tx is refused by CheckTx.
    let replay = client
        .check_tx(RequestCheckTx {
            tx: tx.into(),
            r#type: 0,
        })
        .unwrap();
    assert_eq!((replay.code, replay.codespace.as_str()), (8, "tx"));

    // A proven query at height 1 verifies against the app hash of height 1.
    let q = client
        .query(RequestQuery {
            data: bob.address().0.to_vec().into(),
            path: "/account".into(),
            height: 1,
            prove: true,
        })
        .unwrap();
    assert_eq!(q.code, 0, "{}", q.log);
    let op = &q.proof_ops.as_ref().unwrap().ops[0];
    let key = String::from_utf8(q.key.to_vec()).unwrap();
    verify_proof(&key, Some(&q.value), &op.data, expected.app_hash).unwrap();
    // A tampered value does not verify.
    let mut forged = q.value.to_vec();
    forged[5] ^= 1;
    assert!(verify_proof(&key, Some(&forged), &op.data, expected.app_hash).is_err());
    let unknown = client
        .query(RequestQuery {
            data: Bytes::new(),
            path: "/nope".into(),
            height: 0,
            prove: false,
        })
        .unwrap();
    assert_ne!(unknown.code, 0);
}

#[test]
fn crash_between_finalize_block_and_commit_restarts_at_the_previous_height() {
    let c = Consortium::new(1, 1);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let app = App::start(dir.path(), port);
    let mut client = app.connect();
    client.init_chain(init_request(&c)).unwrap();
    let reference = TestNode::start(&c);
    let s = c.signer(0, Role::Buyer);
    let to = c.signer(0, Role::Provider).address();

    let tx1 = reference.sign_with(&s, 0, vec![msg::transfer(to, Amount(1))]);
    let h1 = client
        .finalize_block(finalize(1, vec![tx1]))
        .unwrap()
        .app_hash;
    client.commit().unwrap();

    let tx2 = s
        .sign(
            neurodata_client::TxParams {
                chain_id: CHAIN.into(),
                nonce: 1,
                fee: Amount(1),
                attach_certificate: false,
                memo: String::new(),
            },
            vec![msg::transfer(to, Amount(2))],
        )
        .unwrap();
    let h2 = client
        .finalize_block(finalize(2, vec![tx2.clone()]))
        .unwrap()
        .app_hash;
    assert_ne!(h1, h2);
    drop(client);
    app.kill();

    // Restart: the finalized-but-uncommitted block 2 is gone; CometBFT would replay it.
    let app = App::start(dir.path(), port);
    let mut client = app.connect();
    assert_eq!(info(&mut client), (1, h1.to_vec()));
    let replayed = client
        .finalize_block(finalize(2, vec![tx2]))
        .unwrap()
        .app_hash;
    assert_eq!(replayed, h2, "replay converges to the same app hash");
    client.commit().unwrap();
    drop(client);

    // Crash right after Commit: the block is durable.
    app.kill();
    let app = App::start(dir.path(), port);
    let mut client = app.connect();
    assert_eq!(info(&mut client), (2, h2.to_vec()));
    let r = client.finalize_block(finalize(3, vec![])).unwrap();
    client.commit().unwrap();
    assert_eq!(info(&mut client), (3, r.app_hash.to_vec()));
}

/// `n` blocks of `per_block` transfers from one signer, signed once (the same bytes for every run).
fn transfer_blocks(c: &Consortium, n: u64, per_block: u64) -> Vec<Vec<Vec<u8>>> {
    let reference = TestNode::start(c);
    let s = c.signer(0, Role::Buyer);
    let to = c.signer(0, Role::Provider).address();
    (0..n)
        .map(|b| {
            (0..per_block)
                .map(|i| {
                    reference.sign_with(&s, b * per_block + i, vec![msg::transfer(to, Amount(1))])
                })
                .collect()
        })
        .collect()
}

/// The app hash after each block (index 0: height 1) of a run without faults.
fn clean_hashes(c: &Consortium, blocks: &[Vec<Vec<u8>>]) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(dir.path(), free_port());
    let mut client = app.connect();
    client.init_chain(init_request(c)).unwrap();
    blocks
        .iter()
        .enumerate()
        .map(|(i, txs)| {
            let r = client
                .finalize_block(finalize(i as i64 + 1, txs.clone()))
                .unwrap();
            assert!(
                r.tx_results.iter().all(|t| t.code == 0),
                "{:?}",
                r.tx_results
            );
            client.commit().unwrap();
            r.app_hash.to_vec()
        })
        .collect()
}

#[test]
fn a_crash_at_every_step_of_a_block_recovers_to_the_same_app_hash() {
    use std::os::unix::process::ExitStatusExt as _;
    let c = Consortium::new(1, 1);
    let blocks = transfer_blocks(&c, 4, 2);
    let clean = clean_hashes(&c, &blocks);
    // (point, whether block 3 is on disk after the crash)
    for (point, durable) in [
        ("finalize", false),
        ("before-commit", false),
        ("commit-write", false),
        ("after-write", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("stderr.log");
        let app = App::launch(
            &dir.path().join("store"),
            port,
            Launch {
                fault: Some(&format!("{point}@3")),
                stderr: Some(log),
                ..Launch::default()
            },
        );
        let mut client = app.connect();
        client.init_chain(init_request(&c)).unwrap();
        for h in 1..=2 {
            let r = client
                .finalize_block(finalize(h, blocks[h as usize - 1].clone()))
                .unwrap();
            assert_eq!(
                r.app_hash.to_vec(),
                clean[h as usize - 1],
                "{point}: block {h}"
            );
            client.commit().unwrap();
        }
        // Block 3 dies at the point: the call that reaches it gets no answer.
        let crashed = match client.finalize_block(finalize(3, blocks[2].clone())) {
            Err(_) => true,
            Ok(r) => {
                assert_eq!(r.app_hash.to_vec(), clean[2], "{point}");
                client.commit().is_err()
            }
        };
        assert!(crashed, "{point}: the app answered past its fault point");
        drop(client);
        let (status, err) = app.wait_exit();
        assert_eq!(
            status.signal(),
            Some(6),
            "{point}: aborted ({status:?}); {err}"
        );
        assert!(
            err.contains(&format!("fault point {point}@3 reached")),
            "{point}: {err}"
        );

        // Restart: the store is at block 2, or at 3 when the write finished; CometBFT's
        // handshake replays what is missing, which must give the clean run's hashes.
        let app = App::start(&dir.path().join("store"), port);
        let mut client = app.connect();
        let at = if durable { 3 } else { 2 };
        assert_eq!(
            info(&mut client),
            (at, clean[at as usize - 1].clone()),
            "{point}"
        );
        for h in at + 1..=4 {
            let r = client
                .finalize_block(finalize(h, blocks[h as usize - 1].clone()))
                .unwrap();
            assert_eq!(
                r.app_hash.to_vec(),
                clean[h as usize - 1],
                "{point}: replayed {h}"
            );
            client.commit().unwrap();
        }
        assert_eq!(info(&mut client), (4, clean[3].clone()), "{point}");
    }
}

#[test]
fn a_full_disk_during_commit_stops_the_app_cleanly_and_a_restart_replays_the_block() {
    let c = Consortium::new(1, 1);
    let blocks = transfer_blocks(&c, 400, 8);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let port = free_port();
    let log = dir.path().join("stderr.log");
    let app = App::launch(
        &store,
        port,
        Launch {
            file_size_limit: Some(256 << 10),
            stderr: Some(log),
            ..Launch::default()
        },
    );
    let mut client = app.connect();
    client.init_chain(init_request(&c)).unwrap();
    // Blocks until a write fails: the WAL outgrows the limit well before 400 blocks.
    let mut hashes = Vec::new();
    let failed_at = loop {
        let h = hashes.len() as i64 + 1;
        assert!(h <= 400, "no write failed under the file size limit");
        let r = client
            .finalize_block(finalize(h, blocks[h as usize - 1].clone()))
            .expect("FinalizeBlock writes nothing");
        hashes.push(r.app_hash.to_vec());
        if client.commit().is_err() {
            break h;
        }
    };
    drop(client);
    let (status, err) = app.wait_exit();
    assert_eq!(
        status.code(),
        Some(70),
        "a clean stop, not a crash: {status:?}; {err}"
    );
    assert!(err.contains("a block step failed"), "{err}");
    assert!(
        err.to_lowercase().contains("file too large"),
        "the error names the cause: {err}"
    );

    // Space returns: the store is at the block before, and the failed block replays to the
    // hash FinalizeBlock gave the first time.
    let app = App::start(&store, port);
    let mut client = app.connect();
    let (at, hash) = info(&mut client);
    assert_eq!(at, failed_at - 1);
    assert_eq!(hash, hashes[at as usize - 1]);
    let r = client
        .finalize_block(finalize(failed_at, blocks[failed_at as usize - 1].clone()))
        .unwrap();
    assert_eq!(r.app_hash.to_vec(), hashes[failed_at as usize - 1]);
    client.commit().unwrap();
    let next = failed_at + 1;
    client
        .finalize_block(finalize(next, blocks[next as usize - 1].clone()))
        .unwrap();
    client.commit().unwrap();
    assert_eq!(info(&mut client).0, next);
}

/// A store with its state in SST files: three blocks, killed, reopened (recovery flushes the
/// WAL into SSTs), killed again.
fn store_in_sst_files(c: &Consortium) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let port = free_port();
    let blocks = transfer_blocks(c, 3, 2);
    let app = App::start(&store, port);
    let mut client = app.connect();
    client.init_chain(init_request(c)).unwrap();
    for (i, txs) in blocks.iter().enumerate() {
        client
            .finalize_block(finalize(i as i64 + 1, txs.clone()))
            .unwrap();
        client.commit().unwrap();
    }
    drop(client);
    app.kill();
    let app = App::start(&store, port);
    let mut client = app.connect();
    assert_eq!(info(&mut client).0, 3);
    drop(client);
    app.kill();
    dir
}

fn sst_files(store: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no SST files in {}", store.display());
    v
}

#[test]
fn a_damaged_store_is_refused_at_startup_with_a_clear_error() {
    let c = Consortium::new(1, 1);
    // Bytes flipped inside every table file: block checksums catch it on the first read.
    let dir = store_in_sst_files(&c);
    let store = dir.path().join("store");
    for f in sst_files(&store) {
        let mut bytes = std::fs::read(&f).unwrap();
        let mid = bytes.len() / 3;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0x5a;
        }
        std::fs::write(&f, bytes).unwrap();
    }
    let log = dir.path().join("stderr.log");
    let app = App::launch(
        &store,
        free_port(),
        Launch {
            stderr: Some(log),
            ..Launch::default()
        },
    );
    let (status, err) = app.wait_exit();
    assert!(!status.success(), "{status:?}");
    assert!(err.contains("state store"), "names the store: {err}");
    assert!(
        err.to_lowercase().contains("corrupt"),
        "says what is wrong: {err}"
    );

    // A table file cut short: its size no longer matches the manifest.
    let dir = store_in_sst_files(&c);
    let store = dir.path().join("store");
    let f = sst_files(&store).pop().unwrap();
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let log = dir.path().join("stderr.log");
    let app = App::launch(
        &store,
        free_port(),
        Launch {
            stderr: Some(log),
            ..Launch::default()
        },
    );
    let (status, err) = app.wait_exit();
    assert!(!status.success(), "{status:?}");
    assert!(err.contains("state store"), "names the store: {err}");
}

#[test]
fn misbehaviour_over_the_socket_jails_as_in_process() {
    let c = Consortium::new(1, 4);
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(dir.path(), free_port());
    let mut client = app.connect();
    client.init_chain(init_request(&c)).unwrap();
    let mut reference = TestNode::start(&c);
    client.finalize_block(finalize(1, vec![])).unwrap();
    client.commit().unwrap();
    reference.block(&[]);

    let key = c.validators[2].0;
    let mut req = finalize(2, vec![]);
    req.misbehavior = vec![Misbehavior {
        r#type: MisbehaviorType::DuplicateVote as i32,
        validator: Some(Validator {
            address: neurodata_abci::training::attest::validator_address(&key)
                .to_vec()
                .into(),
            power: 10,
        }),
        height: 1,
        time: Some(Timestamp {
            seconds: block_time(1),
            nanos: 0,
        }),
        total_voting_power: 40,
    }];
    let r = client.finalize_block(req).unwrap();
    client.commit().unwrap();
    let expected = reference.block_with_misbehaviour(&[], &[double_sign(&key, 1)]);
    assert_eq!(r.app_hash.to_vec(), expected.app_hash.to_vec());
    assert_eq!(
        r.validator_updates,
        vec![ValidatorUpdate {
            pub_key: Some(PublicKey {
                sum: Some(Sum::Ed25519(key.to_vec())),
            }),
            power: 0,
        }]
    );
    assert!(r.events.iter().any(|e| e.r#type == "validator.jailed"));

    let q = client
        .query(RequestQuery {
            data: Bytes::new(),
            path: "/misbehaviours".into(),
            height: 0,
            prove: false,
        })
        .unwrap();
    assert_eq!(q.code, 0, "{}", q.log);
    let list =
        <neurodata_proto::chain::v1::MisbehaviourList as prost::Message>::decode(q.value).unwrap();
    assert_eq!(list.misbehaviours.len(), 1);
    assert_eq!(list.misbehaviours[0].pub_key, key.to_vec());
    assert_eq!(list.misbehaviours[0].evidence_height, 1);
}
