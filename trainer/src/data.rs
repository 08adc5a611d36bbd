//! Tabular data for training: the job's schema, a file read against it, the deterministic split
//! and the preprocessing (standardisation, one-hot) whose parameters the model file stores.
//!
//! Files are read by `neurodata-tabular`, the reader `ndctl dataset upload` lists rows with, so
//! the rows trained on are the rows the listing counts and commits to (its rules: CSV, JSON lines
//! or a JSON array by the file's name; blank lines, CRLF, quotes, flat JSON values).

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;

use neurodata_tabular::{self as tabular, Document, Format, ReadError, Row};
use serde::{Deserialize, Serialize};

use crate::rng::Stream;

/// Why a data file was refused. Every variant names the column and line to fix.
///
/// Messages are whole, causes included, and no variant has a `source()` (see
/// [`crate::TrainError`]).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("reading {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// No header or no data rows.
    #[error("{0}: the file has no data rows")]
    Empty(String),
    /// Not a well-formed table (syntax, ragged rows, text that is not UTF-8), or a cell that is
    /// not a finite number in a numeric column.
    #[error("{0}")]
    Table(ReadError),
    /// Schema columns the file lacks.
    #[error("line {line}: missing column(s) {columns:?} of the schema")]
    MissingColumns {
        /// 1-based line of the header.
        line: u64,
        /// The names.
        columns: Vec<String>,
    },
    /// Columns the schema does not name.
    #[error("line {line}: column(s) {columns:?} are not in the schema")]
    ExtraColumns {
        /// 1-based line of the header.
        line: u64,
        /// The names.
        columns: Vec<String>,
    },
    /// A classification target with fewer than two labels in the training split.
    #[error(
        "the target {target:?} has a single class {class:?} in the training split; a classifier needs two or more"
    )]
    SingleClass {
        /// The target column.
        target: String,
        /// The only label.
        class: String,
    },
    /// Too few rows to hold out a test split.
    #[error("{rows} row(s) cannot be split into non-empty train and test sets")]
    TooFewRows {
        /// Rows in the file.
        rows: usize,
    },
}

impl From<ReadError> for DataError {
    fn from(e: ReadError) -> Self {
        DataError::Table(e)
    }
}

/// Classification or regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Predict one of the target's labels.
    Classification,
    /// Predict the numeric target.
    Regression,
}

/// Why a schema is inconsistent (the job spec reports it as `SpecError::Schema`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// How a column is read and encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// A finite number ([`tabular::number`]); standardised for gradient-trained models.
    Numeric,
    /// A label; one-hot encoded over the categories of the training split.
    Categorical,
}

/// One column of the schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Header name (CSV) or key (JSON lines).
    pub name: String,
    /// How it is read.
    #[serde(rename = "type")]
    pub kind: ColumnType,
}

/// The columns of a file and which one is the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Every column the file holds, in any order.
    pub columns: Vec<Column>,
    /// The column to predict.
    pub target: String,
}

impl Schema {
    /// Names unique and non-empty, the target among them, at least one feature.
    pub fn check(&self) -> Result<(), SchemaError> {
        let mut seen = BTreeSet::new();
        for c in &self.columns {
            if c.name.is_empty() {
                return Err(SchemaError("a column has an empty name".into()));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(SchemaError(format!("column {:?} is named twice", c.name)));
            }
        }
        if !seen.contains(self.target.as_str()) {
            return Err(SchemaError(format!(
                "the target {:?} is not one of the schema's columns",
                self.target
            )));
        }
        if self.columns.len() < 2 {
            return Err(SchemaError("no feature column besides the target".into()));
        }
        Ok(())
    }

    /// Feature columns, in schema order.
    pub fn features(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.name != self.target)
    }
}

/// One feature column's values as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// A numeric column.
    Num(Vec<f64>),
    /// A categorical column.
    Cat(Vec<String>),
}

