//! The gateway's view of the chain: one CometBFT RPC client, and a follower task that reads every
//! new block with its execution results and fans them out to subscribers (event streams, commit
//! waits, the membership cache). Polling the RPC, rather than holding a websocket, means a
//! CometBFT restart needs no resubscription: the follower notices the node is back and carries on
//! from the next height it has not seen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use neurodata_abci::events::EventKind;
use neurodata_abci::query::Query;
use neurodata_client::node::convert_events;
use neurodata_client::{Answer, ChainAccess, ClientError, Committed, LightBlock, NodeClient};
use neurodata_proto::gateway::v1 as gw;
use tendermint_rpc::{Client as _, HttpClient};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

/// How long the gateway's own txs (key deliveries) wait for their block.
const OWN_TX_WAIT: Duration = Duration::from_secs(30);

/// Event types after which cached membership verdicts are stale.
const MEMBERSHIP_EVENTS: [EventKind; 6] = [
    EventKind::CertificateRevoked,
    // A renewal or a move retires the identity moved from: its cached record says live.
    EventKind::CertificateRenewed,
    EventKind::IdentityMoved,
    EventKind::OrgAdmitted,
    EventKind::OrgRemoved,
    EventKind::OrgCaRotated,
];

/// A failure talking to CometBFT.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node did not answer.
    #[error("CometBFT RPC at {url} is unreachable: {reason}")]
    Unreachable {
        /// The RPC address.
        url: String,
        /// The transport's message.
        reason: String,
    },
    /// The node answered with something unusable.
    #[error("CometBFT RPC at {url}: {reason}")]
    Bad {
        /// The RPC address.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

impl From<ClientError> for ChainError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Unreachable { url, reason } => ChainError::Unreachable { url, reason },
            other => ChainError::Bad {
                url: "CometBFT".into(),
                reason: other.to_string(),
            },
        }
    }
}

/// Why a tx did not make it into a block.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// CometBFT has seen these exact bytes already.
    #[error(
        "this exact tx was already received (it is pending or committed); a new tx needs the \
         signer's next nonce"
    )]
    AlreadyReceived,
    /// The node failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Passed CheckTx, not in a block in time.
    #[error(
        "tx {hash} passed CheckTx but was not in a block within {} ms; it may still commit: query \
         it by hash or watch for its events", wait.as_millis()
    )]
    Timeout {
        /// The tx hash.
        hash: String,
        /// How long we waited.
        wait: Duration,
    },
    /// The follower stopped.
    #[error("gateway is shutting down")]
    ShuttingDown,
}

/// One executed tx of a block.
#[derive(Clone, Debug)]
pub struct TxOutcome {
    /// Upper-case hex SHA-256 of the tx bytes.
    pub hash: String,
    /// 0: executed.
    pub code: u32,
    /// Error codespace.
    pub codespace: String,
    /// The app's log.
    pub log: String,
    /// Events the tx emitted.
    pub events: Vec<gw::Event>,
}

/// A committed block's results.
#[derive(Clone, Debug)]
pub struct BlockOutcome {
    /// Height.
    pub height: u64,
    /// Header time, Unix seconds.
    pub time_unix: i64,
    /// The txs in block order.
    pub txs: Vec<TxOutcome>,
    /// Block-level (FinalizeBlock) events.
    pub block_events: Vec<gw::Event>,
}

