//! The column types a listing declares, the rule each type holds its cells to, and the inference
//! of a schema from the rows when none is declared.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::{CellError, Header, ReadError, Row, SchemaError};

/// A column with at most this many distinct values (and no better type) is inferred as a
/// category; with more, as a string.
pub const CATEGORY_MAX: usize = 20;

/// A column's type as a listing declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ColumnType {
    /// A 64-bit signed integer.
    Int,
    /// A finite decimal number ([`number`]).
    Float,
    /// `true` or `false`.
    Bool,
    /// A label from a small set; any text.
    Category,
    /// Any text.
    String,
}

impl ColumnType {
    /// The name a declaration and the listing use.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Bool => "bool",
            ColumnType::Category => "category",
            ColumnType::String => "string",
        }
    }

    /// Whether `cell` holds this type, and why not.
    pub fn check(self, cell: &str) -> Result<(), CellError> {
        match self {
            ColumnType::Int => cell
                .parse::<i64>()
                .map(drop)
                .map_err(|_| CellError::NotAnInteger),
            ColumnType::Float => number(cell).map(drop),
            ColumnType::Bool => match cell {
                "true" | "false" => Ok(()),
                _ => Err(CellError::NotABool),
            },
            ColumnType::Category | ColumnType::String => Ok(()),
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ColumnType {
    type Err = SchemaError;

    fn from_str(name: &str) -> Result<ColumnType, SchemaError> {
        Ok(match name {
            "int" => ColumnType::Int,
            "float" => ColumnType::Float,
            "bool" => ColumnType::Bool,
            "category" => ColumnType::Category,
            "string" => ColumnType::String,
            other => {
                return Err(SchemaError::UnknownType {
                    name: other.to_owned(),
                });
            }
        })
    }
}

/// A cell's finite number: the one rule for float columns and for the trainer's numeric
/// features. Rust's decimal syntax (`1`, `-2.5`, `3e-4`, `.5`); NaN and infinities are refused.
pub fn number(cell: &str) -> Result<f64, CellError> {
    match cell.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(_) => Err(CellError::NotFinite),
        Err(_) => Err(CellError::NotANumber),
    }
}

/// One column of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The header's name for it.
    pub name: String,
    /// Its type.
    pub kind: ColumnType,
}

/// The columns of a file, in header order, and their types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// One per header column, in order.
    pub columns: Vec<Column>,
}

impl Schema {
    /// Checks that the schema names the header's columns, in order.
    pub fn check_header(&self, header: &Header) -> Result<(), ReadError> {
        if self
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .ne(header.names().iter().map(String::as_str))
        {
            return Err(ReadError::HeaderMismatch {
                declared: self.columns.iter().map(|c| c.name.clone()).collect(),
                header: header.names().to_vec(),
            });
        }
        Ok(())
    }

    /// Checks every cell of a row (of a header [`Schema::check_header`] accepted) against its
    /// column's type.
    pub fn check_row(&self, row: Row<'_>) -> Result<(), ReadError> {
        for (column, &cell) in self.columns.iter().zip(row.fields) {
            column.kind.check(cell).map_err(|problem| ReadError::Cell {
                line: row.line,
                column: column.name.clone(),
                value: cell.to_owned(),
                problem,
            })?;
        }
        Ok(())
    }
}

impl FromStr for Schema {
    type Err = SchemaError;

    /// A declaration: `name:type,...` (types `int`, `float`, `bool`, `category`, `string`),
    /// spaces around names and types ignored.
    fn from_str(text: &str) -> Result<Schema, SchemaError> {
        let columns = text
            .split(',')
            .map(|entry| {
                let (name, kind) = entry.split_once(':').ok_or_else(|| SchemaError::Entry {
                    entry: entry.to_owned(),
                })?;
                Ok(Column {
                    name: name.trim().to_owned(),
                    kind: kind.trim().parse()?,
                })
            })
            .collect::<Result<_, SchemaError>>()?;
        Ok(Schema { columns })
    }
}

/// What the rows seen so far say about one column.
#[derive(Debug, Clone)]
struct Evidence {
    int: bool,
    float: bool,
    bool: bool,
    /// Distinct values, up to one more than [`CATEGORY_MAX`].
    values: BTreeSet<String>,
}

impl Evidence {
    /// Nothing seen can change the column's type any more: it is a string.
    fn settled(&self) -> bool {
        !(self.int || self.float || self.bool) && self.values.len() > CATEGORY_MAX
    }

    fn kind(&self) -> ColumnType {
        if self.int {
            ColumnType::Int
        } else if self.float {
            ColumnType::Float
        } else if self.bool {
            ColumnType::Bool
        } else if self.values.len() <= CATEGORY_MAX {
            ColumnType::Category
        } else {
            ColumnType::String
        }
    }
}

/// Infers a schema from rows: each column is the first of int, float, bool that every cell
/// holds, else a category when it has at most [`CATEGORY_MAX`] distinct values, else a string.
/// (With no rows at all, every column is an int.)
#[derive(Debug, Clone)]
pub struct Inference {
    names: Vec<String>,
    columns: Vec<Evidence>,
}

