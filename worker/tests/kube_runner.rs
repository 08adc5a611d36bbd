//! The Kubernetes runner against a real control plane (etcd, kube-apiserver, controller-manager,
//! scheduler; kwok as the kubelet, started once for this test binary by `neurodata-kube-testenv`).
//!
//! Every test runs the runner as a worker's ServiceAccount bound to a Role of exactly
//! [`RBAC_RULES`] (with a token the API server issued), so each shows those rules suffice; one
//! shows a call outside them is forbidden. kwok plays the pods: no container runs, so where a
//! test needs the run's outputs on the work volume, the real trainer writes them first, as the
//! pod's `pod-run` would (that command is tested on its own in `pod_run.rs`); the test picks how
//! the pod ends with the [`OUTCOME_ANNOTATION`] pod annotation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use neurodata_kube_testenv::{Cluster, OUTCOME_ANNOTATION, cluster};
use neurodata_trainer::JobSpec;
use neurodata_worker::kube_runner::{
    KubeRunner, KubeRunnerConfig, RBAC_RULES, RunTask, START_SLACK_SECONDS, VerifyRequest,
    sandbox_path,
};
use neurodata_worker::runner::{LocalRunner, RunOutcome, RunRequest, RunStatus, Runner};
use serde_json::json;
use sha2::{Digest as _, Sha256};

fn trainer() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let debug = exe.parent().and_then(Path::parent).expect("target/debug");
    let bin = debug.join("trainer");
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "neurodata-trainer", "--bin", "trainer"])
            .status()
            .expect("cargo build trainer");
        assert!(ok.success(), "building the trainer failed");
    }
    bin
}

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn spec_json(max_seconds: u64) -> String {
    let text =
        std::fs::read_to_string(manifest("../trainer/tests/data/iris_logreg.json")).expect("spec");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["training"]["epochs"] = 20.into();
    v["checkpoint_every"] = 10.into();
    v["limits"] = json!({"max_seconds": max_seconds, "max_memory_mb": 512});
    JobSpec::from_json(&v.to_string())
        .expect("spec")
        .canonical_json()
}

/// A namespace as a worker org has it: a work volume (a PersistentVolumeClaim bound to a
/// hostPath volume on this machine, standing in for the org's ReadWriteMany storage), the
/// worker's ServiceAccount with the runner's Role, and a client acting as that account.
struct Org {
    ns: String,
    state: tempfile::TempDir,
    admin: kube::Client,
    worker: kube::Client,
}

async fn org(c: &Cluster, prefix: &str) -> Org {
    let ns = c.namespace(prefix).await;
    let admin = c.client().await;
    let state = tempfile::tempdir().expect("tempdir");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("{ns}-work")},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": state.path()},
            "claimRef": {"namespace": ns, "name": "work"},
        },
    }))
    .expect("pv");
    Api::<PersistentVolume>::all(admin.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("create pv");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "work"},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "",
            "volumeName": format!("{ns}-work"),
        },
    }))
    .expect("pvc");
    Api::<PersistentVolumeClaim>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &pvc)
        .await
        .expect("create pvc");
    let sa: ServiceAccount = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "worker"},
    }))
    .expect("sa");
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create sa");
    let rules: Vec<serde_json::Value> = RBAC_RULES
        .iter()
        .map(|(group, resource, verbs)| {
            json!({"apiGroups": [group], "resources": [resource], "verbs": verbs})
        })
        .collect();
    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "neurodata-runner"},
        "rules": rules,
    }))
    .expect("role");
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "neurodata-runner"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "neurodata-runner"},
        "subjects": [{"kind": "ServiceAccount", "name": "worker", "namespace": ns}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");
    let worker = c.client_as(&ns, "worker").await;
    Org {
        ns,
        state,
        admin,
        worker,
    }
}

