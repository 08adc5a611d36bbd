//! A run's output directory as the chain sees it: which files are published (model, ONNX export,
//! trace, every checkpoint), whether a run is complete, and the `SubmitResult` a worker builds
//! from it.

use std::path::{Path, PathBuf};

use neurodata_proto::chain::v1 as pb;
use neurodata_trainer::job::RunResult;
use sha2::{Digest as _, Sha256};

use crate::journal::Uploaded;

/// An output directory that is not a complete run, or a result that does not convert.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// `result.json` (or `trace.json`) is not what the trainer writes.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The model file.
pub fn model_path(out: &Path) -> PathBuf {
    out.join("model.safetensors")
}

/// The ONNX export.
pub fn onnx_path(out: &Path) -> PathBuf {
    out.join("model.onnx")
}

/// The trace.
pub fn trace_path(out: &Path) -> PathBuf {
    out.join("trace.json")
}

/// The result.
pub fn result_path(out: &Path) -> PathBuf {
    out.join("result.json")
}

/// Checkpoint `i` (the trainer's `checkpoints/NNNNN.ckpt`).
pub fn checkpoint_path(out: &Path, i: usize) -> PathBuf {
    out.join("checkpoints").join(format!("{i:05}.ckpt"))
}

/// `result.json` as the trainer wrote it, and its `metrics` value as it is in the file.
pub fn read_result(out: &Path) -> Result<(RunResult, serde_json::Value), ArtifactError> {
    let path = result_path(out);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let malformed = |e: serde_json::Error| ArtifactError::Malformed {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let result: RunResult = serde_json::from_slice(&bytes).map_err(malformed)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(malformed)?;
    Ok((result, value["metrics"].clone()))
}

/// Whether `out` holds a complete run: a result, the model, the ONNX export, the trace and every
/// checkpoint the result counts (0..=segments).
pub fn outputs_complete(out: &Path) -> bool {
    let Ok((result, _)) = read_result(out) else {
        return false;
    };
    [model_path(out), onnx_path(out), trace_path(out)]
        .iter()
        .all(|p| p.is_file())
        && (0..=result.segments).all(|i| checkpoint_path(out, i).is_file())
}

/// The files a worker publishes, in the order of [`Uploaded`]: model, ONNX, trace, then each
/// checkpoint.
pub fn published_files(out: &Path, segments: usize) -> Vec<PathBuf> {
    let mut files = vec![model_path(out), onnx_path(out), trace_path(out)];
    files.extend((0..=segments).map(|i| checkpoint_path(out, i)));
    files
}

fn hash32(path: &Path, field: &str, hex_text: &str) -> Result<Vec<u8>, ArtifactError> {
    hex::decode(hex_text)
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| ArtifactError::Malformed {
            path: path.display().to_string(),
            reason: format!("{field} is not 32 bytes of hex"),
        })
}

/// The SHA-256 of the sandbox record a runner left beside `out` (the Kubernetes runner's pod
/// template, `sandbox.json`); empty for a run without one (a local run).
fn sandbox_sha256(out: &Path) -> Result<Vec<u8>, ArtifactError> {
    let path = out.with_file_name("sandbox.json");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Sha256::digest(&bytes).to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(ArtifactError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The `SubmitResult` of the run in `out` whose files got the CIDs `cids`: the model hash, trace
/// root and segment count from `result.json`, and its `metrics` value re-serialized by
/// serde_json (the canonical form validators compare with their own evaluation).
pub fn submit_result(
    job_id: u64,
    out: &Path,
    cids: &Uploaded,
) -> Result<pb::SubmitResult, ArtifactError> {
    let (result, metrics) = read_result(out)?;
    let path = result_path(out);
    let metrics_json = serde_json::to_string(&metrics).map_err(|e| ArtifactError::Malformed {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let segments = u32::try_from(result.segments).map_err(|_| ArtifactError::Malformed {
        path: path.display().to_string(),
        reason: format!("{} segments", result.segments),
    })?;
    Ok(pb::SubmitResult {
        job_id,
        model_sha256: hash32(&path, "model_sha256", &result.model_sha256)?,
        trace_root: hash32(&path, "trace_root", &result.trace_root)?,
        segments,
        metrics_json,
        model_cid: cids.model_cid.clone(),
        onnx_cid: cids.onnx_cid.clone(),
        trace_cid: cids.trace_cid.clone(),
        checkpoint_cids: cids.checkpoint_cids.clone(),
        sandbox_sha256: sandbox_sha256(out)?,
    })
}
