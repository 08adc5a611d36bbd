//! `Models`: inference on the models this gateway's org bought or owns (issue 14).
//!
//! `Install` takes a listing's data key from a member of the org (the buyer unwrapped it from
//! the owner's delivery), checks it against the listing's key commitment, decrypts the model file
//! and its ONNX export from this gateway's blob store (the member uploads both ciphertexts here
//! first), checks them against the listing's card — the model's SHA-256 and the ONNX export's
//! plaintext CID, facts the chain derived from the attested training result — and keeps the key
//! sealed in a keystore of installed models (a directory of its own beside the org's deposited
//! keys, so the delivery task never hands out a bought key) and the loaded model in memory.
//! After a restart, or once the model fell out of the bounded cache, the next `Predict` loads it
//! again from the keystore and the store.
//!
//! `Predict` streams batches of rows through the model with the trainer's own schema checks
//! ([`neurodata_trainer::predict`]). Who may use a model is decided from the chain, at the latest
//! block, on every call and again whenever a block arrives during a stream ([`may_use`]): the
//! owner's org, or an org that bought the listing in a sale whose key was delivered and that was
//! not refunded. A gateway serves only its own org's members: a bought model is the buyer org's,
//! and runs at its gateway.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use neurodata_abci::query;
use neurodata_client::ChainAccess;
use neurodata_crypto::DataKey;
use neurodata_crypto::stream::DecryptingWriter;
use neurodata_proto::chain::v1 as pb;
use neurodata_proto::gateway::v1 as gw;
use neurodata_trainer::predict::{Format, PredictError, Prediction, Predictor};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::blobs::blob_status;
use super::{Shared, caller, wait_until_refused};
use crate::auth::{Caller, chain_status};
use crate::cid::Cid;
use crate::market::keystore::{Deposit, KeyStore, KeyStoreError};

/// Models kept loaded, the least recently used dropped first (each holds its tract plan and
/// preprocessing: a few MB for the tabular models the trainer makes).
pub const LOADED_MODELS: usize = 8;

/// Largest ciphertext `Install` decrypts (in memory).
pub const MAX_MODEL_CIPHERTEXT: u64 = 256 << 20;

/// Batches of one `Predict` call predicted at once.
pub const IN_FLIGHT: usize = 2;

/// A batch being predicted on a blocking thread: the prediction and the model it ran on.
type Running = tokio::task::JoinHandle<Result<(Prediction, Arc<Loaded>), PredictError>>;

/// A batch once predicted (or its thread's failure).
type Ran = Result<Result<(Prediction, Arc<Loaded>), PredictError>, tokio::task::JoinError>;

/// Where installed models' keys are kept, under the gateway's `keystore_dir`.
pub const INSTALLED_DIR: &str = "installed";

/// A model ready to predict.
pub struct Loaded {
    /// The listing it was installed from.
    pub listing_id: u64,
    /// The model version listed.
    pub model_version: u64,
    /// SHA-256 of the model file.
    pub model_sha256: [u8; 32],
    /// The model.
    pub predictor: Predictor,
}

/// The Models service.
#[derive(Clone)]
pub struct ModelsService(Arc<Models>);

/// Whether an org may use a listing (the listing if so), by (org, listing).
type Authorisations = BTreeMap<(String, u64), Result<pb::ModelListing, Status>>;

/// The service's state.
pub struct Models {
    shared: Arc<Shared>,
    /// Keys of installed models (None: no `keystore_dir`; nothing can be installed).
    installed: Option<Arc<KeyStore>>,
    /// Loaded models by listing, most recently used last.
    loaded: Mutex<VecDeque<Arc<Loaded>>>,
    /// Authorisations decided at one height (the first field), by (org, listing): every stream
    /// re-checks at each new block, and the purchases read scans the chain's purchases, so
    /// streams share one answer per block instead of each asking the node.
    authorised: Mutex<(u64, Authorisations)>,
    /// One model decrypted and loaded at a time: each holds up to two ciphertexts' plaintext in
    /// memory, and callers cycling through listings must not stack them up.
    loading: tokio::sync::Semaphore,
}

impl ModelsService {
    /// The service over `shared`, keeping installed keys in `installed`.
    pub fn new(shared: Arc<Shared>, installed: Option<Arc<KeyStore>>) -> Self {
        ModelsService(Arc::new(Models {
            shared,
            installed,
            loaded: Mutex::new(VecDeque::new()),
            authorised: Mutex::new((0, BTreeMap::new())),
            loading: tokio::sync::Semaphore::new(1),
        }))
    }
}

