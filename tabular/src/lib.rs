//! The one reader of NeuroData's tabular files: what `ndctl dataset upload` lists (row count,
//! schema, plaintext SHA-256) and what the trainer trains on are read by this crate, so a
//! listing's row count is the number of rows the trainer reads from the same bytes.
//!
//! Start reading at [`Document`] (a file held in memory: the trainer) and [`Stream`] (a file of
//! any size in constant memory: `ndctl`); both hand each data [`Row`] to a visitor and share one
//! record scanner. [`summarize`] is what a listing states about a file, [`schema`] the column
//! types a listing declares and their inference.
//!
//! # The rules
//!
//! A file is CSV, or JSON lines when its name ends in `.jsonl` or `.ndjson` ([`Format::of_path`]).
//! It must be UTF-8; a byte order mark at its start is skipped.
//!
//! CSV:
//! - **Line ends.** A record ends at a line feed, a carriage return + line feed (CRLF), or a lone
//!   carriage return; the three may be mixed. Line numbers in errors count these line ends, so
//!   they are the line numbers an editor shows.
//! - **Last line.** The last record needs no line end: a file missing its trailing newline reads
//!   the same rows as one that has it.
//! - **Blank lines.** A line holding nothing, or only spaces and tabs, is not a record, wherever it
//!   stands (before the header, between rows, at the end). A line of commas is a record.
//! - **Header.** The first record names the columns. Names are trimmed, non-empty and distinct.
//!   Every later record is a row and must have as many fields as the header.
//! - **Fields.** Fields are separated by commas. A field whose first character (after spaces or
//!   tabs) is a double quote is quoted: up to the next lone quote it may hold commas, line ends and
//!   doubled quotes (`""` reads as `"`); after the closing quote only spaces or tabs may come before
//!   the comma or line end. A quote elsewhere in an unquoted field is an ordinary character. A
//!   quoted field still open at the end of the file is an error, not a field running to the end.
//! - **Whitespace.** Every field, quoted or not, is trimmed of surrounding whitespace: quotes
//!   protect commas, quotes and line ends, not leading or trailing spaces.
//!
//! JSON lines: one JSON object per line (lines end at a line feed; a CRLF's carriage return is
//! JSON whitespace); blank lines are skipped. The first object's keys, sorted, are the header;
//! every object must have exactly those keys. A string value is its text, `null` the empty text,
//! any other value its JSON text; every value is trimmed, as CSV fields are.
//!
//! Errors ([`ReadError`]) name the line, the field or column, and the reason.

mod document;
mod error;
mod json_lines;
pub mod merkle;
mod records;
pub mod schema;
mod stream;
mod summary;

use std::path::Path;

pub use document::Document;
pub use error::{CellError, ReadError, SchemaError};
pub use schema::{ColumnType, Schema, number};
pub use stream::Stream;
pub use summary::{Summary, summarize};

/// How a file's records are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl Format {
    /// JSON lines for a `.jsonl` or `.ndjson` file, CSV for any other name.
    pub fn of_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson") => Format::JsonLines,
            _ => Format::Csv,
        }
    }
}

/// The column names of a file, in file order (sorted keys for JSON lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    names: Vec<String>,
    line: u64,
}

impl Header {
    /// Checks the names read on `line`: each non-empty, none twice.
    fn new(names: Vec<String>, line: u64) -> Result<Header, ReadError> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                return Err(ReadError::UnnamedColumn {
                    line,
                    column: i + 1,
                });
            }
            if !seen.insert(name.as_str()) {
                return Err(ReadError::DuplicateColumn {
                    line,
                    name: name.clone(),
                });
            }
        }
        Ok(Header { names, line })
    }

    /// The names, trimmed.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Columns in the header.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Never true for a header that was read (a file without columns has no header); here for
    /// the `len`/`is_empty` convention.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The 1-based line the header was read from.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Where the column `name` stands, if the header has it.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// One data row: the line it starts on and its trimmed fields, in header order.
