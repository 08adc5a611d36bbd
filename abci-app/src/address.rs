//! Account addresses: 32 bytes, the SHA-256 fingerprint of a member certificate, or a module
//! account derived from a fixed label.

use std::fmt;

use sha2::{Digest, Sha256};

/// A 32-byte account address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 32]);

impl Address {
    /// The governance treasury: where minted NRC goes.
    pub fn treasury() -> Address {
        Address::module("treasury")
    }

    /// The validators' reward pool: where fees go.
    pub fn reward_pool() -> Address {
        Address::module("reward-pool")
    }

    /// A module account: SHA-256 of `neurodata/module/<name>`; no certificate can have this
    /// fingerprint, so nobody can sign for it.
    pub fn module(name: &str) -> Address {
        Address(Sha256::digest(format!("neurodata/module/{name}")).into())
    }

    /// From a byte slice, which must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Address> {
        <[u8; 32]>::try_from(bytes).ok().map(Address)
    }

    /// Lowercase hex, the form used in state keys, events and the CLI.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Address> {
        hex::decode(s).ok().and_then(|b| Address::from_slice(&b))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_accounts_are_distinct_and_round_trip_through_hex() {
        assert_ne!(Address::treasury(), Address::reward_pool());
        let a = Address::treasury();
        assert_eq!(Address::from_hex(&a.to_hex()), Some(a));
        assert_eq!(Address::from_hex("abcd"), None);
    }
}
