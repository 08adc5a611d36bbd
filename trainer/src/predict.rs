//! Predictions for rows a caller sends: the gateway's `Models.Predict` (issue 14).
//!
//! A [`Predictor`] is loaded once per model (its model file for the schema and preprocessing,
//! its ONNX export for the computation) and then predicts batch after batch. The export is
//! planned by tract once, with a symbolic batch dimension `N`, so a batch of any size runs on
//! the same optimised plan: planning takes ~2 ms for the heart MLP, more than running a batch of
//! a thousand rows (~0.2-0.35 ms), so a plan per batch would cost most of the time. tract's
//! kernels run a plan for a known batch size about twice as fast as the symbolic one, though,
//! so once a batch size comes twice in a row (a client streaming equal batches) the predictor
//! plans that size too and uses it while the size lasts; both plans give the same outputs
//! (`scripts/bench/predict.sh` measures the three ways).
//!
//! Rows are read exactly as the trainer reads them ([`Table::parse`], the target column
//! optional), with the checks a caller needs named: a feature column missing, a column the
//! model's schema does not have (refused, not ignored: a misspelt feature would otherwise be
//! read as missing data by nothing and go unnoticed), a cell that is not a number in a numeric
//! column, and a category the model never saw in training (the trainer's own encoding maps those
//! to all zeros, silently; a buyer's prediction must not be made on input the model cannot
//! represent). Batches are bounded ([`MAX_BATCH_ROWS`], [`MAX_BATCH_BYTES`]) so one message
//! cannot hold a gateway's CPU or memory for long.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

pub use neurodata_tabular::Format;
use neurodata_tabular::{CellError, ReadError};

use crate::data::{DataError, Encoding, Preprocessing, Schema, Table, Values};
use crate::model::Model;

/// Most rows in one batch.
pub const MAX_BATCH_ROWS: usize = 10_000;
/// Most bytes in one batch (4 MiB).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Categories listed in an unknown-category error, at most.
const LISTED_CATEGORIES: usize = 20;

/// Why a model could not be loaded or a batch could not be predicted. The variants up to
/// [`PredictError::Malformed`] are the caller's to fix ([`PredictError::is_bad_input`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictError {
    /// The batch is over [`MAX_BATCH_BYTES`].
    #[error(
        "the batch is {bytes} bytes, more than the {max} a batch may hold: send fewer rows per message"
    )]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The batch has more than [`MAX_BATCH_ROWS`] rows.
    #[error(
        "the batch has {rows} rows, more than the {max} a batch may hold: send fewer rows per message"
    )]
    TooManyRows {
        /// Rows in the batch.
        rows: usize,
        /// The limit.
        max: usize,
    },
    /// No header or no data rows.
    #[error("the batch has no data rows (a CSV batch starts with its header line)")]
    Empty,
    /// Feature columns the batch lacks.
    #[error("line {line}: missing feature column(s) {columns:?} of the model")]
    MissingColumns {
        /// 1-based line of the header (1 for JSON lines: the first object).
        line: u64,
        /// The names.
        columns: Vec<String>,
    },
    /// Columns the model's schema does not have.
    #[error(
        "line {line}: column(s) {columns:?} are not among the model's columns (its features and \
         its target); remove them or correct their names"
    )]
    ExtraColumns {
        /// 1-based line of the header.
        line: u64,
        /// The names.
        columns: Vec<String>,
    },
    /// A cell of a numeric column that is not a finite number.
    #[error("line {line}, column {column:?}: {value:?} {problem}")]
    WrongType {
        /// 1-based line where the row starts.
        line: u64,
        /// The column.
        column: String,
        /// The text found.
        value: String,
        /// Why it is not a number.
        problem: CellError,
    },
    /// A category the model never saw in training.
    #[error(
        "row {row}, column {column:?}: category {value:?} is unknown to the model (it was trained \
         on {})",
        listed(known, *more)
    )]
    UnknownCategory {
        /// 1-based row of the batch (its data rows, the header not counted).
        row: usize,
        /// The column.
        column: String,
        /// The category found.
        value: String,
        /// The categories the model knows (the first few).
        known: Vec<String>,
        /// How many more it knows.
        more: usize,
    },
    /// Not a well-formed table (quotes, ragged rows, JSON syntax, text that is not UTF-8).
    #[error("{0}")]
    Malformed(String),
    /// The model file does not read.
    #[error("model file: {0}")]
    Model(String),
    /// tract could not load, plan or run the ONNX export.
    #[error("onnx: {0}")]
    Onnx(String),
    /// The ONNX export is not the model's (inputs or outputs of another shape).
    #[error("the ONNX export does not fit the model file: {0}")]
    Mismatch(String),
}

