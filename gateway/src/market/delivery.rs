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
//!
//! Before a key leaves the keystore, the purchase is vetted ([`vet`]): a validator's key request
//! (`PURCHASE_KIND_VALIDATION`, no money) is served only under the org's explicit policy
//! `deliver_validation_keys` (finding 1 of the audit); a training job's key request
//! (`PURCHASE_KIND_TRAINING`, no money, opened by the chain for the job's assigned worker and for
//! the operators of validators attesting its result) is served like a sale, whatever that policy:
//! a provider listing data for sale agrees to on-platform training of it, and the chain opens
//! these only for a job that bought (or provides) the data. A hidden evaluation split's key
//! request (`PURCHASE_KIND_EVALUATION`, opened by the chain for the operators of the validators
//! scoring a model on the split) is served like a training one: the provider registered the
//! split for exactly that. The key must have been deposited by the dataset's provider for the
//! dataset's own ciphertext CID — otherwise a rogue provider's decoy listing carrying a
//! colleague's key commitment would get the colleague's key delivered to its buyers (finding 7).
//! A model sale (`Purchase.model_listing`) is vetted the same way against the model listing: the
//! key must have been deposited by the listing's owner for the listing's ONNX-export ciphertext
//! (both ciphertexts share the key). A validator's key request of a model listing is delivered
//! like its sales, whatever `deliver_validation_keys` says: validators attest the ciphertexts
//! with that key (`AttestModelListing`), and buyers wait for the listing to be verified. A
//! refused purchase is logged once and never delivered.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neurodata_abci::address::Address;
use neurodata_abci::amount::Amount;
use neurodata_abci::events::{EventKind, attr};
use neurodata_abci::query;
use neurodata_client::{ChainAccess, ClientError, Signer, Submitter, msg};
use neurodata_crypto::DataKey;
use neurodata_crypto::wrap::wrap;
use neurodata_proto::chain::v1 as pb;
use tokio::sync::broadcast::error::RecvError;

use super::keystore::{Deposit, KeyStore, write_atomic};
use crate::service::Shared;

/// The delivery task's settings.
pub struct Delivery {
    shared: Arc<Shared>,
    signer: Signer,
    keystore: Arc<KeyStore>,
    org: String,
    journal: PathBuf,
    /// Purchases whose refusal was logged, so each is logged once while it waits.
    refused: Mutex<BTreeSet<u64>>,
}

/// Why the gateway will not deliver a purchase's key, whatever happens next.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A validator's key request, and the org does not deliver to those.
    #[error(
        "purchase {purchase} is a validator's key request (PURCHASE_KIND_VALIDATION); this org \
         does not deliver validation keys (gateway setting deliver_validation_keys = false)"
    )]
    ValidationRequest {
        /// The purchase.
        purchase: u64,
    },
    /// A purchase of a kind this gateway does not know: no key for what it cannot vet.
    #[error(
        "purchase {purchase} is of unknown kind {kind}; this gateway delivers keys for sales, \
         training and evaluation key requests and (by policy) validation requests only"
    )]
    UnknownKind {
        /// The purchase.
        purchase: u64,
        /// Its kind on the wire.
        kind: i32,
    },
    /// The key was deposited by someone other than the listing's provider (or owner).
    #[error(
        "{item} is listed by {provider}, but the key with its commitment was deposited by \
         {depositor}: a key is delivered only for its depositor's own listing (a listing that \
         reuses a colleague's key commitment?)"
    )]
    NotDepositor {
        /// The dataset or model listing.
        item: Item,
        /// Its provider's (owner's) fingerprint, hex.
        provider: String,
        /// The depositor's fingerprint, hex.
        depositor: String,
    },
    /// The key was deposited for another ciphertext.
    #[error(
        "{item} lists ciphertext {listed}, but the key with its commitment was deposited for \
         ciphertext {deposited}: a key is delivered only for the ciphertext it was deposited with"
    )]
    OtherCiphertext {
        /// The dataset or model listing.
        item: Item,
        /// The listing's CID (a model's: its ONNX export's ciphertext).
        listed: String,
        /// The deposit's CID.
        deposited: String,
    },
}

