//! The one reader of NeuroData's tabular files: what `ndctl dataset upload` lists (row count,
//! schema, plaintext SHA-256, the Merkle root over the rows) and what the trainer trains on are
//! read by this crate, so a listing's row count is the number of rows the trainer reads from the
//! same bytes, and its rows root commits to the cells the trainer reads.
//!
//! Start reading at [`Document`] (a file held in memory: the trainer) and [`Stream`] (a file of
//! any size in constant memory: `ndctl`); both hand each data [`Row`] to a visitor and share one
//! scanner per format. [`summarize`] is what a listing states about a file, [`schema`] the column
//! types a listing declares and their inference, [`merkle`] the tree over the rows ([`row_leaves`]
//! gives a file's leaves).
//!
//! # The rules
//!
//! A file is CSV, JSON lines, or a JSON array ([`Format`]; by name, [`Format::of_path`]: `.json`
//! is a JSON array, `.jsonl` or `.ndjson` JSON lines, any other name CSV). It must be UTF-8
//! without a byte order mark: a file starting with one is refused
//! ([`ReadError::ByteOrderMark`]), not skipped, since the mark is part of the bytes whose SHA-256
//! is listed and other tools read it into the first column's name.
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
//! - **Types.** Every cell is text; a column's type is declared or inferred from its texts
//!   ([`schema`]): a column of numbers with one word in it is inferred as text (a category or a
//!   string), and a declared `int` or `float` column refuses the word.
//!
//! JSON lines: one JSON object per line (lines end at a line feed; a CRLF's carriage return is
//! JSON whitespace); blank lines are skipped. A JSON array: one array whose elements are objects,
//! laid out freely over lines (a row's line is the line of its `{`); it is read one object at a
//! time, in constant memory. In both:
//! - **Header.** The first object's keys, sorted (byte order), are the header: every reader gives
//!   a row's cells in that order, and a row's Merkle leaf hashes them in it. Every object must
//!   have exactly those keys, each once.
//! - **Flat values.** A value is a string, a number, a boolean or `null`; an object or array as a
//!   value is refused ([`ReadError::Nested`]).
//! - **One type per column.** All of a column's values other than `null` have one JSON type: a
//!   number in one row and a string in another is refused ([`ReadError::MixedTypes`]) rather than
//!   read as text, since it is most often a mistake in the export (`"42"` among `42`s).
//! - **Cells.** A string is its text, `null` the empty text, a number or boolean its JSON text
//!   (as serde_json writes it: `1.50` reads as `1.5`); every value is trimmed, as CSV fields are.
//!
//! Errors ([`ReadError`]) name the line, the field or column, and the reason.

mod document;
mod error;
mod json;
mod json_array;
mod json_lines;
pub mod merkle;
mod records;
pub mod schema;
mod stream;
mod summary;

use std::path::Path;

pub use document::Document;
pub use error::{CellError, ReadError, SchemaError, UnknownFormat};
pub use schema::{ColumnType, Schema, number};
pub use stream::Stream;
pub use summary::{Summary, row_leaves, rows_root, summarize};

/// How a file's records are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    JsonLines,
    /// One JSON array of objects.
    JsonArray,
}

impl Format {
    /// Every format, in the order of their names in help texts.
    pub const ALL: [Format; 3] = [Format::Csv, Format::JsonLines, Format::JsonArray];

    /// A JSON array for a `.json` file, JSON lines for `.jsonl` or `.ndjson`, CSV for any other
    /// name (the extension's case aside).
    pub fn of_path(path: &Path) -> Format {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext.eq_ignore_ascii_case("json") {
            Format::JsonArray
        } else if ext.eq_ignore_ascii_case("jsonl") || ext.eq_ignore_ascii_case("ndjson") {
            Format::JsonLines
        } else {
            Format::Csv
        }
    }

    /// The format's stable short name (`csv`, `jsonl`, `json`): what `--format` takes and
    /// listings print. [`str::parse`] reads it back.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
            Format::JsonArray => "json",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = UnknownFormat;

    /// A name of [`Format::name`].
    fn from_str(name: &str) -> Result<Format, UnknownFormat> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| UnknownFormat {
                name: name.to_owned(),
            })
    }
}

/// The column names of a file, in file order (sorted keys for the JSON formats).
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