/// Whether members of `org` may install and run the model of `listing`, given the listing's
/// purchases: the owner's org always; another org if one of its members bought the listing in a
/// sale whose key was delivered and that was not refunded (key delivered, confirmed or
/// released). The refusal says what would open it.
pub fn may_use(
    org: &str,
    listing: &pb::ModelListing,
    purchases: &[pb::Purchase],
) -> Result<(), Status> {
    if org == listing.owner_org {
        return Ok(());
    }
    let sales: Vec<&pb::Purchase> = purchases
        .iter()
        .filter(|p| {
            p.model_listing == listing.id
                && p.buyer_org == org
                && p.kind == pb::PurchaseKind::Sale as i32
        })
        .collect();
    let paid_for = |p: &&pb::Purchase| {
        matches!(
            pb::PurchaseStatus::try_from(p.status),
            Ok(pb::PurchaseStatus::KeyDelivered
                | pb::PurchaseStatus::Confirmed
                | pb::PurchaseStatus::Released)
        )
    };
    if sales.iter().any(paid_for) {
        return Ok(());
    }
    if let Some(waiting) = sales
        .iter()
        .find(|p| p.status == pb::PurchaseStatus::AwaitingKey as i32)
    {
        return Err(Status::permission_denied(format!(
            "org {org} bought model listing {} in purchase {}, whose key is not delivered yet: \
             the owner's gateway delivers it within the key window; try again then",
            listing.id, waiting.id
        )));
    }
    let refunded: Vec<String> = sales.iter().map(|p| p.id.to_string()).collect();
    Err(Status::permission_denied(format!(
        "model listing {} is usable by its owner's org ({}) and by orgs that bought it; org \
         {org} has {}: buy it first (ndctl model buy {})",
        listing.id,
        listing.owner_org,
        if refunded.is_empty() {
            "no purchase of it".to_owned()
        } else {
            format!("only refunded purchases of it ({})", refunded.join(", "))
        },
        listing.id
    )))
}

/// The reader's format of a batch; unspecified reads as CSV, as for listings.
pub fn batch_format(format: i32) -> Result<Format, Status> {
    match pb::DataFormat::try_from(format) {
        Ok(pb::DataFormat::Unspecified | pb::DataFormat::Csv) => Ok(Format::Csv),
        Ok(pb::DataFormat::JsonLines) => Ok(Format::JsonLines),
        Ok(pb::DataFormat::JsonArray) => Ok(Format::JsonArray),
        Err(_) => Err(Status::invalid_argument(format!(
            "PredictRequest.format {format} is not a DataFormat (CSV = 1, JSON lines = 2)"
        ))),
    }
}

/// The status of a prediction that failed on the batch starting at row `first_row` of the call.
pub fn predict_status(e: &PredictError, first_row: u64) -> Status {
    if e.is_bad_input() {
        Status::invalid_argument(format!(
            "batch starting at row {first_row} of this call: {e}"
        ))
    } else {
        tracing::error!("prediction failed: {e}");
        Status::internal(format!("the model failed: {e}"))
    }
}

/// The caller, who must be a member of this gateway's org.
fn own_member(shared: &Shared, who: Option<&Caller>) -> Result<Caller, Status> {
    let Some(c) = who else {
        return Err(Status::failed_precondition(
            "models are installed and run for an org's members: call over mTLS with a member \
             certificate",
        ));
    };
    let own = shared.config.org_id.as_deref();
    if own != Some(c.member.org_id.as_str()) {
        return Err(Status::permission_denied(format!(
            "this gateway runs the models of org {}; {} belongs to {}: call your own org's \
             gateway",
            own.unwrap_or("(none configured)"),
            c.member.common_name,
            c.member.org_id
        )));
    }
    Ok(c.clone())
}

fn chain_err(e: neurodata_client::ClientError) -> Status {
    chain_status(e.into())
}

impl Models {
    /// The listing, and whether `org` may use it, from the chain at its latest height.
    async fn authorise(&self, org: &str, listing_id: u64) -> Result<pb::ModelListing, Status> {
        let height = self.shared.chain.tip().height;
        let key = (org.to_owned(), listing_id);
        if let Some(answer) = self.authorisations(height, |a| a.get(&key).cloned()) {
            return answer;
        }
        let answer = self.decide_use(org, listing_id).await;
        self.authorisations(height, |a| a.insert(key, answer.clone()));
        answer
    }

    /// Runs `f` on the authorisations decided at `height` (those of an earlier height are
    /// dropped first).
    fn authorisations<T>(&self, height: u64, f: impl FnOnce(&mut Authorisations) -> T) -> T {
        // A map of answers is consistent whatever panicked while holding it.
        let mut a = self
            .authorised
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if a.0 != height {
            *a = (height, BTreeMap::new());
        }
        f(&mut a.1)
    }

