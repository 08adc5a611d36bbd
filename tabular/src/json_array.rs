//! A JSON array of flat objects, read one object at a time in constant memory. A tokenizer walks
//! the array's punctuation (`[`, `,`, `]`) and finds each element's extent by counting braces and
//! brackets outside strings; the element alone is then read as a JSON-lines line is
//! ([`crate::json`]), so the two JSON formats give the same cells. Like the CSV scanner it reads
//! a buffer that may end mid-element when more input may follow: reading stops before the cut
//! element and resumes there with more bytes.
//!
//! Lines are counted at line feeds, as in JSON lines; a row's line is the line of its `{`.

use crate::json::{self, Columns};
use crate::records::Resume;
use crate::{Header, ReadError};

/// What the array holds next, whitespace aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The opening `[`: nothing has been read.
    Open,
    /// The first element, or the `]` of an empty array.
    First,
    /// An element, after a comma.
    Element,
    /// A comma or the closing `]`, after an element.
    CommaOrClose,
    /// Nothing more: the array is closed.
    Done,
}

/// What the tokenizer found.
enum Step {
    /// An element: `input[start..end]`, starting on `line`.
    Object { start: usize, end: usize, line: u64 },
    /// The buffer ends first and more input may follow.
    Cut,
    /// The array is closed and the input is over.
    End,
}

fn error(line: u64, message: &str) -> ReadError {
    ReadError::Json {
        line,
        message: message.to_owned(),
    }
}

/// The end (exclusive) of the element starting with the `{` at `at`, and the line feeds inside
/// it; `None` when the buffer ends first. A mismatched bracket ends it early, and reading the
/// element as JSON then says what is wrong.
fn element_end(input: &[u8], at: usize) -> Option<(usize, u64)> {
    let (mut depth, mut in_string, mut escaped, mut line_feeds) = (0u64, false, false, 0u64);
    for (i, &b) in input[at..].iter().enumerate() {
        if b == b'\n' {
            line_feeds += 1;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some((at + i + 1, line_feeds));
                }
            }
            _ => {}
        }
    }
    None
}

/// Moves `at` past the punctuation and whitespace before the next element, updating `expect`,
/// and reports the element, a cut, or the end.
fn step(input: &[u8], at: &mut Resume, expect: &mut Expect, eof: bool) -> Result<Step, ReadError> {
    loop {
        while let Some(&b) = input.get(at.at) {
            match b {
                b'\n' => at.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => break,
            }
            at.at += 1;
        }
        let line = at.line;
        let Some(&b) = input.get(at.at) else {
            return match (*expect, eof) {
                (_, false) => Ok(Step::Cut),
                (Expect::Done, true) => Ok(Step::End),
                (Expect::Open, true) => Err(ReadError::NoHeader),
                (_, true) => Err(error(
                    line,
                    "the file ends inside the array: it is never closed with ]",
                )),
            };
        };
        *expect = match (*expect, b) {
            (Expect::Open, b'[') => Expect::First,
            (Expect::Open, _) => {
                return Err(error(
                    line,
                    "a JSON-array file holds one array of objects and starts with [ (one object \
                     per line is JSON lines: a .jsonl file)",
                ));
            }
            (Expect::First | Expect::Element, b'{') => {
                return match element_end(input, at.at) {
                    Some((end, line_feeds)) => {
                        let start = at.at;
                        *at = Resume {
                            at: end,
                            line: line + line_feeds,
                        };
                        *expect = Expect::CommaOrClose;
                        Ok(Step::Object { start, end, line })
                    }
                    None if !eof => Ok(Step::Cut),
                    None => Err(error(line, "the object opened here is never closed")),
                };
            }
            (Expect::First, b']') => Expect::Done,
            (Expect::Element, b']') => {
                return Err(error(
                    line,
                    "a comma before the closing ] (JSON allows no trailing comma)",
                ));
            }
            (Expect::First | Expect::Element, _) => {
                return Err(error(
                    line,
                    "an element of the array is not an object: each row is one flat {...} object",
                ));
            }
            (Expect::CommaOrClose, b',') => Expect::Element,
            (Expect::CommaOrClose, b']') => Expect::Done,
            (Expect::CommaOrClose, _) => {
                return Err(error(line, "expected , or ] after an object"));
            }
            (Expect::Done, _) => return Err(error(line, "text after the array's closing ]")),
        };
        at.at += 1;
    }
}

/// Reads the first object's keys as the header; `None` when the buffer ends before the first
/// object does and more input may follow. Reading the rows resumes at the first object, which
/// is a row too, expecting [`Expect::First`].
pub(crate) fn header(
    input: &[u8],
    from: Resume,
    eof: bool,
) -> Result<Option<(Header, Resume)>, ReadError> {
    let Some(mut at) = crate::records::refuse_bom(input, from, eof)? else {
        return Ok(None);
    };
    let mut expect = Expect::Open;
    match step(input, &mut at, &mut expect, eof)? {
        Step::Object { start, end, line } => {
            let first = json::object(&input[start..end], line)?;
            Ok(Some((
                json::header(&first, line)?,
                Resume { at: start, line },
            )))
        }
        Step::Cut => Ok(None),
        Step::End => Err(error(
            at.line,
            "the array holds no objects, so the file has no columns",
        )),
    }
}

/// Hands each object of the array from `from` on (where the tokenizer expects `expect`, updated
/// as it reads) to `visit` as fields in header order, until the input ends or (when more may
/// follow) an element is cut off. `columns` holds what earlier calls saw.
pub(crate) fn each_object<E: From<ReadError>>(
    input: &[u8],
    from: Resume,
    expect: &mut Expect,
    eof: bool,
    header: &Header,
    columns: &mut Columns,
    mut visit: impl FnMut(u64, &[&str]) -> Result<(), E>,
) -> Result<Resume, E> {
    let mut at = from;
    loop {
        match step(input, &mut at, expect, eof)? {
            Step::Object { start, end, line } => {
                let object = json::object(&input[start..end], line)?;
                let cells = columns.cells(&object, header, line)?;
                let fields: Vec<&str> = cells.iter().map(String::as_str).collect();
                visit(line, &fields)?;
            }
            Step::Cut | Step::End => return Ok(at),
        }
    }
}
