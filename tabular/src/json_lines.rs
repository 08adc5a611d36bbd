//! JSON lines: one object per line, the first object's sorted keys as the header. Like the CSV
//! scanner it reads a buffer that may end mid-line when more input may follow.

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
fn object(
    text: &[u8],
    line: u64,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ReadError> {
    let text = std::str::from_utf8(text).map_err(|_| ReadError::NotUtf8 { line, column: 1 })?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| ReadError::Json {
            line,
            message: e.to_string(),
        })
}

/// A value's text: a string as it is, `null` as nothing, anything else as JSON; trimmed.
fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.trim().to_owned(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Reads the first object's keys as the header; `None` when the input holds no object yet (the
/// caller tells an empty file from a cut buffer).
pub(crate) fn header(
    input: &[u8],
    from: Resume,
    eof: bool,
) -> Result<Option<(Header, Resume)>, ReadError> {
    let Some(Resume { mut at, mut line }) = crate::records::skip_bom(input, from, eof) else {
        return Ok(None);
    };
    while let Some((text, next)) = line_at(input, at, eof) {
        if let Some(object) = object(text, line)? {
            if object.is_empty() {
                return Err(ReadError::Json {
                    line,
                    message: "the first object has no keys, so the file has no columns".into(),
                });
            }
            let mut names: Vec<String> = object.keys().cloned().collect();
            // Sorted whatever order the JSON map keeps: the header must not depend on a feature.
            names.sort();
            // The first object is a row too: reading resumes at its line.
            return Ok(Some((Header::new(names, line)?, Resume { at, line })));
        }
        at = next;
        line += 1;
    }
    Ok(None)
}

/// Hands each object of `input[from.at..]` to `visit` as fields in header order, until the input
/// ends or (when more may follow) a line is cut off.
pub(crate) fn each_object<E: From<ReadError>>(
    input: &[u8],
    from: Resume,
    eof: bool,
    header: &Header,
    mut visit: impl FnMut(u64, &[&str]) -> Result<(), E>,
) -> Result<Resume, E> {
    let Resume { mut at, mut line } = from;
    while let Some((text, next)) = line_at(input, at, eof) {
        if let Some(object) = object(text, line)? {
            let mut values = Vec::with_capacity(header.len());
            for name in header.names() {
                match object.get(name) {
                    Some(v) => values.push(self::text(v)),
                    None => break,
                }
            }
            if values.len() != header.len() || object.len() != header.len() {
                return Err(keys_error(&object, header, line).into());
            }
            let fields: Vec<&str> = values.iter().map(String::as_str).collect();
            visit(line, &fields)?;
        }
        at = next;
        line += 1;
    }
    Ok(Resume { at, line })
}

fn keys_error(
    object: &serde_json::Map<String, serde_json::Value>,
    header: &Header,
    line: u64,
) -> ReadError {
    let missing = header
        .names()
        .iter()
        .filter(|n| !object.contains_key(n.as_str()))
        .cloned()
        .collect();
    let mut extra: Vec<String> = object
        .keys()
        .filter(|k| header.position(k).is_none())
        .cloned()
        .collect();
    extra.sort();
    ReadError::Keys {
        line,
        missing,
        extra,
    }
}
