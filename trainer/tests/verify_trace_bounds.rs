//! `verify` ties the trace to the spec's start and end: a trace whose checkpoint 0 is not the
//! state the spec's seed gives (a run begun late, from any weights), or that stops before the run
//! is finished (a prefix), is a finding however well its segments re-run; the checkpoint steps
//! must be the schedule the spec implies.

use std::path::{Path, PathBuf};

use neurodata_trainer::JobSpec;
use neurodata_trainer::job::{self, Engine, Prepared, Quiet, RunResult};
use neurodata_trainer::trace::Trace;
use sha2::{Digest, Sha256};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn spec(name: &str) -> JobSpec {
    JobSpec::from_json(&std::fs::read_to_string(data(name)).expect("spec")).expect("spec parses")
}

fn ckpt(out: &Path, i: usize) -> PathBuf {
    out.join(format!("checkpoints/{i:05}.ckpt"))
}

fn read_result(out: &Path) -> RunResult {
    serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).expect("result"))
        .expect("result json")
}

fn leaves(trace: &Trace) -> Vec<[u8; 32]> {
    trace
        .leaves
        .iter()
        .map(|h| hex::decode(h).expect("hex").try_into().expect("32 bytes"))
        .collect()
}

fn copy_run(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("checkpoints")).expect("mkdir");
    for name in ["result.json", "trace.json", "model.safetensors"] {
        std::fs::copy(from.join(name), to.join(name)).expect("copy");
    }
    for entry in std::fs::read_dir(from.join("checkpoints")).expect("checkpoints") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join("checkpoints").join(entry.file_name())).expect("copy");
    }
}

/// Rewrites the run in `out` to hold only checkpoints `keep` of `honest` (renumbered from 0),
/// with `steps` as the trace's steps, the trace and result rebuilt to agree, and `model` (when
/// given) as the submitted model.
fn rewrite(
    out: &Path,
    honest: &Path,
    keep: std::ops::Range<usize>,
    steps: Vec<u64>,
    model: Option<&[u8]>,
) {
    let trace = job::read_trace(honest).expect("trace");
    let _ = std::fs::remove_dir_all(out);
    copy_run(honest, out);
    for i in 0..trace.leaves.len() {
        std::fs::remove_file(ckpt(out, i)).expect("remove");
    }
    for (new, old) in keep.clone().enumerate() {
        std::fs::copy(ckpt(honest, old), ckpt(out, new)).expect("copy");
    }
    let forged = Trace::new(trace.checkpoint_every, steps, leaves(&trace)[keep].to_vec());
    let mut result = read_result(honest);
    result.trace_root = forged.root.clone();
    result.segments = forged.segments();
    if let Some(model) = model {
        std::fs::write(out.join("model.safetensors"), model).expect("write");
        result.model_sha256 = hex::encode(Sha256::digest(model));
    }
    std::fs::write(
        out.join("trace.json"),
        serde_json::to_string(&forged).expect("json"),
    )
    .expect("write");
    std::fs::write(
        out.join("result.json"),
        serde_json::to_string(&result).expect("json"),
    )
    .expect("write");
}

/// Verifies every segment of the run in `out`; the mismatch's message (panics when it matches
/// or cannot be checked).
fn mismatch(out: &Path, file: &Path, what: &str) -> String {
    let segments = job::read_trace(out).expect("trace").segments();
    let all: Vec<usize> = (0..segments).collect();
    match job::verify(out, file, &all) {
        Ok(_) => panic!("{what}: verified"),
        Err(e) => {
            assert!(e.is_mismatch(), "{what}: not a finding: {e}");
            e.to_string()
        }
    }
}

/// The model file of checkpoint `index` of the honest run, as a trainer stopping there would
/// submit it.
fn model_at(spec: &JobSpec, file: &Path, honest: &Path, index: usize) -> Vec<u8> {
    let prepared = Prepared::new(spec, file).expect("data");
    let engine = Engine::new(spec, &prepared).expect("engine");
    let state = engine
        .restore(
            index,
            &std::fs::read(ckpt(honest, index)).expect("checkpoint"),
        )
        .expect("restore");
    engine
        .model(state, &prepared.preprocessing)
        .expect("model")
        .to_bytes()
        .expect("bytes")
}

