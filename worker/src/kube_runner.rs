//! [`KubeRunner`]: each training run is a Kubernetes batch/v1 Job in the worker's namespace.
//!
//! The run's pod never sees plaintext on shared storage. The runner seals the job's data file
//! with a fresh AES-256-GCM key into `<job>/sealed/` on the work volume (a PersistentVolumeClaim
//! the worker and its run pods share), puts that key and the spec in a per-run Secret, and the
//! pod (`neurodata-worker pod-run`) decrypts into a memory-backed volume and runs the trainer,
//! writing to `<job>/out/`. The pod mounts only those two directories of the claim.
//!
//! Objects, all named `nd-train-<worker>-<job id>` and labelled with the worker and the job id:
//! - the **Job**: `backoffLimit` 0, `activeDeadlineSeconds` from the spec's time limit, a TTL
//!   after it finishes; its pod runs as non-root with a read-only root filesystem, no
//!   capabilities, seccomp RuntimeDefault, no service-account token, and the spec's memory limit
//!   as its memory request and limit;
//! - the **Secret** (data key and spec), mounted read-only;
//! - the **NetworkPolicy**: no ingress, egress only to the org gateway's pods.
//!
//! The Job is created suspended, the Secret and NetworkPolicy are created owned by it (so the
//! garbage collector deletes them with it if the worker dies for good), and only then is it
//! resumed: no pod starts without its key or its fence. The runner follows the Job with a watch,
//! reads the pod's log into the worker's, maps how it ended to a [`RunOutcome`], and deletes
//! the Secret, the NetworkPolicy, the Job and the sealed data once it has. A restarted worker
//! finds its Job by label ([`Runner::find`]) and attaches to it.
//!
//! The pod spec's SHA-256 is written beside the run (`sandbox.json`) and goes into the
//! `SubmitResult`, so a buyer can check how the run was sandboxed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{AsyncBufReadExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use neurodata_crypto::DataKey;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::artifacts;
use crate::runner::{RunOutcome, RunRequest, RunStatus, Runner, RunnerError};

/// The label every object of a run carries: the job id.
pub const JOB_LABEL: &str = "neurodata.io/job-id";
/// The label naming the worker that created the run.
pub const WORKER_LABEL: &str = "neurodata.io/worker";
/// The component label of run pods (the chart's NetworkPolicies and Role name them by it).
pub const COMPONENT: &str = "training-run";

/// Where the pod sees its files.
const POD_JOB_DIR: &str = "/job";
const POD_SECRET_DIR: &str = "/run/neurodata";
const POD_PLAIN_DIR: &str = "/plain";

/// Seconds a run pod gets beyond the spec's time limit by default: decrypting the data and
/// starting the trainer (which enforces the limit on the run itself).
pub const START_SLACK_SECONDS: u64 = 60;

/// The Job annotation holding the SHA-256 of its pod template (what `sandbox.json` records).
pub const SANDBOX_ANNOTATION: &str = "neurodata.io/sandbox-sha256";

/// The Job annotation of a re-execution holding the SHA-256 of its `trainer verify` arguments
/// (job, validators, beacon): a Job of an earlier result of the same job is not attached to.
pub const REQUEST_ANNOTATION: &str = "neurodata.io/request-sha256";

/// What `pod-run` writes as its termination message when the trainer hit the spec's time limit.
pub const TIME_LIMIT_MESSAGE: &str = "time limit exceeded";

/// Seconds (one try a second) a completed run's outputs get to show up on the work volume.
const OUTPUTS_SETTLE_TRIES: u32 = 5;

/// Memory the pod gets beyond the spec's limit: `neurodata-worker pod-run` itself. The
/// decrypted data lives in a memory-backed volume and is added on top.
const POD_OVERHEAD_MIB: u64 = 128;

/// The permissions the runner needs in its namespace, as RBAC rules (apiGroups, resources,
/// verbs). The chart's worker Role grants exactly these; a test holds the two together.
pub const RBAC_RULES: &[(&str, &str, &[&str])] = &[
    (
        "batch",
        "jobs",
        &["create", "get", "list", "watch", "delete", "patch"],
    ),
    // Created and deleted, never read back: the key is only ever written.
    ("", "secrets", &["create", "delete"]),
    (
        "networking.k8s.io",
        "networkpolicies",
        &["create", "delete"],
    ),
    // How a pod ended (its status), and its log.
    ("", "pods", &["list"]),
    ("", "pods/log", &["get"]),
];

/// What a runner's Jobs do (in object names and the `neurodata.io/task` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunTask {
    /// A worker's training runs (`trainer run`).
    Train,
    /// A verifier's re-executions of its segments of a result (`trainer verify`).
    Verify,
}

impl RunTask {
    fn name(self) -> &'static str {
        match self {
            RunTask::Train => "train",
            RunTask::Verify => "verify",
        }
    }
}

/// The label saying what a run does (`train`, `verify`).
pub const TASK_LABEL: &str = "neurodata.io/task";

