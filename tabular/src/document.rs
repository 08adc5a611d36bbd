//! A file held in memory: the trainer's reader. Large CSV without quotes is read by several
//! threads, each taking a run of whole lines; the runs' results come back in file order and the
//! first error in file order is the one returned, so the rows and errors are those of a
//! sequential read.

use crate::json::Columns;
use crate::json_array::{self, Expect};
use crate::records::{self, HeaderScan, Resume};
use crate::{Format, Header, ReadError, Row, json_lines};

/// Below this many bytes of rows a file is read on the calling thread.
const PARALLEL_MIN: usize = 1 << 20;

/// A whole file in memory, its header read.
#[derive(Debug, Clone)]
pub struct Document<'a> {
    bytes: &'a [u8],
    format: Format,
    header: Header,
    /// Where the rows start.
    body: Resume,
}

/// A run of whole records: where it starts and ends, and its first line.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: usize,
    end: usize,
    line: u64,
}

impl<'a> Document<'a> {
    /// Reads the header of `bytes`.
    pub fn parse(bytes: &'a [u8], format: Format) -> Result<Document<'a>, ReadError> {
        let start = Resume { at: 0, line: 1 };
        let (header, body) = match format {
            Format::Csv => match records::header(bytes, start, true)? {
                HeaderScan::Found(header, body) => (header, body),
                // A whole file is never cut.
                HeaderScan::Cut => return Err(ReadError::NoHeader),
            },
            Format::JsonLines => {
                json_lines::header(bytes, start, true)?.ok_or(ReadError::NoHeader)?
            }
            Format::JsonArray => {
                json_array::header(bytes, start, true)?.ok_or(ReadError::NoHeader)?
            }
        };
        Ok(Document {
            bytes,
            format,
            header,
            body,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Hands every row to `visit`, in file order, on the calling thread.
    pub fn rows<E: From<ReadError>>(
        &self,
        mut visit: impl FnMut(Row<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let all = Run {
            start: self.body.at,
            end: self.bytes.len(),
            line: self.body.line,
        };
        self.read_run(all, &mut visit)
    }

    /// Rows in the file.
    pub fn row_count(&self) -> Result<u64, ReadError> {
        let mut rows = 0u64;
        self.rows(|_| -> Result<(), ReadError> {
            rows += 1;
            Ok(())
        })?;
        Ok(rows)
    }

    /// Hands every row to `visit` with a sink of its run: a large CSV without quotes is cut into
    /// up to `threads` runs of whole lines, read at once on their own threads; anything else is
    /// one run on the calling thread. `open(lines)` makes a run's sink (`lines` bounds the rows
    /// it will hold); the sinks come back in file order.
    pub fn rows_parallel<S, E>(
        &self,
        threads: usize,
        open: impl Fn(usize) -> S + Sync,
        visit: impl Fn(&mut S, Row<'_>) -> Result<(), E> + Sync,
    ) -> Result<Vec<S>, E>
    where
        S: Send,
        E: From<ReadError> + Send,
    {
        let read = |run: Run| -> Result<S, E> {
            let mut sink = open(self.lines_in(run));
            self.read_run(run, &mut |row| visit(&mut sink, row))?;
            Ok(sink)
        };
        let runs = self.runs(threads);
        if runs.len() <= 1 {
            return runs.into_iter().map(read).collect();
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = runs
                .into_iter()
                .map(|run| s.spawn(move || read(run)))
                .collect();
            // Joined in file order: the first error in the file is the one returned.
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    /// Lines in a run, at least one: more than the rows it holds.
    fn lines_in(&self, run: Run) -> usize {
        (records::line_ends(&self.bytes[run.start..run.end]) as usize).saturating_add(1)
    }

    /// The body cut at line feeds into about `threads` equal runs, or one run when it is small,
    /// JSON (a column's JSON type is checked against its first value), or holds a quote (a quoted field may span a cut).
    fn runs(&self, threads: usize) -> Vec<Run> {
        let (body, len) = (self.body.at, self.bytes.len());
        let whole = vec![Run {
            start: body,
            end: len,
            line: self.body.line,
        }];
        let rows = &self.bytes[body..];
        if threads <= 1
            || self.format != Format::Csv
            || rows.len() < PARALLEL_MIN
            || memchr::memchr(b'"', rows).is_some()
        {
            return whole;
        }
        let mut runs = Vec::with_capacity(threads);
        let (mut start, mut line) = (body, self.body.line);
        for t in 1..=threads {
            let end = if t == threads {
                len
            } else {
                let target = (body + rows.len() * t / threads).max(start);
                memchr::memchr(b'\n', &self.bytes[target..len]).map_or(len, |p| target + p + 1)
            };
            if end > start {
                runs.push(Run { start, end, line });
                line += records::line_ends(&self.bytes[start..end]);
                start = end;
            }
        }
        runs
    }

    fn read_run<E: From<ReadError>>(
        &self,
        run: Run,
        visit: &mut impl FnMut(Row<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let input = &self.bytes[..run.end];
        let from = Resume {
            at: run.start,
            line: run.line,
        };
        let want = self.header.len();
        match self.format {
            Format::Csv => {
                records::each_record(input, from, true, |line, fields| {
                    visit(Row::csv(line, fields, want)?)
                })?;
            }
            Format::JsonLines => {
                let mut columns = Columns::new(&self.header);
                json_lines::each_object(
                    input,
                    from,
                    true,
                    &self.header,
                    &mut columns,
                    |line, fields| visit(Row { line, fields }),
                )?;
            }
            // The body starts at the first element, which `parse` read the header from.
            Format::JsonArray => {
                let mut columns = Columns::new(&self.header);
                json_array::each_object(
                    input,
                    from,
                    &mut Expect::First,
                    true,
                    &self.header,
                    &mut columns,
                    |line, fields| visit(Row { line, fields }),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(doc: &Document<'_>) -> Result<Vec<(u64, Vec<String>)>, ReadError> {
        let mut out = Vec::new();
        doc.rows(|row| -> Result<(), ReadError> {
            out.push((
                row.line,
                row.fields.iter().map(|f| (*f).to_owned()).collect(),
            ));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn a_large_csv_reads_the_same_rows_in_parallel_and_reports_the_first_bad_line() {
        let mut text = String::from("a,b\n");
        for i in 0..200_000 {
            text.push_str(&format!("{i},x{}\n", i % 7));
            if i % 1000 == 0 {
                text.push_str("\r\n");
            }
        }
        assert!(text.len() > PARALLEL_MIN);
        let doc = Document::parse(text.as_bytes(), Format::Csv).expect("header");
        assert!(doc.runs(3).len() == 3, "a large file is cut");
        let parts = doc
            .rows_parallel(
                3,
                |_| Vec::new(),
                |out: &mut Vec<(u64, String)>, row| -> Result<(), ReadError> {
                    out.push((row.line, row.fields[0].to_owned()));
                    Ok(())
                },
            )
            .expect("parallel");
        let parallel: Vec<(u64, String)> = parts.into_iter().flatten().collect();
        let sequential: Vec<(u64, String)> = rows(&doc)
            .expect("sequential")
            .into_iter()
            .map(|(line, f)| (line, f[0].clone()))
            .collect();
        assert_eq!(parallel, sequential);

        let mut lines: Vec<&str> = text.lines().collect();
        lines[150_000] = "1";
        lines[40_000] = "1,2,3";
        let bad = lines.join("\n");
        let doc = Document::parse(bad.as_bytes(), Format::Csv).expect("header");
        let err = doc
            .rows_parallel(3, |_| (), |_, _| -> Result<(), ReadError> { Ok(()) })
            .expect_err("ragged rows")
            .to_string();
        assert_eq!(err, "line 40001: 3 fields, the header has 2");
    }

    #[test]
    fn a_quote_anywhere_keeps_a_large_csv_on_one_thread() {
        let mut text = String::from("a,b\n");
        while text.len() <= PARALLEL_MIN {
            text.push_str("1,\"x,\ny\"\n");
        }
        let doc = Document::parse(text.as_bytes(), Format::Csv).expect("header");
        assert_eq!(doc.runs(4).len(), 1);
    }
}