#[derive(Debug, Clone, Copy)]
pub struct Row<'r> {
    /// 1-based line of the row's first character.
    pub line: u64,
    /// One field per header column.
    pub fields: &'r [&'r str],
}

/// A table as text, for tests: the header's names and each row's line and fields.
#[cfg(test)]
pub(crate) type TableText = (Vec<String>, Vec<(u64, Vec<String>)>);

#[cfg(test)]
mod tests {
    use super::*;

    /// The header and rows (line, fields) of `text`, read in memory and as a stream; both must
    /// agree, errors included.
    fn read(text: &str, format: Format) -> Result<TableText, String> {
        let collect = |header: &Header, rows: &mut Vec<(u64, Vec<String>)>, row: Row<'_>| {
            assert_eq!(row.fields.len(), header.len());
            rows.push((
                row.line,
                row.fields.iter().map(|f| (*f).to_owned()).collect(),
            ));
        };
        let in_memory = (|| {
            let doc = Document::parse(text.as_bytes(), format)?;
            let mut rows = Vec::new();
            doc.rows(|row| -> Result<(), ReadError> {
                collect(doc.header(), &mut rows, row);
                Ok(())
            })?;
            Ok::<_, ReadError>((doc.header().names().to_vec(), rows))
        })()
        .map_err(|e| e.to_string());
        let streamed = (|| {
            let stream = Stream::open(text.as_bytes(), format)?;
            let header = stream.header().clone();
            let mut rows = Vec::new();
            stream.rows(|row| -> Result<(), ReadError> {
                collect(&header, &mut rows, row);
                Ok(())
            })?;
            Ok::<_, ReadError>((header.names().to_vec(), rows))
        })()
        .map_err(|e| e.to_string());
        assert_eq!(in_memory, streamed, "{text:?}");
        in_memory
    }

    fn csv(text: &str) -> Result<TableText, String> {
        read(text, Format::Csv)
    }

    fn rows(text: &str) -> Vec<(u64, Vec<String>)> {
        csv(text)
            .map(|(_, rows)| rows)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn row(line: u64, fields: &[&str]) -> (u64, Vec<String>) {
        (line, fields.iter().map(|f| (*f).to_owned()).collect())
    }

    #[test]
    fn quoted_fields_hold_commas_and_doubled_quotes() {
        assert_eq!(
            rows("name,note\n\"Smith, J\",\"said \"\"hi\"\"\"\n"),
            [row(2, &["Smith, J", "said \"hi\""])]
        );
    }

    #[test]
    fn a_quoted_field_may_span_lines_and_the_next_row_keeps_its_own_line_number() {
        assert_eq!(
            rows("id,note\n1,\"two\nlines\"\n2,\"crlf\r\ninside\"\r\n3,x\n"),
            [
                row(2, &["1", "two\nlines"]),
                row(4, &["2", "crlf\r\ninside"]),
                row(6, &["3", "x"]),
            ]
        );
    }

    #[test]
    fn crlf_line_ends_read_the_same_rows_as_lf() {
        assert_eq!(rows("a,b\r\n1,2\r\n3,4\r\n"), rows("a,b\n1,2\n3,4\n"));
        assert_eq!(csv("a , b\r\n").expect("header").0, ["a", "b"]);
    }

    #[test]
    fn blank_lines_are_not_rows_wherever_they_stand() {
        assert_eq!(
            rows("\n \r\na,b\n\n1,2\n\t\n \n3,4\n\n\n"),
            [row(5, &["1", "2"]), row(8, &["3", "4"])]
        );
        // A line of commas is a record of empty fields, not a blank line.
        assert_eq!(rows("a,b\n,\n"), [row(2, &["", ""])]);
    }

    #[test]
    fn a_missing_trailing_newline_loses_no_row() {
        assert_eq!(rows("a,b\n1,2\n3,4"), rows("a,b\n1,2\n3,4\n"));
        assert_eq!(rows("a,b\n1,\"x\""), [row(2, &["1", "x"])]);
        assert_eq!(rows("a,b\r\n1,2\r"), [row(2, &["1", "2"])]);
    }

    #[test]
    fn fields_are_trimmed_inside_and_outside_quotes() {
        assert_eq!(rows("a,b\n  1 , \" x \"  \n"), [row(2, &["1", "x"])]);
        assert_eq!(
            rows("a,b\n1,x\"y\n"),
            [row(2, &["1", "x\"y"])],
            "a quote mid-field is text"
        );
    }

    #[test]
    fn a_header_alone_is_a_table_of_no_rows() {
        for text in ["a,b", "a,b\n", "a,b\r\n\r\n"] {
            assert_eq!(
                csv(text),
                Ok((vec!["a".into(), "b".into()], vec![])),
                "{text:?}"
            );
        }
    }

    #[test]
    fn malformed_files_name_the_line_the_field_and_the_reason() {
        let cases = [
            ("", "the file is empty: a table needs a header row"),
            ("\n  \r\n", "the file is empty: a table needs a header row"),
            ("a,b\n1,2\n3\n", "line 3: 1 fields, the header has 2"),
            ("a,b\r\n\r\n1,2,3\r\n", "line 3: 3 fields, the header has 2"),
            (
                "a,b\n1,\"x\ny\"\n2,3,4\n",
                "line 4: 3 fields, the header has 2",
            ),
            (
                "a,b\n1,2\n3,\"open\n4,5\n",
                "line 3, field 2: the quoted field opened here is never closed",
            ),
            (
                "a,b\n1,\"x\"y\n",
                "line 2, field 2: text after the closing quote (a quote inside a quoted field is written twice, \"\")",
            ),
            ("a,,b\n", "line 1: header column 2 has no name"),
            ("a, a\n", "line 1: the header names column \"a\" twice"),
        ];
        for (text, want) in cases {
            assert_eq!(csv(text).map(|_| ()), Err(want.to_owned()), "{text:?}");
        }
        let err = Document::parse(b"a,b\n1,\xff\n", Format::Csv)
            .expect("header")
            .row_count()
            .expect_err("not UTF-8");
        assert_eq!(err.to_string(), "line 2, field 2: the text is not UTF-8");
    }

    #[test]
    fn json_lines_read_the_same_cells_as_csv() {
        let json = "{\"b\":\" x \",\"a\":1.5}\r\n\n{\"a\":null,\"b\":true}";
        assert_eq!(
            read(json, Format::JsonLines),
            Ok((
                vec!["a".into(), "b".into()],
                vec![row(1, &["1.5", "x"]), row(3, &["", "true"])]
            ))
        );
        assert_eq!(
            read("{\"a\":1}\n{\"a\":2,\"c\":3}\n", Format::JsonLines).map(|_| ()),
            Err(
                "line 2: keys differ from the first object's: missing [], unexpected [\"c\"]"
                    .into()
            )
        );
        let err = read("{\"a\":1}\n[1]\n", Format::JsonLines).expect_err("not an object");
        assert!(err.starts_with("line 2: "), "{err}");
        assert_eq!(
            read("\n{}\n", Format::JsonLines).map(|_| ()),
            Err("line 2: the first object has no keys, so the file has no columns".into())
        );
    }

    #[test]
    fn the_format_follows_the_file_name() {
        assert_eq!(
            Format::of_path(Path::new("d/rows.jsonl")),
            Format::JsonLines
        );
        assert_eq!(Format::of_path(Path::new("rows.ndjson")), Format::JsonLines);
        assert_eq!(Format::of_path(Path::new("rows.csv")), Format::Csv);
        assert_eq!(Format::of_path(Path::new("rows")), Format::Csv);
    }
}