/// A file read against a schema: the values of each feature column (schema order) and the
/// target's raw text.
#[derive(Debug, Clone)]
pub struct Table {
    /// Values of each feature column, schema order.
    pub features: Vec<Values>,
    /// The target's text per row.
    pub target: Vec<String>,
}

impl Table {
    /// Rows in the table.
    pub fn rows(&self) -> usize {
        self.target.len()
    }

    /// Reads a `.csv`, `.jsonl`/`.ndjson` (JSON lines) or `.json` (a JSON array of objects) file,
    /// by extension ([`Format::of_path`]; CSV otherwise).
    pub fn read(path: &Path, schema: &Schema) -> Result<Table, DataError> {
        Table::read_with(path, schema, false)
    }

    /// Reads rows to predict: the target column may be absent (its cells read as empty).
    pub fn read_for_prediction(path: &Path, schema: &Schema) -> Result<Table, DataError> {
        Table::read_with(path, schema, true)
    }

    fn read_with(path: &Path, schema: &Schema, target_optional: bool) -> Result<Table, DataError> {
        let bytes = std::fs::read(path).map_err(|error| DataError::Io {
            path: path.display().to_string(),
            error,
        })?;
        Table::parse(path, &bytes, schema, target_optional)
    }

    /// Parses a file's bytes in the format its path names ([`Format::of_path`]). A large CSV
    /// without quotes is parsed by the kernels' threads, each taking a run of whole lines; the
    /// parts are joined in file order, and the first error in file order is the one reported.
    pub fn parse(
        path: &Path,
        bytes: &[u8],
        schema: &Schema,
        target_optional: bool,
    ) -> Result<Table, DataError> {
        let threads = crate::kernels::threads();
        Table::parse_with_threads(path, bytes, schema, target_optional, threads)
    }

    fn parse_with_threads(
        path: &Path,
        bytes: &[u8],
        schema: &Schema,
        target_optional: bool,
        threads: usize,
    ) -> Result<Table, DataError> {
        let empty = || DataError::Empty(path.display().to_string());
        let document = match Document::parse(bytes, Format::of_path(path)) {
            Err(ReadError::NoHeader) => return Err(empty()),
            document => document?,
        };
        let header = document.header();
        let index = column_index(schema, header.names(), header.line(), target_optional)?;
        let parts = document.rows_parallel(
            threads,
            |rows| Table::empty(schema, rows),
            |table, row| table.push(schema, &index, row),
        )?;
        let mut parts = parts.into_iter();
        let mut table = parts.next().unwrap_or_else(|| Table::empty(schema, 0));
        for part in parts {
            table.append(part);
        }
        if table.rows() == 0 {
            return Err(empty());
        }
        Ok(table)
    }

    /// Reads JSON lines (one object per line; blank lines are skipped).
    pub fn from_json_lines(reader: impl BufRead, schema: &Schema) -> Result<Table, DataError> {
        let stream = match tabular::Stream::open(reader, Format::JsonLines) {
            Err(ReadError::NoHeader) => return Ok(Table::empty(schema, 0)),
            stream => stream?,
        };
        let header = stream.header();
        let index = column_index(schema, header.names(), header.line(), false)?;
        let mut table = Table::empty(schema, 0);
        stream.rows(|row| table.push(schema, &index, row))?;
        Ok(table)
    }

    fn append(&mut self, other: Table) {
        for (a, b) in self.features.iter_mut().zip(other.features) {
            match (a, b) {
                (Values::Num(a), Values::Num(b)) => a.extend(b),
                (Values::Cat(a), Values::Cat(b)) => a.extend(b),
                _ => {}
            }
        }
        self.target.extend(other.target);
    }

    /// A table with no rows and room for `rows`.
    fn empty(schema: &Schema, rows: usize) -> Table {
        Table {
            features: schema
                .features()
                .map(|c| match c.kind {
                    ColumnType::Numeric => Values::Num(Vec::with_capacity(rows)),
                    ColumnType::Categorical => Values::Cat(Vec::with_capacity(rows)),
                })
                .collect(),
            target: Vec::with_capacity(rows),
        }
    }

