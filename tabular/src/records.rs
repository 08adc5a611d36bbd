//! The CSV record scanner: the rules of the crate docs, in one place. It reads a byte buffer
//! that may be the whole file (`eof`) or the part of a stream read so far; a record the buffer
//! ends inside is left for the caller to retry with more bytes, so a stream and a file in memory
//! read the same records with the same line numbers.

use std::borrow::Cow;

use crate::{Header, ReadError};

/// Where one field's text lies in the buffer (inside the quotes of a quoted field).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    start: usize,
    end: usize,
    quoted: bool,
    /// Holds `""` pairs, each read as one quote.
    escaped: bool,
}

/// What the scanner found at a position.
enum Scan {
    /// A whole record: where the next one starts and the line ends it spans (its own included).
    Record { next: usize, line_ends: u64 },
    /// The buffer ends inside a record and more input may follow.
    Cut,
    /// The input is over.
    End,
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// Line ends within `bytes`: line feeds, and carriage returns not followed by one.
pub(crate) fn line_ends(bytes: &[u8]) -> u64 {
    let lf = memchr::memchr_iter(b'\n', bytes).count();
    let lone_cr = memchr::memchr_iter(b'\r', bytes)
        .filter(|&i| bytes.get(i + 1) != Some(&b'\n'))
        .count();
    (lf + lone_cr) as u64
}

/// Scans the record starting at `at` (on `line`), leaving its fields in `spans`.
fn scan(
    input: &[u8],
    at: usize,
    line: u64,
    eof: bool,
    spans: &mut Vec<Span>,
) -> Result<Scan, ReadError> {
    spans.clear();
    let n = input.len();
    if at >= n {
        return Ok(if eof { Scan::End } else { Scan::Cut });
    }
    // Line ends inside quoted fields so far: errors name the line they happen on.
    let mut inner = 0u64;
    let mut p = at;
    loop {
        let field_start = p;
        while p < n && is_blank(input[p]) {
            p += 1;
        }
        let column = spans.len() + 1;
        if p < n && input[p] == b'"' {
            let start = p + 1;
            let mut q = start;
            let mut escaped = false;
            let end = loop {
                let Some(k) = memchr::memchr(b'"', &input[q..]) else {
                    if !eof {
                        return Ok(Scan::Cut);
                    }
                    return Err(ReadError::UnclosedQuote {
                        line: line + inner,
                        column,
                    });
                };
                let quote = q + k;
                match input.get(quote + 1) {
                    Some(b'"') => {
                        escaped = true;
                        q = quote + 2;
                    }
                    // A quote at the buffer's end may be the first of a `""` pair.
                    None if !eof => return Ok(Scan::Cut),
                    _ => break quote,
                }
            };
            inner += line_ends(&input[start..end]);
            spans.push(Span {
                start,
                end,
                quoted: true,
                escaped,
            });
            p = end + 1;
            while p < n && is_blank(input[p]) {
                p += 1;
            }
            if p < n && !matches!(input[p], b',' | b'\n' | b'\r') {
                return Err(ReadError::TextAfterQuote {
                    line: line + inner,
                    column,
                });
            }
        } else {
            while p < n && !matches!(input[p], b',' | b'\n' | b'\r') {
                p += 1;
            }
            spans.push(Span {
                start: field_start,
                end: p,
                quoted: false,
                escaped: false,
            });
        }
        // `p` is at the comma or line end after the field, or at the end of the buffer.
        match input.get(p) {
            None if !eof => return Ok(Scan::Cut),
            None => {
                return Ok(Scan::Record {
                    next: n,
                    line_ends: inner,
                });
            }
            Some(b',') => p += 1,
            Some(b'\n') => {
                return Ok(Scan::Record {
                    next: p + 1,
                    line_ends: inner + 1,
                });
            }
            Some(_) => {
                // A carriage return: with a line feed after it, one CRLF line end.
                let next = match input.get(p + 1) {
                    Some(b'\n') => p + 2,
                    Some(_) => p + 1,
                    None if eof => p + 1,
                    None => return Ok(Scan::Cut),
                };
                return Ok(Scan::Record {
                    next,
                    line_ends: inner + 1,
                });
            }
        }
    }
}

/// A record of one unquoted field of spaces and tabs (or nothing) is a blank line.
fn blank(input: &[u8], spans: &[Span]) -> bool {
    match spans {
        [only] => !only.quoted && input[only.start..only.end].iter().all(|&b| is_blank(b)),
        _ => false,
    }
}

/// A field without surrounding whitespace (the common case is checked first, cheaply).
fn trim(text: &str) -> &str {
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => text,
        _ => text.trim(),
    }
}

