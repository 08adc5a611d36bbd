//! The NRC ledger: balances, nonces, fees and total supply.
//!
//! Supply changes only by governance mint ([`LedgerWrite::mint`]); every other movement is a
//! debit matched by a credit, so `sum(balances) == supply` always (property-tested).

pub mod state_key;
mod transfer;
pub mod view;

pub use transfer::{Transfer, signer_address};
pub use view::{LedgerRead, LedgerWrite};

use crate::amount::Amount;

/// Why a ledger operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The account holds less than the operation needs.
    #[error("account {account} has {have} NRC, needs {need}")]
    InsufficientFunds {
        /// The account.
        account: String,
        /// Balance.
        have: Amount,
        /// Required.
        need: Amount,
    },
    /// A balance or the supply would exceed u128.
    #[error("amount overflow: {0}")]
    Overflow(String),
    /// Zero-amount transfers and mints do nothing and are refused.
    #[error("amount must be positive")]
    ZeroAmount,
}

impl LedgerError {
    /// Stable code (40..60).
    pub fn code(&self) -> u32 {
        match self {
            LedgerError::InsufficientFunds { .. } => 40,
            LedgerError::Overflow(_) => 41,
            LedgerError::ZeroAmount => 42,
        }
    }
}
