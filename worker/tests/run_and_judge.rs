//! The worker's run and a validator's verdict on it, with the real trainer and no chain: the
//! local runner's outcomes, the `SubmitResult` a worker builds, the `result.json` a validator
//! rebuilds from the chain's record of it, and the verdict on an honest run and on tampered ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use neurodata_crypto::cid::Cid;
use neurodata_proto::chain::v1 as pb;
use neurodata_trainer::JobSpec;
use neurodata_worker::artifacts::{self, checkpoint_path};
use neurodata_worker::journal::Uploaded;
use neurodata_worker::judge::{self, Assignment, Judgement};
use neurodata_worker::runner::{LocalRunner, RunOutcome, RunRequest, RunStatus, Runner};
use sha2::{Digest, Sha256};

/// The trainer binary beside this test's target directory (`$CARGO_TARGET_DIR/debug/trainer`),
/// built first if it is not there.
fn trainer() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let debug = exe.parent().and_then(Path::parent).expect("target/debug");
    let bin = debug.join("trainer");
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "neurodata-trainer", "--bin", "trainer"])
            .status()
            .expect("cargo build trainer");
        assert!(ok.success(), "building the trainer failed");
    }
    bin
}

fn iris() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainer/tests/data/iris.csv")
}

/// A small multinomial logistic regression on iris with 16 segments, as the chain stores it
/// (canonical JSON).
fn spec_json() -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainer/tests/data/iris_logreg.json"),
    )
    .expect("spec");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["training"]["epochs"] = 20.into();
    v["checkpoint_every"] = 10.into();
    JobSpec::from_json(&v.to_string())
        .expect("spec")
        .canonical_json()
}

struct Run {
    _dir: tempfile::TempDir,
    root: PathBuf,
    out: PathBuf,
    spec_json: String,
}

async fn train() -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_owned();
    let spec_json = spec_json();
    let spec = root.join("spec.json");
    std::fs::write(&spec, &spec_json).expect("write spec");
    let out = root.join("out");
    let runner = LocalRunner {
        trainer: trainer(),
        threads: Some(1),
    };
    let request = RunRequest {
        job_id: 7,
        spec,
        data: iris(),
        out: out.clone(),
        max_seconds: 300,
        max_memory_mb: 1024,
    };
    assert_eq!(runner.find(7, &out).await.expect("find"), None);
    let outcome = runner.run(&request).await.expect("run");
    assert_eq!(outcome, RunOutcome::Succeeded);
    assert!(artifacts::outputs_complete(&out));
    Run {
        _dir: dir,
        root,
        out,
        spec_json,
    }
}

fn cid(path: &Path) -> String {
    Cid::of(&std::fs::read(path).expect("read")).to_string()
}

/// The CIDs a gateway would give the run's files.
fn uploaded(out: &Path) -> Uploaded {
    let (result, _) = artifacts::read_result(out).expect("result");
    let files = artifacts::published_files(out, result.segments);
    Uploaded {
        model_cid: cid(&files[0]),
        onnx_cid: cid(&files[1]),
        trace_cid: cid(&files[2]),
        checkpoint_cids: files[3..].iter().map(|p| cid(p)).collect(),
    }
}

const ME: [u8; 20] = [1; 20];
const OTHER: [u8; 20] = [2; 20];

