//! Certificate expiry notices: the chain announces every live member certificate and org root CA
//! `cert_expiry_notice_secs` (a governance parameter, 30 days by default) before it expires,
//! with one `certificate.expiring` event per certificate, and lists those expiring within any
//! window (`/expiring_certificates`, `ndctl ca expiring`), so members renew
//! ([`super::RenewCertificate`]) and orgs rotate their CA before anything stops working.
//!
//! Every certificate the chain registers (a member's identity, an org's CA at admission or
//! rotation) is filed in an index by day and time of its notAfter
//! ([`super::state_key::expiry`]). The end of each block moves the window's far edge, the
//! cursor, from where the last block left it to `block time + notice`, and announces the
//! entries in between: it reads only the days the window just reached (usually one), never every
//! identity. A certificate registered when the cursor had already passed its notAfter (a
//! short-lived certificate, or a notice window that grew and then shrank) is queued for a
//! notice at the end of its block instead, so each certificate is announced once.
//!
//! An entry is announced (or listed) only while its certificate can still act: a member's must
//! pass the liveness rule ([`super::rule::live`]: not revoked, not renewed, its org active and
//! still on its CA), an org CA must still be its active org's current CA. Entries of certificates
//! that died another way are skipped, not deleted: the index is a record of what was registered.

use neurodata_proto::chain::v1 as pb;

use super::view::{ExpiringCertificate, Expiry};
use super::{CaCertificate, MembershipRead, MembershipWrite, rule};
use crate::app::BlockCtx;
use crate::events::{EventKind, attr};
use crate::state::{Event, StateError, StateRead, StateWrite};

/// Longest window `/expiring_certificates` lists (twenty years, longer than certificates are
/// usually issued for): one index day read per day of the window.
pub const MAX_LIST_SECS: u64 = 7_305 * 86_400;

fn day(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0) / 86_400
}

/// Moves the notice window to `block.time + cert_expiry_notice_secs` and announces the live
/// certificates it reached, then the queued late ones.
pub fn end_block<S: StateWrite>(state: &mut S, block: &BlockCtx) -> Result<(), StateError> {
    let now = block.time;
    let notice = i64::try_from(block.params.cert_expiry_notice_secs).unwrap_or(i64::MAX);
    let edge = now.saturating_add(notice);
    // The first block starts the window at its own time: nothing before it can be announced.
    let cursor = state.expiry_cursor()?.unwrap_or(now.saturating_sub(1));
    if edge > cursor {
        for d in day(cursor.saturating_add(1))..=day(edge) {
            for entry in state.expiry_bucket(d)? {
                if entry.not_after > cursor && entry.not_after <= edge {
                    announce(state, &entry, now)?;
                }
            }
        }
        state.put_expiry_cursor(edge);
    }
    for entry in state.late_expiries()? {
        announce(state, &entry, now)?;
        state.drop_late_expiry(&entry);
    }
    Ok(())
}

fn announce<S: StateWrite>(state: &mut S, entry: &Expiry, now: i64) -> Result<(), StateError> {
    let Some(c) = describe(state, entry, now)? else {
        return Ok(());
    };
    let kind = match c.kind() {
        pb::CertificateKind::OrgCa => "org_ca",
        _ => "member",
    };
    state.emit(
        Event::new(EventKind::CertificateExpiring)
            .attr(attr::KIND, kind)
            .attr(attr::ORG, &c.org_id)
            .attr(attr::FINGERPRINT, hex::encode(&c.fingerprint))
            .attr(attr::ROLE, &c.role)
            .attr(attr::COMMON_NAME, &c.common_name)
            .attr(attr::NOT_AFTER, c.not_after)
            .attr(attr::EXPIRES_IN, c.not_after.saturating_sub(now)),
    );
    Ok(())
}

/// The listing of an index entry's certificate if it is live at `now` and not expired, else
/// None.
fn describe<S: StateRead>(
    state: &S,
    entry: &Expiry,
    now: i64,
) -> Result<Option<pb::ExpiringCertificate>, StateError> {
    if entry.not_after < now {
        return Ok(None);
    }
    Ok(match &entry.certificate {
        ExpiringCertificate::Member => {
            let Some(identity) = state.identity(&entry.fingerprint)? else {
                return Ok(None);
            };
            let org = state.org(&identity.org_id)?;
            let revocation = state.revocation(&entry.fingerprint)?;
            rule::live(&identity, org.as_ref(), revocation.as_ref(), now)
                .is_ok()
                .then_some(pb::ExpiringCertificate {
                    kind: pb::CertificateKind::Member as i32,
                    org_id: identity.org_id,
                    role: identity.role,
                    common_name: identity.common_name,
                    fingerprint: identity.fingerprint,
                    not_after: identity.not_after,
                })
        }
        ExpiringCertificate::OrgCa { org_id } => state
            .org(org_id)?
            .filter(|o| {
                o.status == pb::OrgStatus::Active as i32
                    && o.ca_fingerprint == entry.fingerprint.as_slice()
            })
            .map(|o| pb::ExpiringCertificate {
                kind: pb::CertificateKind::OrgCa as i32,
                common_name: CaCertificate::from_der(&o.ca_cert_der)
                    .map(|ca| ca.common_name)
                    .unwrap_or_default(),
                org_id: o.org_id,
                role: String::new(),
                fingerprint: entry.fingerprint.to_vec(),
                not_after: entry.not_after,
            }),
    })
}

