//! `neurodata-worker verify`'s other duty: checking what is listed for sale. For every validation
//! purchase this member holds with a delivered key, the verifier downloads the ciphertext (a
//! model listing's two) from the provider's (owner's) gateway, checks it against the listing
//! ([`neurodata_worker::validation::findings`], [`neurodata_worker::model_listing::model_findings`]),
//! sends the findings once (`AttestDataset`, `AttestModelListing`) and confirms the purchase
//! (which frees its org's validation slot). It sends `RequestValidation` for the datasets named
//! in `--validate-datasets`, and for every listed model listing its org has not attested (a
//! model listing is verified only by validators who decrypted it, and buyers wait for that),
//! once each. Each step is decided by [`neurodata_worker::validation::validation_step`]; the
//! journals are under `<state>/verify/datasets/<id>/` and `<state>/verify/model-listings/<id>/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use neurodata_abci::escrow::EscrowError;
use neurodata_abci::query;
use neurodata_client::{ChainAccess as _, ClientError, msg};
use neurodata_crypto::{DataKey, wrap};
use neurodata_proto::chain::v1 as pb;
use neurodata_worker::model_listing::{
    ModelFindings, ModelJournal, model_findings, model_listing_step,
};
use neurodata_worker::validation::{
    Attested, DatasetJournal, Findings, Requested, Subject, ValidationDir, ValidationStep,
    dataset_step, findings,
};

use crate::verify::Verifier;

/// Pause before trying again after a failure of ours (a download, the disk, the chain).
const RETRY_PAUSE: Duration = Duration::from_secs(10);

/// What the validation duty keeps between polls.
#[derive(Default)]
pub(crate) struct Validations {
    /// `--validate-datasets`.
    wanted: BTreeSet<u64>,
    /// Datasets and model listings a task is working on.
    in_flight: Mutex<BTreeSet<Subject>>,
    /// The last reason logged for a subject with nothing to do (logged again only when it
    /// changes).
    told: Mutex<BTreeMap<Subject, String>>,
}

impl Validations {
    /// The duty, requesting the datasets named by `--validate-datasets` (and every model
    /// listing).
    pub(crate) fn new(wanted: &[u64]) -> Validations {
        Validations {
            wanted: wanted.iter().copied().filter(|id| *id != 0).collect(),
            ..Default::default()
        }
    }

    /// Logs `why` for `subject` unless it was the last thing said about it.
    fn tell(&self, subject: Subject, why: &str) {
        let fresh = self
            .told
            .lock()
            .map(|mut t| t.insert(subject, why.to_owned()).as_deref() != Some(why))
            .unwrap_or(false);
        if fresh {
            tracing::info!(%subject, "{subject}: {why}");
        } else {
            tracing::debug!(%subject, "{subject}: {why}");
        }
    }
}

/// This member's purchases (every kind; the decision picks its validation requests).
async fn my_purchases(v: &Verifier) -> Result<Vec<pb::Purchase>, ClientError> {
    Ok(v.node
        .chain()
        .record(query::purchases(pb::PurchaseFilter {
            buyer: v.node.me.0.to_vec(),
            ..Default::default()
        }))
        .await?
        .unwrap_or_default()
        .purchases)
}

/// Every listed model listing.
async fn listed_models(v: &Verifier) -> Result<Vec<pb::ModelListing>, ClientError> {
    Ok(v.node
        .chain()
        .record(query::model_listings(pb::ModelListingFilter::default()))
        .await?
        .unwrap_or_default()
        .listings)
}