/// How run pods are made.
#[derive(Clone, Debug)]
pub struct KubeRunnerConfig {
    /// The namespace the Jobs run in (the worker's own).
    pub namespace: String,
    /// The image with `neurodata-worker` and `trainer` (the worker's own image).
    pub image: String,
    /// The PersistentVolumeClaim mounted at `state` in the worker; run pods mount their job's
    /// `sealed/` and `out/` from it.
    pub work_claim: String,
    /// The worker's `--state` directory: the claim's mount point in the worker.
    pub state: PathBuf,
    /// Labels of the org gateway's pods: the only destination a run pod may reach.
    pub gateway_selector: BTreeMap<String, String>,
    /// The gateway's gRPC port.
    pub gateway_port: u16,
    /// CPU request and limit of a run pod (a Kubernetes quantity: `1`, `500m`); the trainer
    /// gets as many threads, at least one.
    pub cpu: String,
    /// Seconds a finished Job is kept before Kubernetes deletes it (if the worker did not).
    pub ttl_seconds: u32,
    /// Extra annotations on run pods.
    pub pod_annotations: BTreeMap<String, String>,
    /// Secrets the run pods pull their image with.
    pub image_pull_secrets: Vec<String>,
    /// This worker's name in labels and object names (lowercase alphanumerics, `-`).
    pub worker: String,
    /// What this runner's Jobs do: a worker's training runs or a verifier's re-executions.
    pub task: RunTask,
    /// Seconds beyond the spec's `max_seconds` before Kubernetes stops the pod
    /// (`activeDeadlineSeconds`); [`START_SLACK_SECONDS`] unless a test wants it sooner.
    pub start_slack_seconds: u64,
}

/// Runs training jobs as Kubernetes Jobs; see the module documentation.
#[derive(Clone)]
pub struct KubeRunner {
    client: kube::Client,
    config: KubeRunnerConfig,
}

