//! Certificate lifecycle: `ndctl ca reissue` (an org admin renews a member's certificate off
//! chain, for the member's own key), `ndctl ca renew` (the member links its identity to the
//! renewed certificate on chain, signed with the current one) and `ndctl ca expiring` (the live
//! certificates the chain sees expiring soon).

use std::path::Path;

use anyhow::{Context as _, bail};
use neurodata_abci::membership::MemberCertificate;
use neurodata_abci::query;
use neurodata_certs::{OrgCa, Validity};
use neurodata_client::msg;
use neurodata_proto::chain::v1 as pb;
use openssl::x509::X509;

use crate::conn::Conn;
use crate::{SignerArgs, now, read, submit, utc};

const DAY: i64 = 86_400;

fn member_certificate(path: &Path) -> anyhow::Result<(X509, MemberCertificate)> {
    let x509 = X509::from_pem(&read(path)?)
        .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
    let parsed = MemberCertificate::parse(&x509.to_der()?)
        .with_context(|| format!("{} is not a member certificate", path.display()))?;
    Ok((x509, parsed))
}

/// `ndctl ca reissue`: a certificate for the member's key, common name and role from the CA in
/// `ca_dir` (the member's certificate issued by it or by `previous_ca`), valid `days` from now,
/// written to `out`.
pub fn reissue(
    ca_dir: &Path,
    previous_ca: Option<&Path>,
    member: &Path,
    out: &Path,
    days: i64,
) -> anyhow::Result<()> {
    let ca = OrgCa::load(ca_dir)?;
    let previous = previous_ca
        .map(|p| {
            X509::from_pem(&read(p)?)
                .with_context(|| format!("{} is not a PEM certificate", p.display()))
        })
        .transpose()?;
    let (old, parsed) = member_certificate(member)?;
    let validity = Validity::days_from(now(), days);
    if validity.not_after <= parsed.not_after {
        bail!(
            "{} is valid until {}; a renewal must expire later (pass a larger --days)",
            member.display(),
            utc(parsed.not_after)
        );
    }
    let new = ca.reissue(&old, previous.as_ref(), validity)?;
    std::fs::write(out, new.to_pem()?).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "reissued {} certificate {} until {} in {} (address {}); the member sends it with \
         `ndctl ca renew --new-cert {}` signed with its current certificate",
        parsed.role,
        parsed.common_name,
        utc(validity.not_after),
        out.display(),
        hex::encode(neurodata_certs::fingerprint(&new)?),
        out.display(),
    );
    Ok(())
}

/// What the chain would refuse in a renewal from `current` to `new`, said before paying a fee.
pub fn check_renewal(current: &MemberCertificate, new: &MemberCertificate) -> anyhow::Result<()> {
    if new.fingerprint == current.fingerprint {
        bail!("the new certificate is the one you sign with: pass the renewed certificate");
    }
    if new.common_name != current.common_name || new.role != current.role {
        bail!(
            "a renewal keeps the common name and role: yours is {} ({}), the new certificate's \
             {} ({})",
            current.common_name,
            current.role,
            new.common_name,
            new.role
        );
    }
    // The issuer is for the chain to judge: after a CA rotation the renewal comes from the
    // org's new CA, under another name.
    if new.not_after <= current.not_after {
        bail!(
            "the new certificate expires {}, not after yours ({}): a renewal extends the validity",
            utc(new.not_after),
            utc(current.not_after)
        );
    }
    Ok(())
}

/// `ndctl ca renew`: sends the renewal to `new_cert`, signed with the current certificate.
pub async fn renew(a: &SignerArgs, new_cert: &Path) -> anyhow::Result<()> {
    let (new_x509, new) = member_certificate(new_cert)?;
    let (_, current) = member_certificate(a.cert()?)?;
    check_renewal(&current, &new)?;
    submit(a, vec![msg::renew_certificate(new.der.clone())]).await?;
    let key = openssl::pkey::PKey::private_key_from_pem(&read(a.key()?)?)?;
    let same_key = new_x509.public_key()?.public_eq(&key);
    println!(
        "renewed {} to {}: sign with --cert {}{} from now on",
        hex::encode(current.fingerprint),
        hex::encode(new.fingerprint),
        new_cert.display(),
        if same_key {
            " (same key)".to_owned()
        } else {
            " and the key it was issued for".to_owned()
        }
    );
    Ok(())
}

/// `ndctl ca expiring`: the live certificates expiring within `days` (default: the chain's
/// notice window) of the last block.
pub async fn expiring(a: &SignerArgs, days: Option<u64>, json: bool) -> anyhow::Result<()> {
    let conn = Conn::open(&a.chain, a.identity()).await?;
    let max_days = neurodata_abci::membership::expiry::MAX_LIST_SECS / DAY as u64;
    let secs = match days {
        Some(d) if d > max_days => bail!("--days is at most {max_days}"),
        Some(d) => d.saturating_mul(DAY as u64),
        None => {
            let params: pb::Params = conn
                .record(query::params())
                .await?
                .context("the chain has no parameters")?;
            params.cert_expiry_notice_secs
        }
    };
    let (list, height) = conn.list(query::expiring_certificates(secs)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&as_json(&list, secs))?);
    } else {
        print!("{}", report(&list, secs, height));
    }
    Ok(())
}

fn kind(c: &pb::ExpiringCertificate) -> &'static str {
    match c.kind() {
        pb::CertificateKind::OrgCa => "org CA",
        _ => "member",
    }
}

fn days_left(c: &pb::ExpiringCertificate, now: i64) -> f64 {
    // Display only: never back into the chain.
    (c.not_after - now) as f64 / DAY as f64
}

