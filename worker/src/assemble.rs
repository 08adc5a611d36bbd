//! One data file from a job's datasets, built the same way by the worker and by every validator
//! (their data hashes must agree for `trainer verify` to accept the run's data): one dataset is
//! its decrypted file unchanged; several of one format are joined in the job's dataset order —
//! CSV with the header once (the headers must be equal), JSON lines one after the other, JSON
//! arrays as JSON lines, one element a line as serde_json writes it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use neurodata_proto::chain::v1 as pb;
use sha2::{Digest as _, Sha256};

/// A data format the trainer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    /// CSV with a header line.
    Csv,
    /// One JSON object a line.
    JsonLines,
    /// One JSON array of objects.
    JsonArray,
}

impl DataFormat {
    /// A listing's format (unspecified: CSV, as listings made before formats were named).
    pub fn of_listing(format: i32) -> Option<DataFormat> {
        match pb::DataFormat::try_from(format) {
            Ok(pb::DataFormat::Unspecified | pb::DataFormat::Csv) => Some(DataFormat::Csv),
            Ok(pb::DataFormat::JsonLines) => Some(DataFormat::JsonLines),
            Ok(pb::DataFormat::JsonArray) => Some(DataFormat::JsonArray),
            Err(_) => None,
        }
    }

    /// The extension the trainer reads the format by.
    pub fn extension(self) -> &'static str {
        match self {
            DataFormat::Csv => "csv",
            DataFormat::JsonLines => "jsonl",
            DataFormat::JsonArray => "json",
        }
    }
}

/// One decrypted, checked dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The dataset.
    pub dataset_id: u64,
    /// Its plaintext file.
    pub path: PathBuf,
    /// Its listed format.
    pub format: DataFormat,
}

/// The datasets do not join into one file.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// No dataset.
    #[error("a job needs at least one dataset")]
    Empty,
    /// Formats differ.
    #[error(
        "dataset {a} is {fa:?} and dataset {b} is {fb:?}: datasets of one job must share a format"
    )]
    MixedFormats {
        /// One dataset.
        a: u64,
        /// Its format.
        fa: DataFormat,
        /// Another.
        b: u64,
        /// Its format.
        fb: DataFormat,
    },
    /// CSV headers differ.
    #[error(
        "dataset {dataset}'s CSV header differs from dataset {first}'s: the rows would not line up"
    )]
    HeaderMismatch {
        /// The first dataset.
        first: u64,
        /// The one that differs.
        dataset: u64,
    },
    /// A JSON array dataset is not an array.
    #[error("dataset {dataset} is not a JSON array: {reason}")]
    NotAnArray {
        /// The dataset.
        dataset: u64,
        /// The parser's message.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AssembleError + '_ {
    move |source| AssembleError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The first line of `bytes` (without its line end) and the rest after it.
fn split_header(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|b| *b == b'\n') {
        Some(i) => {
            let header = &bytes[..i];
            (
                header.strip_suffix(b"\r").unwrap_or(header),
                &bytes[i + 1..],
            )
        }
        None => (bytes, &[]),
    }
}

