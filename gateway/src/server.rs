//! Assembles and runs the gateway: the block follower, the gRPC services behind the guard layer
//! (membership check and metrics for every call), health and reflection, and `/metrics`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use neurodata_proto::gateway::v1 as gw;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Server;

use crate::auth::{Membership, admit_call};
use crate::blobstore::BlobStore;
use crate::chain::Chain;
use crate::config::Config;
use crate::market::access::MarketAccess;
use crate::market::delivery::Delivery;
use crate::market::keystore::KeyStore;
use crate::market::retire::Retire;
use crate::metrics::Metrics;
use crate::service::blobs::{BlobAccess, BlobsService};
use crate::service::events::EventsService;
use crate::service::keys::KeysService;
use crate::service::models::ModelsService;
use crate::service::preview::PreviewService;
use crate::service::query::QueryService;
use crate::service::status::StatusService;
use crate::service::tx::TxService;
use crate::service::{Shared, blobs};
use crate::uploads::{Quotas, UploadLedger};
use neurodata_client::Signer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A gateway ready to serve.
pub struct Gateway {
    shared: Arc<Shared>,
    keystore: Option<Arc<KeyStore>>,
    /// Keys of the models installed here (`Models.Install`), apart from the org's deposits.
    installed: Option<Arc<KeyStore>>,
    delivery: Option<Signer>,
}

impl Gateway {
    /// Builds the gateway from its config with the marketplace's download policy.
    pub fn new(config: Config) -> Result<Self, BoxError> {
        let own_org = config.org_id.clone();
        let validation = config.deliver_validation_keys;
        Self::build(config, move |chain| {
            Arc::new(MarketAccess::new(chain, own_org, validation)) as Arc<dyn BlobAccess>
        })
    }

    /// Builds the gateway with another blob access policy (tests, or a deployment that serves
    /// only public blobs: [`crate::service::blobs::AnyMember`]).
    pub fn with_access(config: Config, access: Arc<dyn BlobAccess>) -> Result<Self, BoxError> {
        Self::build(config, move |_| access)
    }

    fn build(
        config: Config,
        access: impl FnOnce(Arc<Chain>) -> Arc<dyn BlobAccess>,
    ) -> Result<Self, BoxError> {
        let chain = Chain::new(&config.node_rpc)?;
        let access = access(chain.clone());
        let (keystore, installed) = match &config.keystore_dir {
            None => (None, None),
            Some(dir) => {
                let pass = match (
                    &config.keystore_passphrase,
                    &config.keystore_passphrase_file,
                ) {
                    (Some(p), _) => p.clone(),
                    (None, Some(f)) => std::fs::read_to_string(f)
                        .map_err(|e| format!("keystore passphrase file {}: {e}", f.display()))?
                        .trim_end()
                        .to_owned(),
                    (None, None) => {
                        return Err("keystore_dir needs keystore_passphrase_file or \
                                    NEURODATA_GATEWAY_KEYSTORE_PASSPHRASE"
                            .into());
                    }
                };
                // Installed models' keys in a directory of their own: the delivery task looks
                // keys up in the org's deposits only, so a bought key is never delivered on.
                (
                    Some(Arc::new(KeyStore::open(dir, pass.as_bytes())?)),
                    Some(Arc::new(KeyStore::open(
                        &dir.join(crate::service::models::INSTALLED_DIR),
                        pass.as_bytes(),
                    )?)),
                )
            }
        };
        let delivery = match (&config.delivery_cert, &config.delivery_key) {
            (Some(c), Some(k)) => Some(Signer::from_pem(
                &std::fs::read(c).map_err(|e| format!("delivery_cert {}: {e}", c.display()))?,
                &std::fs::read(k).map_err(|e| format!("delivery_key {}: {e}", k.display()))?,
            )?),
            _ => None,
        };
        let blobs = match (&config.s3_bucket, &config.ipfs_api) {
            (Some(bucket), _) => BlobStore::open_s3(
                &crate::blobstore::S3Settings {
                    bucket: bucket.clone(),
                    endpoint: config.s3_endpoint.clone(),
                    region: config.s3_region.clone(),
                    ..Default::default()
                },
                config.max_blob_bytes,
            )?,
            (None, Some(api)) => BlobStore::open_ipfs(
                &crate::blobstore::IpfsSettings {
                    api: api.clone(),
                    state_dir: config.state_dir().to_owned(),
                },
                config.max_blob_bytes,
            )?,
            (None, None) => BlobStore::open(&config.blob_dir, config.max_blob_bytes)?,
        };
        let uploads = UploadLedger::open(
            config.state_dir(),
            Quotas {
                member_bytes: config.upload_quota_member_bytes,
                org_bytes: config.upload_quota_org_bytes,
            },
        )?;
        Ok(Gateway {
            shared: Arc::new(Shared {
                membership: Arc::new(Membership::new(chain.clone())),
                chain,
                blobs,
                uploads,
                access,
                config: Arc::new(config),
                metrics: Metrics::new(),
            }),
            keystore,
            installed,
            delivery,
        })
    }

