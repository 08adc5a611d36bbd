//! Where ledger records live in the state.

use crate::address::Address;

/// Prefix of all accounts.
pub const ACCOUNTS: &str = "ledger/account/";

/// The account record of `address`.
pub fn account(address: &Address) -> String {
    format!("{ACCOUNTS}{}", address.to_hex())
}

/// Total NRC supply.
pub fn supply() -> &'static str {
    "ledger/supply"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_live_under_the_accounts_prefix() {
        let a = Address([7; 32]);
        assert_eq!(account(&a), format!("ledger/account/{}", "07".repeat(32)));
        assert!(!supply().starts_with(ACCOUNTS));
    }
}
