//! A validator's verdict on a job's result: the run directory `trainer verify` checks, rebuilt
//! from the chain's record of the result and the artifacts fetched by CID, and the decision.
//!
//! Nothing the worker says about its result is taken from its own files: `result.json` is
//! written from the chain record (the model hash, trace root, segment count and metrics it
//! submitted, the ONNX hash inside the ONNX CID, the spec hash of the job) and from the data the
//! validator assembled itself. The artifacts are the bytes behind the result's CIDs. The verdict
//! "matches" needs all of: every artifact hashes to its CID, `trainer verify` reproduces this
//! validator's segments and the final model bit for bit, the ONNX export agrees with the model,
//! and the model's metrics on the test split are exactly the claimed ones.

use std::path::Path;
use std::process::Command;

use neurodata_crypto::cid::Cid;
use neurodata_proto::chain::v1 as pb;
use neurodata_trainer::job::RunResult;
use neurodata_trainer::metrics::Metrics;
use neurodata_trainer::trace::{ValidatorAddress, segments_for};
use serde::Deserialize;

use crate::artifacts::{checkpoint_path, model_path, onnx_path, result_path, trace_path};

/// Which segments of a job a validator re-runs: its share of the assignment drawn with the
/// beacon among all the attestors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The job.
    pub job_id: u64,
    /// This validator.
    pub me: ValidatorAddress,
    /// Every attestor.
    pub validators: Vec<ValidatorAddress>,
    /// Sampled share, basis points.
    pub sample_bps: u32,
    /// The beacon (the hash of the block after the result's).
    pub beacon: Vec<u8>,
}

impl Assignment {
    /// The assignment of `job` (attesting, its beacon drawn) for validator `me`; None if it has
    /// no attestation yet.
    pub fn of(job: &pb::Job, me: ValidatorAddress) -> Option<Assignment> {
        let att = job.attestation.as_ref()?;
        Some(Assignment {
            job_id: job.id,
            me,
            validators: att
                .attestors
                .iter()
                .filter_map(|a| <[u8; 20]>::try_from(a.validator.as_slice()).ok())
                .collect(),
            sample_bps: job.sample_bps,
            beacon: att.beacon.clone(),
        })
    }

    /// The segments this validator re-runs, of a trace of `segments`.
    pub fn segments(&self, segments: usize) -> Vec<usize> {
        segments_for(
            &self.beacon,
            self.job_id,
            &self.validators,
            segments,
            self.sample_bps,
            &self.me,
        )
    }

    /// The checkpoints `trainer verify` reads for them: each segment's start and end, and the
    /// last (the final model is checked on every verification), ascending.
    pub fn checkpoints(&self, segments: usize) -> Vec<usize> {
        let mut needed: Vec<usize> = self
            .segments(segments)
            .into_iter()
            .flat_map(|s| [s, s + 1])
            .chain([segments])
            .collect();
        needed.sort_unstable();
        needed.dedup();
        needed
    }
}

/// The `result.json` a validator checks against: the chain's record of `job`'s result, the
/// job's spec hash, and `data_sha256`, the hash of the data the validator assembled. An `Err` is
/// a finding against the result (its metrics are not the trainer's, a CID does not parse).
pub fn rebuild_result(job: &pb::Job, data_sha256: &str) -> Result<RunResult, String> {
    let r = job
        .result
        .as_ref()
        .ok_or_else(|| format!("job {} has no result", job.id))?;
    let onnx: Cid = r
        .onnx_cid
        .parse()
        .map_err(|e| format!("onnx_cid {:?}: {e}", r.onnx_cid))?;
    let metrics: Metrics = serde_json::from_str(&r.metrics_json)
        .map_err(|e| format!("metrics_json is not the trainer's metrics: {e}"))?;
    Ok(RunResult {
        model_sha256: hex::encode(&r.model_sha256),
        onnx_sha256: hex::encode(onnx.0),
        data_sha256: data_sha256.to_owned(),
        spec_sha256: hex::encode(&job.spec_sha256),
        trace_root: hex::encode(&r.trace_root),
        segments: r.segments as usize,
        metrics,
    })
}

