//! A client of an org's gRPC gateway: mTLS with the member's certificate, [`ChainAccess`] (reads
//! of any row of the query table, light blocks, tx broadcast), event subscriptions, key deposits,
//! blob upload/download that check the CID on the client side too, and inference on installed
//! models (`Models.Install`, `Models.Predict`).

use std::path::Path;

use neurodata_abci::query::Query;
use neurodata_proto::gateway::v1 as gw;
use openssl::sha::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::ClientError;
use crate::access::{Answer, ChainAccess, Committed, LightBlock};
use crate::cid::Cid;
pub use crate::gateway_errors::GatewayConnectError;
use crate::gateway_errors::{self, Target};

/// Bytes per upload message.
pub const UPLOAD_CHUNK: usize = 1 << 20;

/// How long a read, a light block or a status call may take: a gateway that hangs must not
/// stall a verification or a submitter holding its nonce.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(CALL_TIMEOUT);
    r
}

/// How to reach a gateway over mTLS.
#[derive(Clone, Debug)]
pub struct GatewayTls {
    /// PEM of the CA that issued the gateway's server certificate (its org's root CA).
    pub server_ca_pem: Vec<u8>,
    /// The member certificate to present (PEM).
    pub cert_pem: Vec<u8>,
    /// Its private key (PEM).
    pub key_pem: Vec<u8>,
    /// The name to check in the server certificate (default: the URL's host).
    pub domain: Option<String>,
}

impl GatewayTls {
    /// Reads the CA, certificate and key files, and checks that the key is the certificate's
    /// (a mismatch would otherwise show only as a failed TLS handshake).
    pub fn from_files(server_ca: &Path, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| ClientError::Io {
                path: p.display().to_string(),
                source,
            })
        };
        let tls = GatewayTls {
            server_ca_pem: read(server_ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            domain: None,
        };
        gateway_errors::ca_names(&tls.server_ca_pem, &server_ca.display().to_string())?;
        gateway_errors::check_identity(&tls.cert_pem, &tls.key_pem, Some((cert, key)))?;
        Ok(tls)
    }
}

/// How long a connection (TCP, TLS and HTTP/2 handshakes) may take.
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connected gateway client.
#[derive(Clone)]
pub struct GatewayClient {
    channel: Channel,
    /// Where it connected, to explain a failed call in the user's terms.
    target: std::sync::Arc<Target>,
}

fn status_err(s: tonic::Status) -> ClientError {
    ClientError::Gateway {
        code: format!("{:?}", s.code()),
        message: s.message().to_owned(),
    }
}

