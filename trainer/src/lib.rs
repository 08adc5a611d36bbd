//! The NeuroData trainer: deterministic, verifiable training of tabular models.
//!
//! The same job spec on the same data gives a byte-identical model file on any x86-64 CPU and
//! any thread count (see [`kernels`] for how), a trace of checkpoint digests whose segments a
//! validator can re-run one at a time ([`job::verify`]), and an ONNX export evaluated with
//! tract-onnx ([`eval`]). A model's leaderboard score on a hidden split is [`score`]; a buyer's
//! predictions through the gateway are [`predict`].

pub mod data;
pub mod job;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod onnx;
mod onnx_regressor;
pub mod predict;
pub mod rng;
pub mod score;
pub mod spec;
mod tagged;
pub mod tensors;
pub mod trace;
pub mod tree;

use std::path::Path;

use serde::Serialize;

pub use data::DataError;
pub use spec::{JobSpec, SpecError};
pub use tensors::FormatError;

/// Why a job, a verification or an evaluation failed.
///
/// Each message is whole, its cause included, and no variant has a `source()` (hence `From` by
/// hand rather than `#[from]`): the trainer prints errors with `{:#}`, which walks the chain and
/// would print a cause that is both in the message and a source twice.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The spec was refused.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The data was refused.
    #[error("data: {0}")]
    Data(DataError),
    /// A model file is malformed.
    #[error("model file: {0}")]
    Format(FormatError),
    /// A checkpoint is malformed or does not hash to its trace leaf.
    #[error("checkpoint {index} is corrupt: {reason}")]
    CorruptCheckpoint {
        /// Checkpoint index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Re-running a segment did not reproduce the next checkpoint.
    #[error(
        "trace mismatch in segment {segment}: re-running it gives checkpoint {got}, the trace says {expected}"
    )]
    TraceMismatch {
        /// Segment index.
        segment: usize,
        /// Leaf in the trace.
        expected: String,
        /// Digest of the re-run.
        got: String,
    },
    /// The submitted result is inconsistent with its files or the data.
    #[error("result: {0}")]
    Result(String),
    /// The data file given to a verification is not the one the result names.
    #[error("{path} is not the data the run used (SHA-256 {have} != {want})")]
    OtherData {
        /// The file given.
        path: String,
        /// Its SHA-256.
        have: String,
        /// The result's `data_sha256`.
        want: String,
    },
    /// A time or memory limit was hit.
    #[error("limit: {0}")]
    Limit(String),
    /// The loss became NaN or infinite (learning rate too high?).
    #[error("training diverged at step {step}: the loss is not finite; lower the learning rate")]
    Diverged {
        /// Step at which it happened.
        step: u64,
    },
    /// tract could not load or run the ONNX model.
    #[error("onnx: {0}")]
    Onnx(String),
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The output directory holds files of an earlier run, which would be overwritten.
    #[error(
        "refusing to overwrite {first}{} of an earlier run; pass --force to overwrite",
        and_others(*.others)
    )]
    OutputExists {
        /// The first such file.
        first: String,
        /// How many more there are.
        others: usize,
    },
    /// candle failed.
    #[error("tensor: {0}")]
    Candle(candle_core::Error),
    /// A bug.
    #[error("internal: {0}")]
    Internal(String),
}

impl TrainError {
    /// Whether a verification that failed with this error has decided that the submitted run
    /// does not match (its checkpoints, trace, result or model file are wrong), rather than
    /// failed to check (a file missing or unreadable, data that do not parse, a bug). A
    /// validator attests the first kind and only reports the second.
    pub fn is_mismatch(&self) -> bool {
        match self {
            // The spec and model file come from the trainer.
            TrainError::Spec(_) | TrainError::Format(_) => true,
            TrainError::CorruptCheckpoint { .. }
            | TrainError::TraceMismatch { .. }
            | TrainError::Result(_) => true,
            // An honest run's segments re-run as they ran: a divergence from a committed
            // checkpoint means the checkpoint is not what the run produced.
            TrainError::Diverged { .. } => true,
            // The data file is the validator's input (it fetches the job's dataset by its
            // hash): one that does not parse or is another file says nothing about the run.
            TrainError::Data(_) | TrainError::OtherData { .. } => false,
            TrainError::Limit(_)
            | TrainError::Onnx(_)
            | TrainError::Io { .. }
            | TrainError::OutputExists { .. }
            | TrainError::Candle(_)
            | TrainError::Internal(_) => false,
        }
    }

    fn io(path: &Path, error: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.display().to_string(),
            error,
        }
    }
}

