//! Why a file or a declared schema was refused. Every variant about a file names the line, and
//! the field or column where there is one, so the message says what to fix where.

/// Why a file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The source could not be read. The cause is in the message, not a `source()`, so a
    /// report of the whole chain says it once.
    #[error("reading the file: {0}")]
    Io(std::io::Error),
    /// Nothing but blank lines (or whitespace, or an empty JSON array): no header row.
    #[error("the file is empty: a table needs a header row")]
    NoHeader,
    /// A UTF-8 byte order mark first. Refused rather than skipped: it is part of the bytes whose
    /// SHA-256 is listed, and tools that do not expect it read it into the first column's name.
    #[error("the file starts with a byte order mark: save it as UTF-8 without BOM")]
    ByteOrderMark,
    /// A header column without a name.
    #[error("line {line}: header column {column} has no name")]
    UnnamedColumn {
        /// 1-based line of the header.
        line: u64,
        /// 1-based column.
        column: usize,
    },
    /// Two header columns with one name.
    #[error("line {line}: the header names column {name:?} twice")]
    DuplicateColumn {
        /// 1-based line of the header.
        line: u64,
        /// The repeated name.
        name: String,
    },
    /// A row with more or fewer fields than the header.
    #[error("line {line}: {got} fields, the header has {want}")]
    Width {
        /// 1-based line where the row starts.
        line: u64,
        /// Fields in the row.
        got: usize,
        /// Fields in the header.
        want: usize,
    },
    /// A quoted field that the file ends inside.
    #[error("line {line}, field {column}: the quoted field opened here is never closed")]
    UnclosedQuote {
        /// 1-based line of the opening quote.
        line: u64,
        /// 1-based field of the record.
        column: usize,
    },
    /// Text between a closing quote and the next comma or line end.
    #[error(
        "line {line}, field {column}: text after the closing quote (a quote inside a quoted field is written twice, \"\")"
    )]
    TextAfterQuote {
        /// 1-based line of the closing quote.
        line: u64,
        /// 1-based field of the record.
        column: usize,
    },
    /// Bytes that are not UTF-8 text.
    #[error("line {line}, field {column}: the text is not UTF-8")]
    NotUtf8 {
        /// 1-based line where the record starts.
        line: u64,
        /// 1-based field of the record (1 for a JSON line).
        column: usize,
    },
    /// A JSON-lines line that is not one JSON object.
    #[error("line {line}: {message}")]
    Json {
        /// 1-based line.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// A JSON value that is an object or an array: a cell holds one flat value.
    #[error(
        "line {line}, column {column:?}: a nested {kind} is not a cell value (the rows must be flat objects: make it a column of its own, or a string)"
    )]
    Nested {
        /// 1-based line where the row's object starts.
        line: u64,
        /// The key.
        column: String,
        /// `object` or `array`.
        kind: &'static str,
    },
    /// A JSON value of another type than the column's earlier values (`null` aside).
    #[error(
        "line {line}, column {column:?}: {found} {value} where line {first_line} holds {expected}: a column holds one JSON type (null for no value)"
    )]
    MixedTypes {
        /// 1-based line where the row's object starts.
        line: u64,
        /// The key.
        column: String,
        /// The JSON type found (`a string`, `a number`, `a boolean`).
        found: &'static str,
        /// The value as written in JSON.
        value: String,
        /// The JSON type of the column's first value.
        expected: &'static str,
        /// The line of the column's first value.
        first_line: u64,
    },
    /// A JSON object whose keys are not the first object's.
    #[error(
        "line {line}: keys differ from the first object's: missing {missing:?}, unexpected {extra:?}"
    )]
    Keys {
        /// 1-based line.
        line: u64,
        /// Header keys the object lacks.
        missing: Vec<String>,
        /// Keys the header lacks.
        extra: Vec<String>,
    },
    /// A declared schema whose columns are not the header's.
    #[error("the declared columns {declared:?} do not match the header {header:?}")]
    HeaderMismatch {
        /// Names the schema declares, in order.
        declared: Vec<String>,
        /// Names the header holds, in order.
        header: Vec<String>,
    },
    /// A cell that does not hold its column's type.
    #[error("line {line}, column {column:?}: {value:?} {problem}")]
    Cell {
        /// 1-based line where the row starts.
        line: u64,
        /// The column's name.
        column: String,
        /// The text found.
        value: String,
        /// Why it does not fit.
        problem: CellError,
    },
}

/// Why a cell's text does not hold a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CellError {
    /// Not a decimal number at all.
    #[error("is not a number")]
    NotANumber,
    /// NaN or an infinity, which no column may hold.
    #[error("is not finite (NaN and infinities are refused)")]
    NotFinite,
    /// Not a 64-bit signed integer.
    #[error("is not an integer")]
    NotAnInteger,
    /// Not `true` or `false`.
    #[error("is not true or false")]
    NotABool,
}

/// A format name that is not one of [`crate::Format`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("format {name:?}: expected csv, jsonl or json")]
pub struct UnknownFormat {
    /// The name as written.
    pub name: String,
}

/// Why a declared schema (`name:type,...`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// An entry without the `:` between name and type.
    #[error("schema entry {entry:?} is not name:type")]
    Entry {
        /// The entry as written.
        entry: String,
    },
    /// A type name that is not one of the five.
    #[error("column type {name:?}: expected int, float, string, bool or category")]
    UnknownType {
        /// The type as written.
        name: String,
    },
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}