/// The job as the chain records it after the worker's SubmitResult and the beacon.
fn chain_job(run: &Run, submitted: pb::SubmitResult) -> pb::Job {
    pb::Job {
        id: 7,
        spec_json: run.spec_json.clone(),
        spec_sha256: Sha256::digest(run.spec_json.as_bytes()).to_vec(),
        sample_bps: 3_000,
        status: pb::JobStatus::Attesting as i32,
        result: Some(pb::JobResult {
            model_sha256: submitted.model_sha256,
            trace_root: submitted.trace_root,
            segments: submitted.segments,
            metrics_json: submitted.metrics_json,
            model_cid: submitted.model_cid,
            onnx_cid: submitted.onnx_cid,
            trace_cid: submitted.trace_cid,
            checkpoint_cids: submitted.checkpoint_cids,
            sandbox_sha256: submitted.sandbox_sha256,
            height: 10,
            digest: vec![3; 32],
        }),
        attestation: Some(pb::ResultAttestation {
            beacon: vec![0xab; 32],
            beacon_height: 11,
            commit_until: 131,
            attestors: [ME, OTHER]
                .iter()
                .map(|v| pb::Attestor {
                    validator: v.to_vec(),
                    power: 10,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What a validator fetches by CID from the worker's gateway: the trace, model, ONNX export and
/// the checkpoints its segments need, into a fresh directory; then result.json rebuilt from
/// the chain record.
fn validator_dir(run: &Run, job: &pb::Job, name: &str) -> (PathBuf, Assignment) {
    let dir = run.root.join(name);
    std::fs::create_dir_all(dir.join("checkpoints")).expect("mkdir");
    for f in ["trace.json", "model.safetensors", "model.onnx"] {
        std::fs::copy(run.out.join(f), dir.join(f)).expect("copy");
    }
    let a = Assignment::of(job, ME).expect("assignment");
    let segments = job.result.as_ref().expect("result").segments as usize;
    assert!(
        !a.segments(segments).is_empty(),
        "this validator re-runs something"
    );
    for i in a.checkpoints(segments) {
        std::fs::copy(checkpoint_path(&run.out, i), checkpoint_path(&dir, i)).expect("copy");
    }
    let data_sha256 = hex::encode(Sha256::digest(std::fs::read(iris()).expect("data")));
    let rebuilt = judge::rebuild_result(job, &data_sha256).expect("rebuild");
    judge::write_result(&dir, &rebuilt).expect("write result");
    (dir, a)
}

#[tokio::test]
async fn an_honest_run_matches_and_tampered_ones_do_not() {
    let run = train().await;
    let submitted =
        artifacts::submit_result(7, &run.out, &uploaded(&run.out)).expect("submit result");
    assert!(submitted.sandbox_sha256.is_empty());
    let job = chain_job(&run, submitted);
    let result = job.result.clone().expect("result");

    // The validator's result.json, rebuilt from the chain record, is the worker's own.
    let (worker_result, _) = artifacts::read_result(&run.out).expect("worker result");
    let data_sha256 = hex::encode(Sha256::digest(std::fs::read(iris()).expect("data")));
    assert_eq!(
        judge::rebuild_result(&job, &data_sha256).expect("rebuild"),
        worker_result,
        "result.json rebuilt from the chain record"
    );

    let t = trainer();
    let (honest, a) = validator_dir(&run, &job, "honest");
    match judge::judge(&t, &honest, &iris(), &a, &result) {
        Judgement::Verdict {
            matches,
            segments_digest,
            reason,
        } => {
            assert!(matches, "honest run: {reason:?}");
            assert_ne!(segments_digest, [0; 32]);
        }
        other => panic!("honest run not checked: {other:?}"),
    }

    // A checkpoint whose bytes are not its CID's.
    let last = result.segments as usize;
    let (swapped, a) = validator_dir(&run, &job, "swapped");
    let mut bytes = std::fs::read(checkpoint_path(&swapped, last)).expect("read");
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(checkpoint_path(&swapped, last), &bytes).expect("tamper");
    assert!(
        matches!(
            judge::judge(&t, &swapped, &iris(), &a, &result),
            Judgement::Verdict { matches: false, .. }
        ),
        "a checkpoint that is not its CID's bytes"
    );

    // A worker that published a tampered checkpoint under its own CID: the trace catches it.
    let mut lying = result.clone();
    lying.checkpoint_cids[last] = Cid::of(&bytes).to_string();
    let mut lying_job = job.clone();
    lying_job.result = Some(lying.clone());
    let (published, a) = validator_dir(&run, &lying_job, "published");
    std::fs::write(checkpoint_path(&published, last), &bytes).expect("tamper");
    match judge::judge(&t, &published, &iris(), &a, &lying) {
        Judgement::Verdict {
            matches, reason, ..
        } => assert!(
            !matches,
            "a tampered checkpoint published as such: {reason:?}"
        ),
        other => panic!("tampered run not checked: {other:?}"),
    }

    // Claimed metrics the model does not score.
    let mut inflated = result.clone();
    let mut metrics: serde_json::Value =
        serde_json::from_str(&inflated.metrics_json).expect("metrics");
    metrics["accuracy"] = 1.0.into();
    inflated.metrics_json = metrics.to_string();
    let mut inflated_job = job.clone();
    inflated_job.result = Some(inflated.clone());
    let (claimed, a) = validator_dir(&run, &inflated_job, "inflated");
    match judge::judge(&t, &claimed, &iris(), &a, &inflated) {
        Judgement::Verdict {
            matches, reason, ..
        } => {
            assert!(!matches);
            assert!(
                reason
                    .as_deref()
                    .is_some_and(|r| r.contains("do not reproduce")),
                "{reason:?}"
            );
        }
        other => panic!("inflated metrics not checked: {other:?}"),
    }
}

#[tokio::test]
async fn a_complete_run_is_found_after_a_restart_and_not_run_again() {
    let run = train().await;
    let model = run.out.join("model.safetensors");
    let before = std::fs::metadata(&model)
        .expect("model")
        .modified()
        .expect("mtime");
    let runner = LocalRunner {
        trainer: trainer(),
        threads: Some(1),
    };
    assert_eq!(
        runner.find(7, &run.out).await.expect("find"),
        Some(RunStatus::Finished(RunOutcome::Succeeded))
    );
    let request = RunRequest {
        job_id: 7,
        spec: run.root.join("spec.json"),
        data: iris(),
        out: run.out.clone(),
        max_seconds: 300,
        max_memory_mb: 1024,
    };
    assert_eq!(
        runner.run(&request).await.expect("run"),
        RunOutcome::Succeeded
    );
    let after = std::fs::metadata(&model)
        .expect("model")
        .modified()
        .expect("mtime");
    assert_eq!(before, after, "the model was not written again");
}

/// A stand-in trainer: a shell script.
fn script(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("fake-trainer");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn request(dir: &Path, max_seconds: u64) -> RunRequest {
    RunRequest {
        job_id: 9,
        spec: dir.join("spec.json"),
        data: dir.join("data.csv"),
        out: dir.join("out"),
        max_seconds,
        max_memory_mb: 64,
    }
}

#[tokio::test]
async fn a_run_past_the_time_limit_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = LocalRunner {
        trainer: script(dir.path(), "echo started >&2\nexec sleep 30"),
        threads: None,
    };
    let started = std::time::Instant::now();
    assert_eq!(
        runner.run(&request(dir.path(), 1)).await.expect("run"),
        RunOutcome::DeadlineExceeded
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn a_failing_trainer_reports_its_last_error_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = LocalRunner {
        trainer: script(
            dir.path(),
            "echo 'error: spec.json: no such column' >&2\nexit 1",
        ),
        threads: None,
    };
    assert_eq!(
        runner.run(&request(dir.path(), 30)).await.expect("run"),
        RunOutcome::Failed("spec.json: no such column".into())
    );
    let limit = LocalRunner {
        trainer: script(
            dir.path(),
            "echo 'error: time limit of 1 s exceeded after 3 step(s)' >&2\nexit 1",
        ),
        threads: None,
    };
    assert_eq!(
        limit.run(&request(dir.path(), 30)).await.expect("run"),
        RunOutcome::DeadlineExceeded
    );
}
