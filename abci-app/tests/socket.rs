//! The app over its real ABCI socket, driven by tendermint-abci's client as CometBFT would drive
//! it, including crashes of the app process between FinalizeBlock and Commit and right after
//! Commit.

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
}

impl App {
    fn start(home: &std::path::Path, port: u16) -> App {
        let child = Command::new(env!("CARGO_BIN_EXE_neurodata-abci"))
            .arg("--home")
            .arg(home)
            .arg("--listen")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--log")
            .arg("warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start neurodata-abci");
        App { child, port }
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
