//! How `ndctl` reaches the chain: through the org's gRPC gateway over mTLS (`--gateway`, the
//! normal path for members), or straight to a CometBFT node's RPC (`--node`, for operators on a
//! validator host). Both give the same verified answers; the gateway path is what member orgs run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use neurodata_client::gateway::{GatewayClient, GatewayTls, QueryKind};
use neurodata_client::{Amount, NodeClient, Signer, Verified};
use neurodata_proto::chain::v1 as pb;

/// Where to send calls.
#[derive(Args, Clone, Debug)]
pub struct ChainArgs {
    /// CometBFT RPC address (used when no --gateway is given).
    #[arg(
        long,
        global = true,
        env = "NEURODATA_NODE",
        default_value = "http://127.0.0.1:26657"
    )]
    pub node: String,
    /// The org gateway, e.g. https://127.0.0.1:26608 (gRPC over mTLS with your member certificate).
    #[arg(long, global = true, env = "NEURODATA_GATEWAY")]
    pub gateway: Option<String>,
    /// The CA that issued the gateway's server certificate (the gateway org's root CA PEM).
    #[arg(long, global = true, env = "NEURODATA_GATEWAY_CA")]
    pub gateway_ca: Option<PathBuf>,
}

/// Connects to the gateway `args` name, as the member whose certificate and key are `identity`
/// (mTLS; not needed for a plain-text `http://` development gateway).
pub async fn open_gateway(
    args: &ChainArgs,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> anyhow::Result<GatewayClient> {
    let url = args
        .gateway
        .as_deref()
        .context("this command goes through an org gateway: pass --gateway URL --gateway-ca CA")?;
    let tls = if url.starts_with("http://") {
        None
    } else {
        let ca = args
            .gateway_ca
            .as_deref()
            .context("--gateway-ca: the gateway org's root CA is needed to trust the gateway")?;
        let (cert, key) = identity.context(
            "a gateway call needs your member certificate and key (--cert/--key, or the signer's)",
        )?;
        Some(GatewayTls::from_files(ca, cert, key)?)
    };
    GatewayClient::connect(url, tls)
        .await
        .with_context(|| format!("connecting to the gateway at {url}"))
}

/// A connection to the chain.
pub enum Conn {
    /// CometBFT RPC.
    Node(NodeClient),
    /// An org gateway.
    Gateway(GatewayClient),
}

impl Conn {
    /// Connects as the member whose certificate and key are `identity` (needed for a gateway).
    pub async fn open(
        args: &ChainArgs,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> anyhow::Result<Conn> {
        if args.gateway.is_none() {
            return Ok(Conn::Node(NodeClient::new(&args.node)?));
        }
        Ok(Conn::Gateway(open_gateway(args, identity).await?))
    }

    /// Signs, sends and waits for the block: (height, tx hash).
    pub async fn submit(
        &self,
        signer: &Signer,
        fee: Amount,
        messages: Vec<pb::Message>,
    ) -> anyhow::Result<(u64, String)> {
        Ok(match self {
            Conn::Node(n) => n.submit(signer, fee, messages).await?,
            Conn::Gateway(g) => g.submit(signer, fee, messages).await?,
        })
    }

    /// A single record, its proof checked against the next block's app hash.
    pub async fn verified(&self, kind: QueryKind) -> anyhow::Result<Verified> {
        Ok(match self {
            Conn::Node(n) => {
                let (path, data) = kind.path_and_data();
                n.query_verified(path, data, Duration::from_secs(30))
                    .await?
            }
            Conn::Gateway(g) => g.query_verified(kind, 0).await?,
        })
    }

    /// A list at the latest height: (encoded list, height).
    pub async fn list(&self, path: &str) -> anyhow::Result<(Vec<u8>, u64)> {
        Ok(match self {
            Conn::Node(n) => n.query_raw(path, vec![]).await?,
            Conn::Gateway(g) => g.list(path).await?,
        })
    }
}