/// Checks that every artifact present in `out` hashes to its CID in `result`; the first that
/// does not, as a finding. (Downloads are checked by the client already; this keeps the verdict
/// independent of how the files got there.)
pub fn check_cids(out: &Path, result: &pb::JobResult) -> Result<(), String> {
    let mut files = vec![
        (model_path(out), result.model_cid.as_str()),
        (onnx_path(out), result.onnx_cid.as_str()),
        (trace_path(out), result.trace_cid.as_str()),
    ];
    files.extend(
        result
            .checkpoint_cids
            .iter()
            .enumerate()
            .map(|(i, c)| (checkpoint_path(out, i), c.as_str())),
    );
    for (path, cid) in files {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let got = Cid::of(&bytes).to_string();
                if got != cid {
                    return Err(format!(
                        "{} has CID {got}, the result names {cid}",
                        path.file_name().unwrap_or_default().to_string_lossy()
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Ok(())
}

/// The outcome of checking a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// A verdict to commit to.
    Verdict {
        /// Whether everything reproduced.
        matches: bool,
        /// SHA-256 over the re-computed end checkpoints (zero unless `matches`).
        segments_digest: [u8; 32],
        /// Why not, when it does not match.
        reason: Option<String>,
    },
    /// The check could not be made (the validator's own problem: its data, its trainer, a
    /// file); no verdict, try again.
    CannotCheck(String),
}

impl Judgement {
    /// A verdict that the result does not match, for `reason`.
    pub fn mismatch(reason: impl Into<String>) -> Judgement {
        Judgement::Verdict {
            matches: false,
            segments_digest: [0; 32],
            reason: Some(reason.into()),
        }
    }
}

/// `trainer verify --json`'s answer.
#[derive(Debug, Deserialize)]
struct VerifyAnswer {
    matches: bool,
    segments_digest: Option<String>,
    error: Option<String>,
}

/// `trainer verify`'s arguments (after the program) for the run in `out` and the data file
/// `data`, for `assignment`: the verifier runs them as a child process, or in a Kubernetes Job
/// with the paths its pod sees.
pub fn verify_args(out: &Path, data: &Path, assignment: &Assignment) -> Vec<String> {
    let hexes: Vec<String> = assignment.validators.iter().map(hex::encode).collect();
    vec![
        "verify".into(),
        "--out".into(),
        out.display().to_string(),
        "--data".into(),
        data.display().to_string(),
        "--job-id".into(),
        assignment.job_id.to_string(),
        "--validator".into(),
        hex::encode(assignment.me),
        "--validators".into(),
        hexes.join(","),
        "--sample-bps".into(),
        assignment.sample_bps.to_string(),
        "--beacon".into(),
        hex::encode(&assignment.beacon),
        "--json".into(),
    ]
}

/// Judges the run in `out` (rebuilt: `result.json` from the chain, the artifacts by CID) against
/// `data` for `assignment`, with the `trainer` binary run here; `result` is the chain's record.
pub fn judge(
    trainer: &Path,
    out: &Path,
    data: &Path,
    assignment: &Assignment,
    result: &pb::JobResult,
) -> Judgement {
    if let Err(finding) = check_cids(out, result) {
        return Judgement::mismatch(finding);
    }
    let output = Command::new(trainer)
        .args(verify_args(out, data, assignment))
        .output();
    let answer = match output {
        Err(e) => Err(format!("starting {}: {e}", trainer.display())),
        Ok(o) if !o.status.success() => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        Ok(o) => Ok(o.stdout),
    };
    judge_answer(out, data, result, answer)
}

/// The judgement from `trainer verify --json`'s answer (its stdout, or why it could not check),
/// however it was run; the artifacts' CIDs were checked before it ran ([`check_cids`]).
pub fn judge_answer(
    out: &Path,
    data: &Path,
    result: &pb::JobResult,
    answer: Result<Vec<u8>, String>,
) -> Judgement {
    let stdout = match answer {
        Ok(stdout) => stdout,
        Err(why) => {
            return Judgement::CannotCheck(format!(
                "trainer verify could not check the run: {why}"
            ));
        }
    };
    let answer: VerifyAnswer = match serde_json::from_slice(&stdout) {
        Ok(a) => a,
        Err(e) => {
            return Judgement::CannotCheck(format!("trainer verify's answer does not parse: {e}"));
        }
    };
    if !answer.matches {
        return Judgement::mismatch(
            answer
                .error
                .unwrap_or_else(|| "trainer verify: no match".into()),
        );
    }
    let segments_digest = match answer
        .segments_digest
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    {
        Some(d) => d,
        None => return Judgement::CannotCheck("trainer verify gave no segments digest".into()),
    };
    if let Some(finding) = match check_metrics(out, data, &result.metrics_json) {
        Ok(finding) => finding,
        Err(cannot) => return Judgement::CannotCheck(cannot),
    } {
        return Judgement::mismatch(finding);
    }
    Judgement::Verdict {
        matches: true,
        segments_digest,
        reason: None,
    }
}

/// Evaluates the model and its ONNX export on the test split of `data`: `Ok(Some(finding))` if
/// the export disagrees with the model or the metrics are not exactly `metrics_json`;
/// `Err` if the evaluation could not be made.
fn check_metrics(out: &Path, data: &Path, metrics_json: &str) -> Result<Option<String>, String> {
    let model_file = model_path(out);
    let bytes = std::fs::read(&model_file).map_err(|e| format!("{}: {e}", model_file.display()))?;
    let model = match neurodata_trainer::model::Model::from_bytes(&bytes) {
        Ok(m) => m,
        // The model file is the worker's.
        Err(e) => return Ok(Some(format!("model file: {e}"))),
    };
    let onnx_file = onnx_path(out);
    let onnx = std::fs::read(&onnx_file).map_err(|e| format!("{}: {e}", onnx_file.display()))?;
    let report = match neurodata_trainer::eval(&model, &onnx, data) {
        Ok(r) => r,
        // The export is the worker's: one tract cannot evaluate is a finding.
        Err(e @ neurodata_trainer::TrainError::Onnx(_)) => {
            return Ok(Some(format!("ONNX export: {e}")));
        }
        Err(e) if e.is_mismatch() => return Ok(Some(format!("evaluation: {e}"))),
        Err(e) => return Err(format!("evaluation: {e}")),
    };
    if !report.ok {
        return Ok(Some(format!(
            "the ONNX export's predictions differ from the model's by {} (tolerance {})",
            report.max_scaled_diff, report.tolerance
        )));
    }
    let claimed: serde_json::Value = match serde_json::from_str(metrics_json) {
        Ok(v) => v,
        Err(e) => return Ok(Some(format!("metrics_json is not JSON: {e}"))),
    };
    let computed = serde_json::to_value(&report.native_metrics)
        .map_err(|e| format!("serializing metrics: {e}"))?;
    if claimed != computed {
        return Ok(Some(format!(
            "the claimed metrics {metrics_json} do not reproduce: the model scores {computed}"
        )));
    }
    Ok(None)
}

/// Writes `result` as `out/result.json` (as the trainer would).
pub fn write_result(out: &Path, result: &RunResult) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    let json = serde_json::to_vec_pretty(result).map_err(std::io::Error::other)?;
    // Replaced whole (write then rename): a re-execution pod attached after a restart may be
    // reading it.
    let path = result_path(out);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, &path)
}
