//! Dropping the ciphertext of this org's delisted datasets: once a listing is delisted and no
//! purchase of it is still open (a buyer awaiting or holding a delivered key may still need to
//! download), its blob leaves the store (unpinned from IPFS, deleted from a directory or bucket)
//! and from the upload accounting. The rule is a scan of the chain, run at start and whenever a
//! block delists a dataset or closes a purchase, so a restart loses nothing: a blob is kept until
//! a scan finds it removable.

use std::sync::Arc;

use neurodata_abci::events::EventKind;
use neurodata_abci::query;
use neurodata_client::ChainAccess as _;
use neurodata_proto::chain::v1 as pb;
use tokio::sync::broadcast::error::RecvError;

use crate::cid::Cid;
use crate::service::Shared;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Whether a delisted dataset's ciphertext may go: no purchase of it holds it. Open purchases
/// (a buyer awaiting or holding a key, a validator's, a training job's or an evaluation's key
/// request) need it, and so does every paid sale: a buyer keeps the right to download what it
/// paid for. Refunded purchases let go, and so do closed no-money requests (validation,
/// training, evaluation): their holder had the key's whole confirm window to fetch the data. A
/// kind this gateway does not know holds the blob.
pub fn removable(dataset: &pb::Dataset, purchases: &[pb::Purchase]) -> bool {
    let lets_go = |p: &pb::Purchase| {
        let refunded = p.status == pb::PurchaseStatus::Refunded as i32
            || p.status == pb::PurchaseStatus::WrongKeyRefunded as i32;
        let open = p.status == pb::PurchaseStatus::AwaitingKey as i32
            || p.status == pb::PurchaseStatus::KeyDelivered as i32;
        match pb::PurchaseKind::try_from(p.kind) {
            Ok(pb::PurchaseKind::Sale) => refunded,
            Ok(
                pb::PurchaseKind::Validation
                | pb::PurchaseKind::Training
                | pb::PurchaseKind::Evaluation,
            ) => refunded || !open,
            Ok(pb::PurchaseKind::Unspecified) | Err(_) => false,
        }
    };
    dataset.status == pb::DatasetStatus::Delisted as i32
        && purchases
            .iter()
            .filter(|p| p.dataset_id == dataset.id)
            .all(lets_go)
}

/// The task.
pub struct Retire {
    shared: Arc<Shared>,
    org: String,
}

impl Retire {
    /// Retires the blobs of `org`'s delisted datasets.
    pub fn new(shared: Arc<Shared>, org: String) -> Self {
        Retire { shared, org }
    }

    /// Runs until the gateway stops.
    pub async fn run(self) {
        let mut blocks = self.shared.chain.subscribe();
        let mut scan = true;
        // A failed scan is tried again at the next block.
        let mut retry = false;
        loop {
            if scan || retry {
                retry = match self.scan().await {
                    Ok(()) => false,
                    Err(e) => {
                        tracing::warn!(
                            "retiring delisted blobs: {e}; trying again at the next block"
                        );
                        true
                    }
                };
            }
            scan = match blocks.recv().await {
                Ok(block) => {
                    block.txs.iter().flat_map(|t| t.events.iter()).any(|e| {
                        EventKind::DatasetDelisted == e.r#type.as_str()
                            || EventKind::PurchaseClosed == e.r#type.as_str()
                    }) || block
                        .block_events
                        .iter()
                        .any(|e| EventKind::PurchaseClosed == e.r#type.as_str())
                }
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            };
        }
    }

    async fn scan(&self) -> Result<(), Error> {
        let chain = &*self.shared.chain;
        let datasets = chain
            .record(query::datasets(pb::DatasetFilter {
                provider_org: self.org.clone(),
                include_delisted: true,
                ..Default::default()
            }))
            .await?
            .unwrap_or_default()
            .datasets;
        let purchases = chain
            .record(query::purchases(pb::PurchaseFilter {
                provider_org: self.org.clone(),
                ..Default::default()
            }))
            .await?
            .unwrap_or_default()
            .purchases;
        for d in datasets.iter().filter(|d| removable(d, &purchases)) {
            let Ok(cid) = d.cid.parse::<Cid>() else {
                tracing::warn!(dataset = d.id, cid = %d.cid, "delisted: not a CID, skipped");
                continue;
            };
            // Another live listing of the same bytes keeps them.
            if datasets
                .iter()
                .any(|o| o.cid == d.cid && o.status == pb::DatasetStatus::Listed as i32)
            {
                continue;
            }
            if self.shared.blobs.remove(&cid).await? {
                self.shared.uploads.forget(&cid)?;
                tracing::info!(dataset = d.id, cid = %cid, "delisted: ciphertext removed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delisted_dataset_goes_only_when_no_purchase_of_it_is_open() {
        let listed = pb::Dataset {
            id: 1,
            status: pb::DatasetStatus::Listed as i32,
            ..Default::default()
        };
        let delisted = pb::Dataset {
            status: pb::DatasetStatus::Delisted as i32,
            ..listed.clone()
        };
        let purchase =
            |dataset_id, status: pb::PurchaseStatus, kind: pb::PurchaseKind| pb::Purchase {
                dataset_id,
                status: status as i32,
                kind: kind as i32,
                ..Default::default()
            };
        use pb::PurchaseKind::{Sale, Validation};
        use pb::PurchaseStatus::{AwaitingKey, Confirmed, KeyDelivered, Refunded, Released};
        assert!(!removable(&listed, &[]));
        assert!(removable(&delisted, &[]));
        assert!(removable(&delisted, &[purchase(2, AwaitingKey, Sale)]));
        for held in [AwaitingKey, KeyDelivered, Confirmed, Released] {
            assert!(
                !removable(&delisted, &[purchase(1, held, Sale)]),
                "{held:?}"
            );
        }
        assert!(!removable(
            &delisted,
            &[purchase(1, KeyDelivered, Validation)]
        ));
        assert!(removable(&delisted, &[purchase(1, Released, Validation)]));
        assert!(removable(&delisted, &[purchase(1, Refunded, Sale)]));
    }

    #[test]
    fn a_delisted_dataset_is_kept_while_a_training_key_request_is_open() {
        let delisted = pb::Dataset {
            id: 1,
            status: pb::DatasetStatus::Delisted as i32,
            ..Default::default()
        };
        let request = |status: pb::PurchaseStatus| pb::Purchase {
            dataset_id: 1,
            status: status as i32,
            kind: pb::PurchaseKind::Training as i32,
            training_job: 12,
            ..Default::default()
        };
        use pb::PurchaseStatus::{AwaitingKey, Confirmed, KeyDelivered, Refunded, Released};
        for held in [AwaitingKey, KeyDelivered] {
            assert!(!removable(&delisted, &[request(held)]), "{held:?}");
        }
        for closed in [Released, Confirmed, Refunded] {
            assert!(removable(&delisted, &[request(closed)]), "{closed:?}");
        }
        // A closed training request does not let go of what an open sale holds.
        let sale = pb::Purchase {
            kind: pb::PurchaseKind::Sale as i32,
            ..request(KeyDelivered)
        };
        assert!(!removable(&delisted, &[request(Released), sale]));
    }

    #[test]
    fn a_purchase_of_unknown_kind_keeps_the_blob() {
        let delisted = pb::Dataset {
            id: 1,
            status: pb::DatasetStatus::Delisted as i32,
            ..Default::default()
        };
        let unknown = pb::Purchase {
            dataset_id: 1,
            status: pb::PurchaseStatus::Released as i32,
            kind: 99,
            ..Default::default()
        };
        assert!(!removable(&delisted, &[unknown]));
    }
}