    fn push(
        &mut self,
        schema: &Schema,
        index: &ColumnIndex,
        row: Row<'_>,
    ) -> Result<(), DataError> {
        for (k, (values, &at)) in self.features.iter_mut().zip(&index.features).enumerate() {
            let text = row.fields.get(at).copied().unwrap_or("");
            match values {
                Values::Num(v) => match tabular::number(text) {
                    Ok(x) => v.push(x),
                    // The column's name is looked up only for the error.
                    Err(problem) => {
                        let column = schema.features().nth(k).map_or("", |c| c.name.as_str());
                        return Err(cell_error(text, column, row.line, problem));
                    }
                },
                Values::Cat(v) => v.push(text.to_owned()),
            }
        }
        let target = index
            .target
            .and_then(|i| row.fields.get(i))
            .map_or(String::new(), |t| (*t).to_owned());
        if index.target.is_some() && index.target_numeric {
            parse_number(&target, &schema.target, row.line)?;
        }
        self.target.push(target);
        Ok(())
    }

    /// The target as numbers (regression); checked at read time for numeric targets.
    pub fn numeric_target(&self, schema: &Schema) -> Result<Vec<f64>, DataError> {
        self.target
            .iter()
            .enumerate()
            .map(|(i, t)| parse_number(t, &schema.target, i as u64 + 2))
            .collect()
    }
}

struct ColumnIndex {
    features: Vec<usize>,
    target: Option<usize>,
    /// A numeric target is checked as a number when read.
    target_numeric: bool,
}

fn column_index(
    schema: &Schema,
    names: &[String],
    line: u64,
    target_optional: bool,
) -> Result<ColumnIndex, DataError> {
    let at: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let missing: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !at.contains_key(c.name.as_str()))
        .filter(|c| !(target_optional && c.name == schema.target))
        .map(|c| c.name.clone())
        .collect();
    if !missing.is_empty() {
        return Err(DataError::MissingColumns {
            line,
            columns: missing,
        });
    }
    let known: BTreeSet<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    let extra: Vec<String> = names
        .iter()
        .filter(|n| !known.contains(n.as_str()))
        .cloned()
        .collect();
    if !extra.is_empty() {
        return Err(DataError::ExtraColumns {
            line,
            columns: extra,
        });
    }
    Ok(ColumnIndex {
        features: schema.features().map(|c| at[c.name.as_str()]).collect(),
        target: at.get(schema.target.as_str()).copied(),
        target_numeric: schema
            .columns
            .iter()
            .any(|c| c.name == schema.target && c.kind == ColumnType::Numeric),
    })
}

fn parse_number(text: &str, column: &str, line: u64) -> Result<f64, DataError> {
    tabular::number(text).map_err(|problem| cell_error(text, column, line, problem))
}

/// Why `text` on `line` does not fit its numeric column.
fn cell_error(text: &str, column: &str, line: u64, problem: tabular::CellError) -> DataError {
    DataError::Table(ReadError::Cell {
        line,
        column: column.to_owned(),
        value: text.to_owned(),
        problem,
    })
}

/// Row indices of the train and test splits: a seeded permutation, the first
/// `round(n * test_fraction)` rows (at least one) held out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Training rows, in permutation order.
    pub train: Vec<usize>,
    /// Test rows, in permutation order.
    pub test: Vec<usize>,
}

impl Split {
    /// The split of `rows` rows for this seed.
    pub fn new(rows: usize, test_fraction: f64, seed: u64) -> Result<Split, DataError> {
        let test = ((rows as f64 * test_fraction).round() as usize).max(1);
        if rows < 2 || test >= rows {
            return Err(DataError::TooFewRows { rows });
        }
        let mut order: Vec<usize> = (0..rows).collect();
        Stream::new(seed, "split", 0).shuffle(&mut order);
        let train = order.split_off(test);
        Ok(Split { train, test: order })
    }
}

