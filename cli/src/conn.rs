//! How `ndctl` reaches the chain: through the org's gRPC gateway over mTLS (`--gateway`, the
//! normal path for members), or straight to a CometBFT node's RPC (`--node`, for operators on a
//! validator host). Either is a [`ChainAccess`]; verified reads check the block header with a
//! light client anchored at the chain's genesis (`--genesis`) or at a trusted block (`--trust`),
//! so neither the gateway nor the node is trusted for them.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context as _, bail};
use clap::Args;
use neurodata_abci::query::{Query, Record, Typed};
use neurodata_client::gateway::{GatewayClient, GatewayTls};
use neurodata_client::light::{Anchor, default_options};
use neurodata_client::{
    Amount, Answer, ChainAccess, ClientError, Committed, LightBlock, LightClient, NodeClient,
    Signer, Submitter, Verified,
};
use neurodata_proto::chain::v1 as pb;

/// Where to send calls, and what to trust.
#[derive(Args, Clone, Debug)]
pub struct ChainArgs {
    /// CometBFT RPC address (used when no --gateway is given; the default is the local devnet's
    /// first node).
    #[arg(
        long,
        global = true,
        env = "NEURODATA_NODE",
        default_value = "http://127.0.0.1:26607"
    )]
    pub node: String,
    /// The org gateway, e.g. https://127.0.0.1:26608 (gRPC over mTLS with your member certificate).
    #[arg(long, global = true, env = "NEURODATA_GATEWAY")]
    pub gateway: Option<String>,
    /// The CA that issued the gateway's server certificate (the gateway org's root CA PEM).
    #[arg(long, global = true, env = "NEURODATA_GATEWAY_CA")]
    pub gateway_ca: Option<PathBuf>,
    /// The chain's genesis.json: verified reads accept a block header only if validators
    /// descending from its validator set signed it.
    #[arg(long, global = true, env = "NEURODATA_GENESIS")]
    pub genesis: Option<PathBuf>,
    /// Instead of --genesis: a block you trust, as HEIGHT:HASH (its header hash in hex, from a
    /// node you run or another member).
    #[arg(
        long,
        global = true,
        env = "NEURODATA_TRUST",
        conflicts_with = "genesis"
    )]
    pub trust: Option<String>,
    /// With neither: the genesis of the local devnet in this directory, if there is one.
    #[arg(
        long,
        global = true,
        env = "NEURODATA_DEVNET",
        default_value = "./devnet"
    )]
    pub devnet: PathBuf,
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
            "a gateway call needs your member certificate and key: pass --cert FILE --key FILE \
             (or set NEURODATA_CERT and NEURODATA_KEY)",
        )?;
        Some(GatewayTls::from_files(ca, cert, key)?)
    };
    // Its errors name the URL and the fix already.
    Ok(GatewayClient::connect(url, tls).await?)
}

/// Awaits a verified read, saying on a terminal what it waits for once it takes a moment: the
/// proof of the latest state needs the next block's header, which may be a second away.
async fn patiently<T>(read: impl std::future::Future<Output = T>) -> T {
    let read = std::pin::pin!(read);
    let notice = tokio::time::sleep(std::time::Duration::from_millis(700));
    tokio::pin!(notice);
    let mut read = read;
    tokio::select! {
        done = &mut read => return done,
        () = &mut notice => {
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!("waiting for the next block to prove the read…");
            }
        }
    }
    read.await
}

/// What verified reads trust.
enum Root {
    /// A genesis file's bytes.
    Genesis(Vec<u8>),
    /// A block by height and header hash.
    Block(u64, tendermint::Hash),
}

/// Where the highest block verified from `root` is saved: `$NEURODATA_TRUST_DIR` (default
/// `~/.neurodata/trusted`), one file per root, named by the SHA-256 of the root, so a devnet
/// made again with the same chain id never starts from the old one's blocks.
fn anchor_path(root: &Root) -> Option<PathBuf> {
    let dir = match std::env::var_os("NEURODATA_TRUST_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".neurodata/trusted"),
    };
    let id = match root {
        Root::Genesis(bytes) => openssl::sha::sha256(bytes),
        Root::Block(height, hash) => openssl::sha::sha256(format!("{height}:{hash}").as_bytes()),
    };
    Some(dir.join(format!("{}.json", hex::encode(id))))
}