fn listed(known: &[String], more: usize) -> String {
    let names: Vec<String> = known.iter().map(|k| format!("{k:?}")).collect();
    match more {
        0 => names.join(", "),
        n => format!("{}, and {n} more", names.join(", ")),
    }
}

impl PredictError {
    /// Whether the batch is at fault (the caller can fix it), rather than the model.
    pub fn is_bad_input(&self) -> bool {
        match self {
            PredictError::TooLarge { .. }
            | PredictError::TooManyRows { .. }
            | PredictError::Empty
            | PredictError::MissingColumns { .. }
            | PredictError::ExtraColumns { .. }
            | PredictError::WrongType { .. }
            | PredictError::UnknownCategory { .. }
            | PredictError::Malformed(_) => true,
            PredictError::Model(_) | PredictError::Onnx(_) | PredictError::Mismatch(_) => false,
        }
    }
}

impl From<DataError> for PredictError {
    fn from(e: DataError) -> Self {
        match e {
            DataError::Empty(_) | DataError::Table(ReadError::NoHeader) => PredictError::Empty,
            DataError::MissingColumns { line, columns } => {
                PredictError::MissingColumns { line, columns }
            }
            DataError::ExtraColumns { line, columns } => {
                PredictError::ExtraColumns { line, columns }
            }
            DataError::Table(ReadError::Cell {
                line,
                column,
                value,
                problem,
            }) => PredictError::WrongType {
                line,
                column,
                value,
                problem,
            },
            other => PredictError::Malformed(other.to_string()),
        }
    }
}

/// Predictions for one batch, in row order.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Per row: the predicted class label (classifiers) or value (regressors, the shortest
    /// decimal that reads back as the model's f32 output).
    pub predictions: Vec<String>,
    /// Classifiers: per row, the probability of each class in [`Predictor::classes`] order
    /// (row-major); empty for regressors.
    pub probabilities: Vec<f32>,
}

/// The last batch size a predictor saw, and the plan it made for one size (a size seen twice in a
/// row), if any.
#[derive(Default)]
struct SizedPlan {
    last_rows: usize,
    plan: Option<(usize, Arc<TypedRunnableModel>)>,
}

/// Index of the largest probability, the first on ties: the trainer's own rule
/// ([`crate::metrics::argmax`], which compares the same values widened to f64, an exact
/// conversion that keeps their order), without a copy per row.
fn first_largest(p: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}

/// A model loaded for prediction.
pub struct Predictor {
    schema: Schema,
    preprocessing: Preprocessing,
    /// The export, planned for any batch size.
    plan: Arc<TypedRunnableModel>,
    /// The export's bytes, to plan a repeated batch size.
    onnx: Vec<u8>,
    /// The plan for one batch size, once made.
    sized: Mutex<SizedPlan>,
    width: usize,
}

fn onnx_error(e: anyhow::Error) -> PredictError {
    PredictError::Onnx(format!("{e:#}"))
}

/// Plans `onnx` for batches of `rows` rows (None: any size) of `width` columns.
fn plan(
    onnx: &[u8],
    rows: Option<usize>,
    width: usize,
) -> Result<Arc<TypedRunnableModel>, PredictError> {
    let mut framework = tract_onnx::onnx();
    crate::onnx_regressor::register(&mut framework);
    let inference = framework.model_for_read(&mut &*onnx).map_err(onnx_error)?;
    let n = match rows {
        Some(rows) => rows.to_dim(),
        None => TDim::from(inference.symbols.sym("N")),
    };
    inference
        .with_input_fact(0, f32::fact(&[n, width.to_dim()]).into())
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| {
            PredictError::Mismatch(format!(
                "tract cannot plan it for inputs of {width} columns: {e:#}"
            ))
        })
}