impl std::fmt::Debug for KubeRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeRunner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> RunnerError {
    let what = what.into();
    move |source| RunnerError::Kubernetes { what, source }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunnerError {
    let what = what.into();
    move |source| RunnerError::Io { what, source }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Threads for a CPU quantity: whole cores rounded down, at least one.
fn threads_for(cpu: &str) -> u64 {
    let whole = match cpu.strip_suffix('m') {
        Some(milli) => milli.parse::<u64>().map(|m| m / 1000).unwrap_or(1),
        None => cpu
            .parse::<f64>()
            .map(|c| c.floor().max(0.0) as u64)
            .unwrap_or(1),
    };
    whole.max(1)
}

/// The sealed copy of `data` the pod reads (the data's own file name, so the trainer sees its
/// format from the extension, plus `.sealed`).
fn sealed_name(data: &Path) -> String {
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    format!("{name}.sealed")
}

impl KubeRunner {
    /// A runner creating its Jobs through `client`.
    pub fn new(client: kube::Client, config: KubeRunnerConfig) -> KubeRunner {
        KubeRunner { client, config }
    }

    /// How it makes run pods.
    pub fn config(&self) -> &KubeRunnerConfig {
        &self.config
    }

    /// The name of every object of job `job_id`'s run.
    pub fn object_name(&self, job_id: u64) -> String {
        format!(
            "nd-{}-{}-{job_id}",
            self.config.task.name(),
            self.config.worker
        )
    }

    fn labels(&self, job_id: u64) -> BTreeMap<String, String> {
        BTreeMap::from([
            (JOB_LABEL.to_owned(), job_id.to_string()),
            (WORKER_LABEL.to_owned(), self.config.worker.clone()),
            (TASK_LABEL.to_owned(), self.config.task.name().into()),
            ("app.kubernetes.io/component".to_owned(), COMPONENT.into()),
            ("app.kubernetes.io/part-of".to_owned(), "neurodata".into()),
        ])
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn policies(&self) -> Api<NetworkPolicy> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    /// The job's directory on the work volume, relative to the claim's root (`job-<id>`), from
    /// the run's output directory `<state>/job-<id>/out`.
    fn job_subpath(&self, out: &Path, job_id: u64) -> Result<PathBuf, RunnerError> {
        out.parent()
            .and_then(|dir| dir.strip_prefix(&self.config.state).ok())
            .filter(|rel| !rel.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .ok_or_else(|| RunnerError::Io {
                what: format!(
                    "job {job_id}: its directory {} is not in a job directory under the work \
                     volume {}",
                    out.display(),
                    self.config.state.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            })
    }

    /// The run pod's template: what `sandbox.json` records and the Job runs.
    pub fn pod_template(
        &self,
        job: &RunRequest,
        data_bytes: u64,
    ) -> Result<PodTemplateSpec, RunnerError> {
        let sub = self.job_subpath(&job.out, job.job_id)?;
        let sub = sub.to_string_lossy();
        let sealed = format!("{POD_JOB_DIR}/sealed/{}", sealed_name(&job.data));
        let args = vec![
            "pod-run".to_owned(),
            "--spec".into(),
            format!("{POD_SECRET_DIR}/spec.json"),
            "--key".into(),
            format!("{POD_SECRET_DIR}/data-key"),
            "--sealed".into(),
            sealed,
            "--plain".into(),
            POD_PLAIN_DIR.into(),
            "--out".into(),
            format!("{POD_JOB_DIR}/out"),
            "--threads".into(),
            threads_for(&self.config.cpu).to_string(),
        ];
        let mounts = vec![
            json!({"name": "work", "mountPath": format!("{POD_JOB_DIR}/out"),
                                 "subPath": format!("{sub}/out")}),
        ];
        self.template(
            job.job_id,
            &sub,
            args,
            mounts,
            job.max_memory_mb,
            data_bytes,
        )
    }

    /// A pod template running `neurodata-worker` with `args`: the run's Secret at
    /// `/run/neurodata`, the job's sealed data (`<sub>/sealed`) read-only at `/job/sealed`,
    /// `mounts` from the work volume, a memory-backed `/plain` for the decrypted data; the
    /// spec's memory limit plus the data and pod-run's own.
    fn template(
        &self,
        job_id: u64,
        sub: &str,
        args: Vec<String>,
        mounts: Vec<serde_json::Value>,
        max_memory_mb: u64,
        data_bytes: u64,
    ) -> Result<PodTemplateSpec, RunnerError> {
        let name = self.object_name(job_id);
        let data_mib = data_bytes.div_ceil(1024 * 1024);
        // Saturating: the spec's limits have no upper bound on chain, and a pod asking for more
        // than any node has stays Pending, which the outcome reports as such.
        let memory = format!(
            "{}Mi",
            max_memory_mb
                .saturating_add(POD_OVERHEAD_MIB)
                .saturating_add(data_mib)
        );
        let mut labels = self.labels(job_id);
        labels.insert("neurodata.io/run".into(), name.clone());
        let mut volume_mounts = vec![
            json!({"name": "key", "mountPath": POD_SECRET_DIR, "readOnly": true}),
            // Writable scratch for the run's pid file beside `out`.
            json!({"name": "scratch", "mountPath": POD_JOB_DIR}),
            json!({"name": "work", "mountPath": format!("{POD_JOB_DIR}/sealed"),
                   "subPath": format!("{sub}/sealed"), "readOnly": true}),
        ];
        volume_mounts.extend(mounts);
        volume_mounts.push(json!({"name": "plain", "mountPath": POD_PLAIN_DIR}));
        volume_mounts.push(json!({"name": "tmp", "mountPath": "/tmp"}));
        let template = json!({
            "metadata": {
                "labels": labels,
                "annotations": self.config.pod_annotations,
            },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "imagePullSecrets": self
                    .config
                    .image_pull_secrets
                    .iter()
                    .map(|name| json!({"name": name}))
                    .collect::<Vec<_>>(),
                "enableServiceLinks": false,
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 10001,
                    "runAsGroup": 10001,
                    "fsGroup": 10001,
                    // No recursive chown of the shared work volume at every start.
                    "fsGroupChangePolicy": "OnRootMismatch",
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [{
                    "name": "trainer",
                    "image": self.config.image,
                    "command": ["neurodata-worker"],
                    "args": args,
                    "resources": {
                        "requests": {"cpu": self.config.cpu, "memory": memory},
                        "limits": {"cpu": self.config.cpu, "memory": memory},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "runAsNonRoot": true,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    // pod-run's report (or the trainer's last line) says how it ended.
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "volumeMounts": volume_mounts,
                }],
                "volumes": [
                    {"name": "key", "secret": {"secretName": name, "defaultMode": 0o440}},
                    {"name": "work", "persistentVolumeClaim": {"claimName": self.config.work_claim}},
                    {"name": "scratch", "emptyDir": {"sizeLimit": "16Mi"}},
                    {"name": "plain", "emptyDir": {"medium": "Memory", "sizeLimit": format!("{}Mi", data_mib + 1)}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                ],
            },
        });
        serde_json::from_value(template).map_err(|e| RunnerError::Io {
            what: format!("job {job_id}: building the pod template"),
            source: std::io::Error::other(e),
        })
    }

    /// Seals the data, records the sandbox, creates the Job (suspended), its Secret and
    /// NetworkPolicy, and resumes it.
    async fn start(&self, job: &RunRequest) -> Result<(), RunnerError> {
        let id = job.job_id;
        let name = self.object_name(id);
        let job_dir = job.out.parent().unwrap_or(&job.out).to_path_buf();
        let sealed_dir = job_dir.join("sealed");
        std::fs::create_dir_all(&sealed_dir)
            .map_err(io_err(format!("creating {}", sealed_dir.display())))?;
        std::fs::create_dir_all(&job.out)
            .map_err(io_err(format!("creating {}", job.out.display())))?;
        let key = DataKey::generate().map_err(|e| RunnerError::Io {
            what: "generating the run's data key".into(),
            source: std::io::Error::other(e),
        })?;
        let sealed_path = sealed_dir.join(sealed_name(&job.data));
        let data_bytes = seal(&job.data, &sealed_path, &key)?;
        let spec =
            std::fs::read(&job.spec).map_err(io_err(format!("reading {}", job.spec.display())))?;

        let template = self.pod_template(job, data_bytes)?;
        let sandbox = serde_json::to_vec(&template).map_err(|e| RunnerError::Io {
            what: "serializing the pod template".into(),
            source: std::io::Error::other(e),
        })?;
        let sandbox_path = sandbox_path(&job.out);
        std::fs::write(&sandbox_path, &sandbox)
            .map_err(io_err(format!("writing {}", sandbox_path.display())))?;

        let sandbox_sha256 = hex::encode(Sha256::digest(&sandbox));
        let secret_data = BTreeMap::from([
            ("data-key".to_owned(), key.as_bytes().to_vec()),
            ("spec.json".to_owned(), spec),
        ]);
        let annotations = BTreeMap::from([(SANDBOX_ANNOTATION.to_owned(), sandbox_sha256.clone())]);
        if let Err(e) = self
            .create_objects(id, template, annotations, secret_data, job.max_seconds)
            .await
        {
            // Nothing half-made may keep the key: a suspended Job has no deadline or TTL.
            let _ = self.clean_up(id, job_dir_of(&job.out)).await;
            return Err(e);
        }
        tracing::info!(
            job = id,
            "job {id}: Kubernetes Job {}/{name} started (sandbox sha256 {sandbox_sha256})",
            self.config.namespace,
        );
        Ok(())
    }

    /// Creates run `id`'s Job (suspended, running `template`), its Secret (`secret_data`) and
    /// NetworkPolicy, both owned by the Job, and resumes it.
    async fn create_objects(
        &self,
        id: u64,
        template: PodTemplateSpec,
        annotations: BTreeMap<String, String>,
        secret_data: BTreeMap<String, Vec<u8>>,
        max_seconds: u64,
    ) -> Result<(), RunnerError> {
        let name = self.object_name(id);
        let deadline = i64::try_from(max_seconds.saturating_add(self.config.start_slack_seconds))
            .unwrap_or(i64::MAX);
        let k8s_job: Job = serde_json::from_value(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "labels": self.labels(id),
                "annotations": annotations,
            },
            "spec": {
                "suspend": true,
                "backoffLimit": 0,
                "completions": 1,
                "parallelism": 1,
                "activeDeadlineSeconds": deadline,
                "ttlSecondsAfterFinished": self.config.ttl_seconds,
                "template": template,
            },
        }))
        .map_err(|e| RunnerError::Io {
            what: "building the Job".into(),
            source: std::io::Error::other(e),
        })?;
        let created = self
            .jobs()
            .create(&PostParams::default(), &k8s_job)
            .await
            .map_err(kube_err(format!("creating Job {name}")))?;
        let uid = created.metadata.uid.clone().unwrap_or_default();
        let owner = json!([{
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": false,
        }]);
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": self.labels(id), "ownerReferences": owner},
            "type": "Opaque",
            "immutable": true,
            "data": secret_data
                .iter()
                .map(|(k, v)| (k.clone(), base64_encode(v)))
                .collect::<BTreeMap<_, _>>(),
        }))
        .map_err(|e| RunnerError::Io {
            what: "building the Secret".into(),
            source: std::io::Error::other(e),
        })?;
        self.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .map_err(kube_err(format!("creating Secret {name}")))?;
        let policy: NetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "labels": self.labels(id), "ownerReferences": owner},
            "spec": {
                "podSelector": {"matchLabels": {"neurodata.io/run": name}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": [{
                    "to": [{"podSelector": {"matchLabels": self.config.gateway_selector}}],
                    "ports": [{"protocol": "TCP", "port": self.config.gateway_port}],
                }],
            },
        }))
        .map_err(|e| RunnerError::Io {
            what: "building the NetworkPolicy".into(),
            source: std::io::Error::other(e),
        })?;
        self.policies()
            .create(&PostParams::default(), &policy)
            .await
            .map_err(kube_err(format!("creating NetworkPolicy {name}")))?;
        self.jobs()
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": false}})),
            )
            .await
            .map_err(kube_err(format!("resuming Job {name}")))?;
        Ok(())
    }

    /// Waits for Job `name` to end and says how it did.
    async fn follow(&self, job: &RunRequest) -> Result<RunOutcome, RunnerError> {
        Ok(match self.watch_until_ended(job.job_id).await? {
            Ok(ended) => self.outcome(job, ended).await,
            Err(why) => RunOutcome::Failed(why),
        })
    }

    /// Follows run `id`'s Job with a watch until it ends (its log copied into the worker's
    /// meanwhile); `Err(why)` if it was deleted first.
    async fn watch_until_ended(&self, id: u64) -> Result<Result<Ended, String>, RunnerError> {
        let name = self.object_name(id);
        let _logs = AbortOnDrop(tokio::spawn(follow_logs(self.pods(), name.clone(), id)));
        // Transient errors of the watch (an API server restart) are retried with backoff.
        let mut stream = watcher::watch_object(self.jobs(), &name)
            .default_backoff()
            .boxed();
        loop {
            let next = stream.try_next().await.map_err(|e| RunnerError::Watch {
                what: format!("watching Job {name}"),
                source: e,
            })?;
            match next {
                // A watch is endless: this only happens on shutdown.
                None => return Ok(Err(format!("the watch of Job {name} ended"))),
                Some(None) => return Ok(Err(format!("Job {name} was deleted before it finished"))),
                Some(Some(k8s_job)) => {
                    if let Some(ended) = job_ended(&k8s_job) {
                        return Ok(Ok(ended));
                    }
                }
            }
        }
    }

    /// Re-runs a verifier's segments of a result as a Job: `trainer verify` (`args` for the
    /// pod's paths, from [`crate::judge::verify_args`]) over the rebuilt run in `run` (mounted
    /// read-only) and the data file `data` (sealed for the pod like a training run's). Returns
    /// the trainer's answer (its JSON, which the pod passes back in its termination message), or
    /// why it could not check. Idempotent by job id like [`Runner::run`]: a re-execution under
    /// way (a restarted verifier) is attached to.
    pub async fn verify(
        &self,
        request: &VerifyRequest,
    ) -> Result<Result<Vec<u8>, String>, RunnerError> {
        let id = request.job_id;
        let name = self.object_name(id);
        let job_dir = request.run.parent().unwrap_or(&request.run).to_path_buf();
        let name_in_pod = sealed_name(&request.data);
        let plain = Path::new(POD_PLAIN_DIR).join(
            name_in_pod
                .strip_suffix(".sealed")
                .unwrap_or(name_in_pod.as_str()),
        );
        let trainer_args = (request.args)(Path::new(&format!("{POD_JOB_DIR}/run")), &plain);
        let request_sha256 = hex::encode(Sha256::digest(trainer_args.join("\0").as_bytes()));
        let running = match self.find_job(id).await? {
            // Only a re-execution of this very request is attached to (a restarted verifier);
            // one left by an earlier result of the job, or a start a crash interrupted, goes.
            Some(j)
                if !j.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
                    && j.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(REQUEST_ANNOTATION))
                        == Some(&request_sha256) =>
            {
                true
            }
            Some(_) => {
                self.clean_up(id, &job_dir).await?;
                self.wait_gone(&name).await?;
                false
            }
            None => false,
        };
        if !running {
            let sub = self.job_subpath(&request.run, id)?;
            let sub = sub.to_string_lossy().into_owned();
            let sealed_dir = job_dir.join("sealed");
            std::fs::create_dir_all(&sealed_dir)
                .map_err(io_err(format!("creating {}", sealed_dir.display())))?;
            let key = DataKey::generate().map_err(|e| RunnerError::Io {
                what: "generating the run's data key".into(),
                source: std::io::Error::other(e),
            })?;
            let data_bytes = seal(&request.data, &sealed_dir.join(&name_in_pod), &key)?;
            let mut args = vec![
                "pod-run".to_owned(),
                "--key".into(),
                format!("{POD_SECRET_DIR}/data-key"),
                "--sealed".into(),
                format!("{POD_JOB_DIR}/sealed/{name_in_pod}"),
                "--plain".into(),
                POD_PLAIN_DIR.into(),
                "--".into(),
            ];
            args.extend(trainer_args);
            let mounts = vec![
                json!({"name": "work", "mountPath": format!("{POD_JOB_DIR}/run"),
                                     "subPath": sub.clone() + "/" + &run_leaf(&request.run),
                                     "readOnly": true}),
            ];
            let template =
                self.template(id, &sub, args, mounts, request.max_memory_mb, data_bytes)?;
            let sandbox = serde_json::to_vec(&template).map_err(|e| RunnerError::Io {
                what: "serializing the pod template".into(),
                source: std::io::Error::other(e),
            })?;
            let secret = BTreeMap::from([("data-key".to_owned(), key.as_bytes().to_vec())]);
            let annotations = BTreeMap::from([
                (
                    SANDBOX_ANNOTATION.to_owned(),
                    hex::encode(Sha256::digest(&sandbox)),
                ),
                (REQUEST_ANNOTATION.to_owned(), request_sha256),
            ]);
            if let Err(e) = self
                .create_objects(id, template, annotations, secret, request.max_seconds)
                .await
            {
                let _ = self.clean_up(id, &job_dir).await;
                return Err(e);
            }
            tracing::info!(
                job = id,
                "job {id}: re-execution Job {}/{name} started",
                self.config.namespace
            );
        }
        let answer = match self.watch_until_ended(id).await? {
            Ok(Ended::Complete) => match self.answer(id).await {
                Some(text) => Ok(text.into_bytes()),
                None => Err("the re-execution's pod left no answer".to_owned()),
            },
            Ok(Ended::Failed { reason, message }) => Err(match self.pod_ending(id).await {
                Some(PodEnding::Message(m)) => m.trim_start_matches("error: ").to_owned(),
                Some(PodEnding::NeverStarted(why)) => format!("its pod never started: {why}"),
                Some(PodEnding::Evicted(why)) => format!("evicted: {why}"),
                Some(PodEnding::Disrupted(why)) => format!("stopped by the cluster: {why}"),
                Some(PodEnding::OutOfMemory) => "out of memory".into(),
                None => format!("the Job failed ({reason}): {message}"),
            }),
            Err(why) => Err(why),
        };
        self.clean_up(id, &job_dir).await?;
        Ok(answer)
    }

    /// The label selector of the pods of run `id`'s current Job: by the Job's uid, so a pod
    /// of an earlier Job of the same name (still being deleted) is never taken for its.
    async fn pods_of(&self, id: u64) -> String {
        let name = self.object_name(id);
        match self.jobs().get_opt(&name).await {
            Ok(Some(Job {
                metadata: kube::api::ObjectMeta { uid: Some(uid), .. },
                ..
            })) => format!("batch.kubernetes.io/controller-uid={uid}"),
            _ => format!("neurodata.io/run={name}"),
        }
    }

    /// The termination message of run `id`'s pod that exited 0: `trainer verify`'s answer.
    async fn answer(&self, id: u64) -> Option<String> {
        let selector = self.pods_of(id).await;
        let pods = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        pods.items.into_iter().find_map(|pod| {
            pod.status?
                .container_statuses?
                .into_iter()
                .find_map(|c| c.state?.terminated.filter(|t| t.exit_code == 0)?.message)
        })
    }

    /// The outcome of a Job that ended as `ended`.
    async fn outcome(&self, job: &RunRequest, ended: Ended) -> RunOutcome {
        match ended {
            Ended::Complete => {
                // Files written on another node of a network volume may take a moment to show
                // here (an NFS client's cached lookups).
                for _ in 0..OUTPUTS_SETTLE_TRIES {
                    if artifacts::outputs_complete(&job.out) {
                        return RunOutcome::Succeeded;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                RunOutcome::Failed("the run's pod completed but its outputs are incomplete".into())
            }
            Ended::Failed { reason, message } => {
                let pod = self.pod_ending(job.job_id).await;
                match (reason.as_str(), pod) {
                    // Kubernetes' fault, not the job's: say so rather than blame its limits.
                    (_, Some(PodEnding::NeverStarted(why))) => {
                        RunOutcome::Failed(format!("the run's pod never started: {why}"))
                    }
                    (_, Some(PodEnding::Evicted(why))) => {
                        RunOutcome::Failed(format!("evicted: {why}"))
                    }
                    (_, Some(PodEnding::Disrupted(why))) => RunOutcome::Failed(format!(
                        "the run's pod was stopped by the cluster (drained or preempted): {why}"
                    )),
                    (_, Some(PodEnding::OutOfMemory)) => RunOutcome::Failed(format!(
                        "out of memory: the pod went over its limit (the spec's max_memory_mb \
                         {} MiB plus the data)",
                        job.max_memory_mb
                    )),
                    ("DeadlineExceeded", _) => RunOutcome::DeadlineExceeded,
                    // pod-run's own report of the trainer's time limit.
                    (_, Some(PodEnding::Message(m))) if m == TIME_LIMIT_MESSAGE => {
                        RunOutcome::DeadlineExceeded
                    }
                    (_, Some(PodEnding::Message(m))) => {
                        RunOutcome::Failed(m.trim_start_matches("error: ").to_owned())
                    }
                    (_, None) => {
                        RunOutcome::Failed(format!("the Job failed ({reason}): {message}"))
                    }
                }
            }
        }
    }

    /// How the pod of job `job_id` ended, from its status: never started (unschedulable, its
    /// image not pulled), evicted, disrupted, killed for memory, or its container's termination
    /// message (pod-run's report, else the trainer's last line).
    async fn pod_ending(&self, job_id: u64) -> Option<PodEnding> {
        let selector = self.pods_of(job_id).await;
        let pods = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        for pod in pods.items {
            let Some(status) = pod.status else { continue };
            if status.reason.as_deref() == Some("Evicted") {
                return Some(PodEnding::Evicted(status.message.unwrap_or_default()));
            }
            let conditions = status.conditions.clone().unwrap_or_default();
            if let Some(c) = conditions
                .iter()
                .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
            {
                return Some(PodEnding::Disrupted(
                    c.message.clone().or(c.reason.clone()).unwrap_or_default(),
                ));
            }
            let containers = status.container_statuses.clone().unwrap_or_default();
            let started = containers.iter().any(|c| {
                c.state
                    .as_ref()
                    .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            });
            if !started {
                let waiting = containers
                    .iter()
                    .find_map(|c| c.state.as_ref().and_then(|s| s.waiting.clone()));
                let unscheduled = conditions
                    .iter()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False");
                let why = match (waiting, unscheduled) {
                    (Some(w), _) => format!(
                        "{}: {}",
                        w.reason.unwrap_or_default(),
                        w.message.unwrap_or_default()
                    ),
                    (None, Some(c)) => {
                        format!("not scheduled: {}", c.message.clone().unwrap_or_default())
                    }
                    (None, None) => "it was never started".into(),
                };
                return Some(PodEnding::NeverStarted(why));
            }
            for c in containers {
                let terminated = c.state.and_then(|s| s.terminated);
                if let Some(t) = &terminated
                    && t.reason.as_deref() == Some("OOMKilled")
                {
                    return Some(PodEnding::OutOfMemory);
                }
                if let Some(t) = terminated
                    && t.exit_code != 0
                {
                    let message = t
                        .message
                        .map(|m| m.trim().lines().last().unwrap_or_default().to_owned())
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| format!("the trainer exited with {}", t.exit_code));
                    return Some(PodEnding::Message(message));
                }
            }
        }
        None
    }

    /// Deletes run `id`'s objects: the Secret first (the key must not outlive the run), the
    /// NetworkPolicy, the Job and its pod; any already gone counts as deleted.
    async fn delete_objects(&self, id: u64) -> Result<(), RunnerError> {
        let name = self.object_name(id);
        absent(
            self.secrets().delete(&name, &DeleteParams::default()).await,
            || format!("deleting Secret {name}"),
        )?;
        absent(
            self.policies()
                .delete(&name, &DeleteParams::default())
                .await,
            || format!("deleting NetworkPolicy {name}"),
        )?;
        absent(
            self.jobs().delete(&name, &DeleteParams::background()).await,
            || format!("deleting Job {name}"),
        )
    }

    /// Deletes what the run left: the Secret first (the key must not outlive the run), the
    /// NetworkPolicy, the Job and its pod, and the sealed data.
    async fn clean_up(&self, id: u64, job_dir: &Path) -> Result<(), RunnerError> {
        self.delete_objects(id).await?;
        let sealed = job_dir.join("sealed");
        if sealed.exists() {
            std::fs::remove_dir_all(&sealed)
                .map_err(io_err(format!("deleting {}", sealed.display())))?;
        }
        Ok(())
    }
}

