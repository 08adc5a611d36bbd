//! The transaction envelope: decoding, the stateless checks, and the [`Action`] dispatch.
//!
//! Bytes → [`Tx::decode`] (size, protobuf, canonical body, chain id, fee, every message converted
//! into its checked domain type) → [`crate::app`] runs the stateful phases.

use neurodata_proto::chain::v1 as pb;
use prost::Message as _;

use crate::TxError;
use crate::address::Address;
use crate::amount::Amount;
use crate::escrow::{
    BuyDataset, ConfirmAccess, DeliverKey, DisputeKey, RefundPurchase, RequestValidation,
};
use crate::governance::{SubmitProposal, Vote};
use crate::ledger::Transfer;
use crate::market::{
    AttestDataset, DelistDataset, RegisterDataset, RegisterEvalSplit, RequestPreview,
    UpdateDatasetPrice,
};
use crate::membership::certificate::sha256;
use crate::membership::{MoveIdentity, RenewCertificate, RevokeCertificate, Role, Signer};
use crate::models::{
    AttestModelListing, BuyModel, DelistModel, PublishModel, RequestEvaluation, UpdateModelPrice,
};
use crate::state::StateWrite;
use crate::training::{
    AcceptJob, CancelJob, RegisterWorker, RequestJobKeys, SubmitJob, SubmitResult,
};

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Larger than the `max_tx_bytes` parameter.
    #[error("tx is {size} bytes; the limit is {max}")]
    Oversize {
        /// Size of the tx.
        size: usize,
        /// Limit.
        max: u64,
    },
    /// Not a protobuf `Tx`/`TxBody`.
    #[error("malformed tx: {0}")]
    Malformed(String),
    /// The body bytes are not the canonical encoding of the body they decode to.
    #[error("tx body is not canonically encoded (re-encode it with a protobuf library)")]
    NonCanonicalBody,
    /// A message with no known action (an unknown field or a newer message type).
    #[error("message {index} is of an unknown type")]
    UnknownMessage {
        /// Position in the tx.
        index: usize,
    },
    /// No messages, or more than `max_messages_per_tx`.
    #[error("tx has {count} messages; allowed 1..={max}")]
    MessageCount {
        /// Messages in the tx.
        count: usize,
        /// Limit.
        max: u32,
    },
    /// The body names another chain.
    #[error("tx is for chain {got:?}, this is {expected:?}")]
    WrongChainId {
        /// This chain.
        expected: String,
        /// The tx's chain id.
        got: String,
    },
    /// The signature does not verify with the signer's certificate key.
    #[error("signature does not verify for signer {0}")]
    BadSignature(String),
    /// The nonce was already used.
    #[error("nonce {got} already used: the signer's next nonce is {expected}")]
    NonceReplay {
        /// Next nonce.
        expected: u64,
        /// Nonce in the tx.
        got: u64,
    },
    /// The nonce skips ahead.
    #[error("nonce {got} skips ahead: the signer's next nonce is {expected}")]
    NonceGap {
        /// Next nonce.
        expected: u64,
        /// Nonce in the tx.
        got: u64,
    },
    /// The fee is under `min_fee`.
    #[error("fee {fee} is below the minimum {min}")]
    FeeTooLow {
        /// The tx's fee.
        fee: Amount,
        /// Minimum.
        min: Amount,
    },
    /// The `Tx` envelope is not the canonical encoding of its two fields (reordered, repeated
    /// or unknown fields, non-minimal lengths).
    #[error(
        "tx envelope is not canonically encoded (encode Tx {{ body, signature }} with a protobuf library)"
    )]
    NonCanonicalEnvelope,
    /// The signature is not exactly one minimal DER `ECDSA-Sig-Value`.
    #[error("signature is not exact DER (one minimal SEQUENCE of two INTEGERs, nothing after it)")]
    NonCanonicalSignature,
    /// The signature's `s` is above half the group order.
    #[error(
        "signature has a high S value; sign with low S (s <= n/2), as the NeuroData client does"
    )]
    HighS,
    /// A field failed its check.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Field path, e.g. `transfer.amount`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl EnvelopeError {
    /// Stable code (1..20).
    pub fn code(&self) -> u32 {
        match self {
            EnvelopeError::Oversize { .. } => 1,
            EnvelopeError::Malformed(_) => 2,
            EnvelopeError::NonCanonicalBody => 3,
            EnvelopeError::UnknownMessage { .. } => 4,
            EnvelopeError::MessageCount { .. } => 5,
            EnvelopeError::WrongChainId { .. } => 6,
            EnvelopeError::BadSignature(_) => 7,
            EnvelopeError::NonceReplay { .. } => 8,
            EnvelopeError::NonceGap { .. } => 9,
            EnvelopeError::FeeTooLow { .. } => 10,
            EnvelopeError::InvalidField { .. } => 11,
            EnvelopeError::NonCanonicalEnvelope => 12,
            EnvelopeError::NonCanonicalSignature => 13,
            EnvelopeError::HighS => 14,
        }
    }
}

