//! The NeuroData client library: builds and signs transactions with a member certificate, sends
//! them to a node, and reads state with Merkle proofs it verifies against block headers.
//!
//! Start with [`Signer`] (a member's certificate and key), the message builders in [`msg`], and
//! [`NodeClient`] (CometBFT RPC) or [`gateway::GatewayClient`] (an org's gRPC gateway over mTLS).
//! [`verify_proof`] is the proof check on its own.

pub use neurodata_crypto::cid;
pub mod gateway;

use std::path::Path;
use std::time::Duration;

use neurodata_abci::address::Address;
use neurodata_abci::query::{self, QueryTarget};
use neurodata_proto::chain::v1 as pb;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer as OpensslSigner;
use openssl::x509::X509;
use prost::Message as _;
use sha2::{Digest, Sha256};
use tendermint_rpc::{Client as _, HttpClient};

pub use neurodata_abci::amount::Amount;

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Key or certificate handling failed.
    #[error("crypto: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The node could not be reached or answered with an RPC error.
    #[error("node RPC: {0}")]
    Rpc(#[from] tendermint_rpc::Error),
    /// The node rejected the tx in CheckTx or FinalizeBlock.
    #[error("tx {hash} rejected ({codespace} code {code}): {log}")]
    Rejected {
        /// Tx hash.
        hash: String,
        /// Codespace.
        codespace: String,
        /// Code.
        code: u32,
        /// The app's message.
        log: String,
    },
    /// The query failed on the node.
    #[error("query {path}: {log}")]
    Query {
        /// The path.
        path: String,
        /// The node's message.
        log: String,
    },
    /// The proof is missing or does not verify: the node's answer cannot be trusted.
    #[error("proof verification failed: {0}")]
    Proof(String),
    /// A response did not decode.
    #[error("decode: {0}")]
    Decode(String),
    /// The gateway refused the call (its gRPC status code and message).
    #[error("gateway: {code}: {message}")]
    Gateway {
        /// gRPC status code name.
        code: String,
        /// The gateway's message.
        message: String,
    },
    /// The gateway could not be reached or the TLS setup failed.
    #[error("gateway connection: {0}")]
    Transport(String),
    /// Waiting for something took too long.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// A member's signing identity: certificate and private key.
pub struct Signer {
    cert_der: Vec<u8>,
    key: PKey<Private>,
    address: Address,
}

impl Signer {
    /// From a certificate and key in PEM.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, ClientError> {
        let cert = X509::from_pem(cert_pem)?;
        let key = PKey::private_key_from_pem(key_pem)?;
        Self::new(&cert, key)
    }

    /// From parsed parts.
    pub fn new(cert: &X509, key: PKey<Private>) -> Result<Self, ClientError> {
        let cert_der = cert.to_der()?;
        let address = Address(Sha256::digest(&cert_der).into());
        Ok(Signer {
            cert_der,
            key,
            address,
        })
    }

    /// Loads `<dir>/<name>.pem` and `<dir>/<name>.key`.
    pub fn load(dir: &Path, name: &str) -> Result<Self, ClientError> {
        let read = |p: std::path::PathBuf| {
            std::fs::read(&p).map_err(|source| ClientError::Io {
                path: p.display().to_string(),
                source,
            })
        };
        Self::from_pem(
            &read(dir.join(format!("{name}.pem")))?,
            &read(dir.join(format!("{name}.key")))?,
        )
    }

    /// The signer id and account address (SHA-256 of the certificate).
    pub fn address(&self) -> Address {
        self.address
    }

    /// The DER certificate.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Builds and signs a tx. `attach_certificate` must be true on the signer's first tx.
    pub fn sign(&self, body: TxParams, messages: Vec<pb::Message>) -> Result<Vec<u8>, ClientError> {
        let body = pb::TxBody {
            chain_id: body.chain_id,
            signer: self.address.0.to_vec(),
            nonce: body.nonce,
            fee: body.fee.to_string(),
            certificate: if body.attach_certificate {
                self.cert_der.clone()
            } else {
                vec![]
            },
            memo: body.memo,
            messages,
        };
        self.sign_bytes(body.encode_to_vec())
    }
}

/// The envelope fields of a tx to sign.
#[derive(Clone, Debug)]
pub struct TxParams {
    /// Chain id.
    pub chain_id: String,
    /// The signer's next nonce.
    pub nonce: u64,
    /// Fee.
    pub fee: Amount,
    /// Attach the certificate (first tx of a signer).
    pub attach_certificate: bool,
    /// Memo.
    pub memo: String,
}

/// Builders for every message.
pub mod msg {
    use super::*;

