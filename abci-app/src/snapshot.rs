//! State-sync snapshots: what a node offers to peers joining by state sync, and how a joining
//! node rebuilds its store from one.
//!
//! A snapshot of height `H` is every key and value of the state after `H`, in key order, cut into
//! chunks of about [`CHUNK_BYTES`]. Its metadata lists the SHA-256 of each chunk, and its hash is
//! the SHA-256 of those hashes, so a chunk is checked the moment it arrives and a bad sender is
//! named to CometBFT. Nothing in a snapshot is trusted: the restored entries must give the app
//! hash CometBFT's light client verified for `H`, or the snapshot is rejected and nothing stays.
//! Equal states give equal snapshots, so every node offers the same hash for a height and
//! CometBFT fetches chunks from all of them.
//!
//! Taking one costs Commit a RocksDB checkpoint (hard links); the chunks are written from it on
//! a background thread, into `<dir>/<height>/`, and appear only once complete (a rename).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::{Committed, Storage, StorageError};

/// The one snapshot format: length-prefixed key/value records in key order.
pub const FORMAT: u32 = 1;

/// A chunk's target size; CometBFT's p2p limit for a chunk message is 16 MB.
pub const CHUNK_BYTES: usize = 4 << 20;

/// The most chunks a snapshot may claim (64 GiB of state): an offer above it is refused before
/// any memory is set aside for it.
const MAX_CHUNKS: u32 = 16_384;

/// The largest chunk a restore takes: this node's chunks are [`CHUNK_BYTES`] plus at most one
/// record, and CometBFT's p2p limit for a chunk message is 16 MB anyway.
const MAX_CHUNK_BYTES: usize = 16 << 20;

/// The most state a restore holds in memory before the app-hash check (the chunks are kept until
/// the last arrives): a peer's self-consistent but endless snapshot stops here, not at the
/// node's memory limit.
pub const MAX_RESTORE_BYTES: u64 = 8 << 30;

/// A snapshot or restore failure.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The snapshot directory failed.
    #[error("snapshot directory {path}: {error}")]
    Io {
        /// The path.
        path: String,
        /// What failed.
        error: std::io::Error,
    },
    /// A snapshot's metadata or chunk is malformed.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// The snapshot's state went through an upgrade this build does not know.
    #[error(
        "the snapshot's state went through upgrade {0:?}, which this build does not know: \
         start the build that knows it"
    )]
    UnknownUpgrade(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |error| SnapshotError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// What a snapshot's metadata says (JSON in the ABCI `Snapshot.metadata`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The chain's genesis height (initial height − 1): versions count from it.
    pub genesis_height: u64,
    /// Records in the snapshot.
    pub entries: u64,
    /// SHA-256 of each chunk, hex.
    pub chunk_hashes: Vec<String>,
}

impl Metadata {
    /// The snapshot's hash: SHA-256 over its chunks' hashes.
    pub fn hash(&self) -> Result<[u8; 32], SnapshotError> {
        let mut h = Sha256::new();
        for c in &self.chunk_hashes {
            h.update(chunk_hash_bytes(c)?);
        }
        Ok(h.finalize().into())
    }
}

fn chunk_hash_bytes(hex_hash: &str) -> Result<[u8; 32], SnapshotError> {
    hex::decode(hex_hash)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| SnapshotError::Malformed(format!("chunk hash {hex_hash:?} is not 32 bytes")))
}

/// A snapshot as ListSnapshots reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Height.
    pub height: u64,
    /// Format ([`FORMAT`]).
    pub format: u32,
    /// Chunk count.
    pub chunks: u32,
    /// [`Metadata::hash`].
    pub hash: [u8; 32],
    /// The JSON metadata.
    pub metadata: Vec<u8>,
}

