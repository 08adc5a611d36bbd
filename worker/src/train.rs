//! `neurodata-worker train`: registers the worker and drives each job assigned to it through
//! accept, data, run, upload and submit, one task per job, each step decided by
//! [`neurodata_worker::journal::train_step`] from the chain's record and the job's journal.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use neurodata_abci::query;
use neurodata_client::{ChainAccess as _, ClientError, msg};
use neurodata_proto::chain::v1 as pb;
use neurodata_trainer::JobSpec;
use neurodata_worker::artifacts;
use neurodata_worker::fetch::{self, FetchError};
use neurodata_worker::journal::{
    DataReady, JobDir, JobView, LocalFiles, TrainJournal, TrainStep, Uploaded, train_step,
};
use neurodata_worker::kube_runner::RunTask;
use neurodata_worker::runner::{LocalRunner, RunOutcome, RunRequest, RunStatus, Runner};

use crate::node::{Node, is_wrong_status};
use crate::{MemberArgs, RunnerArgs, RunnerKind};

/// Pause after a job's task failed, before the next poll starts it again.
const RETRY_PAUSE: Duration = Duration::from_secs(5);

type InFlight = Arc<Mutex<BTreeSet<u64>>>;

/// Runs the worker until killed.
pub async fn run(
    m: MemberArgs,
    capacity: u32,
    location: Option<String>,
    threads: Option<usize>,
    runner: RunnerArgs,
) -> anyhow::Result<()> {
    let node = Arc::new(Node::open(&m, "train").await?);
    let location = location.unwrap_or_else(|| m.gateway.clone());
    match runner.runner {
        RunnerKind::Local => {
            let local = LocalRunner {
                trainer: node.trainer.clone(),
                threads,
            };
            serve(node, capacity, location, Arc::new(local)).await
        }
        RunnerKind::Kubernetes => {
            let kube = crate::node::kube_runner(&m, runner, RunTask::Train, &node.me.0).await?;
            let swept = kube
                .sweep_interrupted_starts()
                .await
                .context("cleaning up runs whose start a crash interrupted")?;
            if swept > 0 {
                tracing::info!("{swept} interrupted run start(s) cleaned up");
            }
            serve(node, capacity, location, Arc::new(kube)).await
        }
    }
}

