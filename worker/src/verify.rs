//! `neurodata-worker verify`: for every result this validator attests, asks for the data keys,
//! fetches the data and the artifacts it needs, rebuilds the run from the chain record, re-runs
//! its segments and leaves the verdict in the validator's inbox; each step decided by
//! [`neurodata_worker::journal::verify_step`]. The same loop also runs the validation duty
//! (`validate.rs`: RequestValidation for `--validate-datasets` and every listed model listing,
//! AttestDataset / AttestModelListing for every validation key held) and the leaderboard duty (`evaluate.rs`: scoring a model on a hidden
//! evaluation split for every evaluation this validator attests).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use neurodata_abci::address::Address;
use neurodata_abci::extension::{VerdictFile, key_file_address};
use neurodata_abci::query;
use neurodata_client::{ChainAccess as _, ClientError, msg};
use neurodata_proto::chain::v1 as pb;
use neurodata_worker::artifacts::{checkpoint_path, model_path, onnx_path, trace_path};
use neurodata_worker::fetch::{self, FetchError};
use neurodata_worker::journal::{JobDir, VerifyJournal, VerifyStep, verify_step};
use neurodata_worker::judge::{self, Assignment, Judgement};
use neurodata_worker::kube_runner::{KubeRunner, RunTask, VerifyRequest};

use crate::node::Node;
use crate::{MemberArgs, RunnerArgs, RunnerKind};
use crate::{evaluate, validate};

/// Attempts at fetching one artifact before it counts as withheld.
const FETCH_ATTEMPTS: u32 = 5;
/// Pause between them.
const FETCH_PAUSE: Duration = Duration::from_secs(3);
/// Pause before checking again when the check itself failed (our data, our trainer).
const RETRY_PAUSE: Duration = Duration::from_secs(10);

type InFlight = Arc<Mutex<BTreeSet<u64>>>;

/// What every job task needs.
pub(crate) struct Verifier {
    pub(crate) node: Node,
    /// The validator's CometBFT address.
    pub(crate) address: [u8; 20],
    /// The verdict inbox.
    pub(crate) verdicts: PathBuf,
    /// One re-run (or scoring) at a time: they are CPU-bound and share the machine with the
    /// validator.
    pub(crate) cpu: tokio::sync::Semaphore,
    /// With `--runner kubernetes`: re-runs go to Jobs instead of child processes.
    kube: Option<KubeRunner>,
}

/// Runs the verifier until killed: the results it attests, and the datasets and model listings
/// it validates (the validation purchases it holds, a request for each of `validate_datasets`
/// and for every listed model listing; `validate.rs`).
pub async fn run(
    m: MemberArgs,
    validator_key: PathBuf,
    verdicts: PathBuf,
    validate_datasets: Vec<u64>,
    runner: RunnerArgs,
) -> anyhow::Result<()> {
    let address = key_file_address(&validator_key)?;
    let node = Node::open(&m, "verify").await?;
    let kube = match runner.runner {
        RunnerKind::Local => None,
        RunnerKind::Kubernetes => {
            // Named after the validator, not the member: validators of one org may share the
            // operator's certificate and a namespace.
            let kube = crate::node::kube_runner(&m, runner, RunTask::Verify, &address).await?;
            let swept = kube
                .sweep_interrupted_starts()
                .await
                .context("cleaning up re-executions whose start a crash interrupted")?;
            if swept > 0 {
                tracing::info!("{swept} interrupted re-execution start(s) cleaned up");
            }
            Some(kube)
        }
    };
    std::fs::create_dir_all(&verdicts)
        .with_context(|| format!("creating --verdicts {}", verdicts.display()))?;
    tracing::info!(
        "verifier for validator {} (operator {}) starting: verdicts to {}, state in {}",
        hex::encode_upper(address),
        node.me,
        verdicts.display(),
        node.state.display()
    );
    let v = Arc::new(Verifier {
        node,
        address,
        verdicts,
        cpu: tokio::sync::Semaphore::new(1),
        kube,
    });
    let in_flight: InFlight = Arc::default();
    let validations = Arc::new(validate::Validations::new(&validate_datasets));
    let evaluations = Arc::new(evaluate::Evaluations::default());
    if !validate_datasets.is_empty() {
        tracing::info!("validation to request for datasets {validate_datasets:?}");
    }
    loop {
        if let Err(e) = tick(&v, &in_flight).await {
            tracing::warn!("polling the chain: {e:#}");
        }
        if let Err(e) = validate::tick(&v, &validations).await {
            tracing::warn!("polling the chain for datasets and model listings: {e:#}");
        }
        if let Err(e) = evaluate::tick(&v, &evaluations).await {
            tracing::warn!("polling the chain for evaluations: {e:#}");
        }
        tokio::time::sleep(v.node.poll).await;
    }
}