/// Joins `pieces` into `dir/data.<ext>`; returns the file and its hex SHA-256. The pieces are
/// left in place (the caller deletes the whole data directory when done).
pub fn assemble(pieces: &[Piece], dir: &Path) -> Result<(PathBuf, String), AssembleError> {
    let first = pieces.first().ok_or(AssembleError::Empty)?;
    for p in pieces {
        if p.format != first.format {
            return Err(AssembleError::MixedFormats {
                a: first.dataset_id,
                fa: first.format,
                b: p.dataset_id,
                fb: p.format,
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (format, joined) = match (pieces, first.format) {
        ([_], f) => (f, None),
        (_, DataFormat::JsonArray) => (DataFormat::JsonLines, Some(())),
        (_, f) => (f, Some(())),
    };
    let out = dir.join(format!("data.{}", format.extension()));
    if joined.is_none() {
        std::fs::copy(&first.path, &out).map_err(io(&out))?;
    } else {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&out).map_err(io(&out))?);
        let mut first_header: Option<Vec<u8>> = None;
        for p in pieces {
            let bytes = std::fs::read(&p.path).map_err(io(&p.path))?;
            match first.format {
                DataFormat::Csv => {
                    let (header, rows) = split_header(&bytes);
                    match &first_header {
                        None => {
                            w.write_all(header).map_err(io(&out))?;
                            w.write_all(b"\n").map_err(io(&out))?;
                            first_header = Some(header.to_vec());
                        }
                        Some(h) if h.as_slice() != header => {
                            return Err(AssembleError::HeaderMismatch {
                                first: first.dataset_id,
                                dataset: p.dataset_id,
                            });
                        }
                        Some(_) => {}
                    }
                    write_lines(&mut w, rows).map_err(io(&out))?;
                }
                DataFormat::JsonLines => write_lines(&mut w, &bytes).map_err(io(&out))?,
                DataFormat::JsonArray => {
                    let rows: Vec<serde_json::Value> =
                        serde_json::from_slice(&bytes).map_err(|e| AssembleError::NotAnArray {
                            dataset: p.dataset_id,
                            reason: e.to_string(),
                        })?;
                    for row in rows {
                        let line =
                            serde_json::to_string(&row).map_err(|e| AssembleError::NotAnArray {
                                dataset: p.dataset_id,
                                reason: e.to_string(),
                            })?;
                        w.write_all(line.as_bytes()).map_err(io(&out))?;
                        w.write_all(b"\n").map_err(io(&out))?;
                    }
                }
            }
        }
        w.into_inner()
            .map_err(|e| AssembleError::Io {
                path: out.display().to_string(),
                source: e.into_error(),
            })?
            .sync_all()
            .map_err(io(&out))?;
    }
    let sha = sha256_file(&out).map_err(io(&out))?;
    Ok((out, sha))
}

/// Writes `bytes` ending with a line end (one added if missing; nothing for empty input).
fn write_lines(w: &mut impl std::io::Write, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    w.write_all(bytes)?;
    if !bytes.ends_with(b"\n") {
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(dir: &Path, id: u64, text: &str, format: DataFormat) -> Piece {
        let path = dir.join(format!("{id}.in"));
        std::fs::write(&path, text).unwrap();
        Piece {
            dataset_id: id,
            path,
            format,
        }
    }

    #[test]
    fn one_dataset_is_its_file_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let p = piece(dir.path(), 1, "a,b\n1,2", DataFormat::Csv);
        let (out, sha) = assemble(&[p], &dir.path().join("data")).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a,b\n1,2");
        assert_eq!(sha, hex::encode(Sha256::digest(b"a,b\n1,2")));
        assert!(out.ends_with("data.csv"));
    }

    #[test]
    fn csv_datasets_join_with_the_header_once_in_job_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = piece(dir.path(), 1, "a,b\r\n1,2", DataFormat::Csv);
        let b = piece(dir.path(), 2, "a,b\n3,4\n", DataFormat::Csv);
        let (out, _) = assemble(&[a, b], &dir.path().join("data")).unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "a,b\n1,2\n3,4\n");
    }

    #[test]
    fn csv_datasets_with_other_headers_do_not_join() {
        let dir = tempfile::tempdir().unwrap();
        let a = piece(dir.path(), 1, "a,b\n1,2\n", DataFormat::Csv);
        let b = piece(dir.path(), 2, "b,a\n3,4\n", DataFormat::Csv);
        assert!(matches!(
            assemble(&[a, b], &dir.path().join("data")),
            Err(AssembleError::HeaderMismatch { dataset: 2, .. })
        ));
    }

    #[test]
    fn json_arrays_join_as_json_lines_and_formats_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let a = piece(dir.path(), 1, r#"[{"a":1}]"#, DataFormat::JsonArray);
        let b = piece(dir.path(), 2, r#"[{"a":2},{"a":3}]"#, DataFormat::JsonArray);
        let (out, _) = assemble(&[a.clone(), b], &dir.path().join("data")).unwrap();
        assert!(out.ends_with("data.jsonl"));
        assert_eq!(
            std::fs::read_to_string(out).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"
        );
        let c = piece(dir.path(), 3, "x\n", DataFormat::Csv);
        assert!(matches!(
            assemble(&[a, c], &dir.path().join("data2")),
            Err(AssembleError::MixedFormats { .. })
        ));
    }
}