/// An `InvalidField` error.
pub fn invalid(field: &'static str, reason: impl std::fmt::Display) -> TxError {
    EnvelopeError::InvalidField {
        field,
        reason: reason.to_string(),
    }
    .into()
}

/// An amount field of a message, as decimal text.
pub fn amount_field(field: &'static str, s: &str) -> Result<crate::amount::Amount, TxError> {
    s.parse()
        .map_err(|e: crate::amount::AmountError| invalid(field, e))
}

/// The message table: every message the chain accepts, with its checked domain type (converted
/// from the protobuf with `TryFrom`, executed with `check_and_execute`) and the roles that may
/// send it (what the membership rule checks). A new message is its protobuf in the
/// `Message.action` oneof, its domain type in its module, and one row here; the enum, its
/// decoding, its dispatch and its roles all come from the row.
macro_rules! actions {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty), roles: $roles:expr; )*) => {
        /// Every message type's name and the roles that may send it, in table order: the rows
        /// without their domain types, for what enumerates messages without a value of each (the
        /// authorization matrix, `docs/authz-matrix.md`).
        pub const MESSAGES: &[(&str, &[Role])] = &[ $( (stringify!($variant), $roles), )* ];

        /// One checked message.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Action {
            $( $(#[$doc])* $variant(Box<$ty>), )*
        }

        impl Action {
            /// Message type name, for errors and events.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Action::$variant(_) => stringify!($variant), )*
                }
            }

            /// Roles that may send this message.
            pub fn roles(&self) -> &'static [Role] {
                match self {
                    $( Action::$variant(_) => $roles, )*
                }
            }

            fn from_pb(index: usize, m: pb::Message) -> Result<Self, TxError> {
                use pb::message::Action as A;
                match m.action {
                    None => Err(EnvelopeError::UnknownMessage { index }.into()),
                    $( Some(A::$variant(m)) => Ok(Action::$variant(Box::new(<$ty>::try_from(m)?))), )*
                }
            }

            /// Checks the message against the state and executes it.
            pub fn execute<S: StateWrite>(
                &self,
                state: &mut S,
                signer: &Signer,
                ctx: &ExecCtx,
            ) -> Result<(), TxError> {
                match self {
                    $( Action::$variant(a) => a.check_and_execute(state, signer, ctx), )*
                }
            }
        }
    };
}

