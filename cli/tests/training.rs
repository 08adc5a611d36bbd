//! Proof-of-Validation end to end on a real 4-validator devnet with the founding orgs' gateways,
//! datacorp's worker and a verifier beside every validator (`ndctl devnet up --training`).
//!
//! One network, in order:
//! 1. Refusals at submission: a spec the trainer refuses, data the submitter never bought.
//! 2. healthtech trains a logistic regression on medlab's heart data it bought: drawn, accepted,
//!    trained by datacorp's worker, re-run by the validators, committed and revealed through
//!    vote extensions, final — with one validator attesting wrongly (its verifier stopped and a
//!    "mismatch" verdict dropped in its inbox): outvoted, unpaid, recorded. The model version,
//!    the bounty split, the stake returned, the dataset's usage stats, `ndctl job status`.
//! 3. Workers the test controls (medlab's and healthtech's trainers) take job 2 in turn: a trace
//!    with one forged checkpoint, then a checkpoint never uploaded (every segment sampled): each
//!    is caught, its stake slashed, and the job drawn again. Then one validator goes down for
//!    the rest of the test, datacorp's worker runs job 2 honestly and three of four validators
//!    make it final.
//! 4. Job 3: a result naming another model file, then a worker that accepts and dies (its
//!    result window passes): each loses its stake, the bounty stays in escrow, and datacorp's
//!    worker finishes the job.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{DevnetDir, ndctl};
use neurodata_abci::address::Address;
use neurodata_abci::extension::VerdictFile;
use neurodata_abci::query;
use neurodata_abci::training;
use neurodata_client::gateway::{GatewayClient, GatewayTls};
use neurodata_client::{Amount, ChainAccess, NodeClient, Signer, msg, submit};
use neurodata_crypto::cid::Cid;
use neurodata_proto::chain::v1 as pb;

const BASE_PORT: u16 = 28000;

struct Net {
    dir: DevnetDir,
    spec: serde_json::Value,
}

