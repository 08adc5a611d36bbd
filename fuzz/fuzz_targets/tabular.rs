//! The tabular reader (CSV, JSON lines, JSON arrays) and the schema check.
//!
//! Input: a format byte (CSV, JSON lines, JSON array), a read-size byte (the streamed reader's
//! source hands out that many bytes per read), then the file. Properties: no panic; the
//! in-memory reader (`Document`) and the streaming one (`Stream`, any read size) agree on the
//! header, every row's line and cells, and the error; every row has the header's width; the
//! summary counts the rows, its Merkle root is the root of `row_leaves` and `rows_root`'s, its
//! inferred schema accepts every row and prints as a declaration that parses back to it; and the
//! same table written in the other format (CSV ↔ JSON lines, every cell a quoted string) reads
//! back as the same cells.

#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use neurodata_fuzz as fx;
use neurodata_tabular::{
    Document, Format, ReadError, Schema, Stream, merkle, row_leaves, rows_root, summarize,
};

type Table = (Vec<String>, Vec<(u64, Vec<String>)>);

/// A source that hands out at most `n` bytes per read.
struct Trickle<'a> {
    bytes: &'a [u8],
    n: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.n.min(buf.len()).min(self.bytes.len());
        buf[..k].copy_from_slice(&self.bytes[..k]);
        self.bytes = &self.bytes[k..];
        Ok(k)
    }
}

fn in_memory(bytes: &[u8], format: Format) -> Result<Table, String> {
    let doc = Document::parse(bytes, format).map_err(|e| e.to_string())?;
    let width = doc.header().len();
    let mut rows = Vec::new();
    doc.rows(|row| -> Result<(), ReadError> {
        assert_eq!(row.fields.len(), width, "a row of another width than the header");
        rows.push((row.line, row.fields.iter().map(|f| (*f).to_owned()).collect()));
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok((doc.header().names().to_vec(), rows))
}

fn streamed(bytes: &[u8], format: Format, n: usize) -> Result<Table, String> {
    let stream = Stream::open(Trickle { bytes, n }, format).map_err(|e| e.to_string())?;
    let header = stream.header().names().to_vec();
    let mut rows = Vec::new();
    stream
        .rows(|row| -> Result<(), ReadError> {
            assert_eq!(row.fields.len(), header.len());
            rows.push((row.line, row.fields.iter().map(|f| (*f).to_owned()).collect()));
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok((header, rows))
}

fn quoted(cell: &str) -> String {
    format!("\"{}\"", cell.replace('"', "\"\""))
}

/// The table as CSV, every field quoted.
fn to_csv(names: &[String], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| cells.iter().map(|c| quoted(c)).collect::<Vec<_>>().join(",");
    let mut out = line(names) + "\n";
    for r in rows {
        out += &(line(r) + "\n");
    }
    out
}

/// The table as JSON lines, every cell a string.
fn to_json_lines(names: &[String], rows: &[Vec<String>]) -> String {
    rows.iter()
        .map(|r| {
            let object: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .cloned()
                .zip(r.iter().map(|c| serde_json::Value::String(c.clone())))
                .collect();
            serde_json::Value::Object(object).to_string() + "\n"
        })
        .collect()
}

/// Cells by column name, row by row (JSON reads columns in sorted order).
fn by_name(names: &[String], rows: &[(u64, Vec<String>)]) -> Vec<std::collections::BTreeMap<String, String>> {
    rows.iter()
        .map(|(_, cells)| names.iter().cloned().zip(cells.iter().cloned()).collect())
        .collect()
}

fuzz_target!(init: fx::seed_mode("tabular", fx::seeds::tabular), |data: &[u8]| {
    let mut c = fx::Cursor::new(data);
    let format = Format::ALL[usize::from(c.u8() % 3)];
    let read_size = usize::from(c.u8()).max(1);
    let bytes = c.rest();

    let table = in_memory(bytes, format);
    assert_eq!(table, streamed(bytes, format, read_size), "Document and Stream disagree");
    let Ok((names, rows)) = table else {
        return;
    };

    let summary = summarize(Trickle { bytes, n: read_size }, format, None)
        .expect("a file both readers read summarizes");
    assert_eq!(summary.rows, rows.len() as u64);
    assert_eq!(summary.size, bytes.len() as u64);
    let leaves = row_leaves(bytes, format).expect("leaves");
    assert_eq!(merkle::root(&leaves), summary.rows_root);
    assert_eq!(rows_root(bytes, format).ok(), Some(summary.rows_root));
    let declared = summarize(bytes, format, Some(&summary.schema))
        .expect("the inferred schema accepts every row it was inferred from");
    assert_eq!(declared.rows_root, summary.rows_root);
    let printable = names.iter().all(|n| !n.contains([',', ':']) && n.trim() == n);
    if printable {
        let text = summary
            .schema
            .columns
            .iter()
            .map(|c| format!("{}:{}", c.name, c.kind.name()))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(text.parse::<Schema>().ok(), Some(summary.schema.clone()), "{text:?}");
    }

    let cells: Vec<Vec<String>> = rows.iter().map(|(_, r)| r.clone()).collect();
    let other = match format {
        Format::Csv if !rows.is_empty() => Some((to_json_lines(&names, &cells), Format::JsonLines)),
        Format::JsonLines | Format::JsonArray if names.iter().all(|n| n.trim() == n) => {
            Some((to_csv(&names, &cells), Format::Csv))
        }
        _ => None,
    };
    if let Some((text, other_format)) = other {
        let (other_names, other_rows) = in_memory(text.as_bytes(), other_format)
            .unwrap_or_else(|e| panic!("{other_format} of the same table does not read: {e}\n{text:?}"));
        let mut sorted = names.clone();
        sorted.sort();
        let mut other_sorted = other_names.clone();
        other_sorted.sort();
        assert_eq!(sorted, other_sorted, "{text:?}");
        assert_eq!(
            by_name(&names, &rows),
            by_name(&other_names, &other_rows),
            "the same table in {other_format} reads other cells: {text:?}"
        );
    }
});