impl BlockOutcome {
    /// Whether any event of the block changes who may call the gateway.
    pub fn touches_membership(&self) -> bool {
        self.txs
            .iter()
            .flat_map(|t| t.events.iter())
            .chain(self.block_events.iter())
            .any(|e| MEMBERSHIP_EVENTS.iter().any(|k| *k == e.r#type.as_str()))
    }
}

/// The latest block the follower has seen.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tip {
    /// Height.
    pub height: u64,
    /// Header time, Unix seconds.
    pub time_unix: i64,
}

/// The chain client shared by every service.
pub struct Chain {
    url: String,
    node: NodeClient,
    up: AtomicBool,
    blocks: broadcast::Sender<Arc<BlockOutcome>>,
    tip: watch::Sender<Tip>,
    /// Bumped when a block changes membership (revocation, org admitted/removed, CA rotated).
    membership_epoch: watch::Sender<u64>,
}

impl Chain {
    /// A client for the CometBFT RPC at `url` (`http://host:port`).
    pub fn new(url: &str) -> Result<Arc<Self>, ChainError> {
        let node = NodeClient::new(url).map_err(|e| ChainError::Bad {
            url: url.into(),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(Chain {
            url: url.into(),
            node,
            up: AtomicBool::new(false),
            blocks: broadcast::channel(256).0,
            tip: watch::channel(Tip::default()).0,
            membership_epoch: watch::channel(0).0,
        }))
    }

    /// The raw RPC client.
    pub fn rpc(&self) -> &HttpClient {
        self.node.rpc()
    }

    /// Maps an RPC failure to a [`ChainError`], noting the node as down if it did not answer.
    pub fn rpc_error(&self, e: tendermint_rpc::Error) -> ChainError {
        // An RPC-level error response means the node answered; anything else (refused, reset,
        // timed out, garbage) means it is not there for us.
        let answered = matches!(e.detail(), tendermint_rpc::error::ErrorDetail::Response(_));
        let reason = neurodata_client::one_line(&e);
        if answered {
            ChainError::Bad {
                url: self.url.clone(),
                reason,
            }
        } else {
            self.up.store(false, Ordering::Relaxed);
            ChainError::Unreachable {
                url: self.url.clone(),
                reason,
            }
        }
    }

    /// Whether the last RPC call reached the node.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// New blocks as the follower reads them.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BlockOutcome>> {
        self.blocks.subscribe()
    }

    /// The latest block seen.
    pub fn tip(&self) -> Tip {
        *self.tip.borrow()
    }

    /// Changes when membership may have changed.
    pub fn membership_epoch(&self) -> watch::Receiver<u64> {
        self.membership_epoch.subscribe()
    }

