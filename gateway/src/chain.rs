//! The gateway's view of the chain: one CometBFT RPC client, and a follower task that reads every
//! new block with its execution results and fans them out to subscribers (event streams, commit
//! waits, the membership cache). Polling the RPC, rather than holding a websocket, means a
//! CometBFT restart needs no resubscription: the follower notices the node is back and carries on
//! from the next height it has not seen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use neurodata_abci::events::EventKind;
use neurodata_proto::gateway::v1 as gw;
use tendermint_rpc::{Client as _, HttpClient};
use tokio::sync::{broadcast, watch};

/// Event types after which cached membership verdicts are stale.
const MEMBERSHIP_EVENTS: [EventKind; 4] = [
    EventKind::CertificateRevoked,
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
    rpc: HttpClient,
    up: AtomicBool,
    blocks: broadcast::Sender<Arc<BlockOutcome>>,
    tip: watch::Sender<Tip>,
    /// Bumped when a block changes membership (revocation, org admitted/removed, CA rotated).
    membership_epoch: watch::Sender<u64>,
}

fn convert_events(events: &[tendermint::abci::Event]) -> Vec<gw::Event> {
    events
        .iter()
        .map(|e| gw::Event {
            r#type: e.kind.clone(),
            attributes: e
                .attributes
                .iter()
                .map(|a| gw::Attribute {
                    key: String::from_utf8_lossy(a.key_bytes()).into_owned(),
                    value: String::from_utf8_lossy(a.value_bytes()).into_owned(),
                })
                .collect(),
        })
        .collect()
}

impl Chain {
    /// A client for the CometBFT RPC at `url` (`http://host:port`).
    pub fn new(url: &str) -> Result<Arc<Self>, ChainError> {
        let rpc = HttpClient::new(url).map_err(|e| ChainError::Bad {
            url: url.into(),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(Chain {
            url: url.into(),
            rpc,
            up: AtomicBool::new(false),
            blocks: broadcast::channel(256).0,
            tip: watch::channel(Tip::default()).0,
            membership_epoch: watch::channel(0).0,
        }))
    }

    /// The raw RPC client.
    pub fn rpc(&self) -> &HttpClient {
        &self.rpc
    }

    /// Maps an RPC failure to a [`ChainError`], noting the node as down if it did not answer.
    pub fn rpc_error(&self, e: tendermint_rpc::Error) -> ChainError {
        // The error's Display ends with a source-location trace nobody calling us needs.
        let full = e.to_string();
        let reason = full
            .split("\n\nLocation:")
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        // An RPC-level error response means the node answered; anything else (refused, reset,
        // timed out, garbage) means it is not there for us.
        if matches!(e.detail(), tendermint_rpc::error::ErrorDetail::Response(_)) {
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

    /// An ABCI query at the latest height, without proof: the raw value (empty: absent). A
    /// refusal by the app is [`ChainError::Bad`] with its log.
    pub async fn query_latest(&self, path: &str, data: Vec<u8>) -> Result<Vec<u8>, ChainError> {
        let r = self
            .rpc
            .abci_query(Some(path.to_owned()), data, None, false)
            .await
            .map_err(|e| self.rpc_error(e))?;
        if r.code.is_err() {
            return Err(ChainError::Bad {
                url: self.url.clone(),
                reason: format!("query {path}: {}", r.log),
            });
        }
        Ok(r.value)
    }

    /// Reads block `height` and its results.
    pub async fn block(&self, height: u64) -> Result<BlockOutcome, ChainError> {
        let h = tendermint::block::Height::try_from(height).map_err(|e| ChainError::Bad {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        let (block, results) = tokio::try_join!(self.rpc.block(h), self.rpc.block_results(h))
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
            match self.rpc.status().await {
                Ok(status) => {
                    if !self.up.swap(true, Ordering::Relaxed) {
                        tracing::info!(url = %self.url, "CometBFT RPC reachable");
                    }
                    let latest = status.sync_info.latest_block_height.value();
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