actions! {
    /// Ledger: move NRC (any member).
    Transfer(Transfer), roles: &Role::ALL;
    /// Membership: revoke a certificate.
    RevokeCertificate(RevokeCertificate), roles: &[Role::Admin];
    /// Governance: open a proposal.
    SubmitProposal(SubmitProposal), roles: &[Role::Admin];
    /// Governance: vote.
    Vote(Vote), roles: &[Role::Admin];
    /// Market: list a dataset.
    RegisterDataset(RegisterDataset), roles: &[Role::Provider];
    /// Market: change a price (the provider itself or an admin of its org, checked against the
    /// dataset).
    UpdateDatasetPrice(UpdateDatasetPrice), roles: &[Role::Provider, Role::Admin];
    /// Market: delist (same senders as a price change).
    DelistDataset(DelistDataset), roles: &[Role::Provider, Role::Admin];
    /// Escrow: buy.
    BuyDataset(BuyDataset), roles: &[Role::Buyer, Role::Trainer];
    /// Escrow: a validator's key request (of a dataset or a model listing).
    RequestValidation(RequestValidation), roles: &[Role::Validator];
    /// Escrow: deliver the wrapped key (a provider or admin of the dataset's org).
    DeliverKey(DeliverKey), roles: &[Role::Provider, Role::Admin];
    /// Escrow: confirm (the purchase's own buyer, checked against the purchase).
    ConfirmAccess(ConfirmAccess), roles: &Role::ALL;
    /// Escrow: refund after the delivery window (the buyer or an admin of its org).
    RefundPurchase(RefundPurchase), roles: &Role::ALL;
    /// Escrow: prove a wrong key (the buyer or an admin of its org).
    DisputeKey(DisputeKey), roles: &Role::ALL;
    /// Market: a validator's findings.
    AttestDataset(AttestDataset), roles: &[Role::Validator];
    /// Membership: move an identity to its successor.
    MoveIdentity(MoveIdentity), roles: &[Role::Admin];
    /// Market: ask for a preview of a listing (those who may buy it).
    RequestPreview(RequestPreview), roles: &[Role::Buyer, Role::Trainer];
    /// Training: offer capacity as a worker.
    RegisterWorker(RegisterWorker), roles: &[Role::Trainer];
    /// Training: ask for a run on data the signer bought or provides.
    SubmitJob(SubmitJob), roles: &[Role::Buyer, Role::Trainer, Role::Provider];
    /// Training: the assigned worker takes the job (checked against the job).
    AcceptJob(AcceptJob), roles: &[Role::Trainer];
    /// Training: the assigned worker's result (checked against the job).
    SubmitResult(SubmitResult), roles: &[Role::Trainer];
    /// Training: the submitter withdraws an unaccepted job (checked against the job).
    CancelJob(CancelJob), roles: &[Role::Buyer, Role::Trainer, Role::Provider];
    /// Training: a validator operator's key requests for a job it attests (checked against the
    /// job's attestors).
    RequestJobKeys(RequestJobKeys), roles: &[Role::Validator];
    /// Market: a dataset's provider registers the dataset's hidden evaluation split (the
    /// provider itself or an admin of its org, checked against the dataset).
    RegisterEvalSplit(RegisterEvalSplit), roles: &[Role::Provider, Role::Admin];
    /// Models: ask validators to score a final model version on a dataset's hidden split (any
    /// member).
    RequestEvaluation(RequestEvaluation), roles: &Role::ALL;
    /// Models: list a final model version (its owner or an admin of its org, checked against
    /// the model version).
    PublishModel(PublishModel), roles: &[Role::Provider, Role::Trainer, Role::Buyer, Role::Admin];
    /// Models: change a listing's price (its owner or an admin of its org, checked against the
    /// listing).
    UpdateModelPrice(UpdateModelPrice),
        roles: &[Role::Provider, Role::Trainer, Role::Buyer, Role::Admin];
    /// Models: delist (same senders as a price change).
    DelistModel(DelistModel), roles: &[Role::Provider, Role::Trainer, Role::Buyer, Role::Admin];
    /// Models: buy a model (not one of the signer's own org).
    BuyModel(BuyModel), roles: &[Role::Buyer, Role::Trainer];
    /// Models: a validator operator's findings about a listing's ciphertexts (checked against
    /// the validator set's operators).
    AttestModelListing(AttestModelListing), roles: &[Role::Validator];
    /// Membership: renew the signer's own certificate (any member; checked against the new
    /// certificate, which keeps the signer's role).
    RenewCertificate(RenewCertificate), roles: &Role::ALL;
}

/// A checked tx body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxBody {
    /// Chain id (checked).
    pub chain_id: String,
    /// Signer fingerprint.
    pub signer: Address,
    /// Per-signer nonce.
    pub nonce: u64,
    /// Fee.
    pub fee: Amount,
    /// Attached certificate, whose SHA-256 is `signer` (checked).
    pub certificate: Option<Vec<u8>>,
    /// Memo.
    pub memo: String,
    /// The messages.
    pub messages: Vec<Action>,
}

/// Limits the stateless checks apply (from the chain parameters).
#[derive(Clone, Debug)]
pub struct EnvelopeLimits {
    /// This chain's id.
    pub chain_id: String,
    /// Largest tx.
    pub max_tx_bytes: u64,
    /// Most messages.
    pub max_messages: u32,
}

/// A decoded, statelessly checked transaction.
#[derive(Clone, Debug)]
pub struct Tx {
    /// SHA-256 of the tx bytes (CometBFT's tx hash).
    pub hash: [u8; 32],
    /// The signed bytes.
    pub body_bytes: Vec<u8>,
    /// DER ECDSA signature.
    pub signature: Vec<u8>,
    /// The checked body.
    pub body: TxBody,
}

