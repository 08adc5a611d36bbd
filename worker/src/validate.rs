//! `neurodata-worker verify`'s other duty: checking listed datasets for `AttestDataset`. For every
//! validation purchase this member holds with a delivered key, the verifier downloads the
//! ciphertext from the provider's gateway, checks it against the listing
//! ([`neurodata_worker::validation::findings`]), sends the findings once and confirms the
//! purchase (which frees its org's validation slot); it sends `RequestValidation` only for the
//! datasets named in `--validate-datasets`, once each. Each step is decided by
//! [`neurodata_worker::validation::dataset_step`]; the journals are under
//! `<state>/verify/datasets/<id>/`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use neurodata_abci::escrow::EscrowError;
use neurodata_abci::query;
use neurodata_client::{ChainAccess as _, ClientError, msg};
use neurodata_crypto::wrap;
use neurodata_proto::chain::v1 as pb;
use neurodata_worker::validation::{
    Attested, DatasetDir, DatasetJournal, DatasetStep, Requested, dataset_step, findings,
};

use crate::verify::Verifier;

/// Pause before trying a dataset again after a failure of ours (a download, the disk, the chain).
const RETRY_PAUSE: Duration = Duration::from_secs(10);

/// What the dataset duty keeps between polls.
#[derive(Default)]
pub(crate) struct Datasets {
    /// `--validate-datasets`.
    wanted: BTreeSet<u64>,
    /// Datasets a task is working on.
    in_flight: Mutex<BTreeSet<u64>>,
    /// The last reason logged for a dataset with nothing to do (logged again only when it
    /// changes).
    told: Mutex<BTreeMap<u64, String>>,
}

impl Datasets {
    /// The duty for the datasets named by `--validate-datasets`.
    pub(crate) fn new(wanted: &[u64]) -> Datasets {
        Datasets {
            wanted: wanted.iter().copied().filter(|id| *id != 0).collect(),
            ..Default::default()
        }
    }

