//! `neurodata-abci`: the NeuroData ABCI application that a CometBFT v0.38 node connects to.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use neurodata_abci::abci::{Listen, Node, serve};
use neurodata_abci::storage::Storage;

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    let listen = parse_listen(&cli.listen)?;
    let storage = Storage::open(&cli.home)
        .with_context(|| format!("opening state store {}", cli.home.display()))?;
    match storage.committed()? {
        Some(c) => {
            tracing::info!(height = c.height, app_hash = %hex::encode(c.app_hash), "resuming")
        }
        None => tracing::info!("empty store: waiting for InitChain"),
    }
    tracing::info!(?listen, "ABCI server listening");
    serve(Arc::new(Node::new(storage)), listen)
        .await
        .map_err(|e| anyhow::anyhow!("ABCI server: {e}"))
}