impl Net {
    fn up() -> Net {
        let dir = DevnetDir::new("ndtr");
        let base = BASE_PORT.to_string();
        ndctl(
            dir.path(),
            &[
                "devnet",
                "up",
                "--validators",
                "4",
                "--gateways",
                "--training",
                "--base-port",
                &base,
            ],
        )
        .unwrap_or_else(|e| panic!("devnet up failed: {e}"));
        let spec = dir.json("devnet.json");
        Net { dir, spec }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn org_dir(&self, org: &str) -> PathBuf {
        self.path().join("consortium").join(org)
    }

    fn gateway_url(&self, org: &str) -> String {
        self.spec["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["gateway"]["org"] == org)
            .map(|n| n["gateway"]["url"].as_str().unwrap().to_owned())
            .unwrap()
    }

    fn node(&self) -> NodeClient {
        NodeClient::new(self.spec["nodes"][0]["rpc"].as_str().unwrap()).unwrap()
    }

    /// `ndctl` flags for a member, through its own org's gateway.
    fn as_member(&self, org: &str, role: &str) -> Vec<String> {
        let o = self.org_dir(org);
        vec![
            "--cert".into(),
            o.join(format!("{role}.pem")).display().to_string(),
            "--key".into(),
            o.join(format!("{role}.key")).display().to_string(),
            "--gateway".into(),
            self.gateway_url(org),
            "--gateway-ca".into(),
            o.join("ca.pem").display().to_string(),
        ]
    }

    fn run(&self, org: &str, role: &str, args: &[&str]) -> Result<String, String> {
        let mut all: Vec<String> = args[..2].iter().map(|s| s.to_string()).collect();
        all.extend(self.as_member(org, role));
        all.extend(args[2..].iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        ndctl(self.path(), &refs)
    }

    fn signer(&self, org: &str, role: &str) -> Signer {
        Signer::load(&self.org_dir(org), role).unwrap()
    }

    async fn gateway(&self, org: &str, role: &str) -> GatewayClient {
        let o = self.org_dir(org);
        let tls = GatewayTls::from_files(
            &o.join("ca.pem"),
            &o.join(format!("{role}.pem")),
            &o.join(format!("{role}.key")),
        )
        .unwrap();
        GatewayClient::connect(&self.gateway_url(org), Some(tls))
            .await
            .unwrap()
    }

    fn pid(&self, kind: &str, node: u64) -> i64 {
        self.dir.json("pids.json")[kind]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[0] == node)
            .map(|e| e[1].as_i64().unwrap())
            .unwrap_or_else(|| panic!("no {kind} process for node {node}"))
    }

    fn kill(&self, kind: &str, node: u64) {
        let pid = self.pid(kind, node).to_string();
        assert!(
            Command::new("kill")
                .args(["-9", &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    async fn job(&self, id: u64) -> pb::Job {
        self.node().record(query::job(id)).await.unwrap().unwrap()
    }

    /// Polls job `id` until `done` holds (or fails with its steps after `secs`).
    async fn wait_job(&self, id: u64, secs: u64, done: impl Fn(&pb::Job) -> bool) -> pb::Job {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            // The node read may not have executed the block holding the submission yet.
            let j = self.node().record(query::job(id)).await.unwrap();
            if let Some(j) = j.as_ref().filter(|j| done(j)) {
                return j.clone();
            }
            assert!(
                Instant::now() < deadline,
                "job {id} stuck at {}: {:#?}",
                j.as_ref().map_or("not on this node yet", |j| {
                    training::status_name(training::status(j))
                }),
                j.map(|j| j.steps)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn balance(&self, a: Address) -> u128 {
        self.account(a).await.0
    }

    /// Balance and nonce (every tx of these tests pays a fee of 1 NRC, so a nonce difference
    /// is what the account paid in fees).
    async fn account(&self, a: Address) -> (u128, u64) {
        self.node()
            .record(query::account(a))
            .await
            .unwrap()
            .map_or((0, 0), |acc| (acc.balance.parse().unwrap(), acc.nonce))
    }
}

fn status(j: &pb::Job) -> pb::JobStatus {
    training::status(j)
}

fn trainer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ndctl")).with_file_name("trainer")
}

fn spec_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainer/jobs/heart-logreg.json")
}

fn heart_csv(path: &Path) {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/heart-csv.py"))
        .args(["--rows", "300", "--seed", "7"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(path, out.stdout).unwrap();
}

fn attestor<'a>(j: &'a pb::Job, validator: &[u8]) -> &'a pb::Attestor {
    j.attestation
        .as_ref()
        .unwrap()
        .attestors
        .iter()
        .find(|a| a.validator == validator)
        .unwrap()
}

/// The CometBFT address of node `i`.
fn validator_of(dir: &Path, i: usize) -> [u8; 20] {
    neurodata_abci::extension::key_file_address(
        &dir.join(format!("node{i}/config/priv_validator_key.json")),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_trained_reexecuted_attested_and_final_and_forgeries_are_slashed() {
    let net = Net::up();
    let work = net.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let csv = work.join("heart.csv");
    heart_csv(&csv);
    let spec = spec_file();
    let spec = spec.to_str().unwrap();

    // medlab lists the data; healthtech buys, downloads and confirms it.
    net.run(
        "medlab",
        "provider",
        &[
            "dataset",
            "upload",
            "--file",
            csv.to_str().unwrap(),
            "--title",
            "Heart",
            "--price",
            "2000",
        ],
    )
    .unwrap();
    net.run("healthtech", "buyer", &["dataset", "buy", "--dataset", "1"])
        .unwrap();
    let bought = work.join("bought.csv");
    net.run(
        "healthtech",
        "buyer",
        &[
            "dataset",
            "download",
            "--purchase",
            "1",
            "--out",
            bought.to_str().unwrap(),
            "--confirm",
        ],
    )
    .unwrap();

    // 1. Refusals, each with what to fix.
    let bad_spec = work.join("bad.json");
    std::fs::write(
        &bad_spec,
        std::fs::read_to_string(spec_file())
            .unwrap()
            .replace("\"epochs\": 30", "\"epochs\": 0"),
    )
    .unwrap();
    let e = net
        .run(
            "healthtech",
            "buyer",
            &[
                "job",
                "submit",
                "--dataset",
                "1",
                "--spec",
                bad_spec.to_str().unwrap(),
                "--bounty",
                "500",
            ],
        )
        .unwrap_err();
    assert!(e.contains("epochs"), "{e}");
    let e = net
        .run(
            "datacorp",
            "buyer",
            &[
                "job",
                "submit",
                "--dataset",
                "1",
                "--spec",
                spec,
                "--bounty",
                "500",
            ],
        )
        .unwrap_err();
    assert!(e.contains("no confirmed purchase of dataset 1"), "{e}");

    // 2. healthtech's job. The worker registered itself at start.
    let worker = net.signer("datacorp", "trainer").address();
    let deadline = Instant::now() + Duration::from_secs(60);
    while net
        .node()
        .record(query::worker(worker))
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the devnet's worker never registered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // node3's verifier is replaced by a wrong one: it will say "mismatch".
    net.kill("verifiers", 3);
    let wrong = validator_of(net.path(), 3);
    let medlab_validator = net.signer("medlab", "validator").address();
    let healthtech_validator = net.signer("healthtech", "validator").address();
    let before = [
        net.account(worker).await,
        net.account(healthtech_validator).await,
        net.account(medlab_validator).await,
    ];

    let out = net
        .run(
            "healthtech",
            "buyer",
            &[
                "job",
                "submit",
                "--dataset",
                "1",
                "--spec",
                spec,
                "--bounty",
                "500",
                "--stake",
                "100",
                "--sample",
                "0.25",
            ],
        )
        .unwrap();
    assert!(out.contains("job 1 submitted"), "{out}");
    let j = net
        .wait_job(1, 120, |j| {
            j.attestation.as_ref().is_some_and(|a| !a.beacon.is_empty())
        })
        .await;
    VerdictFile {
        job_id: 1,
        result_digest: j
            .result
            .as_ref()
            .unwrap()
            .digest
            .clone()
            .try_into()
            .unwrap(),
        matches: false,
        segments_digest: [0; 32],
        salt: [7; 32],
    }
    .write_atomically(&net.path().join("node3/verdicts"))
    .unwrap();
    let j = net
        .wait_job(1, 180, |j| {
            matches!(status(j), pb::JobStatus::Final | pb::JobStatus::Refunded)
        })
        .await;
    assert_eq!(status(&j), pb::JobStatus::Final, "{:#?}", j.steps);
    let steps: Vec<&str> = j.steps.iter().map(|s| s.step.as_str()).collect();
    for want in [
        "submitted",
        "assigned",
        "accepted",
        "result",
        "beacon",
        "attested",
        "revealing",
        "final",
    ] {
        assert!(steps.contains(&want), "{want} missing from {steps:?}");
    }
    let w = attestor(&j, &wrong);
    assert!(w.revealed && !w.matches, "{w:?}");
    let model = net
        .node()
        .record(query::model_version(j.model_version))
        .await
        .unwrap()
        .unwrap();
    let result = j.result.as_ref().unwrap();
    assert_eq!(model.model_sha256, result.model_sha256);
    assert_eq!(model.dataset_ids, vec![1]);
    assert_eq!(model.algorithm, "logistic_regression");
    assert_eq!(model.owner_org, "healthtech");
    // The model the worker trained is the one a bare trainer run gives on the same data.
    let bare = work.join("bare");
    let run = Command::new(trainer_bin())
        .args(["run", "--quiet", "--spec", spec, "--data"])
        .arg(&csv)
        .arg("--out")
        .arg(&bare)
        .output()
        .unwrap();
    assert!(run.status.success());
    let bare_result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bare.join("result.json")).unwrap()).unwrap();
    assert_eq!(
        bare_result["model_sha256"].as_str().unwrap(),
        hex::encode(&result.model_sha256)
    );
    // 10% of 500 to the three agreeing validators (power 10 each: 16 each, 48 in all), the rest
    // and the stake to the worker; each also paid its own fees (its txs: accept and result,
    // the verifiers' key requests). medlab's validator member operates node0 (agreed) and
    // node3 (wrong): one share.
    for ((who, earned), (balance, nonce)) in [
        ("worker", 452u128),
        ("healthtech validator", 16),
        ("medlab validator", 16),
    ]
    .into_iter()
    .zip(before)
    {
        let a = match who {
            "worker" => worker,
            "healthtech validator" => healthtech_validator,
            _ => medlab_validator,
        };
        let (now, nonce_now) = net.account(a).await;
        let fees = u128::from(nonce_now - nonce);
        assert_eq!(now, balance + earned - fees, "{who}: {fees} fees");
    }
    let stats = net
        .node()
        .record(query::attestor(hex::encode(wrong)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stats.outvoted, stats.agreed), (1, 0));
    let ds = net
        .node()
        .record(query::dataset_stats(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ds.training_runs, ds.derived_models), (1, 1));
    let shown = net
        .run("healthtech", "buyer", &["job", "status", "1"])
        .unwrap();
    assert!(
        shown.contains("job 1: final") && shown.contains("revealed MISMATCH"),
        "{shown}"
    );

    // 3. node3's own verifier is back; the test's workers, medlab's and healthtech's trainers,
    // take job 2 while datacorp's steps aside. (All four validators attest the forgeries: a
    // forged segment is re-run by two of them, and a mismatch rejects with more than 1/3 of the
    // power. Were one of a segment's two re-runners down, one finding would not be enough: the
    // result would be undecided, the stake returned and the job drawn again.)
    ndctl(net.path(), &["devnet", "up", "--only", "3"]).unwrap();
    let forgers = [
        net.signer("medlab", "trainer"),
        net.signer("healthtech", "trainer"),
    ];
    let forger_orgs = ["medlab", "healthtech"];
    step_aside(&net).await;
    for (f, org) in forgers.iter().zip(forger_orgs) {
        submit(
            &net.node(),
            f,
            Amount(1),
            vec![msg::register_worker(1, &net.gateway_url(org))],
        )
        .await
        .unwrap();
    }
    let before: Vec<u128> = {
        let mut v = Vec::new();
        for f in &forgers {
            v.push(net.balance(f.address()).await);
        }
        v
    };
    let buyer = net.signer("healthtech", "buyer");
    let buyer_before = net.balance(buyer.address()).await;
    submit_job(&net, &buyer, std::fs::read_to_string(spec_file()).unwrap()).await;

    // Attempt 1: a trace with one forged checkpoint (every segment sampled).
    let first = net
        .wait_job(2, 60, |j| status(j) == pb::JobStatus::Assigned)
        .await;
    let (a, a_org) = forgers
        .iter()
        .zip(forger_orgs)
        .find(|(f, _)| first.worker == f.address().0.to_vec())
        .unwrap();
    forge(&net, 2, a, a_org, &csv, Forgery::Checkpoint).await;
    let j = net.wait_job(2, 240, |j| ended_attempt(j, 1)).await;
    assert_eq!(
        j.steps.iter().filter(|s| s.step == "rejected").count(),
        1,
        "a forged segment was not caught: {:#?}",
        j.steps
    );
    // The forger lost its stake (and paid two fees: accept, result); half of it went to the
    // validators that found the forgery (16 or 25 each, as two or three revealed before the
    // decision), the rest to the submitter, whose bounty stays in escrow for the next worker.
    let ai = forgers
        .iter()
        .position(|f| f.address() == a.address())
        .unwrap();
    assert_eq!(net.balance(a.address()).await, before[ai] - 100 - 2);
    let back = net.balance(buyer.address()).await + 500 + 1 - buyer_before;
    assert!(
        back == 50 || back == 52,
        "the submitter got {back} of the stake"
    );

    // Attempt 2: the other forger withholds a checkpoint (never uploaded).
    let second = net
        .wait_job(2, 60, |j| {
            status(j) == pb::JobStatus::Assigned && j.tried.len() == 1
        })
        .await;
    let (b, b_org) = forgers
        .iter()
        .zip(forger_orgs)
        .find(|(f, _)| second.worker == f.address().0.to_vec())
        .unwrap();
    assert_ne!(
        b.address(),
        a.address(),
        "a rejected worker is never drawn again"
    );
    forge(&net, 2, b, b_org, &csv, Forgery::WithheldCheckpoint).await;
    let j = net.wait_job(2, 240, |j| ended_attempt(j, 2)).await;
    assert_eq!(
        j.steps.iter().filter(|s| s.step == "rejected").count(),
        2,
        "a withheld checkpoint did not cost the stake: {:#?}",
        j.steps
    );

    // Attempt 3: node3 goes down for the rest of the test (its validator and verifier);
    // datacorp's worker comes back (it re-registers its capacity) and runs job 2 honestly; three
    // of four validators make it final.
    ndctl(net.path(), &["devnet", "down", "--only", "3"]).unwrap();
    ndctl(net.path(), &["devnet", "up", "--only", "2"]).unwrap();
    let j = net
        .wait_job(2, 240, |j| {
            matches!(status(j), pb::JobStatus::Final | pb::JobStatus::Refunded)
        })
        .await;
    assert_eq!(status(&j), pb::JobStatus::Final, "{:#?}", j.steps);
    assert_eq!(j.worker, worker.0.to_vec());
    let att = j.attestation.unwrap();
    assert!(!attestor_revealed(&att, &wrong));
    assert_eq!(
        net.node()
            .record(query::model_version(j.model_version))
            .await
            .unwrap()
            .unwrap()
            .model_sha256,
        model.model_sha256,
        "the same spec on the same data: the same model"
    );

    // 4. Job 3: a forged model hash, then a worker that dies after accepting (its result window,
    // the spec's 10 s plus the slack, passes): each loses its stake, the bounty stays, and
    // datacorp's worker finishes the job.
    step_aside(&net).await;
    let short = std::fs::read_to_string(spec_file())
        .unwrap()
        .replace("\"max_seconds\": 300", "\"max_seconds\": 10");
    assert!(short.contains("\"max_seconds\": 10"));
    submit_job(&net, &buyer, short).await;
    let first = net
        .wait_job(3, 60, |j| status(j) == pb::JobStatus::Assigned)
        .await;
    let (a, a_org) = forgers
        .iter()
        .zip(forger_orgs)
        .find(|(f, _)| first.worker == f.address().0.to_vec())
        .unwrap();
    forge(&net, 3, a, a_org, &csv, Forgery::ModelHash).await;
    let j = net.wait_job(3, 240, |j| ended_attempt(j, 1)).await;
    assert!(
        j.steps.iter().any(|s| s.step == "rejected"),
        "a forged model hash was not caught: {:#?}",
        j.steps
    );
    let second = net
        .wait_job(3, 60, |j| {
            status(j) == pb::JobStatus::Assigned && j.tried.len() == 1
        })
        .await;
    let b = forgers
        .iter()
        .find(|f| second.worker == f.address().0.to_vec())
        .unwrap();
    let b_before = net.balance(b.address()).await;
    submit(&net.node(), b, Amount(1), vec![msg::accept_job(3)])
        .await
        .unwrap();
    // ... and nothing more from it.
    let j = net.wait_job(3, 240, |j| ended_attempt(j, 2)).await;
    assert!(j.steps.iter().any(|s| s.step == "missed"), "{:#?}", j.steps);
    assert_eq!(net.balance(b.address()).await, b_before - 100 - 1);
    let escrowed = net.balance(training::escrow_account()).await;
    assert!(
        escrowed >= 500,
        "the bounty is intact in escrow ({escrowed})"
    );
    ndctl(net.path(), &["devnet", "up", "--only", "2"]).unwrap();
    let j = net
        .wait_job(3, 240, |j| {
            matches!(status(j), pb::JobStatus::Final | pb::JobStatus::Refunded)
        })
        .await;
    assert_eq!(status(&j), pb::JobStatus::Final, "{:#?}", j.steps);
    assert_eq!(j.worker, worker.0.to_vec());
}

/// Whether attempt `n` of a job ended (rejected, missed, undecided or final).
fn ended_attempt(j: &pb::Job, n: usize) -> bool {
    j.steps
        .iter()
        .filter(|s| {
            matches!(
                s.step.as_str(),
                "rejected" | "missed" | "undecided" | "final"
            )
        })
        .count()
        >= n
}

/// Stops datacorp's worker and withdraws its capacity, so only the test's workers are drawn.
async fn step_aside(net: &Net) {
    net.kill("workers", 2);
    submit(
        &net.node(),
        &net.signer("datacorp", "trainer"),
        Amount(1),
        vec![msg::register_worker(0, &net.gateway_url("datacorp"))],
    )
    .await
    .unwrap();
}

async fn submit_job(net: &Net, buyer: &Signer, spec_json: String) {
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 1800;
    submit(
        &net.node(),
        buyer,
        Amount(1),
        vec![msg::submit_job(pb::SubmitJob {
            dataset_ids: vec![1],
            spec_json,
            bounty: "500".into(),
            stake: "100".into(),
            deadline,
            sample_bps: 10_000,
        })],
    )
    .await
    .unwrap();
}

/// How a test worker cheats.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Forgery {
    /// Checkpoint 3 altered and the trace re-hashed around it.
    Checkpoint,
    /// Checkpoint 3 never uploaded.
    WithheldCheckpoint,
    /// The result names another model file (also uploaded) than the run's.
    ModelHash,
}

/// A test worker accepts job `id`, trains honestly on `csv`, cheats as told, uploads to its own
/// org's gateway and posts the result.
async fn forge(net: &Net, id: u64, who: &Signer, org: &str, csv: &Path, how: Forgery) {
    let node = net.node();
    submit(&node, who, Amount(1), vec![msg::accept_job(id)])
        .await
        .unwrap();
    let job = net.job(id).await;
    let run_dir = net.path().join(format!("work/forged-{id}-{org}"));
    let spec = run_dir.with_extension("json");
    std::fs::write(&spec, &job.spec_json).unwrap();
    let run = Command::new(trainer_bin())
        .args(["run", "--quiet", "--spec"])
        .arg(&spec)
        .arg("--data")
        .arg(csv)
        .arg("--out")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(run.status.success());
    let ckpt = |i: usize| run_dir.join("checkpoints").join(format!("{i:05}.ckpt"));
    let model_path = run_dir.join("model.safetensors");
    match how {
        Forgery::Checkpoint => {
            let mut forged = std::fs::read(ckpt(3)).unwrap();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            std::fs::write(ckpt(3), &forged).unwrap();
            let trace: neurodata_trainer::trace::Trace =
                serde_json::from_slice(&std::fs::read(run_dir.join("trace.json")).unwrap())
                    .unwrap();
            let leaves: Vec<[u8; 32]> = (0..trace.leaves.len())
                .map(|i| {
                    use sha2::Digest as _;
                    sha2::Sha256::digest(std::fs::read(ckpt(i)).unwrap()).into()
                })
                .collect();
            let trace =
                neurodata_trainer::trace::Trace::new(trace.checkpoint_every, trace.steps, leaves);
            std::fs::write(
                run_dir.join("trace.json"),
                serde_json::to_vec(&trace).unwrap(),
            )
            .unwrap();
        }
        Forgery::ModelHash => {
            let mut other = std::fs::read(&model_path).unwrap();
            let last = other.len() - 1;
            other[last] ^= 1;
            std::fs::write(&model_path, other).unwrap();
        }
        Forgery::WithheldCheckpoint => {}
    }
    let trace: neurodata_trainer::trace::Trace =
        serde_json::from_slice(&std::fs::read(run_dir.join("trace.json")).unwrap()).unwrap();
    let gw = net.gateway(org, "trainer").await;
    let up = |path: PathBuf| {
        let gw = gw.clone();
        async move {
            let bytes = std::fs::read(&path).unwrap();
            let (cid, _) = gw.upload(std::io::Cursor::new(bytes)).await.unwrap();
            cid
        }
    };
    let mut checkpoint_cids = Vec::new();
    for i in 0..trace.leaves.len() {
        if how == Forgery::WithheldCheckpoint && i == 3 {
            let bytes = std::fs::read(ckpt(i)).unwrap();
            checkpoint_cids.push(Cid::of(&bytes).to_string());
        } else {
            checkpoint_cids.push(up(ckpt(i)).await);
        }
    }
    let model_bytes = std::fs::read(&model_path).unwrap();
    let run_result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("result.json")).unwrap()).unwrap();
    let result = pb::SubmitResult {
        job_id: id,
        model_sha256: {
            use sha2::Digest as _;
            sha2::Sha256::digest(&model_bytes).to_vec()
        },
        trace_root: hex::decode(&trace.root).unwrap(),
        segments: trace.segments() as u32,
        metrics_json: serde_json::to_string(&run_result["metrics"]).unwrap(),
        model_cid: up(model_path.clone()).await,
        onnx_cid: up(run_dir.join("model.onnx")).await,
        trace_cid: up(run_dir.join("trace.json")).await,
        checkpoint_cids,
        sandbox_sha256: Vec::new(),
    };
    assert_eq!(result.model_cid, Cid::of(&model_bytes).to_string());
    submit(&node, who, Amount(1), vec![msg::submit_result(result)])
        .await
        .unwrap();
}

fn attestor_revealed(att: &pb::ResultAttestation, v: &[u8]) -> bool {
    att.attestors.iter().any(|a| a.validator == v && a.revealed)
}
