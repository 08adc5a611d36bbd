//! The member as the loops use it: its gateways, its signing identity and private key, and the
//! one place txs are sent (one at a time, so concurrent jobs never race for a nonce).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use neurodata_abci::address::Address;
use neurodata_abci::query;
use neurodata_client::gateway::{GatewayClient, GatewayTls};
use neurodata_client::{Amount, ChainAccess as _, ClientError, Committed, Signer, Submitter};
use neurodata_proto::chain::v1 as pb;
use neurodata_worker::fetch::Gateways;
use openssl::pkey::{PKey, Private};

use neurodata_worker::kube_runner::{KubeRunner, KubeRunnerConfig, RunTask};

use crate::{MemberArgs, RunnerArgs};

/// A connected member.
pub struct Node {
    /// Its gateways.
    pub gateways: Gateways,
    signer: Signer,
    /// Its address (certificate fingerprint).
    pub me: Address,
    /// Its private key (unwraps delivered data keys).
    pub private: PKey<Private>,
    fee: Amount,
    sending: tokio::sync::Mutex<()>,
    /// The state directory.
    pub state: PathBuf,
    /// Where decrypted data goes instead of the state directory (`<--scratch>/<mode>`).
    pub scratch: Option<PathBuf>,
    /// The trainer binary.
    pub trainer: PathBuf,
    /// Time between polls.
    pub poll: Duration,
}

impl Node {
    /// Reads the member's files and connects to its gateway. Its per-job work goes under
    /// `<--state>/<mode>`, so a worker and a verifier given the same directory never touch each
    /// other's jobs (each deletes the job directories it no longer needs).
    pub async fn open(m: &MemberArgs, mode: &str) -> anyhow::Result<Node> {
        let tls = GatewayTls::from_files(&m.ca, &m.cert, &m.key)?;
        let signer = Signer::from_pem(&tls.cert_pem, &tls.key_pem)
            .context("the member certificate and key")?;
        let private = PKey::private_key_from_pem(&tls.key_pem)
            .with_context(|| format!("reading {}", m.key.display()))?;
        if m.fee.contains('.') {
            anyhow::bail!("--fee: NRC has no fractions, got {:?}", m.fee);
        }
        let fee: Amount = m
            .fee
            .parse()
            .with_context(|| format!("--fee {:?} is not a whole amount of NRC", m.fee))?;
        let state = m.state.join(mode);
        std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        let gateways = Gateways::connect(&m.gateway, tls).await?;
        let me = signer.address();
        Ok(Node {
            gateways,
            signer,
            me,
            private,
            fee,
            sending: tokio::sync::Mutex::new(()),
            state,
            scratch: m.scratch.as_ref().map(|s| s.join(mode)),
            trainer: m.trainer.clone(),
            poll: Duration::from_millis(m.poll_ms.max(100)),
        })
    }

    /// Job `id`'s directory (its data under `--scratch` if given).
    pub fn job_dir(&self, id: u64) -> neurodata_worker::journal::JobDir {
        neurodata_worker::journal::JobDir::with_scratch(&self.state, self.scratch.as_deref(), id)
    }

    /// The own gateway, as the chain.
    pub fn chain(&self) -> &GatewayClient {
        self.gateways.own()
    }

    /// Signs `message` as the next tx, sends it and waits for its block.
    pub async fn submit(&self, message: pb::Message) -> Result<Committed, ClientError> {
        let _one_at_a_time = self.sending.lock().await;
        Submitter::new(self.chain(), &self.signer, self.fee)
            .submit(vec![message])
            .await
    }

    /// Job `id` as the chain has it now.
    pub async fn job(&self, id: u64) -> Result<Option<pb::Job>, ClientError> {
        self.chain().record(query::job(id)).await
    }

    /// The latest committed height.
    pub async fn height(&self) -> Result<u64, ClientError> {
        self.chain().latest_height().await
    }

    /// Jobs passing `filter`.
    pub async fn jobs(&self, filter: pb::JobFilter) -> Result<Vec<pb::Job>, ClientError> {
        Ok(self
            .chain()
            .record(query::jobs(filter))
            .await?
            .unwrap_or_default()
            .jobs)
    }
}

/// Whether the chain refused a tx because the job is not in the status it needs (it moved on:
/// our earlier tx, or the chain's own windows, got there first).
pub fn is_wrong_status(e: &ClientError) -> bool {
    let code = neurodata_abci::training::TrainingError::WrongStatus {
        job: 0,
        status: "",
        needed: "",
    }
    .code();
    matches!(e, ClientError::Rejected { codespace, code: c, .. } if codespace == "training" && *c == code)
}

/// The Kubernetes runner the flags describe, with the pod's own credentials (in a cluster) or
/// the kubeconfig's.
pub async fn kube_runner(
    m: &MemberArgs,
    a: RunnerArgs,
    task: RunTask,
    who: &[u8],
) -> anyhow::Result<KubeRunner> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster credentials or KUBECONFIG)")?;
    let namespace = match a.k8s_namespace {
        Some(ns) => ns,
        None => client.default_namespace().to_owned(),
    };
    let image = a.k8s_image.context(
        "--runner kubernetes needs --k8s-image (the image with neurodata-worker and trainer)",
    )?;
    let work_claim = a
        .k8s_work_claim
        .context("--runner kubernetes needs --k8s-work-claim (the PVC mounted at --state)")?;
    let mut gateway_selector = std::collections::BTreeMap::new();
    for pair in &a.k8s_gateway_selector {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--k8s-gateway-selector: {pair:?} is not KEY=VALUE"))?;
        gateway_selector.insert(k.to_owned(), v.to_owned());
    }
    anyhow::ensure!(
        !gateway_selector.is_empty(),
        "--runner kubernetes needs --k8s-gateway-selector (the labels of the org gateway's pods: \
         the only egress run pods get)"
    );
    let mut pod_annotations = std::collections::BTreeMap::new();
    for pair in &a.k8s_pod_annotation {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--k8s-pod-annotation: {pair:?} is not KEY=VALUE"))?;
        pod_annotations.insert(k.to_owned(), v.to_owned());
    }
    Ok(KubeRunner::new(
        client,
        KubeRunnerConfig {
            namespace,
            image,
            work_claim,
            state: m.state.clone(),
            gateway_selector,
            gateway_port: a.k8s_gateway_port,
            cpu: a.k8s_cpu,
            ttl_seconds: a.k8s_ttl_seconds,
            pod_annotations,
            image_pull_secrets: a.k8s_image_pull_secret,
            // Object names carry the worker's (member's) or the validator's address, its first
            // 12 hex digits: two runners in one namespace never touch each other's runs.
            worker: hex::encode(who).chars().take(12).collect(),
            task,
            start_slack_seconds: neurodata_worker::kube_runner::START_SLACK_SECONDS,
        },
    ))
}
