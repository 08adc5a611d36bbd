//! A client of an org's gRPC gateway: mTLS with the member's certificate, tx submission, queries
//! whose Merkle proofs are checked here against the app hash of the next block's header, event
//! subscriptions, and blob upload/download that check the CID on the client side too.

use std::path::Path;

use neurodata_abci::address::Address;
use neurodata_proto::chain::v1 as pb;
use neurodata_proto::gateway::v1 as gw;
use openssl::sha::Sha256;
use tendermint_proto::Protobuf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::cid::Cid;
use crate::{Amount, ClientError, Signer, TxParams, Verified, verify_proof};

/// Bytes per upload message.
pub const UPLOAD_CHUNK: usize = 1 << 20;

/// What a proved query reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryKind {
    /// An account by address.
    Account(Vec<u8>),
    /// A registered identity by certificate fingerprint.
    Identity(Vec<u8>),
    /// A revocation record by certificate fingerprint.
    Revocation(Vec<u8>),
    /// An org by id.
    Org(String),
    /// A proposal by id.
    Proposal(u64),
    /// Chain parameters.
    Params,
    /// Total NRC supply.
    Supply,
    /// A dataset listing by id.
    Dataset(u64),
    /// A dataset's usage statistics.
    DatasetStats(u64),
    /// A purchase by id.
    Purchase(u64),
}

impl QueryKind {
    /// The ABCI query path and data the chain reads for it (to recompute the proved key).
    pub fn path_and_data(&self) -> (&'static str, Vec<u8>) {
        match self {
            QueryKind::Account(a) => ("/account", a.clone()),
            QueryKind::Identity(a) => ("/identity", a.clone()),
            QueryKind::Revocation(a) => ("/revocation", a.clone()),
            QueryKind::Org(o) => ("/org", o.as_bytes().to_vec()),
            QueryKind::Proposal(id) => ("/proposal", id.to_be_bytes().to_vec()),
            QueryKind::Params => ("/params", vec![]),
            QueryKind::Supply => ("/supply", vec![]),
            QueryKind::Dataset(id) => ("/dataset", id.to_be_bytes().to_vec()),
            QueryKind::DatasetStats(id) => ("/dataset_stats", id.to_be_bytes().to_vec()),
            QueryKind::Purchase(id) => ("/purchase", id.to_be_bytes().to_vec()),
        }
    }
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
    /// Reads the CA, certificate and key files.
    pub fn from_files(server_ca: &Path, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| ClientError::Io {
                path: p.display().to_string(),
                source,
            })
        };
        Ok(GatewayTls {
            server_ca_pem: read(server_ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            domain: None,
        })
    }
}

/// A connected gateway client.
#[derive(Clone)]
pub struct GatewayClient {
    channel: Channel,
}

fn status_err(s: tonic::Status) -> ClientError {
    ClientError::Gateway {
        code: format!("{:?}", s.code()),
        message: s.message().to_owned(),
    }
}

