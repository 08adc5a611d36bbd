//! `neurodata-abci`: the NeuroData ABCI application that a CometBFT v0.38 node connects to.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    neurodata_abci::server::run(neurodata_abci::governance::upgrade::known()).await
}
