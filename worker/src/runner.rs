//! Where a training run executes: a [`Runner`] takes a job's spec, data file and output
//! directory and runs `trainer run` on them under the spec's limits. [`LocalRunner`] runs it as
//! a child process of the worker; a Kubernetes runner (a Job per run: non-root, read-only root
//! filesystem, the spec's limits as resource limits, the data handed over in a per-job volume
//! that is deleted afterwards) implements the same trait.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::artifacts;

/// One run to execute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRequest {
    /// The on-chain job id: the run's identity.
    pub job_id: u64,
    /// The job spec (JSON, as the chain stores it).
    pub spec: PathBuf,
    /// The assembled data file.
    pub data: PathBuf,
    /// The output directory.
    pub out: PathBuf,
    /// Wall-clock limit from the spec (`limits.max_seconds`).
    pub max_seconds: u64,
    /// Memory limit from the spec (`limits.max_memory_mb`).
    pub max_memory_mb: u64,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The outputs in `out` are complete.
    Succeeded,
    /// The trainer refused or failed (the reason, in one line).
    Failed(String),
    /// The run hit the spec's time limit and was stopped.
    DeadlineExceeded,
}

/// What a runner knows of a job's run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// A run of the job is under way (started before a restart of the worker);
    /// [`Runner::run`] waits for it instead of starting another.
    Running,
    /// It ended.
    Finished(RunOutcome),
}

/// A runner could not run or watch a job (as opposed to a run that failed: [`RunOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The trainer did not start.
    #[error("starting {program}: {source}")]
    Start {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Waiting for it, or a file of the run, failed.
    #[error("{what}: {source}")]
    Io {
        /// What was done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// A call to the Kubernetes API failed.
    #[error("{what}: {source}")]
    Kubernetes {
        /// What was done.
        what: String,
        /// Why.
        source: kube::Error,
    },
    /// Watching a Kubernetes object failed.
    #[error("{what}: {source}")]
    Watch {
        /// What was watched.
        what: String,
        /// Why.
        source: kube::runtime::watcher::Error,
    },
}

/// Runs training jobs.
///
/// What every runner must guarantee:
/// - **Idempotent by job id**: [`Runner::run`] for a job whose run is under way attaches to it
///   instead of starting a second one, and one whose outputs are complete is not run again.
/// - **Resumable**: after the worker restarts, [`Runner::find`] tells whether a run of the job
///   is under way or ended (re-attaching to a Kubernetes Job by its name, which carries the job
///   id; to a local trainer process by its pid file), so a run is never orphaned nor doubled.
/// - **Bounded**: a run never outlives the spec's `limits.max_seconds` (it is killed and reported
///   as [`RunOutcome::DeadlineExceeded`]) and is held to `limits.max_memory_mb`.
/// - **Observable**: the trainer's diagnostics reach the worker's log, tagged with the job id.
/// - Writes only under `out`; the data file is read-only to it.
pub trait Runner: Send + Sync {
    /// Runs `job` to its end (or waits for the run of it already under way).
    fn run(&self, job: &RunRequest)
    -> impl Future<Output = Result<RunOutcome, RunnerError>> + Send;

    /// What is known of a run of `job_id` writing to `out`; None if none was started (or the
    /// one started left nothing usable behind).
    fn find(
        &self,
        job_id: u64,
        out: &Path,
    ) -> impl Future<Output = Result<Option<RunStatus>, RunnerError>> + Send;
}

/// Runs `trainer run --spec --data --out --quiet --force` as a child process.
///
/// The trainer checks the time and memory limits itself between steps; the runner kills the
/// process at `max_seconds` in case it is stuck inside one. The child's pid is written beside the
/// output directory (`trainer.pid`), so a restarted worker waits for a trainer that outlived it
/// instead of starting a second one on the same directory.
#[derive(Clone, Debug)]
pub struct LocalRunner {
    /// The trainer binary.
    pub trainer: PathBuf,
    /// `--threads` for the trainer (None: its default, every CPU).
    pub threads: Option<usize>,
}

fn pid_path(out: &Path) -> PathBuf {
    out.with_extension("pid")
}

/// The pid in `out`'s pid file if that process is alive and is a trainer writing to `out`
/// (checked on its command line, so a reused pid is not mistaken for it).
fn live_trainer(out: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_path(out))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let out_arg = out.as_os_str().as_encoded_bytes();
    let ours = cmdline.split(|b| *b == 0).any(|arg| arg == out_arg);
    ours.then_some(pid)
}