/// The link to the chain.
pub enum Link {
    /// CometBFT RPC.
    Node(NodeClient),
    /// An org gateway.
    Gateway(GatewayClient),
}

impl ChainAccess for Link {
    async fn chain_id(&self) -> Result<String, ClientError> {
        match self {
            Link::Node(n) => n.chain_id().await,
            Link::Gateway(g) => g.chain_id().await,
        }
    }

    async fn latest_height(&self) -> Result<u64, ClientError> {
        match self {
            Link::Node(n) => n.latest_height().await,
            Link::Gateway(g) => g.latest_height().await,
        }
    }

    async fn read(&self, query: &Query, height: u64, prove: bool) -> Result<Answer, ClientError> {
        match self {
            Link::Node(n) => n.read(query, height, prove).await,
            Link::Gateway(g) => g.read(query, height, prove).await,
        }
    }

    async fn light_block(&self, height: u64) -> Result<LightBlock, ClientError> {
        match self {
            Link::Node(n) => n.light_block(height).await,
            Link::Gateway(g) => g.light_block(height).await,
        }
    }

    async fn broadcast(&self, tx: Vec<u8>) -> Result<Committed, ClientError> {
        match self {
            Link::Node(n) => n.broadcast(tx).await,
            Link::Gateway(g) => g.broadcast(tx).await,
        }
    }
}

/// A connection to the chain with what verified reads trust.
pub struct Conn {
    /// The link.
    pub link: Link,
    args: ChainArgs,
    light: OnceLock<LightClient>,
}

