//! Where governance records live in the state.

/// Chain parameters.
pub fn params() -> &'static str {
    "governance/params"
}

/// The pending upgrade plan (`UpgradePlan`).
pub fn upgrade_plan() -> &'static str {
    "governance/upgrade/plan"
}

/// Prefix of applied upgrades.
pub const UPGRADES_APPLIED: &str = "governance/upgrade/applied/";

/// The record of the applied upgrade `name`.
pub fn upgrade_applied(name: &str) -> String {
    format!("{UPGRADES_APPLIED}{name}")
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

/// Prefix of all misbehaviour records.
pub const MISBEHAVIOURS: &str = "governance/misbehaviour/";

/// The record of evidence of `kind` (the proto enum's number) against the validator with
/// CometBFT address `address` at `evidence_height`: one key per piece of evidence, so the same
/// evidence reported twice is recorded once.
pub fn misbehaviour(address: &[u8; 20], kind: i32, evidence_height: u64) -> String {
    format!(
        "{MISBEHAVIOURS}{}/{kind:02}/{evidence_height:020}",
        hex::encode(address)
    )
}

/// Prefix of all jailed validators.
pub const JAILED: &str = "governance/jailed/";

/// The jail record of the validator with this Ed25519 key.
pub fn jailed(pub_key: &[u8; 32]) -> String {
    jailed_hex(&hex::encode(pub_key))
}

/// [`jailed`] of a key given in hex (a query's data).
pub fn jailed_hex(pub_key: &str) -> String {
    format!("{JAILED}{}", pub_key.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposal_keys_sort_numerically() {
        assert_eq!(proposal(7), "governance/proposal/00000000000000000007");
        assert!(proposal(9) < proposal(10));
        assert!(validator(&[0; 32]).starts_with(VALIDATORS));
        assert!(jailed(&[0; 32]).starts_with(JAILED));
        assert!(!jailed(&[0; 32]).starts_with(VALIDATORS));
        let m = misbehaviour(&[0xab; 20], 1, 7);
        assert_eq!(
            m,
            format!(
                "governance/misbehaviour/{}/01/00000000000000000007",
                "ab".repeat(20)
            )
        );
        assert!(misbehaviour(&[1; 20], 1, 9) < misbehaviour(&[1; 20], 1, 10));
    }
}