impl GatewayClient {
    /// Connects to `url` (`https://host:port` with `tls`, `http://` only for a dev gateway).
    pub async fn connect(url: &str, tls: Option<GatewayTls>) -> Result<Self, ClientError> {
        let bad = |e: tonic::transport::Error| ClientError::Transport(format!("{url}: {e}"));
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(bad)?
            .connect_timeout(std::time::Duration::from_secs(10))
            .tcp_nodelay(true);
        if let Some(t) = tls {
            let mut cfg = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&t.server_ca_pem))
                .identity(Identity::from_pem(&t.cert_pem, &t.key_pem));
            if let Some(d) = t.domain {
                cfg = cfg.domain_name(d);
            }
            endpoint = endpoint.tls_config(cfg).map_err(bad)?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            ClientError::Transport(format!(
                "{url}: {e}{}",
                std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default()
            ))
        })?;
        Ok(GatewayClient { channel })
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
            .get(gw::StatusRequest {})
            .await
            .map_err(status_err)?
            .into_inner())
    }

    /// Broadcasts a signed tx; a tx the chain refuses is [`ClientError::Rejected`].
    pub async fn broadcast(
        &self,
        tx: Vec<u8>,
        mode: gw::BroadcastMode,
        timeout_ms: u32,
    ) -> Result<gw::BroadcastResponse, ClientError> {
        let r = self
            .tx()
            .broadcast(gw::BroadcastRequest {
                tx,
                mode: mode as i32,
                timeout_ms,
            })
            .await
            .map_err(status_err)?
            .into_inner();
        if r.code != 0 {
            return Err(ClientError::Rejected {
                hash: r.tx_hash,
                codespace: r.codespace,
                code: r.code,
                log: r.log,
            });
        }
        Ok(r)
    }

    /// Signs `messages` with the signer's next nonce (attaching its certificate if the chain has
    /// not seen it yet) and waits for the block; returns height and tx hash.
    pub async fn submit(
        &self,
        signer: &Signer,
        fee: Amount,
        messages: Vec<pb::Message>,
    ) -> Result<(u64, String), ClientError> {
        let r = self.submit_for_events(signer, fee, messages).await?;
        Ok((r.height, r.tx_hash))
    }

    /// As [`GatewayClient::submit`], returning the whole result with the tx's events (a refused
    /// tx is an error).
    pub async fn submit_for_events(
        &self,
        signer: &Signer,
        fee: Amount,
        messages: Vec<pb::Message>,
    ) -> Result<gw::BroadcastResponse, ClientError> {
        let chain_id = self.status().await?.chain_id;
        let addr = signer.address().0.to_vec();
        let account = self.raw(QueryKind::Account(addr.clone())).await?;
        let nonce = crate::decode_account(signer.address(), Some(account.value.as_slice()))?.nonce;
        let known = !self.raw(QueryKind::Identity(addr)).await?.value.is_empty();
        let tx = signer.sign(
            TxParams {
                chain_id,
                nonce,
                fee,
                attach_certificate: !known,
                memo: String::new(),
            },
            messages,
        )?;
        self.broadcast(tx, gw::BroadcastMode::Commit, 0).await
    }

    async fn call(
        &self,
        kind: QueryKind,
        height: u64,
        prove: bool,
    ) -> Result<gw::QueryResponse, ClientError> {
        let mut q = self.q();
        let r = match kind {
            QueryKind::Account(a) => {
                q.account(gw::AddressQuery {
                    address: a,
                    height,
                    prove,
                })
                .await
            }
            QueryKind::Identity(a) => {
                q.identity(gw::AddressQuery {
                    address: a,
                    height,
                    prove,
                })
                .await
            }
            QueryKind::Revocation(a) => {
                q.revocation(gw::AddressQuery {
                    address: a,
                    height,
                    prove,
                })
                .await
            }
            QueryKind::Org(org_id) => {
                q.org(gw::OrgQuery {
                    org_id,
                    height,
                    prove,
                })
                .await
            }
            QueryKind::Proposal(proposal_id) => {
                q.proposal(gw::ProposalQuery {
                    proposal_id,
                    height,
                    prove,
                })
                .await
            }
            QueryKind::Params => q.params(gw::StateQuery { height, prove }).await,
            QueryKind::Supply => q.supply(gw::StateQuery { height, prove }).await,
            QueryKind::Dataset(id) => q.dataset(gw::IdQuery { id, height, prove }).await,
            QueryKind::DatasetStats(id) => q.dataset_stats(gw::IdQuery { id, height, prove }).await,
            QueryKind::Purchase(id) => q.purchase(gw::IdQuery { id, height, prove }).await,
        };
        Ok(r.map_err(status_err)?.into_inner())
    }

    /// A state read without proof (latest height).
    pub async fn raw(&self, kind: QueryKind) -> Result<gw::QueryResponse, ClientError> {
        self.call(kind, 0, false).await
    }

    /// A state read at `height` (0: latest) whose proof is checked against the app hash in the
    /// header of block `height + 1`, which the gateway returns with it.
    pub async fn query_verified(
        &self,
        kind: QueryKind,
        height: u64,
    ) -> Result<Verified, ClientError> {
        let (path, data) = kind.path_and_data();
        let r = self.call(kind, height, true).await?;
        verify_response(path, &data, &r)
    }

    /// The account of `address`, verified.
    pub async fn account(&self, address: Address) -> Result<pb::Account, ClientError> {
        let v = self
            .query_verified(QueryKind::Account(address.0.to_vec()), 0)
            .await?;
        crate::decode_account(address, v.value.as_deref())
    }

    /// A list (`/orgs`, `/validators`, `/proposals`) at the latest height.
    pub async fn list(&self, path: &str) -> Result<(Vec<u8>, u64), ClientError> {
        let mut q = self.q();
        let r = match path {
            "/orgs" => q.orgs(gw::ListQuery {}).await,
            "/validators" => q.validators(gw::ListQuery {}).await,
            "/proposals" => q.proposals(gw::ListQuery {}).await,
            other => {
                return Err(ClientError::Query {
                    path: other.into(),
                    log: "not a list".into(),
                });
            }
        }
        .map_err(status_err)?
        .into_inner();
        Ok((r.value, r.height))
    }

    /// Listings passing `filter`, at the latest height.
    pub async fn datasets(
        &self,
        filter: pb::DatasetFilter,
    ) -> Result<Vec<pb::Dataset>, ClientError> {
        let r = self
            .q()
            .datasets(gw::DatasetsQuery {
                filter: Some(filter),
            })
            .await
            .map_err(status_err)?
            .into_inner();
        Ok(decode_list::<pb::DatasetList>("/datasets", &r.value)?.datasets)
    }

    /// Purchases passing `filter`, at the latest height.
    pub async fn purchases(
        &self,
        filter: pb::PurchaseFilter,
    ) -> Result<Vec<pb::Purchase>, ClientError> {
        let r = self
            .q()
            .purchases(gw::PurchasesQuery {
                filter: Some(filter),
            })
            .await
            .map_err(status_err)?
            .into_inner();
        Ok(decode_list::<pb::PurchaseList>("/purchases", &r.value)?.purchases)
    }

    /// A record read through `kind` and checked against the app hash; None if absent.
    pub async fn record<M: prost::Message + Default>(
        &self,
        kind: QueryKind,
    ) -> Result<Option<M>, ClientError> {
        let (path, _) = kind.path_and_data();
        let v = self.query_verified(kind, 0).await?;
        v.value.map(|b| decode_list::<M>(path, &b)).transpose()
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
            .map_err(status_err)?
            .into_inner()
            .commitment)
    }

    /// Subscribes to events (see `SubscribeRequest`).
    pub async fn subscribe(
        &self,
        req: gw::SubscribeRequest,
    ) -> Result<tonic::Streaming<gw::EventMessage>, ClientError> {
        Ok(gw::events_client::EventsClient::new(self.channel.clone())
            .subscribe(req)
            .await
            .map_err(status_err)?
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
        let r = r.map_err(status_err)?.into_inner();
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
            .map_err(status_err)?
            .into_inner();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.message().await.map_err(status_err)? {
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

fn decode_list<M: prost::Message + Default>(path: &str, bytes: &[u8]) -> Result<M, ClientError> {
    M::decode(bytes).map_err(|e| ClientError::Query {
        path: path.into(),
        log: format!("answer does not decode: {e}"),
    })
}

/// Checks a proved gateway answer for `path`/`data`: the key is the one asked for, the header is
/// block `height + 1`, and the proof verifies against that header's app hash.
pub fn verify_response(
    path: &str,
    data: &[u8],
    r: &gw::QueryResponse,
) -> Result<Verified, ClientError> {
    let expected_key = crate::proved_key(path, data)?;
    if r.key != expected_key {
        return Err(ClientError::Proof(format!(
            "gateway answered for key {}, asked {expected_key}",
            r.key
        )));
    }
    let header =
        <tendermint::block::Header as Protobuf<tendermint_proto::types::Header>>::decode_vec(
            &r.next_header,
        )
        .map_err(|e| ClientError::Proof(format!("next block header does not decode: {e}")))?;
    if header.height.value() != r.height + 1 {
        return Err(ClientError::Proof(format!(
            "header is for height {}, the state is at {}",
            header.height, r.height
        )));
    }
    let app_hash: [u8; 32] = header
        .app_hash
        .as_bytes()
        .try_into()
        .map_err(|_| ClientError::Proof("app hash is not 32 bytes".into()))?;
    let value = (!r.value.is_empty()).then(|| r.value.clone());
    verify_proof(&expected_key, value.as_deref(), &r.proof, app_hash)?;
    Ok(Verified {
        key: expected_key,
        value,
        height: r.height,
        app_hash,
    })
}