/// How one feature column becomes model inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Encoding {
    /// One input; `(x - mean) / std` for gradient-trained models, raw for trees.
    Numeric {
        /// Column name.
        column: String,
        /// Training-split mean.
        mean: f64,
        /// Training-split population standard deviation (1 where it is 0).
        std: f64,
    },
    /// One 0/1 input per category seen in training (sorted); unseen categories are all zeros.
    OneHot {
        /// Column name.
        column: String,
        /// Categories in input order.
        categories: Vec<String>,
    },
}

impl Encoding {
    /// Fits one column on the training rows.
    fn fit(column: &Column, cells: &Values, train: &[usize]) -> Encoding {
        match cells {
            Values::Num(cells) => {
                let values = train.iter().map(|&r| cells[r]);
                let n = train.len() as f64;
                let mean = values.clone().sum::<f64>() / n;
                let var = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let std = var.sqrt();
                Encoding::Numeric {
                    column: column.name.clone(),
                    mean,
                    std: if std > 0.0 && std.is_finite() {
                        std
                    } else {
                        1.0
                    },
                }
            }
            Values::Cat(cells) => {
                let categories: BTreeSet<&str> = train.iter().map(|&r| cells[r].as_str()).collect();
                Encoding::OneHot {
                    column: column.name.clone(),
                    categories: categories.into_iter().map(str::to_owned).collect(),
                }
            }
        }
    }
}

/// Every parameter of the preprocessing, fitted on the training split and stored in the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// One entry per feature column, schema order.
    pub features: Vec<Encoding>,
    /// Class labels in output order (classification), empty for regression.
    pub classes: Vec<String>,
    /// Regression only: the target's training mean and standard deviation. Networks learn the
    /// standardised target and scale their output back, so learning rates do not depend on the
    /// target's units.
    pub target: Option<TargetScale>,
}

/// Mean and standard deviation of a numeric target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetScale {
    /// Training-split mean.
    pub mean: f64,
    /// Training-split population standard deviation (1 where it is 0).
    pub std: f64,
}