impl Predictor {
    /// Loads a model file and its ONNX export, plans the export for batches of any size, and
    /// runs it once on a row of zeros to check that its output fits the model.
    pub fn load(model_bytes: &[u8], onnx_bytes: &[u8]) -> Result<Predictor, PredictError> {
        let model = Model::from_bytes(model_bytes).map_err(|e| PredictError::Model(e.0))?;
        let width = model.preprocessing.width();
        let predictor = Predictor {
            schema: model.spec.schema.clone(),
            preprocessing: model.preprocessing,
            plan: plan(onnx_bytes, None, width)?,
            onnx: onnx_bytes.to_vec(),
            sized: Mutex::new(SizedPlan::default()),
            width,
        };
        predictor.outputs(&vec![0.0; width], 1)?;
        Ok(predictor)
    }

    /// The feature columns a row must carry, in the schema's order.
    pub fn features(&self) -> Vec<String> {
        self.schema.features().map(|c| c.name.clone()).collect()
    }

    /// The column the model predicts (a batch may carry it; it is ignored).
    pub fn target(&self) -> &str {
        &self.schema.target
    }

    /// The class labels of a classifier, in output order (empty for a regressor).
    pub fn classes(&self) -> &[String] {
        &self.preprocessing.classes
    }

    /// Predicts a batch of rows: CSV with its header line, JSON lines or a JSON array.
    pub fn predict(&self, rows: &[u8], format: Format) -> Result<Prediction, PredictError> {
        if rows.len() > MAX_BATCH_BYTES {
            return Err(PredictError::TooLarge {
                bytes: rows.len(),
                max: MAX_BATCH_BYTES,
            });
        }
        let name = match format {
            Format::Csv => "batch.csv",
            Format::JsonLines => "batch.jsonl",
            Format::JsonArray => "batch.json",
        };
        let table = Table::parse(Path::new(name), rows, &self.schema, true)?;
        let n = table.rows();
        if n > MAX_BATCH_ROWS {
            return Err(PredictError::TooManyRows {
                rows: n,
                max: MAX_BATCH_ROWS,
            });
        }
        self.check_categories(&table)?;
        let all: Vec<usize> = (0..n).collect();
        let x = self.preprocessing.encode(&table, &all, false);
        let out = self.outputs(&x, n)?;
        let classes = &self.preprocessing.classes;
        if classes.is_empty() {
            Ok(Prediction {
                predictions: out.iter().map(|v| v.to_string()).collect(),
                probabilities: Vec::new(),
            })
        } else {
            let predictions = out
                .chunks(classes.len())
                .map(|p| classes[first_largest(p)].clone())
                .collect();
            Ok(Prediction {
                predictions,
                probabilities: out,
            })
        }
    }

    /// Refuses a category the model was not trained on (see the module doc).
    fn check_categories(&self, table: &Table) -> Result<(), PredictError> {
        for (e, cells) in self.preprocessing.features.iter().zip(&table.features) {
            if let (Encoding::OneHot { column, categories }, Values::Cat(cells)) = (e, cells)
                && let Some((row, value)) = cells
                    .iter()
                    .enumerate()
                    .find(|(_, c)| categories.binary_search(c).is_err())
            {
                return Err(PredictError::UnknownCategory {
                    row: row + 1,
                    column: column.clone(),
                    value: value.clone(),
                    known: categories.iter().take(LISTED_CATEGORIES).cloned().collect(),
                    more: categories.len().saturating_sub(LISTED_CATEGORIES),
                });
            }
        }
        Ok(())
    }

