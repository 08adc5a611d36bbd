//! Where governance records live in the state.

/// Chain parameters.
pub fn params() -> &'static str {
    "governance/params"
}

/// Prefix of all proposals.
pub const PROPOSALS: &str = "governance/proposal/";

/// Proposal `id` (zero-padded so keys sort by id).
pub fn proposal(id: u64) -> String {
    format!("{PROPOSALS}{id:020}")
}

/// The next proposal id.
pub fn next_proposal_id() -> &'static str {
    "governance/next-proposal-id"
}

/// Prefix of all validators.
pub const VALIDATORS: &str = "governance/validator/";

/// The validator with this Ed25519 key.
pub fn validator(pub_key: &[u8; 32]) -> String {
    format!("{VALIDATORS}{}", hex::encode(pub_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposal_keys_sort_numerically() {
        assert_eq!(proposal(7), "governance/proposal/00000000000000000007");
        assert!(proposal(9) < proposal(10));
        assert!(validator(&[0; 32]).starts_with(VALIDATORS));
    }
}