    /// Reads the listing and its purchases and decides with [`may_use`].
    async fn decide_use(&self, org: &str, listing_id: u64) -> Result<pb::ModelListing, Status> {
        if listing_id == 0 {
            return Err(Status::invalid_argument(
                "listing_id is required: the model listing to use",
            ));
        }
        let chain = &*self.shared.chain;
        let listing = chain
            .record(query::model_listing(listing_id))
            .await
            .map_err(chain_err)?
            .ok_or_else(|| Status::not_found(format!("no model listing {listing_id}")))?;
        let purchases = if org == listing.owner_org {
            Vec::new()
        } else {
            chain
                .record(query::purchases(pb::PurchaseFilter {
                    model_listing: listing_id,
                    ..Default::default()
                }))
                .await
                .map_err(chain_err)?
                .unwrap_or_default()
                .purchases
        };
        may_use(org, &listing, &purchases)?;
        Ok(listing)
    }

    fn installed(&self) -> Result<&KeyStore, Status> {
        self.installed.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "this gateway keeps no keystore, so it installs no models (set keystore_dir and \
                 its passphrase)",
            )
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Loaded>>> {
        // A list of loaded models is consistent whatever panicked while holding it.
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached(&self, listing_id: u64) -> Option<Arc<Loaded>> {
        let mut cache = self.cache();
        let at = cache.iter().position(|l| l.listing_id == listing_id)?;
        let loaded = cache.remove(at)?;
        cache.push_back(loaded.clone());
        Some(loaded)
    }

    fn keep(&self, loaded: Arc<Loaded>) {
        let mut cache = self.cache();
        cache.retain(|l| l.listing_id != loaded.listing_id);
        cache.push_back(loaded);
        while cache.len() > LOADED_MODELS {
            cache.pop_front();
        }
    }

    /// The plaintext of ciphertext `cid` (the listing's `what`) in this gateway's store.
    async fn decrypt(
        &self,
        listing: &pb::ModelListing,
        cid: &str,
        what: &str,
        key: &DataKey,
    ) -> Result<(Vec<u8>, [u8; 32]), Status> {
        let parsed: Cid = cid.parse().map_err(|e| {
            Status::internal(format!("listing {}: {what} CID {cid:?}: {e}", listing.id))
        })?;
        let blobs = &self.shared.blobs;
        let size = blobs.size(&parsed).await.map_err(blob_status)?;
        let Some(size) = size else {
            return Err(Status::failed_precondition(format!(
                "the {what} ciphertext {cid} of model listing {} is not in this gateway's store: \
                 download both ciphertexts from the owner's gateway ({}) and upload them here \
                 before installing",
                listing.id, listing.location
            )));
        };
        if size > MAX_MODEL_CIPHERTEXT {
            return Err(Status::resource_exhausted(format!(
                "the {what} ciphertext {cid} is {size} bytes; this gateway installs models of at \
                 most {MAX_MODEL_CIPHERTEXT} bytes"
            )));
        }
        let mut blob = blobs.open_blob(&parsed).await.map_err(blob_status)?;
        let mut writer = DecryptingWriter::new(Vec::new(), key);
        let unusable = |e: &dyn std::fmt::Display| {
            Status::failed_precondition(format!(
                "the {what} ciphertext {cid} of model listing {} does not open with its key: {e} \
                 (the listing's ciphertext is damaged or not the one the key was made for; a \
                 dispute proves only a wrong key: raise it with the owner's org before the \
                 purchase is released)",
                listing.id
            ))
        };
        while let Some(chunk) = blob.next_chunk(1 << 20).await.map_err(blob_status)? {
            std::io::Write::write_all(&mut writer, &chunk).map_err(|e| unusable(&e))?;
        }
        let (done, plain) = writer.finish().map_err(|e| unusable(&e))?;
        Ok((plain, done.plaintext_sha256))
    }

    /// Decrypts, checks against the card and loads the listing's model with `key`.
    async fn load(&self, listing: &pb::ModelListing, key: &DataKey) -> Result<Arc<Loaded>, Status> {
        let card = listing.card.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!("model listing {} has no card", listing.id))
        })?;
        let _one_at_a_time = self
            .loading
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the gateway is shutting down"))?;
        let (model, model_sha256) = self
            .decrypt(listing, &listing.model_cid, "model file", key)
            .await?;
        let (onnx, _) = self
            .decrypt(listing, &listing.onnx_cid, "ONNX export", key)
            .await?;
        // The card's facts come from the attested training result: bytes that differ are not
        // the model the buyer paid for, whatever they compute.
        if model_sha256.as_slice() != card.model_sha256 {
            return Err(Status::failed_precondition(format!(
                "model listing {}: the decrypted model file hashes to {}, the card says {}: the \
                 ciphertext is not the listed model (a dispute proves only a wrong key: raise it \
                 with the owner's org before the purchase is released)",
                listing.id,
                hex::encode(model_sha256),
                hex::encode(&card.model_sha256)
            )));
        }
        let onnx_cid = Cid::of(&onnx).to_string();
        if onnx_cid != card.onnx_plain_cid {
            return Err(Status::failed_precondition(format!(
                "model listing {}: the decrypted ONNX export is {onnx_cid}, the card says {}: the \
                 ciphertext is not the listed model's export (a dispute proves only a wrong key: \
                 raise it with the owner's org before the purchase is released)",
                listing.id, card.onnx_plain_cid
            )));
        }
        let listing_id = listing.id;
        let predictor = tokio::task::spawn_blocking(move || Predictor::load(&model, &onnx))
            .await
            .map_err(|e| Status::internal(format!("loading the model: {e}")))?
            .map_err(|e| {
                Status::failed_precondition(format!(
                    "model listing {listing_id}: the model does not load: {e}"
                ))
            })?;
        Ok(Arc::new(Loaded {
            listing_id,
            model_version: listing.model_version,
            model_sha256,
            predictor,
        }))
    }

    /// The loaded model of an authorised listing: from memory, or loaded again with the key
    /// kept at its installation.
    async fn load_installed(&self, listing: &pb::ModelListing) -> Result<Arc<Loaded>, Status> {
        if let Some(l) = self.cached(listing.id) {
            return Ok(l);
        }
        let not_installed = || {
            Status::failed_precondition(format!(
                "model listing {} is not installed on this gateway: install it first with the \
                 key delivered for your purchase (Models.Install)",
                listing.id
            ))
        };
        let commitment =
            <[u8; 32]>::try_from(listing.key_commitment.as_slice()).map_err(|_| not_installed())?;
        let deposit = self
            .installed()?
            .get(&commitment)
            .map_err(keystore_status)?
            .ok_or_else(not_installed)?;
        let loaded = self.load(listing, &deposit.key).await?;
        self.keep(loaded.clone());
        Ok(loaded)
    }

    /// Starts predicting one batch on a blocking thread.
    fn start(loaded: Arc<Loaded>, request: gw::PredictRequest) -> Result<Running, Status> {
        let format = batch_format(request.format)?;
        let rows = request.rows;
        Ok(tokio::task::spawn_blocking(move || {
            let p = loaded.predictor.predict(&rows, format)?;
            Ok((p, loaded))
        }))
    }

    /// The answer to a batch started by [`Models::start`] once it ran, the call's
    /// `first_row`-th row first.
    fn answer(ran: Ran, first_row: u64) -> Result<gw::PredictResponse, Status> {
        let (p, loaded) = ran
            .map_err(|e| Status::internal(format!("prediction: {e}")))?
            .map_err(|e| predict_status(&e, first_row))?;
        Ok(gw::PredictResponse {
            first_row,
            predictions: p.predictions,
            probabilities: p.probabilities,
            classes: if first_row == 0 {
                loaded.predictor.classes().to_vec()
            } else {
                Vec::new()
            },
        })
    }

    /// Serves one `Predict` call: each request message one batch, answered in order; the first
    /// error ends the call. Up to [`IN_FLIGHT`] batches run at once: the next message is read,
    /// authorised and started while the previous one is predicted, so a call is not held to one
    /// core by its own reading and answering.
    async fn serve(
        self: Arc<Self>,
        caller: Caller,
        mut inbound: Streaming<gw::PredictRequest>,
        out: mpsc::Sender<Result<gw::PredictResponse, Status>>,
    ) {
        let refused = wait_until_refused(&self.shared, Some(&caller));
        tokio::pin!(refused);
        let org = caller.member.org_id.clone();
        // The listing of the call and the block height its use was last authorised at.
        let mut session: Option<(u64, u64)> = None;
        let mut first_row = 0u64;
        // Batches started, oldest first; a refusal waits its turn behind earlier batches.
        let mut pending: VecDeque<Result<Running, Status>> = VecDeque::new();
        let mut read_all = false;
        while !(read_all && pending.is_empty()) {
            let readable = !read_all && pending.len() < IN_FLIGHT;
            let answerable = !pending.is_empty();
            // The oldest batch's outcome, left in the queue until it is answered (a branch not
            // taken is dropped, and must lose nothing).
            let oldest = async {
                match pending.front_mut() {
                    Some(Ok(running)) => Some(running.await),
                    Some(Err(_)) | None => None,
                }
            };
            tokio::select! {
                biased;
                status = &mut refused => {
                    let _ = out.send(Err(status)).await;
                    return;
                }
                ran = oldest, if answerable => {
                    let answer = match (pending.pop_front(), ran) {
                        (Some(Ok(_)), Some(ran)) => Self::answer(ran, first_row),
                        (Some(Err(status)), _) => Err(status),
                        _ => Err(Status::internal("prediction queue out of order")),
                    };
                    let stop = answer.is_err();
                    if let Ok(r) = &answer {
                        first_row += r.predictions.len() as u64;
                    }
                    if out.send(answer).await.is_err() || stop {
                        return;
                    }
                }
                next = inbound.message(), if readable => match next {
                    Ok(Some(request)) => {
                        pending.push_back(self.begin(&org, &mut session, request).await);
                    }
                    Ok(None) => read_all = true,
                    Err(status) => {
                        pending.push_back(Err(status));
                        read_all = true;
                    }
                },
            }
        }
    }

    /// Checks one request message of the call and starts its batch.
    async fn begin(
        &self,
        org: &str,
        session: &mut Option<(u64, u64)>,
        request: gw::PredictRequest,
    ) -> Result<Running, Status> {
        let listing_id = match *session {
            None => request.listing_id,
            Some((id, _)) if request.listing_id == 0 || request.listing_id == id => id,
            Some((id, _)) => {
                return Err(Status::invalid_argument(format!(
                    "this call predicts with model listing {id}; a message names listing {}: \
                     one call, one model",
                    request.listing_id
                )));
            }
        };
        // Authorised at the latest height on the call's first message, and again after every
        // new block: a refund or a delisting-and-refund takes effect within the stream.
        let height = self.shared.chain.tip().height;
        let listing = match *session {
            Some((_, at)) if at == height => None,
            _ => Some(self.authorise(org, listing_id).await?),
        };
        *session = Some((listing_id, height));
        let loaded = match (listing, self.cached(listing_id)) {
            (_, Some(l)) => l,
            (Some(listing), None) => self.load_installed(&listing).await?,
            (None, None) => {
                let listing = self.authorise(org, listing_id).await?;
                self.load_installed(&listing).await?
            }
        };
        Self::start(loaded, request)
    }
}

