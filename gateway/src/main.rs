//! `neurodata-gateway`: serves a member org's gRPC gateway.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// The gRPC gateway of a NeuroData member organisation.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML); every field can be overridden by NEURODATA_GATEWAY_<FIELD>.
    #[arg(long, env = "NEURODATA_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let logs = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "info,h2=warn,hyper=warn,tower=warn".into()),
    );
    // No colour codes in a log file (`ndctl devnet` sends stdout, the subscriber's writer, to
    // gateway.log); on a terminal, tracing's default (colour unless NO_COLOR is set).
    let logs = if std::io::stdout().is_terminal() {
        logs
    } else {
        logs.with_ansi(false)
    };
    logs.init();
    let args = Args::parse();
    let config =
        neurodata_gateway::Config::load(args.config.as_deref()).context("gateway configuration")?;
    let gateway = neurodata_gateway::Gateway::new(config)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("starting the gateway")?;
    gateway.serve().await.map_err(|e| anyhow::anyhow!("{e}"))
}