impl Org {
    fn runner(&self, outcome: Option<&str>) -> KubeRunner {
        let mut pod_annotations = BTreeMap::new();
        if let Some(o) = outcome {
            pod_annotations.insert(OUTCOME_ANNOTATION.to_owned(), o.to_owned());
        }
        KubeRunner::new(
            self.worker.clone(),
            KubeRunnerConfig {
                namespace: self.ns.clone(),
                image: "registry.example/neurodata-worker:0.1.0".into(),
                work_claim: "work".into(),
                state: self.state.path().to_owned(),
                gateway_selector: BTreeMap::from([(
                    "app.kubernetes.io/component".to_owned(),
                    "gateway".to_owned(),
                )]),
                gateway_port: 26608,
                cpu: "2".into(),
                ttl_seconds: 300,
                pod_annotations,
                image_pull_secrets: vec!["registry".into()],
                worker: "abc123".into(),
                task: RunTask::Train,
                start_slack_seconds: START_SLACK_SECONDS,
            },
        )
    }

    /// Job `id`'s files under the work volume as the worker lays them out: spec, data, out.
    fn request(&self, id: u64, max_seconds: u64) -> RunRequest {
        let dir = self.state.path().join("train").join(format!("job-{id}"));
        std::fs::create_dir_all(dir.join("data")).expect("job dir");
        let spec = dir.join("spec.json");
        std::fs::write(&spec, spec_json(max_seconds)).expect("spec");
        let data = dir.join("data").join("data.csv");
        std::fs::copy(manifest("../trainer/tests/data/iris.csv"), &data).expect("data");
        RunRequest {
            job_id: id,
            spec,
            data,
            out: dir.join("out"),
            max_seconds,
            max_memory_mb: 512,
        }
    }

    /// What the pod's `pod-run` writes to `out`: a real run of the trainer, made beside it
    /// (complete outputs already in `out` would not be run again).
    async fn outputs(&self, job: &RunRequest) -> PathBuf {
        let local = LocalRunner {
            trainer: trainer(),
            threads: Some(1),
        };
        let made = job.out.with_file_name("made-by-the-pod");
        let request = RunRequest {
            out: made.clone(),
            ..job.clone()
        };
        assert_eq!(
            local.run(&request).await.expect("local run"),
            RunOutcome::Succeeded
        );
        made
    }

    async fn run_objects(&self) -> (usize, usize, usize) {
        let lp = ListParams::default().labels("neurodata.io/worker=abc123");
        let jobs = Api::<Job>::namespaced(self.admin.clone(), &self.ns)
            .list(&lp)
            .await
            .expect("jobs");
        let secrets = Api::<Secret>::namespaced(self.admin.clone(), &self.ns)
            .list(&lp)
            .await
            .expect("secrets");
        let policies = Api::<NetworkPolicy>::namespaced(self.admin.clone(), &self.ns)
            .list(&lp)
            .await
            .expect("policies");
        (jobs.items.len(), secrets.items.len(), policies.items.len())
    }

    /// Waits for the run's pod to be Running, then writes the outputs `made` into the run's
    /// output directory on the volume, as the pod would while it runs.
    async fn pod_writes(&self, run: &str, made: &Path, out: &Path) -> Pod {
        let pod = self.pod_running(run).await;
        let copied = Command::new("cp")
            .arg("-R")
            .arg(made.join("."))
            .arg(out)
            .status()
            .expect("cp");
        assert!(copied.success(), "copying the outputs");
        pod
    }

    /// Waits for the run's pod to be Running.
    async fn pod_running(&self, run: &str) -> Pod {
        let pods = Api::<Pod>::namespaced(self.admin.clone(), &self.ns);
        for _ in 0..300 {
            let list = pods
                .list(&ListParams::default().labels(&format!("neurodata.io/run={run}")))
                .await
                .expect("pods");
            if let Some(p) = list
                .items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the pod of {run} never ran\n{}",
            neurodata_kube_testenv::cluster().logs()
        );
    }

    /// Asserts the run left nothing: no Job, Secret or NetworkPolicy of it, no sealed data.
    async fn assert_clean(&self, job: &RunRequest) {
        self.assert_clean_dir(&job.out).await;
    }