fn keystore_status(e: KeyStoreError) -> Status {
    tracing::error!("installed-model keystore: {e}");
    Status::unavailable("keystore error (see the gateway's log)")
}

type PredictStream = Pin<Box<dyn Stream<Item = Result<gw::PredictResponse, Status>> + Send>>;

#[tonic::async_trait]
impl gw::models_server::Models for ModelsService {
    async fn install(
        &self,
        req: Request<gw::InstallModelRequest>,
    ) -> Result<Response<gw::InstallModelResponse>, Status> {
        let models = &*self.0;
        let who = own_member(&models.shared, caller(&req).as_ref())?;
        let r = req.into_inner();
        let key = DataKey::from_slice(&r.key).map_err(|e| {
            Status::invalid_argument(format!(
                "InstallModelRequest.key: {e} (a data key is 32 bytes)"
            ))
        })?;
        let listing = models.authorise(&who.member.org_id, r.listing_id).await?;
        let commitment = key.commitment();
        if commitment.as_slice() != listing.key_commitment {
            return Err(Status::invalid_argument(format!(
                "this key's SHA-256 is {}, model listing {}'s key commitment is {}: give the key \
                 delivered for your purchase of this listing",
                hex::encode(commitment),
                listing.id,
                hex::encode(&listing.key_commitment)
            )));
        }
        let installed = models.installed()?;
        let loaded = models.load(&listing, &key).await?;
        // Kept only once the model loaded: a key of a broken listing is not worth keeping.
        if installed
            .get(&commitment)
            .map_err(keystore_status)?
            .is_none()
        {
            installed
                .put(&Deposit {
                    key,
                    depositor: who.member.fingerprint,
                    cid: listing.onnx_cid.clone(),
                })
                .map_err(keystore_status)?;
        }
        models.keep(loaded.clone());
        tracing::info!(
            listing = listing.id,
            model_version = listing.model_version,
            by = %who.member.common_name,
            "model installed"
        );
        let p = &loaded.predictor;
        Ok(Response::new(gw::InstallModelResponse {
            listing_id: listing.id,
            model_version: loaded.model_version,
            model_sha256: loaded.model_sha256.to_vec(),
            features: p.features(),
            target: p.target().to_owned(),
            classes: p.classes().to_vec(),
        }))
    }