/// The live certificates (members' and org CAs') expiring within `within_secs` of the last
/// block's time (at most [`MAX_LIST_SECS`]), soonest first.
pub fn expiring<S: StateRead>(
    state: &S,
    within_secs: u64,
) -> Result<pb::ExpiringCertificateList, StateError> {
    let now = crate::app::last_block(state)?.map_or(0, |b| b.time_seconds);
    let within = i64::try_from(within_secs.min(MAX_LIST_SECS)).unwrap_or(i64::MAX);
    let end = now.saturating_add(within);
    let mut certificates = Vec::new();
    for d in day(now)..=day(end) {
        for entry in state.expiry_bucket(d)? {
            if entry.not_after > end {
                break;
            }
            if let Some(c) = describe(state, &entry, now)? {
                certificates.push(c);
            }
        }
    }
    Ok(pb::ExpiringCertificateList {
        certificates,
        block_time: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::Params;
    use crate::state::{MemoryState, StateDelta};

    const DAY: i64 = 86_400;
    const T0: i64 = 1_800_000_000;

    /// An active org and one member identity per notAfter, fingerprint `[i + 1; 32]`.
    fn state(not_afters: &[i64]) -> StateDelta<MemoryState> {
        let mut s = StateDelta::new(MemoryState::default());
        let org = pb::Org {
            org_id: "o".into(),
            ca_fingerprint: vec![9; 32],
            status: pb::OrgStatus::Active as i32,
            ..Default::default()
        };
        s.put_org(&org, &[9; 32]);
        for (i, t) in not_afters.iter().enumerate() {
            s.put_identity(&pb::Identity {
                fingerprint: vec![i as u8 + 1; 32],
                org_id: "o".into(),
                role: "buyer".into(),
                issuer_ca_fingerprint: vec![9; 32],
                not_after: *t,
                ..Default::default()
            })
            .unwrap();
        }
        s
    }

    /// The first fingerprint bytes announced by the end of a block at `time` with `notice`.
    fn announced(s: &mut StateDelta<MemoryState>, time: i64, notice: i64) -> Vec<u8> {
        let before = s.events().len();
        let block = BlockCtx {
            chain_id: "t".into(),
            height: 1,
            time,
            hash: [0; 32],
            params: Params {
                cert_expiry_notice_secs: notice as u64,
                ..Params::default()
            },
        };
        end_block(s, &block).unwrap();
        s.events()[before..]
            .iter()
            .filter(|e| e.kind == EventKind::CertificateExpiring)
            .map(|e| hex::decode(e.get(attr::FINGERPRINT).unwrap()).unwrap()[0])
            .collect()
    }

    #[test]
    fn a_window_that_grows_announces_what_it_newly_covers_and_one_that_shrinks_repeats_nothing() {
        let mut s = state(&[T0 + 2 * DAY, T0 + 10 * DAY, T0 + 40 * DAY, T0 - 1]);
        assert_eq!(
            announced(&mut s, T0, 5 * DAY),
            vec![1],
            "the first block's window"
        );
        assert!(announced(&mut s, T0 + 5, 5 * DAY).is_empty(), "once");
        assert_eq!(announced(&mut s, T0 + 10, 20 * DAY), vec![2], "grown");
        assert!(announced(&mut s, T0 + 15, DAY).is_empty(), "shrunk");
        assert!(announced(&mut s, T0 + 30 * DAY, DAY).is_empty());
        assert_eq!(announced(&mut s, T0 + 39 * DAY, DAY), vec![3]);
        // The expired one (4) never was.
        let listed = expiring(&s, 365 * DAY as u64).unwrap();
        assert!(
            listed.certificates.is_empty(),
            "nothing live: no block info yet"
        );
    }

    #[test]
    fn a_certificate_registered_inside_the_window_is_announced_at_the_end_of_its_block() {
        let mut s = state(&[T0 + 30 * DAY]);
        assert!(announced(&mut s, T0, 10 * DAY).is_empty());
        // Registered after the window passed its notAfter.
        s.put_identity(&pb::Identity {
            fingerprint: vec![7; 32],
            org_id: "o".into(),
            role: "buyer".into(),
            issuer_ca_fingerprint: vec![9; 32],
            not_after: T0 + 3 * DAY,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(announced(&mut s, T0 + 5, 10 * DAY), vec![7]);
        assert!(announced(&mut s, T0 + 10, 10 * DAY).is_empty(), "once");
        // A revoked one is not.
        s.put_revocation(&pb::Revocation {
            fingerprint: vec![8; 32],
            ..Default::default()
        });
        s.put_identity(&pb::Identity {
            fingerprint: vec![8; 32],
            org_id: "o".into(),
            role: "buyer".into(),
            issuer_ca_fingerprint: vec![9; 32],
            not_after: T0 + 4 * DAY,
            ..Default::default()
        })
        .unwrap();
        assert!(announced(&mut s, T0 + 15, 10 * DAY).is_empty());
    }
}