/// Where reading stopped: the start of the first record not read, and its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    pub at: usize,
    pub line: u64,
}

/// Hands each non-blank record of `input[from.at..]` to `visit` with its line, until the input
/// ends or (when more may follow) a record is cut off. With `eof`, reading stops only at the end.
pub(crate) fn each_record<'a, E: From<ReadError>>(
    input: &'a [u8],
    from: Resume,
    eof: bool,
    mut visit: impl FnMut(u64, &[&str]) -> Result<(), E>,
) -> Result<Resume, E> {
    let Resume { mut at, mut line } = from;
    let mut spans = Vec::new();
    let mut fields: Vec<&'a str> = Vec::new();
    loop {
        let (next, line_ends) = match scan(input, at, line, eof, &mut spans)? {
            Scan::Record { next, line_ends } => (next, line_ends),
            Scan::Cut | Scan::End => return Ok(Resume { at, line }),
        };
        if !blank(input, &spans) {
            // One check per record; its delimiters are ASCII, so every field is a char boundary.
            let text =
                std::str::from_utf8(&input[at..next]).map_err(|_| not_utf8(input, &spans, line))?;
            let field = |s: &Span| &text[s.start - at..s.end - at];
            if spans.iter().any(|s| s.escaped) {
                let owned: Vec<Cow<'_, str>> = spans
                    .iter()
                    .map(|s| match field(s) {
                        t if s.escaped => Cow::Owned(t.replace("\"\"", "\"")),
                        t => Cow::Borrowed(t),
                    })
                    .collect();
                let unescaped: Vec<&str> = owned.iter().map(|f| trim(f)).collect();
                visit(line, &unescaped)?;
            } else {
                fields.clear();
                fields.extend(spans.iter().map(|s| trim(field(s))));
                visit(line, &fields)?;
            }
        }
        at = next;
        line += line_ends;
    }
}

/// The first field of the record that is not UTF-8.
fn not_utf8(input: &[u8], spans: &[Span], line: u64) -> ReadError {
    let column = spans
        .iter()
        .position(|s| std::str::from_utf8(&input[s.start..s.end]).is_err())
        .map_or(1, |i| i + 1);
    ReadError::NotUtf8 { line, column }
}

/// What reading the header found.
pub(crate) enum HeaderScan {
    /// The header, and where the rows start.
    Found(Header, Resume),
    /// The buffer ends before the header does; more input may follow.
    Cut,
}

/// The UTF-8 byte order mark some editors put first.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// Refuses a byte order mark at the very start of the file (see [`ReadError::ByteOrderMark`]);
/// `None` while the buffer holds less than a whole one that may be one.
pub(crate) fn refuse_bom(
    input: &[u8],
    from: Resume,
    eof: bool,
) -> Result<Option<Resume>, ReadError> {
    if from.at != 0 || from.line != 1 {
        return Ok(Some(from));
    }
    if input.starts_with(BOM) {
        return Err(ReadError::ByteOrderMark);
    }
    if !eof && input.len() < BOM.len() && BOM.starts_with(input) {
        return Ok(None);
    }
    Ok(Some(from))
}