    type PredictStream = PredictStream;

    async fn predict(
        &self,
        req: Request<Streaming<gw::PredictRequest>>,
    ) -> Result<Response<PredictStream>, Status> {
        let who = own_member(&self.0.shared, caller(&req).as_ref())?;
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(self.0.clone().serve(who, req.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::auth::Membership;
    use crate::blobstore::BlobStore;
    use crate::chain::Chain;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::service::blobs::AnyMember;
    use crate::uploads::{Quotas, UploadLedger};
    use neurodata_trainer::JobSpec;
    use neurodata_trainer::job::{self, Quiet};

    /// The service of datacorp's gateway over a blob store and keystore in `dir` (its chain
    /// client points nowhere: these tests read no chain).
    fn service(dir: &Path) -> Models {
        let chain = Chain::new("http://127.0.0.1:9").expect("a chain client");
        let config = Config {
            org_id: Some("datacorp".into()),
            ..Default::default()
        };
        let quotas = Quotas {
            member_bytes: 1 << 30,
            org_bytes: 1 << 30,
        };
        Models {
            shared: Arc::new(Shared {
                membership: Arc::new(Membership::new(chain.clone())),
                chain,
                blobs: BlobStore::open(&dir.join("blobs"), 1 << 30).expect("blob store"),
                uploads: UploadLedger::open(&dir.join("state"), quotas).expect("ledger"),
                access: Arc::new(AnyMember),
                config: Arc::new(config),
                metrics: Metrics::new(),
            }),
            installed: Some(Arc::new(
                KeyStore::open(&dir.join("installed"), b"pass").expect("keystore"),
            )),
            loaded: Mutex::new(VecDeque::new()),
            authorised: Mutex::new((0, BTreeMap::new())),
            loading: tokio::sync::Semaphore::new(1),
        }
    }

    /// One batch started and finished, as the `first_row`-th row of a call.
    async fn batch(
        loaded: Arc<Loaded>,
        request: gw::PredictRequest,
        first_row: u64,
    ) -> Result<gw::PredictResponse, Status> {
        Models::answer(Models::start(loaded, request)?.await, first_row)
    }

    /// A small classifier trained as the trainer trains: its model file and ONNX export.
    fn trained(dir: &Path) -> (Vec<u8>, Vec<u8>) {
        let spec = JobSpec::from_json(
            r#"{"schema":{"columns":[{"name":"age","type":"numeric"},
                {"name":"sex","type":"categorical"},{"name":"target","type":"categorical"}],
                "target":"target"},"model":{"algorithm":"logistic_regression"},"seed":3,
                "training":{"epochs":3,"batch_size":8,"optimizer":{"kind":"adam","lr":0.05}}}"#,
        )
        .expect("spec");
        let mut csv = String::from("age,sex,target\n");
        for i in 0..80u32 {
            let age = 30 + i * 7 % 50;
            let sex = ["F", "M"][(i % 2) as usize];
            csv.push_str(&format!("{age},{sex},{}\n", u8::from(age > 50)));
        }
        let data = dir.join("train.csv");
        std::fs::write(&data, csv).expect("data");
        let out = dir.join("run");
        job::run(&spec, &data, &out, &mut Quiet).expect("trains");
        (
            std::fs::read(out.join("model.safetensors")).expect("model"),
            std::fs::read(out.join("model.onnx")).expect("onnx"),
        )
    }

