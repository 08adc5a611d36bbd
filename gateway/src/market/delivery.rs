//! Automatic key delivery. The provider org's gateway watches for purchases of its datasets and
//! answers each with a `DeliverKey` tx: the data key from the keystore, wrapped to the buyer's
//! certificate key, signed by the gateway's delivery identity (a provider of the org).
//!
//! Deliveries run one at a time, each waiting for its block, so the delivery identity's nonces
//! never race. Before a delivery tx is broadcast its exact bytes are journaled; after a restart
//! the journaled tx is re-sent as is instead of signing a new one, so a delivery that was in
//! flight when the gateway died is neither lost nor made twice (and the chain refuses a second
//! `DeliverKey` for a purchase in any case). At start, and whenever a block opens a purchase
//! for the org, every purchase of the org still awaiting its key is (re)considered.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use neurodata_abci::amount::Amount;
use neurodata_client::{Signer, TxParams, msg};
use neurodata_crypto::wrap::wrap;
use neurodata_proto::chain::v1 as pb;
use tendermint_rpc::Client as _;
use tokio::sync::broadcast::error::RecvError;

use super::keystore::{KeyStore, write_atomic};
use super::query;
use crate::service::Shared;
use crate::service::tx::submit;

/// How long a delivery waits for its block.
const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// The delivery task's settings.
pub struct Delivery {
    shared: Arc<Shared>,
    signer: Signer,
    keystore: Arc<KeyStore>,
    org: String,
    journal: PathBuf,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Delivery {
    /// A delivery task for `org`, signing with `signer`, journaling under `journal`.
    pub fn new(
        shared: Arc<Shared>,
        signer: Signer,
        keystore: Arc<KeyStore>,
        org: String,
        journal: PathBuf,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(&journal)?;
        Ok(Delivery {
            shared,
            signer,
            keystore,
            org,
            journal,
        })
    }

    /// Runs until the gateway stops.
    pub async fn run(self) {
        let mut blocks = self.shared.chain.subscribe();
        let mut rescan = true;
        loop {
            if rescan && let Err(e) = self.scan().await {
                tracing::warn!("key delivery: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            rescan = match blocks.recv().await {
                Ok(block) => block.txs.iter().flat_map(|t| t.events.iter()).any(|e| {
                    e.r#type == "purchase.opened"
                        && e.attributes
                            .iter()
                            .any(|a| a.key == "provider_org" && a.value == self.org)
                }),
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            };
        }
    }

    fn journal_path(&self, purchase: u64) -> PathBuf {
        self.journal.join(format!("deliver-{purchase:020}.tx"))
    }

    /// Delivers every purchase of the org still awaiting its key.
    async fn scan(&self) -> Result<(), Error> {
        let filter = pb::PurchaseFilter {
            provider_org: self.org.clone(),
            open_only: true,
            ..Default::default()
        };
        let list: pb::PurchaseList = query(
            &self.shared.chain,
            "/purchases",
            neurodata_abci::query::filter_data(&filter),
        )
        .await?
        .unwrap_or_default();
        let awaiting: Vec<_> = list
            .purchases
            .into_iter()
            .filter(|p| p.status == pb::PurchaseStatus::AwaitingKey as i32)
            .collect();
        // Journal entries of purchases no longer awaiting are done.
        for entry in std::fs::read_dir(&self.journal)? {
            let path = entry?.path();
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix("deliver-"))
                .and_then(|s| s.parse::<u64>().ok());
            if let Some(id) = id
                && !awaiting.iter().any(|p| p.id == id)
            {
                std::fs::remove_file(&path)?;
            }
        }
        for p in awaiting {
            if let Err(e) = self.deliver(&p).await {
                tracing::error!(purchase = p.id, "key delivery failed: {e}");
            }
        }
        Ok(())
    }

    async fn deliver(&self, p: &pb::Purchase) -> Result<(), Error> {
        let path = self.journal_path(p.id);
        let tx = match std::fs::read(&path) {
            Ok(tx) => {
                tracing::info!(purchase = p.id, "re-sending the journaled delivery");
                tx
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let tx = self.sign_delivery(p).await?;
                write_atomic(&path, &tx)?;
                tx
            }
            Err(e) => return Err(e.into()),
        };
        match submit(&self.shared, tx, Some(COMMIT_WAIT)).await {
            Ok(r) if r.code == 0 => {
                tracing::info!(purchase = p.id, height = r.height, tx = %r.tx_hash, "key delivered");
                std::fs::remove_file(&path)?;
                Ok(())
            }
            Ok(r) => {
                // Refused (the window closed, the nonce moved on): the journaled tx can never
                // commit, so drop it; the next scan signs afresh if the purchase still waits.
                std::fs::remove_file(&path)?;
                Err(format!("delivery refused: {} {}: {}", r.codespace, r.code, r.log).into())
            }
            // Pending in a mempool already: the next block (and scan) settles it.
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(s) => Err(s.message().to_owned().into()),
        }
    }

    async fn sign_delivery(&self, p: &pb::Purchase) -> Result<Vec<u8>, Error> {
        let chain = &self.shared.chain;
        let dataset: pb::Dataset = query(chain, "/dataset", p.dataset_id.to_be_bytes().to_vec())
            .await?
            .ok_or_else(|| format!("dataset {} not found", p.dataset_id))?;
        let commitment = <[u8; 32]>::try_from(dataset.key_commitment.as_slice())
            .map_err(|_| "dataset key commitment is not 32 bytes")?;
        let key = self.keystore.get(&commitment)?.ok_or_else(|| {
            format!(
                "no data key with commitment {} in the keystore: deposit it (ndctl dataset upload does)",
                hex::encode(commitment)
            )
        })?;
        let buyer: pb::Identity = query(chain, "/identity", p.buyer.clone())
            .await?
            .ok_or("buyer identity not on chain")?;
        let wrapped = wrap(&key, &buyer.public_key_spki)?;
        let me = self.signer.address();
        let account: Option<pb::Account> = query(chain, "/account", me.0.to_vec()).await?;
        let known: Option<pb::Identity> = query(chain, "/identity", me.0.to_vec()).await?;
        let params: pb::Params = query(chain, "/params", vec![])
            .await?
            .ok_or("no chain parameters")?;
        let status = chain.rpc().status().await.map_err(|e| chain.rpc_error(e))?;
        let tx = self.signer.sign(
            TxParams {
                chain_id: status.node_info.network.to_string(),
                nonce: account.map(|a| a.nonce).unwrap_or(0),
                fee: params.min_fee.parse::<Amount>()?,
                attach_certificate: known.is_none(),
                memo: format!("key for purchase {}", p.id),
            },
            vec![msg::deliver_key(p.id, wrapped.to_bytes())],
        )?;
        Ok(tx)
    }
}