impl Preprocessing {
    /// Fits on the training rows.
    pub fn fit(
        table: &Table,
        schema: &Schema,
        train: &[usize],
        task: Task,
    ) -> Result<Preprocessing, DataError> {
        // Columns are fitted independently (each sum in training-row order), several at a time.
        let columns: Vec<(&Column, &Values)> = schema.features().zip(&table.features).collect();
        let threads = crate::kernels::threads().min(columns.len()).max(1);
        let fit_all = |columns: &[(&Column, &Values)]| -> Vec<Encoding> {
            columns
                .iter()
                .map(|(column, cells)| Encoding::fit(column, cells, train))
                .collect()
        };
        let features: Vec<Encoding> = if threads <= 1 || train.len() < 4096 {
            fit_all(&columns)
        } else {
            let per = columns.len().div_ceil(threads);
            std::thread::scope(|s| {
                let handles: Vec<_> = columns
                    .chunks(per)
                    .map(|part| s.spawn(move || fit_all(part)))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        };
        let mut target = None;
        let classes = match task {
            Task::Regression => {
                let t = table.numeric_target(schema)?;
                let n = train.len() as f64;
                let mean = train.iter().map(|&r| t[r]).sum::<f64>() / n;
                let var = train
                    .iter()
                    .map(|&r| (t[r] - mean) * (t[r] - mean))
                    .sum::<f64>()
                    / n;
                let std = var.sqrt();
                target = Some(TargetScale {
                    mean,
                    std: if std > 0.0 && std.is_finite() {
                        std
                    } else {
                        1.0
                    },
                });
                Vec::new()
            }
            Task::Classification => {
                let set: BTreeSet<&str> = train.iter().map(|&r| table.target[r].as_str()).collect();
                if set.len() < 2 {
                    return Err(DataError::SingleClass {
                        target: schema.target.clone(),
                        class: set.into_iter().next().unwrap_or_default().to_owned(),
                    });
                }
                set.into_iter().map(str::to_owned).collect()
            }
        };
        Ok(Preprocessing {
            features,
            classes,
            target,
        })
    }

    /// `(mean, std)` of the regression target, `(0, 1)` when there is none.
    pub fn target_scale(&self) -> (f64, f64) {
        self.target.map_or((0.0, 1.0), |s| (s.mean, s.std))
    }

    /// Model inputs per row.
    pub fn width(&self) -> usize {
        self.features
            .iter()
            .map(|e| match e {
                Encoding::Numeric { .. } => 1,
                Encoding::OneHot { categories, .. } => categories.len(),
            })
            .sum()
    }

    /// Names of the model inputs (`column` or `column=category`).
    pub fn input_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for e in &self.features {
            match e {
                Encoding::Numeric { column, .. } => names.push(column.clone()),
                Encoding::OneHot {
                    column, categories, ..
                } => names.extend(categories.iter().map(|c| format!("{column}={c}"))),
            }
        }
        names
    }

    /// Row-major `[rows, width]` inputs: numeric columns raw (as f32) when `standardise` is
    /// false, else `((x - mean) / std)` computed in f64 and rounded once. Each element depends
    /// on its own cell only, so runs of rows are encoded by separate threads.
    pub fn encode(&self, table: &Table, rows: &[usize], standardise: bool) -> Vec<f32> {
        const PARALLEL_MIN_ROWS: usize = 4096;
        let width = self.width();
        let mut out = vec![0f32; rows.len() * width];
        let threads = crate::kernels::threads();
        if threads <= 1 || rows.len() < PARALLEL_MIN_ROWS || width == 0 {
            self.encode_into(table, rows, standardise, &mut out);
        } else {
            let per = rows.len().div_ceil(threads);
            std::thread::scope(|s| {
                for (rows, out) in rows.chunks(per).zip(out.chunks_mut(per * width)) {
                    s.spawn(move || self.encode_into(table, rows, standardise, out));
                }
            });
        }
        out
    }

    fn encode_into(&self, table: &Table, rows: &[usize], standardise: bool, out: &mut [f32]) {
        let width = self.width();
        let mut offset = 0;
        for (e, cells) in self.features.iter().zip(&table.features) {
            match (e, cells) {
                (Encoding::Numeric { mean, std, .. }, Values::Num(v)) => {
                    for (i, &r) in rows.iter().enumerate() {
                        out[i * width + offset] = if standardise {
                            ((v[r] - mean) / std) as f32
                        } else {
                            v[r] as f32
                        };
                    }
                }
                (Encoding::OneHot { categories, .. }, Values::Cat(c)) => {
                    for (i, &r) in rows.iter().enumerate() {
                        if let Ok(k) = categories.binary_search(&c[r]) {
                            out[i * width + offset + k] = 1.0;
                        }
                    }
                }
                // A schema and preprocessing of different shapes leave zeros (the model's own
                // schema always reads its tables, so this does not happen in practice).
                _ => {}
            }
            offset += match e {
                Encoding::Numeric { .. } => 1,
                Encoding::OneHot { categories, .. } => categories.len(),
            };
        }
    }

    /// Class index per row (labels unseen in training map to `None`).
    pub fn class_indices(&self, table: &Table, rows: &[usize]) -> Vec<Option<usize>> {
        rows.iter()
            .map(|&r| self.classes.binary_search(&table.target[r]).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema {
            columns: vec![
                Column {
                    name: "age".into(),
                    kind: ColumnType::Numeric,
                },
                Column {
                    name: "sex".into(),
                    kind: ColumnType::Categorical,
                },
                Column {
                    name: "y".into(),
                    kind: ColumnType::Categorical,
                },
            ],
            target: "y".into(),
        }
    }

    fn csv(text: &str) -> Result<Table, DataError> {
        Table::parse(Path::new("x.csv"), text.as_bytes(), &schema(), false)
    }

    #[test]
    fn csv_and_json_lines_read_the_same_table() {
        let a = csv("sex,age,y\nf,40,yes\nm,50.5,no\n").expect("csv");
        let b = Table::from_json_lines(
            "{\"age\":40,\"sex\":\"f\",\"y\":\"yes\"}\n\n{\"age\":50.5,\"sex\":\"m\",\"y\":\"no\"}\n"
                .as_bytes(),
            &schema(),
        )
        .expect("jsonl");
        assert_eq!(a.features, b.features);
        assert_eq!(a.target, b.target);
    }

    #[test]
    fn bad_files_name_the_line_and_column() {
        let cases = [
            ("age,y\n1,a\n", "missing column(s) [\"sex\"]"),
            (
                "age,sex,y,zip\n1,f,a,9\n",
                "[\"zip\"] are not in the schema",
            ),
            (
                "age,sex,y\nold,f,a\n",
                "line 2, column \"age\": \"old\" is not a number",
            ),
            (
                "age,sex,y\n1,f,a\nNaN,m,b\n",
                "line 3, column \"age\": \"NaN\" is not finite",
            ),
            ("age,sex,y\n1,f,a\ninf,m,b\n", "is not finite"),
            ("age,sex,y\n1,f\n", "line 2: 2 fields, the header has 3"),
            (
                "age,sex,y\r\n\r\n1,f\r\n",
                "line 3: 2 fields, the header has 3",
            ),
            ("", "no data rows"),
        ];
        for (text, want) in cases {
            let err = csv(text).map(|t| t.rows()).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let err = Table::from_json_lines("{\"age\":1,\"sex\":\"f\"".as_bytes(), &schema())
            .expect_err("truncated json")
            .to_string();
        assert!(err.starts_with("line 1:"), "{err}");
    }

    #[test]
    fn a_large_csv_parses_the_same_in_parallel_and_reports_the_first_bad_line() {
        let mut text = String::from("age,sex,y\n");
        for i in 0..100_000 {
            text.push_str(&format!(
                "{}.125,{},{}\n",
                i * 1000,
                ["f", "m"][i % 2],
                ["a", "b"][i % 3 % 2]
            ));
        }
        assert!(text.len() > 1 << 20);
        let parse = |text: &str, threads| {
            Table::parse_with_threads(
                Path::new("x.csv"),
                text.as_bytes(),
                &schema(),
                false,
                threads,
            )
        };
        let parallel = parse(&text, 3).expect("parallel");
        let sequential = parse(&text, 1).expect("sequential");
        assert_eq!(parallel.features, sequential.features);
        assert_eq!(parallel.target, sequential.target);
        let mut lines: Vec<&str> = text.lines().collect();
        lines[50_000] = "oops,f,a";
        lines[55_000] = "1,f";
        let bad = lines.join("\n");
        let err = parse(&bad, 3).expect_err("bad row").to_string();
        assert!(err.starts_with("line 50001, column \"age\""), "{err}");
    }

    /// A tricky file: CRLF and LF, blank and space-only lines, quoted commas, a quoted line
    /// break, a doubled quote, no newline after the last row.
    const TRICKY: &str =
        "age,sex,y\r\n40,\"f\",yes\r\n\r\n  \r\n50.5,\"m, or\nother\",no\n\n60,f,\"y\"\"es\"";

    #[test]
    fn a_listings_row_count_is_the_number_of_rows_the_trainer_reads() {
        // What `ndctl dataset upload` lists: one streamed pass (rows, schema, hash).
        let listed = tabular::summarize(TRICKY.as_bytes(), Format::Csv, None).expect("listing");
        let table = csv(TRICKY).expect("trainer");
        assert_eq!(listed.rows, table.rows() as u64);
        assert_eq!(table.rows(), 3);
        assert_eq!(
            table.features[1],
            Values::Cat(vec!["f".into(), "m, or\nother".into(), "f".into()])
        );
        assert_eq!(table.target, ["yes", "no", "y\"es"]);
        // The same rows as JSON lines count the same too.
        let json = "{\"age\":40,\"sex\":\"f\",\"y\":\"yes\"}\r\n\n{\"age\":50.5,\"sex\":\"m, or\\nother\",\"y\":\"no\"}\n{\"age\":60,\"sex\":\"f\",\"y\":\"y\\\"es\"}";
        let listed = tabular::summarize(json.as_bytes(), Format::JsonLines, None).expect("listing");
        let from_json =
            Table::parse(Path::new("x.jsonl"), json.as_bytes(), &schema(), false).expect("jsonl");
        assert_eq!(listed.rows, from_json.rows() as u64);
        assert_eq!(from_json.features, table.features);
        assert_eq!(from_json.target, table.target);
    }

    #[test]
    fn a_json_array_reads_the_table_of_the_same_csv_and_its_listing_commits_to_its_rows() {
        let array = "[\n  {\"age\": 40, \"sex\": \"f\", \"y\": \"yes\"},\n  {\"age\": 50.5, \"sex\": \"m, or\\nother\",\n   \"y\": \"no\"},\n  {\"age\": 60, \"sex\": \"f\", \"y\": \"y\\\"es\"}\n]\n";
        let table = csv(TRICKY).expect("csv");
        let from_array =
            Table::parse(Path::new("x.json"), array.as_bytes(), &schema(), false).expect("json");
        assert_eq!(from_array.features, table.features);
        assert_eq!(from_array.target, table.target);
        // The listing's count is the trainer's, and its rows root that of the same rows as CSV.
        let listed =
            tabular::summarize(array.as_bytes(), Format::JsonArray, None).expect("listing");
        assert_eq!(listed.rows, from_array.rows() as u64);
        let as_csv = tabular::summarize(TRICKY.as_bytes(), Format::Csv, None).expect("listing");
        assert_eq!(listed.rows_root, as_csv.rows_root);
        // A nested value is refused with its line and column.
        let nested = array.replace("\"f\", \"y\": \"yes\"", "{\"k\": 1}, \"y\": \"yes\"");
        let err = Table::parse(Path::new("x.json"), nested.as_bytes(), &schema(), false)
            .expect_err("nested")
            .to_string();
        assert!(
            err.starts_with("line 2, column \"sex\": a nested object"),
            "{err}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_refused_with_the_reason() {
        let err = csv(&format!("\u{feff}{TRICKY}"))
            .expect_err("BOM")
            .to_string();
        assert_eq!(
            err,
            "the file starts with a byte order mark: save it as UTF-8 without BOM"
        );
    }

    #[test]
    fn the_split_depends_only_on_the_seed_and_covers_every_row() {
        let a = Split::new(100, 0.2, 7).expect("split");
        assert_eq!(a, Split::new(100, 0.2, 7).expect("split"));
        assert_ne!(a, Split::new(100, 0.2, 8).expect("split"));
        assert_eq!(a.test.len(), 20);
        let mut all: Vec<usize> = a.train.iter().chain(&a.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(Split::new(1, 0.2, 1).is_err());
    }

    #[test]
    fn preprocessing_standardises_one_hot_encodes_and_refuses_a_single_class() {
        let t = csv("age,sex,y\n10,f,a\n20,m,b\n30,f,a\n").expect("csv");
        let p = Preprocessing::fit(&t, &schema(), &[0, 1, 2], Task::Classification).expect("fit");
        assert_eq!(p.width(), 3);
        assert_eq!(p.input_names(), ["age", "sex=f", "sex=m"]);
        let x = p.encode(&t, &[1, 0], true);
        assert_eq!(x[..3], [0.0, 0.0, 1.0]);
        assert!((x[3] + 1.224_744_9).abs() < 1e-6);
        let err = Preprocessing::fit(&t, &schema(), &[0, 2], Task::Classification)
            .expect_err("one class")
            .to_string();
        assert!(err.contains("single class \"a\""), "{err}");
    }
}
