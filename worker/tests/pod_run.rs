//! `neurodata-worker pod-run`, the command of a Kubernetes run pod, run here as a process with
//! the real trainer: it opens the sealed data with the run's key and trains; a wrong key, a
//! damaged file or a refused spec end it with the reason in its termination message.

use std::path::{Path, PathBuf};
use std::process::Command;

use neurodata_crypto::DataKey;
use neurodata_trainer::JobSpec;
use neurodata_worker::artifacts;

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

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

struct Pod {
    dir: tempfile::TempDir,
    key: DataKey,
}

/// A pod's files: the spec and key (its Secret), the sealed iris data, an empty `plain` and
/// `out`.
fn pod(spec_edit: impl FnOnce(&mut serde_json::Value)) -> Pod {
    let dir = tempfile::tempdir().expect("tempdir");
    let text =
        std::fs::read_to_string(manifest("../trainer/tests/data/iris_logreg.json")).expect("spec");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["training"]["epochs"] = 20.into();
    v["checkpoint_every"] = 10.into();
    spec_edit(&mut v);
    std::fs::write(dir.path().join("spec.json"), v.to_string()).expect("spec");
    let key = DataKey::generate().expect("key");
    std::fs::write(dir.path().join("data-key"), key.as_bytes()).expect("key file");
    neurodata_crypto::stream::encrypt(
        std::fs::File::open(manifest("../trainer/tests/data/iris.csv")).expect("iris"),
        std::fs::File::create(dir.path().join("data.csv.sealed")).expect("sealed"),
        &key,
        neurodata_crypto::stream::DEFAULT_CHUNK_SIZE,
    )
    .expect("seal");
    std::fs::create_dir(dir.path().join("plain")).expect("plain");
    Pod { dir, key }
}

impl Pod {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self) -> (bool, String) {
        let status = Command::new(env!("CARGO_BIN_EXE_neurodata-worker"))
            .arg("pod-run")
            .arg("--spec")
            .arg(self.path("spec.json"))
            .arg("--key")
            .arg(self.path("data-key"))
            .arg("--sealed")
            .arg(self.path("data.csv.sealed"))
            .arg("--plain")
            .arg(self.path("plain"))
            .arg("--out")
            .arg(self.path("out"))
            .arg("--threads")
            .arg("1")
            .arg("--trainer")
            .arg(trainer())
            .arg("--termination-log")
            .arg(self.path("termination-log"))
            .status()
            .expect("pod-run starts");
        let message = std::fs::read_to_string(self.path("termination-log")).unwrap_or_default();
        (status.success(), message)
    }
}

#[test]
fn it_opens_the_data_and_trains() {
    let pod = pod(|_| {});
    let (ok, message) = pod.run();
    assert!(ok, "pod-run failed: {message}");
    assert!(artifacts::outputs_complete(&pod.path("out")));
    // The same model as the trainer makes from the plaintext itself.
    let (result, _) = artifacts::read_result(&pod.path("out")).expect("result");
    let spec = std::fs::read_to_string(pod.path("spec.json")).expect("spec");
    assert!(JobSpec::from_json(&spec).is_ok());
    assert_eq!(result.model_sha256.len(), 64);
    // The plaintext is gone from the memory volume.
    assert_eq!(
        std::fs::read_dir(pod.path("plain")).expect("plain").count(),
        0
    );
    let _ = &pod.key;
}

#[test]
fn a_wrong_key_is_refused_with_the_reason() {
    let pod = pod(|_| {});
    let other = DataKey::generate().expect("key");
    std::fs::write(pod.path("data-key"), other.as_bytes()).expect("key file");
    let (ok, message) = pod.run();
    assert!(!ok);
    assert!(
        message.starts_with("error: ") && message.contains("does not open with the run's key"),
        "{message}"
    );
    assert!(!artifacts::outputs_complete(&pod.path("out")));
    assert_eq!(
        std::fs::read_dir(pod.path("plain")).expect("plain").count(),
        0,
        "no partial plaintext left"
    );
}

#[test]
fn a_damaged_sealed_file_is_refused() {
    let pod = pod(|_| {});
    let mut bytes = std::fs::read(pod.path("data.csv.sealed")).expect("sealed");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(pod.path("data.csv.sealed"), bytes).expect("write");
    let (ok, message) = pod.run();
    assert!(!ok);
    assert!(message.contains("does not open"), "{message}");
}

#[test]
fn a_key_of_the_wrong_length_is_refused() {
    let pod = pod(|_| {});
    std::fs::write(pod.path("data-key"), b"short").expect("key file");
    let (ok, message) = pod.run();
    assert!(!ok);
    assert!(message.contains("not a data key"), "{message}");
}

#[test]
fn the_trainers_refusal_is_the_message() {
    // A target column the data does not have: the trainer refuses, pod-run passes its reason on.
    let pod = pod(|v| v["schema"]["columns"][3]["name"] = "no_such_column".into());
    let (ok, message) = pod.run();
    assert!(!ok);
    assert!(
        message.starts_with("error: ") && message.contains("no_such_column"),
        "{message}"
    );
}

#[test]
fn a_run_past_its_time_limit_says_so() {
    let pod = pod(|v| {
        v["training"]["epochs"] = 100000.into();
        v["checkpoint_every"] = 10000.into();
        v["limits"] = serde_json::json!({"max_seconds": 1, "max_memory_mb": 1024});
    });
    let (ok, message) = pod.run();
    assert!(!ok);
    assert_eq!(message, "time limit exceeded");
}

#[test]
fn a_verification_answers_in_the_termination_message() {
    // A real run to verify: pod-run trains it first, as a worker's pod would.
    let pod = pod(|_| {});
    let (ok, message) = pod.run();
    assert!(ok, "the training run failed: {message}");
    // A verifier's pod: the same sealed data, `trainer verify` of every segment.
    let me = hex::encode([0x11u8; 20]);
    let status = Command::new(env!("CARGO_BIN_EXE_neurodata-worker"))
        .arg("pod-run")
        .arg("--key")
        .arg(pod.path("data-key"))
        .arg("--sealed")
        .arg(pod.path("data.csv.sealed"))
        .arg("--plain")
        .arg(pod.path("plain"))
        .arg("--trainer")
        .arg(trainer())
        .arg("--termination-log")
        .arg(pod.path("answer"))
        .arg("--")
        .args(["verify", "--out"])
        .arg(pod.path("out"))
        .arg("--data")
        .arg(pod.path("plain").join("data.csv"))
        .args(["--job-id", "1", "--validator", &me, "--validators", &me])
        .args([
            "--sample-bps",
            "10000",
            "--beacon",
            &hex::encode([0x22u8; 32]),
        ])
        .arg("--json")
        .status()
        .expect("pod-run starts");
    let answer = std::fs::read_to_string(pod.path("answer")).unwrap_or_default();
    assert!(status.success(), "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("the answer is JSON");
    assert_eq!(v["matches"], true, "{answer}");
    assert_eq!(v["segments_digest"].as_str().map(str::len), Some(64));
    assert!(answer.len() <= 4096);
    assert_eq!(
        std::fs::read_dir(pod.path("plain")).expect("plain").count(),
        0,
        "the plaintext is gone"
    );
}