fn push_record(chunk: &mut Vec<u8>, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
    for part in [key, value] {
        let len = u32::try_from(part.len())
            .map_err(|_| SnapshotError::Malformed("a record over 4 GiB".into()))?;
        chunk.extend_from_slice(&len.to_be_bytes());
        chunk.extend_from_slice(part);
    }
    Ok(())
}

/// One key and its value.
pub type Record = (Vec<u8>, Vec<u8>);

/// The records of one chunk.
pub fn decode_chunk(mut chunk: &[u8]) -> Result<Vec<Record>, SnapshotError> {
    let mut out = Vec::new();
    let take = |chunk: &mut &[u8]| -> Result<Vec<u8>, SnapshotError> {
        let (len, rest) = chunk
            .split_first_chunk::<4>()
            .ok_or_else(|| SnapshotError::Malformed("a record is cut short".into()))?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(SnapshotError::Malformed("a record is cut short".into()));
        }
        let (part, rest) = rest.split_at(len);
        *chunk = rest;
        Ok(part.to_vec())
    };
    while !chunk.is_empty() {
        let key = take(&mut chunk)?;
        let value = take(&mut chunk)?;
        out.push((key, value));
    }
    Ok(out)
}

/// Writes the snapshot of `storage`'s last committed state into `out` (which must not exist),
/// through `<out>.tmp`; returns its metadata.
pub fn write_snapshot(
    storage: &Storage,
    out: &Path,
    chunk_bytes: usize,
) -> Result<Metadata, SnapshotError> {
    let genesis_height = storage.genesis_height()?.ok_or(StorageError::Empty)?;
    let tmp = out.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let mut meta = Metadata {
        genesis_height,
        entries: 0,
        chunk_hashes: Vec::new(),
    };
    let mut chunk = Vec::with_capacity(chunk_bytes);
    let flush = |chunk: &mut Vec<u8>, meta: &mut Metadata| -> Result<(), SnapshotError> {
        let path = tmp.join(format!("{}.chunk", meta.chunk_hashes.len()));
        std::fs::write(&path, &*chunk).map_err(io(&path))?;
        meta.chunk_hashes
            .push(hex::encode(Sha256::digest(chunk.as_slice())));
        chunk.clear();
        Ok(())
    };
    let mut failed = None;
    storage
        .for_each_entry(|k, v| {
            if let Err(e) = push_record(&mut chunk, k, v) {
                failed = Some(e);
                return Err(StorageError::Corrupt("a record over 4 GiB".into()));
            }
            meta.entries += 1;
            if chunk.len() >= chunk_bytes
                && let Err(e) = flush(&mut chunk, &mut meta)
            {
                failed = Some(e);
                return Err(StorageError::Corrupt("writing a chunk failed".into()));
            }
            Ok(())
        })
        .map_err(|e| failed.take().unwrap_or(SnapshotError::Storage(e)))?;
    if !chunk.is_empty() || meta.chunk_hashes.is_empty() {
        flush(&mut chunk, &mut meta)?;
    }
    let meta_path = tmp.join("metadata.json");
    let bytes = serde_json::to_vec(&meta).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    std::fs::write(&meta_path, bytes).map_err(io(&meta_path))?;
    std::fs::rename(&tmp, out).map_err(io(out))?;
    Ok(meta)
}

/// The snapshots a node takes and serves.
#[derive(Clone, Debug)]
pub struct Snapshots {
    dir: PathBuf,
    interval: u64,
    keep: usize,
    busy: Arc<AtomicBool>,
}

impl Snapshots {
    /// Snapshots every `interval` heights (0: none taken, only served if present) in `dir`,
    /// keeping the newest `keep`. Removes what a crash left half-written.
    pub fn new(dir: PathBuf, interval: u64, keep: usize) -> Result<Self, SnapshotError> {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.ends_with(".tmp") || n.starts_with("checkpoint-")) {
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(Snapshots {
            dir,
            interval,
            keep: keep.max(1),
            busy: Arc::new(AtomicBool::new(false)),
        })
    }