    fn wrap(action: pb::message::Action) -> pb::Message {
        pb::Message {
            action: Some(action),
        }
    }

    /// Transfer `amount` to `to`.
    pub fn transfer(to: Address, amount: Amount) -> pb::Message {
        wrap(pb::message::Action::Transfer(pb::Transfer {
            to: to.0.to_vec(),
            amount: amount.to_string(),
        }))
    }

    /// Revoke a certificate of the signer's org.
    pub fn revoke(fingerprint: Address, certificate: Option<Vec<u8>>, reason: &str) -> pb::Message {
        wrap(pb::message::Action::RevokeCertificate(
            pb::RevokeCertificate {
                fingerprint: fingerprint.0.to_vec(),
                certificate: certificate.unwrap_or_default(),
                reason: reason.into(),
            },
        ))
    }

    /// Move an identity of the signer's org to a successor of the same org.
    pub fn move_identity(
        from: Address,
        to: Address,
        to_certificate: Option<Vec<u8>>,
        reason: &str,
    ) -> pb::Message {
        wrap(pb::message::Action::MoveIdentity(pb::MoveIdentity {
            from: from.0.to_vec(),
            to: to.0.to_vec(),
            to_certificate: to_certificate.unwrap_or_default(),
            reason: reason.into(),
            from_certificate: vec![],
        }))
    }

    /// Open a proposal.
    pub fn propose(title: &str, action: pb::proposal_action::Action) -> pb::Message {
        wrap(pb::message::Action::SubmitProposal(pb::SubmitProposal {
            title: title.into(),
            action: Some(pb::ProposalAction {
                action: Some(action),
            }),
        }))
    }

    /// Vote on a proposal.
    pub fn vote(proposal_id: u64, approve: bool) -> pb::Message {
        wrap(pb::message::Action::Vote(pb::Vote {
            proposal_id,
            approve,
        }))
    }

    /// List an encrypted dataset.
    pub fn register_dataset(m: pb::RegisterDataset) -> pb::Message {
        wrap(pb::message::Action::RegisterDataset(m))
    }

    /// Change a dataset's price.
    pub fn update_price(dataset_id: u64, price: Amount) -> pb::Message {
        wrap(pb::message::Action::UpdateDatasetPrice(
            pb::UpdateDatasetPrice {
                dataset_id,
                price: price.to_string(),
            },
        ))
    }

    /// Delist a dataset.
    pub fn delist(dataset_id: u64) -> pb::Message {
        wrap(pb::message::Action::DelistDataset(pb::DelistDataset {
            dataset_id,
        }))
    }

    /// Buy a dataset for at most `max_price`.
    pub fn buy(dataset_id: u64, max_price: Amount) -> pb::Message {
        wrap(pb::message::Action::BuyDataset(pb::BuyDataset {
            dataset_id,
            max_price: max_price.to_string(),
        }))
    }

    /// A validator's key request.
    pub fn request_validation(dataset_id: u64) -> pb::Message {
        wrap(pb::message::Action::RequestValidation(
            pb::RequestValidation { dataset_id },
        ))
    }

    /// Deliver a data key wrapped to `recipient` (the purchase's buyer).
    pub fn deliver_key(purchase_id: u64, recipient: Address, wrapped_key: Vec<u8>) -> pb::Message {
        wrap(pb::message::Action::DeliverKey(pb::DeliverKey {
            purchase_id,
            wrapped_key,
            recipient: recipient.0.to_vec(),
        }))
    }

    /// Confirm a purchase.
    pub fn confirm(purchase_id: u64) -> pb::Message {
        wrap(pb::message::Action::ConfirmAccess(pb::ConfirmAccess {
            purchase_id,
        }))
    }

    /// Take a refund after the delivery window.
    pub fn refund(purchase_id: u64) -> pb::Message {
        wrap(pb::message::Action::RefundPurchase(pb::RefundPurchase {
            purchase_id,
        }))
    }

    /// Prove the delivered key wrong.
    pub fn dispute(purchase_id: u64, shared_secret_proof: Vec<u8>) -> pb::Message {
        wrap(pb::message::Action::DisputeKey(pb::DisputeKey {
            purchase_id,
            shared_secret_proof,
        }))
    }

    /// A validator's findings about a dataset.
    pub fn attest(m: pb::AttestDataset) -> pb::Message {
        wrap(pb::message::Action::AttestDataset(m))
    }
}