    /// Runs the plan on `rows` rows already encoded (`Preprocessing::encode(.., false)`,
    /// row-major `[rows, width]`): the export's last output, flat, checked to hold one value per
    /// row (regressors) or one probability per class and row (classifiers).
    pub fn outputs(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, PredictError> {
        let input = Tensor::from_shape(&[rows, self.width], x).map_err(onnx_error)?;
        let outputs = self
            .plan_for(rows)
            .run(tvec!(input.into()))
            .map_err(onnx_error)?;
        let last = outputs
            .last()
            .ok_or_else(|| PredictError::Mismatch("it has no output".into()))?;
        let values: Vec<f32> = last
            .to_plain_array_view::<f32>()
            .map_err(|e| PredictError::Mismatch(format!("its last output: {e:#}")))?
            .iter()
            .copied()
            .collect();
        let per_row = self.preprocessing.classes.len().max(1);
        if values.len() != rows * per_row {
            return Err(PredictError::Mismatch(format!(
                "it gives {} values for {rows} rows, the model {per_row} per row",
                values.len()
            )));
        }
        Ok(values)
    }
}

impl Predictor {
    /// The plan for a batch of `rows` rows: the one made for that size if there is one, else
    /// one made now if the previous batch had this size too, else the symbolic plan.
    fn plan_for(&self, rows: usize) -> Arc<TypedRunnableModel> {
        let repeated = {
            let mut sized = self.sized();
            if let Some((n, p)) = &sized.plan
                && *n == rows
            {
                return p.clone();
            }
            let repeated = sized.last_rows == rows;
            sized.last_rows = rows;
            repeated
        };
        // Planned outside the lock: another batch may run meanwhile on the symbolic plan.
        match repeated.then(|| plan(&self.onnx, Some(rows), self.width)) {
            Some(Ok(p)) => {
                self.sized().plan = Some((rows, p.clone()));
                p
            }
            // The symbolic plan loaded and ran: a size it cannot be planned for is not expected,
            // and the symbolic plan still serves it.
            Some(Err(_)) | None => self.plan.clone(),
        }
    }

    fn sized(&self) -> std::sync::MutexGuard<'_, SizedPlan> {
        // A size and a plan are consistent whatever panicked while holding them.
        self.sized
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Small models trained the way the trainer trains, for the tests of this module and of
/// [`crate::score`]. Trained once per test binary.
#[cfg(test)]
pub(crate) mod fixture {
    use std::sync::OnceLock;

    use crate::JobSpec;
    use crate::job::{self, Quiet};
    use crate::model::Model;

    /// A trained run.
    pub struct Run {
        pub model: Model,
        pub model_bytes: Vec<u8>,
        pub onnx: Vec<u8>,
        /// Whether the target is a class (else a number).
        pub classification: bool,
    }

    const COLUMNS: &str = r#"[{"name":"age","type":"numeric"},{"name":"sex","type":"categorical"},
        {"name":"cp","type":"categorical"},{"name":"chol","type":"numeric"}"#;

    /// `rows` synthetic heart-like rows from `seed`: a header, then `age,sex,cp,chol,target`.
    pub fn rows(rows: usize, seed: u64, classification: bool) -> String {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
        let mut next = move || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            s >> 33
        };
        let mut out = String::from("age,sex,cp,chol,target\n");
        for _ in 0..rows {
            let age = 30 + next() % 50;
            let sex = ["F", "M"][(next() % 2) as usize];
            let cp = ["typical", "atypical", "asymptomatic"][(next() % 3) as usize];
            let chol = 150.0 + (next() % 2000) as f64 / 10.0;
            let z = (age as f64 - 55.0) / 10.0
                + if cp == "asymptomatic" { 1.0 } else { -0.5 }
                + if sex == "M" { 0.5 } else { 0.0 }
                + (next() % 100) as f64 / 50.0
                - 1.0;
            let target = if classification {
                u8::from(z > 0.0).to_string()
            } else {
                format!("{:.3}", 100.0 + 10.0 * z + chol / 20.0)
            };
            out.push_str(&format!("{age},{sex},{cp},{chol},{target}\n"));
        }
        out
    }

