//! `neurodata-worker pod-run`: the command of a Kubernetes run pod (see the library's
//! `kube_runner`). It opens the sealed data with the run's key (from the run's Secret) into a
//! memory-backed directory, then either runs a training job on it as the local runner does, or
//! (with trainer arguments after `--`) a verifier's `trainer verify`. It says how the run ended
//! in the container's termination message, which the worker reads from the pod's status:
//! `error: <reason>` or `time limit exceeded`, or for a verification the trainer's answer.

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
    /// The job spec (JSON); for a training run.
    #[arg(long, required_unless_present = "trainer_args")]
    spec: Option<PathBuf>,
    /// The run's data key: 32 raw bytes.
    #[arg(long)]
    key: PathBuf,
    /// The sealed data file (`<data file name>.sealed`).
    #[arg(long)]
    sealed: PathBuf,
    /// Directory for the decrypted data (a memory-backed volume).
    #[arg(long)]
    plain: PathBuf,
    /// The trainer's output directory; for a training run.
    #[arg(long, required_unless_present = "trainer_args")]
    out: Option<PathBuf>,
    /// Kernel threads for the trainer.
    #[arg(long)]
    threads: Option<usize>,
    /// The trainer binary.
    #[arg(long, env = "NEURODATA_TRAINER", default_value = "trainer")]
    trainer: PathBuf,
    /// Where to write the termination message.
    #[arg(long, default_value = TERMINATION_LOG)]
    termination_log: PathBuf,
    /// Instead of a training run: these trainer arguments (`verify ... --json`, the data path
    /// being the decrypted file in --plain); the answer is the termination message.
    #[arg(last = true)]
    trainer_args: Vec<String>,
}

/// Most bytes of a termination message Kubernetes keeps.
const TERMINATION_MESSAGE_MAX: usize = 4096;

/// Opens the data, runs the trainer, reports; an error is reported in the termination message
/// too, so the worker can tell the operator why.
pub async fn run(args: PodRunArgs) -> anyhow::Result<()> {
    if !args.trainer_args.is_empty() {
        return verify(&args).await;
    }
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

/// A verification: the trainer's JSON answer, cut to what the verifier reads (it must fit a
/// termination message), or `error: <why it could not check>`.
async fn verify(args: &PodRunArgs) -> anyhow::Result<()> {
    let result = verify_inner(args).await;
    let (message, ok) = match &result {
        Ok(answer) => (answer.clone(), true),
        Err(e) => (format!("error: {e:#}"), false),
    };
    if let Err(e) = std::fs::write(&args.termination_log, &message) {
        tracing::debug!(
            "writing {}: {e} (not in a pod?)",
            args.termination_log.display()
        );
    }
    if ok {
        println!("{message}");
        Ok(())
    } else {
        anyhow::bail!("{message}")
    }
}

async fn verify_inner(args: &PodRunArgs) -> anyhow::Result<String> {
    let key_bytes =
        std::fs::read(&args.key).with_context(|| format!("reading {}", args.key.display()))?;
    let key = DataKey::from_slice(&key_bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a data key: {e}", args.key.display()))?;
    let data = open(&args.sealed, &args.plain, &key)?;
    let mut cmd = tokio::process::Command::new(&args.trainer);
    if let Some(t) = args.threads {
        cmd.arg("--threads").arg(t.to_string());
    }
    let output = cmd
        .args(&args.trainer_args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    let _ = std::fs::remove_file(&data);
    let output = output.with_context(|| format!("starting {}", args.trainer.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        anyhow::bail!(
            "{}",
            last.unwrap_or("the trainer failed")
                .trim_start_matches("error: ")
        );
    }
    let full: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("the trainer's answer is not JSON")?;
    let mut error = full["error"].as_str().map(str::to_owned);
    if let Some(e) = &mut error {
        e.truncate(e.floor_char_boundary(1024));
    }
    let answer = serde_json::json!({
        "matches": full["matches"],
        "segments_digest": full["segments_digest"],
        "error": error,
    })
    .to_string();
    anyhow::ensure!(
        answer.len() <= TERMINATION_MESSAGE_MAX,
        "the answer is {} bytes, more than a termination message holds",
        answer.len()
    );
    Ok(answer)
}

async fn run_inner(args: &PodRunArgs) -> anyhow::Result<RunOutcome> {
    let (Some(spec_path), Some(out)) = (&args.spec, &args.out) else {
        anyhow::bail!("a training run needs --spec and --out");
    };
    let spec_text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("reading {}", spec_path.display()))?;
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
        spec: spec_path.clone(),
        data: data.clone(),
        out: out.clone(),
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
