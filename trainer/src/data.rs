//! Tabular data: the schema, CSV and JSON-lines readers, the deterministic split and the
//! preprocessing (standardisation, one-hot) whose parameters the model file stores.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::rng::Stream;

/// Why a data file was refused. Every variant names the column and line to fix.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No header or no data rows.
    #[error("{0}: the file has no data rows")]
    Empty(String),
    /// Malformed CSV or JSON.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line.
        line: u64,
        /// What the parser said.
        message: String,
    },
    /// Schema columns the file lacks.
    #[error("line {line}: missing column(s) {columns:?} of the schema")]
    MissingColumns {
        /// 1-based line (1 for a CSV header).
        line: u64,
        /// The names.
        columns: Vec<String>,
    },
    /// Columns the schema does not name.
    #[error("line {line}: column(s) {columns:?} are not in the schema")]
    ExtraColumns {
        /// 1-based line (1 for a CSV header).
        line: u64,
        /// The names.
        columns: Vec<String>,
    },
    /// A CSV row with the wrong number of fields.
    #[error("line {line}: {got} fields, the header has {want}")]
    Width {
        /// 1-based line.
        line: u64,
        /// Fields found.
        got: usize,
        /// Fields in the header.
        want: usize,
    },
    /// A numeric column holding something that is not a number.
    #[error("line {line}, column {column:?}: {value:?} is not a number")]
    NotNumeric {
        /// 1-based line.
        line: u64,
        /// The column.
        column: String,
        /// The text found.
        value: String,
    },
    /// NaN or an infinity.
    #[error(
        "line {line}, column {column:?}: {value:?} is not finite (NaN and infinities are refused)"
    )]
    NotFinite {
        /// 1-based line.
        line: u64,
        /// The column.
        column: String,
        /// The text found.
        value: String,
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
    /// A finite number; standardised for gradient-trained models.
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

    /// Reads a `.csv` or `.jsonl`/`.ndjson` file (by extension; CSV otherwise).
    pub fn read(path: &Path, schema: &Schema) -> Result<Table, DataError> {
        Table::read_with(path, schema, false)
    }

    /// Reads rows to predict: the target column may be absent (its cells read as empty).
    pub fn read_for_prediction(path: &Path, schema: &Schema) -> Result<Table, DataError> {
        Table::read_with(path, schema, true)
    }

    fn read_with(path: &Path, schema: &Schema, target_optional: bool) -> Result<Table, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Table::parse(path, &bytes, schema, target_optional)
    }

    /// Parses a file's bytes (CSV, or JSON lines for `.jsonl`/`.ndjson` paths). A large CSV
    /// without quoted fields is parsed by several threads, each taking a run of whole lines; the
    /// parts are joined in file order, and the first error in file order is the one reported.
    pub fn parse(
        path: &Path,
        bytes: &[u8],
        schema: &Schema,
        target_optional: bool,
    ) -> Result<Table, DataError> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let table = if matches!(ext, "jsonl" | "ndjson") {
            Table::json_lines(bytes, schema, target_optional)?
        } else {
            Table::csv_bytes(bytes, schema, target_optional)?
        };
        if table.rows() == 0 {
            return Err(DataError::Empty(path.display().to_string()));
        }
        Ok(table)
    }

    /// CSV held in memory. Files with quotes, lone carriage returns or a blank first line go
    /// through the `csv` crate alone; the rest (nearly every data file) are split into lines and
    /// fields directly, which reads the same table, and in parallel when large.
    fn csv_bytes(bytes: &[u8], schema: &Schema, target_optional: bool) -> Result<Table, DataError> {
        const PARALLEL_MIN: usize = 1 << 20;
        let plain = memchr::memchr(b'"', bytes).is_none()
            && !matches!(bytes.first(), Some(b'\n' | b'\r'))
            && memchr::memchr_iter(b'\r', bytes).all(|i| bytes.get(i + 1) == Some(&b'\n'));
        if !plain {
            return Table::csv(bytes, schema, target_optional);
        }
        let header_end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |p| p + 1);
        let body = &bytes[header_end..];
        let mut header = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(&bytes[..header_end]);
        let (width, index) = header_index(&mut header, schema, target_optional)?;
        let threads = if body.len() < PARALLEL_MIN {
            1
        } else {
            crate::kernels::threads()
        };
        // Cut the body at line ends into roughly equal runs; note each run's first line number.
        let mut runs = Vec::new();
        let (mut start, mut line) = (0usize, 2u64);
        for t in 1..=threads {
            let target = body.len() * t / threads;
            let end = if t == threads {
                body.len()
            } else {
                body[target.max(start)..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(body.len(), |p| target.max(start) + p + 1)
            };
            if end > start {
                runs.push((line, &body[start..end]));
                line += memchr::memchr_iter(b'\n', &body[start..end]).count() as u64;
                start = end;
            }
        }
        let read =
            |&(first, run): &(u64, &[u8])| Table::plain_rows(run, first, schema, &index, width);
        let parts: Vec<Result<Table, DataError>> = if runs.len() <= 1 {
            runs.iter().map(read).collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = runs.iter().map(|r| s.spawn(move || read(r))).collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(DataError::Empty("a parser thread panicked".into()))
                        })
                    })
                    .collect()
            })
        };
        let mut parts = parts.into_iter();
        let mut table = parts
            .next()
            .unwrap_or_else(|| Ok(Table::empty(schema, 0)))?;
        for part in parts {
            table.append(part?);
        }
        Ok(table)
    }

    /// Header-less CSV rows without quotes or lone carriage returns, whose first line is
    /// `first`: records are the non-blank lines, fields what lies between commas, as the `csv`
    /// crate reads them. Text that is not UTF-8 is handed to the `csv` crate for its error.
    fn plain_rows(
        run: &[u8],
        first: u64,
        schema: &Schema,
        index: &ColumnIndex,
        width: usize,
    ) -> Result<Table, DataError> {
        let Ok(text) = std::str::from_utf8(run) else {
            let mut csv = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(run);
            return Table::csv_records(&mut csv, first - 1, schema, index, width);
        };
        let lines = memchr::memchr_iter(b'\n', run).count() + 1;
        let mut table = Table::empty(schema, lines);
        let mut fields: Vec<&str> = Vec::with_capacity(width);
        let mut line = first;
        // One pass over the bytes; commas and line feeds are ASCII, so every cut is a char
        // boundary of the UTF-8 text.
        let mut record = |fields: &mut Vec<&str>, line: u64| -> Result<(), DataError> {
            if fields.len() != width {
                return Err(DataError::Width {
                    line,
                    got: fields.len(),
                    want: width,
                });
            }
            table.push(schema, index, line, fields)?;
            fields.clear();
            Ok(())
        };
        let mut from = 0;
        for (i, &b) in text.as_bytes().iter().enumerate() {
            if b == b',' {
                fields.push(field(&text[from..i]));
                from = i + 1;
            } else if b == b'\n' {
                let end = if i > from && text.as_bytes()[i - 1] == b'\r' {
                    i - 1
                } else {
                    i
                };
                // The csv crate skips blank lines; a line of spaces is a record.
                if !(fields.is_empty() && end == from) {
                    fields.push(field(&text[from..end]));
                    record(&mut fields, line)?;
                }
                line += 1;
                from = i + 1;
            }
        }
        if from < text.len() || !fields.is_empty() {
            fields.push(field(&text[from..]));
            record(&mut fields, line)?;
        }
        Ok(table)
    }

    /// The records left in `csv`, whose line numbers are `offset` plus the reader's own.
    fn csv_records<R: std::io::Read>(
        csv: &mut csv::Reader<R>,
        offset: u64,
        schema: &Schema,
        index: &ColumnIndex,
        width: usize,
    ) -> Result<Table, DataError> {
        let mut table = Table::empty(schema, 0);
        let mut record = csv::StringRecord::new();
        let mut line = offset.max(1);
        loop {
            match csv.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => return Err(syntax(line + 1, e)),
            }
            line = record.position().map_or(line + 1, |p| offset + p.line());
            if record.len() != width {
                return Err(DataError::Width {
                    line,
                    got: record.len(),
                    want: width,
                });
            }
            let fields: Vec<&str> = record.iter().map(str::trim).collect();
            table.push(schema, index, line, &fields)?;
        }
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

    fn csv(
        reader: impl std::io::Read,
        schema: &Schema,
        target_optional: bool,
    ) -> Result<Table, DataError> {
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(reader);
        let (width, index) = header_index(&mut csv, schema, target_optional)?;
        Table::csv_records(&mut csv, 0, schema, &index, width)
    }

    /// Reads one JSON object per line; blank lines are skipped.
    pub fn from_json_lines(reader: impl BufRead, schema: &Schema) -> Result<Table, DataError> {
        Table::json_lines(reader, schema, false)
    }

    fn json_lines(
        reader: impl BufRead,
        schema: &Schema,
        target_optional: bool,
    ) -> Result<Table, DataError> {
        let mut table = Table::empty(schema, 0);
        for (n, text) in reader.lines().enumerate() {
            let line = n as u64 + 1;
            let text = text.map_err(|e| syntax(line, e))?;
            if text.trim().is_empty() {
                continue;
            }
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&text).map_err(|e| syntax(line, e))?;
            let names: Vec<String> = object.keys().cloned().collect();
            let index = column_index(schema, &names, line, target_optional)?;
            let values: Vec<String> = names
                .iter()
                .map(|k| match &object[k] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                })
                .collect();
            let fields: Vec<&str> = values.iter().map(String::as_str).collect();
            table.push(schema, &index, line, &fields)?;
        }
        Ok(table)
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
        line: u64,
        fields: &[&str],
    ) -> Result<(), DataError> {
        for (k, (values, &at)) in self.features.iter_mut().zip(&index.features).enumerate() {
            let text = fields.get(at).copied().unwrap_or("");
            match values {
                Values::Num(v) => match finite(text) {
                    Some(x) => v.push(x),
                    // The column's name is looked up only for the error.
                    None => {
                        let column = schema.features().nth(k).map_or("", |c| c.name.as_str());
                        return Err(number_error(text, column, line));
                    }
                },
                Values::Cat(v) => v.push(text.to_owned()),
            }
        }
        let target = index
            .target
            .and_then(|i| fields.get(i))
            .map_or(String::new(), |t| (*t).to_owned());
        if index.target.is_some() && index.target_numeric {
            parse_number(&target, &schema.target, line)?;
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

/// The header row's width and where the schema's columns stand in it (names trimmed).
fn header_index<R: std::io::Read>(
    csv: &mut csv::Reader<R>,
    schema: &Schema,
    target_optional: bool,
) -> Result<(usize, ColumnIndex), DataError> {
    let header = csv.headers().map_err(|e| syntax(1, e))?;
    if header.is_empty() || (header.len() == 1 && header.get(0) == Some("")) {
        return Err(DataError::Empty("csv".into()));
    }
    let names: Vec<String> = header.iter().map(|h| h.trim().to_owned()).collect();
    Ok((
        names.len(),
        column_index(schema, &names, 1, target_optional)?,
    ))
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

/// A field without surrounding whitespace (the common case is checked first, cheaply).
fn field(text: &str) -> &str {
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => text,
        _ => text.trim(),
    }
}

fn parse_number(text: &str, column: &str, line: u64) -> Result<f64, DataError> {
    finite(text).ok_or_else(|| number_error(text, column, line))
}

/// A cell's finite number, if it holds one.
fn finite(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Why `text` is not a finite number.
fn number_error(text: &str, column: &str, line: u64) -> DataError {
    let (line, column, value) = (line, column.to_owned(), text.to_owned());
    if text.parse::<f64>().is_ok() {
        DataError::NotFinite {
            line,
            column,
            value,
        }
    } else {
        DataError::NotNumeric {
            line,
            column,
            value,
        }
    }
}

fn syntax(line: u64, e: impl std::fmt::Display) -> DataError {
    DataError::Syntax {
        line,
        message: e.to_string(),
    }
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
        crate::kernels::set_threads(3);
        let parallel =
            Table::parse(Path::new("x.csv"), text.as_bytes(), &schema(), false).expect("parallel");
        let sequential = Table::csv(text.as_bytes(), &schema(), false).expect("csv crate");
        assert_eq!(parallel.features, sequential.features);
        assert_eq!(parallel.target, sequential.target);
        let mut lines: Vec<&str> = text.lines().collect();
        lines[50_000] = "oops,f,a";
        lines[55_000] = "1,f";
        let bad = lines.join("\n");
        let err = Table::parse(Path::new("x.csv"), bad.as_bytes(), &schema(), false)
            .expect_err("bad row")
            .to_string();
        assert!(err.starts_with("line 50001, column \"age\""), "{err}");
    }

    proptest::proptest! {
        /// The direct line-and-comma reader reads what the `csv` crate reads, errors included
        /// (blank lines, CRLF, spaces, short and long rows, bad numbers, non-ASCII text).
        #[test]
        fn the_plain_reader_agrees_with_the_csv_crate(
            body in proptest::collection::vec(
                proptest::sample::select(vec![
                    "1", "2.5", "-3e2", ",", ",", ",", "\n", "\n", "\r\n", " ", "f", "m", "a",
                    "b", "\u{e9}", "x", "NaN", "",
                ]),
                0..60,
            ),
            header in proptest::sample::select(vec!["age,sex,y\n", "sex, y ,age\r\n", "age,sex,y"]),
        ) {
            let text = format!("{header}{}", body.concat());
            let plain = Table::parse(Path::new("x.csv"), text.as_bytes(), &schema(), false);
            let crate_read = Table::csv(text.as_bytes(), &schema(), false).and_then(|t| {
                if t.rows() == 0 { Err(DataError::Empty("x.csv".into())) } else { Ok(t) }
            });
            match (plain, crate_read) {
                (Ok(a), Ok(b)) => {
                    proptest::prop_assert_eq!(a.features, b.features);
                    proptest::prop_assert_eq!(a.target, b.target);
                }
                // The csv crate numbers lines after a CRLF line end or a blank line too low;
                // the plain reader counts every line, so there only the rest of the message is
                // compared.
                (Err(a), Err(b)) if text.contains('\r') || text.contains("\n\n") => proptest::prop_assert_eq!(
                    a.to_string().split_once([':', ',']).map(|m| m.1.to_owned()),
                    b.to_string().split_once([':', ',']).map(|m| m.1.to_owned())
                ),
                (Err(a), Err(b)) => proptest::prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => proptest::prop_assert!(false, "{text:?}: {:?} vs {:?}", a.map(|t| t.rows()), b.map(|t| t.rows())),
            }
        }
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