fn late_start_and_prefix_are_findings(spec_name: &str, file: &Path, network: bool) {
    let spec = spec(spec_name);
    let dir = tempfile::tempdir().expect("tempdir");
    let honest = dir.path().join("honest");
    job::run(&spec, file, &honest, &mut Quiet).expect("run");
    let trace = job::read_trace(&honest).expect("trace");
    let n = trace.leaves.len();
    assert!(n >= 5, "{spec_name}: {n} checkpoints");
    let all: Vec<usize> = (0..trace.segments()).collect();
    let checks = job::verify(&honest, file, &all).expect("the honest run verifies");
    assert_eq!(checks.len(), trace.segments(), "{spec_name}");

    // Late starts: the first k checkpoints dropped, the rest renumbered from 0, with the trace's
    // steps as they were or shifted to start at 0. k = n - 2 is the one-segment forgery: every
    // validator re-runs the last segment, which matches, as does the final model.
    let forged = dir.path().join("forged");
    for k in [2, n - 2] {
        for shift in [false, true] {
            let base = if shift { trace.steps[k] } else { 0 };
            let steps = trace.steps[k..].iter().map(|s| s - base).collect();
            rewrite(&forged, &honest, k..n, steps, None);
            let what = format!("{spec_name}: late start k={k} shift={shift}");
            let e = mismatch(&forged, file, &what);
            assert!(
                e.contains("does not start at the spec's initial checkpoint"),
                "{what}: {e}"
            );
        }
    }

    // A prefix: the last checkpoints dropped and (networks) the model of the new last one
    // submitted.
    for drop in [1, 2] {
        let end = n - drop;
        // An unfinished tree has no model file (it does not serialise), so the tree's prefix
        // keeps the honest model; the finished-state check comes first either way.
        let model = network.then(|| model_at(&spec, file, &honest, end - 1));
        rewrite(
            &forged,
            &honest,
            0..end,
            trace.steps[..end].to_vec(),
            model.as_deref(),
        );
        let what = format!("{spec_name}: prefix without the last {drop}");
        let e = mismatch(&forged, file, &what);
        let reason = if network {
            "the trace ends at step"
        } else {
            "before the run is finished"
        };
        assert!(
            e.contains(reason) && e.contains(&trace.steps[end - 1].to_string()),
            "{what}: {e}"
        );
    }

    // Checkpoints off the spec's schedule (checkpoint 2 moved, the trace rebuilt around it).
    let mut steps = trace.steps.clone();
    steps[2] -= 1;
    rewrite(&forged, &honest, 0..n, steps, None);
    let e = mismatch(&forged, file, &format!("{spec_name}: moved checkpoint"));
    assert!(
        e.contains(&format!(
            "checkpoint 2 is at step {}, the spec puts it at {}",
            trace.steps[2] - 1,
            trace.steps[2]
        )),
        "{spec_name}: {e}"
    );

    // The untouched run still verifies.
    job::verify(&honest, file, &all).expect("the honest run still verifies");
}

#[test]
fn a_network_trace_must_run_from_the_seed_to_the_last_step() {
    late_start_and_prefix_are_findings("iris_logreg.json", &data("iris.csv"), true);
}

#[test]
fn a_tree_trace_must_run_from_the_root_to_a_fully_grown_tree() {
    late_start_and_prefix_are_findings("iris_tree.json", &data("iris.csv"), false);
}

#[test]
fn the_schedule_is_every_checkpoint_every_steps_and_the_end() {
    let trace =
        |every: u64, steps: &[u64]| Trace::new(every, steps.to_vec(), vec![[0; 32]; steps.len()]);
    // Networks: the total is known.
    assert_eq!(trace(4, &[0, 4, 8, 10]).schedule_error(4, Some(10)), None);
    assert_eq!(trace(5, &[0, 5, 10]).schedule_error(5, Some(10)), None);
    assert_eq!(trace(4, &[0]).schedule_error(4, Some(0)), None);
    let e = trace(4, &[0, 4, 8])
        .schedule_error(4, Some(10))
        .expect("prefix");
    assert!(
        e.contains("the trace ends at step 8, the spec runs 10 steps"),
        "{e}"
    );
    let e = trace(4, &[0, 3, 8, 10])
        .schedule_error(4, Some(10))
        .expect("moved");
    assert!(
        e.contains("checkpoint 1 is at step 3, the spec puts it at 4"),
        "{e}"
    );
    let e = trace(4, &[0, 10])
        .schedule_error(4, Some(10))
        .expect("skipped");
    assert!(
        e.contains("the trace has 2 checkpoints, the spec implies 4"),
        "{e}"
    );
    let e = trace(4, &[9, 10])
        .schedule_error(4, Some(10))
        .expect("late start");
    assert!(e.contains("the trace has 2 checkpoints"), "{e}");
    let e = trace(2, &[0, 4, 8, 10])
        .schedule_error(4, Some(10))
        .expect("other interval");
    assert!(e.contains("every 2 steps, the spec every 4"), "{e}");
    // Trees: the last checkpoint anywhere in the final interval.
    assert_eq!(trace(3, &[0, 3, 6, 7]).schedule_error(3, None), None);
    assert_eq!(trace(3, &[0, 3, 6, 9]).schedule_error(3, None), None);
    let e = trace(3, &[0, 3, 6, 10])
        .schedule_error(3, None)
        .expect("too far");
    assert!(
        e.contains("checkpoint 3 is at step 10, the spec puts it at after step 6 and at most 9"),
        "{e}"
    );
    let e = trace(3, &[0, 2, 6, 7])
        .schedule_error(3, None)
        .expect("moved");
    assert!(
        e.contains("checkpoint 1 is at step 2, the spec puts it at 3"),
        "{e}"
    );
    let e = trace(3, &[5, 6])
        .schedule_error(3, None)
        .expect("late start");
    assert!(
        e.contains("checkpoint 0 is at step 5, the spec puts it at 0"),
        "{e}"
    );
}
