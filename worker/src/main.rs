//! `neurodata-worker`: `train` runs the jobs the chain assigns to this worker; `verify` re-runs
//! a validator's share of each result it attests and leaves the verdict for its abci-app, and
//! checks the datasets its operator holds a validation key for (`validate.rs`).
//!
//! Both poll the chain through the member's org gateway about once a second rather than follow
//! the gateway's event stream: every decision is taken from the chain's current records plus the
//! local journal (see the library's `journal` module), so a poll after a restart, a dropped
//! connection or a missed event finds the same state a stream would have led to, with no event
//! replay or cursor to keep. A `/jobs` read per second is cheap next to a training run.

mod evaluate;
mod node;
mod pod_run;
mod train;
mod validate;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "neurodata-worker",
    version,
    about = "Runs NeuroData training jobs (train) and re-runs a validator's share of results (verify)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How this member reaches the chain, and where it keeps its work.
#[derive(Args, Clone, Debug)]
pub struct MemberArgs {
    /// The member's org gateway, e.g. https://127.0.0.1:26608 (gRPC over mTLS).
    #[arg(long, env = "NEURODATA_GATEWAY")]
    pub gateway: String,
    /// The CA that issued the gateway's server certificate (the org's root CA, PEM).
    #[arg(long, env = "NEURODATA_GATEWAY_CA")]
    pub ca: PathBuf,
    /// The member certificate (PEM): it signs the txs and is presented to every gateway.
    #[arg(long, env = "NEURODATA_CERT")]
    pub cert: PathBuf,
    /// Its private key (PEM): it also unwraps the data keys delivered to this member.
    #[arg(long, env = "NEURODATA_KEY")]
    pub key: PathBuf,
    /// Directory for per-job work: journals, decrypted data (deleted when done), run outputs.
    #[arg(long, env = "NEURODATA_WORKER_STATE")]
    pub state: PathBuf,
    /// Directory for decrypted job data instead of `--state` (a volume of the worker's own, e.g.
    /// a memory-backed emptyDir, when `--state` is shared with Kubernetes run pods).
    #[arg(long, env = "NEURODATA_WORKER_SCRATCH")]
    pub scratch: Option<PathBuf>,
    /// The trainer binary.
    #[arg(long, env = "NEURODATA_TRAINER", default_value = "trainer")]
    pub trainer: PathBuf,
    /// Fee per tx in NRC (whole NRC).
    #[arg(long, env = "NEURODATA_FEE", default_value = "1")]
    pub fee: String,
    /// Milliseconds between polls of the chain.
    #[arg(long, env = "NEURODATA_POLL_MS", default_value_t = 1000)]
    pub poll_ms: u64,
}

/// Where training runs execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RunnerKind {
    /// A trainer child process of the worker.
    Local,
    /// A Kubernetes Job per run, in the worker's namespace (the worker runs in a pod whose
    /// --state is a ReadWriteMany PersistentVolumeClaim, --k8s-work-claim).
    Kubernetes,
}

