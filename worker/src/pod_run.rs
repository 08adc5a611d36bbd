//! `neurodata-worker pod-run`: the command of a Kubernetes run pod (see the library's
//! `kube_runner`). It opens the sealed data with the run's key (from the run's Secret) into a
//! memory-backed directory, runs the trainer on it as the local runner does, and says how the
//! run ended in the container's termination message, which the worker reads from the pod's
//! status: `error: <reason>` or `time limit exceeded`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use neurodata_crypto::DataKey;
use neurodata_trainer::JobSpec;
use neurodata_worker::kube_runner::TIME_LIMIT_MESSAGE;
use neurodata_worker::runner::{LocalRunner, RunOutcome, RunRequest, Runner as _};

/// Where Kubernetes reads a container's termination message from.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// `pod-run`'s arguments (the runner's pod template writes them).
#[derive(Args, Clone, Debug)]
pub struct PodRunArgs {
    /// The job spec (JSON).
    #[arg(long)]
    spec: PathBuf,
    /// The run's data key: 32 raw bytes.
    #[arg(long)]
    key: PathBuf,
    /// The sealed data file (`<data file name>.sealed`).
    #[arg(long)]
    sealed: PathBuf,
    /// Directory for the decrypted data (a memory-backed volume).
    #[arg(long)]
    plain: PathBuf,
    /// The trainer's output directory.
    #[arg(long)]
    out: PathBuf,
    /// Kernel threads for the trainer.
    #[arg(long)]
    threads: Option<usize>,
    /// The trainer binary.
    #[arg(long, env = "NEURODATA_TRAINER", default_value = "trainer")]
    trainer: PathBuf,
    /// Where to write the termination message.
    #[arg(long, default_value = TERMINATION_LOG)]
    termination_log: PathBuf,
}

/// Opens the data, runs the trainer, reports; an error is reported in the termination message
/// too, so the worker can tell the operator why.
pub async fn run(args: PodRunArgs) -> anyhow::Result<()> {
    let result = run_inner(&args).await;
    let message = match &result {
        Ok(RunOutcome::Succeeded) => None,
        Ok(RunOutcome::DeadlineExceeded) => Some(TIME_LIMIT_MESSAGE.to_owned()),
        Ok(RunOutcome::Failed(reason)) => Some(format!("error: {reason}")),
        Err(e) => Some(format!("error: {e:#}")),
    };
    if let Some(message) = &message {
        // Best effort: outside a pod there may be no such file; the log says it as well.
        if let Err(e) = std::fs::write(&args.termination_log, message) {
            tracing::debug!(
                "writing {}: {e} (not in a pod?)",
                args.termination_log.display()
            );
        }
        anyhow::bail!("{message}");
    }
    Ok(())
}

async fn run_inner(args: &PodRunArgs) -> anyhow::Result<RunOutcome> {
    let spec_text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading {}", args.spec.display()))?;
    let spec = JobSpec::from_json(&spec_text).context("the job spec")?;
    let key_bytes =
        std::fs::read(&args.key).with_context(|| format!("reading {}", args.key.display()))?;
    let key = DataKey::from_slice(&key_bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a data key: {e}", args.key.display()))?;
    let data = open(&args.sealed, &args.plain, &key)?;
    let runner = LocalRunner {
        trainer: args.trainer.clone(),
        threads: args.threads,
    };
    let request = RunRequest {
        job_id: 0,
        spec: args.spec.clone(),
        data: data.clone(),
        out: args.out.clone(),
        max_seconds: spec.limits.max_seconds,
        max_memory_mb: spec.limits.max_memory_mb,
    };
    let outcome = runner.run(&request).await;
    // The plaintext goes as soon as the trainer is done with it (the volume is memory).
    let _ = std::fs::remove_file(&data);
    Ok(outcome?)
}

/// Decrypts `sealed` into `plain/<its name without .sealed>` and returns that path.
fn open(sealed: &Path, plain: &Path, key: &DataKey) -> anyhow::Result<PathBuf> {
    let name = sealed
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".sealed"))
        .filter(|n| !n.is_empty())
        .with_context(|| format!("{}: not a .sealed file", sealed.display()))?;
    let path = plain.join(name);
    let input =
        std::fs::File::open(sealed).with_context(|| format!("opening {}", sealed.display()))?;
    let output =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let opened = neurodata_crypto::stream::decrypt(
        std::io::BufReader::new(input),
        std::io::BufWriter::new(output),
        key,
    );
    if let Err(e) = opened {
        let _ = std::fs::remove_file(&path);
        anyhow::bail!(
            "{} does not open with the run's key (wrong key or damaged file): {e}",
            sealed.display()
        );
    }
    Ok(path)
}