    fn train(model: &str, classification: bool) -> Run {
        let target_type = if classification {
            "categorical"
        } else {
            "numeric"
        };
        let spec = format!(
            r#"{{"schema":{{"columns":{COLUMNS},{{"name":"target","type":"{target_type}"}}],
                "target":"target"}},"model":{model},"seed":5,"test_fraction":0.2,
                "training":{{"epochs":8,"batch_size":16,"optimizer":{{"kind":"adam","lr":0.02}}}},
                "checkpoint_every":1000}}"#
        );
        let spec = JobSpec::from_json(&spec).expect("fixture spec");
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("train.csv");
        std::fs::write(&data, rows(240, 1, classification)).expect("write data");
        let out = dir.path().join("out");
        job::run(&spec, &data, &out, &mut Quiet).expect("fixture trains");
        let model_bytes = std::fs::read(out.join("model.safetensors")).expect("model");
        let onnx = std::fs::read(out.join("model.onnx")).expect("onnx");
        Run {
            model: Model::from_bytes(&model_bytes).expect("model reads"),
            model_bytes,
            onnx,
            classification,
        }
    }

    /// An MLP classifier.
    pub fn classifier() -> &'static Run {
        static RUN: OnceLock<Run> = OnceLock::new();
        RUN.get_or_init(|| {
            train(
                r#"{"algorithm":"mlp","task":"classification","hidden":[8],"activation":"tanh"}"#,
                true,
            )
        })
    }

    /// A linear regressor.
    pub fn regressor() -> &'static Run {
        static RUN: OnceLock<Run> = OnceLock::new();
        RUN.get_or_init(|| train(r#"{"algorithm":"linear_regression"}"#, false))
    }

    /// A decision-tree classifier.
    pub fn tree() -> &'static Run {
        static RUN: OnceLock<Run> = OnceLock::new();
        RUN.get_or_init(|| {
            train(
                r#"{"algorithm":"decision_tree","task":"classification","max_depth":4}"#,
                true,
            )
        })
    }

    /// `n` rows the run was not trained on, target included.
    pub fn split_csv(run: &Run, n: usize) -> String {
        rows(n, 99, run.classification)
    }

    /// `csv` without the column `name`.
    pub fn drop_column(csv: &str, name: &str) -> String {
        let header: Vec<&str> = csv.lines().next().unwrap_or("").split(',').collect();
        let Some(at) = header.iter().position(|h| *h == name) else {
            return csv.to_owned();
        };
        csv.lines()
            .map(|l| {
                let cells: Vec<&str> = l
                    .split(',')
                    .enumerate()
                    .filter(|(i, _)| *i != at)
                    .map(|(_, c)| c)
                    .collect();
                cells.join(",") + "\n"
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Predictions;
    use crate::onnx;
    use fixture::Run;

    fn predictor(run: &Run) -> Predictor {
        Predictor::load(&run.model_bytes, &run.onnx).expect("predictor loads")
    }

    fn bad(run: &Run, rows: &str, format: Format) -> PredictError {
        predictor(run)
            .predict(rows.as_bytes(), format)
            .expect_err("bad input")
    }

    /// Predictor == onnx::evaluate (the export under tract, planned for the batch's exact size)
    /// == the native model within 1e-5, on rows the model was not trained on.
    #[test]
    fn predictions_agree_with_the_onnx_evaluation_and_the_native_model() {
        for run in [fixture::classifier(), fixture::regressor(), fixture::tree()] {
            let csv = fixture::split_csv(run, 50);
            let p = predictor(run)
                .predict(csv.as_bytes(), Format::Csv)
                .expect("predicts");
            let table = Table::parse(
                Path::new("x.csv"),
                csv.as_bytes(),
                &run.model.spec.schema,
                true,
            )
            .expect("table");
            let rows: Vec<usize> = (0..table.rows()).collect();
            let x = run.model.preprocessing.encode(&table, &rows, false);
            let classes = &run.model.preprocessing.classes;
            let evaluated = onnx::evaluate(
                &run.onnx,
                &x,
                rows.len(),
                run.model.preprocessing.width(),
                run.classification,
            )
            .expect("evaluates");
            let native = run.model.predict(&table, &rows).expect("native");
            assert_eq!(p.predictions.len(), 50);
            match (&evaluated, &native) {
                (Predictions::Classes(e), Predictions::Classes(n)) => {
                    let flat_e: Vec<f32> = e.iter().flatten().map(|&v| v as f32).collect();
                    assert_eq!(p.probabilities, flat_e, "Predictor == onnx::evaluate");
                    for (a, b) in p.probabilities.iter().zip(n.iter().flatten()) {
                        assert!((f64::from(*a) - b).abs() <= 1e-5, "{a} vs native {b}");
                    }
                    assert_eq!(p.predictions, evaluated.labels(classes));
                    assert_eq!(p.predictions, native.labels(classes));
                }
                (Predictions::Values(e), Predictions::Values(n)) => {
                    assert!(p.probabilities.is_empty());
                    for ((text, e), n) in p.predictions.iter().zip(e).zip(n) {
                        let v: f64 = text.parse().expect("a decimal");
                        assert_eq!(v as f32, *e as f32, "Predictor == onnx::evaluate");
                        assert!(
                            (v - n).abs() <= 1e-5 * n.abs().max(1.0),
                            "{v} vs native {n}"
                        );
                    }
                }
                _ => panic!("a classifier and a regressor disagree on the kind"),
            }
        }
    }

    #[test]
    fn batches_of_any_size_and_format_run_on_the_one_plan() {
        let run = fixture::classifier();
        let p = predictor(run);
        let csv = fixture::split_csv(run, 300);
        let whole = p.predict(csv.as_bytes(), Format::Csv).expect("300 rows");
        // The first row alone, then the first 7, give the same as within the 300.
        let lines: Vec<&str> = csv.lines().collect();
        for n in [1, 7] {
            let part = lines[..=n].join("\n");
            let got = p.predict(part.as_bytes(), Format::Csv).expect("part");
            assert_eq!(got.predictions, whole.predictions[..n]);
            assert_eq!(got.probabilities, whole.probabilities[..n * 2]);
        }
        // The same rows as JSON lines, the target absent and the keys in another order.
        let json: String = lines[1..8]
            .iter()
            .map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                format!(
                    "{{\"cp\":\"{}\",\"chol\":{},\"sex\":\"{}\",\"age\":{}}}\n",
                    c[2], c[3], c[1], c[0]
                )
            })
            .collect();
        let got = p
            .predict(json.as_bytes(), Format::JsonLines)
            .expect("jsonl");
        assert_eq!(got.predictions, whole.predictions[..7]);
        assert_eq!(p.classes(), ["0", "1"]);
        assert_eq!(p.features(), ["age", "sex", "cp", "chol"]);
        assert_eq!(p.target(), "target");
    }

    #[test]
    fn a_repeated_batch_size_runs_on_its_own_plan_with_the_same_outputs() {
        for run in [fixture::classifier(), fixture::regressor(), fixture::tree()] {
            let p = predictor(run);
            let csv = fixture::split_csv(run, 40);
            let first = p
                .predict(csv.as_bytes(), Format::Csv)
                .expect("symbolic plan");
            assert!(
                p.sized().plan.is_none(),
                "one batch of a size plans nothing"
            );
            let second = p
                .predict(csv.as_bytes(), Format::Csv)
                .expect("plans 40 rows");
            assert!(
                matches!(p.sized().plan, Some((40, _))),
                "the repeated size is planned"
            );
            let third = p.predict(csv.as_bytes(), Format::Csv).expect("40-row plan");
            assert_eq!(first, second);
            assert_eq!(first, third);
            // Another size runs on the symbolic plan and keeps the 40-row one for later.
            let lines: Vec<&str> = csv.lines().collect();
            let five = p
                .predict(lines[..6].join("\n").as_bytes(), Format::Csv)
                .expect("5 rows");
            assert_eq!(five.predictions, first.predictions[..5]);
            assert!(matches!(p.sized().plan, Some((40, _))));
        }
    }

    #[test]
    fn the_label_is_the_trainers_arg_max() {
        for p in [
            vec![0.2f32, 0.8],
            vec![0.5, 0.5],
            vec![0.1, 0.45, 0.45],
            vec![f32::NAN, 0.3],
            vec![0.3, f32::NAN, 0.7],
        ] {
            let wide: Vec<f64> = p.iter().map(|&v| f64::from(v)).collect();
            assert_eq!(first_largest(&p), crate::metrics::argmax(&wide), "{p:?}");
        }
    }

    #[test]
    fn a_missing_feature_column_is_named() {
        let run = fixture::classifier();
        let csv = fixture::drop_column(&fixture::split_csv(run, 3), "chol");
        assert_eq!(
            bad(run, &csv, Format::Csv),
            PredictError::MissingColumns {
                line: 1,
                columns: vec!["chol".into()]
            }
        );
        // The target may be absent.
        let no_target = fixture::drop_column(&fixture::split_csv(run, 3), "target");
        assert!(
            predictor(run)
                .predict(no_target.as_bytes(), Format::Csv)
                .is_ok()
        );
    }

    #[test]
    fn an_extra_or_misspelt_column_is_refused() {
        let run = fixture::classifier();
        let csv = "age,sex,cp,chol,zip\n50,F,typical,200,12345\n";
        let err = bad(run, csv, Format::Csv);
        assert_eq!(
            err,
            PredictError::ExtraColumns {
                line: 1,
                columns: vec!["zip".into()]
            }
        );
        assert!(err.is_bad_input());
        let misspelt = "age,sex,cp,cholesterol\n50,F,typical,200\n";
        let err = bad(run, misspelt, Format::Csv).to_string();
        assert!(
            err.contains("missing feature column(s) [\"chol\"]"),
            "{err}"
        );
    }

    #[test]
    fn a_cell_of_the_wrong_type_is_named_by_line_and_column() {
        let run = fixture::classifier();
        let csv = "age,sex,cp,chol\n50,F,typical,200\nold,M,typical,210\n";
        let err = bad(run, csv, Format::Csv);
        assert!(
            matches!(&err, PredictError::WrongType { line: 3, column, value, .. }
                if column == "age" && value == "old"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "line 3, column \"age\": \"old\" is not a number"
        );
        let json = "{\"age\":50,\"sex\":\"F\",\"cp\":\"typical\",\"chol\":\"high\"}\n";
        let err = bad(run, json, Format::JsonLines);
        assert!(
            matches!(err, PredictError::WrongType { line: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn an_unknown_category_is_refused_with_the_known_ones() {
        let run = fixture::classifier();
        let csv = "age,sex,cp,chol\n50,F,typical,200\n51,X,typical,200\n";
        let err = bad(run, csv, Format::Csv);
        assert_eq!(
            err,
            PredictError::UnknownCategory {
                row: 2,
                column: "sex".into(),
                value: "X".into(),
                known: vec!["F".into(), "M".into()],
                more: 0,
            }
        );
        assert_eq!(
            err.to_string(),
            "row 2, column \"sex\": category \"X\" is unknown to the model (it was trained on \
             \"F\", \"M\")"
        );
    }

    #[test]
    fn oversize_batches_are_refused_before_they_are_read() {
        let run = fixture::classifier();
        let p = predictor(run);
        let big = vec![b'1'; MAX_BATCH_BYTES + 1];
        assert_eq!(
            p.predict(&big, Format::Csv),
            Err(PredictError::TooLarge {
                bytes: MAX_BATCH_BYTES + 1,
                max: MAX_BATCH_BYTES
            })
        );
        let many = fixture::drop_column(&fixture::split_csv(run, MAX_BATCH_ROWS + 1), "target");
        assert!(many.len() <= MAX_BATCH_BYTES);
        assert_eq!(
            p.predict(many.as_bytes(), Format::Csv),
            Err(PredictError::TooManyRows {
                rows: MAX_BATCH_ROWS + 1,
                max: MAX_BATCH_ROWS
            })
        );
        let most = fixture::drop_column(&fixture::split_csv(run, MAX_BATCH_ROWS), "target");
        assert_eq!(
            p.predict(most.as_bytes(), Format::Csv)
                .expect("the largest batch")
                .predictions
                .len(),
            MAX_BATCH_ROWS
        );
    }

    #[test]
    fn empty_and_malformed_batches_are_refused() {
        let run = fixture::classifier();
        for (rows, format) in [
            ("", Format::Csv),
            ("age,sex,cp,chol\n", Format::Csv),
            ("\n\n", Format::JsonLines),
        ] {
            assert_eq!(bad(run, rows, format), PredictError::Empty, "{rows:?}");
        }
        let ragged = bad(run, "age,sex,cp,chol\n50,F\n", Format::Csv);
        assert!(matches!(ragged, PredictError::Malformed(_)), "{ragged:?}");
        assert!(ragged.to_string().starts_with("line 2:"), "{ragged}");
        let json = bad(run, "{\"age\":50,", Format::JsonLines);
        assert!(matches!(json, PredictError::Malformed(_)), "{json:?}");
    }

    #[test]
    fn an_export_of_another_model_or_garbage_does_not_load() {
        let classifier = fixture::classifier();
        let regressor = fixture::regressor();
        // Same inputs, another output shape.
        let err = Predictor::load(&classifier.model_bytes, &regressor.onnx)
            .err()
            .expect("another model's export");
        assert!(matches!(err, PredictError::Mismatch(_)), "{err:?}");
        assert!(!err.is_bad_input());
        let err = Predictor::load(&classifier.model_bytes, b"not onnx")
            .err()
            .expect("garbage");
        assert!(matches!(err, PredictError::Onnx(_)), "{err:?}");
        let err = Predictor::load(b"not a model", &classifier.onnx)
            .err()
            .expect("garbage model");
        assert!(matches!(err, PredictError::Model(_)), "{err:?}");
    }
}