    /// Logs `why` for dataset `id` unless it was the last thing said about it.
    fn tell(&self, id: u64, why: &str) {
        let fresh = self
            .told
            .lock()
            .map(|mut t| t.insert(id, why.to_owned()).as_deref() != Some(why))
            .unwrap_or(false);
        if fresh {
            tracing::info!(dataset = id, "dataset {id}: {why}");
        } else {
            tracing::debug!(dataset = id, "dataset {id}: {why}");
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

/// One poll: a task for every dataset with a step to take.
pub(crate) async fn tick(v: &Arc<Verifier>, ds: &Arc<Datasets>) -> anyhow::Result<()> {
    let me = v.node.me.0;
    let purchases = my_purchases(v).await?;
    let mut ids = ds.wanted.clone();
    ids.extend(
        purchases
            .iter()
            .filter(|p| p.kind == pb::PurchaseKind::Validation as i32 && p.buyer == me)
            .map(|p| p.dataset_id),
    );
    if ids.is_empty() {
        return Ok(());
    }
    let Some(identity) = v.node.chain().record(query::identity(v.node.me)).await? else {
        tracing::warn!(
            "datasets: this member ({}) is not a registered identity yet; no validation",
            v.node.me
        );
        return Ok(());
    };
    for id in ids {
        let dataset: Option<pb::Dataset> = v.node.chain().record(query::dataset(id)).await?;
        let dir = DatasetDir::new(&v.node.state, id);
        let journal = dir.load()?;
        let step = dataset_step(
            dataset.as_ref(),
            &me,
            &identity.org_id,
            &purchases,
            ds.wanted.contains(&id),
            &journal,
        );
        match step {
            DatasetStep::Skip(why) => {
                ds.tell(id, &why);
                continue;
            }
            DatasetStep::Done => continue,
            DatasetStep::Request | DatasetStep::Attest(_) | DatasetStep::Confirm(_) => {}
        }
        let fresh = ds
            .in_flight
            .lock()
            .map(|mut s| s.insert(id))
            .unwrap_or(false);
        if !fresh {
            continue;
        }
        let (v, ds) = (v.clone(), ds.clone());
        tokio::task::spawn_local(async move {
            if let Err(e) = drive(&v, &ds, id, step).await {
                tracing::warn!(dataset = id, "dataset {id}: {e:#}; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            if let Ok(mut s) = ds.in_flight.lock() {
                s.remove(&id);
            }
        });
    }
    Ok(())
}

/// Takes `step` for dataset `id`.
async fn drive(v: &Verifier, ds: &Datasets, id: u64, step: DatasetStep) -> anyhow::Result<()> {
    let node = &v.node;
    let dir = DatasetDir::new(&node.state, id);
    let mut journal: DatasetJournal = dir.load()?;
    match step {
        DatasetStep::Skip(_) | DatasetStep::Done => Ok(()),
        DatasetStep::Request => {
            match node.submit(msg::request_validation(id)).await {
                Ok(c) => {
                    journal.requested = Some(Requested {
                        height: c.height,
                        refused: None,
                    });
                    dir.save(&journal)?;
                    tracing::info!(
                        dataset = id,
                        "dataset {id}: validation requested (height {})",
                        c.height
                    );
                }
                Err(ClientError::Rejected {
                    codespace, code, ..
                }) if codespace == "escrow" && code == quota_code() => {
                    // The org's open requests are at the chain's limit: they close as their
                    // keys are confirmed or released, so the request is tried again later.
                    ds.tell(
                        id,
                        "validation not requested yet: the org's validation requests are at \
                         the chain's limit (max_open_validations_per_org)",
                    );
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e @ ClientError::Rejected { .. }) => {
                    tracing::warn!(
                        dataset = id,
                        "dataset {id}: RequestValidation refused ({e}); not asked again"
                    );
                    journal.requested = Some(Requested {
                        height: 0,
                        refused: Some(e.to_string()),
                    });
                    dir.save(&journal)?;
                }
                Err(e) => return Err(e).context("RequestValidation"),
            }
            Ok(())
        }
        DatasetStep::Confirm(purchase) => {
            match node.submit(msg::confirm(purchase)).await {
                Ok(c) => tracing::info!(
                    dataset = id,
                    "dataset {id}: validation purchase {purchase} confirmed (height {})",
                    c.height
                ),
                // Released at its due height meanwhile: nothing left to close.
                Err(e @ ClientError::Rejected { .. }) => tracing::info!(
                    dataset = id,
                    "dataset {id}: ConfirmAccess for purchase {purchase} refused ({e}); leaving it"
                ),
                Err(e) => return Err(e).context("ConfirmAccess"),
            }
            journal.confirmed = Some(purchase);
            dir.save(&journal)?;
            Ok(())
        }
        DatasetStep::Attest(purchase) => attest(v, id, purchase, &dir, journal).await,
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

/// Downloads dataset `id`'s ciphertext, checks it with the key delivered on `purchase_id`, sends
/// the findings and journals them; the downloaded and decrypted files are deleted.
async fn attest(
    v: &Verifier,
    id: u64,
    purchase_id: u64,
    dir: &DatasetDir,
    mut journal: DatasetJournal,
) -> anyhow::Result<()> {
    let node = &v.node;
    let chain = node.chain();
    let dataset: pb::Dataset = chain
        .record(query::dataset(id))
        .await?
        .with_context(|| format!("dataset {id} not found"))?;
    let purchase: pb::Purchase = chain
        .record(query::purchase(purchase_id))
        .await?
        .with_context(|| format!("purchase {purchase_id} not found"))?;
    // A key that does not unwrap with our key is as useless as one that does not match the
    // commitment: the provider's gateway wrapped it to us (the decision checked the recipient).
    let key = wrap::WrappedKey::parse(&purchase.wrapped_key)
        .and_then(|w| wrap::unwrap(&w, &node.private))
        .ok();
    let data = dir.data_dir();
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let sealed = data.join("ciphertext");
    tracing::info!(
        dataset = id,
        "dataset {id}: key delivered on purchase {purchase_id}; downloading {} ({} bytes) from {}",
        dataset.cid,
        dataset.ciphertext_size,
        if dataset.location.is_empty() {
            "this org's gateway"
        } else {
            dataset.location.as_str()
        }
    );
    let source = match node.gateways.at(&dataset.location).await {
        Ok(g) => g,
        Err(e) => {
            node.gateways.forget(&dataset.location).await;
            return Err(e).context("connecting to the provider's gateway");
        }
    };
    let mut file = tokio::fs::File::create(&sealed)
        .await
        .with_context(|| format!("creating {}", sealed.display()))?;
    match source.download(&dataset.cid, &mut file).await {
        // Every byte was written; they are not the CID's, which the findings say.
        Ok(_) | Err(ClientError::Proof(_)) => {}
        Err(e) => {
            node.gateways.forget(&dataset.location).await;
            return Err(e).context("downloading the ciphertext");
        }
    }
    file.sync_all()
        .await
        .with_context(|| format!("writing {}", sealed.display()))?;
    drop(file);
    let (d, s, w) = (dataset.clone(), sealed.clone(), data.join("work"));
    let checked = tokio::task::spawn_blocking(move || findings(&d, &s, key.as_ref(), &w)).await;
    let found = match checked {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            dir.remove_data()?;
            return Err(e).context("checking the dataset");
        }
        Err(e) => {
            dir.remove_data()?;
            return Err(e).context("checking the dataset");
        }
    };
    dir.remove_data()
        .with_context(|| format!("deleting {}", data.display()))?;
    for note in &found.notes {
        tracing::warn!(dataset = id, "dataset {id}: {note}");
    }
    let height = match node.submit(msg::attest(found.message(id))).await {
        Ok(c) => c.height,
        // Refused (no longer an operator, the dataset gone): sent once all the same; the chain
        // has nothing of ours to replace.
        Err(e @ ClientError::Rejected { .. }) => {
            tracing::warn!(
                dataset = id,
                "dataset {id}: AttestDataset refused ({e}); not sent again"
            );
            0
        }
        Err(e) => return Err(e).context("AttestDataset"),
    };
    let summary = found.summary(dataset.rows);
    let positive = found.positive(dataset.rows);
    journal.attested = Some(Attested {
        purchase_id,
        height,
        findings: found,
    });
    dir.save(&journal)?;
    if height > 0 {
        if positive {
            tracing::info!(dataset = id, "dataset {id}: attested ({summary})");
        } else {
            tracing::warn!(dataset = id, "dataset {id}: attested negative ({summary})");
        }
    }
    Ok(())
}