/// The state key a provable query for `path`/`data` reads (recomputed by the client, so a proof
/// for another key is refused); list queries carry no proof.
pub(crate) fn proved_key(path: &str, data: &[u8]) -> Result<String, ClientError> {
    let query_error = |log: String| ClientError::Query {
        path: path.into(),
        log,
    };
    match query::target(path, data).map_err(|e| query_error(e.to_string()))? {
        QueryTarget::Key(key) => Ok(key),
        _ => Err(query_error("list queries carry no proof".into())),
    }
}

/// Checks a borsh `SparseMerkleProof<Sha256>` for `key` → `value` (None: absent) against `root`.
pub fn verify_proof(
    key: &str,
    value: Option<&[u8]>,
    proof: &[u8],
    root: [u8; 32],
) -> Result<(), ClientError> {
    let proof: jmt::proof::SparseMerkleProof<Sha256> = borsh::from_slice(proof)
        .map_err(|e| ClientError::Proof(format!("proof does not decode: {e}")))?;
    proof
        .verify(
            jmt::RootHash(root),
            jmt::KeyHash::with::<Sha256>(key.as_bytes()),
            value,
        )
        .map_err(|e| ClientError::Proof(e.to_string()))
}

/// An account record as stored (absent or empty: a zero balance and nonce 0).
pub fn decode_account(address: Address, value: Option<&[u8]>) -> Result<pb::Account, ClientError> {
    match value {
        None | Some([]) => Ok(pb::Account {
            address: address.0.to_vec(),
            balance: "0".into(),
            nonce: 0,
        }),
        Some(b) => pb::Account::decode(b).map_err(|e| ClientError::Decode(e.to_string())),
    }
}

/// A state value read with a verified proof.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The state key.
    pub key: String,
    /// The value (None: proven absent).
    pub value: Option<Vec<u8>>,
    /// Height of the state.
    pub height: u64,
    /// App hash (from header `height + 1`) the proof was checked against.
    pub app_hash: [u8; 32],
}

/// A CometBFT RPC client speaking NeuroData.
pub struct NodeClient {
    rpc: HttpClient,
}

impl NodeClient {
    /// Connects to a CometBFT RPC address such as `http://127.0.0.1:26657`.
    pub fn new(url: &str) -> Result<Self, ClientError> {
        Ok(NodeClient {
            rpc: HttpClient::new(url)?,
        })
    }

    /// The chain id and latest height.
    pub async fn status(&self) -> Result<(String, u64), ClientError> {
        let s = self.rpc.status().await?;
        Ok((
            s.node_info.network.to_string(),
            s.sync_info.latest_block_height.value(),
        ))
    }

    /// Broadcasts and waits until the tx is in a block; returns its height and hash, or the
    /// rejection from CheckTx or FinalizeBlock.
    pub async fn broadcast_commit(&self, tx: Vec<u8>) -> Result<(u64, String), ClientError> {
        let r = self.rpc.broadcast_tx_commit(tx).await?;
        let hash = r.hash.to_string();
        if r.check_tx.code.is_err() {
            return Err(ClientError::Rejected {
                hash,
                codespace: r.check_tx.codespace,
                code: r.check_tx.code.value(),
                log: r.check_tx.log,
            });
        }
        if r.tx_result.code.is_err() {
            return Err(ClientError::Rejected {
                hash,
                codespace: r.tx_result.codespace,
                code: r.tx_result.code.value(),
                log: r.tx_result.log,
            });
        }
        Ok((r.height.value(), hash))
    }

    /// Broadcasts and returns after CheckTx.
    pub async fn broadcast_sync(&self, tx: Vec<u8>) -> Result<String, ClientError> {
        let r = self.rpc.broadcast_tx_sync(tx).await?;
        let hash = r.hash.to_string();
        if r.code.is_err() {
            return Err(ClientError::Rejected {
                hash,
                codespace: r.codespace,
                code: r.code.value(),
                log: r.log,
            });
        }
        Ok(hash)
    }

    /// A raw query without proof (lists, or when trust in the node is enough).
    pub async fn query_raw(
        &self,
        path: &str,
        data: Vec<u8>,
    ) -> Result<(Vec<u8>, u64), ClientError> {
        let r = self
            .rpc
            .abci_query(Some(path.to_owned()), data, None, false)
            .await?;
        if r.code.is_err() {
            return Err(ClientError::Query {
                path: path.into(),
                log: r.log,
            });
        }
        Ok((r.value, r.height.value()))
    }

