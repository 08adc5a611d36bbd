//! A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok (the kubelet of one fake node, whose pods go
//! through their phases without containers), built from the Go modules pinned in `tools/k8s` by
//! `scripts/build-k8s.sh` and started by `scripts/k8s-cluster.sh`.
//!
//! [`cluster`] starts one per test binary, on first use, and every test of that binary shares it
//! (each in a namespace of its own, from [`Cluster::namespace`]): a start costs ~10 s and
//! ~550 MB. The script's watchdog stops it when the test process exits, however it exits.
//!
//! A pod of a Job completes unless it carries the annotation [`OUTCOME_ANNOTATION`]; see
//! `scripts/k8s/kwok-stages.yaml` for the endings a test can ask for.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The pod annotation kwok's stages read to end a Job's pod other than by completing:
/// `fail`, `evict`, `slow` (completes after 6 s) or `hang` (runs until its deadline).
pub const OUTCOME_ANNOTATION: &str = "neurodata.io/kwok-outcome";

/// A running control plane.
#[derive(Debug)]
pub struct Cluster {
    /// Its directory: certificates, kubeconfigs, logs, etcd's data.
    pub dir: PathBuf,
    /// A cluster-admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The directory of the binaries (`helm`, `kube-apiserver`, ...).
    pub bin: PathBuf,
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The test binary's control plane, started on first use.
///
/// # Panics
/// If it does not start (the binaries do not build, a component fails): every test that needs
/// it would fail the same way, with the script's message and the components' logs.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| match start() {
        Ok(c) => c,
        Err(e) => panic!("starting the test Kubernetes control plane: {e}"),
    })
}

fn start() -> Result<Cluster, String> {
    let root = workspace_root();
    let bin = match std::env::var_os("NEURODATA_K8S_BIN") {
        Some(b) => PathBuf::from(b),
        None => {
            let out = Command::new(root.join("scripts/build-k8s.sh"))
                .output()
                .map_err(|e| format!("running scripts/build-k8s.sh: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/build-k8s.sh failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("neurodata-k8s-")
        .tempdir()
        .map_err(|e| format!("creating the cluster's directory: {e}"))?
        // The script's watchdog deletes it once this process is gone.
        .keep();
    let out = Command::new(root.join("scripts/k8s-cluster.sh"))
        .arg("start")
        .arg(&dir)
        .arg("--owner")
        .arg(std::process::id().to_string())
        .env("NEURODATA_K8S_BIN", &bin)
        .output()
        .map_err(|e| format!("running scripts/k8s-cluster.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/k8s-cluster.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Cluster {
        kubeconfig: dir.join("kubeconfig"),
        dir,
        bin,
    })
}

impl Cluster {
    /// `helm` talking to this cluster, its cache, config and data kept in the cluster's
    /// directory (never the user's).
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("helm"));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"));
        cmd
    }

    /// A client with cluster-admin rights.
    pub async fn client(&self) -> kube::Client {
        self.client_from(&self.kubeconfig).await
    }

    async fn client_from(&self, kubeconfig: &Path) -> kube::Client {
        let kc = Kubeconfig::read_from(kubeconfig)
            .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("loading {}: {e}", kubeconfig.display()));
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("building a client: {e}"))
    }

    /// A client authenticated as service account `name` of `namespace`, with a token the API
    /// server issued for it (TokenRequest): it has exactly the rights RBAC gives that account.
    pub async fn client_as(&self, namespace: &str, name: &str) -> kube::Client {
        let admin = self.client().await;
        let accounts: Api<ServiceAccount> = Api::namespaced(admin, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec!["https://kubernetes.default.svc".into()],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let issued = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("a token for {namespace}/{name}: {e}"));
        let token = issued.status.map(|s| s.token).unwrap_or_default();
        let admin_config = std::fs::read_to_string(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.kubeconfig.display()));
        // The admin kubeconfig with its client certificate swapped for the token.
        let config: String = admin_config
            .lines()
            .map(|line| {
                let t = line.trim_start();
                if t.starts_with("client-certificate:") {
                    format!("    token: {token}")
                } else if t.starts_with("client-key:") {
                    String::new()
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self.client_from(&path).await
    }

    /// Creates a fresh namespace named after `prefix` and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let namespaces: Api<Namespace> = Api::all(self.client().await);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name},
        }))
        .unwrap_or_else(|e| panic!("a namespace object: {e}"));
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }

    /// The components' logs (for a failing test's message).
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for name in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ] {
            let path = self.dir.join("logs").join(format!("{name}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            all.push_str(&format!("== {name}\n"));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}
