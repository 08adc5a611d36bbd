//! `neurodata-worker verify`'s leaderboard duty: for every evaluation this validator attests,
//! the verifier waits for the key of the dataset's hidden evaluation split (the chain opened
//! the key request for the validator's first operator, the member this verifier signs as),
//! downloads and decrypts the split from its provider's gateway (checked against the split's
//! CID and plaintext hash: [`neurodata_worker::fetch::fetch_dataset`]), fetches the model file
//! and ONNX export from the worker org's gateway (checked against the model version's CIDs and
//! hash), scores the model on the split and leaves the verdict in the validator's inbox, where
//! the app commits to it and later reveals it. Each step is decided by
//! [`neurodata_worker::evaluation::evaluation_step`]; the journals are under
//! `<state>/verify/evaluations/<id>/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use neurodata_abci::address::Address;
use neurodata_abci::extension::EvaluationVerdictFile;
use neurodata_abci::query;
use neurodata_client::{ChainAccess as _, ClientError};
use neurodata_proto::chain::v1 as pb;
use neurodata_worker::evaluation::{self, EvaluationDir, EvaluationStep, evaluation_step};
use neurodata_worker::fetch::{self, FetchError};

use crate::verify::Verifier;

/// Attempts at fetching one artifact before it counts as withheld.
const FETCH_ATTEMPTS: u32 = 5;
/// Pause between them.
const FETCH_PAUSE: Duration = Duration::from_secs(3);
/// Pause before trying again after a failure of ours (the chain, the disk, the split's gateway).
const RETRY_PAUSE: Duration = Duration::from_secs(10);

/// What the leaderboard duty keeps between polls.
#[derive(Default)]
pub(crate) struct Evaluations {
    /// Evaluations a task is working on.
    in_flight: Mutex<BTreeSet<u64>>,
    /// The last thing logged about an evaluation waiting (logged again only when it changes).
    told: Mutex<BTreeMap<u64, String>>,
}

impl Evaluations {
    /// Logs `why` for evaluation `id` unless it was the last thing said about it.
    fn tell(&self, id: u64, why: &str) {
        let fresh = self
            .told
            .lock()
            .map(|mut t| t.insert(id, why.to_owned()).as_deref() != Some(why))
            .unwrap_or(false);
        if fresh {
            tracing::info!(evaluation = id, "evaluation {id}: {why}");
        }
    }
}

/// The inbox's verdict on evaluation `id`, if there is a readable one.
fn inbox_verdict(dir: &Path, id: u64) -> Option<EvaluationVerdictFile> {
    let path = dir.join(EvaluationVerdictFile::file_name(id));
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("{}: not an evaluation verdict file ({e})", path.display());
            None
        }
    }
}

/// One poll: a task for every attesting evaluation with something to do; the files of
/// evaluations no longer attesting are deleted.
pub(crate) async fn tick(v: &Arc<Verifier>, evs: &Arc<Evaluations>) -> anyhow::Result<()> {
    let all = v
        .node
        .chain()
        .record(query::evaluations())
        .await?
        .unwrap_or_default()
        .evaluations;
    let attesting: Vec<pb::Evaluation> = all
        .into_iter()
        .filter(|e| e.status == pb::EvaluationStatus::Attesting as i32)
        .collect();
    let ids: BTreeSet<u64> = attesting.iter().map(|e| e.id).collect();
    // A verdict left in the inbox for an evaluation that settled is stale: the app would
    // ignore it (no attesting evaluation names it), so it goes.
    for stale in EvaluationVerdictFile::read_all(&v.verdicts)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| !ids.contains(&f.evaluation_id))
    {
        let id = stale.evaluation_id;
        if std::fs::remove_file(v.verdicts.join(EvaluationVerdictFile::file_name(id))).is_ok() {
            tracing::info!(
                evaluation = id,
                "evaluation {id}: no longer attesting; its verdict is removed from the inbox"
            );
        }
    }
    for id in EvaluationDir::list(&v.node.state) {
        let busy = evs
            .in_flight
            .lock()
            .map(|s| s.contains(&id))
            .unwrap_or(true);
        if !ids.contains(&id) && !busy {
            EvaluationDir::new(&v.node.state, id).remove()?;
            tracing::info!(
                evaluation = id,
                "evaluation {id}: no longer attesting; its files are deleted"
            );
        }
    }
    if attesting.is_empty() {
        return Ok(());
    }
    let height = v.node.height().await?;
    for e in attesting {
        let id = e.id;
        let journal = EvaluationDir::new(&v.node.state, id).load()?;
        let step = evaluation_step(
            &e,
            &v.address,
            height,
            &journal,
            inbox_verdict(&v.verdicts, id).as_ref(),
        );
        if matches!(step, EvaluationStep::Skip(_) | EvaluationStep::Done) {
            continue;
        }
        let fresh = evs
            .in_flight
            .lock()
            .map(|mut s| s.insert(id))
            .unwrap_or(false);
        if !fresh {
            continue;
        }
        let (v, evs) = (v.clone(), evs.clone());
        tokio::task::spawn_local(async move {
            if let Err(e) = drive(&v, &evs, id).await {
                tracing::warn!(evaluation = id, "evaluation {id}: {e:#}; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            if let Ok(mut s) = evs.in_flight.lock() {
                s.remove(&id);
            }
        });
    }
    Ok(())
}