/// The runner and, for `kubernetes`, how its run pods are made.
#[derive(Args, Clone, Debug)]
pub struct RunnerArgs {
    /// Where runs execute.
    #[arg(long, env = "NEURODATA_RUNNER", value_enum, default_value_t = RunnerKind::Local)]
    pub runner: RunnerKind,
    /// Namespace of the run Jobs (default: the worker pod's own).
    #[arg(long, env = "NEURODATA_K8S_NAMESPACE")]
    pub k8s_namespace: Option<String>,
    /// Image of the run pods (holds neurodata-worker and trainer).
    #[arg(long, env = "NEURODATA_K8S_IMAGE")]
    pub k8s_image: Option<String>,
    /// The PersistentVolumeClaim mounted at --state; run pods mount their job's files from it.
    #[arg(long, env = "NEURODATA_K8S_WORK_CLAIM")]
    pub k8s_work_claim: Option<String>,
    /// Labels of the org gateway's pods (k=v,k=v): the only egress a run pod is allowed.
    #[arg(
        long,
        env = "NEURODATA_K8S_GATEWAY_SELECTOR",
        value_delimiter = ',',
        value_name = "K=V,..."
    )]
    pub k8s_gateway_selector: Vec<String>,
    /// The gateway's gRPC port (the run pods' egress).
    #[arg(long, env = "NEURODATA_K8S_GATEWAY_PORT", default_value_t = 26608)]
    pub k8s_gateway_port: u16,
    /// CPU request and limit of a run pod (a Kubernetes quantity); the trainer gets as many
    /// threads.
    #[arg(long, env = "NEURODATA_K8S_CPU", default_value = "1")]
    pub k8s_cpu: String,
    /// Seconds a finished run Job is kept if the worker does not delete it.
    #[arg(long, env = "NEURODATA_K8S_TTL_SECONDS", default_value_t = 600)]
    pub k8s_ttl_seconds: u32,
    /// A Secret the run pods pull their image with (repeatable; a private registry's).
    #[arg(long, env = "NEURODATA_K8S_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    pub k8s_image_pull_secret: Vec<String>,
    /// An annotation for run pods (KEY=VALUE; repeatable).
    #[arg(
        long,
        env = "NEURODATA_K8S_POD_ANNOTATIONS",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub k8s_pod_annotation: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Register as a worker and run every job assigned to it: accept, fetch and decrypt the
    /// data, train, upload the artifacts, submit the result.
    Train {
        #[command(flatten)]
        member: MemberArgs,
        /// Jobs run at once (0..=16); registered on chain.
        #[arg(long, env = "NEURODATA_WORKER_CAPACITY", default_value_t = 1)]
        capacity: u32,
        /// The URL of this worker org's gateway as other orgs reach it (validators fetch the
        /// artifacts there); default: --gateway.
        #[arg(long, env = "NEURODATA_WORKER_LOCATION")]
        location: Option<String>,
        /// Kernel threads per trainer run (default: every CPU; results do not depend on it).
        #[arg(long, env = "NEURODATA_TRAINER_THREADS")]
        threads: Option<usize>,
        #[command(flatten)]
        runner: RunnerArgs,
    },
    /// Re-run this validator's segments of every result it attests and write the verdicts to
    /// the validator's inbox; check the datasets this member holds a validation key for and
    /// attest them (AttestDataset); ask for the key of every listed model listing its org has
    /// not attested, check both ciphertexts against the card and attest them
    /// (AttestModelListing).
    Verify {
        #[command(flatten)]
        member: MemberArgs,
        /// The validator's CometBFT priv_validator_key.json (only its public key is read).
        #[arg(long, env = "NEURODATA_VALIDATOR_KEY")]
        validator_key: PathBuf,
        /// The verdict inbox the validator's abci-app reads (its --verdicts directory).
        #[arg(long, env = "NEURODATA_VERDICTS")]
        verdicts: PathBuf,
        /// Datasets to ask the key of with RequestValidation (comma-separated ids), once each
        /// and only while not verified: a validation request hands out the data for free and
        /// counts against the org's quota. Whatever validation purchase this member holds is
        /// checked and attested (AttestDataset) with or without this flag.
        #[arg(
            long,
            env = "NEURODATA_VALIDATE_DATASETS",
            value_delimiter = ',',
            value_name = "ID,ID,..."
        )]
        validate_datasets: Vec<u64>,
        #[command(flatten)]
        runner: RunnerArgs,
    },
    /// Inside a Kubernetes run pod: decrypt the sealed data with the run's key into a
    /// memory-backed directory and run the trainer on it (what `train --runner kubernetes`
    /// starts; not for operators).
    PodRun(pod_run::PodRunArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: the devnet and pods write these logs to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The job tasks run on one thread: `GatewayClient::connect` (client/src/gateway_errors.rs,
    // `Target::diagnose` holds a `&dyn Error` across an await) is not `Send`, so a task that may
    // connect to another org's gateway cannot move between threads. Runs and verifications do
    // their CPU work in child processes and `spawn_blocking`, so one thread for the tasks is
    // enough.
    let tasks = tokio::task::LocalSet::new();
    let result = runtime.block_on(tasks.run_until(async {
        match Cli::parse().command {
            Command::Train {
                member,
                capacity,
                location,
                threads,
                runner,
            } => train::run(member, capacity, location, threads, runner).await,
            Command::Verify {
                member,
                validator_key,
                verdicts,
                validate_datasets,
                runner,
            } => verify::run(member, validator_key, verdicts, validate_datasets, runner).await,
            Command::PodRun(args) => pod_run::run(args).await,
        }
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
