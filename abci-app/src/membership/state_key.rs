//! Where membership records live in the state.

/// Prefix of all org records.
pub const ORGS: &str = "membership/org/";

/// The record of org `org_id`.
pub fn org(org_id: &str) -> String {
    format!("{ORGS}{org_id}")
}

/// Index from the SHA-256 of a CA subject name (DER) to the org id whose current CA it is.
pub fn ca_subject(subject_hash: &[u8; 32]) -> String {
    format!("membership/ca-subject/{}", hex::encode(subject_hash))
}

/// The identity registered for certificate `fingerprint`.
pub fn identity(fingerprint: &[u8; 32]) -> String {
    format!("membership/identity/{}", hex::encode(fingerprint))
}

/// The revocation of certificate `fingerprint` (present = revoked).
pub fn revocation(fingerprint: &[u8; 32]) -> String {
    format!("membership/revoked/{}", hex::encode(fingerprint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_by_domain_and_hex_encoded() {
        assert_eq!(org("medlab"), "membership/org/medlab");
        assert!(org("a").starts_with(ORGS));
        assert_eq!(
            identity(&[0xab; 32]),
            format!("membership/identity/{}", "ab".repeat(32))
        );
        assert_ne!(identity(&[1; 32]), revocation(&[1; 32]));
    }
}