    /// Asserts the run in `out` left nothing (see [`Org::assert_clean`]).
    async fn assert_clean_dir(&self, out: &Path) {
        assert_eq!(self.run_objects().await, (0, 0, 0), "objects left behind");
        let sealed = out.parent().expect("job dir").join("sealed");
        assert!(!sealed.exists(), "{} left behind", sealed.display());
    }
}

#[tokio::test]
async fn a_run_is_sandboxed_and_leaves_nothing_behind() {
    let c = cluster();
    let org = org(c, "run-ok").await;
    let runner = org.runner(Some("slow"));
    let job = org.request(7, 300);
    let made = org.outputs(&job).await;
    let name = runner.object_name(7);
    let run = {
        let (runner, job) = (runner.clone(), job.clone());
        tokio::spawn(async move { runner.run(&job).await })
    };
    // While it runs (kwok completes a `slow` pod after 6 s): what the API server accepted.
    let pod = org.pod_writes(&name, &made, &job.out).await;
    let jobs = Api::<Job>::namespaced(org.admin.clone(), &org.ns);
    let k8s_job = jobs.get(&name).await.expect("job");
    let spec = k8s_job.spec.clone().expect("job spec");
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.active_deadline_seconds, Some(300 + 60));
    assert_eq!(spec.ttl_seconds_after_finished, Some(300));
    assert_eq!(spec.suspend, Some(false));
    let pod_spec = pod.spec.expect("pod spec");
    assert_eq!(pod_spec.automount_service_account_token, Some(false));
    assert_eq!(
        pod_spec
            .image_pull_secrets
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<_>>(),
        ["registry"]
    );
    let psc = pod_spec.security_context.expect("pod security context");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    let container = &pod_spec.containers[0];
    let sc = container
        .security_context
        .clone()
        .expect("security context");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_owned()])
    );
    let limits = container
        .resources
        .clone()
        .and_then(|r| r.limits)
        .expect("limits");
    assert_eq!(limits["cpu"].0, "2");
    // 512 MiB of the spec + 128 for pod-run + 1 for the decrypted iris data.
    assert_eq!(limits["memory"].0, "641Mi");
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    let key_mount = mounts
        .iter()
        .find(|m| m.mount_path == "/run/neurodata")
        .expect("the key is mounted");
    assert_eq!(key_mount.read_only, Some(true));
    let subpaths: Vec<_> = mounts.iter().filter_map(|m| m.sub_path.clone()).collect();
    assert_eq!(
        subpaths,
        ["train/job-7/sealed", "train/job-7/out"],
        "the pod sees only the sealed data and its output directory of the volume"
    );
    // The Secret holds the key the sealed file opens with, and is owned by the Job.
    let secret = Api::<Secret>::namespaced(org.admin.clone(), &org.ns)
        .get(&name)
        .await
        .expect("secret");
    let owners = secret.metadata.owner_references.expect("owner");
    assert_eq!(owners[0].uid, k8s_job.metadata.uid.clone().expect("uid"));
    let key = secret.data.expect("data")["data-key"].0.clone();
    let sealed = job
        .out
        .parent()
        .expect("job dir")
        .join("sealed/data.csv.sealed");
    let mut plain = Vec::new();
    neurodata_crypto::stream::decrypt(
        std::fs::File::open(&sealed).expect("sealed"),
        &mut plain,
        &neurodata_crypto::DataKey::from_slice(&key).expect("a key"),
    )
    .expect("the sealed data opens with the Secret's key");
    assert_eq!(
        plain,
        std::fs::read(manifest("../trainer/tests/data/iris.csv")).expect("iris")
    );
    let policy = Api::<NetworkPolicy>::namespaced(org.admin.clone(), &org.ns)
        .get(&name)
        .await
        .expect("policy");
    let pspec = policy.spec.expect("policy spec");
    assert_eq!(
        pspec.policy_types,
        Some(vec!["Ingress".to_owned(), "Egress".to_owned()])
    );
    assert!(pspec.ingress.unwrap_or_default().is_empty());
    let egress = pspec.egress.expect("egress");
    assert_eq!(egress.len(), 1, "one way out: the gateway");
    assert_eq!(
        serde_json::to_value(&egress[0]).expect("json"),
        json!({"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}}}],
               "ports": [{"protocol": "TCP", "port": 26608}]})
    );

    let outcome = run.await.expect("task").expect("run");
    assert_eq!(outcome, RunOutcome::Succeeded);
    org.assert_clean(&job).await;
    // The sandbox record is the pod template the Job ran, and its hash goes on chain.
    let record = std::fs::read(sandbox_path(&job.out)).expect("sandbox.json");
    let annotated = k8s_job
        .metadata
        .annotations
        .expect("annotations")
        .get("neurodata.io/sandbox-sha256")
        .cloned();
    assert_eq!(annotated, Some(hex::encode(Sha256::digest(&record))));
    let submitted = neurodata_worker::artifacts::submit_result(7, &job.out, &Default::default())
        .expect("submit result");
    assert_eq!(submitted.sandbox_sha256, Sha256::digest(&record).to_vec());
}

