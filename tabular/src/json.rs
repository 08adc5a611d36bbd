//! What the two JSON formats share: one object's text read into members, the header taken from
//! the first object, and each later object read into a row's cells under the rules of the crate
//! docs (flat values, the header's keys, one JSON type per column).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::{Header, ReadError};

/// An object's members, sorted by key, duplicates kept so they can be refused (serde_json's own
/// map would keep the last one silently).
pub(crate) struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// A serde_json error in an object that starts on `line`, at the line it happened on.
fn syntax(e: &serde_json::Error, line: u64) -> ReadError {
    let text = e.to_string();
    // serde_json says " at line L column C" last; the line is made the file's, first.
    let reason = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(r, _)| r);
    match e.line() {
        0 => ReadError::Json {
            line,
            message: reason.to_owned(),
        },
        l => ReadError::Json {
            line: line + l as u64 - 1,
            message: format!("{reason} at column {}", e.column()),
        },
    }
}

/// The object written in `bytes`, which start on `line`: its members sorted by key.
pub(crate) fn object(bytes: &[u8], line: u64) -> Result<Members, ReadError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ReadError::NotUtf8 {
        line: line + memchr::memchr_iter(b'\n', &bytes[..e.valid_up_to()]).count() as u64,
        column: 1,
    })?;
    let Members(mut members) = serde_json::from_str(text).map_err(|e| syntax(&e, line))?;
    // Stable: of two members with one key, the first written stays first.
    members.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = members.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ReadError::Json {
            line,
            message: format!("the object has the key {:?} twice", pair[0].0),
        });
    }
    Ok(Members(members))
}

/// The header of a file whose first object, on `line`, is `first`: its keys, sorted (the order
/// every reader of the crate gives the cells in, and so the order of a row's Merkle leaf).
pub(crate) fn header(first: &Members, line: u64) -> Result<Header, ReadError> {
    if first.0.is_empty() {
        return Err(ReadError::Json {
            line,
            message: "the first object has no keys, so the file has no columns".into(),
        });
    }
    Header::new(first.0.iter().map(|(k, _)| k.clone()).collect(), line)
}

/// A JSON value's type, as a column holds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    String,
    Number,
    Boolean,
}

impl JsonType {
    fn name(self) -> &'static str {
        match self {
            JsonType::String => "a string",
            JsonType::Number => "a number",
            JsonType::Boolean => "a boolean",
        }
    }
}

/// The JSON type of each column's first non-null value and its line: what later values must be.
#[derive(Debug, Clone)]
pub(crate) struct Columns {
    first: Vec<Option<(JsonType, u64)>>,
}

impl Columns {
    /// Nothing seen yet, for the columns of `header`.
    pub(crate) fn new(header: &Header) -> Columns {
        Columns {
            first: vec![None; header.len()],
        }
    }

    /// The cells of the object on `line`, in header order: a string is its text, `null` the
    /// empty text, a number or boolean its JSON text; every cell trimmed, as CSV fields are.
    pub(crate) fn cells(
        &mut self,
        object: &Members,
        header: &Header,
        line: u64,
    ) -> Result<Vec<String>, ReadError> {
        let members = &object.0;
        // Both sorted: the keys match when they are equal pairwise.
        if members.len() != header.len()
            || members
                .iter()
                .zip(header.names())
                .any(|((k, _), name)| k != name)
        {
            return Err(keys_error(members, header, line));
        }
        let mut cells = Vec::with_capacity(members.len());
        for ((column, value), first) in members.iter().zip(&mut self.first) {
            let (kind, text) = match value {
                Value::Null => {
                    cells.push(String::new());
                    continue;
                }
                Value::String(s) => (JsonType::String, s.trim().to_owned()),
                Value::Number(n) => (JsonType::Number, n.to_string()),
                Value::Bool(b) => (JsonType::Boolean, b.to_string()),
                Value::Object(_) | Value::Array(_) => {
                    return Err(ReadError::Nested {
                        line,
                        column: column.clone(),
                        kind: if value.is_object() { "object" } else { "array" },
                    });
                }
            };
            match *first {
                None => *first = Some((kind, line)),
                Some((expected, first_line)) if expected != kind => {
                    return Err(ReadError::MixedTypes {
                        line,
                        column: column.clone(),
                        found: kind.name(),
                        value: value.to_string(),
                        expected: expected.name(),
                        first_line,
                    });
                }
                Some(_) => {}
            }
            cells.push(text);
        }
        Ok(cells)
    }
}

fn keys_error(members: &[(String, Value)], header: &Header, line: u64) -> ReadError {
    let has = |name: &str| {
        members
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .is_ok()
    };
    let missing = header.names().iter().filter(|n| !has(n)).cloned().collect();
    let extra = members
        .iter()
        .filter(|(k, _)| header.position(k).is_none())
        .map(|(k, _)| k.clone())
        .collect();
    ReadError::Keys {
        line,
        missing,
        extra,
    }
}