impl GatewayClient {
    /// Connects to `url` (`https://host:port` with `tls`, `http://` only for a dev gateway).
    /// A failure is a [`ClientError::GatewayConnect`] that says what is wrong and the fix
    /// (the wrong scheme or port, the wrong CA, a key that is not the certificate's).
    pub async fn connect(url: &str, tls: Option<GatewayTls>) -> Result<Self, ClientError> {
        let bad_url = |reason: String| GatewayConnectError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| bad_url(gateway_errors::root_cause(&e)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let uri = endpoint.uri();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad_url("it does not start with https://".into()).into()),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad_url("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let (mut trusted_cas, mut name) = (None, host.clone());
        if let Some(t) = tls {
            gateway_errors::check_identity(&t.cert_pem, &t.key_pem, None)?;
            trusted_cas = Some(gateway_errors::ca_names(
                &t.server_ca_pem,
                "the gateway CA",
            )?);
            let mut cfg = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&t.server_ca_pem))
                .identity(Identity::from_pem(&t.cert_pem, &t.key_pem));
            if let Some(d) = t.domain {
                name = d.clone();
                cfg = cfg.domain_name(d);
            }
            endpoint = endpoint
                .tls_config(cfg)
                .map_err(|e| GatewayConnectError::Tls {
                    url: url.to_owned(),
                    reason: gateway_errors::root_cause(&e),
                })?;
        }
        let target = std::sync::Arc::new(Target {
            url: url.to_owned(),
            host,
            port,
            name,
            trusted_cas,
        });
        // tonic bounds the TCP connect only; a server that accepts and then says nothing would
        // hold the TLS handshake forever.
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
            Err(_) => {
                return Err(GatewayConnectError::NoAnswer {
                    url: url.to_owned(),
                    secs: CONNECT_TIMEOUT.as_secs(),
                }
                .into());
            }
            Ok(Err(e)) => return Err(target.diagnose(&e).await.into()),
            Ok(Ok(channel)) => channel,
        };
        if !https && let Some(e) = target.probe_plaintext().await {
            return Err(e.into());
        }
        Ok(GatewayClient { channel, target })
    }

    /// A call's failure: a transport failure that names a mistake (the gateway went away, a
    /// reconnection met another certificate), or an answer from an HTTP server that is not a
    /// gRPC one (tonic makes up a status for it), as [`ClientError::GatewayConnect`]; else the
    /// gateway's status.
    fn call_err(&self, s: tonic::Status) -> ClientError {
        self.target
            .explain_call(&s)
            .map_or_else(|| status_err(s), ClientError::from)
    }

    fn tx(&self) -> gw::tx_client::TxClient<Channel> {
        gw::tx_client::TxClient::new(self.channel.clone())
    }

    fn q(&self) -> gw::query_client::QueryClient<Channel> {
        gw::query_client::QueryClient::new(self.channel.clone())
    }

    fn blobs(&self) -> gw::blobs_client::BlobsClient<Channel> {
        gw::blobs_client::BlobsClient::new(self.channel.clone())
            .max_decoding_message_size(UPLOAD_CHUNK + 4096)
    }

    /// Chain and gateway status, and who the gateway thinks we are.
    pub async fn status(&self) -> Result<gw::StatusResponse, ClientError> {
        Ok(gw::status_client::StatusClient::new(self.channel.clone())
            .get(timed(gw::StatusRequest {}))
            .await
            .map_err(|s| self.call_err(s))?
            .into_inner())
    }

    /// Broadcasts a signed tx in `mode`; a tx the chain refuses is [`ClientError::Rejected`].
    pub async fn broadcast_mode(
        &self,
        tx: Vec<u8>,
        mode: gw::BroadcastMode,
        timeout_ms: u32,
    ) -> Result<gw::BroadcastResponse, ClientError> {
        let r = self.send(tx, mode, timeout_ms).await?;
        Committed::refusal(&r).map_or(Ok(r), Err)
    }

    async fn send(
        &self,
        tx: Vec<u8>,
        mode: gw::BroadcastMode,
        timeout_ms: u32,
    ) -> Result<gw::BroadcastResponse, ClientError> {
        Ok(self
            .tx()
            .broadcast(gw::BroadcastRequest {
                tx,
                mode: mode as i32,
                timeout_ms,
            })
            .await
            .map_err(|s| self.call_err(s))?
            .into_inner())
    }

    /// Hands a data key to the gateway's keystore (providers of the gateway's org), bound to the
    /// caller and to `cid`, the ciphertext it encrypts (uploaded first); returns the commitment
    /// the gateway computed. The gateway delivers the key only for the caller's own listing of
    /// that CID.
    pub async fn deposit_key(&self, key: &[u8; 32], cid: &str) -> Result<Vec<u8>, ClientError> {
        Ok(gw::keys_client::KeysClient::new(self.channel.clone())
            .deposit(gw::DepositKeyRequest {
                key: key.to_vec(),
                cid: cid.to_owned(),
            })
            .await
            .map_err(|s| self.call_err(s))?
            .into_inner()
            .commitment)
    }

    /// The preview of `dataset_id` this gateway's org serves for the caller's on-chain request
    /// (check it with [`crate::preview::check_preview`]).
    pub async fn preview(&self, dataset_id: u64) -> Result<gw::PreviewResponse, ClientError> {
        let mut q = gw::previews_client::PreviewsClient::new(self.channel.clone());
        Ok(q.get(gw::PreviewQuery { dataset_id })
            .await
            .map_err(|s| self.call_err(s))?
            .into_inner())
    }

    /// Installs the model of listing `listing_id` on this gateway with its 32-byte data key (the
    /// key the owner delivered to the caller's purchase, unwrapped): the gateway checks the key
    /// against the listing's commitment, decrypts the ciphertexts already uploaded to it and
    /// checks them against the model card before it keeps the key in its keystore.
    pub async fn install_model(
        &self,
        listing_id: u64,
        key: &[u8; 32],
    ) -> Result<gw::InstallModelResponse, ClientError> {
        Ok(gw::models_client::ModelsClient::new(self.channel.clone())
            .install(gw::InstallModelRequest {
                listing_id,
                key: key.to_vec(),
            })
            .await
            .map_err(|s| self.call_err(s))?
            .into_inner())
    }

    /// Runs an installed model on the batches `batches` yields (the first names the listing;
    /// each is one request message, within the gateway's limits of rows and bytes). Read the
    /// answers, one per batch in order, from the returned stream while sending.
    pub async fn predict(
        &self,
        batches: tokio::sync::mpsc::Receiver<gw::PredictRequest>,
    ) -> Result<Predictions, ClientError> {
        let stream = gw::models_client::ModelsClient::new(self.channel.clone())
            // A batch's answer holds a label and the class probabilities per row.
            .max_decoding_message_size(64 << 20)
            .predict(tokio_stream::wrappers::ReceiverStream::new(batches))
            .await
            .map_err(|s| self.call_err(s))?
            .into_inner();
        Ok(Predictions {
            stream,
            client: self.clone(),
        })
    }

    /// Subscribes to events (see `SubscribeRequest`).
    pub async fn subscribe(
        &self,
        req: gw::SubscribeRequest,
    ) -> Result<tonic::Streaming<gw::EventMessage>, ClientError> {
        Ok(gw::events_client::EventsClient::new(self.channel.clone())
            .subscribe(req)
            .await
            .map_err(|s| self.call_err(s))?
            .into_inner())
    }

    /// Uploads everything `reader` yields; returns the CID the gateway computed, after checking
    /// it against the CID of the bytes sent.
    pub async fn upload<R: AsyncRead + Unpin + Send + 'static>(
        &self,
        mut reader: R,
    ) -> Result<(String, u64), ClientError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<gw::UploadChunk>(4);
        let reading = tokio::spawn(async move {
            let mut hasher = Sha256::new();
            loop {
                let mut buf = vec![0u8; UPLOAD_CHUNK];
                let mut filled = 0;
                while filled < buf.len() {
                    let n = reader.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                buf.truncate(filled);
                hasher.update(&buf);
                if tx
                    .send(gw::UploadChunk {
                        data: buf,
                        expected_cid: String::new(),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok::<_, std::io::Error>(hasher.finish())
        });
        let r = self
            .blobs()
            .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let digest = reading
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?
            .map_err(|source| ClientError::Io {
                path: "upload source".into(),
                source,
            })?;
        let r = r.map_err(|s| self.call_err(s))?.into_inner();
        let expected = Cid::from_digest(digest).to_string();
        if r.cid != expected {
            return Err(ClientError::Proof(format!(
                "gateway stored CID {}, the bytes sent have CID {expected}",
                r.cid
            )));
        }
        Ok((r.cid, r.size))
    }

    /// Downloads blob `cid` into `writer`, checking the bytes against the CID; returns the size.
    pub async fn download<W: AsyncWrite + Unpin>(
        &self,
        cid: &str,
        writer: &mut W,
    ) -> Result<u64, ClientError> {
        let mut stream = self
            .blobs()
            .download(gw::DownloadRequest { cid: cid.into() })
            .await
            .map_err(|s| self.call_err(s))?
            .into_inner();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.message().await.map_err(|s| self.call_err(s))? {
            hasher.update(&chunk.data);
            size += chunk.data.len() as u64;
            writer
                .write_all(&chunk.data)
                .await
                .map_err(|source| ClientError::Io {
                    path: "download sink".into(),
                    source,
                })?;
        }
        writer.flush().await.map_err(|source| ClientError::Io {
            path: "download sink".into(),
            source,
        })?;
        let got = Cid::from_digest(hasher.finish()).to_string();
        if got != cid {
            return Err(ClientError::Proof(format!(
                "downloaded bytes have CID {got}, asked for {cid}"
            )));
        }
        Ok(size)
    }
}

/// The answers of a `Models.Predict` call, one per batch sent, in order.
pub struct Predictions {
    stream: tonic::Streaming<gw::PredictResponse>,
    client: GatewayClient,
}

impl Predictions {
    /// The next batch's answer; `None` once the gateway answered every batch sent. A refusal
    /// (a batch whose rows do not fit the model, a model the caller may not run) ends the call.
    pub async fn next(&mut self) -> Result<Option<gw::PredictResponse>, ClientError> {
        self.stream
            .message()
            .await
            .map_err(|s| self.client.call_err(s))
    }
}

impl ChainAccess for GatewayClient {
    async fn chain_id(&self) -> Result<String, ClientError> {
        Ok(self.status().await?.chain_id)
    }

    async fn latest_height(&self) -> Result<u64, ClientError> {
        Ok(self.status().await?.height)
    }

    async fn read(&self, query: &Query, height: u64, prove: bool) -> Result<Answer, ClientError> {
        let r = self
            .q()
            .read(timed(gw::ReadRequest {
                path: query.path().into(),
                data: query.data(),
                height,
                prove,
            }))
            .await
            .map_err(|s| self.call_err(s))?
            .into_inner();
        Ok(Answer {
            height: r.height,
            key: r.key,
            value: r.value,
            proof: r.proof,
        })
    }

    async fn light_block(&self, height: u64) -> Result<LightBlock, ClientError> {
        let r = self
            .q()
            .light_block(timed(gw::LightBlockRequest { height }))
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable if s.message().contains("not committed yet") => {
                    ClientError::NotYet(s.message().to_owned())
                }
                _ => self.call_err(s),
            })?
            .into_inner();
        LightBlock::from_response(&r)
    }

    async fn broadcast(&self, tx: Vec<u8>) -> Result<Committed, ClientError> {
        Committed::from_response(self.send(tx, gw::BroadcastMode::Commit, 0).await?)
    }
}