#[tokio::test]
async fn a_failing_pod_reports_the_trainers_reason() {
    let org = org(cluster(), "run-fail").await;
    let job = org.request(8, 300);
    let outcome = org.runner(Some("fail")).run(&job).await.expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Failed("the data has no column named label".into())
    );
    org.assert_clean(&job).await;
}

#[tokio::test]
async fn an_evicted_pod_is_reported_as_evicted() {
    let org = org(cluster(), "run-evict").await;
    let job = org.request(9, 300);
    let outcome = org.runner(Some("evict")).run(&job).await.expect("run");
    match outcome {
        RunOutcome::Failed(why) => {
            assert!(
                why.starts_with("evicted: The node was low on resource: memory"),
                "{why}"
            )
        }
        other => panic!("an eviction reported as {other:?}"),
    }
    org.assert_clean(&job).await;
}

#[tokio::test]
async fn a_completed_pod_without_outputs_is_a_failure() {
    let org = org(cluster(), "run-empty").await;
    let job = org.request(10, 300);
    let outcome = org.runner(None).run(&job).await.expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Failed("the run's pod completed but its outputs are incomplete".into())
    );
    org.assert_clean(&job).await;
}

#[tokio::test]
async fn a_run_past_its_deadline_is_reported_as_such() {
    let org = org(cluster(), "run-deadline").await;
    let job = org.request(11, 2);
    let mut runner = org.runner(Some("hang"));
    // activeDeadlineSeconds = the spec's 2 s + 1: the Job controller stops the pod.
    runner = KubeRunner::new(
        org.worker.clone(),
        KubeRunnerConfig {
            start_slack_seconds: 1,
            ..runner_config(&runner)
        },
    );
    let started = std::time::Instant::now();
    let outcome = runner.run(&job).await.expect("run");
    assert_eq!(outcome, RunOutcome::DeadlineExceeded);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "reported before the deadline"
    );
    org.assert_clean(&job).await;
}

fn runner_config(runner: &KubeRunner) -> KubeRunnerConfig {
    runner.config().clone()
}

#[tokio::test]
async fn a_worker_killed_mid_run_resumes_it() {
    let org = org(cluster(), "run-resume").await;
    let job = org.request(12, 300);
    let made = org.outputs(&job).await;
    let name;
    {
        let runner = org.runner(Some("slow"));
        name = runner.object_name(12);
        let (r, j) = (runner.clone(), job.clone());
        let first = tokio::spawn(async move { r.run(&j).await });
        org.pod_writes(&name, &made, &job.out).await;
        // The worker dies: its task is gone mid-watch, the Job and its Secret stay.
        first.abort();
        let _ = first.await;
    }
    assert_eq!(org.run_objects().await, (1, 1, 1));
    // A new worker process: it finds the run by name and label, and attaches to it.
    let restarted = org.runner(Some("slow"));
    assert_eq!(
        restarted.find(12, &job.out).await.expect("find"),
        Some(RunStatus::Running)
    );
    let outcome = restarted.run(&job).await.expect("run");
    assert_eq!(outcome, RunOutcome::Succeeded);
    org.assert_clean(&job).await;
    // Only one Job ever ran: a second would have needed a second pod.
    let pods = Api::<Pod>::namespaced(org.admin.clone(), &org.ns)
        .list(&ListParams::default().labels(&format!("neurodata.io/run={name}")))
        .await
        .expect("pods");
    assert!(pods.items.len() <= 1, "{} pods", pods.items.len());
}

