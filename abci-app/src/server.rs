//! The `neurodata-abci` process: its command line, logging, store, snapshots and ABCI server
//! (the binary's `main` and the upgrade-rehearsal build both call [`run`]).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::abci::{Listen, Node, serve};
use crate::extension::{Attester, key_file_address};
use crate::governance::upgrade::Upgrade;
use crate::snapshot::Snapshots;
use crate::storage::Storage;
use anyhow::Context as _;
use clap::Parser;

/// Runs the NeuroData state machine behind an ABCI socket.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Directory of the RocksDB state store.
    #[arg(long, env = "NEURODATA_HOME", default_value = "./neurodata-data")]
    home: PathBuf,
    /// Listen address: `unix:///path/to/abci.sock` (default, fastest) or `tcp://127.0.0.1:26658`.
    #[arg(
        long,
        env = "NEURODATA_ABCI_LISTEN",
        default_value = "unix://./abci.sock"
    )]
    listen: String,
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "NEURODATA_LOG", default_value = "info")]
    log: String,
    /// This validator's CometBFT `priv_validator_key.json` (its public half gives the address
    /// the app attests as). Default: none, the node extends no votes.
    #[arg(long, env = "NEURODATA_VALIDATOR_KEY")]
    validator_key: Option<PathBuf>,
    /// The verdict inbox its verifier writes `job-<id>.json` files into (needs
    /// `--validator-key`). Default: none, the node extends no votes.
    #[arg(long, env = "NEURODATA_VERDICTS")]
    verdicts: Option<PathBuf>,
    /// Take a state-sync snapshot every this many heights (0: none; snapshots already on disk
    /// are still served).
    #[arg(long, env = "NEURODATA_SNAPSHOT_INTERVAL", default_value_t = 1000)]
    snapshot_interval: u64,
    /// Snapshots kept on disk (the newest).
    #[arg(long, env = "NEURODATA_SNAPSHOT_KEEP", default_value_t = 2)]
    snapshot_keep: usize,
    /// Where snapshots are written. Default: `snapshots` next to `--home`.
    #[arg(long, env = "NEURODATA_SNAPSHOT_DIR")]
    snapshot_dir: Option<PathBuf>,
    /// Keep only the state of the last this many heights readable (queries at older heights get
    /// a clear error); 0 keeps every height (an archive node). At least 2 otherwise.
    #[arg(long, env = "NEURODATA_PRUNING_KEEP_RECENT", default_value_t = 0)]
    pruning_keep_recent: u64,
    /// MiB of RocksDB block cache. It bounds the store's RocksDB memory: the memtables and the
    /// index and filter blocks are charged to it.
    #[arg(long, env = "NEURODATA_STORE_CACHE_MIB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(8..=65536))]
    store_cache_mib: u64,
    /// Log the store's memory (block cache, memtables, tree node cache) every this many seconds
    /// (0: never).
    #[arg(long, env = "NEURODATA_MEMORY_LOG_SECS", default_value_t = 300)]
    memory_log_secs: u64,
}

/// Who this node attests as, from `--validator-key` and `--verdicts`.
fn attester(cli: &Cli) -> anyhow::Result<Option<Attester>> {
    match (&cli.validator_key, &cli.verdicts) {
        (None, None) => Ok(None),
        (None, Some(_)) => {
            anyhow::bail!("--verdicts needs --validator-key: whose verdicts are they?")
        }
        (Some(key), None) => {
            tracing::warn!(key = %key.display(), "--validator-key without --verdicts: this validator extends no votes");
            Ok(None)
        }
        (Some(key), Some(dir)) => {
            let address = key_file_address(key)?;
            tracing::info!(address = %hex::encode_upper(address), verdicts = %dir.display(), "attesting training results");
            Ok(Some(Attester {
                address,
                verdicts: dir.clone(),
            }))
        }
    }
}

fn parse_listen(s: &str) -> anyhow::Result<Listen> {
    if let Some(path) = s.strip_prefix("unix://") {
        Ok(Listen::Unix(PathBuf::from(path)))
    } else if let Some(addr) = s.strip_prefix("tcp://") {
        Ok(Listen::Tcp(addr.to_owned()))
    } else {
        anyhow::bail!("listen address {s:?} must start with unix:// or tcp://")
    }
}

/// Logs the store's memory every `every`, so that an operator (and the soak) can tell the bounded
/// caches filling from growth outside them.
fn log_memory(storage: Storage, every: Duration) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(every);
            match storage.memory() {
                Ok(m) => tracing::info!(
                    cache_kib = m.cache_bytes >> 10,
                    cache_capacity_kib = m.cache_capacity >> 10,
                    memtable_kib = m.memtable_bytes >> 10,
                    table_reader_kib = m.table_reader_bytes >> 10,
                    tree_nodes = m.tree_nodes,
                    tree_kib = m.tree_bytes >> 10,
                    "store memory"
                ),
                Err(e) => tracing::warn!(error = %e, "reading the store's memory failed"),
            }
        }
    });
}

/// Runs the app process of a build that knows `upgrades` (see
/// [`crate::governance::upgrade::known`]).
pub async fn run(upgrades: Vec<Upgrade>) -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs =
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log));
    // No colour codes in a log file (`ndctl devnet` sends stdout, the subscriber's writer, to
    // abci.log); on a terminal, tracing's default (colour unless NO_COLOR is set).
    let logs = if std::io::stdout().is_terminal() {
        logs
    } else {
        logs.with_ansi(false)
    };
    logs.init();
    if let Some(f) = crate::fault::arm_from_env()? {
        tracing::warn!(fault = %f, "NEURODATA_FAULT is set: this process aborts at that point (crash tests only)");
    }
    let listen = parse_listen(&cli.listen)?;
    let attester = attester(&cli)?;
    let storage = Storage::open_sized(&cli.home, (cli.store_cache_mib << 20) as usize)
        .with_context(|| format!("opening state store {}", cli.home.display()))?
        .with_pruning(cli.pruning_keep_recent)?;
    let snapshot_dir = cli.snapshot_dir.clone().unwrap_or_else(|| {
        cli.home
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("snapshots")
    });
    let snapshots = Snapshots::new(
        snapshot_dir.clone(),
        cli.snapshot_interval,
        cli.snapshot_keep,
    )
    .with_context(|| format!("snapshot directory {}", snapshot_dir.display()))?;
    tracing::info!(
        dir = %snapshot_dir.display(),
        interval = cli.snapshot_interval,
        keep = cli.snapshot_keep,
        pruning_keep_recent = cli.pruning_keep_recent,
        "state-sync snapshots and pruning"
    );
    match storage
        .committed()
        .with_context(|| format!("reading state store {}", cli.home.display()))?
    {
        Some(c) => {
            tracing::info!(height = c.height, app_hash = %hex::encode(c.app_hash), "resuming")
        }
        None => tracing::info!("empty store: waiting for InitChain"),
    }
    if cli.memory_log_secs > 0 {
        log_memory(storage.clone(), Duration::from_secs(cli.memory_log_secs));
    }
    tracing::info!(?listen, "ABCI server listening");
    let node = Node::new(storage)
        .with_snapshots(snapshots)
        .with_upgrades(upgrades);
    node.check_build()?;
    let node = match attester {
        Some(a) => node.with_attester(a),
        None => node,
    };
    serve(Arc::new(node), listen)
        .await
        .map_err(|e| anyhow::anyhow!("ABCI server: {e}"))
}
