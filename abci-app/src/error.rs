//! The error a rejected transaction returns: one per domain, each with a stable code that goes into
//! the ABCI result (and later maps to a gRPC status), and a message that says what to fix.

use crate::escrow::EscrowError;
use crate::governance::GovernanceError;
use crate::ledger::LedgerError;
use crate::market::MarketError;
use crate::membership::MembershipError;
use crate::state::StateError;
use crate::tx::EnvelopeError;

/// Why a transaction was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The envelope: bytes, signature, chain id, nonce, fee.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Certificates, orgs, roles, revocation.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// Balances and supply.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Proposals and votes.
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    /// Dataset listings and attestations.
    #[error(transparent)]
    Market(#[from] MarketError),
    /// Purchases and settlement.
    #[error(transparent)]
    Escrow(#[from] EscrowError),
    /// The store below the state machine failed (not the user's fault).
    #[error(transparent)]
    State(#[from] StateError),
}

impl TxError {
    /// Stable numeric code for the ABCI result (never 0, which means success).
    pub fn code(&self) -> u32 {
        match self {
            TxError::Envelope(e) => e.code(),
            TxError::Membership(e) => e.code(),
            TxError::Ledger(e) => e.code(),
            TxError::Governance(e) => e.code(),
            TxError::Market(e) => e.code(),
            TxError::Escrow(e) => e.code(),
            TxError::State(_) => 99,
        }
    }

    /// The ABCI codespace: which domain rejected the tx.
    pub fn codespace(&self) -> &'static str {
        match self {
            TxError::Envelope(_) => "tx",
            TxError::Membership(_) => "membership",
            TxError::Ledger(_) => "ledger",
            TxError::Governance(_) => "governance",
            TxError::Market(_) => "market",
            TxError::Escrow(_) => "escrow",
            TxError::State(_) => "state",
        }
    }
}