/// The inbox's verdict on job `id`, if there is a readable one.
fn inbox_verdict(dir: &Path, id: u64) -> Option<VerdictFile> {
    let path = dir.join(VerdictFile::file_name(id));
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("{}: not a verdict file ({e})", path.display());
            None
        }
    }
}

/// One poll: a task for every attesting job with something to do; the directories of jobs no
/// longer attesting are deleted.
async fn tick(v: &Arc<Verifier>, in_flight: &InFlight) -> anyhow::Result<()> {
    let jobs = v
        .node
        .jobs(pb::JobFilter {
            statuses: vec![pb::JobStatus::Attesting as i32],
            ..Default::default()
        })
        .await?;
    let height = v.node.height().await?;
    let attesting: BTreeSet<u64> = jobs.iter().map(|j| j.id).collect();
    // A verdict left in the inbox for a job no longer attesting is stale; the app would ignore
    // it (its result digest names an ended attempt), so it goes.
    for stale in VerdictFile::read_all(&v.verdicts)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| !attesting.contains(&f.job_id))
    {
        let path = v.verdicts.join(VerdictFile::file_name(stale.job_id));
        if std::fs::remove_file(&path).is_ok() {
            tracing::info!(
                job = stale.job_id,
                "job {}: no longer attesting; its verdict is removed from the inbox",
                stale.job_id
            );
        }
    }
    for id in JobDir::list(&v.node.state) {
        let busy = in_flight.lock().map(|s| s.contains(&id)).unwrap_or(true);
        if !attesting.contains(&id) && !busy {
            v.node.job_dir(id).remove()?;
            tracing::info!(
                job = id,
                "job {id}: no longer attesting; its files are deleted"
            );
        }
    }
    for job in jobs {
        let id = job.id;
        let journal: VerifyJournal = v.node.job_dir(id).load()?;
        let step = verify_step(
            &job,
            &v.address,
            height,
            &journal,
            inbox_verdict(&v.verdicts, id).as_ref(),
        );
        if matches!(step, VerifyStep::Skip(_) | VerifyStep::Done) {
            continue;
        }
        let fresh = in_flight.lock().map(|mut s| s.insert(id)).unwrap_or(false);
        if !fresh {
            continue;
        }
        let (v, in_flight) = (v.clone(), in_flight.clone());
        tokio::task::spawn_local(async move {
            if let Err(e) = drive(&v, id).await {
                tracing::warn!(job = id, "job {id}: {e:#}; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            if let Ok(mut s) = in_flight.lock() {
                s.remove(&id);
            }
        });
    }
    Ok(())
}