/// Takes evaluation `id` to a verdict (or until there is nothing this validator can do for it).
async fn drive(v: &Verifier, evs: &Evaluations, id: u64) -> anyhow::Result<()> {
    let node = &v.node;
    let dir = EvaluationDir::new(&node.state, id);
    loop {
        let Some(e) = node.chain().record(query::evaluation(id)).await? else {
            return Ok(());
        };
        let height = node.height().await?;
        let mut journal = dir.load()?;
        let inbox = inbox_verdict(&v.verdicts, id);
        match evaluation_step(&e, &v.address, height, &journal, inbox.as_ref()) {
            EvaluationStep::Skip(why) => {
                tracing::debug!(evaluation = id, "evaluation {id}: {why}");
                return Ok(());
            }
            EvaluationStep::Done => return Ok(()),
            EvaluationStep::Rewrite(verdict) => {
                verdict.write_atomically(&v.verdicts)?;
                tracing::info!(
                    evaluation = id,
                    "evaluation {id}: verdict matches={} written again (the inbox had lost it)",
                    verdict.matches
                );
                return Ok(());
            }
            EvaluationStep::Score => {}
        }
        let commit_until = e.attestation.as_ref().map_or(0, |a| a.commit_until);
        let data = dir.data_dir();
        let split =
            match fetch::fetch_dataset(&node.gateways, node.me, &node.private, e.split_id, &data)
                .await
            {
                Ok(piece) => piece,
                Err(FetchError::NotYet(why)) => {
                    evs.tell(id, &why);
                    tokio::time::sleep(node.poll).await;
                    continue;
                }
                // The split is the validator's input: not having it says nothing about the model,
                // so it is no verdict.
                Err(err) => {
                    tracing::warn!(
                        evaluation = id,
                        "evaluation {id}: cannot get the evaluation split {} ({err}); no verdict \
                     yet, retrying",
                        e.split_id
                    );
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
        let mv: pb::ModelVersion = node
            .chain()
            .record(query::model_version(e.model_version))
            .await?
            .with_context(|| format!("model version {} does not exist", e.model_version))?;
        let outcome = match fetch_model(v, &mv, &data, commit_until).await? {
            Err(withheld) => Err(withheld),
            Ok((model_file, onnx_file)) => {
                let read =
                    |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
                let (model, onnx, rows) =
                    (read(&model_file)?, read(&onnx_file)?, read(&split.path)?);
                let _turn = v.cpu.acquire().await?;
                tracing::info!(
                    evaluation = id,
                    "evaluation {id}: scoring model version {} on split {}",
                    mv.id,
                    e.split_id
                );
                let split_path = split.path.clone();
                let m = mv.clone();
                tokio::task::spawn_blocking(move || {
                    evaluation::score(&m, &model, &onnx, &split_path, &rows)
                })
                .await?
            }
        };
        let mut salt = [0u8; 32];
        openssl::rand::rand_bytes(&mut salt)?;
        let verdict = evaluation::verdict(&e, &outcome, salt)
            .with_context(|| format!("evaluation {id}'s subject digest is not 32 bytes"))?;
        // Journaled first: the salt must survive whatever happens next.
        journal.verdict = Some(verdict.clone());
        dir.save(&journal)?;
        verdict.write_atomically(&v.verdicts)?;
        match &outcome {
            Ok(score) => tracing::info!(
                evaluation = id,
                "evaluation {id}: verdict matches=true written, score {score}"
            ),
            Err(finding) => tracing::warn!(
                evaluation = id,
                "evaluation {id}: verdict matches=false written: {finding}"
            ),
        }
        dir.remove_data()?;
        return Ok(());
    }
}

/// Fetches model version `mv`'s model file and ONNX export (plaintext artifacts of its job)
/// from the worker org's gateway into `dir`, each checked against its CID. `Ok(Err(finding))`:
/// an artifact is withheld (not fetchable after a few tries, or the commit window is closing)
/// or is not the bytes of its CID.
async fn fetch_model(
    v: &Verifier,
    mv: &pb::ModelVersion,
    dir: &Path,
    commit_until: u64,
) -> anyhow::Result<Result<(PathBuf, PathBuf), String>> {
    let node = &v.node;
    let worker = Address::from_slice(&mv.trainer)
        .with_context(|| format!("model version {}'s trainer is not an address", mv.id))?;
    let location = node
        .chain()
        .record(query::worker(worker))
        .await?
        .map(|w| w.location)
        .unwrap_or_default();
    let model_file = dir.join("model.safetensors");
    let onnx_file = dir.join("model.onnx");
    for (what, cid, path) in [
        ("model.safetensors", &mv.model_cid, &model_file),
        ("model.onnx", &mv.onnx_cid, &onnx_file),
    ] {
        if path.is_file()
            && std::fs::read(path)
                .is_ok_and(|b| neurodata_crypto::cid::Cid::of(&b).to_string() == *cid)
        {
            continue;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let got = match node.gateways.at(&location).await {
                Ok(gw) => fetch::download_to(&gw, cid, path).await,
                Err(e) => Err(e.into()),
            };
            match got {
                Ok(_) => break,
                Err(FetchError::Chain(ClientError::Proof(e))) => {
                    return Ok(Err(format!("{what} is not the bytes of its CID: {e}")));
                }
                Err(e) => {
                    node.gateways.forget(&location).await;
                    let height = node.height().await.unwrap_or(0);
                    if attempt >= FETCH_ATTEMPTS || height + 2 >= commit_until {
                        return Ok(Err(format!(
                            "{what} unavailable from {location:?} after {attempt} attempts: {e}"
                        )));
                    }
                    tracing::info!(
                        model_version = mv.id,
                        "model version {}: fetching {what}: {e}; trying again",
                        mv.id
                    );
                    tokio::time::sleep(FETCH_PAUSE).await;
                }
            }
        }
    }
    Ok(Ok((model_file, onnx_file)))
}