/// One poll: a task for every dataset and model listing with a step to take.
pub(crate) async fn tick(v: &Arc<Verifier>, vs: &Arc<Validations>) -> anyhow::Result<()> {
    let me = v.node.me.0;
    let purchases = my_purchases(v).await?;
    let listings = listed_models(v).await?;
    let mut subjects: BTreeSet<Subject> =
        vs.wanted.iter().map(|id| Subject::Dataset(*id)).collect();
    subjects.extend(
        purchases
            .iter()
            .filter(|p| p.kind == pb::PurchaseKind::Validation as i32 && p.buyer == me)
            .map(|p| match p.model_listing {
                0 => Subject::Dataset(p.dataset_id),
                l => Subject::ModelListing(l),
            }),
    );
    subjects.extend(listings.iter().map(|l| Subject::ModelListing(l.id)));
    if subjects.is_empty() {
        return Ok(());
    }
    let Some(identity) = v.node.chain().record(query::identity(v.node.me)).await? else {
        tracing::warn!(
            "validation: this member ({}) is not a registered identity yet; no validation",
            v.node.me
        );
        return Ok(());
    };
    let org = &identity.org_id;
    for subject in subjects {
        let dir = ValidationDir::new(&v.node.state, subject);
        let step = match subject {
            Subject::Dataset(id) => {
                let dataset: Option<pb::Dataset> =
                    v.node.chain().record(query::dataset(id)).await?;
                let journal: DatasetJournal = dir.load()?;
                let wanted = vs.wanted.contains(&id);
                dataset_step(id, dataset.as_ref(), &me, org, &purchases, wanted, &journal)
            }
            Subject::ModelListing(id) => {
                // A delisted listing we hold a request of is read on its own.
                let listing = match listings.iter().find(|l| l.id == id) {
                    Some(l) => Some(l.clone()),
                    None => v.node.chain().record(query::model_listing(id)).await?,
                };
                let journal: ModelJournal = dir.load()?;
                model_listing_step(id, listing.as_ref(), &me, org, &purchases, &journal)
            }
        };
        match step {
            ValidationStep::Skip(why) => {
                vs.tell(subject, &why);
                continue;
            }
            ValidationStep::Done => continue,
            ValidationStep::Request | ValidationStep::Attest(_) | ValidationStep::Confirm(_) => {}
        }
        let fresh = vs
            .in_flight
            .lock()
            .map(|mut s| s.insert(subject))
            .unwrap_or(false);
        if !fresh {
            continue;
        }
        let (v, vs) = (v.clone(), vs.clone());
        tokio::task::spawn_local(async move {
            if let Err(e) = drive(&v, &vs, subject, step).await {
                tracing::warn!(%subject, "{subject}: {e:#}; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            if let Ok(mut s) = vs.in_flight.lock() {
                s.remove(&subject);
            }
        });
    }
    Ok(())
}

/// Changes the request and confirmation entries of `dir`'s journal (whatever its findings).
fn edit(
    dir: &ValidationDir,
    change: impl FnOnce(&mut Option<Requested>, &mut Option<u64>),
) -> anyhow::Result<()> {
    match dir.subject {
        Subject::Dataset(_) => {
            let mut j: DatasetJournal = dir.load()?;
            change(&mut j.requested, &mut j.confirmed);
            dir.save(&j)?;
        }
        Subject::ModelListing(_) => {
            let mut j: ModelJournal = dir.load()?;
            change(&mut j.requested, &mut j.confirmed);
            dir.save(&j)?;
        }
    }
    Ok(())
}

/// Takes `step` for `subject`.
async fn drive(
    v: &Verifier,
    vs: &Validations,
    subject: Subject,
    step: ValidationStep,
) -> anyhow::Result<()> {
    let node = &v.node;
    let dir = ValidationDir::new(&node.state, subject);
    match step {
        ValidationStep::Skip(_) | ValidationStep::Done => Ok(()),
        ValidationStep::Request => {
            let request = match subject {
                Subject::Dataset(id) => msg::request_validation(id),
                Subject::ModelListing(id) => msg::request_model_validation(id),
            };
            match node.submit(request).await {
                Ok(c) => {
                    edit(&dir, |requested, _| {
                        *requested = Some(Requested {
                            height: c.height,
                            refused: None,
                        })
                    })?;
                    tracing::info!(
                        %subject,
                        "{subject}: validation requested (height {})",
                        c.height
                    );
                }
                Err(ClientError::Rejected {
                    codespace, code, ..
                }) if codespace == "escrow" && code == quota_code() => {
                    // The org's open requests are at the chain's limit: they close as their
                    // keys are confirmed or released, so the request is tried again later.
                    vs.tell(
                        subject,
                        "validation not requested yet: the org's validation requests are at \
                         the chain's limit (max_open_validations_per_org)",
                    );
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e @ ClientError::Rejected { .. }) => {
                    tracing::warn!(
                        %subject,
                        "{subject}: RequestValidation refused ({e}); not asked again"
                    );
                    edit(&dir, |requested, _| {
                        *requested = Some(Requested {
                            height: 0,
                            refused: Some(e.to_string()),
                        })
                    })?;
                }
                Err(e) => return Err(e).context("RequestValidation"),
            }
            Ok(())
        }
        ValidationStep::Confirm(purchase) => {
            match node.submit(msg::confirm(purchase)).await {
                Ok(c) => tracing::info!(
                    %subject,
                    "{subject}: validation purchase {purchase} confirmed (height {})",
                    c.height
                ),
                // Released at its due height meanwhile: nothing left to close.
                Err(e @ ClientError::Rejected { .. }) => tracing::info!(
                    %subject,
                    "{subject}: ConfirmAccess for purchase {purchase} refused ({e}); leaving it"
                ),
                Err(e) => return Err(e).context("ConfirmAccess"),
            }
            edit(&dir, |_, confirmed| *confirmed = Some(purchase))?;
            Ok(())
        }
        ValidationStep::Attest(purchase) => match subject {
            Subject::Dataset(id) => attest_dataset(v, id, purchase, &dir).await,
            Subject::ModelListing(id) => attest_model(v, id, purchase, &dir).await,
        },
    }
}

/// The escrow code of a refusal for the org's validation quota.
fn quota_code() -> u32 {
    EscrowError::ValidationQuota {
        org: String::new(),
        open: 0,
        max: 0,
    }
    .code()
}

/// The data key delivered on purchase `purchase_id`, unwrapped; `None` if it does not unwrap
/// with our key (as useless as one that does not match the commitment: the provider's gateway
/// wrapped it to us, the decision checked the recipient).
async fn delivered_key(v: &Verifier, purchase_id: u64) -> anyhow::Result<Option<DataKey>> {
    let purchase: pb::Purchase = v
        .node
        .chain()
        .record(query::purchase(purchase_id))
        .await?
        .with_context(|| format!("purchase {purchase_id} not found"))?;
    Ok(wrap::WrappedKey::parse(&purchase.wrapped_key)
        .and_then(|w| wrap::unwrap(&w, &v.node.private))
        .ok())
}

/// Downloads `cid` from the gateway at `location` (empty: this org's) into `path`. Bytes that
/// are not the CID's are kept: the findings say so.
async fn download(v: &Verifier, location: &str, cid: &str, path: &Path) -> anyhow::Result<()> {
    let node = &v.node;
    let source = match node.gateways.at(location).await {
        Ok(g) => g,
        Err(e) => {
            node.gateways.forget(location).await;
            return Err(e).context("connecting to the listing's gateway");
        }
    };
    let mut file = tokio::fs::File::create(path)
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    match source.download(cid, &mut file).await {
        Ok(_) | Err(ClientError::Proof(_)) => {}
        Err(e) => {
            node.gateways.forget(location).await;
            return Err(e).with_context(|| format!("downloading {cid}"));
        }
    }
    file.sync_all()
        .await
        .with_context(|| format!("writing {}", path.display()))
}

/// Where a listing's ciphertexts come from, for the logs.
fn gateway_name(location: &str) -> &str {
    if location.is_empty() {
        "this org's gateway"
    } else {
        location
    }
}

/// Runs `check` on a blocking thread; whatever happens, the downloaded (and decrypted) files of
/// `dir` are deleted before this returns.
async fn checked<T: Send + 'static>(
    dir: &ValidationDir,
    check: impl FnOnce() -> Result<T, neurodata_worker::validation::CheckError> + Send + 'static,
) -> anyhow::Result<T> {
    let result = tokio::task::spawn_blocking(check).await;
    let removed = dir.remove_data();
    let found = match result {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return Err(e).context("checking the listing"),
        Err(e) => return Err(e).context("checking the listing"),
    };
    removed.with_context(|| format!("deleting {}", dir.data_dir().display()))?;
    Ok(found)
}