    /// Encrypts `plain` with `key` and stores the ciphertext; its CID.
    async fn store(m: &Models, plain: &[u8], key: &DataKey) -> String {
        let mut sealed = Vec::new();
        neurodata_crypto::stream::encrypt(plain, &mut sealed, key, 4096).expect("encrypts");
        let mut up = m.shared.blobs.begin().await.expect("upload");
        up.write(&sealed).await.expect("write");
        up.finish(None).await.expect("stored").0.to_string()
    }

    /// Listing 5 of the model, both ciphertexts stored here under `key`.
    async fn listed(m: &Models, model: &[u8], onnx: &[u8], key: &DataKey) -> pb::ModelListing {
        pb::ModelListing {
            id: 5,
            model_version: 1,
            owner_org: "healthtech".into(),
            model_cid: store(m, model, key).await,
            onnx_cid: store(m, onnx, key).await,
            key_commitment: key.commitment().to_vec(),
            location: "https://healthtech.example:8443".into(),
            card: Some(pb::ModelCard {
                model_sha256: openssl::sha::sha256(model).to_vec(),
                onnx_plain_cid: Cid::of(onnx).to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_installed_model_is_decrypted_checked_against_its_card_and_predicts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = service(dir.path());
        let (model, onnx) = trained(dir.path());
        let key = DataKey::generate().expect("key");
        let listing = listed(&m, &model, &onnx, &key).await;
        let loaded = m.load(&listing, &key).await.expect("loads");
        assert_eq!(loaded.model_sha256, openssl::sha::sha256(&model));
        assert_eq!(loaded.predictor.features(), ["age", "sex"]);
        let answer = batch(
            loaded,
            gw::PredictRequest {
                listing_id: 5,
                format: pb::DataFormat::Csv as i32,
                rows: b"age,sex\n35,F\n75,M\n".to_vec(),
            },
            0,
        )
        .await
        .expect("predicts");
        assert_eq!(answer.predictions.len(), 2);
        assert_eq!(answer.probabilities.len(), 4);
        assert_eq!(answer.classes, ["0", "1"]);
        // A later batch of the call names its first row and repeats no classes.
        let loaded = m.load(&listing, &key).await.expect("loads again");
        let later = batch(
            loaded,
            gw::PredictRequest {
                listing_id: 0,
                format: pb::DataFormat::JsonLines as i32,
                rows: b"{\"age\":40,\"sex\":\"M\"}\n".to_vec(),
            },
            2,
        )
        .await
        .expect("predicts");
        assert_eq!((later.first_row, later.classes.len()), (2, 0));
    }

    #[tokio::test]
    async fn a_bad_batch_is_an_invalid_argument_naming_its_first_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = service(dir.path());
        let (model, onnx) = trained(dir.path());
        let key = DataKey::generate().expect("key");
        let listing = listed(&m, &model, &onnx, &key).await;
        let loaded = m.load(&listing, &key).await.expect("loads");
        let err = batch(
            loaded,
            gw::PredictRequest {
                listing_id: 5,
                format: pb::DataFormat::Csv as i32,
                rows: b"age,sex,zip\n35,F,1\n".to_vec(),
            },
            1000,
        )
        .await
        .expect_err("an extra column");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().starts_with(
                "batch starting at row 1000 of this call: line 1: column(s) [\"zip\"]"
            ),
            "{}",
            err.message()
        );
    }

    #[tokio::test]
    async fn ciphertexts_that_are_not_the_cards_model_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = service(dir.path());
        let (model, onnx) = trained(dir.path());
        let key = DataKey::generate().expect("key");
        let listing = listed(&m, &model, &onnx, &key).await;

        // The card names another model file.
        let mut other = listing.clone();
        if let Some(card) = other.card.as_mut() {
            card.model_sha256 = vec![7; 32];
        }
        let err = m.load(&other, &key).await.err().expect("another model");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().contains("the card says 0707"),
            "{}",
            err.message()
        );

