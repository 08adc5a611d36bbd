//! A model's leaderboard score on a hidden evaluation split: what every validator scoring an
//! evaluation computes and attests (issue 14).
//!
//! The score is the model's ONNX export run under tract on every row of the split (the export is
//! what buyers run, so it is what is ranked), measured with the model's own metric code, and
//! written as canonical JSON — serde_json with its keys sorted and no spaces — because validators
//! agree on the bytes (they commit to its SHA-256) before the chain parses anything:
//!
//! ```text
//! {"higher_is_better":true,"metric":"accuracy","rows":168,"value":0.845238}
//! ```
//!
//! The value is rounded to six significant digits before it is written: tract picks its matrix
//! kernels (FMA or not, block sizes) by the CPU it runs on, so validators on different hardware
//! get RMSEs that differ in the last bits, and a score whose bytes differ is no agreement.
//!
//! Classifiers are ranked by accuracy (higher is better), regressors by RMSE (lower is better).
//! [`native`] is the same measurement with the trainer's own model instead of the export: the
//! baseline `scripts/bench/predict.sh` compares the scoring cost with.

use std::path::Path;

use serde::Serialize;

use crate::TrainError;
use crate::data::Table;
use crate::metrics::Metrics;
use crate::model::{Model, Predictions};
use crate::onnx;

/// A model's score on a split.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// `accuracy` (classifiers) or `rmse` (regressors).
    pub metric: &'static str,
    /// The metric's value.
    pub value: f64,
    /// Whether a larger value ranks higher (true for accuracy, false for RMSE).
    pub higher_is_better: bool,
    /// Rows scored: every row of the split.
    pub rows: usize,
    /// The canonical score JSON (see the module doc): the bytes validators attest.
    pub json: String,
}

/// The canonical JSON's fields, in the order serde writes them: alphabetical, so the keys come
/// out sorted without relying on a map's order.
#[derive(Serialize)]
struct Canonical<'a> {
    higher_is_better: bool,
    metric: &'a str,
    rows: usize,
    value: f64,
}

impl Score {
    /// The score of these metrics: accuracy for a classifier, RMSE for a regressor.
    fn of(metrics: &Metrics) -> Result<Score, TrainError> {
        let (metric, value, higher_is_better, rows) = match *metrics {
            Metrics::Classification { rows, accuracy, .. } => ("accuracy", accuracy, true, rows),
            Metrics::Regression { rows, mse, .. } => ("rmse", mse.sqrt(), false, rows),
        };
        // serde_json writes a NaN or an infinity as `null`, which the chain could not rank.
        if !value.is_finite() {
            return Err(TrainError::Onnx(format!(
                "the model's {metric} on the split is {value}, not a finite number (its \
                 predictions overflow?)"
            )));
        }
        let value = significant(value, 6);
        let json = serde_json::to_string(&Canonical {
            higher_is_better,
            metric,
            rows,
            value,
        })
        .map_err(|e| TrainError::Internal(format!("score JSON: {e}")))?;
        Ok(Score {
            metric,
            value,
            higher_is_better,
            rows,
            json,
        })
    }
}

/// `value` rounded to `digits` significant digits (decimal), through its scientific notation so
/// that every platform rounds the same way (the formatting is Rust's own, exact).
fn significant(value: f64, digits: usize) -> f64 {
    format!("{value:.*e}", digits.saturating_sub(1))
        .parse()
        .unwrap_or(value)
}

/// Reads the split against the model's schema: the target column is required (the rows are
/// scored against it). `path` names the format ([`neurodata_tabular::Format::of_path`]).
fn read_split(model: &Model, path: &Path, bytes: &[u8]) -> Result<(Table, Vec<usize>), TrainError> {
    let table = Table::parse(path, bytes, &model.spec.schema, false)?;
    let rows = (0..table.rows()).collect();
    Ok((table, rows))
}

/// Scores `onnx` (the model's ONNX export) under tract on every row of the split whose bytes are
/// `split_bytes` (`split_path` gives its format by extension), with `model`'s preprocessing and
/// metric code.
pub fn score(
    model: &Model,
    onnx: &[u8],
    split_path: &Path,
    split_bytes: &[u8],
) -> Result<Score, TrainError> {
    let (table, rows) = read_split(model, split_path, split_bytes)?;
    // The export takes the one-hot encoded but not standardised columns (its graph standardises).
    let x = model.preprocessing.encode(&table, &rows, false);
    let classification = !model.preprocessing.classes.is_empty();
    let predictions = onnx::evaluate(
        onnx,
        &x,
        rows.len(),
        model.preprocessing.width(),
        classification,
    )?;
    check_shape(model, &predictions, rows.len())?;
    Score::of(&model.metrics(&predictions, &table, &rows)?)
}

/// The same score from the trainer's own model (candle network or tree) instead of the export:
/// the trainer's eval of the split, the baseline of the scoring cost.
pub fn native(model: &Model, split_path: &Path, split_bytes: &[u8]) -> Result<Score, TrainError> {
    let (table, rows) = read_split(model, split_path, split_bytes)?;
    let predictions = model.predict(&table, &rows)?;
    Score::of(&model.metrics(&predictions, &table, &rows)?)
}