impl Conn {
    /// Connects as the member whose certificate and key are `identity` (needed for a gateway).
    pub async fn open(
        args: &ChainArgs,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> anyhow::Result<Conn> {
        let link = match args.gateway {
            None => Link::Node(NodeClient::new(&args.node)?),
            Some(_) => Link::Gateway(open_gateway(args, identity).await?),
        };
        Ok(Self::over(link, args))
    }

    /// A connection over `link`, trusting what `args` name.
    pub fn over(link: Link, args: &ChainArgs) -> Conn {
        Conn {
            link,
            args: args.clone(),
            light: OnceLock::new(),
        }
    }

    /// The trust root `args` name: the genesis file, a trusted block, or the local devnet's
    /// genesis; None if there is none.
    fn root(&self) -> anyhow::Result<Option<Root>> {
        let local = crate::devnet::genesis_path(&self.args.devnet);
        Ok(match (&self.args.genesis, &self.args.trust) {
            (Some(path), _) => Some(Root::Genesis(
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )),
            (None, Some(trust)) => {
                let (height, hash) = trust.split_once(':').context("--trust takes HEIGHT:HASH")?;
                let height: u64 = height.parse().context("--trust HEIGHT")?;
                let hash = tendermint::Hash::from_hex_upper(
                    tendermint::hash::Algorithm::Sha256,
                    &hash.to_uppercase(),
                )
                .context("--trust HASH: 64 hex digits")?;
                Some(Root::Block(height, hash))
            }
            (None, None) if local.exists() => Some(Root::Genesis(
                std::fs::read(&local).with_context(|| format!("reading {}", local.display()))?,
            )),
            (None, None) => None,
        })
    }

    /// The light client, built from the trust root on first use; it starts from the block the
    /// last `ndctl` of the same root verified, if saved (see [`anchor_path`]).
    async fn light(&self) -> anyhow::Result<&LightClient> {
        if let Some(l) = self.light.get() {
            return Ok(l);
        }
        let root = self.root()?.context(
            "a verified read needs a trust root: pass --genesis FILE (the chain's genesis.json; \
             `ndctl devnet up` prints it) or --trust HEIGHT:HASH",
        )?;
        let saved = anchor_path(&root).and_then(|p| std::fs::read(p).ok());
        let light = match (saved, &root) {
            (Some(bytes), _) if serde_json::from_slice::<Anchor>(&bytes).is_ok() => {
                let anchor: Anchor = serde_json::from_slice(&bytes)?;
                LightClient::from_anchor(anchor, default_options())
            }
            (_, Root::Genesis(bytes)) => LightClient::from_genesis(bytes, default_options())
                .context("the trust root (genesis)")?,
            (_, Root::Block(height, hash)) => {
                LightClient::from_trusted_block(&self.link, *height, *hash, default_options())
                    .await?
            }
        };
        let chain = self.link.chain_id().await?;
        if light.chain_id() != chain {
            bail!(
                "the trust root is for chain {}, the connection reaches chain {chain}",
                light.chain_id()
            );
        }
        Ok(self.light.get_or_init(|| light))
    }

    /// Saves the highest verified block for the next `ndctl` of the same root. Best effort: a
    /// read is verified whether or not its anchor could be written.
    fn save_anchor(&self) {
        let (Some(light), Ok(Some(root))) = (self.light.get(), self.root()) else {
            return;
        };
        let (Some(anchor), Some(path)) = (light.anchor(), anchor_path(&root)) else {
            return;
        };
        let write = || -> anyhow::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&anchor)?)?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        };
        if let Err(e) = write() {
            eprintln!(
                "note: could not save the verified block to {}: {e}",
                path.display()
            );
        }
    }

    /// Signs, sends and waits for the block; with a trust root, only for the chain it names.
    pub async fn submit(
        &self,
        signer: &Signer,
        fee: Amount,
        messages: Vec<pb::Message>,
    ) -> anyhow::Result<Committed> {
        let mut submitter = Submitter::new(&self.link, signer, fee);
        if self.root()?.is_some() {
            submitter = submitter.for_chain(self.light().await?.chain_id());
        }
        Ok(submitter.submit(messages).await?)
    }

    /// A single record, its proof checked against a light-client-verified header.
    pub async fn verified(&self, query: &Query) -> anyhow::Result<Verified> {
        let light = self.light().await?;
        let v = patiently(light.read(&self.link, query, 0)).await?;
        self.save_anchor();
        Ok(v)
    }

    /// The header of block `height`, verified by the light client (waiting for the block).
    pub async fn verified_header(&self, height: u64) -> anyhow::Result<tendermint::block::Header> {
        let light = self.light().await?;
        let wait = neurodata_client::light::NEXT_BLOCK_WAIT;
        match patiently(light.verify(&self.link, height, wait)).await {
            Ok(h) => {
                self.save_anchor();
                Ok(h)
            }
            // At or below the saved anchor (an earlier run verified past it): from the root.
            Err(ClientError::Proof(e)) if e.contains("trust root") => {
                let root = self.root()?.context("no trust root")?;
                let fresh = match &root {
                    Root::Genesis(bytes) => LightClient::from_genesis(bytes, default_options())?,
                    Root::Block(h, hash) => {
                        LightClient::from_trusted_block(&self.link, *h, *hash, default_options())
                            .await?
                    }
                };
                Ok(patiently(fresh.verify(&self.link, height, wait)).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A record read as [`Conn::verified`], decoded; None if proven absent.
    pub async fn record<R: Record>(&self, query: Typed<R>) -> anyhow::Result<Option<R>> {
        let light = self.light().await?;
        let r = patiently(light.record(&self.link, query)).await?;
        self.save_anchor();
        Ok(r)
    }

    /// A list (or any record) at the latest height, unproved: (value, height).
    pub async fn list<R: Record + Send + Default>(
        &self,
        query: Typed<R>,
    ) -> anyhow::Result<(R, u64)> {
        let (r, h) = self.link.record_with_height(query).await?;
        Ok((r.unwrap_or_default(), h))
    }
}