impl LocalRunner {
    async fn wait_for_earlier(&self, job: &RunRequest, pid: u32) -> RunOutcome {
        tracing::info!(
            job = job.job_id,
            pid,
            "job {}: a trainer started before a restart is still running; waiting for it",
            job.job_id
        );
        while live_trainer(&job.out).is_some() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if artifacts::outputs_complete(&job.out) {
            RunOutcome::Succeeded
        } else {
            RunOutcome::Failed("the trainer started before a restart left no complete run".into())
        }
    }
}

impl Runner for LocalRunner {
    async fn run(&self, job: &RunRequest) -> Result<RunOutcome, RunnerError> {
        if let Some(pid) = live_trainer(&job.out) {
            let earlier = self.wait_for_earlier(job, pid).await;
            if earlier == RunOutcome::Succeeded {
                return Ok(earlier);
            }
        } else if artifacts::outputs_complete(&job.out) {
            return Ok(RunOutcome::Succeeded);
        }
        let mut cmd = tokio::process::Command::new(&self.trainer);
        if let Some(t) = self.threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        cmd.arg("run")
            .arg("--spec")
            .arg(&job.spec)
            .arg("--data")
            .arg(&job.data)
            .arg("--out")
            .arg(&job.out)
            .arg("--quiet")
            // Whatever an interrupted run left is replaced: complete outputs never get here.
            .arg("--force")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| RunnerError::Start {
            program: self.trainer.display().to_string(),
            source,
        })?;
        if let Some(pid) = child.id() {
            let path = pid_path(&job.out);
            std::fs::write(&path, pid.to_string()).map_err(|source| RunnerError::Io {
                what: format!("writing {}", path.display()),
                source,
            })?;
        }
        let job_id = job.job_id;
        let stderr = child.stderr.take();
        // The trainer's diagnostics go to the worker's log line by line; the last one is the
        // reason of a failure (`error: ...`).
        let lines = tokio::spawn(async move {
            let mut last = String::new();
            if let Some(stderr) = stderr {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(job = job_id, "job {job_id}: trainer: {line}");
                    if !line.trim().is_empty() {
                        last = line;
                    }
                }
            }
            last
        });
        let limit = Duration::from_secs(job.max_seconds);
        let status = match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => status.map_err(|source| RunnerError::Io {
                what: format!("waiting for the trainer of job {job_id}"),
                source,
            })?,
            Err(_) => {
                tracing::warn!(
                    job = job_id,
                    "job {job_id}: the trainer ran past the spec's {} s; killing it",
                    job.max_seconds
                );
                let _ = child.kill().await;
                let _ = std::fs::remove_file(pid_path(&job.out));
                return Ok(RunOutcome::DeadlineExceeded);
            }
        };
        let _ = std::fs::remove_file(pid_path(&job.out));
        let last = lines.await.unwrap_or_default();
        if status.success() {
            return Ok(if artifacts::outputs_complete(&job.out) {
                RunOutcome::Succeeded
            } else {
                RunOutcome::Failed("the trainer exited 0 but its outputs are incomplete".into())
            });
        }
        let reason = last.trim_start_matches("error: ").to_owned();
        // The trainer's own check of limits.max_seconds.
        if reason.contains("time limit") {
            return Ok(RunOutcome::DeadlineExceeded);
        }
        Ok(RunOutcome::Failed(if reason.is_empty() {
            format!("the trainer exited with {status}")
        } else {
            reason
        }))
    }

    async fn find(&self, _job_id: u64, out: &Path) -> Result<Option<RunStatus>, RunnerError> {
        if live_trainer(out).is_some() {
            return Ok(Some(RunStatus::Running));
        }
        Ok(artifacts::outputs_complete(out).then_some(RunStatus::Finished(RunOutcome::Succeeded)))
    }
}
