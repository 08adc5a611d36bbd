//! Fault points: where crash tests kill the app on purpose.
//!
//! A block is safe against a crash at any instant only if every instant recovers; the instants
//! that matter are the ones between the steps that touch state. `NEURODATA_FAULT=<point>@<height>`
//! arms one point for one height, and the process aborts there (SIGABRT: no destructor runs, no
//! buffer is flushed, as with a kill or a power cut) when it executes that block:
//!
//! | point | where |
//! | --- | --- |
//! | `finalize` | inside FinalizeBlock, after the block's first transaction (or at its start) |
//! | `before-commit` | after FinalizeBlock answered, when Commit arrives, before anything is written |
//! | `commit-write` | inside Commit, the block's write batch built, not yet handed to RocksDB |
//! | `after-write` | inside Commit, the batch durable, before Commit answers CometBFT |
//!
//! Unset (every real deployment), a point costs one load of a `OnceLock`. The variable is read
//! once at startup, and an armed point is logged loudly, so nobody runs one by accident.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// A place in block execution where a crash test can kill the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// Inside FinalizeBlock, part of the block executed.
    Finalize,
    /// Between FinalizeBlock and Commit.
    BeforeCommit,
    /// Inside Commit, before the write.
    CommitWrite,
    /// Inside Commit, after the write, before the answer.
    AfterWrite,
}

impl Point {
    const ALL: [(Point, &'static str); 4] = [
        (Point::Finalize, "finalize"),
        (Point::BeforeCommit, "before-commit"),
        (Point::CommitWrite, "commit-write"),
        (Point::AfterWrite, "after-write"),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("?", |(_, n)| n)
    }
}

/// One armed point: abort at `point` while executing block `height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Where.
    pub point: Point,
    /// In which block.
    pub height: u64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.point.name(), self.height)
    }
}

/// A `NEURODATA_FAULT` value that names no point or height.
#[derive(Debug, thiserror::Error)]
#[error(
    "NEURODATA_FAULT={0:?}: expected POINT@HEIGHT with POINT one of finalize, before-commit, \
     commit-write, after-write and HEIGHT a block height"
)]
pub struct BadFault(String);

impl FromStr for Fault {
    type Err = BadFault;
    fn from_str(s: &str) -> Result<Self, BadFault> {
        let bad = || BadFault(s.to_owned());
        let (name, height) = s.split_once('@').ok_or_else(bad)?;
        let point = Point::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(p, _)| *p)
            .ok_or_else(bad)?;
        let height = height.parse().map_err(|_| bad())?;
        Ok(Fault { point, height })
    }
}

static ARMED: OnceLock<Option<Fault>> = OnceLock::new();

/// Arms the point `NEURODATA_FAULT` names, if any (once, at startup).
pub fn arm_from_env() -> Result<Option<Fault>, BadFault> {
    let fault = match std::env::var("NEURODATA_FAULT") {
        Ok(v) if !v.is_empty() => Some(v.parse::<Fault>()?),
        _ => None,
    };
    let _ = ARMED.set(fault);
    Ok(fault)
}

/// Aborts the process if `point` is armed for `height`.
pub fn hit(point: Point, height: u64) {
    if let Some(Some(f)) = ARMED.get()
        && f.point == point
        && f.height == height
    {
        eprintln!("neurodata-abci: fault point {f} reached: aborting (NEURODATA_FAULT)");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse_by_name_and_height() {
        for (point, name) in Point::ALL {
            let f: Fault = format!("{name}@12").parse().unwrap();
            assert_eq!(f, Fault { point, height: 12 });
            assert_eq!(f.to_string(), format!("{name}@12"));
        }
        for bad in [
            "finalize",
            "finalize@",
            "crash@3",
            "finalize@-1",
            "@3",
            "finalize@3x",
        ] {
            let e = bad.parse::<Fault>().unwrap_err().to_string();
            assert!(e.contains("expected POINT@HEIGHT"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_unarmed_point_does_nothing() {
        // Nothing armed in unit tests: every point passes.
        for (point, _) in Point::ALL {
            hit(point, 1);
        }
    }
}