/// What a purchase buys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// A dataset (a hidden evaluation split included).
    Dataset(u64),
    /// A model listing.
    Model(u64),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Dataset(id) => write!(f, "dataset {id}"),
            Item::Model(id) => write!(f, "model listing {id}"),
        }
    }
}

/// A listing as the delivery rule reads it: what it sells, who listed it and the ciphertext
/// its key opens.
#[derive(Clone, Copy, Debug)]
pub struct Listed<'a> {
    /// The dataset or model listing.
    pub item: Item,
    /// Its provider (a model's: its owner), by certificate fingerprint.
    pub lister: &'a [u8],
    /// The ciphertext the deposited key must have been deposited for (a model's: the ONNX
    /// export's, the CID its owner deposits the shared key with).
    pub cid: &'a str,
}

impl<'a> Listed<'a> {
    /// A dataset's listing.
    pub fn dataset(d: &'a pb::Dataset) -> Self {
        Listed {
            item: Item::Dataset(d.id),
            lister: &d.provider,
            cid: &d.cid,
        }
    }

    /// A model listing.
    pub fn model(l: &'a pb::ModelListing) -> Self {
        Listed {
            item: Item::Model(l.id),
            lister: &l.owner,
            cid: &l.onnx_cid,
        }
    }
}

/// Whether this org delivers keys for purchases of `p`'s kind: sales, training and evaluation
/// key requests always, validators' key requests of a model listing always, and validators' key
/// requests of a dataset only if `deliver_validation_keys`.
pub fn kind_allowed(p: &pb::Purchase, deliver_validation_keys: bool) -> Result<(), Refusal> {
    match pb::PurchaseKind::try_from(p.kind) {
        // A model listing is verified only by validators who hold its key (the chain refuses an
        // attestation without one), and buyers wait for that: listing a model for sale is
        // agreeing to its verification, so the org's dataset policy does not apply.
        Ok(pb::PurchaseKind::Validation) if p.model_listing != 0 => Ok(()),
        // A training key request goes to the job's worker or an attesting validator's operator,
        // wrapped to that purchase's buyer certificate like a sale's: the provider agreed to
        // on-platform training of the data it sells, so `deliver_validation_keys` does not
        // apply. An evaluation key request goes to the operator of a validator scoring a model
        // on a hidden split, which its provider registered for exactly that.
        Ok(pb::PurchaseKind::Sale | pb::PurchaseKind::Training | pb::PurchaseKind::Evaluation) => {
            Ok(())
        }
        Ok(pb::PurchaseKind::Validation) if deliver_validation_keys => Ok(()),
        Ok(pb::PurchaseKind::Validation) => Err(Refusal::ValidationRequest { purchase: p.id }),
        Ok(pb::PurchaseKind::Unspecified) | Err(_) => Err(Refusal::UnknownKind {
            purchase: p.id,
            kind: p.kind,
        }),
    }
}