impl Inference {
    /// Nothing seen yet, for the columns of `header`.
    pub fn new(header: &Header) -> Inference {
        let blank = Evidence {
            int: true,
            float: true,
            bool: true,
            values: BTreeSet::new(),
        };
        Inference {
            names: header.names().to_vec(),
            columns: vec![blank; header.len()],
        }
    }

    /// Takes one row's cells into account.
    pub fn observe(&mut self, row: Row<'_>) {
        for (column, &cell) in self.columns.iter_mut().zip(row.fields) {
            if column.settled() {
                continue;
            }
            column.int &= column.int && ColumnType::Int.check(cell).is_ok();
            column.float &= column.float && ColumnType::Float.check(cell).is_ok();
            column.bool &= column.bool && ColumnType::Bool.check(cell).is_ok();
            if column.values.len() <= CATEGORY_MAX && !column.values.contains(cell) {
                column.values.insert(cell.to_owned());
            }
        }
    }

    /// The schema the rows seen support.
    pub fn schema(&self) -> Schema {
        Schema {
            columns: self
                .names
                .iter()
                .zip(&self.columns)
                .map(|(name, evidence)| Column {
                    name: name.clone(),
                    kind: evidence.kind(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Document, Format};

    fn inferred(text: &str) -> Vec<(String, ColumnType)> {
        let doc = Document::parse(text.as_bytes(), Format::Csv).expect("header");
        let mut inference = Inference::new(doc.header());
        doc.rows(|row| -> Result<(), ReadError> {
            inference.observe(row);
            Ok(())
        })
        .expect("rows");
        inference
            .schema()
            .columns
            .into_iter()
            .map(|c| (c.name, c.kind))
            .collect()
    }

    #[test]
    fn inference_takes_the_narrowest_type_every_cell_holds() {
        let mut text = String::from("i,f,b,c,s\n");
        for k in 0..=CATEGORY_MAX {
            text.push_str(&format!("{k},{k}.5,{},c{},s{k}\n", k % 2 == 0, k % 3));
        }
        let kinds: Vec<ColumnType> = inferred(&text).into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            kinds,
            [
                ColumnType::Int,
                ColumnType::Float,
                ColumnType::Bool,
                ColumnType::Category,
                ColumnType::String
            ]
        );
        // One cell decides: a float among ints, an empty cell among numbers.
        let kinds: Vec<ColumnType> = inferred("a,b\n1,1\n2.5,\n")
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        assert_eq!(kinds, [ColumnType::Float, ColumnType::Category]);
    }

    #[test]
    fn a_declared_schema_parses_and_refuses_unknown_types_and_bare_names() {
        let schema: Schema = " age : int,sex:category ".parse().expect("schema");
        assert_eq!(
            schema.columns,
            [
                Column {
                    name: "age".into(),
                    kind: ColumnType::Int
                },
                Column {
                    name: "sex".into(),
                    kind: ColumnType::Category
                }
            ]
        );
        assert_eq!(
            "age:integer"
                .parse::<Schema>()
                .expect_err("type")
                .to_string(),
            "column type \"integer\": expected int, float, string, bool or category"
        );
        assert_eq!(
            "age".parse::<Schema>().expect_err("entry").to_string(),
            "schema entry \"age\" is not name:type"
        );
    }

    #[test]
    fn a_cell_of_the_wrong_type_for_a_declared_schema_names_line_column_and_reason() {
        let schema: Schema = "n:int,x:float,ok:bool,tag:string".parse().expect("schema");
        let doc = Document::parse(b"n,x,ok,tag\n1,2,true,a\n", Format::Csv).expect("header");
        schema.check_header(doc.header()).expect("same names");
        let cases = [
            (
                ["1.5", "2", "true", "a"],
                "line 9, column \"n\": \"1.5\" is not an integer",
            ),
            (
                ["1", "two", "true", "a"],
                "line 9, column \"x\": \"two\" is not a number",
            ),
            (
                ["1", "NaN", "true", "a"],
                "line 9, column \"x\": \"NaN\" is not finite (NaN and infinities are refused)",
            ),
            (
                ["1", "2", "yes", "a"],
                "line 9, column \"ok\": \"yes\" is not true or false",
            ),
        ];
        for (fields, want) in cases {
            let err = schema
                .check_row(Row {
                    line: 9,
                    fields: &fields,
                })
                .expect_err(want);
            assert_eq!(err.to_string(), want);
        }
        let other: Schema = "x:float,n:int,ok:bool,tag:string".parse().expect("schema");
        assert!(matches!(
            other.check_header(doc.header()),
            Err(ReadError::HeaderMismatch { .. })
        ));
    }

    #[test]
    fn numbers_are_finite_decimals() {
        assert_eq!(number(" 1".trim()), Ok(1.0));
        assert_eq!(number("-3e2"), Ok(-300.0));
        assert_eq!(number("inf"), Err(CellError::NotFinite));
        assert_eq!(number("1,5"), Err(CellError::NotANumber));
        assert_eq!(number(""), Err(CellError::NotANumber));
    }
}
