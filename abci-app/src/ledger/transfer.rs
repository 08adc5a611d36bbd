//! `Transfer`: move NRC from the signer to another account.

use neurodata_proto::chain::v1 as pb;

use super::{LedgerError, LedgerWrite};
use crate::TxError;
use crate::address::Address;
use crate::amount::Amount;
use crate::membership::Signer;
use crate::state::StateWrite;
use crate::tx::ExecCtx;
use crate::tx::invalid;

/// Move `amount` NRC from the signer to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Recipient.
    pub to: Address,
    /// Amount, > 0.
    pub amount: Amount,
}

impl TryFrom<pb::Transfer> for Transfer {
    type Error = TxError;
    fn try_from(m: pb::Transfer) -> Result<Self, TxError> {
        let to =
            Address::from_slice(&m.to).ok_or_else(|| invalid("transfer.to", "must be 32 bytes"))?;
        let amount = crate::tx::amount_field("transfer.amount", &m.amount)?;
        if amount == Amount::ZERO {
            return Err(LedgerError::ZeroAmount.into());
        }
        Ok(Transfer { to, amount })
    }
}

impl Transfer {
    /// Debits the signer and credits the recipient.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        _ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let from = signer_address(signer)?;
        state.move_funds(&from, &self.to, self.amount)
    }
}

/// The account address of a signer: its certificate fingerprint.
pub fn signer_address(signer: &Signer) -> Result<Address, TxError> {
    Address::from_slice(&signer.identity.fingerprint).ok_or_else(|| {
        TxError::State(crate::state::StateError::Corrupt {
            key: "identity".into(),
            reason: "fingerprint is not 32 bytes".into(),
        })
    })
}