/// The listing as text: a count line, then one line per certificate.
pub fn report(list: &pb::ExpiringCertificateList, secs: u64, height: u64) -> String {
    let mut out = format!(
        "{} certificate{} expiring within {:.1} days of block {height} ({})\n",
        list.certificates.len(),
        if list.certificates.len() == 1 {
            ""
        } else {
            "s"
        },
        secs as f64 / DAY as f64,
        utc(list.block_time)
    );
    for c in &list.certificates {
        let who = match c.kind() {
            pb::CertificateKind::OrgCa => "org CA".to_owned(),
            _ => c.role.clone(),
        };
        out.push_str(&format!(
            "  {:<12} {:<9} {:<24} {}  expires {} ({:.1} days)\n",
            c.org_id,
            who,
            c.common_name,
            hex::encode(&c.fingerprint),
            utc(c.not_after),
            days_left(c, list.block_time)
        ));
    }
    out
}

/// The listing as JSON.
pub fn as_json(list: &pb::ExpiringCertificateList, secs: u64) -> serde_json::Value {
    serde_json::json!({
        "block_time": list.block_time,
        "within_secs": secs,
        "count": list.certificates.len(),
        "certificates": list.certificates.iter().map(|c| serde_json::json!({
            "kind": kind(c),
            "org": c.org_id,
            "role": c.role,
            "common_name": c.common_name,
            "fingerprint": hex::encode(&c.fingerprint),
            "not_after": c.not_after,
            "not_after_utc": utc(c.not_after),
            "days_left": days_left(c, list.block_time),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use neurodata_certs::Role;

    const T: i64 = 1_800_000_000;

    fn parse(cert: &X509) -> MemberCertificate {
        MemberCertificate::parse(&cert.to_der().unwrap()).unwrap()
    }

    #[test]
    fn a_renewal_is_checked_before_it_costs_a_fee() {
        let ca = OrgCa::create("acme", "Acme", Validity::days_from(T, 900)).unwrap();
        let other = OrgCa::create("other", "Other", Validity::days_from(T, 900)).unwrap();
        let alice = ca
            .issue("alice", Role::Buyer, Validity::days_from(T, 30))
            .unwrap();
        let current = parse(&alice.cert);
        let renewed = ca
            .reissue(&alice.cert, None, Validity::days_from(T, 365))
            .unwrap();
        assert!(check_renewal(&current, &parse(&renewed)).is_ok());
        let refusal = |cert: &X509| {
            check_renewal(&current, &parse(cert))
                .unwrap_err()
                .to_string()
        };
        assert!(refusal(&alice.cert).contains("the one you sign with"));
        let shorter = ca
            .reissue(&alice.cert, None, Validity::days_from(T, 10))
            .unwrap();
        assert!(refusal(&shorter).contains("extends the validity"));
        let bob = ca
            .issue("bob", Role::Buyer, Validity::days_from(T, 365))
            .unwrap();
        assert!(refusal(&bob.cert).contains("keeps the common name and role"));
        let admin = ca
            .issue_for_key(
                "alice",
                Role::Admin,
                Validity::days_from(T, 365),
                &alice.key,
            )
            .unwrap();
        assert!(refusal(&admin).contains("keeps the common name and role"));
        // Another CA's certificate is for the chain to judge (after a rotation it is the org's).
        let rotated = other
            .issue_for_key(
                "alice",
                Role::Buyer,
                Validity::days_from(T, 365),
                &alice.key,
            )
            .unwrap();
        assert!(check_renewal(&current, &parse(&rotated)).is_ok());
    }

    fn listing() -> pb::ExpiringCertificateList {
        pb::ExpiringCertificateList {
            certificates: vec![
                pb::ExpiringCertificate {
                    kind: pb::CertificateKind::Member as i32,
                    org_id: "acme".into(),
                    role: "buyer".into(),
                    common_name: "alice".into(),
                    fingerprint: vec![0xab; 32],
                    not_after: T + 3 * DAY / 2,
                },
                pb::ExpiringCertificate {
                    kind: pb::CertificateKind::OrgCa as i32,
                    org_id: "acme".into(),
                    role: String::new(),
                    common_name: "acme CA".into(),
                    fingerprint: vec![0xcd; 32],
                    not_after: T + 20 * DAY,
                },
            ],
            block_time: T,
        }
    }

    #[test]
    fn the_report_counts_and_lists_org_role_name_fingerprint_expiry_and_days_left() {
        let text = report(&listing(), 30 * DAY as u64, 42);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("2 certificates expiring within 30.0 days of block 42"),
            "{text}"
        );
        for part in ["acme", "buyer", "alice", &"ab".repeat(32), "(1.5 days)"] {
            assert!(lines[1].contains(part), "{part} in {}", lines[1]);
        }
        for part in ["org CA", "acme CA", &"cd".repeat(32), "(20.0 days)"] {
            assert!(lines[2].contains(part), "{part} in {}", lines[2]);
        }
        let none = pb::ExpiringCertificateList {
            certificates: vec![],
            block_time: T,
        };
        assert!(
            report(&none, DAY as u64, 1).starts_with("0 certificates expiring within 1.0 days")
        );
    }

    #[test]
    fn the_json_listing_has_one_object_per_certificate() {
        let v = as_json(&listing(), 30 * DAY as u64);
        assert_eq!(v["count"], 2);
        assert_eq!(v["certificates"][0]["kind"], "member");
        assert_eq!(v["certificates"][0]["role"], "buyer");
        assert_eq!(v["certificates"][0]["days_left"], 1.5);
        assert_eq!(v["certificates"][1]["kind"], "org CA");
        assert_eq!(v["certificates"][1]["fingerprint"], "cd".repeat(32));
    }
}
