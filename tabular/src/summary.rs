//! What a listing states about a file, from one pass over its bytes in constant memory.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::schema::{Inference, Schema};
use crate::{Format, Header, ReadError, Stream};

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
/// inferred) and the SHA-256 of its bytes.
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
    let hashing = stream.rows(|row| -> Result<(), ReadError> {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnType;

    #[test]
    fn a_summary_counts_rows_infers_the_schema_and_hashes_the_bytes_as_read() {
        let text = b"\xef\xbb\xbfid,label\r\n1,\"a,b\"\r\n\r\n2,c";
        let summary = summarize(&text[..], Format::Csv, None).expect("summary");
        assert_eq!(
            summary.header.names(),
            ["id", "label"],
            "the byte order mark is skipped"
        );
        assert_eq!(summary.rows, 2);
        assert_eq!(summary.size, text.len() as u64);
        assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(text)));
        let kinds: Vec<ColumnType> = summary.schema.columns.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [ColumnType::Int, ColumnType::Category]);
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
