//! Disk use of the state store with and without pruning, on the same blocks.
//!
//! `cargo run --release -p neurodata-abci --example pruning_disk -- [BLOCKS] [KEEP_RECENT]`
//! commits BLOCKS blocks (default 2000) of a consortium-like write mix — 200 account updates, 20
//! new records and 5 deletions a block over 20,000 live keys — into an archive store and into one
//! keeping KEEP_RECENT heights (default 100), compacts both, and prints their sizes and ratio.
//! Along the way it prints the process's resident memory beside the store's own account of its
//! memory (block cache with the memtables charged to it, tree node cache): the caches fill up to
//! their bounds, and what lies outside them should stay level.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use neurodata_abci::storage::Storage;

fn du(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| {
                    let m = e.metadata().map(|m| m.len()).unwrap_or(0);
                    if e.path().is_dir() { du(&e.path()) } else { m }
                })
                .sum()
        })
        .unwrap_or(0)
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// This process's VmRSS and RssAnon, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

fn print_memory(label: &str, h: u64, store: &Storage) -> anyhow::Result<()> {
    let m = store.memory()?;
    let (rss, anon) = rss_kib();
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "{label} height {h:>5}: RSS {:6.1} MiB (anon {:6.1}); block cache {:5.1} of {:.0} MiB \
         (memtables {:5.1}), table readers {:4.1} MiB, tree cache {:5.1} MiB ({} nodes)",
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        mib(m.cache_bytes as u64),
        mib(m.cache_capacity as u64),
        mib(m.memtable_bytes),
        mib(m.table_reader_bytes),
        mib(m.tree_bytes as u64),
        m.tree_nodes
    );
    Ok(())
}

fn run(label: &str, store: &Storage, blocks: u64) -> anyhow::Result<f64> {
    let mut rng = Lcg(7);
    let mut genesis = BTreeMap::new();
    for k in 0..20_000u64 {
        genesis.insert(format!("account/{k:08}"), Some(vec![1u8; 96]));
    }
    store.commit(store.prepare(0, true, genesis)?)?;
    let mut next_record = 0u64;
    let start = Instant::now();
    for h in 1..=blocks {
        let mut w = BTreeMap::new();
        for _ in 0..200 {
            let k = rng.next() % 20_000;
            w.insert(
                format!("account/{k:08}"),
                Some(rng.next().to_be_bytes().repeat(12)),
            );
        }
        for _ in 0..20 {
            w.insert(format!("record/{next_record:010}"), Some(vec![2u8; 300]));
            next_record += 1;
        }
        for _ in 0..5 {
            if next_record > 100 {
                let k = rng.next() % next_record;
                w.insert(format!("record/{k:010}"), None);
            }
        }
        store.commit(store.prepare(h, false, w)?)?;
        if h % (blocks / 5).max(1) == 0 {
            print_memory(label, h, store)?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let blocks: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let keep: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let dir = tempfile::tempdir()?;
    let archive = Storage::open(&dir.path().join("archive"))?;
    let pruned = Storage::open(&dir.path().join("pruned"))?.with_pruning(keep)?;
    let ta = run("archive", &archive, blocks)?;
    let tp = run("pruned ", &pruned, blocks)?;
    archive.compact()?;
    pruned.compact()?;
    let (a, p) = (
        du(&dir.path().join("archive")),
        du(&dir.path().join("pruned")),
    );
    println!("blocks {blocks}, keep_recent {keep}");
    println!(
        "archive: {:.1} MiB, {:.0} blocks/s",
        a as f64 / 1048576.0,
        blocks as f64 / ta
    );
    println!(
        "pruned:  {:.1} MiB, {:.0} blocks/s (earliest height {:?})",
        p as f64 / 1048576.0,
        blocks as f64 / tp,
        pruned.earliest_height()?
    );
    println!(
        "pruned/archive disk ratio: {:.3}; commit speed ratio {:.2}",
        p as f64 / a as f64,
        ta / tp
    );
    Ok(())
}