/// Whether the key of `deposit` may be delivered for purchase `p` of `listed` (a dataset or a
/// model listing). `successors` are the identities the depositor was moved to by its org's
/// admin (`MoveIdentity`, which also moves its listings), in order: the depositor's listing
/// stays deliverable after a move.
pub fn vet(
    p: &pb::Purchase,
    listed: Listed<'_>,
    deposit: &Deposit,
    successors: &[Vec<u8>],
    deliver_validation_keys: bool,
) -> Result<(), Refusal> {
    kind_allowed(p, deliver_validation_keys)?;
    if listed.lister != deposit.depositor && !successors.iter().any(|s| s == listed.lister) {
        return Err(Refusal::NotDepositor {
            item: listed.item,
            provider: hex::encode(listed.lister),
            depositor: hex::encode(deposit.depositor),
        });
    }
    if listed.cid != deposit.cid {
        return Err(Refusal::OtherCiphertext {
            item: listed.item,
            listed: listed.cid.to_owned(),
            deposited: deposit.cid.clone(),
        });
    }
    Ok(())
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
            refused: Mutex::new(BTreeSet::new()),
        })
    }

    /// Runs until the gateway stops.
    pub async fn run(self) {
        let mut blocks = self.shared.chain.subscribe();
        let mut rescan = true;
        loop {
            // A delivery that failed for a passing reason (a node not yet serving a block's
            // results, a full mempool) is tried again at the next block, not only when another
            // purchase opens.
            let mut retry = false;
            if rescan {
                match self.scan().await {
                    Ok(failed) => retry = failed,
                    Err(e) => {
                        tracing::warn!("key delivery: {e}; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let opened = match blocks.recv().await {
                // Training key requests are opened by the chain inside a worker's or validator
                // operator's tx today; a block event counts too, should one ever open there.
                Ok(block) => block
                    .txs
                    .iter()
                    .flat_map(|t| t.events.iter())
                    .chain(block.block_events.iter())
                    .any(|e| {
                        EventKind::PurchaseOpened == e.r#type.as_str()
                            && e.attributes
                                .iter()
                                .any(|a| a.key == attr::PROVIDER_ORG && a.value == self.org)
                    }),
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            };
            rescan = retry || opened;
        }
    }

    fn journal_path(&self, purchase: u64) -> PathBuf {
        self.journal.join(format!("deliver-{purchase:020}.tx"))
    }

    /// Delivers every purchase of the org still awaiting its key; true if a delivery failed
    /// for a reason that may pass (a refusal by policy is not retried).
    async fn scan(&self) -> Result<bool, Error> {
        let filter = pb::PurchaseFilter {
            provider_org: self.org.clone(),
            open_only: true,
            ..Default::default()
        };
        let list = self
            .shared
            .chain
            .record(query::purchases(filter))
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
        self.refused_mut()
            .retain(|id| awaiting.iter().any(|p| p.id == *id));
        let mut failed = false;
        for p in awaiting {
            match self.deliver(&p).await {
                Ok(()) => {}
                Err(e) => match e.downcast_ref::<Refusal>() {
                    Some(r) => {
                        if self.refused_mut().insert(p.id) {
                            match r {
                                Refusal::ValidationRequest { .. } => {
                                    tracing::info!(purchase = p.id, "not delivering: {r}");
                                }
                                Refusal::UnknownKind { .. }
                                | Refusal::NotDepositor { .. }
                                | Refusal::OtherCiphertext { .. } => {
                                    tracing::error!(purchase = p.id, "not delivering: {r}");
                                }
                            }
                        }
                    }
                    None => {
                        failed = true;
                        tracing::error!(
                            purchase = p.id,
                            "key delivery failed: {e}; retrying at the next block"
                        );
                    }
                },
            }
        }
        Ok(failed)
    }

    fn refused_mut(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        // A set of ids is consistent whatever panicked while holding it.
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn deliver(&self, p: &pb::Purchase) -> Result<(), Error> {
        // Vetted before anything else, a journaled tx included: a policy or binding refusal
        // holds whatever was signed before it.
        let key = self.vetted_key(p).await?;
        let path = self.journal_path(p.id);
        let params = self
            .shared
            .chain
            .record(query::params())
            .await?
            .ok_or("no chain parameters")?;
        let submitter = Submitter::new(
            &*self.shared.chain,
            &self.signer,
            params.min_fee.parse::<Amount>()?,
        );
        let tx = match std::fs::read(&path) {
            Ok(tx) => {
                tracing::info!(purchase = p.id, "re-sending the journaled delivery");
                tx
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let tx = self.sign_delivery(&submitter, p, &key).await?;
                write_atomic(&path, &tx)?;
                tx
            }
            Err(e) => return Err(e.into()),
        };
        match submitter.send(tx).await {
            Ok(c) => {
                tracing::info!(purchase = p.id, height = c.height, tx = %c.hash, "key delivered");
                std::fs::remove_file(&path)?;
                Ok(())
            }
            Err(ClientError::Rejected {
                codespace,
                code,
                log,
                ..
            }) => {
                // Refused (the window closed, the nonce moved on): the journaled tx can never
                // commit, so drop it; the next scan signs afresh if the purchase still waits.
                std::fs::remove_file(&path)?;
                Err(format!("delivery refused: {codespace} {code}: {log}").into())
            }
            // Pending in a mempool already: the next block (and scan) settles it.
            Err(ClientError::AlreadyReceived) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The data key for purchase `p`, once [`vet`] allows its delivery.
    async fn vetted_key(&self, p: &pb::Purchase) -> Result<DataKey, Error> {
        let deliver_validation = self.shared.config.deliver_validation_keys;
        // Cheap and final: no need to read the listing or the keystore.
        kind_allowed(p, deliver_validation)?;
        let chain = &self.shared.chain;
        // A model sale names its listing (and no dataset); everything else is of a dataset.
        let dataset;
        let model;
        let listed = if p.model_listing != 0 {
            model = chain
                .record(query::model_listing(p.model_listing))
                .await?
                .ok_or_else(|| format!("model listing {} not found", p.model_listing))?;
            (Listed::model(&model), &model.key_commitment)
        } else {
            dataset = chain
                .record(query::dataset(p.dataset_id))
                .await?
                .ok_or_else(|| format!("dataset {} not found", p.dataset_id))?;
            (Listed::dataset(&dataset), &dataset.key_commitment)
        };
        let (listed, commitment) = listed;
        let commitment = <[u8; 32]>::try_from(commitment.as_slice())
            .map_err(|_| format!("{} key commitment is not 32 bytes", listed.item))?;
        let deposit = self.keystore.get(&commitment)?.ok_or_else(|| {
            format!(
                "no data key with commitment {} for {} in the keystore: deposit it (Keys.Deposit; \
                 ndctl's upload and publish commands do)",
                hex::encode(commitment),
                listed.item
            )
        })?;
        let successors = if listed.lister == deposit.depositor {
            vec![]
        } else {
            self.successors(deposit.depositor).await?
        };
        vet(p, listed, &deposit, &successors, deliver_validation)?;
        Ok(deposit.key)
    }

    /// The identities `first` was moved to, in order (each identity moves at most once, to a
    /// live identity of its org; the walk is bounded all the same).
    async fn successors(&self, first: [u8; 32]) -> Result<Vec<Vec<u8>>, Error> {
        const MAX_MOVES: usize = 16;
        let mut chain = vec![first.to_vec()];
        while chain.len() <= MAX_MOVES {
            let Some(last) = chain.last() else { break };
            let Some(address) = Address::from_slice(last) else {
                break;
            };
            let identity = self.shared.chain.record(query::identity(address)).await?;
            match identity {
                Some(i) if !i.successor.is_empty() && !chain.contains(&i.successor) => {
                    chain.push(i.successor);
                }
                _ => break,
            }
        }
        chain.remove(0);
        Ok(chain)
    }

    async fn sign_delivery(
        &self,
        submitter: &Submitter<'_, crate::chain::Chain>,
        p: &pb::Purchase,
        key: &DataKey,
    ) -> Result<Vec<u8>, Error> {
        // Named in the tx: the chain refuses the delivery if the purchase has moved to another
        // buyer identity since, whose key this wrapping would not open.
        let recipient = Address::from_slice(&p.buyer).ok_or("purchase buyer is not 32 bytes")?;
        let buyer = self
            .shared
            .chain
            .record(query::identity(recipient))
            .await?
            .ok_or("buyer identity not on chain")?;
        let wrapped = wrap(key, &buyer.public_key_spki)?;
        Ok(submitter
            .sign(
                vec![msg::deliver_key(p.id, recipient, wrapped.to_bytes())],
                &format!("key for purchase {}", p.id),
            )
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVIDER: [u8; 32] = [1; 32];
    const COLLEAGUE: [u8; 32] = [2; 32];

    fn purchase(kind: pb::PurchaseKind) -> pb::Purchase {
        pb::Purchase {
            id: 7,
            dataset_id: 3,
            kind: kind as i32,
            ..Default::default()
        }
    }

    fn dataset(provider: [u8; 32], cid: &str) -> pb::Dataset {
        pb::Dataset {
            id: 3,
            provider: provider.to_vec(),
            cid: cid.into(),
            ..Default::default()
        }
    }

    fn deposit(depositor: [u8; 32], cid: &str) -> Result<Deposit, neurodata_crypto::CryptoError> {
        Ok(Deposit {
            key: DataKey::generate()?,
            depositor,
            cid: cid.into(),
        })
    }

    #[test]
    fn a_key_goes_only_to_buyers_of_its_depositors_listing_of_its_ciphertext()
    -> Result<(), neurodata_crypto::CryptoError> {
        let sale = purchase(pb::PurchaseKind::Sale);
        let colleagues_key = deposit(PROVIDER, "bafy-real")?;
        assert_eq!(
            vet(
                &sale,
                Listed::dataset(&dataset(PROVIDER, "bafy-real")),
                &colleagues_key,
                &[],
                false
            ),
            Ok(())
        );
        // A decoy listing by a colleague, carrying the provider's commitment.
        let decoy = dataset(COLLEAGUE, "bafy-decoy");
        assert!(matches!(
            vet(&sale, Listed::dataset(&decoy), &colleagues_key, &[], false),
            Err(Refusal::NotDepositor {
                item: Item::Dataset(3),
                ..
            })
        ));
        // The provider's own second listing of other bytes under the same key.
        assert!(matches!(
            vet(
                &sale,
                Listed::dataset(&dataset(PROVIDER, "bafy-other")),
                &colleagues_key,
                &[],
                false
            ),
            Err(Refusal::OtherCiphertext { .. })
        ));
        Ok(())
    }

    #[test]
    fn a_listing_moved_to_the_depositors_successor_is_still_delivered()
    -> Result<(), neurodata_crypto::CryptoError> {
        const SUCCESSOR: [u8; 32] = [9; 32];
        let sale = purchase(pb::PurchaseKind::Sale);
        let k = deposit(PROVIDER, "bafy-real")?;
        // MoveIdentity made SUCCESSOR the provider of the depositor's listing.
        let moved = dataset(SUCCESSOR, "bafy-real");
        assert_eq!(
            vet(
                &sale,
                Listed::dataset(&moved),
                &k,
                &[SUCCESSOR.to_vec()],
                false
            ),
            Ok(())
        );
        // Without that move on chain, the same listing is someone else's.
        assert!(matches!(
            vet(&sale, Listed::dataset(&moved), &k, &[], false),
            Err(Refusal::NotDepositor { .. })
        ));
        Ok(())
    }

    #[test]
    fn validation_requests_get_keys_only_under_the_orgs_explicit_policy()
    -> Result<(), neurodata_crypto::CryptoError> {
        let request = purchase(pb::PurchaseKind::Validation);
        let d = dataset(PROVIDER, "bafy-real");
        let k = deposit(PROVIDER, "bafy-real")?;
        let refused = vet(&request, Listed::dataset(&d), &k, &[], false);
        assert_eq!(refused, Err(Refusal::ValidationRequest { purchase: 7 }));
        assert!(
            refused
                .err()
                .is_some_and(|r| r.to_string().contains("deliver_validation_keys")),
            "the refusal names the setting"
        );
        assert_eq!(vet(&request, Listed::dataset(&d), &k, &[], true), Ok(()));
        Ok(())
    }

    #[test]
    fn training_key_requests_get_keys_whatever_the_validation_policy()
    -> Result<(), neurodata_crypto::CryptoError> {
        let request = pb::Purchase {
            training_job: 12,
            ..purchase(pb::PurchaseKind::Training)
        };
        let d = dataset(PROVIDER, "bafy-real");
        let k = deposit(PROVIDER, "bafy-real")?;
        for deliver_validation_keys in [false, true] {
            assert_eq!(
                vet(
                    &request,
                    Listed::dataset(&d),
                    &k,
                    &[],
                    deliver_validation_keys
                ),
                Ok(()),
                "deliver_validation_keys = {deliver_validation_keys}"
            );
        }
        // The key binding still holds: no colleague's key through a decoy listing.
        assert!(matches!(
            vet(
                &request,
                Listed::dataset(&dataset(COLLEAGUE, "bafy-decoy")),
                &k,
                &[],
                false
            ),
            Err(Refusal::NotDepositor { .. })
        ));
        Ok(())
    }

    #[test]
    fn evaluation_key_requests_get_keys_whatever_the_validation_policy()
    -> Result<(), neurodata_crypto::CryptoError> {
        let request = pb::Purchase {
            evaluation: 4,
            ..purchase(pb::PurchaseKind::Evaluation)
        };
        // The hidden split: a dataset record of its provider.
        let split = dataset(PROVIDER, "bafy-split");
        let k = deposit(PROVIDER, "bafy-split")?;
        for deliver_validation_keys in [false, true] {
            assert_eq!(
                vet(
                    &request,
                    Listed::dataset(&split),
                    &k,
                    &[],
                    deliver_validation_keys
                ),
                Ok(()),
                "deliver_validation_keys = {deliver_validation_keys}"
            );
        }
        assert!(matches!(
            vet(
                &request,
                Listed::dataset(&dataset(COLLEAGUE, "bafy-split")),
                &k,
                &[],
                false
            ),
            Err(Refusal::NotDepositor { .. })
        ));
        Ok(())
    }

    fn model_listing(owner: [u8; 32], onnx_cid: &str) -> pb::ModelListing {
        pb::ModelListing {
            id: 2,
            owner: owner.to_vec(),
            model_cid: "bafy-model-ct".into(),
            onnx_cid: onnx_cid.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_model_key_goes_only_to_buyers_of_its_owners_listing_of_its_onnx_ciphertext()
    -> Result<(), neurodata_crypto::CryptoError> {
        let sale = pb::Purchase {
            dataset_id: 0,
            model_listing: 2,
            ..purchase(pb::PurchaseKind::Sale)
        };
        let k = deposit(PROVIDER, "bafy-onnx-ct")?;
        assert_eq!(
            vet(
                &sale,
                Listed::model(&model_listing(PROVIDER, "bafy-onnx-ct")),
                &k,
                &[],
                false
            ),
            Ok(())
        );
        // A colleague's listing of the owner's model carrying the owner's commitment.
        let decoy = vet(
            &sale,
            Listed::model(&model_listing(COLLEAGUE, "bafy-onnx-ct")),
            &k,
            &[],
            false,
        );
        assert!(
            matches!(
                &decoy,
                Err(Refusal::NotDepositor {
                    item: Item::Model(2),
                    ..
                })
            ),
            "{decoy:?}"
        );
        assert!(
            decoy
                .err()
                .is_some_and(|r| r.to_string().starts_with("model listing 2 is listed by")),
            "the refusal names the model listing"
        );
        // The key deposited for the model file's ciphertext (not the ONNX export's) is not the
        // deposit the listing names.
        let for_model_file = deposit(PROVIDER, "bafy-model-ct")?;
        assert!(matches!(
            vet(
                &sale,
                Listed::model(&model_listing(PROVIDER, "bafy-onnx-ct")),
                &for_model_file,
                &[],
                false
            ),
            Err(Refusal::OtherCiphertext {
                item: Item::Model(2),
                ..
            })
        ));
        Ok(())
    }

    #[test]
    fn validators_key_requests_of_a_model_listing_get_keys_whatever_the_validation_policy()
    -> Result<(), neurodata_crypto::CryptoError> {
        let request = pb::Purchase {
            dataset_id: 0,
            model_listing: 2,
            ..purchase(pb::PurchaseKind::Validation)
        };
        let k = deposit(PROVIDER, "bafy-onnx-ct")?;
        let listing = model_listing(PROVIDER, "bafy-onnx-ct");
        for deliver_validation_keys in [false, true] {
            assert_eq!(
                vet(
                    &request,
                    Listed::model(&listing),
                    &k,
                    &[],
                    deliver_validation_keys
                ),
                Ok(()),
                "deliver_validation_keys = {deliver_validation_keys}"
            );
        }
        // The key binding still holds: no owner's key through a colleague's decoy listing.
        assert!(matches!(
            vet(
                &request,
                Listed::model(&model_listing(COLLEAGUE, "bafy-onnx-ct")),
                &k,
                &[],
                true
            ),
            Err(Refusal::NotDepositor { .. })
        ));
        // A dataset's validation request still needs the policy.
        assert_eq!(
            kind_allowed(&purchase(pb::PurchaseKind::Validation), false),
            Err(Refusal::ValidationRequest { purchase: 7 })
        );
        Ok(())
    }

    #[test]
    fn a_purchase_of_unknown_kind_gets_no_key() -> Result<(), neurodata_crypto::CryptoError> {
        let d = dataset(PROVIDER, "bafy-real");
        let k = deposit(PROVIDER, "bafy-real")?;
        for kind in [pb::PurchaseKind::Unspecified as i32, 99] {
            let p = pb::Purchase {
                kind,
                ..purchase(pb::PurchaseKind::Sale)
            };
            assert_eq!(
                vet(&p, Listed::dataset(&d), &k, &[], true),
                Err(Refusal::UnknownKind { purchase: 7, kind })
            );
        }
        Ok(())
    }
}