fn and_others(others: usize) -> String {
    match others {
        0 => String::new(),
        n => format!(" and {n} other file(s)"),
    }
}

impl From<DataError> for TrainError {
    fn from(e: DataError) -> Self {
        TrainError::Data(e)
    }
}

impl From<FormatError> for TrainError {
    fn from(e: FormatError) -> Self {
        TrainError::Format(e)
    }
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Candle(e)
    }
}

/// How the ONNX export's predictions compare with the native model's on the test split.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Test rows compared.
    pub rows: usize,
    /// Largest difference of a probability or predicted value, divided by max(1, |native|):
    /// absolute for probabilities, relative for large regression values (f32 resolution).
    pub max_scaled_diff: f64,
    /// Tolerance applied: 0 for trees (exact), 1e-5 otherwise.
    pub tolerance: f64,
    /// Rows whose predicted class agrees (classifiers only).
    pub labels_agree: Option<usize>,
    /// Metrics of the ONNX predictions.
    pub onnx_metrics: metrics::Metrics,
    /// Metrics of the native predictions.
    pub native_metrics: metrics::Metrics,
    /// Whether the difference is within tolerance.
    pub ok: bool,
}

/// Evaluates `onnx` (bytes) against `model` on the model's test split of `data` with tract.
pub fn eval(model: &model::Model, onnx: &[u8], data: &Path) -> Result<EvalReport, TrainError> {
    let table = data::Table::read(data, &model.spec.schema)?;
    let split = data::Split::new(table.rows(), model.spec.test_fraction, model.spec.seed)?;
    let rows = &split.test;
    let native = model.predict(&table, rows)?;
    let raw = model.preprocessing.encode(&table, rows, false);
    let width = model.preprocessing.width();
    let classification = !model.preprocessing.classes.is_empty();
    let onnx_pred = onnx::evaluate(onnx, &raw, rows.len(), width, classification)?;
    let flat = |p: &model::Predictions| -> Vec<f64> {
        match p {
            model::Predictions::Classes(c) => c.iter().flatten().copied().collect(),
            model::Predictions::Values(v) => v.clone(),
        }
    };
    let (a, b) = (flat(&native), flat(&onnx_pred));
    if a.len() != b.len() {
        return Err(TrainError::Onnx(format!(
            "ONNX gave {} values, the native model {}",
            b.len(),
            a.len()
        )));
    }
    let max_scaled_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
        .fold(0.0, f64::max);
    let tolerance = if matches!(model.body, model::Body::Tree(_)) {
        0.0
    } else {
        1e-5
    };
    let classes = &model.preprocessing.classes;
    let labels_agree = classification.then(|| {
        native
            .labels(classes)
            .iter()
            .zip(onnx_pred.labels(classes))
            .filter(|(x, y)| *x == y)
            .count()
    });
    Ok(EvalReport {
        rows: rows.len(),
        max_scaled_diff,
        tolerance,
        labels_agree,
        onnx_metrics: model.metrics(&onnx_pred, &table, rows)?,
        native_metrics: model.metrics(&native, &table, rows)?,
        ok: max_scaled_diff <= tolerance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{:#}` and anyhow's `{:?}` print the message and then each `source()`: a cause that is in
    /// the message must not also be a source.
    #[test]
    fn every_wrapped_cause_is_printed_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such thing");
        let json = serde_json::from_str::<JobSpec>("{\"seed\": x}").expect_err("not json");
        let json_text = json.to_string();
        let cases: Vec<(TrainError, String)> = vec![
            (SpecError::Parse(json).into(), json_text),
            (
                SpecError::Schema(data::SchemaError("no such target".into())).into(),
                "no such target".into(),
            ),
            (
                DataError::Io {
                    path: "d.csv".into(),
                    error: io(),
                }
                .into(),
                "no such thing".into(),
            ),
            (
                DataError::Table(neurodata_tabular::ReadError::Io(io())).into(),
                "no such thing".into(),
            ),
            (FormatError("truncated".into()).into(), "truncated".into()),
            (TrainError::io(Path::new("x"), io()), "no such thing".into()),
            (
                candle_core::Error::Msg("shape mismatch".into()).into(),
                "shape mismatch".into(),
            ),
        ];
        for (e, cause) in cases {
            assert!(std::error::Error::source(&e).is_none(), "{e}");
            let e = anyhow::Error::new(e).context("spec.json");
            for printed in [format!("{e:#}"), format!("{e:?}")] {
                assert_eq!(printed.matches(cause.as_str()).count(), 1, "{printed}");
            }
        }
    }
}
