//! Upload accounting: which member stored which blob, and how many bytes each member and the
//! whole org may still store on this gateway.
//!
//! Without it any member could fill the org's disk or bucket (finding 6 of the audit). The index
//! (`uploads.index` in the state directory: one `cid fingerprint size` line per blob) is rewritten
//! atomically on every new blob, so usage survives restarts. An upload reserves its bytes as they
//! arrive ([`Reservation::grow`]), so concurrent uploads cannot together exceed a quota, and the
//! index entry is written *before* the blob becomes visible under its CID: a crash in between
//! leaves an entry without a blob (over-counting, removed at the next start by
//! [`UploadLedger::reconcile`]), never a blob nobody is charged for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::blobstore::BlobStore;
use crate::cid::Cid;

/// The index file's name in the state directory.
pub const INDEX_FILE: &str = "uploads.index";
const HEADER: &str = "# neurodata-gateway upload index v1: cid uploader-fingerprint size";

/// Why an upload may not be stored, or the index failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The member would store more than its quota.
    #[error(
        "upload quota exceeded for member {member}: {used} bytes stored or in flight + {adding} \
         more > {limit} (gateway setting upload_quota_member_bytes)"
    )]
    MemberQuota {
        /// The member's fingerprint, hex.
        member: String,
        /// Bytes the member has stored or is uploading.
        used: u64,
        /// Bytes this upload adds.
        adding: u64,
        /// The quota.
        limit: u64,
    },
    /// The org would store more than its quota on this gateway.
    #[error(
        "upload quota exceeded for this gateway's org: {used} bytes stored or in flight + \
         {adding} more > {limit} (gateway setting upload_quota_org_bytes)"
    )]
    OrgQuota {
        /// Bytes the org's members have stored or are uploading.
        used: u64,
        /// Bytes this upload adds.
        adding: u64,
        /// The quota.
        limit: u64,
    },
    /// Reading or writing the index failed.
    #[error("upload index {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the index does not parse.
    #[error("upload index {path} line {line}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// How many bytes uploads may take on this gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Per member (certificate fingerprint).
    pub member_bytes: u64,
    /// For all the org's members together.
    pub org_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    uploader: [u8; 32],
    size: u64,
}

#[derive(Default)]
struct Usage {
    entries: BTreeMap<Cid, Entry>,
    stored: BTreeMap<[u8; 32], u64>,
    stored_total: u64,
    in_flight: BTreeMap<[u8; 32], u64>,
    in_flight_total: u64,
}

impl Usage {
    fn member(&self, m: &[u8; 32]) -> u64 {
        let stored = self.stored.get(m).copied().unwrap_or(0);
        stored.saturating_add(self.in_flight.get(m).copied().unwrap_or(0))
    }

    fn total(&self) -> u64 {
        self.stored_total.saturating_add(self.in_flight_total)
    }

    fn add_entry(&mut self, cid: Cid, e: Entry) {
        if self.entries.insert(cid, e).is_none() {
            let s = self.stored.entry(e.uploader).or_default();
            *s = s.saturating_add(e.size);
            self.stored_total = self.stored_total.saturating_add(e.size);
        }
    }

    fn remove_entry(&mut self, cid: &Cid) -> Option<Entry> {
        let e = self.entries.remove(cid)?;
        if let Some(s) = self.stored.get_mut(&e.uploader) {
            *s = s.saturating_sub(e.size);
            if *s == 0 {
                self.stored.remove(&e.uploader);
            }
        }
        self.stored_total = self.stored_total.saturating_sub(e.size);
        Some(e)
    }

    fn release(&mut self, m: &[u8; 32], n: u64) {
        if let Some(f) = self.in_flight.get_mut(m) {
            *f = f.saturating_sub(n);
            if *f == 0 {
                self.in_flight.remove(m);
            }
        }
        self.in_flight_total = self.in_flight_total.saturating_sub(n);
    }

    fn encode(&self) -> String {
        let mut out = String::from(HEADER);
        out.push('\n');
        for (cid, e) in &self.entries {
            out.push_str(&format!("{cid} {} {}\n", hex::encode(e.uploader), e.size));
        }
        out
    }
}

fn parse_line(line: &str) -> Result<(Cid, Entry), String> {
    let mut parts = line.split(' ');
    let (Some(cid), Some(uploader), Some(size), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected `cid fingerprint size`".into());
    };
    let cid = cid.parse::<Cid>().map_err(|e| format!("cid: {e}"))?;
    let uploader = hex::decode(uploader)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or("fingerprint is not 64 hex digits")?;
    let size = size.parse().map_err(|e| format!("size: {e}"))?;
    Ok((cid, Entry { uploader, size }))
}

/// The upload index with its quotas.
pub struct UploadLedger {
    path: PathBuf,
    quotas: Quotas,
    usage: Mutex<Usage>,
}