impl<'r> Row<'r> {
    /// A CSV record as a row, refused unless it has the header's `want` fields.
    pub(crate) fn csv(line: u64, fields: &'r [&'r str], want: usize) -> Result<Self, ReadError> {
        if fields.len() != want {
            return Err(ReadError::Width {
                line,
                got: fields.len(),
                want,
            });
        }
        Ok(Row { line, fields })
    }
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
        let json = "{\"b\":\" x \",\"a\":1.5,\"c\":true}\r\n\n{\"a\":null,\"b\":\"y\",\"c\":false}";
        assert_eq!(
            read(json, Format::JsonLines),
            Ok((
                vec!["a".into(), "b".into(), "c".into()],
                vec![row(1, &["1.5", "x", "true"]), row(3, &["", "y", "false"])]
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
    fn a_json_array_laid_out_over_lines_reads_the_rows_of_the_same_json_lines() {
        let array =
            "\n [\n  {\"b\": \"x\",\n   \"a\": 1.5},\n  {\"a\": null, \"b\": \"y, ]}\"}\r\n]\n\n";
        let lines = "{\"b\":\"x\",\"a\":1.5}\n{\"a\":null,\"b\":\"y, ]}\"}\n";
        let (header, rows) = read(array, Format::JsonArray).expect("array");
        assert_eq!(header, ["a", "b"]);
        assert_eq!(rows, [row(3, &["1.5", "x"]), row(5, &["", "y, ]}"])]);
        let (_, same) = read(lines, Format::JsonLines).expect("lines");
        let cells = |rows: Vec<(u64, Vec<String>)>| -> Vec<Vec<String>> {
            rows.into_iter().map(|(_, cells)| cells).collect()
        };
        assert_eq!(cells(rows), cells(same));
        assert_eq!(
            read("[{\"a\":1}]", Format::JsonArray),
            Ok((vec!["a".into()], vec![row(1, &["1"])]))
        );
    }

    /// `(text, reason)` refused in both JSON formats: the JSON-lines file is `text`'s objects one
    /// per line, the array `[` + the objects joined by `,\n` + `]` (so line numbers agree).
    #[test]
    fn malformed_json_rows_name_the_line_the_column_and_the_reason() {
        let cases: [(&[&str], &str); 8] = [
            (
                &["{\"a\":1,\"b\":\"x\"}", "{\"a\":2,\"b\":{\"c\":1}}"],
                "line 2, column \"b\": a nested object is not a cell value (the rows must be flat objects: make it a column of its own, or a string)",
            ),
            (
                &["{\"a\":[1,2],\"b\":\"x\"}"],
                "line 1, column \"a\": a nested array is not a cell value (the rows must be flat objects: make it a column of its own, or a string)",
            ),
            (
                &["{\"a\":1}", "{\"a\":null}", "{\"a\":\"forty\"}"],
                "line 3, column \"a\": a string \"forty\" where line 1 holds a number: a column holds one JSON type (null for no value)",
            ),
            (
                &["{\"a\":\"x\"}", "{\"a\":true}"],
                "line 2, column \"a\": a boolean true where line 1 holds a string: a column holds one JSON type (null for no value)",
            ),
            (
                &["{\"a\":null}", "{\"a\":\"7\"}", "{\"a\":7}"],
                "line 3, column \"a\": a number 7 where line 2 holds a string: a column holds one JSON type (null for no value)",
            ),
            (
                &["{\"a\":1,\"b\":2}", "{\"a\":1,\"a\":2}"],
                "line 2: the object has the key \"a\" twice",
            ),
            (
                &["{\"a\":1,\"b\":2}", "{\"b\":3}"],
                "line 2: keys differ from the first object's: missing [\"a\"], unexpected []",
            ),
            (
                &["{\"a\":1}", "{\"a\" 2}"],
                "line 2: expected `:` at column 6",
            ),
        ];
        for (objects, want) in cases {
            let lines = objects.join("\n");
            let array = format!("[{}]", objects.join(",\n"));
            assert_eq!(
                read(&lines, Format::JsonLines).map(|_| ()),
                Err(want.to_owned()),
                "{lines:?}"
            );
            assert_eq!(
                read(&array, Format::JsonArray).map(|_| ()),
                Err(want.to_owned()),
                "{array:?}"
            );
        }
    }

    #[test]
    fn a_malformed_json_array_names_the_line_and_the_reason() {
        let cases = [
            ("", "the file is empty: a table needs a header row"),
            (" \n\t\r\n", "the file is empty: a table needs a header row"),
            (
                "\n[ ]",
                "line 2: the array holds no objects, so the file has no columns",
            ),
            (
                "{\"a\":1}\n{\"a\":2}\n",
                "line 1: a JSON-array file holds one array of objects and starts with [ (one object per line is JSON lines: a .jsonl file)",
            ),
            (
                "[{\"a\":1},\n 2]",
                "line 2: an element of the array is not an object: each row is one flat {...} object",
            ),
            (
                "[{\"a\":1},\n]",
                "line 2: a comma before the closing ] (JSON allows no trailing comma)",
            ),
            (
                "[{\"a\":1}\n{\"a\":2}]",
                "line 2: expected , or ] after an object",
            ),
            (
                "[{\"a\":1},\n{\"a\":2}\n",
                "line 3: the file ends inside the array: it is never closed with ]",
            ),
            (
                "[{\"a\":1},\n{\"a\":\n2",
                "line 2: the object opened here is never closed",
            ),
            (
                "[{\"a\":1}]\n[]",
                "line 2: text after the array's closing ]",
            ),
            (
                "[{\"a\":1},\n{\"a\":\n2,\n\"b\":}]",
                "line 4: expected value at column 5",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                read(text, Format::JsonArray).map(|_| ()),
                Err(want.to_owned()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn text_that_is_not_utf8_names_its_line_in_every_format() {
        let cases: [(&[u8], Format, &str); 3] = [
            (b"a,b\n1,\xff\n", Format::Csv, "line 2, field 2"),
            (
                b"{\"a\":\"x\"}\n{\"a\":\"\xff\"}\n",
                Format::JsonLines,
                "line 2, field 1",
            ),
            (
                b"[{\"a\":\"x\"},\n{\n\"a\":\"\xff\"}]",
                Format::JsonArray,
                "line 3, field 1",
            ),
        ];
        for (bytes, format, at) in cases {
            let err = Document::parse(bytes, format)
                .and_then(|d| d.row_count())
                .expect_err("not UTF-8");
            assert_eq!(err.to_string(), format!("{at}: the text is not UTF-8"));
            let err = Stream::open(bytes, format)
                .and_then(|s| s.rows(|_| -> Result<(), ReadError> { Ok(()) }))
                .expect_err("not UTF-8");
            assert_eq!(err.to_string(), format!("{at}: the text is not UTF-8"));
        }
    }

    #[test]
    fn a_byte_order_mark_is_refused_in_every_format() {
        for (text, format) in [
            ("\u{feff}a,b\n1,2\n", Format::Csv),
            ("\u{feff}{\"a\":1}\n", Format::JsonLines),
            ("\u{feff}[{\"a\":1}]", Format::JsonArray),
        ] {
            assert_eq!(
                read(text, format).map(|_| ()),
                Err("the file starts with a byte order mark: save it as UTF-8 without BOM".into()),
                "{format}"
            );
        }
        // Bytes that only start like one are read as they are (and are not UTF-8 here).
        let err = Document::parse(b"\xef\xbbx,b\n", Format::Csv).expect_err("not UTF-8");
        assert_eq!(err.to_string(), "line 1, field 1: the text is not UTF-8");
    }

    #[test]
    fn the_format_follows_the_file_name() {
        assert_eq!(
            Format::of_path(Path::new("d/rows.jsonl")),
            Format::JsonLines
        );
        assert_eq!(Format::of_path(Path::new("rows.ndjson")), Format::JsonLines);
        assert_eq!(Format::of_path(Path::new("rows.json")), Format::JsonArray);
        assert_eq!(Format::of_path(Path::new("ROWS.JSON")), Format::JsonArray);
        assert_eq!(Format::of_path(Path::new("rows.csv")), Format::Csv);
        assert_eq!(Format::of_path(Path::new("rows")), Format::Csv);
        assert_eq!(Format::of_path(Path::new("rows.json.gz")), Format::Csv);
    }

    #[test]
    fn every_format_reads_back_from_its_name() {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["csv", "jsonl", "json"]);
        for format in Format::ALL {
            assert_eq!(format.name().parse::<Format>(), Ok(format));
            assert_eq!(format.to_string(), format.name());
        }
        assert_eq!(
            "ndjson".parse::<Format>().map_err(|e| e.to_string()),
            Err("format \"ndjson\": expected csv, jsonl or json".into())
        );
    }
}