    /// A single-key query whose answer is checked with its Merkle proof against the app hash in
    /// the header of the next block (waiting for it, at most `wait`).
    pub async fn query_verified(
        &self,
        path: &str,
        data: Vec<u8>,
        wait: Duration,
    ) -> Result<Verified, ClientError> {
        let expected_key = proved_key(path, &data)?;
        let r = self
            .rpc
            .abci_query(Some(path.to_owned()), data, None, true)
            .await?;
        if r.code.is_err() {
            return Err(ClientError::Query {
                path: path.into(),
                log: r.log,
            });
        }
        let key =
            String::from_utf8(r.key.clone()).map_err(|e| ClientError::Decode(e.to_string()))?;
        if key != expected_key {
            return Err(ClientError::Proof(format!(
                "node answered for key {key}, asked {expected_key}"
            )));
        }
        let op = r
            .proof
            .as_ref()
            .and_then(|p| p.ops.first())
            .filter(|op| op.field_type == query::PROOF_TYPE)
            .ok_or_else(|| ClientError::Proof("no jmt proof in the answer".into()))?;
        let height = r.height.value();
        let app_hash = self.app_hash_after(height, wait).await?;
        let value = (!r.value.is_empty()).then_some(r.value);
        verify_proof(&key, value.as_deref(), &op.data, app_hash)?;
        Ok(Verified {
            key,
            value,
            height,
            app_hash,
        })
    }

    /// The app hash of the state after `height`: the one in the header of block `height + 1`.
    pub async fn app_hash_after(
        &self,
        height: u64,
        wait: Duration,
    ) -> Result<[u8; 32], ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        let next = tendermint::block::Height::try_from(height + 1)
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        loop {
            match self.rpc.header(next).await {
                Ok(h) => {
                    return h
                        .header
                        .app_hash
                        .as_bytes()
                        .try_into()
                        .map_err(|_| ClientError::Proof("app hash is not 32 bytes".into()));
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(ClientError::Timeout(format!("header {next}: {e}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The account of `address` (balance and next nonce), verified.
    pub async fn account(&self, address: Address) -> Result<pb::Account, ClientError> {
        let v = self
            .query_verified("/account", address.0.to_vec(), Duration::from_secs(20))
            .await?;
        decode_account(address, v.value.as_deref())
    }

    /// Whether the chain already knows this signer's certificate.
    pub async fn identity_known(&self, address: Address) -> Result<bool, ClientError> {
        let (value, _) = self.query_raw("/identity", address.0.to_vec()).await?;
        Ok(!value.is_empty())
    }

    /// Signs `messages` with the signer's next nonce (and its certificate if the chain has not
    /// seen it), broadcasts, and waits for the block.
    pub async fn submit(
        &self,
        signer: &Signer,
        fee: Amount,
        messages: Vec<pb::Message>,
    ) -> Result<(u64, String), ClientError> {
        let (chain_id, _) = self.status().await?;
        let (account, _) = self
            .query_raw("/account", signer.address().0.to_vec())
            .await?;
        let nonce = decode_account(signer.address(), Some(account.as_slice()))?.nonce;
        let attach_certificate = !self.identity_known(signer.address()).await?;
        let tx = signer.sign(
            TxParams {
                chain_id,
                nonce,
                fee,
                attach_certificate,
                memo: String::new(),
            },
            messages,
        )?;
        self.broadcast_commit(tx).await
    }
}

impl Signer {
    /// Signs arbitrary body bytes into a `Tx` envelope. For tools and tests that build a body by
    /// hand; [`Signer::sign`] is the normal path.
    pub fn sign_bytes(&self, body_bytes: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let mut signer = OpensslSigner::new(MessageDigest::sha256(), &self.key)?;
        let signature = low_s(&signer.sign_oneshot_to_vec(&body_bytes)?)?;
        Ok(pb::Tx {
            body: body_bytes,
            signature,
        }
        .encode_to_vec())
    }
}

/// The low-S form of a DER ECDSA P-256 signature: OpenSSL returns either of (r, s) and (r, n−s),
/// and the chain accepts only the one with s <= n/2, so every tx has one byte form.
pub fn low_s(der: &[u8]) -> Result<Vec<u8>, ClientError> {
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::EcGroup;
    use openssl::ecdsa::EcdsaSig;
    use openssl::nid::Nid;
    let sig = EcdsaSig::from_der(der)?;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let mut ctx = BigNumContext::new()?;
    let mut order = BigNum::new()?;
    group.order(&mut order, &mut ctx)?;
    let mut half = BigNum::new()?;
    half.rshift1(&order)?;
    if sig.s() <= &*half {
        return Ok(sig.to_der()?);
    }
    let mut s = BigNum::new()?;
    s.checked_sub(&order, sig.s())?;
    let r = sig.r().to_owned()?;
    Ok(EcdsaSig::from_private_components(r, s)?.to_der()?)
}