/// An export of another model gives another number of outputs per row: refused rather than
/// scored (the metric code would index past a row's probabilities).
fn check_shape(model: &Model, p: &Predictions, rows: usize) -> Result<(), TrainError> {
    let classes = model.preprocessing.classes.len();
    let fits = match p {
        Predictions::Classes(c) => c.len() == rows && c.iter().all(|r| r.len() == classes),
        Predictions::Values(v) => v.len() == rows,
    };
    if fits {
        Ok(())
    } else {
        Err(TrainError::Onnx(format!(
            "the ONNX export does not fit the model: it does not give {} per row for {rows} rows",
            if classes > 0 {
                format!("{classes} class probabilities")
            } else {
                "one value".to_owned()
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::fixture;

    #[test]
    fn the_score_json_is_canonical_with_sorted_keys_and_no_spaces() -> Result<(), TrainError> {
        let m = Metrics::Classification {
            rows: 168,
            accuracy: 142.0 / 168.0,
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            roc_auc: 0.0,
            log_loss: 0.0,
        };
        assert_eq!(
            Score::of(&m)?.json,
            r#"{"higher_is_better":true,"metric":"accuracy","rows":168,"value":0.845238}"#
        );
        let r = Score::of(&Metrics::Regression {
            rows: 4,
            mse: 2.25,
            r2: 0.5,
        })?;
        assert_eq!(
            r.json,
            r#"{"higher_is_better":false,"metric":"rmse","rows":4,"value":1.5}"#
        );
        assert_eq!(
            (r.metric, r.value, r.higher_is_better),
            ("rmse", 1.5, false)
        );
        Ok(())
    }

    #[test]
    fn a_non_finite_score_is_refused() {
        let err = Score::of(&Metrics::Regression {
            rows: 1,
            mse: f64::INFINITY,
            r2: 0.0,
        })
        .expect_err("infinite rmse");
        assert!(err.to_string().contains("not a finite number"), "{err}");
    }

    #[test]
    fn the_export_scores_every_row_as_the_native_model_does() -> Result<(), TrainError> {
        for run in [fixture::classifier(), fixture::regressor(), fixture::tree()] {
            let split = fixture::split_csv(run, 60);
            let path = Path::new("split.csv");
            let s = score(&run.model, &run.onnx, path, split.as_bytes())?;
            let n = native(&run.model, path, split.as_bytes())?;
            assert_eq!(s.rows, 60);
            if s.higher_is_better {
                assert!(s.value > 0.7, "the fixture learns something: {}", s.json);
            }
            assert_eq!(
                (s.metric, s.higher_is_better),
                (n.metric, n.higher_is_better)
            );
            assert!(
                (s.value - n.value).abs() <= 1e-5 * n.value.abs().max(1.0),
                "{} vs {}",
                s.json,
                n.json
            );
            // Same bytes on every call: validators attest them.
            assert_eq!(
                s.json,
                score(&run.model, &run.onnx, path, split.as_bytes())?.json
            );
        }
        Ok(())
    }

    #[test]
    fn a_split_without_the_target_or_with_foreign_columns_is_refused() {
        let run = fixture::classifier();
        let split = fixture::split_csv(run, 10);
        let no_target = fixture::drop_column(&split, "target");
        let err = score(
            &run.model,
            &run.onnx,
            Path::new("s.csv"),
            no_target.as_bytes(),
        )
        .expect_err("no target");
        assert!(
            err.to_string().contains("missing column(s) [\"target\"]"),
            "{err}"
        );
        let extra = split
            .replacen("target\n", "target,zip\n", 1)
            .replace('\n', ",1\n");
        let extra = extra.replacen("target,zip,1\n", "target,zip\n", 1);
        let err = score(&run.model, &run.onnx, Path::new("s.csv"), extra.as_bytes())
            .expect_err("extra column");
        assert!(
            err.to_string().contains("[\"zip\"] are not in the schema"),
            "{err}"
        );
    }

    #[test]
    fn the_export_of_another_model_is_refused() {
        let classifier = fixture::classifier();
        let regressor = fixture::regressor();
        let split = fixture::split_csv(classifier, 10);
        let err = score(
            &classifier.model,
            &regressor.onnx,
            Path::new("s.csv"),
            split.as_bytes(),
        )
        .expect_err("another model's export");
        assert!(err.to_string().starts_with("onnx:"), "{err}");
    }

    #[test]
    fn values_are_rounded_to_six_significant_digits() {
        assert_eq!(significant(0.8452380952380952, 6), 0.845238);
        assert_eq!(significant(12.345678901, 6), 12.3457);
        assert_eq!(significant(1.0, 6), 1.0);
        assert_eq!(significant(0.000123456789, 6), 0.000123457);
        // Values that differ only past the sixth digit (two CPUs' kernels) agree.
        assert_eq!(
            significant(1.234_567_890_1, 6),
            significant(1.234_567_999_9, 6)
        );
    }
}
