//! Gateway settings: a TOML file, then `NEURODATA_GATEWAY_<FIELD>` environment variables on top
//! (e.g. `NEURODATA_GATEWAY_NODE_RPC`), so a container can override one field without a new file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// An environment override does not parse.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What it should be.
        reason: String,
    },
    /// Settings that contradict each other or are missing.
    #[error("{0}")]
    Invalid(String),
}

/// Every setting, with defaults for a gateway next to a local node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address.
    pub metrics_listen: SocketAddr,
    /// A second, plain-text listener serving only the gRPC health service
    /// (`grpc.health.v1.Health`, the same statuses as on `listen`), for probes that cannot speak
    /// TLS, such as Kubernetes' native `grpc` probe. Default: none.
    pub health_listen: Option<SocketAddr>,
    /// CometBFT RPC of the org's node.
    pub node_rpc: String,
    /// The gateway's TLS server certificate (PEM, issued by the org CA; may include the chain).
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Serve plain-text gRPC with no client authentication. For local development only.
    pub insecure_plaintext: bool,
    /// Blob store directory.
    pub blob_dir: PathBuf,
    /// Keep blobs in this S3-compatible bucket instead of `blob_dir` (credentials from the
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` environment variables).
    pub s3_bucket: Option<String>,
    /// S3 endpoint for non-AWS stores (MinIO, Ceph RGW), e.g. `http://minio:9000`.
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: String,
    /// Keep blobs in this IPFS node instead (kubo's RPC API, e.g. `http://127.0.0.1:5001`;
    /// loopback or a private network only, the API is unauthenticated). The mapping from blob
    /// CIDs to the node's root CIDs is kept in `state_dir` (`ipfs.index`). Not with `s3_bucket`.
    pub ipfs_api: Option<String>,
    /// Largest blob accepted, bytes.
    pub max_blob_bytes: u64,
    /// Most bytes one member (certificate) may store on this gateway, all its uploads together.
    pub upload_quota_member_bytes: u64,
    /// Most bytes the org's members may store on this gateway together.
    pub upload_quota_org_bytes: u64,
    /// Directory for the gateway's own records (the upload index `uploads.index`, and with
    /// `ipfs_api` the CID mapping `ipfs.index`); default: `blob_dir`. Set it when blobs live in
    /// S3 or IPFS, so the indexes are on a persistent volume.
    pub state_dir: Option<PathBuf>,
    /// Largest single gRPC message, bytes (txs, upload chunks).
    pub max_message_bytes: usize,
    /// Default wait for a COMMIT broadcast, milliseconds.
    pub commit_timeout_ms: u64,
    /// Longest wait a client may ask for, milliseconds.
    pub max_commit_timeout_ms: u64,
    /// How often the block follower polls the node, milliseconds.
    pub poll_interval_ms: u64,
    /// The member org this gateway serves: only its members may upload blobs and deposit data
    /// keys, they may read any blob stored here, and only datasets this org lists are served to
    /// buyers. Without it the gateway stores no uploads and serves no listed dataset.
    pub org_id: Option<String>,
    /// Whether validators' key requests (`RequestValidation` purchases) of a dataset get the
    /// data key and may download the ciphertext: an explicit org policy, off by default, because
    /// a validation request costs nothing. Training jobs' key requests (opened by the chain for a
    /// job's worker and attesting validators' operators) are served regardless: the provider
    /// agreed to on-platform training of the data it sells. So are validators' key requests of a
    /// model listing: they verify the listing's ciphertexts, which buyers wait for.
    pub deliver_validation_keys: bool,
    /// Where the org's data keys are kept (sealed with the keystore passphrase).
    pub keystore_dir: Option<PathBuf>,
    /// File holding the keystore passphrase (or set `NEURODATA_GATEWAY_KEYSTORE_PASSPHRASE`).
    pub keystore_passphrase_file: Option<PathBuf>,
    /// Certificate (PEM) of the org member that signs key deliveries (a provider or admin).
    pub delivery_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub delivery_key: Option<PathBuf>,
    /// The passphrase itself, from the environment only (never from the file).
    #[serde(skip)]
    pub keystore_passphrase: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            health_listen: None,
            node_rpc: "http://127.0.0.1:26657".into(),
            tls_cert: None,
            tls_key: None,
            insecure_plaintext: false,
            blob_dir: PathBuf::from("blobs"),
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            ipfs_api: None,
            max_blob_bytes: 64 << 30,
            upload_quota_member_bytes: 64 << 30,
            upload_quota_org_bytes: 1 << 40,
            state_dir: None,
            max_message_bytes: 4 << 20,
            commit_timeout_ms: 30_000,
            max_commit_timeout_ms: 300_000,
            poll_interval_ms: 100,
            org_id: None,
            deliver_validation_keys: false,
            keystore_dir: None,
            keystore_passphrase_file: None,
            delivery_cert: None,
            delivery_key: None,
            keystore_passphrase: None,
        }
    }
}

