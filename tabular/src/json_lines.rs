//! JSON lines: one object per line, the first object's sorted keys as the header. Like the CSV
//! scanner it reads a buffer that may end mid-line when more input may follow.

use crate::json::{self, Columns, Members};
use crate::records::Resume;
use crate::{Header, ReadError};

/// The line at `at`: its text (without the line feed) and where the next starts; `None` when
/// the buffer ends before the line does and more may follow, or the input is over.
fn line_at(input: &[u8], at: usize, eof: bool) -> Option<(&[u8], usize)> {
    match memchr::memchr(b'\n', &input[at.min(input.len())..]) {
        Some(k) => Some((&input[at..at + k], at + k + 1)),
        None if eof && at < input.len() => Some((&input[at..], input.len())),
        None => None,
    }
}

/// The object on `line`, or `None` for a blank line.
fn object(text: &[u8], line: u64) -> Result<Option<Members>, ReadError> {
    // JSON's whitespace (a CRLF's carriage return among it).
    if text.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
        return Ok(None);
    }
    json::object(text, line).map(Some)
}

/// Reads the first object's keys as the header; `None` when the input holds no object yet (the
/// caller tells an empty file from a cut buffer).
pub(crate) fn header(
    input: &[u8],
    from: Resume,
    eof: bool,
) -> Result<Option<(Header, Resume)>, ReadError> {
    let Some(Resume { mut at, mut line }) = crate::records::refuse_bom(input, from, eof)? else {
        return Ok(None);
    };
    while let Some((text, next)) = line_at(input, at, eof) {
        if let Some(object) = object(text, line)? {
            // The first object is a row too: reading resumes at its line.
            return Ok(Some((json::header(&object, line)?, Resume { at, line })));
        }
        at = next;
        line += 1;
    }
    Ok(None)
}

/// Hands each object of `input[from.at..]` to `visit` as fields in header order, until the input
/// ends or (when more may follow) a line is cut off. `columns` holds what earlier calls saw.
pub(crate) fn each_object<E: From<ReadError>>(
    input: &[u8],
    from: Resume,
    eof: bool,
    header: &Header,
    columns: &mut Columns,
    mut visit: impl FnMut(u64, &[&str]) -> Result<(), E>,
) -> Result<Resume, E> {
    let Resume { mut at, mut line } = from;
    while let Some((text, next)) = line_at(input, at, eof) {
        if let Some(object) = object(text, line)? {
            let cells = columns.cells(&object, header, line)?;
            let fields: Vec<&str> = cells.iter().map(String::as_str).collect();
            visit(line, &fields)?;
        }
        at = next;
        line += 1;
    }
    Ok(Resume { at, line })
}
