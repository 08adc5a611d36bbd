//! A file of any size read in constant memory: `ndctl`'s reader. The source is read into a
//! buffer; the records it holds whole are read by the same scanner as a [`crate::Document`],
//! the part of a record it ends inside is kept and read again once more bytes came. The buffer
//! grows only to hold a record longer than itself.

use std::io::Read;

use crate::json::Columns;
use crate::json_array::{self, Expect};
use crate::records::{self, HeaderScan, Resume};
use crate::{Format, Header, ReadError, Row, json_lines};

/// Bytes read from the source at a time.
const CAPACITY: usize = 64 * 1024;

/// A file read from a [`Read`] source, its header read.
#[derive(Debug)]
pub struct Stream<R> {
    input: Buffer<R>,
    format: Format,
    header: Header,
    /// JSON: each column's type so far.
    columns: Columns,
    /// A JSON array: what the tokenizer expects at `input.next`.
    expect: Expect,
}

/// The bytes read and not yet consumed.
#[derive(Debug)]
struct Buffer<R> {
    source: R,
    bytes: Vec<u8>,
    /// Bytes of `bytes` that hold data.
    len: usize,
    /// Where the first record not read starts, and its line.
    next: Resume,
    /// The source is exhausted: `bytes[..len]` is the rest of the file.
    eof: bool,
}

