//! `Events.Subscribe`: the chain's typed events, filtered by type and attributes, replayed from a
//! height and then followed live. A client that reconnects with `from_height` set to the last
//! height it saw plus one misses nothing. The stream ends with PERMISSION_DENIED if the caller's certificate is
//! revoked (or its org removed) while it is open.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use neurodata_proto::gateway::v1 as gw;
use tendermint_rpc::Client as _;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Shared, caller, wait_until_refused};
use crate::auth::chain_status;
use crate::chain::BlockOutcome;

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
                () = pump(&shared, &filter, next, &tx) => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends every matching event from height `next` on, until the client goes away.
async fn pump(
    shared: &Shared,
    filter: &Filter,
    mut next: u64,
    tx: &mpsc::Sender<Result<gw::EventMessage, Status>>,
) {
    let mut live = shared.chain.subscribe();
    loop {
        // Catch up by reading blocks directly up to what the follower has published.
        while next <= shared.chain.tip().height {
            match shared.chain.block(next).await {
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
                    tokio::time::sleep(Duration::from_millis(500)).await;
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
}
