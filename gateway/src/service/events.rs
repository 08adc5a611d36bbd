//! `Events.Subscribe`: the chain's typed events, filtered by type and attributes, replayed from a
//! height and then followed live. A client that reconnects with `from_height` set to the last
//! height it saw plus one misses nothing. The stream ends with PERMISSION_DENIED if the caller's
//! certificate is revoked (or its org removed) while it is open, and the server stops reading
//! blocks for it as soon as the client goes away, replay included.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use neurodata_proto::gateway::v1 as gw;
use tendermint_rpc::Client as _;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Shared, caller, wait_until_refused};
use crate::auth::chain_status;
use crate::chain::{BlockOutcome, Chain, ChainError};

/// Which events a subscriber wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    types: Vec<String>,
    attributes: BTreeMap<String, String>,
}

impl Filter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &gw::Event) -> bool {
        (self.types.is_empty() || self.types.contains(&event.r#type))
            && self.attributes.iter().all(|(k, v)| {
                event
                    .attributes
                    .iter()
                    .any(|a| &a.key == k && &a.value == v)
            })
    }

    /// The matching events of a block, in order.
    pub fn select(&self, block: &BlockOutcome) -> Vec<gw::EventMessage> {
        let msg = |tx_hash: &str, e: &gw::Event| gw::EventMessage {
            height: block.height,
            tx_hash: tx_hash.to_owned(),
            event: Some(e.clone()),
            block_time_unix: block.time_unix,
        };
        block
            .txs
            .iter()
            .filter(|t| t.code == 0)
            .flat_map(|t| t.events.iter().map(move |e| (t.hash.as_str(), e)))
            .chain(block.block_events.iter().map(|e| ("", e)))
            .filter(|(_, e)| self.matches(e))
            .map(|(h, e)| msg(h, e))
            .collect()
    }
}

/// The Events service.
pub struct EventsService(pub Arc<Shared>);

type EventStream = Pin<Box<dyn Stream<Item = Result<gw::EventMessage, Status>> + Send>>;

#[tonic::async_trait]
impl gw::events_server::Events for EventsService {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        req: Request<gw::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        let filter = Filter {
            types: r.types,
            attributes: r.attributes,
        };
        let shared = self.0.clone();
        let latest = match shared.chain.tip().height {
            0 => shared
                .chain
                .rpc()
                .status()
                .await
                .map_err(|e| chain_status(shared.chain.rpc_error(e)))?
                .sync_info
                .latest_block_height
                .value(),
            h => h,
        };
        let next = if r.from_height == 0 {
            latest + 1
        } else {
            r.from_height
        };
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let refused = wait_until_refused(&shared, who.as_ref());
            tokio::pin!(refused);
            tokio::select! {
                status = &mut refused => { let _ = tx.send(Err(status)).await; }
                () = pump(shared.chain.as_ref(), &filter, next, &tx) => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Where the event pump reads blocks: the chain, or a stand-in in tests.
#[tonic::async_trait]
pub trait BlockSource: Send + Sync {
    /// The latest height the follower has published.
    fn tip_height(&self) -> u64;
    /// Reads block `height` with its results.
    async fn block(&self, height: u64) -> Result<BlockOutcome, ChainError>;
    /// New blocks as they are published.
    fn subscribe(&self) -> broadcast::Receiver<Arc<BlockOutcome>>;
}

#[tonic::async_trait]
impl BlockSource for Chain {
    fn tip_height(&self) -> u64 {
        self.tip().height
    }

    async fn block(&self, height: u64) -> Result<BlockOutcome, ChainError> {
        Chain::block(self, height).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<BlockOutcome>> {
        Chain::subscribe(self)
    }
}

/// How long the replay waits before reading a block again after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// Sends every matching event from height `next` on, until the client goes away. The client
/// going away is noticed at every step, in the replay too: a subscription from an early height
/// whose filter matches nothing (so nothing is ever sent, and no send can fail) would otherwise
/// read the whole chain for a client long gone, or retry a failing read forever.
pub async fn pump(
    source: &dyn BlockSource,
    filter: &Filter,
    mut next: u64,
    tx: &mpsc::Sender<Result<gw::EventMessage, Status>>,
) {
    let mut live = source.subscribe();
    loop {
        // Catch up by reading blocks directly up to what the follower has published.
        while next <= source.tip_height() {
            let read = tokio::select! {
                r = source.block(next) => r,
                () = tx.closed() => return,
            };
            match read {
                Ok(block) => {
                    for m in filter.select(&block) {
                        if tx.send(Ok(m)).await.is_err() {
                            return;
                        }
                    }
                    next += 1;
                }
                Err(e) => {
                    tracing::debug!(height = next, "event replay: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => {}
                        () = tx.closed() => return,
                    }
                }
            }
        }
        tokio::select! {
            r = live.recv() => match r {
                Ok(block) if block.height == next => {
                    for m in filter.select(&block) {
                        if tx.send(Ok(m)).await.is_err() {
                            return;
                        }
                    }
                    next += 1;
                }
                // Older than wanted, or ahead of us: the catch-up loop handles both.
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::TxOutcome;

    fn ev(t: &str, attrs: &[(&str, &str)]) -> gw::Event {
        gw::Event {
            r#type: t.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| gw::Attribute {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn filters_by_type_and_every_attribute_and_skips_failed_txs() {
        let block = BlockOutcome {
            height: 7,
            time_unix: 1,
            txs: vec![
                TxOutcome {
                    hash: "A".into(),
                    code: 0,
                    codespace: String::new(),
                    log: String::new(),
                    events: vec![
                        ev("nrc.transfer", &[("from", "x"), ("to", "y")]),
                        ev("fee.paid", &[("payer", "x")]),
                    ],
                },
                TxOutcome {
                    hash: "B".into(),
                    code: 5,
                    codespace: "tx".into(),
                    log: "bad".into(),
                    events: vec![ev("nrc.transfer", &[("from", "x"), ("to", "z")])],
                },
            ],
            block_events: vec![ev("proposal.passed", &[("id", "1")])],
        };
        let all = Filter::default().select(&block);
        assert_eq!(all.len(), 3);
        let f = Filter {
            types: vec!["nrc.transfer".into()],
            attributes: [("to".to_owned(), "y".to_owned())].into(),
        };
        let got = f.select(&block);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].tx_hash, "A");
        let f = Filter {
            types: vec![],
            attributes: [("to".to_owned(), "z".to_owned())].into(),
        };
        assert!(f.select(&block).is_empty());
    }

    /// A chain whose tip is far ahead and whose block reads fail or match nothing: counts reads.
    struct EndlessChain {
        reads: std::sync::atomic::AtomicU64,
        fail: bool,
        live: broadcast::Sender<Arc<BlockOutcome>>,
    }

    #[tonic::async_trait]
    impl BlockSource for EndlessChain {
        fn tip_height(&self) -> u64 {
            u64::MAX / 2
        }

        async fn block(&self, height: u64) -> Result<BlockOutcome, ChainError> {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Let the test's task run between reads, as a real RPC round trip would.
            tokio::task::yield_now().await;
            if self.fail {
                return Err(ChainError::Bad {
                    url: "test".into(),
                    reason: "no such block".into(),
                });
            }
            Ok(BlockOutcome {
                height,
                time_unix: 0,
                txs: vec![],
                block_events: vec![],
            })
        }

        fn subscribe(&self) -> broadcast::Receiver<Arc<BlockOutcome>> {
            self.live.subscribe()
        }
    }

    #[tokio::test]
    async fn replay_stops_when_the_client_goes_away() {
        for fail in [false, true] {
            let chain = Arc::new(EndlessChain {
                reads: Default::default(),
                fail,
                live: broadcast::channel(4).0,
            });
            let (tx, rx) = mpsc::channel(4);
            let source = chain.clone();
            let replay = tokio::spawn(async move {
                let filter = Filter {
                    types: vec!["nothing.matches".into()],
                    attributes: BTreeMap::new(),
                };
                pump(source.as_ref(), &filter, 1, &tx).await;
            });
            // Let it replay a while, then the client hangs up.
            while chain.reads.load(std::sync::atomic::Ordering::Relaxed) < 3 {
                tokio::task::yield_now().await;
            }
            drop(rx);
            let ended = tokio::time::timeout(Duration::from_secs(5), replay).await;
            assert!(
                matches!(ended, Ok(Ok(()))),
                "replay (reads failing: {fail}) still running after its client went away"
            );
        }
    }
}
