//! What a listing states about a file, from one pass over its bytes in constant memory.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::merkle::{self, Hash, RootBuilder};
use crate::schema::{Inference, Schema};
use crate::{Document, Format, Header, ReadError, Stream};

/// What `ndctl dataset upload` lists about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The header.
    pub header: Header,
    /// Data rows: what the trainer reads from the same bytes.
    pub rows: u64,
    /// The declared schema, checked against every row, or the one inferred from every row.
    pub schema: Schema,
    /// SHA-256 of the file's bytes, exactly as read: the listing's plaintext hash, which a buyer
    /// checks the decrypted file against.
    pub sha256: [u8; 32],
    /// Bytes in the file.
    pub size: u64,
    /// The Merkle root over the rows ([`merkle`]): leaf `i` is row `i`'s cells as read, in
    /// header order. The same rows give the same root whatever the format.
    pub rows_root: Hash,
}

/// A source that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Reads `source` to its end: its rows, its schema (`declared`, each row checked against it, or
/// inferred), the SHA-256 of its bytes and the Merkle root over its rows.
pub fn summarize(
    source: impl Read,
    format: Format,
    declared: Option<&Schema>,
) -> Result<Summary, ReadError> {
    let hashing = Hashing {
        inner: source,
        hasher: Sha256::new(),
        size: 0,
    };
    let stream = Stream::open(hashing, format)?;
    let header = stream.header().clone();
    if let Some(declared) = declared {
        declared.check_header(&header)?;
    }
    let mut inference = Inference::new(&header);
    let mut rows = 0u64;
    let mut root = RootBuilder::default();
    let hashing = stream.rows(|row| -> Result<(), ReadError> {
        root.push(merkle::leaf(rows, row.fields));
        rows += 1;
        match declared {
            Some(schema) => schema.check_row(row),
            None => {
                inference.observe(row);
                Ok(())
            }
        }
    })?;
    Ok(Summary {
        header,
        rows,
        schema: declared.cloned().unwrap_or_else(|| inference.schema()),
        sha256: hashing.hasher.finalize().into(),
        size: hashing.size,
        rows_root: root.root(),
    })
}

/// The Merkle root over the rows of `source`, read to its end in constant memory: what a buyer
/// checks a downloaded file against ([`Summary::rows_root`]).
pub fn rows_root(source: impl Read, format: Format) -> Result<Hash, ReadError> {
    let stream = Stream::open(source, format)?;
    let mut root = RootBuilder::default();
    stream.rows(|row| -> Result<(), ReadError> {
        root.push(merkle::leaf(root.len(), row.fields));
        Ok(())
    })?;
    Ok(root.root())
}

/// Every row's Merkle leaf, in file order (leaf `i` is row `i`'s): what a preview proves its
/// rows with ([`merkle::proof`] over these, against [`Summary::rows_root`]).
pub fn row_leaves(bytes: &[u8], format: Format) -> Result<Vec<Hash>, ReadError> {
    let document = Document::parse(bytes, format)?;
    let mut leaves = Vec::new();
    document.rows(|row| -> Result<(), ReadError> {
        leaves.push(merkle::leaf(leaves.len() as u64, row.fields));
        Ok(())
    })?;
    Ok(leaves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnType;

    #[test]
    fn a_summary_counts_rows_infers_the_schema_and_hashes_the_bytes_as_read() {
        let text = b"id,label\r\n1,\"a,b\"\r\n\r\n2,c";
        let summary = summarize(&text[..], Format::Csv, None).expect("summary");
        assert_eq!(summary.header.names(), ["id", "label"]);
        assert_eq!(summary.rows, 2);
        assert_eq!(summary.size, text.len() as u64);
        assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(text)));
        let kinds: Vec<ColumnType> = summary.schema.columns.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [ColumnType::Int, ColumnType::Category]);
    }

    /// One table written in each format (CSV with its columns in the JSON formats' sorted order),
    /// tricky on purpose: quotes, a comma and a line break in a cell, padding, a null.
    const SAME_ROWS: [(&str, Format); 3] = [
        (
            "age,note,sex\n40,\"a, \"\"b\"\"\",f\n\n 50.5 ,\"two\nlines\",\n60,,m",
            Format::Csv,
        ),
        (
            "{\"sex\":\"f\",\"age\":40,\"note\":\"a, \\\"b\\\"\"}\n\n{\"age\":50.5,\"note\":\"two\\nlines\",\"sex\":null}\r\n{\"age\":60,\"note\":\" \",\"sex\":\"m\"}",
            Format::JsonLines,
        ),
        (
            "[\n {\"sex\": \"f\", \"age\": 40, \"note\": \"a, \\\"b\\\"\"},\n {\"age\": 50.5,\n  \"note\": \"two\\nlines\", \"sex\": null},\n {\"age\": 60, \"note\": null, \"sex\": \"m\"}\n]\n",
            Format::JsonArray,
        ),
    ];

    #[test]
    fn the_same_rows_in_csv_json_lines_and_a_json_array_have_one_rows_root() {
        let roots: Vec<Hash> = SAME_ROWS
            .iter()
            .map(|(text, format)| {
                let summary = summarize(text.as_bytes(), *format, None).expect("summary");
                assert_eq!(summary.rows, 3, "{format}");
                summary.rows_root
            })
            .collect();
        let want = merkle::root(&[
            merkle::leaf(0, &["40", "a, \"b\"", "f"]),
            merkle::leaf(1, &["50.5", "two\nlines", ""]),
            merkle::leaf(2, &["60", "", "m"]),
        ]);
        assert_eq!(roots, [want; 3]);
    }

    #[test]
    fn the_rows_root_is_the_root_of_the_row_leaves_and_changes_with_any_cell() {
        for (text, format) in SAME_ROWS {
            let summary = summarize(text.as_bytes(), format, None).expect("summary");
            let leaves = row_leaves(text.as_bytes(), format).expect("leaves");
            assert_eq!(leaves.len(), 3);
            assert_eq!(merkle::root(&leaves), summary.rows_root, "{format}");
            assert_eq!(
                rows_root(text.as_bytes(), format).expect("root"),
                summary.rows_root
            );
            let proof = merkle::proof(&leaves, 1).expect("row 1");
            assert!(merkle::verify(&summary.rows_root, 3, 1, &leaves[1], &proof));
        }
        let changed = SAME_ROWS[0].0.replace("60,", "61,");
        assert_ne!(
            rows_root(changed.as_bytes(), Format::Csv).expect("root"),
            rows_root(SAME_ROWS[0].0.as_bytes(), Format::Csv).expect("root")
        );
        // No rows: the root of no leaves.
        assert_eq!(
            rows_root(&b"a,b\n"[..], Format::Csv).expect("root"),
            merkle::root(&[])
        );
    }

    #[test]
    fn a_declared_schema_is_checked_against_every_row() {
        let text = b"n,x\n1,2\n3,4\n5,five\n";
        let declared: Schema = "n:int,x:float".parse().expect("schema");
        let err = summarize(&text[..], Format::Csv, Some(&declared)).expect_err("five");
        assert_eq!(
            err.to_string(),
            "line 4, column \"x\": \"five\" is not a number"
        );
        let declared: Schema = "n:int,y:float".parse().expect("schema");
        let err = summarize(&text[..], Format::Csv, Some(&declared)).expect_err("names");
        assert_eq!(
            err.to_string(),
            "the declared columns [\"n\", \"y\"] do not match the header [\"n\", \"x\"]"
        );
    }
}