    /// After Commit of `committed`: at a multiple of the interval, checkpoints the store and
    /// writes the snapshot from it on a background thread (skipped while the previous one is
    /// still being written). Never fails the block: a failure is logged.
    pub fn after_commit(&self, storage: &Storage, committed: Committed) {
        if self.interval == 0 || !committed.height.is_multiple_of(self.interval) {
            return;
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                height = committed.height,
                "previous snapshot still being written; skipping this one"
            );
            return;
        }
        let checkpoint = self.dir.join(format!("checkpoint-{}", committed.height));
        if let Err(e) = storage.checkpoint(&checkpoint) {
            tracing::error!(height = committed.height, error = %e, "snapshot checkpoint failed");
            self.busy.store(false, Ordering::Release);
            return;
        }
        let this = self.clone();
        std::thread::spawn(move || {
            // Free for the next snapshot however this thread ends, a panic included.
            struct Idle(Arc<AtomicBool>);
            impl Drop for Idle {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::Release);
                }
            }
            let _idle = Idle(this.busy.clone());
            let result = this.write_from(&checkpoint, committed);
            let _ = std::fs::remove_dir_all(&checkpoint);
            match result {
                Ok(meta) => tracing::info!(
                    height = committed.height,
                    chunks = meta.chunk_hashes.len(),
                    entries = meta.entries,
                    "snapshot taken"
                ),
                Err(e) => tracing::error!(height = committed.height, error = %e, "snapshot failed"),
            }
        });
    }

    fn write_from(
        &self,
        checkpoint: &Path,
        committed: Committed,
    ) -> Result<Metadata, SnapshotError> {
        let store = Storage::open_existing(checkpoint)?;
        if store.committed()? != Some(committed) {
            return Err(SnapshotError::Malformed(format!(
                "the checkpoint does not hold height {}",
                committed.height
            )));
        }
        let meta = write_snapshot(
            &store,
            &self.dir.join(committed.height.to_string()),
            CHUNK_BYTES,
        )?;
        self.prune()?;
        Ok(meta)
    }

    fn heights(&self) -> Result<Vec<u64>, SnapshotError> {
        let mut heights: Vec<u64> = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        heights.sort_unstable();
        Ok(heights)
    }

    fn prune(&self) -> Result<(), SnapshotError> {
        let heights = self.heights()?;
        for h in &heights[..heights.len().saturating_sub(self.keep)] {
            let path = self.dir.join(h.to_string());
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        }
        Ok(())
    }

    /// The complete snapshots on disk, newest first.
    pub fn list(&self) -> Result<Vec<Listed>, SnapshotError> {
        let mut out = Vec::new();
        for height in self.heights()?.into_iter().rev() {
            let path = self.dir.join(height.to_string()).join("metadata.json");
            // One unreadable snapshot (being pruned right now, or damaged) hides only itself.
            let listed = std::fs::read(&path).map_err(io(&path)).and_then(|bytes| {
                let meta: Metadata = serde_json::from_slice(&bytes)
                    .map_err(|e| SnapshotError::Malformed(format!("{}: {e}", path.display())))?;
                Ok(Listed {
                    height,
                    format: FORMAT,
                    chunks: u32::try_from(meta.chunk_hashes.len())
                        .map_err(|_| SnapshotError::Malformed("too many chunks".into()))?,
                    hash: meta.hash()?,
                    metadata: bytes,
                })
            });
            match listed {
                Ok(l) => out.push(l),
                Err(e) => tracing::warn!(height, error = %e, "snapshot not offered"),
            }
        }
        Ok(out)
    }

    /// Chunk `index` of the snapshot at `height` (`None`: no such snapshot or chunk).
    pub fn chunk(&self, height: u64, format: u32, index: u32) -> Option<Vec<u8>> {
        if format != FORMAT {
            return None;
        }
        std::fs::read(
            self.dir
                .join(height.to_string())
                .join(format!("{index}.chunk")),
        )
        .ok()
    }
}