/// Sends an attestation of `subject`; its commit height, or 0 when the chain refused it (no
/// longer an operator, the listing gone or delisted): sent once all the same, the chain has
/// nothing of ours to replace.
async fn send_attestation(v: &Verifier, subject: Subject, m: pb::Message) -> anyhow::Result<u64> {
    match v.node.submit(m).await {
        Ok(c) => Ok(c.height),
        Err(e @ ClientError::Rejected { .. }) => {
            tracing::warn!(%subject, "{subject}: attestation refused ({e}); not sent again");
            Ok(0)
        }
        Err(e) => Err(e).context("attesting"),
    }
}

/// Downloads dataset `id`'s ciphertext, checks it with the key delivered on `purchase_id`, sends
/// the findings and journals them; the downloaded and decrypted files are deleted.
async fn attest_dataset(
    v: &Verifier,
    id: u64,
    purchase_id: u64,
    dir: &ValidationDir,
) -> anyhow::Result<()> {
    let dataset: pb::Dataset = v
        .node
        .chain()
        .record(query::dataset(id))
        .await?
        .with_context(|| format!("dataset {id} not found"))?;
    let key = delivered_key(v, purchase_id).await?;
    let data = dir.data_dir();
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let sealed = data.join("ciphertext");
    tracing::info!(
        dataset = id,
        "dataset {id}: key delivered on purchase {purchase_id}; downloading {} ({} bytes) from {}",
        dataset.cid,
        dataset.ciphertext_size,
        gateway_name(&dataset.location)
    );
    if let Err(e) = download(v, &dataset.location, &dataset.cid, &sealed).await {
        dir.remove_data()?;
        return Err(e);
    }
    let (d, s, w) = (dataset.clone(), sealed, data.join("work"));
    let found = checked(dir, move || findings(&d, &s, key.as_ref(), &w)).await?;
    for note in &found.notes {
        tracing::warn!(dataset = id, "dataset {id}: {note}");
    }
    let subject = Subject::Dataset(id);
    let height = send_attestation(v, subject, msg::attest(found.message(id))).await?;
    let summary = found.summary(dataset.rows);
    let positive = found.positive(dataset.rows);
    journal_attested::<Findings>(dir, purchase_id, height, found)?;
    if height > 0 {
        if positive {
            tracing::info!(dataset = id, "dataset {id}: attested ({summary})");
        } else {
            tracing::warn!(dataset = id, "dataset {id}: attested negative ({summary})");
        }
    }
    Ok(())
}