impl Tx {
    /// Decodes `bytes` and runs every check that needs no state.
    pub fn decode(bytes: &[u8], limits: &EnvelopeLimits) -> Result<Tx, TxError> {
        if bytes.len() as u64 > limits.max_tx_bytes {
            return Err(EnvelopeError::Oversize {
                size: bytes.len(),
                max: limits.max_tx_bytes,
            }
            .into());
        }
        let envelope =
            pb::Tx::decode(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        // One byte form per tx, envelope and signature included: a tx hash is what CometBFT's
        // cache, the mempool and the signature cache key on, so a re-encoding under a new hash
        // (an extra field, a high-S twin, padded DER) would pass them as a new tx.
        if envelope.encode_to_vec() != bytes {
            return Err(EnvelopeError::NonCanonicalEnvelope.into());
        }
        let body = pb::TxBody::decode(envelope.body.as_slice())
            .map_err(|e| EnvelopeError::Malformed(format!("body: {e}")))?;
        // One byte form per body: otherwise the same signed intent could circulate under many tx
        // hashes, and caches keyed by hash could be bypassed.
        if body.encode_to_vec() != envelope.body {
            return Err(EnvelopeError::NonCanonicalBody.into());
        }
        check_signature_encoding(&envelope.signature)?;
        if body.chain_id != limits.chain_id {
            return Err(EnvelopeError::WrongChainId {
                expected: limits.chain_id.clone(),
                got: body.chain_id,
            }
            .into());
        }
        let signer = Address::from_slice(&body.signer)
            .ok_or_else(|| invalid("signer", "must be 32 bytes"))?;
        let certificate = (!body.certificate.is_empty()).then_some(body.certificate);
        if let Some(der) = &certificate
            && sha256(der) != signer.0
        {
            return Err(crate::membership::MembershipError::FingerprintMismatch {
                signer: signer.to_hex(),
                actual: hex::encode(sha256(der)),
            }
            .into());
        }
        let fee = amount_field("fee", &body.fee)?;
        if body.memo.len() > 256 {
            return Err(invalid("memo", "at most 256 bytes"));
        }
        let count = body.messages.len();
        if count == 0 || count > limits.max_messages as usize {
            return Err(EnvelopeError::MessageCount {
                count,
                max: limits.max_messages,
            }
            .into());
        }
        let messages = body
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| Action::from_pb(i, m))
            .collect::<Result<Vec<_>, _>>()?;
        // A renewal retires the signer; the tx's signer is judged once, so a message after it
        // would act as a certificate that may no longer sign (and own what it creates).
        if let Some(i) = messages[..count - 1]
            .iter()
            .position(|m| matches!(m, Action::RenewCertificate(_)))
        {
            return Err(invalid(
                "messages",
                format!(
                    "message {i} renews the signer's certificate: renew_certificate must be the \
                     last message of its tx"
                ),
            ));
        }
        Ok(Tx {
            hash: sha256(bytes),
            body_bytes: envelope.body,
            signature: envelope.signature,
            body: TxBody {
                chain_id: body.chain_id,
                signer,
                nonce: body.nonce,
                fee,
                certificate,
                memo: body.memo,
                messages,
            },
        })
    }
}

/// Half the order of P-256, big-endian: the largest `s` a canonical (low-S) signature has.
const P256_HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

/// Refuses a signature with another byte form than the one canonical form of its (r, s): exact
/// minimal DER and low S (for any valid (r, s), (r, n−s) is valid too).
fn check_signature_encoding(signature: &[u8]) -> Result<(), TxError> {
    if signature.is_empty() {
        return Err(EnvelopeError::BadSignature("(no signature)".into()).into());
    }
    let sig = openssl::ecdsa::EcdsaSig::from_der(signature)
        .map_err(|_| EnvelopeError::NonCanonicalSignature)?;
    let der = sig
        .to_der()
        .map_err(|_| EnvelopeError::NonCanonicalSignature)?;
    if der != signature {
        return Err(EnvelopeError::NonCanonicalSignature.into());
    }
    let s = sig
        .s()
        .to_vec_padded(32)
        .map_err(|_| EnvelopeError::NonCanonicalSignature)?;
    if s.as_slice() > P256_HALF_ORDER.as_slice() {
        return Err(EnvelopeError::HighS.into());
    }
    Ok(())
}

/// What a message's execution may know about its block.
#[derive(Clone, Debug)]
pub struct ExecCtx {
    /// Height of the block being executed.
    pub height: u64,
    /// Block time, Unix seconds (from the header: consensus time, never the wall clock).
    pub time: i64,
    /// Parameters as of the start of the block.
    pub params: crate::governance::Params,
}