/// Reads the first non-blank record of `input[from.at..]` as the header.
pub(crate) fn header(input: &[u8], from: Resume, eof: bool) -> Result<HeaderScan, ReadError> {
    let Some(Resume { mut at, mut line }) = refuse_bom(input, from, eof)? else {
        return Ok(HeaderScan::Cut);
    };
    let mut spans = Vec::new();
    loop {
        let (next, line_ends) = match scan(input, at, line, eof, &mut spans)? {
            Scan::Record { next, line_ends } => (next, line_ends),
            Scan::Cut => return Ok(HeaderScan::Cut),
            Scan::End => return Err(ReadError::NoHeader),
        };
        if !blank(input, &spans) {
            let mut names = Vec::with_capacity(spans.len());
            for (i, s) in spans.iter().enumerate() {
                let text = std::str::from_utf8(&input[s.start..s.end]).map_err(|_| {
                    ReadError::NotUtf8 {
                        line,
                        column: i + 1,
                    }
                })?;
                let text = if s.escaped {
                    Cow::Owned(text.replace("\"\"", "\""))
                } else {
                    Cow::Borrowed(text)
                };
                names.push(trim(&text).to_owned());
            }
            let header = Header::new(names, line)?;
            return Ok(HeaderScan::Found(
                header,
                Resume {
                    at: next,
                    line: line + line_ends,
                },
            ));
        }
        at = next;
        line += line_ends;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of a whole buffer, with its line.
    fn records(text: &str) -> Result<Vec<(u64, Vec<String>)>, ReadError> {
        let mut out = Vec::new();
        each_record(
            text.as_bytes(),
            Resume { at: 0, line: 1 },
            true,
            |line, fields: &[&str]| -> Result<(), ReadError> {
                out.push((line, fields.iter().map(|f| (*f).to_owned()).collect()));
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn row(line: u64, fields: &[&str]) -> (u64, Vec<String>) {
        (line, fields.iter().map(|f| (*f).to_owned()).collect())
    }

    /// A well-formed field: plain text (not starting with a quote) or quoted text.
    fn field() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let plain = (
            proptest::sample::select(vec!["", "a", "1", "2.5", "\u{e9}", "x y"]),
            proptest::sample::select(vec!["", " ", "b", "q\"t", "\t"]),
        )
            .prop_map(|(a, b)| format!("{a}{b}"));
        let quoted = proptest::collection::vec(
            proptest::sample::select(vec!["a", ",", "\n", "\r\n", "\"\"", " ", "\u{e9}", ""]),
            0..5,
        )
        .prop_map(|parts| format!("\"{}\"", parts.concat()));
        prop_oneof![plain, quoted]
    }

    proptest::proptest! {
        /// On well-formed files the scanner reads the records the `csv` crate reads (fields
        /// trimmed): quoted commas, quotes and line ends, CRLF and lone CR, blank lines, a
        /// missing last line end.
        #[test]
        fn the_scanner_reads_the_records_the_csv_crate_reads(
            records in proptest::collection::vec(
                (
                    proptest::collection::vec(field(), 2..4),
                    proptest::sample::select(vec!["\n", "\r\n", "\r", "\n\n", "\r\n\r\n"]),
                ),
                0..6,
            ),
            last_end in proptest::bool::ANY,
        ) {
            let mut text = String::new();
            for (i, (fields, end)) in records.iter().enumerate() {
                text.push_str(&fields.join(","));
                if last_end || i + 1 < records.len() {
                    text.push_str(end);
                }
            }
            let ours: Vec<Vec<String>> = self::records(&text)
                .expect("well-formed")
                .into_iter()
                .map(|(_, fields)| fields)
                .collect();
            let theirs: Vec<Vec<String>> = ::csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(text.as_bytes())
                .records()
                .map(|r| r.expect("csv crate").iter().map(|f| f.trim().to_owned()).collect())
                .collect();
            proptest::prop_assert_eq!(ours, theirs, "{:?}", text);
        }
    }

    #[test]
    fn line_ends_count_lf_crlf_and_lone_cr_once_each() {
        assert_eq!(line_ends(b"a\nb\r\nc\rd"), 3);
        assert_eq!(line_ends(b"\r"), 1);
        assert_eq!(line_ends(b""), 0);
    }

    #[test]
    fn a_record_cut_by_the_end_of_the_buffer_is_left_for_more_input() {
        let mut seen = 0;
        let resume = each_record(
            b"1,2\n3,\"4\n",
            Resume { at: 0, line: 2 },
            false,
            |_, _: &[&str]| -> Result<(), ReadError> {
                seen += 1;
                Ok(())
            },
        )
        .expect("records");
        assert_eq!(seen, 1);
        assert_eq!(resume, Resume { at: 4, line: 3 });
        // A carriage return at the end may be the first half of a CRLF.
        let resume = each_record(
            b"1,2\r",
            Resume { at: 0, line: 2 },
            false,
            |_, _: &[&str]| -> Result<(), ReadError> { Ok(()) },
        )
        .expect("records");
        assert_eq!(resume.at, 0);
    }

    #[test]
    fn lone_carriage_returns_end_records_and_lines() {
        assert_eq!(
            records("a,b\r1,2\r\r3,4").expect("read"),
            [
                row(1, &["a", "b"]),
                row(2, &["1", "2"]),
                row(4, &["3", "4"])
            ]
        );
    }

    #[test]
    fn a_quoted_empty_field_alone_on_a_line_is_a_record_not_a_blank_line() {
        assert_eq!(
            records("a\n\"\"\n  \n").expect("read"),
            [row(1, &["a"]), row(2, &[""])]
        );
    }
}
