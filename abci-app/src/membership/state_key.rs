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

/// Prefix of the expiry index: every member certificate and org CA the chain registered, by day
/// and time of its notAfter, so the end of a block reads only the days its notice window just
/// reached (see [`super::expiry`]).
pub const EXPIRY: &str = "membership/expiry/";

/// Prefix of the expiry index entries of `day` (days since 1970-01-01, UTC).
pub fn expiry_day(day: u64) -> String {
    format!("{EXPIRY}{day:08}/")
}

/// The expiry index entry of a certificate: `kind` is `member` or `ca`, a time before 1970 is
/// filed at 0 (it is long expired either way).
pub fn expiry(not_after: i64, kind: &str, fingerprint: &[u8; 32]) -> String {
    let t = u64::try_from(not_after).unwrap_or(0);
    format!(
        "{}{t:020}/{kind}/{}",
        expiry_day(t / 86_400),
        hex::encode(fingerprint)
    )
}

/// Prefix of the certificates registered after the notice window had already passed their
/// notAfter: announced at the end of their block, then dropped.
pub const EXPIRY_LATE: &str = "membership/expiry-late/";

/// The late-notice entry of a certificate.
pub fn expiry_late(not_after: i64, kind: &str, fingerprint: &[u8; 32]) -> String {
    let t = u64::try_from(not_after).unwrap_or(0);
    format!("{EXPIRY_LATE}{t:020}/{kind}/{}", hex::encode(fingerprint))
}

/// The end of the notice window as of the last block: certificates expiring up to it were
/// announced.
pub fn expiry_cursor() -> &'static str {
    "membership/expiry-cursor"
}

/// Reads an [`expiry`] or [`expiry_late`] key back: notAfter, kind and fingerprint.
pub fn parse_expiry(key: &str) -> Option<(i64, &str, [u8; 32])> {
    let rest = key
        .strip_prefix(EXPIRY)
        .and_then(|r| r.split_once('/').map(|(_, r)| r))
        .or_else(|| key.strip_prefix(EXPIRY_LATE))?;
    let mut parts = rest.split('/');
    let t: i64 = parts.next()?.parse().ok()?;
    let kind = parts.next()?;
    let fp = hex::decode(parts.next()?).ok()?.try_into().ok()?;
    parts.next().is_none().then_some((t, kind, fp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keys_sort_by_day_then_time_and_parse_back() {
        let (a, b) = (
            expiry(86_399, "member", &[1; 32]),
            expiry(86_400, "ca", &[2; 32]),
        );
        assert!(a.starts_with(&expiry_day(0)) && b.starts_with(&expiry_day(1)));
        assert!(a < b);
        assert!(expiry(100, "ca", &[9; 32]) < expiry(101, "ca", &[0; 32]));
        assert_eq!(parse_expiry(&a), Some((86_399, "member", [1; 32])));
        assert_eq!(parse_expiry(&b), Some((86_400, "ca", [2; 32])));
        assert_eq!(
            parse_expiry(&expiry_late(7, "member", &[3; 32])),
            Some((7, "member", [3; 32]))
        );
        assert_eq!(
            parse_expiry(&expiry(-5, "member", &[4; 32])).map(|e| e.0),
            Some(0)
        );
        assert_eq!(parse_expiry("membership/expiry/00000000/junk"), None);
        assert_eq!(parse_expiry(expiry_cursor()), None);
    }

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
