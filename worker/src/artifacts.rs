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

/// Whether `path` (below `out`) is a regular file reached through directories only: no
/// component from `out` down is a symbolic link. A run's outputs may be written by a pod on a
/// shared volume; a link there (`model.onnx -> /etc/neurodata/member/tls.key`) must never make
/// the worker read, upload or publish a file of its own.
fn plain_file(out: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(out) else {
        return false;
    };
    let parts: Vec<_> = rel.components().collect();
    let mut at = out.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let Ok(meta) = std::fs::symlink_metadata(&at) else {
            return false;
        };
        let kind = meta.file_type();
        if i + 1 == parts.len() {
            return kind.is_file();
        }
        if !kind.is_dir() {
            return false;
        }
    }
    false
}

/// Opens the output file `path` of the run in `out` for reading: a regular file with no
/// symbolic link on the way (see [`plain_file`]), and the very file checked (a file swapped in
/// between the check and the open is refused).
pub fn open_output(out: &Path, path: &Path) -> Result<std::fs::File, ArtifactError> {
    use std::os::unix::fs::MetadataExt as _;
    let refused = || ArtifactError::Malformed {
        path: path.display().to_string(),
        reason: "not a regular file of the run (a symbolic link, a directory or a device): \
                 refused"
            .into(),
    };
    if !plain_file(out, path) {
        return Err(refused());
    }
    let file = std::fs::File::open(path).map_err(io(path))?;
    let opened = file.metadata().map_err(io(path))?;
    let checked = std::fs::symlink_metadata(path).map_err(io(path))?;
    if !opened.is_file() || (opened.dev(), opened.ino()) != (checked.dev(), checked.ino()) {
        return Err(refused());
    }
    Ok(file)
}

/// `result.json` as the trainer wrote it, and its `metrics` value as it is in the file.
pub fn read_result(out: &Path) -> Result<(RunResult, serde_json::Value), ArtifactError> {
    let path = result_path(out);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut open_output(out, &path)?, &mut bytes).map_err(io(&path))?;
    let malformed = |e: serde_json::Error| ArtifactError::Malformed {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let result: RunResult = serde_json::from_slice(&bytes).map_err(malformed)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(malformed)?;
    Ok((result, value["metrics"].clone()))
}

/// Whether `out` holds a complete run: a result, the model, the ONNX export, the trace and every
/// checkpoint the result counts (0..=segments), each a regular file (no symbolic links).
pub fn outputs_complete(out: &Path) -> bool {
    let Ok((result, _)) = read_result(out) else {
        return false;
    };
    [model_path(out), onnx_path(out), trace_path(out)]
        .iter()
        .all(|p| plain_file(out, p))
        && (0..=result.segments).all(|i| plain_file(out, &checkpoint_path(out, i)))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A run directory whose files are all present, each a few bytes.
    fn outputs(out: &Path) {
        std::fs::create_dir_all(out.join("checkpoints")).expect("dirs");
        std::fs::write(
            result_path(out),
            r#"{"model_sha256":"00","onnx_sha256":"00","data_sha256":"00","spec_sha256":"00",
                "trace_root":"00","segments":1,
                "metrics":{"task":"regression","rows":1,"mse":0.0,"r2":1.0}}"#,
        )
        .expect("result");
        for p in [model_path(out), onnx_path(out), trace_path(out)] {
            std::fs::write(p, b"x").expect("file");
        }
        for i in 0..=1 {
            std::fs::write(checkpoint_path(out, i), b"x").expect("checkpoint");
        }
    }

    #[test]
    fn links_in_a_runs_outputs_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("member.key");
        std::fs::write(&secret, b"the member's private key").expect("secret");
        let out = dir.path().join("out");
        outputs(&out);
        assert!(outputs_complete(&out));
        assert!(open_output(&out, &onnx_path(&out)).is_ok());

        // A file replaced by a link to one of the worker's own files.
        std::fs::remove_file(onnx_path(&out)).expect("rm");
        std::os::unix::fs::symlink(&secret, onnx_path(&out)).expect("symlink");
        assert!(!outputs_complete(&out));
        assert!(matches!(
            open_output(&out, &onnx_path(&out)),
            Err(ArtifactError::Malformed { .. })
        ));

        // A directory on the way replaced by a link.
        let out2 = dir.path().join("out2");
        outputs(&out2);
        let elsewhere = dir.path().join("elsewhere");
        std::fs::rename(out2.join("checkpoints"), &elsewhere).expect("mv");
        std::os::unix::fs::symlink(&elsewhere, out2.join("checkpoints")).expect("symlink");
        assert!(!outputs_complete(&out2));
        assert!(open_output(&out2, &checkpoint_path(&out2, 0)).is_err());

        // result.json itself as a link is not read.
        let out3 = dir.path().join("out3");
        outputs(&out3);
        std::fs::remove_file(result_path(&out3)).expect("rm");
        std::os::unix::fs::symlink(&secret, result_path(&out3)).expect("symlink");
        assert!(read_result(&out3).is_err());
        assert!(!outputs_complete(&out3));
    }
}