fn env<T: std::str::FromStr>(
    get: &dyn Fn(&str) -> Option<String>,
    field: &str,
    target: &mut T,
) -> Result<(), ConfigError>
where
    T::Err: std::fmt::Display,
{
    let var = format!("NEURODATA_GATEWAY_{}", field.to_uppercase());
    if let Some(value) = get(&var) {
        *target = value.parse().map_err(|e: T::Err| ConfigError::Env {
            var,
            value,
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

impl Config {
    /// Reads `path` (if given), applies the process environment, and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, &|k| std::env::var(k).ok())
    }

    /// As [`Config::load`] with an explicit environment.
    pub fn load_with(
        path: Option<&Path>,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut c = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: p.to_owned(),
                    source,
                })?
            }
            None => Config::default(),
        };
        env(get, "listen", &mut c.listen)?;
        env(get, "metrics_listen", &mut c.metrics_listen)?;
        let mut health = String::new();
        env(get, "health_listen", &mut health)?;
        if !health.is_empty() {
            c.health_listen =
                Some(
                    health
                        .parse()
                        .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                            var: "NEURODATA_GATEWAY_HEALTH_LISTEN".into(),
                            value: health.clone(),
                            reason: e.to_string(),
                        })?,
                );
        }
        env(get, "node_rpc", &mut c.node_rpc)?;
        let mut cert = String::new();
        env(get, "tls_cert", &mut cert)?;
        if !cert.is_empty() {
            c.tls_cert = Some(cert.into());
        }
        let mut key = String::new();
        env(get, "tls_key", &mut key)?;
        if !key.is_empty() {
            c.tls_key = Some(key.into());
        }
        env(get, "insecure_plaintext", &mut c.insecure_plaintext)?;
        let mut dir = String::new();
        env(get, "blob_dir", &mut dir)?;
        if !dir.is_empty() {
            c.blob_dir = dir.into();
        }
        let mut bucket = String::new();
        env(get, "s3_bucket", &mut bucket)?;
        if !bucket.is_empty() {
            c.s3_bucket = Some(bucket);
        }
        let mut endpoint = String::new();
        env(get, "s3_endpoint", &mut endpoint)?;
        if !endpoint.is_empty() {
            c.s3_endpoint = Some(endpoint);
        }
        env(get, "s3_region", &mut c.s3_region)?;
        let mut ipfs = String::new();
        env(get, "ipfs_api", &mut ipfs)?;
        if !ipfs.is_empty() {
            c.ipfs_api = Some(ipfs);
        }
        env(get, "max_blob_bytes", &mut c.max_blob_bytes)?;
        env(
            get,
            "upload_quota_member_bytes",
            &mut c.upload_quota_member_bytes,
        )?;
        env(get, "upload_quota_org_bytes", &mut c.upload_quota_org_bytes)?;
        env(
            get,
            "deliver_validation_keys",
            &mut c.deliver_validation_keys,
        )?;
        env(get, "max_message_bytes", &mut c.max_message_bytes)?;
        env(get, "commit_timeout_ms", &mut c.commit_timeout_ms)?;
        env(get, "max_commit_timeout_ms", &mut c.max_commit_timeout_ms)?;
        env(get, "poll_interval_ms", &mut c.poll_interval_ms)?;
        for (field, target) in [
            ("state_dir", &mut c.state_dir),
            ("keystore_dir", &mut c.keystore_dir),
            ("keystore_passphrase_file", &mut c.keystore_passphrase_file),
            ("delivery_cert", &mut c.delivery_cert),
            ("delivery_key", &mut c.delivery_key),
        ] {
            let mut v = String::new();
            env(get, field, &mut v)?;
            if !v.is_empty() {
                *target = Some(v.into());
            }
        }
        let mut org = String::new();
        env(get, "org_id", &mut org)?;
        if !org.is_empty() {
            c.org_id = Some(org);
        }
        let mut pass = String::new();
        env(get, "keystore_passphrase", &mut pass)?;
        if !pass.is_empty() {
            c.keystore_passphrase = Some(pass);
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.insecure_plaintext && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err(ConfigError::Invalid(
                "tls_cert and tls_key are required (the gateway serves mTLS); set \
                 insecure_plaintext = true only for local development"
                    .into(),
            ));
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_message_bytes below 1 KiB cannot carry a tx".into(),
            ));
        }
        if self.upload_quota_member_bytes == 0 || self.upload_quota_org_bytes == 0 {
            return Err(ConfigError::Invalid(
                "upload_quota_member_bytes and upload_quota_org_bytes must be > 0".into(),
            ));
        }
        if self.s3_bucket.is_some() && self.ipfs_api.is_some() {
            return Err(ConfigError::Invalid(
                "s3_bucket and ipfs_api both set: blobs live in one store, choose one".into(),
            ));
        }
        if let Some(api) = &self.ipfs_api
            && !(api.starts_with("http://") || api.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "ipfs_api {api:?} must be the URL of kubo's RPC API, e.g. http://127.0.0.1:5001"
            )));
        }
        if self.poll_interval_ms == 0 {
            return Err(ConfigError::Invalid("poll_interval_ms must be > 0".into()));
        }
        if self.delivery_cert.is_some() {
            let missing: Vec<&str> = [
                ("org_id", self.org_id.is_none()),
                ("keystore_dir", self.keystore_dir.is_none()),
                ("delivery_key", self.delivery_key.is_none()),
                (
                    "keystore_passphrase_file or NEURODATA_GATEWAY_KEYSTORE_PASSPHRASE",
                    self.keystore_passphrase.is_none() && self.keystore_passphrase_file.is_none(),
                ),
            ]
            .into_iter()
            .filter_map(|(name, absent)| absent.then_some(name))
            .collect();
            if !missing.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "key delivery (delivery_cert) also needs: {}",
                    missing.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Where the gateway keeps its own records.
    pub fn state_dir(&self) -> &Path {
        self.state_dir.as_deref().unwrap_or(&self.blob_dir)
    }

    /// Default COMMIT wait.
    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.commit_timeout_ms)
    }

    /// Longest COMMIT wait.
    pub fn max_commit_timeout(&self) -> Duration {
        Duration::from_millis(self.max_commit_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn with_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn file_then_environment_overrides() -> Result<(), ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:7000\"\nnode_rpc = \"http://node:26657\"\ntls_cert = \"a.pem\"\ntls_key = \"a.key\"\n",
        )
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let c = Config::load_with(
            Some(&path),
            &with_env(&[("NEURODATA_GATEWAY_NODE_RPC", "http://other:1")]),
        )?;
        assert_eq!(
            c.listen,
            "0.0.0.0:7000"
                .parse()
                .map_err(|_| ConfigError::Invalid(String::new()))?
        );
        assert_eq!(c.node_rpc, "http://other:1");
        assert_eq!(c.max_message_bytes, 4 << 20);
        // Upload quotas and the validation-key policy have safe defaults.
        assert_eq!(
            (c.upload_quota_member_bytes, c.upload_quota_org_bytes),
            (64 << 30, 1 << 40)
        );
        assert!(!c.deliver_validation_keys);
        assert_eq!(c.state_dir(), Path::new("blobs"));
        let c = Config::load_with(
            Some(&path),
            &with_env(&[
                ("NEURODATA_GATEWAY_UPLOAD_QUOTA_MEMBER_BYTES", "1000"),
                ("NEURODATA_GATEWAY_DELIVER_VALIDATION_KEYS", "true"),
                ("NEURODATA_GATEWAY_STATE_DIR", "/var/lib/gw"),
            ]),
        )?;
        assert_eq!(c.upload_quota_member_bytes, 1000);
        assert!(c.deliver_validation_keys);
        assert_eq!(c.state_dir(), Path::new("/var/lib/gw"));
        Ok(())
    }

    #[test]
    fn the_health_listener_is_off_unless_asked_for() {
        let plain = ("NEURODATA_GATEWAY_INSECURE_PLAINTEXT", "true");
        let off = Config::load_with(None, &with_env(&[plain]));
        assert_eq!(off.ok().map(|c| c.health_listen), Some(None));
        let on = Config::load_with(
            None,
            &with_env(&[plain, ("NEURODATA_GATEWAY_HEALTH_LISTEN", "0.0.0.0:8081")]),
        );
        assert_eq!(
            on.ok().and_then(|c| c.health_listen),
            Some(SocketAddr::from(([0, 0, 0, 0], 8081)))
        );
        let bad = Config::load_with(
            None,
            &with_env(&[plain, ("NEURODATA_GATEWAY_HEALTH_LISTEN", "port 8081")]),
        );
        assert!(
            matches!(&bad, Err(ConfigError::Env { var, .. }) if var == "NEURODATA_GATEWAY_HEALTH_LISTEN"),
            "{bad:?}"
        );
    }

    #[test]
    fn ipfs_api_comes_from_the_environment_and_excludes_s3() {
        let plain = ("NEURODATA_GATEWAY_INSECURE_PLAINTEXT", "true");
        let c = Config::load_with(
            None,
            &with_env(&[
                plain,
                ("NEURODATA_GATEWAY_IPFS_API", "http://127.0.0.1:5001"),
            ]),
        );
        assert_eq!(
            c.ok().and_then(|c| c.ipfs_api).as_deref(),
            Some("http://127.0.0.1:5001")
        );
        assert!(matches!(
            Config::load_with(
                None,
                &with_env(&[
                    plain,
                    ("NEURODATA_GATEWAY_IPFS_API", "http://127.0.0.1:5001"),
                    ("NEURODATA_GATEWAY_S3_BUCKET", "blobs"),
                ])
            ),
            Err(ConfigError::Invalid(m)) if m.contains("choose one")
        ));
        assert!(matches!(
            Config::load_with(
                None,
                &with_env(&[plain, ("NEURODATA_GATEWAY_IPFS_API", "127.0.0.1:5001")])
            ),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_unknown_fields_bad_env_and_tls_less_configs() {
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir else { return };
        let path = dir.path().join("g.toml");
        let _ = std::fs::write(&path, "listn = \"0.0.0.0:1\"\n");
        assert!(matches!(
            Config::load_with(Some(&path), &with_env(&[])),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::load_with(None, &with_env(&[])),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::load_with(
                None,
                &with_env(&[
                    ("NEURODATA_GATEWAY_INSECURE_PLAINTEXT", "true"),
                    ("NEURODATA_GATEWAY_MAX_BLOB_BYTES", "lots")
                ])
            ),
            Err(ConfigError::Env { .. })
        ));
        assert!(
            Config::load_with(
                None,
                &with_env(&[("NEURODATA_GATEWAY_INSECURE_PLAINTEXT", "true")])
            )
            .is_ok()
        );
    }
}