/// Takes job `id` to a verdict (or until there is nothing this validator can do for it).
async fn drive(v: &Verifier, id: u64) -> anyhow::Result<()> {
    let node = &v.node;
    let dir = node.job_dir(id);
    let mut told_waiting = false;
    loop {
        let Some(job) = node.job(id).await? else {
            return Ok(());
        };
        let height = node.height().await?;
        let mut journal: VerifyJournal = dir.load()?;
        let inbox = inbox_verdict(&v.verdicts, id);
        let step = verify_step(&job, &v.address, height, &journal, inbox.as_ref());
        let (Some(result), Some(att)) = (job.result.clone(), job.attestation.clone()) else {
            return Ok(());
        };
        match step {
            VerifyStep::Skip(why) => {
                tracing::debug!(job = id, "job {id}: {why}");
                return Ok(());
            }
            VerifyStep::Done => return Ok(()),
            VerifyStep::Rewrite(verdict) => {
                verdict.write_atomically(&v.verdicts)?;
                tracing::info!(
                    job = id,
                    "job {id}: verdict matches={} written again (the inbox had lost it)",
                    verdict.matches
                );
                return Ok(());
            }
            VerifyStep::RequestKeys => {
                match node.submit(msg::request_job_keys(id)).await {
                    Ok(c) => {
                        tracing::info!(job = id, "job {id}: keys requested at height {}", c.height)
                    }
                    Err(e @ ClientError::Rejected { .. }) => tracing::warn!(
                        job = id,
                        "job {id}: RequestJobKeys refused ({e}); going on with the keys already held"
                    ),
                    Err(e) => return Err(e).context("RequestJobKeys"),
                }
                journal.keys_requested_for = Some(hex::encode(&result.digest));
                dir.save(&journal)?;
            }
            VerifyStep::Verify => {
                let data = dir.data_dir();
                let (data_file, data_sha256) = match fetch::job_data(
                    &node.gateways,
                    node.me,
                    &node.private,
                    &job,
                    &data,
                )
                .await
                {
                    Ok(d) => d,
                    Err(FetchError::NotYet(why)) => {
                        if !told_waiting {
                            tracing::info!(job = id, "job {id}: {why}");
                            told_waiting = true;
                        }
                        tokio::time::sleep(node.poll).await;
                        continue;
                    }
                    // The data is the validator's input: not having it says nothing about
                    // the result, so it is no verdict.
                    Err(e) => {
                        tracing::warn!(
                            job = id,
                            "job {id}: cannot get the data ({e}); no verdict yet, retrying"
                        );
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                };
                tracing::info!(job = id, "job {id}: data ready (sha256 {data_sha256})");
                let assignment = Assignment::of(&job, v.address)
                    .with_context(|| format!("job {id} has no attestation"))?;
                let out = dir.out_dir();
                let judgement =
                    match fetch_artifacts(node, &job, &assignment, &out, att.commit_until).await? {
                        Err(withheld) => Judgement::Verdict {
                            matches: false,
                            segments_digest: [0; 32],
                            reason: Some(withheld),
                        },
                        Ok(()) => match judge::rebuild_result(&job, &data_sha256) {
                            Err(finding) => Judgement::Verdict {
                                matches: false,
                                segments_digest: [0; 32],
                                reason: Some(finding),
                            },
                            Ok(rebuilt) => {
                                judge::write_result(&out, &rebuilt).with_context(|| {
                                    format!("writing {}/result.json", out.display())
                                })?;
                                let _turn = v.cpu.acquire().await?;
                                tracing::info!(
                                    job = id,
                                    "job {id}: re-running segments {:?}",
                                    assignment.segments(result.segments as usize)
                                );
                                match &v.kube {
                                    None => {
                                        let (trainer, o, d, a, r) = (
                                            node.trainer.clone(),
                                            out.clone(),
                                            data_file.clone(),
                                            assignment.clone(),
                                            result.clone(),
                                        );
                                        tokio::task::spawn_blocking(move || {
                                            judge::judge(&trainer, &o, &d, &a, &r)
                                        })
                                        .await?
                                    }
                                    Some(kube) => {
                                        reexecute(
                                            kube,
                                            &job,
                                            &out,
                                            &data_file,
                                            &assignment,
                                            &result,
                                        )
                                        .await?
                                    }
                                }
                            }
                        },
                    };
                match judgement {
                    Judgement::CannotCheck(why) => {
                        tracing::warn!(
                            job = id,
                            "job {id}: cannot check the result: {why}; no verdict yet, retrying"
                        );
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Judgement::Verdict {
                        matches,
                        segments_digest,
                        reason,
                    } => {
                        let result_digest = <[u8; 32]>::try_from(result.digest.as_slice())
                            .with_context(|| format!("job {id}'s result digest is not 32 bytes"))?;
                        let mut salt = [0u8; 32];
                        openssl::rand::rand_bytes(&mut salt)?;
                        let verdict = VerdictFile {
                            job_id: id,
                            result_digest,
                            matches,
                            segments_digest,
                            salt,
                        };
                        // Journaled first: the salt must survive whatever happens next.
                        journal.verdict = Some(verdict.clone());
                        dir.save(&journal)?;
                        verdict.write_atomically(&v.verdicts)?;
                        match reason {
                            None => tracing::info!(
                                job = id,
                                "job {id}: verdict matches={matches} written"
                            ),
                            Some(r) => tracing::warn!(
                                job = id,
                                "job {id}: verdict matches={matches} written: {r}"
                            ),
                        }
                        dir.remove_data()?;
                        let _ = std::fs::remove_dir_all(&out);
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The judgement of a result with its re-execution in a Kubernetes Job: the CIDs checked here,
/// `trainer verify` in the Job, the model's metrics checked here on the answer.
async fn reexecute(
    kube: &KubeRunner,
    job: &pb::Job,
    out: &Path,
    data: &Path,
    assignment: &Assignment,
    result: &pb::JobResult,
) -> anyhow::Result<Judgement> {
    if let Err(finding) = judge::check_cids(out, result) {
        return Ok(Judgement::mismatch(finding));
    }
    let spec = neurodata_trainer::JobSpec::from_json(&job.spec_json)
        .with_context(|| format!("job {}'s spec", job.id))?;
    let a = assignment.clone();
    let request = VerifyRequest {
        job_id: job.id,
        run: out.to_path_buf(),
        data: data.to_path_buf(),
        args: Box::new(move |run, data| judge::verify_args(run, data, &a)),
        max_seconds: spec.limits.max_seconds,
        max_memory_mb: spec.limits.max_memory_mb,
    };
    let answer = kube.verify(&request).await?;
    let (o, d, r) = (out.to_path_buf(), data.to_path_buf(), result.clone());
    Ok(tokio::task::spawn_blocking(move || judge::judge_answer(&o, &d, &r, answer)).await?)
}

/// Fetches from the worker org's gateway what `trainer verify` reads for `assignment`: the
/// trace, model, ONNX export and the checkpoints it needs, each checked against its CID.
/// `Ok(Err(finding))`: an artifact is withheld (not fetchable after a few tries, or the commit
/// window is closing) or is not the bytes of its CID.
async fn fetch_artifacts(
    node: &Node,
    job: &pb::Job,
    assignment: &Assignment,
    out: &Path,
    commit_until: u64,
) -> anyhow::Result<Result<(), String>> {
    let Some(r) = &job.result else {
        return Ok(Err("no result".into()));
    };
    let worker = Address::from_slice(&job.worker)
        .with_context(|| format!("job {}'s worker is not an address", job.id))?;
    let location = node
        .chain()
        .record(query::worker(worker))
        .await?
        .map(|w| w.location)
        .unwrap_or_default();
    let mut wanted: Vec<(String, String, PathBuf)> = vec![
        ("trace.json".into(), r.trace_cid.clone(), trace_path(out)),
        (
            "model.safetensors".into(),
            r.model_cid.clone(),
            model_path(out),
        ),
        ("model.onnx".into(), r.onnx_cid.clone(), onnx_path(out)),
    ];
    for i in assignment.checkpoints(r.segments as usize) {
        let Some(cid) = r.checkpoint_cids.get(i) else {
            return Ok(Err(format!("the result names no checkpoint {i}")));
        };
        wanted.push((
            format!("checkpoint {i}"),
            cid.clone(),
            checkpoint_path(out, i),
        ));
    }
    for (what, cid, path) in wanted {
        if path.is_file()
            && std::fs::read(&path)
                .is_ok_and(|b| neurodata_crypto::cid::Cid::of(&b).to_string() == cid)
        {
            continue;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let got = match node.gateways.at(&location).await {
                Ok(gw) => fetch::download_to(&gw, &cid, &path).await,
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
                        job = job.id,
                        "job {}: fetching {what}: {e}; trying again",
                        job.id
                    );
                    tokio::time::sleep(FETCH_PAUSE).await;
                }
            }
        }
    }
    Ok(Ok(()))
}