#[tokio::test]
async fn the_workers_account_can_do_nothing_else() {
    let org = org(cluster(), "run-rbac").await;
    let forbidden = |r: Result<_, kube::Error>, what: &str| match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        Ok(_) => panic!("{what} was allowed"),
        Err(e) => panic!("{what}: {e}"),
    };
    // Pods are made by Jobs only: a bare pod would dodge the deadline and the TTL.
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }))
    .expect("pod");
    forbidden(
        Api::<Pod>::namespaced(org.worker.clone(), &org.ns)
            .create(&PostParams::default(), &pod)
            .await
            .map(|_| ()),
        "creating a bare pod",
    );
    // Nothing outside its namespace.
    forbidden(
        Api::<Secret>::namespaced(org.worker.clone(), "kube-system")
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "listing kube-system's Secrets",
    );
    // It cannot widen its own rights.
    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "more"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    }))
    .expect("role");
    forbidden(
        Api::<Role>::namespaced(org.worker.clone(), &org.ns)
            .create(&PostParams::default(), &role)
            .await
            .map(|_| ()),
        "creating a Role",
    );
    // Nor read a Secret's update path it has no verb for.
    forbidden(
        Api::<Secret>::namespaced(org.worker.clone(), &org.ns)
            .patch(
                "any",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"data": {}})),
            )
            .await
            .map(|_| ()),
        "patching a Secret",
    );
    // What it needs, it has (a list of its Jobs).
    Api::<Job>::namespaced(org.worker.clone(), &org.ns)
        .list(&ListParams::default())
        .await
        .expect("listing Jobs is allowed");
}

#[tokio::test]
async fn a_start_interrupted_by_a_crash_is_swept_at_startup() {
    let org = org(cluster(), "run-sweep").await;
    let runner = org.runner(None);
    let name = runner.object_name(13);
    // What a worker that died between creating the Job and resuming it leaves: a suspended Job
    // of its own labels and the Secret holding the run's key.
    let labels = json!({
        "neurodata.io/job-id": "13",
        "neurodata.io/worker": "abc123",
        "neurodata.io/task": "train",
    });
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "suspend": true,
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "trainer", "image": "x"}]}},
        },
    }))
    .expect("job");
    Api::<Job>::namespaced(org.admin.clone(), &org.ns)
        .create(&PostParams::default(), &job)
        .await
        .expect("create job");
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "data": {"data-key": "AAAA"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(org.admin.clone(), &org.ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    assert_eq!(org.run_objects().await, (1, 1, 0));
    // Another worker's suspended Job in the same namespace is not ours to sweep.
    let other: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "nd-train-other-13",
            "labels": {"neurodata.io/job-id": "13", "neurodata.io/worker": "other",
                       "neurodata.io/task": "train"}},
        "spec": {
            "suspend": true,
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "trainer", "image": "x"}]}},
        },
    }))
    .expect("job");
    Api::<Job>::namespaced(org.admin.clone(), &org.ns)
        .create(&PostParams::default(), &other)
        .await
        .expect("create the other job");

    assert_eq!(runner.sweep_interrupted_starts().await.expect("sweep"), 1);
    let jobs = Api::<Job>::namespaced(org.admin.clone(), &org.ns);
    for _ in 0..100 {
        if org.run_objects().await == (0, 0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        org.run_objects().await,
        (0, 0, 0),
        "the key outlived the crash"
    );
    assert!(
        jobs.get_opt("nd-train-other-13")
            .await
            .expect("get")
            .is_some(),
        "another worker's Job was swept"
    );
}