    /// Reads block `height` and its results.
    pub async fn block(&self, height: u64) -> Result<BlockOutcome, ChainError> {
        let h = tendermint::block::Height::try_from(height).map_err(|e| ChainError::Bad {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        let (block, results) = tokio::try_join!(self.rpc().block(h), self.rpc().block_results(h))
            .map_err(|e| self.rpc_error(e))?;
        let results_txs = results.txs_results.unwrap_or_default();
        let block = block.block;
        if results_txs.len() != block.data.len() {
            return Err(ChainError::Bad {
                url: self.url.clone(),
                reason: format!(
                    "block {height} has {} txs but {} results",
                    block.data.len(),
                    results_txs.len()
                ),
            });
        }
        let txs = block
            .data
            .iter()
            .zip(results_txs)
            .map(|(tx, r)| TxOutcome {
                hash: hex::encode_upper(openssl::sha::sha256(tx)),
                code: r.code.value(),
                codespace: r.codespace,
                log: r.log,
                events: convert_events(&r.events),
            })
            .collect();
        Ok(BlockOutcome {
            height,
            time_unix: block.header.time.unix_timestamp(),
            txs,
            block_events: convert_events(&results.finalize_block_events),
        })
    }

    /// Follows the chain forever: every `poll`, reads the blocks committed since the last look
    /// and publishes them in order. Survives the node going away and coming back.
    pub async fn follow(self: Arc<Self>, poll: Duration) {
        let mut next: Option<u64> = None;
        loop {
            match self.rpc().status().await {
                Ok(status) => {
                    if !self.up.swap(true, Ordering::Relaxed) {
                        tracing::info!(url = %self.url, "CometBFT RPC reachable");
                    }
                    // A block's results can be read before the app has committed its state:
                    // publish only blocks the app has committed, so whoever reacts to a block
                    // reads the state it left.
                    let committed = match self.rpc().abci_info().await {
                        Ok(info) => info.last_block_height.value(),
                        Err(e) => {
                            tracing::warn!(url = %self.url, "reading the app's height: {e}");
                            0
                        }
                    };
                    let latest = status.sync_info.latest_block_height.value().min(committed);
                    let mut h = next.unwrap_or(latest.max(1));
                    while h <= latest {
                        match self.block(h).await {
                            Ok(block) => {
                                self.publish(block);
                                h += 1;
                            }
                            Err(e) => {
                                tracing::warn!(height = h, "reading block: {e}");
                                break;
                            }
                        }
                    }
                    next = Some(h);
                }
                Err(e) => {
                    if self.up.swap(false, Ordering::Relaxed) {
                        tracing::warn!(url = %self.url, "CometBFT RPC unreachable: {e}");
                    }
                }
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Sends a signed tx to CometBFT; with `commit_wait`, waits up to that long for the block
    /// that holds it (seen by the follower) and answers with its execution result. A tx refused
    /// by CheckTx or the block is an answer with its code, not an error.
    pub async fn send(
        &self,
        tx: Vec<u8>,
        commit_wait: Option<Duration>,
    ) -> Result<gw::BroadcastResponse, SendError> {
        // Subscribe before sending, so the block holding the tx cannot pass unseen.
        let mut blocks = self.subscribe();
        let r = self.rpc().broadcast_tx_sync(tx).await.map_err(|e| {
            let e = self.rpc_error(e);
            // CometBFT refuses bytes it has already seen with an RPC error, not a CheckTx code.
            if e.to_string().contains("tx already exists in cache") {
                SendError::AlreadyReceived
            } else {
                SendError::Chain(e)
            }
        })?;
        let hash = r.hash.to_string();
        let mut out = gw::BroadcastResponse {
            tx_hash: hash.clone(),
            code: r.code.value(),
            codespace: r.codespace,
            log: r.log,
            height: 0,
            events: vec![],
        };
        let Some(wait) = commit_wait else {
            return Ok(out);
        };
        if out.code != 0 {
            return Ok(out);
        }
        let (height, t) = tokio::time::timeout(wait, async {
            loop {
                match blocks.recv().await {
                    Ok(block) => {
                        if let Some(t) = block.txs.iter().find(|t| t.hash == hash) {
                            return Ok((block.height, t.clone()));
                        }
                    }
                    // Fell behind the follower: look the tx up in the blocks we skipped.
                    Err(RecvError::Lagged(_)) => {
                        let tip = self.tip().height;
                        for h in tip.saturating_sub(300)..=tip {
                            if let Ok(block) = self.block(h).await
                                && let Some(t) = block.txs.iter().find(|t| t.hash == hash)
                            {
                                return Ok((h, t.clone()));
                            }
                        }
                    }
                    Err(RecvError::Closed) => return Err(SendError::ShuttingDown),
                }
            }
        })
        .await
        .map_err(|_| SendError::Timeout {
            hash: hash.clone(),
            wait,
        })??;
        out.height = height;
        out.code = t.code;
        out.codespace = t.codespace;
        out.log = t.log;
        out.events = t.events;
        Ok(out)
    }

    fn publish(&self, block: BlockOutcome) {
        if block.touches_membership() {
            self.membership_epoch.send_modify(|e| *e += 1);
        }
        self.tip.send_replace(Tip {
            height: block.height,
            time_unix: block.time_unix,
        });
        // No subscribers is fine.
        let _ = self.blocks.send(Arc::new(block));
    }
}

/// The gateway's own chain handle as a [`ChainAccess`]: reads go to its node, and a broadcast
/// waits for the follower to see the block.
impl ChainAccess for Chain {
    async fn chain_id(&self) -> Result<String, ClientError> {
        self.noted(self.node.chain_id().await)
    }

    async fn latest_height(&self) -> Result<u64, ClientError> {
        self.noted(self.node.latest_height().await)
    }

    async fn read(&self, query: &Query, height: u64, prove: bool) -> Result<Answer, ClientError> {
        self.noted(self.node.read(query, height, prove).await)
    }

    async fn light_block(&self, height: u64) -> Result<LightBlock, ClientError> {
        self.noted(self.node.light_block(height).await)
    }

    async fn broadcast(&self, tx: Vec<u8>) -> Result<Committed, ClientError> {
        let r = self
            .send(tx, Some(OWN_TX_WAIT))
            .await
            .map_err(|e| match e {
                SendError::Chain(ChainError::Unreachable { url, reason }) => {
                    ClientError::Unreachable { url, reason }
                }
                SendError::Timeout { .. } => ClientError::Timeout(e.to_string()),
                SendError::AlreadyReceived => ClientError::AlreadyReceived,
                other => ClientError::Transport(other.to_string()),
            })?;
        Committed::from_response(r)
    }
}

impl Chain {
    /// Notes the node as down when a call did not reach it.
    fn noted<T>(&self, r: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(ClientError::Unreachable { .. }) = &r {
            self.up.store(false, Ordering::Relaxed);
        }
        r
    }
}