impl<R: Read> Buffer<R> {
    /// Moves the unread bytes to the front and reads more after them (growing the buffer if the
    /// unread bytes fill it).
    fn fill(&mut self) -> Result<(), ReadError> {
        self.bytes.copy_within(self.next.at..self.len, 0);
        self.len -= self.next.at;
        self.next.at = 0;
        if self.len == self.bytes.len() {
            self.bytes
                .resize(self.bytes.len().saturating_mul(2).max(1), 0);
        }
        loop {
            match self.source.read(&mut self.bytes[self.len..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            return Ok(());
        }
    }

    fn held(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<R: Read> Stream<R> {
    /// Reads the header from `source`.
    pub fn open(source: R, format: Format) -> Result<Stream<R>, ReadError> {
        Stream::with_capacity(source, format, CAPACITY)
    }

    /// [`Stream::open`] with a buffer of `capacity` bytes to start with (tests use tiny ones).
    pub(crate) fn with_capacity(
        source: R,
        format: Format,
        capacity: usize,
    ) -> Result<Stream<R>, ReadError> {
        let mut input = Buffer {
            source,
            bytes: vec![0; capacity.max(1)],
            len: 0,
            next: Resume { at: 0, line: 1 },
            eof: false,
        };
        let header = loop {
            let found = match format {
                Format::Csv => match records::header(input.held(), input.next, input.eof)? {
                    HeaderScan::Found(header, next) => Some((header, next)),
                    HeaderScan::Cut => None,
                },
                Format::JsonLines => json_lines::header(input.held(), input.next, input.eof)?,
                Format::JsonArray => json_array::header(input.held(), input.next, input.eof)?,
            };
            match found {
                Some((header, next)) => {
                    input.next = next;
                    break header;
                }
                None if input.eof => return Err(ReadError::NoHeader),
                None => input.fill()?,
            }
        };
        Ok(Stream {
            input,
            format,
            columns: Columns::new(&header),
            // A JSON array's rows start at its first element, which the header was read from.
            expect: Expect::First,
            header,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Hands every row to `visit`, in file order, reading the source to its end; gives the
    /// source back.
    pub fn rows<E: From<ReadError>>(
        mut self,
        mut visit: impl FnMut(Row<'_>) -> Result<(), E>,
    ) -> Result<R, E> {
        let want = self.header.len();
        loop {
            let input = &mut self.input;
            let (held, from, eof) = (&input.bytes[..input.len], input.next, input.eof);
            input.next = match self.format {
                Format::Csv => records::each_record(held, from, eof, |line, fields| {
                    visit(Row::csv(line, fields, want)?)
                })?,
                Format::JsonLines => json_lines::each_object(
                    held,
                    from,
                    eof,
                    &self.header,
                    &mut self.columns,
                    |line, fields| visit(Row { line, fields }),
                )?,
                Format::JsonArray => json_array::each_object(
                    held,
                    from,
                    &mut self.expect,
                    eof,
                    &self.header,
                    &mut self.columns,
                    |line, fields| visit(Row { line, fields }),
                )?,
            };
            if input.eof {
                return Ok(self.input.source);
            }
            input.fill()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that hands out one byte per read, as a slow pipe might.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((&b, rest)), Some(out)) => {
                    *out = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn streamed(text: &[u8], format: Format) -> Result<crate::TableText, ReadError> {
        let stream = Stream::with_capacity(Trickle(text), format, 1)?;
        let header = stream.header().names().to_vec();
        let mut rows = Vec::new();
        stream.rows(|row| -> Result<(), ReadError> {
            rows.push((
                row.line,
                row.fields.iter().map(|f| (*f).to_owned()).collect(),
            ));
            Ok(())
        })?;
        Ok((header, rows))
    }

    fn in_memory(text: &[u8], format: Format) -> Result<crate::TableText, ReadError> {
        let doc = crate::Document::parse(text, format)?;
        let mut rows = Vec::new();
        doc.rows(|row| -> Result<(), ReadError> {
            rows.push((
                row.line,
                row.fields.iter().map(|f| (*f).to_owned()).collect(),
            ));
            Ok(())
        })?;
        Ok((doc.header().names().to_vec(), rows))
    }

    proptest::proptest! {
        /// A stream handed one byte at a time into a one-byte buffer (every record cut
        /// everywhere) reads what the whole file in memory reads, errors included.
        #[test]
        fn a_trickled_stream_reads_what_the_file_in_memory_reads(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a", "1", "2.5", " ", ",", ",", "\n", "\n", "\r\n", "\r", "\"", "\"\"", "\t",
                    "x y", "\u{e9}",
                ]),
                0..40,
            ),
        ) {
            let text = parts.concat();
            let a = streamed(text.as_bytes(), Format::Csv).map_err(|e| e.to_string());
            let b = in_memory(text.as_bytes(), Format::Csv).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(a, b, "{:?}", text);
        }

        /// The same for JSON lines.
        #[test]
        fn a_trickled_json_lines_stream_reads_what_the_file_in_memory_reads(
            lines in proptest::collection::vec(
                proptest::sample::select(vec![
                    "{\"a\":1,\"b\":\"x\"}", "{\"b\":null,\"a\":2.5}", "", "  ", "{\"a\":1}", "{",
                ]),
                0..8,
            ),
            end in proptest::sample::select(vec!["", "\n", "\r\n"]),
        ) {
            let text = format!("{}{end}", lines.join("\n"));
            let a = streamed(text.as_bytes(), Format::JsonLines).map_err(|e| e.to_string());
            let b = in_memory(text.as_bytes(), Format::JsonLines).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(a, b, "{:?}", text);
        }

        /// The same for a JSON array: mostly well-formed arrays of objects split over lines,
        /// with stray punctuation, strings holding brackets, nested values and mixed types.
        #[test]
        fn a_trickled_json_array_stream_reads_what_the_file_in_memory_reads(
            elements in proptest::collection::vec(
                proptest::sample::select(vec![
                    "{\"a\":1,\"b\":\"x\"}", "{\"b\":\"]},{\\\"\",\n \"a\":2.5}",
                    "{\"a\":null,\"b\":null}", "{\"a\":\"1\",\"b\":\"x\"}", "{\"a\":[1],\"b\":\"\"}",
                    "{\"a\":1}", "{", "]", "7",
                ]),
                0..6,
            ),
            separator in proptest::sample::select(vec![",", ",\n", " ,\r\n ", ""]),
            open in proptest::sample::select(vec!["[", "\n[\n", ""]),
            close in proptest::sample::select(vec!["]", "\n]\n", "", "],"]),
        ) {
            let text = format!("{open}{}{close}", elements.join(separator));
            let a = streamed(text.as_bytes(), Format::JsonArray).map_err(|e| e.to_string());
            let b = in_memory(text.as_bytes(), Format::JsonArray).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(a, b, "{:?}", text);
        }
    }
}