/// A verifier's runner: its re-executions as Jobs, the pod's termination message its answer.
fn verifier(org: &Org, outcome: &str, message: &str) -> KubeRunner {
    let train = org.runner(Some(outcome));
    let mut config = train.config().clone();
    config.task = RunTask::Verify;
    config
        .pod_annotations
        .insert("neurodata.io/kwok-message".into(), message.into());
    KubeRunner::new(org.worker.clone(), config)
}

/// Job `id`'s re-execution as the verifier lays it out: the rebuilt run and the data file (on
/// the verifier's scratch volume, not the work volume).
fn verify_request(org: &Org, id: u64, scratch: &Path) -> VerifyRequest {
    let run = org
        .state
        .path()
        .join("verify")
        .join(format!("job-{id}"))
        .join("out");
    std::fs::create_dir_all(&run).expect("run dir");
    std::fs::write(run.join("result.json"), "{}").expect("result");
    let data = scratch.join("data.csv");
    std::fs::copy(manifest("../trainer/tests/data/iris.csv"), &data).expect("data");
    VerifyRequest {
        job_id: id,
        run,
        data,
        args: Box::new(|run, data| {
            vec![
                "verify".into(),
                "--out".into(),
                run.display().to_string(),
                "--data".into(),
                data.display().to_string(),
                "--json".into(),
            ]
        }),
        max_seconds: 300,
        max_memory_mb: 512,
    }
}

#[tokio::test]
async fn a_verifiers_reexecution_runs_as_a_job_and_answers() {
    let org = org(cluster(), "verify-ok").await;
    let scratch = tempfile::tempdir().expect("scratch");
    let answer = r#"{"matches":true,"segments_digest":"ab","error":null}"#;
    let runner = verifier(&org, "answer", answer);
    assert_eq!(runner.object_name(21), "nd-verify-abc123-21");
    let request = verify_request(&org, 21, scratch.path());
    let got = runner.verify(&request).await.expect("verify");
    assert_eq!(got, Ok(answer.as_bytes().to_vec()));
    org.assert_clean_dir(&request.run).await;
}

#[tokio::test]
async fn a_reexecution_that_cannot_check_says_why() {
    let org = org(cluster(), "verify-fail").await;
    let scratch = tempfile::tempdir().expect("scratch");
    let runner = verifier(&org, "fail", "");
    let request = verify_request(&org, 22, scratch.path());
    let got = runner.verify(&request).await.expect("verify");
    assert_eq!(got, Err("the data has no column named label".to_owned()));
    org.assert_clean_dir(&request.run).await;
}

#[tokio::test]
async fn a_reexecution_of_an_earlier_result_is_not_attached_to() {
    let org = org(cluster(), "verify-stale").await;
    let scratch = tempfile::tempdir().expect("scratch");
    let answer = r#"{"matches":false,"segments_digest":null,"error":"checkpoint 3 differs"}"#;
    let runner = verifier(&org, "answer", answer);
    let name = runner.object_name(23);
    // A re-execution Job of the same job for an earlier result (other verify arguments), left
    // running by a verifier that died: it must not answer for this one.
    let stale: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name,
            "labels": {"neurodata.io/job-id": "23", "neurodata.io/worker": "abc123",
                       "neurodata.io/task": "verify"},
            "annotations": {"neurodata.io/request-sha256": "00"}},
        "spec": {
            "template": {
                "metadata": {"annotations": {"neurodata.io/kwok-outcome": "hang"}},
                "spec": {"restartPolicy": "Never",
                    "containers": [{"name": "trainer", "image": "x"}]}},
        },
    }))
    .expect("job");
    let jobs = Api::<Job>::namespaced(org.admin.clone(), &org.ns);
    let stale_uid = jobs
        .create(&PostParams::default(), &stale)
        .await
        .expect("create")
        .metadata
        .uid;
    let request = verify_request(&org, 23, scratch.path());
    let got = runner.verify(&request).await.expect("verify");
    assert_eq!(got, Ok(answer.as_bytes().to_vec()));
    org.assert_clean_dir(&request.run).await;
    assert!(stale_uid.is_some());
}