/// Downloads model listing `id`'s two ciphertexts, checks them against the card with the key
/// delivered on `purchase_id`, sends the findings and journals them; the downloaded files are
/// deleted (nothing is decrypted to disk).
async fn attest_model(
    v: &Verifier,
    id: u64,
    purchase_id: u64,
    dir: &ValidationDir,
) -> anyhow::Result<()> {
    let listing: pb::ModelListing = v
        .node
        .chain()
        .record(query::model_listing(id))
        .await?
        .with_context(|| format!("model listing {id} not found"))?;
    let key = delivered_key(v, purchase_id).await?;
    let data = dir.data_dir();
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let (model, onnx) = (data.join("model.ndenc"), data.join("onnx.ndenc"));
    tracing::info!(
        listing = id,
        "model listing {id}: key delivered on purchase {purchase_id}; downloading {} ({} \
         bytes) and {} ({} bytes) from {}",
        listing.model_cid,
        listing.model_ciphertext_size,
        listing.onnx_cid,
        listing.onnx_ciphertext_size,
        gateway_name(&listing.location)
    );
    for (cid, path) in [(&listing.model_cid, &model), (&listing.onnx_cid, &onnx)] {
        if let Err(e) = download(v, &listing.location, cid, path).await {
            dir.remove_data()?;
            return Err(e);
        }
    }
    let l = listing.clone();
    let found = checked(dir, move || model_findings(&l, &model, &onnx, key.as_ref())).await?;
    for note in &found.notes {
        tracing::warn!(listing = id, "model listing {id}: {note}");
    }
    let subject = Subject::ModelListing(id);
    let height = send_attestation(v, subject, msg::attest_model_listing(found.message(id))).await?;
    let (summary, positive) = (found.summary(), found.positive());
    journal_attested::<ModelFindings>(dir, purchase_id, height, found)?;
    if height > 0 {
        if positive {
            tracing::info!(listing = id, "model listing {id}: attested ({summary})");
        } else {
            tracing::warn!(
                listing = id,
                "model listing {id}: attested negative ({summary})"
            );
        }
    }
    Ok(())
}

/// Journals the findings sent for `dir`'s subject.
fn journal_attested<F: serde::Serialize + serde::de::DeserializeOwned>(
    dir: &ValidationDir,
    purchase_id: u64,
    height: u64,
    findings: F,
) -> anyhow::Result<()> {
    let mut journal = dir.load::<F>()?;
    journal.attested = Some(Attested {
        purchase_id,
        height,
        findings,
    });
    dir.save(&journal)?;
    Ok(())
}
