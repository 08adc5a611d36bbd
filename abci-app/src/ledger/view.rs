//! Typed reads and writes of accounts and supply; the only code that uses ledger state keys.

use crate::events::{EventKind, attr};
use neurodata_proto::chain::v1 as pb;

use super::{LedgerError, state_key};
use crate::TxError;
use crate::address::Address;
use crate::amount::Amount;
use crate::state::{Event, StateError, StateRead, StateWrite, stored_amount};

/// Reads of accounts and supply.
pub trait LedgerRead: StateRead + Sized {
    /// The account at `address` (a fresh zero account if never used).
    fn account(&self, address: &Address) -> Result<pb::Account, StateError> {
        Ok(self
            .get_proto(&state_key::account(address))?
            .unwrap_or_else(|| pb::Account {
                address: address.0.to_vec(),
                balance: "0".into(),
                nonce: 0,
            }))
    }

    /// Balance of `address`.
    fn balance(&self, address: &Address) -> Result<Amount, StateError> {
        stored_amount(&self.account(address)?.balance, || {
            state_key::account(address)
        })
    }

    /// Total supply.
    fn supply(&self) -> Result<Amount, StateError> {
        match self.get_proto::<pb::Supply>(state_key::supply())? {
            None => Ok(Amount::ZERO),
            Some(s) => stored_amount(&s.total, || state_key::supply().into()),
        }
    }

    /// Every account, ascending by address.
    fn accounts(&self) -> Result<Vec<pb::Account>, StateError> {
        self.prefix_proto(state_key::ACCOUNTS)
    }
}

impl<T: StateRead> LedgerRead for T {}

/// Writes of accounts and supply.
pub trait LedgerWrite: StateWrite + LedgerRead {
    /// Stores an account record.
    fn put_account(&mut self, account: &pb::Account) -> Result<(), StateError> {
        let address = Address::from_slice(&account.address).ok_or_else(|| StateError::Corrupt {
            key: "account".into(),
            reason: "address is not 32 bytes".into(),
        })?;
        self.put_proto(state_key::account(&address), account);
        Ok(())
    }

    /// Adds `amount` to `address`.
    fn credit(&mut self, address: &Address, amount: Amount) -> Result<(), TxError> {
        let mut account = self.account(address)?;
        let balance = stored_amount(&account.balance, || state_key::account(address))?
            .checked_add(amount)
            .ok_or_else(|| LedgerError::Overflow(format!("balance of {address}")))?;
        account.balance = balance.to_string();
        self.put_account(&account)?;
        Ok(())
    }

    /// Takes `amount` from `address`.
    fn debit(&mut self, address: &Address, amount: Amount) -> Result<(), TxError> {
        let mut account = self.account(address)?;
        let have = stored_amount(&account.balance, || state_key::account(address))?;
        let balance = have
            .checked_sub(amount)
            .ok_or_else(|| LedgerError::InsufficientFunds {
                account: address.to_hex(),
                have,
                need: amount,
            })?;
        account.balance = balance.to_string();
        self.put_account(&account)?;
        Ok(())
    }

    /// Moves `amount` from one account to another and emits `nrc.transfer`.
    fn move_funds(&mut self, from: &Address, to: &Address, amount: Amount) -> Result<(), TxError> {
        self.debit(from, amount)?;
        self.credit(to, amount)?;
        self.emit(
            Event::new(EventKind::NrcTransfer)
                .attr(attr::FROM, from)
                .attr(attr::TO, to)
                .attr(attr::AMOUNT, amount),
        );
        Ok(())
    }

    /// Creates `amount` new NRC in the treasury: the only way supply grows.
    fn mint(&mut self, amount: Amount) -> Result<(), TxError> {
        if amount == Amount::ZERO {
            return Err(LedgerError::ZeroAmount.into());
        }
        let supply = self
            .supply()?
            .checked_add(amount)
            .ok_or_else(|| LedgerError::Overflow("total supply".into()))?;
        self.credit(&Address::treasury(), amount)?;
        self.set_supply(supply);
        self.emit(
            Event::new(EventKind::NrcMinted)
                .attr(attr::TO, Address::treasury())
                .attr(attr::AMOUNT, amount)
                .attr(attr::SUPPLY, supply),
        );
        Ok(())
    }

    /// Overwrites the supply record (genesis and mint only).
    fn set_supply(&mut self, supply: Amount) {
        self.put_proto(
            state_key::supply().to_owned(),
            &pb::Supply {
                total: supply.to_string(),
            },
        );
    }
}

impl<T: StateWrite> LedgerWrite for T {}