/// The job directory holding a run's output directory `out` (`<state>/job-<id>/out`).
fn job_dir_of(out: &Path) -> &Path {
    out.parent().unwrap_or(out)
}

/// The last component of a run directory, as a subPath below the job's directory.
fn run_leaf(run: &Path) -> String {
    run.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into())
}

/// Builds `trainer verify`'s arguments for a run directory and a data file.
pub type VerifyArgs = Box<dyn Fn(&Path, &Path) -> Vec<String> + Send + Sync>;

/// What [`KubeRunner::verify`] re-runs.
pub struct VerifyRequest {
    /// The job.
    pub job_id: u64,
    /// The rebuilt run directory (`<state>/job-<id>/out`): result, model, trace, checkpoints.
    pub run: PathBuf,
    /// The decrypted data file (not on the work volume).
    pub data: PathBuf,
    /// `trainer verify`'s arguments for a run directory and a data file (the pod's paths).
    pub args: VerifyArgs,
    /// The spec's time limit.
    pub max_seconds: u64,
    /// The spec's memory limit.
    pub max_memory_mb: u64,
}

/// A delete's result, with "not found" counting as done.
fn absent<T>(r: Result<T, kube::Error>, what: impl FnOnce() -> String) -> Result<(), RunnerError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(source) => Err(RunnerError::Kubernetes {
            what: what(),
            source,
        }),
    }
}