impl UploadLedger {
    /// Opens (creating `dir` if needed) the index in `dir`.
    pub fn open(dir: &Path, quotas: Quotas) -> Result<Arc<Self>, UploadError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| UploadError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(INDEX_FILE);
        let mut usage = Usage::default();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let (cid, e) = parse_line(line).map_err(|reason| UploadError::Corrupt {
                        path: path.clone(),
                        line: i + 1,
                        reason,
                    })?;
                    usage.add_entry(cid, e);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        Ok(Arc::new(UploadLedger {
            path,
            quotas,
            usage: Mutex::new(usage),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Usage> {
        // A panic while holding the lock leaves consistent counters (every update is a few
        // saturating additions), so a poisoned lock is still usable.
        self.usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn persist(&self, usage: &Usage) -> Result<(), UploadError> {
        crate::durable::write_atomic(&self.path, usage.encode().as_bytes()).map_err(|source| {
            UploadError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// The quotas in force.
    pub fn quotas(&self) -> Quotas {
        self.quotas
    }

    /// Bytes `member` has stored, and bytes the org has stored (uploads in flight excluded).
    pub fn stored(&self, member: &[u8; 32]) -> (u64, u64) {
        let u = self.lock();
        (u.stored.get(member).copied().unwrap_or(0), u.stored_total)
    }

    /// Who uploaded `cid` and how large it is, if this gateway stored it.
    pub fn uploader(&self, cid: &Cid) -> Option<([u8; 32], u64)> {
        self.lock().entries.get(cid).map(|e| (e.uploader, e.size))
    }

    /// Starts accounting an upload by `member`.
    pub fn reserve(self: &Arc<Self>, member: [u8; 32]) -> Reservation {
        Reservation {
            ledger: self.clone(),
            member,
            reserved: 0,
        }
    }

    /// Removes the entry [`Reservation::record`] wrote for a blob that then failed to be stored.
    pub fn forget(&self, cid: &Cid) -> Result<(), UploadError> {
        let mut u = self.lock();
        if u.remove_entry(cid).is_some() {
            self.persist(&u)?;
        }
        Ok(())
    }

    /// Drops index entries whose blob is no longer in `blobs` (a crash between writing the
    /// index and making the blob visible). Call before serving. Returns how many were dropped.
    pub async fn reconcile(&self, blobs: &BlobStore) -> Result<usize, UploadError> {
        let cids: Vec<Cid> = self.lock().entries.keys().copied().collect();
        let mut gone = Vec::new();
        for cid in cids {
            // A store error is not proof that the blob is gone: keep the entry.
            if let Ok(None) = blobs.size(&cid).await {
                gone.push(cid);
            }
        }
        if gone.is_empty() {
            return Ok(0);
        }
        let mut u = self.lock();
        for cid in &gone {
            u.remove_entry(cid);
        }
        self.persist(&u)?;
        Ok(gone.len())
    }
}

/// Bytes an upload in progress holds against the quotas; released when dropped unless recorded.
pub struct Reservation {
    ledger: Arc<UploadLedger>,
    member: [u8; 32],
    reserved: u64,
}

impl Reservation {
    /// Reserves `n` more bytes, or refuses if the member's or the org's quota would be exceeded.
    pub fn grow(&mut self, n: u64) -> Result<(), UploadError> {
        let q = self.ledger.quotas;
        let mut u = self.ledger.lock();
        let member = u.member(&self.member);
        if member.saturating_add(n) > q.member_bytes {
            return Err(UploadError::MemberQuota {
                member: hex::encode(self.member),
                used: member,
                adding: n,
                limit: q.member_bytes,
            });
        }
        let total = u.total();
        if total.saturating_add(n) > q.org_bytes {
            return Err(UploadError::OrgQuota {
                used: total,
                adding: n,
                limit: q.org_bytes,
            });
        }
        let f = u.in_flight.entry(self.member).or_default();
        *f = f.saturating_add(n);
        u.in_flight_total = u.in_flight_total.saturating_add(n);
        self.reserved = self.reserved.saturating_add(n);
        Ok(())
    }

    /// Charges the finished upload of `cid` (`size` bytes) to the member, durably, before the
    /// blob is made visible. A blob already in the index stays charged to whoever stored it
    /// first and costs nothing again. Returns whether a new entry was written, for
    /// [`UploadLedger::forget`] if making the blob visible then fails.
    pub fn record(mut self, cid: &Cid, size: u64) -> Result<bool, UploadError> {
        let ledger = self.ledger.clone();
        let mut u = ledger.lock();
        u.release(&self.member, self.reserved);
        self.reserved = 0;
        if u.entries.contains_key(cid) {
            return Ok(false);
        }
        u.add_entry(
            *cid,
            Entry {
                uploader: self.member,
                size,
            },
        );
        if let Err(e) = ledger.persist(&u) {
            u.remove_entry(cid);
            return Err(e);
        }
        Ok(true)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.reserved > 0 {
            self.ledger.lock().release(&self.member, self.reserved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: [u8; 32] = [1; 32];
    const BOB: [u8; 32] = [2; 32];

    fn quotas(member_bytes: u64, org_bytes: u64) -> Quotas {
        Quotas {
            member_bytes,
            org_bytes,
        }
    }

    fn upload(l: &Arc<UploadLedger>, who: [u8; 32], data: &[u8]) -> Result<bool, UploadError> {
        let mut r = l.reserve(who);
        for c in data.chunks(3) {
            r.grow(c.len() as u64)?;
        }
        r.record(&Cid::of(data), data.len() as u64)
    }

    #[test]
    fn a_member_over_its_quota_is_refused_naming_the_setting() -> Result<(), UploadError> {
        let dir = tempfile::tempdir().map_err(|source| UploadError::Io {
            path: "tmp".into(),
            source,
        })?;
        let l = UploadLedger::open(dir.path(), quotas(10, 100))?;
        assert!(upload(&l, ALICE, b"0123456")?);
        let err = upload(&l, ALICE, b"abcd").err();
        assert!(
            matches!(err, Some(UploadError::MemberQuota { limit: 10, .. })),
            "{err:?}"
        );
        assert!(
            err.is_some_and(|e| e.to_string().contains("upload_quota_member_bytes")),
            "the refusal names the config key"
        );
        // The refused upload's reservation was released: Alice can still add 3 bytes, and
        // another member is not affected.
        assert!(upload(&l, ALICE, b"xyz")?);
        assert!(upload(&l, BOB, b"0123456789")?);
        assert_eq!(l.stored(&ALICE), (10, 20));
        Ok(())
    }

    #[test]
    fn the_org_quota_counts_every_member_and_uploads_in_flight() -> Result<(), UploadError> {
        let dir = tempfile::tempdir().map_err(|source| UploadError::Io {
            path: "tmp".into(),
            source,
        })?;
        let l = UploadLedger::open(dir.path(), quotas(10, 15))?;
        assert!(upload(&l, ALICE, b"0123456789")?);
        // Bob's upload in flight holds 4 bytes, so with Alice's 10 stored a third member's 2
        // bytes exceed the org's 15; once Bob's upload fails, they fit.
        let mut bob = l.reserve(BOB);
        bob.grow(4)?;
        let err = l.reserve([3; 32]).grow(2).err();
        assert!(
            matches!(
                err,
                Some(UploadError::OrgQuota {
                    used: 14,
                    limit: 15,
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(
            err.is_some_and(|e| e.to_string().contains("upload_quota_org_bytes")),
            "the refusal names the config key"
        );
        drop(bob);
        l.reserve([3; 32]).grow(5)?;
        Ok(())
    }

    #[test]
    fn usage_survives_a_restart_and_a_blob_is_charged_once() -> Result<(), UploadError> {
        let dir = tempfile::tempdir().map_err(|source| UploadError::Io {
            path: "tmp".into(),
            source,
        })?;
        let l = UploadLedger::open(dir.path(), quotas(10, 100))?;
        assert!(upload(&l, ALICE, b"01234567")?);
        // The same bytes again, by anyone: already stored, not charged twice.
        assert!(!upload(&l, BOB, b"01234567")?);
        assert_eq!(l.stored(&BOB), (0, 8));
        drop(l);
        let l = UploadLedger::open(dir.path(), quotas(10, 100))?;
        assert_eq!(l.stored(&ALICE), (8, 8));
        assert_eq!(l.uploader(&Cid::of(b"01234567")), Some((ALICE, 8)));
        assert!(matches!(
            upload(&l, ALICE, b"abc"),
            Err(UploadError::MemberQuota { used: 8, .. })
        ));
        Ok(())
    }

    #[tokio::test]
    async fn reconcile_drops_entries_whose_blob_never_became_visible() -> Result<(), UploadError> {
        let dir = tempfile::tempdir().map_err(|source| UploadError::Io {
            path: "tmp".into(),
            source,
        })?;
        let blobs =
            BlobStore::open(&dir.path().join("blobs"), 1 << 20).map_err(|e| UploadError::Io {
                path: "blobs".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let l = UploadLedger::open(dir.path(), quotas(100, 100))?;
        // As if the gateway died after writing the index entry, before the rename.
        assert!(upload(&l, ALICE, b"never stored")?);
        assert_eq!(l.reconcile(&blobs).await?, 1);
        assert_eq!(l.stored(&ALICE), (0, 0));
        let again = UploadLedger::open(dir.path(), quotas(100, 100))?;
        assert_eq!(again.stored(&ALICE), (0, 0));
        Ok(())
    }

    #[test]
    fn a_damaged_index_is_refused_with_its_line() {
        let Ok(dir) = tempfile::tempdir() else { return };
        let _ = std::fs::write(dir.path().join(INDEX_FILE), "# header\nnot an entry\n");
        assert!(matches!(
            UploadLedger::open(dir.path(), quotas(1, 1)),
            Err(UploadError::Corrupt { line: 2, .. })
        ));
    }
}