/// Registers, then polls the chain and drives every job assigned to this worker, forever.
async fn serve<R: Runner + 'static>(
    node: Arc<Node>,
    capacity: u32,
    location: String,
    runner: Arc<R>,
) -> anyhow::Result<()> {
    tracing::info!(
        "worker {} starting: capacity {capacity}, artifacts served at {location}, state in {}",
        node.me,
        node.state.display()
    );
    loop {
        match register(&node, capacity, &location).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!("registering the worker: {e:#}; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    let in_flight: InFlight = Arc::default();
    loop {
        if let Err(e) = tick(&node, &runner, &in_flight).await {
            tracing::warn!("polling the chain: {e:#}");
        }
        tokio::time::sleep(node.poll).await;
    }
}

/// Sends RegisterWorker unless the chain's record already says `capacity` at `location`.
async fn register(node: &Node, capacity: u32, location: &str) -> anyhow::Result<()> {
    let record = node.chain().record(query::worker(node.me)).await?;
    if let Some(w) = &record
        && w.capacity == capacity
        && w.location == location
    {
        tracing::info!(
            "worker {} already registered (capacity {capacity})",
            node.me
        );
        return Ok(());
    }
    let c = node
        .submit(msg::register_worker(capacity, location))
        .await
        .context("RegisterWorker")?;
    tracing::info!(
        "worker {} registered: capacity {capacity}, location {location} (height {})",
        node.me,
        c.height
    );
    Ok(())
}

/// One poll: starts a task for every job assigned to us, and for every job directory left from
/// earlier (its task cleans it up when the job is no longer ours).
async fn tick<R: Runner + 'static>(
    node: &Arc<Node>,
    runner: &Arc<R>,
    in_flight: &InFlight,
) -> anyhow::Result<()> {
    let listed = node
        .jobs(pb::JobFilter {
            worker: node.me.0.to_vec(),
            statuses: vec![
                pb::JobStatus::Assigned as i32,
                pb::JobStatus::Training as i32,
                pb::JobStatus::Attesting as i32,
            ],
            ..Default::default()
        })
        .await?;
    let mut ids: BTreeSet<u64> = listed.iter().map(|j| j.id).collect();
    ids.extend(JobDir::list(&node.state));
    for id in ids {
        let fresh = in_flight.lock().map(|mut s| s.insert(id)).unwrap_or(false);
        if !fresh {
            continue;
        }
        let (node, runner, in_flight) = (node.clone(), runner.clone(), in_flight.clone());
        tokio::task::spawn_local(async move {
            if let Err(e) = drive(&node, runner.as_ref(), id).await {
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

/// Takes job `id` through its steps until it waits on others (validators, the chain's windows)
/// or is no longer ours.
async fn drive<R: Runner>(node: &Node, runner: &R, id: u64) -> anyhow::Result<()> {
    let dir = node.job_dir(id);
    let mut told_waiting = false;
    loop {
        let Some(job) = node.job(id).await? else {
            dir.remove()?;
            return Ok(());
        };
        let height = node.height().await?;
        let mut journal: TrainJournal = dir.load()?;
        let files = LocalFiles {
            data_present: journal.data.as_ref().is_some_and(|d| d.file.is_file()),
            outputs_complete: artifacts::outputs_complete(&dir.out_dir()),
        };
        let step = train_step(&JobView::of(&job, &node.me.0), height, &journal, files);
        tracing::debug!(
            job = id,
            ?step,
            phase = journal.phase(),
            "job {id}: next step"
        );
        match step {
            TrainStep::Accept => match node.submit(msg::accept_job(id)).await {
                Ok(c) => {
                    journal.accepted = true;
                    dir.save(&journal)?;
                    tracing::info!(
                        job = id,
                        "job {id}: accepted at height {} (stake {} locked)",
                        c.height,
                        job.stake
                    );
                }
                Err(e) if is_wrong_status(&e) => {
                    tracing::info!(job = id, "job {id}: accept refused, the job moved on: {e}");
                }
                Err(e) => return Err(e).context("AcceptJob"),
            },
            TrainStep::AcceptMissed => {
                tracing::debug!(
                    job = id,
                    "job {id}: the accept window closed at {}",
                    job.accept_by
                );
                return Ok(());
            }
            TrainStep::PrepareData => {
                if !told_waiting {
                    tracing::info!(
                        job = id,
                        "job {id}: training (fetching the data of datasets {:?})",
                        job.dataset_ids
                    );
                }
                let data = dir.data_dir();
                match fetch::job_data(&node.gateways, node.me, &node.private, &job, &data).await {
                    Ok((file, sha256)) => {
                        tracing::info!(
                            job = id,
                            "job {id}: data ready ({}, sha256 {sha256})",
                            file.display()
                        );
                        journal.data = Some(DataReady { file, sha256 });
                        dir.save(&journal)?;
                    }
                    Err(FetchError::NotYet(why)) => {
                        if !told_waiting {
                            tracing::info!(job = id, "job {id}: {why}");
                            told_waiting = true;
                        }
                        tokio::time::sleep(node.poll).await;
                    }
                    Err(FetchError::Refused(why)) => {
                        tracing::error!(job = id, "job {id}: the data cannot be used: {why}");
                        journal.failed = Some(why);
                        dir.save(&journal)?;
                    }
                    Err(e) => return Err(e).context("fetching the data"),
                }
            }
            TrainStep::Run => run_job(runner, &job, &dir, &mut journal).await?,
            TrainStep::Upload => {
                let out = dir.out_dir();
                let uploaded = upload(node, &out).await?;
                tracing::info!(
                    job = id,
                    "job {id}: uploaded model {}, ONNX {}, trace {} and {} checkpoints",
                    uploaded.model_cid,
                    uploaded.onnx_cid,
                    uploaded.trace_cid,
                    uploaded.checkpoint_cids.len()
                );
                journal.uploaded = Some(uploaded);
                dir.save(&journal)?;
            }
            TrainStep::Submit => {
                let cids = journal.uploaded.clone().unwrap_or_default();
                let m = artifacts::submit_result(id, &dir.out_dir(), &cids)?;
                match node.submit(msg::submit_result(m)).await {
                    Ok(c) => {
                        journal.submitted = true;
                        dir.save(&journal)?;
                        tracing::info!(
                            job = id,
                            "job {id}: result submitted at height {}",
                            c.height
                        );
                    }
                    Err(e) if is_wrong_status(&e) => {
                        tracing::info!(job = id, "job {id}: result refused, the job moved on: {e}");
                    }
                    Err(e @ ClientError::Rejected { .. }) => {
                        tracing::error!(job = id, "job {id}: the chain refused the result: {e}");
                        journal.failed = Some(format!("result refused: {e}"));
                        dir.save(&journal)?;
                    }
                    Err(e) => return Err(e).context("SubmitResult"),
                }
            }
            TrainStep::Failed(reason) => {
                if dir.data_dir().exists() {
                    dir.remove_data()?;
                    tracing::info!(job = id, "job {id}: failed ({reason}); plaintext deleted");
                }
                return Ok(());
            }
            TrainStep::Submitted => {
                if !journal.submitted {
                    journal.submitted = true;
                    dir.save(&journal)?;
                    tracing::info!(job = id, "job {id}: result on chain; attesting");
                }
                if dir.data_dir().exists() {
                    dir.remove_data()?;
                    tracing::info!(job = id, "job {id}: plaintext deleted");
                }
                return Ok(());
            }
            TrainStep::Left => {
                if dir.path.exists() {
                    dir.remove()?;
                    tracing::info!(
                        job = id,
                        "job {id}: no longer ours ({}); its files are deleted",
                        neurodata_abci::training::status_name(
                            pb::JobStatus::try_from(job.status).unwrap_or_default()
                        )
                    );
                }
                return Ok(());
            }
        }
    }
}

/// Runs the trainer (or waits for the run a restart left under way) and journals the outcome.
async fn run_job<R: Runner>(
    runner: &R,
    job: &pb::Job,
    dir: &JobDir,
    journal: &mut TrainJournal,
) -> anyhow::Result<()> {
    let id = job.id;
    let Some(data) = journal.data.clone() else {
        return Ok(());
    };
    let spec = JobSpec::from_json(&job.spec_json).with_context(|| format!("job {id}'s spec"))?;
    std::fs::write(dir.spec_path(), &job.spec_json)
        .with_context(|| format!("writing {}", dir.spec_path().display()))?;
    let out = dir.out_dir();
    match runner.find(id, &out).await? {
        Some(RunStatus::Running) => tracing::info!(job = id, "job {id}: training (re-attached)"),
        _ => tracing::info!(
            job = id,
            "job {id}: training ({} s at most)",
            spec.limits.max_seconds
        ),
    }
    let request = RunRequest {
        job_id: id,
        spec: dir.spec_path(),
        data: data.file,
        out,
        max_seconds: spec.limits.max_seconds,
        max_memory_mb: spec.limits.max_memory_mb,
    };
    match runner.run(&request).await? {
        RunOutcome::Succeeded => {
            journal.run_done = true;
            tracing::info!(job = id, "job {id}: run done");
        }
        RunOutcome::Failed(reason) => {
            tracing::error!(job = id, "job {id}: run failed: {reason}");
            journal.failed = Some(reason);
        }
        RunOutcome::DeadlineExceeded => {
            tracing::error!(job = id, "job {id}: run stopped at the spec's time limit");
            journal.failed = Some("time limit exceeded".into());
        }
    }
    dir.save(journal)?;
    Ok(())
}

/// Uploads the published files of the run in `out` to the worker's own gateway.
async fn upload(node: &Node, out: &std::path::Path) -> anyhow::Result<Uploaded> {
    let (result, _) = artifacts::read_result(out)?;
    let mut cids = Vec::new();
    for path in artifacts::published_files(out, result.segments) {
        // Never through a link: the outputs may have been written by a run pod.
        let file = tokio::fs::File::from_std(
            artifacts::open_output(out, &path)
                .with_context(|| format!("opening {}", path.display()))?,
        );
        let (cid, _) = node
            .chain()
            .upload(file)
            .await
            .with_context(|| format!("uploading {}", path.display()))?;
        cids.push(cid);
    }
    let mut cids = cids.into_iter();
    let mut next = || cids.next().unwrap_or_default();
    let (model_cid, onnx_cid, trace_cid) = (next(), next(), next());
    Ok(Uploaded {
        model_cid,
        onnx_cid,
        trace_cid,
        checkpoint_cids: cids.collect(),
    })
}
