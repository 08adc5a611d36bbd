//! The NeuroData client library: builds and signs transactions with a member certificate, sends
//! them to the chain, and reads state with Merkle proofs checked against light-client-verified
//! block headers.
//!
//! Start with [`Signer`] (a member's certificate and key) and the message builders in [`msg`];
//! reach the chain through a [`ChainAccess`]: [`NodeClient`] (CometBFT RPC) or
//! [`gateway::GatewayClient`] (an org's gRPC gateway over mTLS). [`Submitter`] signs and sends a
//! signer's txs, [`LightClient`] makes verified reads, and the records there are to read are the
//! rows of [`neurodata_abci::query`].

pub use neurodata_crypto::cid;
pub mod access;
pub mod gateway;
mod gateway_errors;
pub mod light;
pub mod node;
pub mod preview;
pub mod submit;

pub use access::{Answer, ChainAccess, Committed, LightBlock};
pub use light::{LightClient, Verified};
pub use neurodata_abci::query;
pub use node::NodeClient;
pub use submit::Submitter;

use std::path::Path;

use neurodata_abci::address::Address;
use neurodata_proto::chain::v1 as pb;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer as OpensslSigner;
use openssl::x509::X509;
use prost::Message as _;
use sha2::{Digest, Sha256};

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
    /// The node answered with an RPC error.
    #[error("the node at {url} answered with an error: {reason}")]
    Rpc {
        /// The RPC address.
        url: String,
        /// What failed, in one line.
        reason: String,
    },
    /// The node did not answer (refused, timed out, unknown host).
    #[error("cannot reach the node at {url} ({reason})")]
    Unreachable {
        /// The RPC address.
        url: String,
        /// Why, in a few words.
        reason: String,
    },
    /// The node has seen these exact tx bytes already (pending or committed).
    #[error(
        "this exact tx was already received (it is pending or committed); a new tx needs the \
         signer's next nonce"
    )]
    AlreadyReceived,
    /// The block asked for is not committed yet.
    #[error("{0}")]
    NotYet(String),
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
    /// A gateway exchange failed in a way no other variant describes (connecting is
    /// [`ClientError::GatewayConnect`]).
    #[error("gateway connection: {0}")]
    Transport(String),
    /// Connecting to the gateway failed: what is wrong and the fix, in one line.
    #[error(transparent)]
    GatewayConnect(#[from] gateway::GatewayConnectError),
    /// Waiting for something took too long.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// An RPC error's message in one line, without the source-location trace its `Display` ends
/// with (nobody calling us needs a path into the cargo registry).
pub fn one_line(e: &tendermint_rpc::Error) -> String {
    let full = e.to_string();
    full.split("\n\nLocation:")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl ClientError {
    /// An RPC failure in one line: the transport's own message ends with a source-location
    /// trace nobody calling us needs.
    pub fn rpc(url: &str, e: tendermint_rpc::Error) -> Self {
        let url = url.to_owned();
        let line = one_line(&e);
        if matches!(e.detail(), tendermint_rpc::error::ErrorDetail::Response(_)) {
            return ClientError::Rpc { url, reason: line };
        }
        let lower = line.to_lowercase();
        let reason = [
            ("connection refused", "connection refused"),
            ("timed out", "timed out"),
            ("dns error", "unknown host"),
            ("connection reset", "connection reset"),
            ("invalid uri", "not a valid URL"),
        ]
        .iter()
        .find(|(needle, _)| lower.contains(needle))
        .map_or(line.clone(), |(_, short)| (*short).to_owned());
        ClientError::Unreachable { url, reason }
    }

    /// Whether the chain refused a tx for its nonce (replayed or skipping ahead).
    pub fn is_stale_nonce(&self) -> bool {
        use neurodata_abci::tx::EnvelopeError::{NonceGap, NonceReplay};
        let codes = [
            NonceReplay {
                expected: 0,
                got: 0,
            }
            .code(),
            NonceGap {
                expected: 0,
                got: 0,
            }
            .code(),
        ];
        matches!(self, ClientError::Rejected { codespace, code, .. }
            if codespace == "tx" && codes.contains(code))
    }
}

/// Signs `messages` as `signer`'s next tx, sends it over `chain` and waits for its block (a
/// one-off [`Submitter`]).
pub async fn submit<C: ChainAccess>(
    chain: &C,
    signer: &Signer,
    fee: Amount,
    messages: Vec<pb::Message>,
) -> Result<Committed, ClientError> {
    Submitter::new(chain, signer, fee).submit(messages).await
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

    /// Renews the signer's own certificate to `new_certificate` (DER): issued by the org's
    /// current CA with the same common name and role, expiring later. Sign it with the current
    /// certificate; from the next tx on, sign with the new one.
    pub fn renew_certificate(new_certificate: Vec<u8>) -> pb::Message {
        wrap(pb::message::Action::RenewCertificate(
            pb::RenewCertificate { new_certificate },
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

    /// A validator's key request of a dataset.
    pub fn request_validation(dataset_id: u64) -> pb::Message {
        wrap(pb::message::Action::RequestValidation(
            pb::RequestValidation {
                dataset_id,
                model_listing_id: 0,
            },
        ))
    }

    /// A validator's key request of a model listing, to attest its ciphertexts.
    pub fn request_model_validation(listing_id: u64) -> pb::Message {
        wrap(pb::message::Action::RequestValidation(
            pb::RequestValidation {
                dataset_id: 0,
                model_listing_id: listing_id,
            },
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

    /// Ask for a preview of a listing (rows drawn from the next block's hash).
    pub fn request_preview(dataset_id: u64) -> pb::Message {
        wrap(pb::message::Action::RequestPreview(pb::RequestPreview {
            dataset_id,
        }))
    }

    /// A validator's findings about a dataset.
    pub fn attest(m: pb::AttestDataset) -> pb::Message {
        wrap(pb::message::Action::AttestDataset(m))
    }

    /// Offer (or, with 0, withdraw) capacity as a training worker.
    pub fn register_worker(capacity: u32, location: &str) -> pb::Message {
        wrap(pb::message::Action::RegisterWorker(pb::RegisterWorker {
            capacity,
            location: location.into(),
        }))
    }

    /// Ask for a training run.
    pub fn submit_job(m: pb::SubmitJob) -> pb::Message {
        wrap(pb::message::Action::SubmitJob(m))
    }

    /// Take an assigned job, locking its stake.
    pub fn accept_job(job_id: u64) -> pb::Message {
        wrap(pb::message::Action::AcceptJob(pb::AcceptJob { job_id }))
    }

    /// Post a job's result.
    pub fn submit_result(m: pb::SubmitResult) -> pb::Message {
        wrap(pb::message::Action::SubmitResult(m))
    }

    /// A validator operator's key requests for a job it attests.
    pub fn request_job_keys(job_id: u64) -> pb::Message {
        wrap(pb::message::Action::RequestJobKeys(pb::RequestJobKeys {
            job_id,
        }))
    }

    /// Withdraw an unaccepted job.
    pub fn cancel_job(job_id: u64) -> pb::Message {
        wrap(pb::message::Action::CancelJob(pb::CancelJob { job_id }))
    }

    /// List a final model version for sale (its owner, or an admin of its org).
    pub fn publish_model(m: pb::PublishModel) -> pb::Message {
        wrap(pb::message::Action::PublishModel(m))
    }

    /// Change a model listing's price.
    pub fn update_model_price(listing_id: u64, price: Amount) -> pb::Message {
        wrap(pb::message::Action::UpdateModelPrice(
            pb::UpdateModelPrice {
                listing_id,
                price: price.to_string(),
            },
        ))
    }

    /// Take a model listing off the market.
    pub fn delist_model(listing_id: u64) -> pb::Message {
        wrap(pb::message::Action::DelistModel(pb::DelistModel {
            listing_id,
        }))
    }

    /// Buy a model listing for at most `max_price`.
    pub fn buy_model(listing_id: u64, max_price: Amount) -> pb::Message {
        wrap(pb::message::Action::BuyModel(pb::BuyModel {
            listing_id,
            max_price: max_price.to_string(),
        }))
    }

    /// Register a dataset's hidden evaluation split (its provider, or an admin of its org).
    pub fn register_eval_split(m: pb::RegisterEvalSplit) -> pb::Message {
        wrap(pb::message::Action::RegisterEvalSplit(m))
    }

    /// A validator operator's findings about a model listing's ciphertexts.
    pub fn attest_model_listing(m: pb::AttestModelListing) -> pb::Message {
        wrap(pb::message::Action::AttestModelListing(m))
    }

    /// Ask validators to score `model_version` on the hidden split of `dataset_id`.
    pub fn request_evaluation(model_version: u64, dataset_id: u64) -> pb::Message {
        wrap(pb::message::Action::RequestEvaluation(
            pb::RequestEvaluation {
                model_version,
                dataset_id,
            },
        ))
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