/// How a Job ended, from its conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ended {
    Complete,
    Failed { reason: String, message: String },
}

enum PodEnding {
    NeverStarted(String),
    Evicted(String),
    Disrupted(String),
    OutOfMemory,
    Message(String),
}

/// Frees a spawned task when dropped (on every path out of the function holding it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether `job` ended: its `Complete` or `Failed` condition is true (the interim
/// `SuccessCriteriaMet`/`FailureTarget` are not the end: the pods are still being stopped).
fn job_ended(job: &Job) -> Option<Ended> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find_map(|c| {
        if c.status != "True" {
            return None;
        }
        match c.type_.as_str() {
            "Complete" => Some(Ended::Complete),
            "Failed" => Some(Ended::Failed {
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            }),
            _ => None,
        }
    })
}

/// The pod template's record beside the run's outputs.
pub fn sandbox_path(out: &Path) -> PathBuf {
    out.with_file_name("sandbox.json")
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Encrypts `data` into `sealed` under `key`; returns the plaintext's length.
fn seal(data: &Path, sealed: &Path, key: &DataKey) -> Result<u64, RunnerError> {
    let input = std::fs::File::open(data).map_err(io_err(format!("opening {}", data.display())))?;
    let tmp = sealed.with_extension("tmp");
    let output =
        std::fs::File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    let (_, len) = neurodata_crypto::stream::encrypt(
        input,
        std::io::BufWriter::new(output),
        key,
        neurodata_crypto::stream::DEFAULT_CHUNK_SIZE,
    )
    .map_err(|e| RunnerError::Io {
        what: format!("sealing {}", data.display()),
        source: std::io::Error::other(e),
    })?;
    std::fs::rename(&tmp, sealed).map_err(io_err(format!("writing {}", sealed.display())))?;
    Ok(len)
}

/// Copies the log of the run's pod into the worker's log, once the pod runs. Best effort: a
/// cluster whose kubelets do not serve logs leaves a warning and the termination message.
async fn follow_logs(pods: Api<Pod>, run: String, job_id: u64) {
    let selector = format!("neurodata.io/run={run}");
    let pod = loop {
        match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                let running = list.items.into_iter().find(|p| {
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    matches!(phase, Some("Running" | "Succeeded" | "Failed"))
                });
                if let Some(p) = running {
                    break p.metadata.name.unwrap_or_default();
                }
            }
            Err(e) => {
                tracing::warn!(job = job_id, "job {job_id}: listing the run's pods: {e}");
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let params = LogParams {
        follow: true,
        container: Some("trainer".into()),
        ..LogParams::default()
    };
    match pods.log_stream(&pod, &params).await {
        Ok(stream) => {
            let mut lines = stream.lines();
            while let Some(Ok(line)) = lines.next().await {
                tracing::info!(job = job_id, "job {job_id}: pod {pod}: {line}");
            }
        }
        Err(e) => tracing::warn!(
            job = job_id,
            "job {job_id}: the log of pod {pod} cannot be read ({e}); its termination message \
             will say how it ended"
        ),
    }
}

impl Runner for KubeRunner {
    async fn run(&self, job: &RunRequest) -> Result<RunOutcome, RunnerError> {
        let id = job.job_id;
        match self.find(id, &job.out).await? {
            Some(RunStatus::Running) => {
                tracing::info!(
                    job = id,
                    "job {id}: re-attaching to Kubernetes Job {}",
                    self.object_name(id)
                );
            }
            Some(RunStatus::Finished(outcome)) => {
                self.clean_up(job.job_id, job_dir_of(&job.out)).await?;
                return Ok(outcome);
            }
            None => self.start(job).await?,
        }
        let outcome = self.follow(job).await?;
        self.clean_up(job.job_id, job_dir_of(&job.out)).await?;
        Ok(outcome)
    }

    async fn find(&self, job_id: u64, out: &Path) -> Result<Option<RunStatus>, RunnerError> {
        let name = self.object_name(job_id);
        let found = self.find_job(job_id).await?;
        let Some(k8s_job) = found else {
            return Ok(artifacts::outputs_complete(out)
                .then_some(RunStatus::Finished(RunOutcome::Succeeded)));
        };
        if let Some(ended) = job_ended(&k8s_job) {
            let request = RunRequest {
                job_id,
                spec: PathBuf::new(),
                data: PathBuf::new(),
                out: out.to_path_buf(),
                max_seconds: 0,
                max_memory_mb: 0,
            };
            return Ok(Some(RunStatus::Finished(
                self.outcome(&request, ended).await,
            )));
        }
        let suspended = k8s_job
            .spec
            .as_ref()
            .and_then(|s| s.suspend)
            .unwrap_or(false);
        if suspended {
            // A start interrupted before the Job was resumed: its Secret may be missing, so it
            // is started again from scratch.
            self.clean_up(job_id, job_dir_of(out)).await?;
            self.wait_gone(&name).await?;
            return Ok(None);
        }
        Ok(Some(RunStatus::Running))
    }
}

impl KubeRunner {
    /// Deletes this worker's Jobs still suspended, with their Secrets and policies: a Job is
    /// suspended only while a start is under way, so at the worker's start any is a start that
    /// a crash interrupted. Without this, one whose chain job then left the worker (and is never
    /// looked at again) would keep its data key in a Secret for good: a suspended Job has no
    /// deadline and no TTL. Returns how many were deleted.
    pub async fn sweep_interrupted_starts(&self) -> Result<usize, RunnerError> {
        let selector = format!(
            "{WORKER_LABEL}={},{TASK_LABEL}={}",
            self.config.worker,
            self.config.task.name()
        );
        let jobs = self
            .jobs()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err(format!("listing the Jobs labelled {selector}")))?;
        let mut swept = 0;
        for job in jobs.items {
            let suspended = job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
            let id = job
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(JOB_LABEL))
                .and_then(|v| v.parse::<u64>().ok());
            let (true, Some(id)) = (suspended, id) else {
                continue;
            };
            let name = self.object_name(id);
            self.delete_objects(id).await?;
            tracing::info!(
                job = id,
                "job {id}: deleted Job {name}, a start interrupted by a crash"
            );
            swept += 1;
        }
        Ok(swept)
    }

    /// This runner's Job of job `job_id`, found by label, not by name: the labels say whose run
    /// of which job it is, whatever a later version of the runner names its objects.
    async fn find_job(&self, job_id: u64) -> Result<Option<Job>, RunnerError> {
        let selector = format!(
            "{JOB_LABEL}={job_id},{WORKER_LABEL}={},{TASK_LABEL}={}",
            self.config.worker,
            self.config.task.name()
        );
        Ok(self
            .jobs()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err(format!("listing the Jobs labelled {selector}")))?
            .items
            .into_iter()
            .next())
    }

    /// Waits until Job `name` no longer exists (a deleted Job lingers while its pods go).
    async fn wait_gone(&self, name: &str) -> Result<(), RunnerError> {
        for _ in 0..120 {
            match self.jobs().get_opt(name).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => return Err(kube_err(format!("reading Job {name}"))(e)),
            }
        }
        Err(RunnerError::Io {
            what: format!("Job {name} was deleted but is still there after 60 s"),
            source: std::io::Error::from(std::io::ErrorKind::TimedOut),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_follow_whole_cores() {
        assert_eq!(threads_for("1"), 1);
        assert_eq!(threads_for("4"), 4);
        assert_eq!(threads_for("2.5"), 2);
        assert_eq!(threads_for("500m"), 1);
        assert_eq!(threads_for("3000m"), 3);
        assert_eq!(threads_for("nonsense"), 1);
    }

    #[test]
    fn interim_conditions_are_not_the_end() {
        let job: Job = serde_json::from_value(json!({
            "status": {"conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"},
            ]}
        }))
        .expect("a job");
        assert_eq!(job_ended(&job), None);
        let job: Job = serde_json::from_value(json!({
            "status": {"conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"},
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "m"},
            ]}
        }))
        .expect("a job");
        assert_eq!(
            job_ended(&job),
            Some(Ended::Failed {
                reason: "DeadlineExceeded".into(),
                message: "m".into()
            })
        );
        let job: Job = serde_json::from_value(json!({
            "status": {"conditions": [{"type": "Complete", "status": "True"}]}
        }))
        .expect("a job");
        assert_eq!(job_ended(&job), Some(Ended::Complete));
    }
}