        // The card names another ONNX export.
        let mut other = listing.clone();
        if let Some(card) = other.card.as_mut() {
            card.onnx_plain_cid = Cid::of(b"another export").to_string();
        }
        let err = m.load(&other, &key).await.err().expect("another export");
        assert!(
            err.message().contains("decrypted ONNX export is"),
            "{}",
            err.message()
        );

        // A ciphertext made with another key.
        let stranger = DataKey::generate().expect("key");
        let err = m
            .load(&listing, &stranger)
            .await
            .err()
            .expect("another key");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().contains("does not open with its key"),
            "{}",
            err.message()
        );

        // A ciphertext not uploaded here.
        let mut missing = listing.clone();
        missing.onnx_cid = Cid::of(b"not here").to_string();
        let err = m.load(&missing, &key).await.err().expect("not uploaded");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().contains("is not in this gateway's store")
                && err.message().contains("https://healthtech.example:8443"),
            "{}",
            err.message()
        );
        assert!(m.cache().is_empty(), "nothing refused is kept");
    }

    #[tokio::test]
    async fn a_model_not_installed_here_is_refused_and_an_installed_one_reloads_from_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = service(dir.path());
        let (model, onnx) = trained(dir.path());
        let key = DataKey::generate().expect("key");
        let listing = listed(&m, &model, &onnx, &key).await;
        let err = m
            .load_installed(&listing)
            .await
            .err()
            .expect("not installed");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().contains("is not installed on this gateway"),
            "{}",
            err.message()
        );
        // What Install keeps; a restarted gateway (an empty cache) loads it again from there.
        m.installed()
            .expect("keystore")
            .put(&Deposit {
                key: key.clone(),
                depositor: [1; 32],
                cid: listing.onnx_cid.clone(),
            })
            .expect("kept");
        let loaded = m.load_installed(&listing).await.expect("reloads");
        assert_eq!(loaded.listing_id, 5);
        assert!(m.cached(5).is_some(), "kept loaded");
    }

    #[test]
    fn the_cache_keeps_the_most_recently_used_models() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = service(dir.path());
        let (model, onnx) = trained(dir.path());
        let predictor = |id| {
            Arc::new(Loaded {
                listing_id: id,
                model_version: 1,
                model_sha256: [0; 32],
                predictor: Predictor::load(&model, &onnx).expect("loads"),
            })
        };
        for id in 1..=LOADED_MODELS as u64 {
            m.keep(predictor(id));
        }
        // Using model 1 makes model 2 the least recently used one.
        assert!(m.cached(1).is_some());
        m.keep(predictor(100));
        assert!(m.cached(2).is_none(), "the least recently used model went");
        assert!(m.cached(1).is_some() && m.cached(100).is_some());
        assert_eq!(m.cache().len(), LOADED_MODELS);
    }

    fn listing() -> pb::ModelListing {
        pb::ModelListing {
            id: 5,
            owner_org: "healthtech".into(),
            ..Default::default()
        }
    }

    fn sale(id: u64, org: &str, status: pb::PurchaseStatus) -> pb::Purchase {
        pb::Purchase {
            id,
            model_listing: 5,
            buyer_org: org.into(),
            kind: pb::PurchaseKind::Sale as i32,
            status: status as i32,
            ..Default::default()
        }
    }

    fn verdict(org: &str, purchases: &[pb::Purchase]) -> Result<(), (tonic::Code, String)> {
        may_use(org, &listing(), purchases).map_err(|s| (s.code(), s.message().to_owned()))
    }

    #[test]
    fn the_owners_org_may_use_its_model_without_a_purchase() {
        assert_eq!(verdict("healthtech", &[]), Ok(()));
    }

    #[test]
    fn a_buyer_org_may_use_the_model_once_its_key_was_delivered_and_not_refunded() {
        for status in [
            pb::PurchaseStatus::KeyDelivered,
            pb::PurchaseStatus::Confirmed,
            pb::PurchaseStatus::Released,
        ] {
            assert_eq!(
                verdict("datacorp", &[sale(9, "datacorp", status)]),
                Ok(()),
                "{status:?}"
            );
        }
        let waiting = verdict(
            "datacorp",
            &[sale(9, "datacorp", pb::PurchaseStatus::AwaitingKey)],
        )
        .unwrap_err();
        assert_eq!(waiting.0, tonic::Code::PermissionDenied);
        assert!(
            waiting
                .1
                .contains("purchase 9, whose key is not delivered yet"),
            "{}",
            waiting.1
        );
        for status in [
            pb::PurchaseStatus::Refunded,
            pb::PurchaseStatus::WrongKeyRefunded,
        ] {
            let err = verdict("datacorp", &[sale(9, "datacorp", status)]).unwrap_err();
            assert!(
                err.1.contains("only refunded purchases of it (9)")
                    && err.1.contains("buy it first"),
                "{status:?}: {}",
                err.1
            );
        }
    }

    #[test]
    fn a_purchase_by_another_org_of_another_listing_or_of_another_kind_opens_nothing() {
        let delivered = pb::PurchaseStatus::KeyDelivered;
        let other_listing = pb::Purchase {
            model_listing: 6,
            ..sale(1, "datacorp", delivered)
        };
        let training = pb::Purchase {
            kind: pb::PurchaseKind::Training as i32,
            ..sale(2, "datacorp", delivered)
        };
        for purchases in [
            vec![sale(3, "medlab", delivered)],
            vec![other_listing],
            vec![training],
            vec![],
        ] {
            let err = verdict("datacorp", &purchases).unwrap_err();
            assert_eq!(err.0, tonic::Code::PermissionDenied);
            assert!(
                err.1
                    .contains("has no purchase of it: buy it first (ndctl model buy 5)"),
                "{}",
                err.1
            );
        }
    }

    #[test]
    fn batch_formats_read_as_the_listings_do() {
        assert_eq!(batch_format(0).ok(), Some(Format::Csv));
        assert_eq!(batch_format(1).ok(), Some(Format::Csv));
        assert_eq!(batch_format(2).ok(), Some(Format::JsonLines));
        assert_eq!(batch_format(3).ok(), Some(Format::JsonArray));
        let err = batch_format(7).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn bad_batches_are_invalid_arguments_naming_where_and_model_faults_are_not() {
        let bad = PredictError::MissingColumns {
            line: 1,
            columns: vec!["chol".into()],
        };
        let s = predict_status(&bad, 2000);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "batch starting at row 2000 of this call: line 1: missing feature column(s) \
             [\"chol\"] of the model"
        );
        let s = predict_status(&PredictError::Onnx("boom".into()), 0);
        assert_eq!(s.code(), tonic::Code::Internal);
    }
}