    /// Serves until the process ends (or a listener fails).
    pub async fn serve(self) -> Result<(), BoxError> {
        let shared = self.shared;
        let config = shared.config.clone();
        // Before any upload can race it: index entries of blobs a crash kept from appearing.
        match shared.uploads.reconcile(&shared.blobs).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "upload index: dropped entries without a blob"),
            Err(e) => tracing::warn!("upload index: {e}"),
        }
        if let (Some(signer), Some(keystore), Some(org), Some(dir)) = (
            self.delivery,
            self.keystore.clone(),
            config.org_id.clone(),
            config.keystore_dir.clone(),
        ) {
            tracing::info!(org = %org, signer = %signer.address(), "delivering data keys for purchases");
            let delivery =
                Delivery::new(shared.clone(), signer, keystore, org, dir.join("journal"))?;
            tokio::spawn(delivery.run());
        }
        if let Some(org) = config.org_id.clone() {
            tokio::spawn(Retire::new(shared.clone(), org).run());
        }
        tokio::spawn(
            shared
                .chain
                .clone()
                .follow(Duration::from_millis(config.poll_interval_ms)),
        );

        tokio::spawn(watch_certificates(shared.clone()));
        let (health, health_service) = tonic_health::server::health_reporter();
        tokio::spawn(report_health(shared.clone(), health));
        if let Some(addr) = config.health_listen {
            // Health only: no other service is reachable without TLS and a certificate.
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let health_only = Server::builder().add_service(health_service.clone());
            tracing::info!(health = %addr, "plain-text gRPC health service");
            tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                if let Err(e) = health_only.serve_with_incoming(incoming).await {
                    tracing::error!("health server: {e}");
                }
            });
        }
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(neurodata_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let limit = config.max_message_bytes;
        let router = Server::builder()
            // HTTP/2 flow-control windows sized to the connection's bandwidth-delay product
            // rather than the 64 KiB default: a client streaming Predict batches (up to 4 MiB
            // each) or blob chunks (1 MiB) is not held to one message in flight.
            .http2_adaptive_window(Some(true))
            .layer(GuardLayer {
                shared: shared.clone(),
            })
            .add_service(health_service)
            .add_service(reflection)
            .add_service(
                gw::tx_server::TxServer::new(TxService(shared.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                gw::query_server::QueryServer::new(QueryService(shared.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                gw::events_server::EventsServer::new(EventsService(shared.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                gw::blobs_server::BlobsServer::new(BlobsService(shared.clone()))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(blobs::DOWNLOAD_CHUNK + 1024),
            )
            .add_service(
                gw::status_server::StatusServer::new(StatusService(shared.clone()))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                gw::previews_server::PreviewsServer::new(PreviewService::new(
                    shared.clone(),
                    self.keystore.clone(),
                ))
                .max_decoding_message_size(limit),
            )
            .add_service(
                gw::keys_server::KeysServer::new(KeysService {
                    shared: shared.clone(),
                    keystore: self.keystore,
                })
                .max_decoding_message_size(limit),
            )
            .add_service(
                gw::models_server::ModelsServer::new(ModelsService::new(
                    shared.clone(),
                    self.installed,
                ))
                // A batch may hold up to MAX_BATCH_BYTES of rows, whatever the general limit.
                .max_decoding_message_size(
                    limit.max(neurodata_trainer::predict::MAX_BATCH_BYTES + (64 << 10)),
                ),
            );

        let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen).await?;
        let metrics = shared.metrics.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics_listener, app).await {
                tracing::error!("metrics server: {e}");
            }
        });

        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        tracing::info!(
            listen = %config.listen,
            metrics = %config.metrics_listen,
            node = %config.node_rpc,
            tls = !config.insecure_plaintext,
            "gateway serving"
        );
        if config.insecure_plaintext {
            tracing::warn!("plain-text gRPC without client authentication: development only");
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            router.serve_with_incoming(incoming).await?;
        } else {
            let (cert, key) = match (&config.tls_cert, &config.tls_key) {
                (Some(c), Some(k)) => (c, k),
                _ => return Err("tls_cert and tls_key are required".into()),
            };
            let tls = crate::tls::server_config(cert, key)?;
            router
                .serve_with_incoming(crate::tls::incoming(listener, tls))
                .await?;
        }
        Ok(())
    }
}

/// Keeps `certificate_expiry_seconds` current every minute. The server and delivery certificates
/// are read once (a new one takes a restart to be used); the org's CA is read from the chain
/// each round, since governance may rotate it.
async fn watch_certificates(shared: Arc<Shared>) {
    use crate::metrics::{UsedCertificate, pem_not_after};
    use neurodata_client::ChainAccess as _;
    let config = shared.config.clone();
    let read = |path: &Option<std::path::PathBuf>, what: &str| {
        let path = path.as_ref()?;
        match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| pem_not_after(&pem))
        {
            Ok(not_after) => Some(not_after),
            Err(e) => {
                tracing::warn!("{what} {}: {e}: its expiry is not reported", path.display());
                None
            }
        }
    };
    let server = read(&config.tls_cert, "tls_cert");
    let delivery = read(&config.delivery_cert, "delivery_cert");
    let mut org_ca = None;
    loop {
        if let Some(org) = &config.org_id {
            match shared
                .chain
                .record(neurodata_abci::query::org(org.clone()))
                .await
            {
                Ok(Some(o)) => {
                    org_ca = neurodata_abci::membership::certificate::validity(&o.ca_cert_der)
                        .ok()
                        .map(|(_, not_after)| not_after);
                }
                Ok(None) => tracing::warn!(org = %org, "org_id is not an org on chain"),
                // The last value read stands while the node is away.
                Err(e) => tracing::debug!("reading the org's CA: {e}"),
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        for (cert, not_after) in [
            (UsedCertificate::Server, server),
            (UsedCertificate::OrgCa, org_ca),
            (UsedCertificate::Delivery, delivery),
        ] {
            if let Some(t) = not_after {
                shared.metrics.set_certificate_expiry(cert, t, now);
            }
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// Marks the chain-backed services NOT_SERVING while CometBFT is unreachable.
async fn report_health(shared: Arc<Shared>, health: tonic_health::server::HealthReporter) {
    let mut last = None;
    loop {
        let up = shared.chain.is_up();
        if last != Some(up) {
            shared.metrics.chain_up.set(i64::from(up));
            let status = if up {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            for name in [
                <gw::tx_server::TxServer<TxService> as NamedService>::NAME,
                <gw::query_server::QueryServer<QueryService> as NamedService>::NAME,
                <gw::events_server::EventsServer<EventsService> as NamedService>::NAME,
                <gw::status_server::StatusServer<StatusService> as NamedService>::NAME,
                <gw::models_server::ModelsServer<ModelsService> as NamedService>::NAME,
            ] {
                health.set_service_status(name, status).await;
            }
            // Blobs do not need the chain to be up... but their access checks do.
            health
                .set_service_status(
                    <gw::blobs_server::BlobsServer<BlobsService> as NamedService>::NAME,
                    status,
                )
                .await;
            last = Some(up);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every call passes here: the caller's certificate is checked against the chain (the member is
/// put into the request for the service), and the call is counted and timed.
#[derive(Clone)]
struct GuardLayer {
    shared: Arc<Shared>,
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
struct Guard<S> {
    inner: S,
    shared: Arc<Shared>,
}

fn grpc_code(resp: &http::Response<Body>) -> i32 {
    // Errors before the first message come as trailers-only responses: the status is a header.
    // A response without it is a stream or message that started fine.
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl<S, B> tower::Service<http::Request<B>> for Guard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The ready service goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let start = Instant::now();
            let path = req.uri().path().to_owned();
            let admitted = admit_call(
                &shared.membership,
                shared.config.insecure_plaintext,
                &path,
                req.extensions(),
            )
            .await;
            let resp = match admitted {
                Ok(caller) => {
                    if let Some(c) = caller {
                        req.extensions_mut().insert(c);
                    }
                    inner.call(req).await?
                }
                Err(status) => {
                    tracing::info!(%path, "refused: {}", status.message());
                    status.into_http()
                }
            };
            shared
                .metrics
                .observe(&path, grpc_code(&resp), start.elapsed());
            Ok(resp)
        })
    }
}