/// Why an offered snapshot is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// A format this node does not read.
    #[error("snapshot format {0} is not {FORMAT}")]
    Format(u32),
    /// The snapshot itself is unusable.
    #[error("{0}")]
    Snapshot(String),
}

/// What a chunk did to the restore.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Taken; more to come.
    More,
    /// Its hash is not the metadata's: fetch it again, from someone else.
    Refetch,
    /// The last chunk: the entries are ready for [`Restore::finish`].
    Complete,
}

/// A snapshot being restored, chunk by chunk.
#[derive(Debug)]
pub struct Restore {
    height: u64,
    app_hash: [u8; 32],
    meta: Metadata,
    /// The metadata's chunk hashes, decoded.
    hashes: Vec<[u8; 32]>,
    chunks: Vec<Option<Vec<u8>>>,
    /// Bytes of the chunks held.
    held: u64,
}

impl Restore {
    /// OfferSnapshot: accepts a snapshot whose metadata matches its hash and chunk count;
    /// `app_hash` is what the light client verified for its height.
    pub fn offer(
        height: u64,
        format: u32,
        chunks: u32,
        hash: &[u8],
        metadata: &[u8],
        app_hash: &[u8],
    ) -> Result<Restore, OfferError> {
        if format != FORMAT {
            return Err(OfferError::Format(format));
        }
        let bad = |m: String| OfferError::Snapshot(m);
        let meta: Metadata = serde_json::from_slice(metadata)
            .map_err(|e| bad(format!("metadata is not a NeuroData snapshot's: {e}")))?;
        if chunks == 0 || chunks > MAX_CHUNKS || meta.chunk_hashes.len() != chunks as usize {
            return Err(bad(format!(
                "{chunks} chunks offered, metadata lists {} (1..={MAX_CHUNKS})",
                meta.chunk_hashes.len()
            )));
        }
        if meta.hash().map_err(|e| bad(e.to_string()))?.as_slice() != hash {
            return Err(bad("the snapshot hash is not that of its chunk list".into()));
        }
        if height <= meta.genesis_height {
            return Err(bad(format!(
                "height {height} is before the genesis height {}",
                meta.genesis_height
            )));
        }
        let app_hash = <[u8; 32]>::try_from(app_hash)
            .map_err(|_| bad("the verified app hash is not 32 bytes".into()))?;
        let hashes = meta
            .chunk_hashes
            .iter()
            .map(|h| chunk_hash_bytes(h))
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Restore {
            height,
            app_hash,
            chunks: vec![None; chunks as usize],
            meta,
            hashes,
            held: 0,
        })
    }

    /// The snapshot's height.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// ApplySnapshotChunk: keeps chunk `index` if its hash is the metadata's.
    pub fn apply(&mut self, index: u32, chunk: &[u8]) -> Result<Applied, OfferError> {
        let i = index as usize;
        let Some(expected) = self.hashes.get(i) else {
            return Err(OfferError::Snapshot(format!(
                "chunk {index} of a snapshot of {} chunks",
                self.chunks.len()
            )));
        };
        if <[u8; 32]>::from(Sha256::digest(chunk)) != *expected {
            return Ok(Applied::Refetch);
        }
        // The chunk is the one the metadata names: if it is too big, so is the snapshot.
        if chunk.len() > MAX_CHUNK_BYTES {
            return Err(OfferError::Snapshot(format!(
                "chunk {index} is {} bytes (at most {MAX_CHUNK_BYTES})",
                chunk.len()
            )));
        }
        if self.chunks[i].is_none() {
            self.held += chunk.len() as u64;
        }
        if self.held > MAX_RESTORE_BYTES {
            return Err(OfferError::Snapshot(format!(
                "the snapshot holds more than {MAX_RESTORE_BYTES} bytes"
            )));
        }
        self.chunks[i] = Some(chunk.to_vec());
        Ok(if self.chunks.iter().all(Option::is_some) {
            Applied::Complete
        } else {
            Applied::More
        })
    }

    /// Writes the complete snapshot into the empty `storage`: the records must be in strictly
    /// increasing key order and give the verified app hash, their last block must be the
    /// snapshot's height, and this build (which knows the upgrades `known`) must know every
    /// upgrade the state went through — else it would run that state under older rules.
    pub fn finish(self, storage: &Storage, known: &[&str]) -> Result<Committed, SnapshotError> {
        let mut entries: Vec<Record> = Vec::new();
        for chunk in self.chunks {
            let chunk =
                chunk.ok_or_else(|| SnapshotError::Malformed("a chunk is missing".into()))?;
            for (k, v) in decode_chunk(&chunk)? {
                if entries.last().is_some_and(|(last, _)| *last >= k) {
                    return Err(SnapshotError::Malformed(
                        "records are not in strictly increasing key order".into(),
                    ));
                }
                entries.push((k, v));
            }
        }
        if entries.len() as u64 != self.meta.entries {
            return Err(SnapshotError::Malformed(format!(
                "{} records, metadata says {}",
                entries.len(),
                self.meta.entries
            )));
        }
        // Checked before the app hash only to give the clearer error; a forged record would
        // fail the app hash anyway.
        for (key, value) in &entries {
            let key = String::from_utf8_lossy(key);
            if let Some(name) = key.strip_prefix(crate::governance::state_key::UPGRADES_APPLIED)
                && !known.contains(&name)
            {
                return Err(SnapshotError::UnknownUpgrade(name.to_owned()));
            }
            if key == crate::app::state_key::block() {
                let block = <neurodata_proto::chain::v1::BlockInfo as prost::Message>::decode(
                    value.as_slice(),
                )
                .map_err(|e| SnapshotError::Malformed(format!("the block record: {e}")))?;
                if block.height != self.height {
                    return Err(SnapshotError::Malformed(format!(
                        "the state is of height {}, the snapshot says {}",
                        block.height, self.height
                    )));
                }
            }
        }
        Ok(storage.restore(
            self.meta.genesis_height,
            self.height,
            self.app_hash,
            &entries,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn store(dir: &Path, blocks: u64) -> Storage {
        let s = Storage::open(dir).unwrap();
        let mut w = BTreeMap::new();
        for k in 0..50 {
            w.insert(format!("key/{k:03}"), Some(vec![k as u8; 40]));
        }
        s.commit(s.prepare(4, true, w).unwrap()).unwrap();
        for h in 5..5 + blocks {
            let mut w = BTreeMap::new();
            w.insert(format!("key/{:03}", h % 50), Some(h.to_be_bytes().to_vec()));
            w.insert(format!("key/{:03}", (h + 7) % 50), None);
            s.commit(s.prepare(h, false, w).unwrap()).unwrap();
        }
        s
    }

    fn listed_of(dir: &Path, src: &Storage, chunk_bytes: usize) -> (Listed, Vec<Vec<u8>>) {
        let out = dir.join("snap");
        let meta = write_snapshot(src, &out, chunk_bytes).unwrap();
        let metadata = std::fs::read(out.join("metadata.json")).unwrap();
        let chunks = (0..meta.chunk_hashes.len())
            .map(|i| std::fs::read(out.join(format!("{i}.chunk"))).unwrap())
            .collect();
        let listed = Listed {
            height: src.committed().unwrap().unwrap().height,
            format: FORMAT,
            chunks: meta.chunk_hashes.len() as u32,
            hash: meta.hash().unwrap(),
            metadata,
        };
        (listed, chunks)
    }

    fn offer(l: &Listed, app_hash: &[u8]) -> Result<Restore, OfferError> {
        Restore::offer(l.height, l.format, l.chunks, &l.hash, &l.metadata, app_hash)
    }

    #[test]
    fn a_snapshot_restores_the_same_state_and_root_chunk_by_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let src = store(&dir.path().join("src"), 20);
        let at = src.committed().unwrap().unwrap();
        let (listed, chunks) = listed_of(dir.path(), &src, 300);
        assert!(chunks.len() > 3, "small chunks: {}", chunks.len());
        // Equal states, equal snapshots (so peers offer the same hash).
        let again = dir.path().join("again");
        let meta2 = write_snapshot(&src, &again, 300).unwrap();
        assert_eq!(meta2.hash().unwrap(), listed.hash);

        let dst = Storage::open(&dir.path().join("dst")).unwrap();
        let mut r = offer(&listed, &at.app_hash).unwrap();
        // Out of order, one arriving damaged first.
        let last = chunks.len() - 1;
        let mut bad = chunks[1].clone();
        bad[0] ^= 1;
        assert_eq!(r.apply(1, &bad).unwrap(), Applied::Refetch);
        for i in (0..chunks.len()).rev() {
            let want = if i == 0 {
                Applied::Complete
            } else {
                Applied::More
            };
            assert_eq!(
                r.apply(i as u32, &chunks[i]).unwrap(),
                want,
                "chunk {i} of {last}"
            );
        }
        assert_eq!(r.finish(&dst, &[]).unwrap(), at);
        assert_eq!(dst.genesis_height().unwrap(), Some(4));
        let mut a = Vec::new();
        let mut b = Vec::new();
        src.for_each_entry(|k, v| {
            a.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        dst.for_each_entry(|k, v| {
            b.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_snapshot_of_a_state_this_build_cannot_run_or_of_another_height_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = Storage::open(&dir.path().join("src")).unwrap();
        let block = |height: u64| {
            prost::Message::encode_to_vec(&neurodata_proto::chain::v1::BlockInfo {
                height,
                ..Default::default()
            })
        };
        let mut w = BTreeMap::new();
        w.insert(
            crate::governance::state_key::upgrade_applied("v9"),
            Some(b"applied".to_vec()),
        );
        w.insert(crate::app::state_key::block().to_owned(), Some(block(4)));
        src.commit(src.prepare(4, true, w).unwrap()).unwrap();
        let mut w = BTreeMap::new();
        w.insert(crate::app::state_key::block().to_owned(), Some(block(5)));
        src.commit(src.prepare(5, false, w).unwrap()).unwrap();
        let at = src.committed().unwrap().unwrap();
        let (listed, chunks) = listed_of(dir.path(), &src, 1 << 20);
        let restore = |l: &Listed| {
            let mut r = offer(l, &at.app_hash).unwrap();
            for (i, c) in chunks.iter().enumerate() {
                r.apply(i as u32, c).unwrap();
            }
            r
        };
        let dst = Storage::open(&dir.path().join("dst")).unwrap();
        // A build that does not know "v9" would run the state under the old rules.
        let e = restore(&listed).finish(&dst, &[]).unwrap_err();
        assert!(
            matches!(&e, SnapshotError::UnknownUpgrade(n) if n == "v9"),
            "{e}"
        );
        assert!(dst.committed().unwrap().is_none());
        // The state says height 5; a snapshot claiming 6 is refused.
        let mut later = listed.clone();
        later.height = 6;
        let e = restore(&later).finish(&dst, &["v9"]).unwrap_err();
        assert!(e.to_string().contains("the state is of height 5"), "{e}");
        assert!(dst.committed().unwrap().is_none());
        assert_eq!(restore(&listed).finish(&dst, &["v9"]).unwrap(), at);
    }

    #[test]
    fn offers_that_do_not_hold_together_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = store(&dir.path().join("src"), 5);
        let at = src.committed().unwrap().unwrap();
        let (l, _) = listed_of(dir.path(), &src, 300);
        let mut wrong = l.clone();
        wrong.format = 2;
        assert_eq!(
            offer(&wrong, &at.app_hash).unwrap_err(),
            OfferError::Format(2)
        );
        let mut wrong = l.clone();
        wrong.chunks += 1;
        assert!(offer(&wrong, &at.app_hash).is_err());
        let mut wrong = l.clone();
        wrong.hash[0] ^= 1;
        assert!(offer(&wrong, &at.app_hash).is_err());
        let mut wrong = l.clone();
        wrong.metadata = b"{not json".to_vec();
        assert!(offer(&wrong, &at.app_hash).is_err());
        assert!(offer(&l, &at.app_hash[..31]).is_err());
        let mut r = offer(&l, &at.app_hash).unwrap();
        assert!(r.apply(l.chunks, b"").is_err());
    }

    #[test]
    fn a_snapshot_that_does_not_give_the_verified_hash_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = store(&dir.path().join("src"), 5);
        let at = src.committed().unwrap().unwrap();
        let (l, chunks) = listed_of(dir.path(), &src, 1 << 20);
        // An honest snapshot offered against another height's hash.
        let mut other = at.app_hash;
        other[0] ^= 1;
        let mut r = offer(&l, &other).unwrap();
        for (i, c) in chunks.iter().enumerate() {
            r.apply(i as u32, c).unwrap();
        }
        let dst = Storage::open(&dir.path().join("dst")).unwrap();
        let e = r.finish(&dst, &[]).unwrap_err();
        assert!(
            e.to_string().contains("is not the verified app hash"),
            "{e}"
        );
        assert_eq!(dst.committed().unwrap(), None);

        // Records out of order (a forged but self-consistent snapshot) are refused.
        let mut forged = Vec::new();
        push_record(&mut forged, b"b", b"1").unwrap();
        push_record(&mut forged, b"a", b"2").unwrap();
        let meta = Metadata {
            genesis_height: 4,
            entries: 2,
            chunk_hashes: vec![hex::encode(Sha256::digest(&forged))],
        };
        let metadata = serde_json::to_vec(&meta).unwrap();
        let mut r =
            Restore::offer(9, FORMAT, 1, &meta.hash().unwrap(), &metadata, &at.app_hash).unwrap();
        assert_eq!(r.apply(0, &forged).unwrap(), Applied::Complete);
        let e = r.finish(&dst, &[]).unwrap_err();
        assert!(e.to_string().contains("strictly increasing"), "{e}");
        assert!(decode_chunk(&forged[..forged.len() - 1]).is_err());
    }

    #[test]
    fn snapshots_are_taken_at_the_interval_listed_newest_first_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let src = store(&dir.path().join("src"), 0);
        let snaps = Snapshots::new(dir.path().join("snaps"), 2, 2).unwrap();
        let mut h = 4;
        for _ in 0..7 {
            h += 1;
            let mut w = BTreeMap::new();
            w.insert(format!("h/{h}"), Some(vec![1]));
            let c = src.commit(src.prepare(h, false, w).unwrap()).unwrap();
            snaps.after_commit(&src, c);
            // One at a time: wait for the writer.
            while snaps.busy.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let listed = snaps.list().unwrap();
        let heights: Vec<u64> = listed.iter().map(|l| l.height).collect();
        assert_eq!(heights, vec![10, 8]);
        assert!(snaps.chunk(10, FORMAT, 0).is_some());
        assert!(snaps.chunk(10, FORMAT + 1, 0).is_none());
        assert!(snaps.chunk(6, FORMAT, 0).is_none());
        // A half-written one left by a crash is cleared on start.
        std::fs::create_dir_all(dir.path().join("snaps/12.tmp")).unwrap();
        std::fs::create_dir_all(dir.path().join("snaps/checkpoint-12")).unwrap();
        let again = Snapshots::new(dir.path().join("snaps"), 2, 2).unwrap();
        assert_eq!(again.list().unwrap().len(), 2);
        assert!(!dir.path().join("snaps/12.tmp").exists());
    }
}
