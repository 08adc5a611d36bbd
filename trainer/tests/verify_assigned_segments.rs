//! `trainer verify --json` with a validator's assigned segments: an honest run matches with the
//! digest of the re-computed end checkpoints; a damaged or forged end checkpoint of an assigned
//! segment, or a model that is not the final checkpoint's, is `matches: false` with the reason
//! and exit status 0; only a run that cannot be checked at all exits non-zero.

use std::path::{Path, PathBuf};
use std::process::Output;

use neurodata_trainer::model::Model;
use neurodata_trainer::trace::{Trace, ValidatorAddress, segments_for};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const JOB_ID: u64 = 42;
const SAMPLE_BPS: u32 = 5_000;
const BEACON: &str = "5f1c0a9e";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn trainer(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("start trainer")
}

fn validators() -> Vec<ValidatorAddress> {
    (1..=4u8)
        .map(|i| {
            let mut a = [0u8; 20];
            a.copy_from_slice(&Sha256::digest([b'v', i])[..20]);
            a
        })
        .collect()
}

/// `verify --json` as validator `me`: the exit status and the verdict (`Null` when stdout is not
/// JSON).
fn verify_as(out: &Path, file: &Path, me: &ValidatorAddress) -> (bool, Value, String) {
    let list: Vec<String> = validators().iter().map(hex::encode_upper).collect();
    let me = hex::encode_upper(me);
    let job = JOB_ID.to_string();
    let bps = SAMPLE_BPS.to_string();
    let o = trainer(&[
        "verify",
        "--json",
        "--out",
        out.to_str().expect("utf8"),
        "--data",
        file.to_str().expect("utf8"),
        "--job-id",
        &job,
        "--validator",
        &me,
        "--validators",
        &list.join(","),
        "--sample-bps",
        &bps,
        "--beacon",
        BEACON,
    ]);
    let verdict = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (
        o.status.success(),
        verdict,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn read_trace(out: &Path) -> Trace {
    serde_json::from_str(&std::fs::read_to_string(out.join("trace.json")).expect("trace"))
        .expect("trace json")
}

#[test]
fn a_validator_verifies_its_assigned_segments_and_reports_mismatches() {
    // A network (restored from parameters and optimizer state) and a tree (from its nodes).
    for spec in ["iris_logreg.json", "iris_tree.json"] {
        verifies_and_reports_mismatches(spec);
    }
}

fn verifies_and_reports_mismatches(spec: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = data("iris.csv");
    let out = dir.path().join("run");
    let run = trainer(&[
        "run",
        "--quiet",
        "--spec",
        data(spec).to_str().expect("utf8"),
        "--data",
        file.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert!(
        run.status.success(),
        "{spec}: run: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let result: Value = serde_json::from_slice(&run.stdout).expect("result json");
    let trace = read_trace(&out);
    let segments = trace.segments();
    assert!(segments >= 4, "{spec}: {segments} segments");

    // A validator with an assigned segment whose end is not the final checkpoint (so that
    // damaging the end checkpoint is found by that segment's re-run, not the model check).
    let beacon = hex::decode(BEACON).expect("hex");
    let (me, mine, segment) = validators()
        .into_iter()
        .find_map(|v| {
            let mine = segments_for(&beacon, JOB_ID, &validators(), segments, SAMPLE_BPS, &v);
            let s = mine.iter().copied().find(|s| s + 1 < segments)?;
            Some((v, mine, s))
        })
        .expect("some validator has a segment before the last");

    let (ok, verdict, stderr) = verify_as(&out, &file, &me);
    assert!(ok, "{spec}: honest run: {stderr}");
    let mut digest = Sha256::new();
    for s in &mine {
        digest.update(hex::decode(&trace.leaves[s + 1]).expect("hex"));
    }
    assert_eq!(
        verdict,
        json!({
            "segments": mine,
            "matches": true,
            "segments_digest": hex::encode(digest.finalize()),
            "model_sha256": result["model_sha256"],
            "trace_root": result["trace_root"],
            "error": null,
        }),
        "{spec}: the honest run's verdict"
    );

    // The end checkpoint of an assigned segment, damaged on disk (trace untouched).
    let end = out.join(format!("checkpoints/{:05}.ckpt", segment + 1));
    let original = std::fs::read(&end).expect("checkpoint");
    let mut bad = original.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    std::fs::write(&end, &bad).expect("write");
    let (ok, verdict, stderr) = verify_as(&out, &file, &me);
    assert!(
        ok,
        "{spec}: a damaged checkpoint is a verdict, not a failure: {stderr}"
    );
    assert_eq!(verdict["matches"], json!(false), "{spec}: {verdict}");
    assert_eq!(verdict["segments_digest"], Value::Null, "{spec}: {verdict}");
    let reason = verdict["error"].as_str().expect("a reason");
    assert!(
        reason.contains(&format!("checkpoint {} is corrupt", segment + 1)),
        "{spec}: {reason}"
    );

    // A forged segment: the damaged checkpoint committed in the trace and its root, as a cheating
    // trainer would.
    let trace_path = out.join("trace.json");
    let result_path = out.join("result.json");
    let trace_text = std::fs::read_to_string(&trace_path).expect("trace");
    let result_text = std::fs::read_to_string(&result_path).expect("result");
    let mut leaves: Vec<[u8; 32]> = trace
        .leaves
        .iter()
        .map(|h| hex::decode(h).expect("hex").try_into().expect("32 bytes"))
        .collect();
    leaves[segment + 1] = Sha256::digest(&bad).into();
    let forged = Trace::new(trace.checkpoint_every, trace.steps.clone(), leaves);
    let mut forged_result = result.clone();
    forged_result["trace_root"] = json!(forged.root);
    std::fs::write(&trace_path, serde_json::to_string(&forged).expect("json")).expect("write");
    std::fs::write(&result_path, forged_result.to_string()).expect("write");
    let (ok, verdict, stderr) = verify_as(&out, &file, &me);
    assert!(ok, "{spec}: a forged segment is a verdict: {stderr}");
    assert_eq!(verdict["matches"], json!(false), "{spec}: {verdict}");
    assert_eq!(
        verdict["trace_root"],
        json!(forged.root),
        "{spec}: {verdict}"
    );
    let reason = verdict["error"].as_str().expect("a reason");
    assert!(
        reason.contains(&format!("trace mismatch in segment {segment}")),
        "{spec}: {reason}"
    );
    std::fs::write(&end, &original).expect("restore");
    std::fs::write(&trace_path, &trace_text).expect("restore");
    std::fs::write(&result_path, &result_text).expect("restore");

    // A model that is not the final checkpoint's: a cheaper one (fewer epochs, a shallower
    // tree) under the job's spec, submitted beside the honest trace and re-hashed into the result.
    let model_path = out.join("model.safetensors");
    let model_bytes = std::fs::read(&model_path).expect("model");
    let honest = Model::from_bytes(&model_bytes).expect("model");
    let mut cheap_spec: Value =
        serde_json::from_str(&std::fs::read_to_string(data(spec)).expect("spec")).expect("json");
    if cheap_spec["model"]["algorithm"] == json!("decision_tree") {
        cheap_spec["model"]["max_depth"] = json!(1);
    } else {
        cheap_spec["training"]["epochs"] = json!(3);
    }
    let cheap_spec_path = dir.path().join("cheap.json");
    std::fs::write(&cheap_spec_path, cheap_spec.to_string()).expect("write");
    let cheap_out = dir.path().join("cheap");
    let cheap_run = trainer(&[
        "run",
        "--quiet",
        "--spec",
        cheap_spec_path.to_str().expect("utf8"),
        "--data",
        file.to_str().expect("utf8"),
        "--out",
        cheap_out.to_str().expect("utf8"),
    ]);
    assert!(cheap_run.status.success(), "{spec}: cheap run");
    let mut cheap =
        Model::from_bytes(&std::fs::read(cheap_out.join("model.safetensors")).expect("model"))
            .expect("model");
    cheap.spec = honest.spec.clone();
    cheap.preprocessing = honest.preprocessing.clone();
    let early = cheap.to_bytes().expect("bytes");
    assert_ne!(early, model_bytes, "{spec}: the cheap model differs");
    std::fs::write(&model_path, &early).expect("write");
    let mut claim = result.clone();
    claim["model_sha256"] = json!(hex::encode(Sha256::digest(&early)));
    std::fs::write(&result_path, claim.to_string()).expect("write");
    let (ok, verdict, stderr) = verify_as(&out, &file, &me);
    assert!(ok, "{spec}: another model is a verdict: {stderr}");
    assert_eq!(verdict["matches"], json!(false), "{spec}: {verdict}");
    assert_eq!(
        verdict["model_sha256"], claim["model_sha256"],
        "{spec}: {verdict}"
    );
    let reason = verdict["error"].as_str().expect("a reason");
    assert!(
        reason.contains("not the model of the final checkpoint"),
        "{spec}: {reason}"
    );
    std::fs::write(&model_path, &model_bytes).expect("restore");
    std::fs::write(&result_path, &result_text).expect("restore");
    let (ok, verdict, _) = verify_as(&out, &file, &me);
    assert!(
        ok && verdict["matches"] == json!(true),
        "{spec}: restored: {verdict}"
    );

    // What cannot be checked exits non-zero: a missing run, another data file, an outsider.
    let (ok, _, stderr) = verify_as(&dir.path().join("missing"), &file, &me);
    assert!(!ok && stderr.contains("missing"), "{spec}: {stderr}");
    let (ok, _, stderr) = verify_as(&out, &data("breast_cancer.csv"), &me);
    assert!(!ok, "{spec}: another data file: {stderr}");
    let (ok, _, stderr) = verify_as(&out, &file, &[0xee; 20]);
    assert!(
        !ok && stderr.contains("not among --validators"),
        "{spec}: {stderr}"
    );
}
