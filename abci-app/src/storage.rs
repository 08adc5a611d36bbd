//! Consensus state on disk: RocksDB under a Jellyfish Merkle tree (the `jmt` crate).
//!
//! Why jmt directly rather than cnidarium: reads here are synchronous RocksDB gets (cnidarium
//! hops to a blocking thread per read, which dominates a block of small transfers); proofs are
//! plain `SparseMerkleProof`s a client checks in one call; and every committed version stays
//! queryable, not just a recent-snapshot cache.
//!
//! Column families:
//! - `nodes`: tree nodes by `NodeKey` (borsh), append-only per version;
//! - `values`: `sha256(key) ‖ version_be` → value (for reads and proofs at any height);
//! - `latest`: raw key → value at the last commit (fast reads and prefix scans);
//! - `meta`: the last committed height and app hash, and the genesis height.
//!
//! The crash rule (ABCI spec): [`Storage::prepare`] (FinalizeBlock) computes the root and keeps
//! everything in memory; [`Storage::commit`] (Commit) writes all of it in one synced RocksDB
//! write batch. A crash before it leaves the previous height intact; after it, the new one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{KeyHash, OwnedValue, Sha256Jmt, Version};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options,
    WriteBatch, WriteOptions,
};
use sha2::Sha256;

use crate::state::{StateError, StateRead};

const NODES: &str = "nodes";
const VALUES: &str = "values";
const LATEST: &str = "latest";
const META: &str = "meta";

const META_LAST_HEIGHT: &[u8] = b"last_height";
const META_LAST_HASH: &[u8] = b"last_app_hash";
const META_GENESIS_HEIGHT: &[u8] = b"genesis_height";

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// The Merkle tree failed (missing node: corrupt or pruned).
    #[error("merkle tree: {0}")]
    Tree(String),
    /// A height before genesis or after the last commit.
    #[error("height {height} is not stored (genesis {genesis}, last {last})")]
    NoSuchHeight {
        /// Requested.
        height: u64,
        /// Genesis height.
        genesis: u64,
        /// Last committed.
        last: u64,
    },
    /// Nothing was committed yet.
    #[error("no state committed yet (InitChain has not run)")]
    Empty,
    /// A stored record is malformed.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// Another process (a running `neurodata-abci`) holds the store's lock.
    #[error(
        "the state store {path} is in use by another process (its RocksDB LOCK is held): stop \
         the node's neurodata-abci first"
    )]
    InUse {
        /// The store's directory.
        path: String,
    },
    /// `path` holds no store (opened without creating one).
    #[error("{path} holds no state store (no RocksDB CURRENT file)")]
    Missing {
        /// The directory.
        path: String,
    },
}

impl From<StorageError> for StateError {
    fn from(e: StorageError) -> Self {
        StateError::Storage(e.to_string())
    }
}

/// The last committed height and its app hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Height (the genesis height right after InitChain).
    pub height: u64,
    /// Merkle root of the state after that height.
    pub app_hash: [u8; 32],
}

/// A block's state changes with their new root, computed but not yet written.
pub struct PreparedCommit {
    /// Height these changes belong to.
    pub height: u64,
    /// The new app hash.
    pub app_hash: [u8; 32],
    version: Version,
    tree: TreeUpdateBatch,
    writes: BTreeMap<String, Option<Vec<u8>>>,
}

/// Tree nodes kept in memory: nodes are immutable once written (a key names a version), so any
/// cached node is correct; the newest ones are the top of the tree every block rewrites.
const NODE_CACHE_MAX: usize = 200_000;

type NodeCache = std::sync::Mutex<BTreeMap<NodeKey, Node>>;

/// The RocksDB-backed, Merkle-committed store.
#[derive(Clone)]
pub struct Storage {
    db: Arc<DB>,
    nodes: Arc<NodeCache>,
}

struct Tree<'a> {
    db: &'a DB,
    nodes: &'a NodeCache,
}

fn lock_nodes(c: &NodeCache) -> std::sync::MutexGuard<'_, BTreeMap<NodeKey, Node>> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StorageError> {
    db.cf_handle(name)
        .ok_or_else(|| StorageError::Corrupt(format!("column family {name} missing")))
}

fn value_key(key_hash: &KeyHash, version: Version) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(&key_hash.0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn u64_of(bytes: &[u8]) -> Result<u64, StorageError> {
    Ok(u64::from_be_bytes(bytes.try_into().map_err(|_| {
        StorageError::Corrupt("meta integer is not 8 bytes".into())
    })?))
}

impl TreeReader for Tree<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        if let Some(n) = lock_nodes(self.nodes).get(node_key) {
            return Ok(Some(n.clone()));
        }
        let key = borsh::to_vec(node_key)?;
        match self.db.get_cf(cf(self.db, NODES)?, key)? {
            None => Ok(None),
            Some(bytes) => {
                let node: Node = borsh::from_slice(&bytes)?;
                let mut cache = lock_nodes(self.nodes);
                if cache.len() >= NODE_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(node_key.clone(), node.clone());
                Ok(Some(node))
            }
        }
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        let target = value_key(&key_hash, max_version);
        let mut iter = self.db.iterator_cf(
            cf(self.db, VALUES)?,
            IteratorMode::From(&target, Direction::Reverse),
        );
        match iter.next() {
            None => Ok(None),
            Some(entry) => {
                let (k, v) = entry?;
                if k.len() != 40 || k[..32] != key_hash.0 {
                    return Ok(None);
                }
                // First byte: 1 = value follows, 0 = deleted at that version.
                match v.split_first() {
                    Some((1, value)) => Ok(Some(value.to_vec())),
                    _ => Ok(None),
                }
            }
        }
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("tree restore is not supported by this store")
    }
}

impl Storage {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with(path, true)
    }

    /// Opens the store in `path`, which must exist, taking its lock as a running app does: so it
    /// fails with [`StorageError::InUse`] while the node's app has it open, and a node started
    /// meanwhile cannot open it until this handle is dropped.
    pub fn open_existing(path: &Path) -> Result<Self, StorageError> {
        if !path.join("CURRENT").is_file() {
            return Err(StorageError::Missing {
                path: path.display().to_string(),
            });
        }
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, create: bool) -> Result<Self, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(create);
        opts.create_missing_column_families(true);
        // One shared block cache, and bloom filters so that reads of absent keys (a revocation
        // that does not exist, a fresh account) rarely touch an SST file.
        let cache = Cache::new_lru_cache(256 << 20);
        let cfs = [NODES, VALUES, LATEST, META].into_iter().map(|n| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_bloom_filter(10.0, false);
            let mut cf_opts = Options::default();
            cf_opts.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(n, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            // Another process's lock ("While lock file: …/LOCK") or this process's own ("lock
            // hold by current process … /LOCK").
            if e.kind() == rocksdb::ErrorKind::IOError && e.to_string().contains("LOCK") {
                StorageError::InUse {
                    path: path.display().to_string(),
                }
            } else {
                StorageError::Rocks(e)
            }
        })?;
        Ok(Storage {
            db: Arc::new(db),
            nodes: Arc::new(NodeCache::default()),
        })
    }

    /// Writes a consistent copy of the store as of its last write into `dir`, which must not
    /// exist (a RocksDB checkpoint: hard links to the immutable table files where `dir` is on the
    /// same filesystem, copies elsewhere). Every committed block is in it, since each Commit is
    /// one synced write batch, and nothing half-written is.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    fn tree(&self) -> Tree<'_> {
        Tree {
            db: &self.db,
            nodes: &self.nodes,
        }
    }

    /// The last committed height and app hash (`None` before InitChain).
    pub fn committed(&self) -> Result<Option<Committed>, StorageError> {
        let meta = cf(&self.db, META)?;
        let (Some(h), Some(hash)) = (
            self.db.get_cf(meta, META_LAST_HEIGHT)?,
            self.db.get_cf(meta, META_LAST_HASH)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Committed {
            height: u64_of(&h)?,
            app_hash: hash
                .as_slice()
                .try_into()
                .map_err(|_| StorageError::Corrupt("app hash is not 32 bytes".into()))?,
        }))
    }

    /// The height whose state InitChain wrote (initial height − 1).
    pub fn genesis_height(&self) -> Result<Option<u64>, StorageError> {
        self.db
            .get_cf(cf(&self.db, META)?, META_GENESIS_HEIGHT)?
            .map(|b| u64_of(&b))
            .transpose()
    }

    fn version(&self, height: u64) -> Result<Version, StorageError> {
        let genesis = self.genesis_height()?.ok_or(StorageError::Empty)?;
        let last = self.committed()?.map(|c| c.height).unwrap_or(genesis);
        if height < genesis || height > last {
            return Err(StorageError::NoSuchHeight {
                height,
                genesis,
                last,
            });
        }
        Ok(height - genesis)
    }

    /// Computes the root after applying `writes` at `height` (the genesis height for InitChain,
    /// else the last committed height + 1). Writes nothing.
    pub fn prepare(
        &self,
        height: u64,
        genesis: bool,
        writes: BTreeMap<String, Option<Vec<u8>>>,
    ) -> Result<PreparedCommit, StorageError> {
        let version = if genesis {
            0
        } else {
            let genesis_height = self.genesis_height()?.ok_or(StorageError::Empty)?;
            let last = self.committed()?.ok_or(StorageError::Empty)?.height;
            if height != last + 1 {
                return Err(StorageError::NoSuchHeight {
                    height,
                    genesis: genesis_height,
                    last,
                });
            }
            height - genesis_height
        };
        let latest = cf(&self.db, LATEST)?;
        // Deleting a key that was never committed (written and removed within one block) is not a
        // tree change: drop it so the tree never sees a delete of a missing leaf.
        let mut effective = BTreeMap::new();
        for (k, v) in writes {
            if v.is_none() && (genesis || self.db.get_pinned_cf(latest, k.as_bytes())?.is_none()) {
                continue;
            }
            effective.insert(k, v);
        }
        let reader = self.tree();
        let (root, batch) = Sha256Jmt::new(&reader)
            .put_value_set(
                effective
                    .iter()
                    .map(|(k, v)| (KeyHash::with::<Sha256>(k.as_bytes()), v.clone())),
                version,
            )
            .map_err(|e| StorageError::Tree(e.to_string()))?;
        Ok(PreparedCommit {
            height,
            app_hash: root.0,
            version,
            tree: batch,
            writes: effective,
        })
    }

    /// Writes a prepared block atomically and durably (one synced write batch).
    pub fn commit(&self, prepared: PreparedCommit) -> Result<Committed, StorageError> {
        let (nodes, values, latest, meta) = (
            cf(&self.db, NODES)?,
            cf(&self.db, VALUES)?,
            cf(&self.db, LATEST)?,
            cf(&self.db, META)?,
        );
        let mut batch = WriteBatch::default();
        for (key, node) in prepared.tree.node_batch.nodes() {
            let k = borsh::to_vec(key).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            let v = borsh::to_vec(node).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            batch.put_cf(nodes, k, v);
        }
        for ((version, key_hash), value) in prepared.tree.node_batch.values() {
            let mut v = Vec::with_capacity(1 + value.as_ref().map_or(0, Vec::len));
            match value {
                Some(value) => {
                    v.push(1);
                    v.extend_from_slice(value);
                }
                None => v.push(0),
            }
            batch.put_cf(values, value_key(key_hash, *version), v);
        }
        for (k, v) in &prepared.writes {
            match v {
                Some(v) => batch.put_cf(latest, k.as_bytes(), v),
                None => batch.delete_cf(latest, k.as_bytes()),
            }
        }
        if prepared.version == 0 {
            batch.put_cf(meta, META_GENESIS_HEIGHT, prepared.height.to_be_bytes());
        }
        batch.put_cf(meta, META_LAST_HEIGHT, prepared.height.to_be_bytes());
        batch.put_cf(meta, META_LAST_HASH, prepared.app_hash);
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        crate::fault::hit(crate::fault::Point::CommitWrite, prepared.height);
        self.db.write_opt(batch, &opts)?;
        crate::fault::hit(crate::fault::Point::AfterWrite, prepared.height);
        let mut cache = lock_nodes(&self.nodes);
        if cache.len() + prepared.tree.node_batch.nodes().len() > NODE_CACHE_MAX {
            cache.clear();
        }
        cache.extend(
            prepared
                .tree
                .node_batch
                .nodes()
                .iter()
                .map(|(k, n)| (k.clone(), n.clone())),
        );
        Ok(Committed {
            height: prepared.height,
            app_hash: prepared.app_hash,
        })
    }

    /// The app hash after `height`.
    pub fn root_at(&self, height: u64) -> Result<[u8; 32], StorageError> {
        let version = self.version(height)?;
        Sha256Jmt::new(&self.tree())
            .get_root_hash(version)
            .map(|r| r.0)
            .map_err(|e| StorageError::Tree(e.to_string()))
    }

    /// The value of `key` after `height`, with a proof against [`Storage::root_at`]`(height)`
    /// (borsh-encoded `jmt::proof::SparseMerkleProof<Sha256>`).
    pub fn get_with_proof(
        &self,
        key: &str,
        height: u64,
    ) -> Result<(Option<Vec<u8>>, Vec<u8>), StorageError> {
        let version = self.version(height)?;
        let (value, proof) = Sha256Jmt::new(&self.tree())
            .get_with_proof(KeyHash::with::<Sha256>(key.as_bytes()), version)
            .map_err(|e| StorageError::Tree(e.to_string()))?;
        let proof = borsh::to_vec(&proof).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        Ok((value, proof))
    }

    /// The value of `key` after `height` (no proof).
    pub fn get_at(&self, key: &str, height: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let version = self.version(height)?;
        self.tree()
            .get_value_option(version, KeyHash::with::<Sha256>(key.as_bytes()))
            .map_err(|e| StorageError::Tree(e.to_string()))
    }
}

/// Reads of the last committed state.
impl StateRead for Storage {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self
            .db
            .get_cf(cf(&self.db, LATEST)?, key.as_bytes())
            .map_err(StorageError::from)?)
    }

    fn prefix_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            cf(&self.db, LATEST)?,
            IteratorMode::From(prefix.as_bytes(), Direction::Forward),
        );
        for entry in iter {
            let (k, v) = entry.map_err(StorageError::from)?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            let key = String::from_utf8(k.to_vec())
                .map_err(|_| StorageError::Corrupt("non-UTF-8 key".into()))?;
            out.push((key, v.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(kv: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<Vec<u8>>> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn prepared_but_uncommitted_changes_are_not_visible_and_commit_persists_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        let g = s.prepare(0, true, writes(&[("a", Some("1"))])).unwrap();
        s.commit(g).unwrap();
        let p = s
            .prepare(1, false, writes(&[("a", Some("2")), ("b", Some("x"))]))
            .unwrap();
        assert_eq!(s.get_raw("a").unwrap(), Some(b"1".to_vec()));
        let hash = p.app_hash;
        drop(s);
        // Reopen: the prepared block was never committed.
        let s = Storage::open(dir.path()).unwrap();
        assert_eq!(s.committed().unwrap().unwrap().height, 0);
        let p2 = s
            .prepare(1, false, writes(&[("a", Some("2")), ("b", Some("x"))]))
            .unwrap();
        assert_eq!(p2.app_hash, hash, "same writes, same root");
        s.commit(p2).unwrap();
        drop(s);
        let s = Storage::open(dir.path()).unwrap();
        assert_eq!(
            s.committed().unwrap().unwrap(),
            Committed {
                height: 1,
                app_hash: hash
            }
        );
        assert_eq!(s.get_raw("a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.get_at("a", 0).unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn proofs_verify_against_the_root_of_their_height() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        s.commit(s.prepare(0, true, writes(&[("k", Some("v0"))])).unwrap())
            .unwrap();
        s.commit(
            s.prepare(1, false, writes(&[("k", Some("v1")), ("gone", Some("x"))]))
                .unwrap(),
        )
        .unwrap();
        s.commit(s.prepare(2, false, writes(&[("gone", None)])).unwrap())
            .unwrap();
        for (h, expect) in [(0, Some("v0")), (1, Some("v1")), (2, Some("v1"))] {
            let (v, proof) = s.get_with_proof("k", h).unwrap();
            assert_eq!(v.as_deref(), expect.map(str::as_bytes));
            let proof: jmt::proof::SparseMerkleProof<Sha256> = borsh::from_slice(&proof).unwrap();
            proof
                .verify(
                    jmt::RootHash(s.root_at(h).unwrap()),
                    KeyHash::with::<Sha256>(b"k"),
                    v,
                )
                .unwrap();
        }
        // Non-membership after deletion is provable too.
        let (v, proof) = s.get_with_proof("gone", 2).unwrap();
        assert_eq!(v, None);
        let proof: jmt::proof::SparseMerkleProof<Sha256> = borsh::from_slice(&proof).unwrap();
        proof
            .verify::<Vec<u8>>(
                jmt::RootHash(s.root_at(2).unwrap()),
                KeyHash::with::<Sha256>(b"gone"),
                None,
            )
            .unwrap();
        assert!(matches!(
            s.get_at("k", 3),
            Err(StorageError::NoSuchHeight { .. })
        ));
    }

    #[test]
    fn a_checkpoint_holds_the_last_commit_and_an_open_store_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        assert!(matches!(
            Storage::open_existing(&live),
            Err(StorageError::Missing { .. })
        ));
        let s = Storage::open(&live).unwrap();
        s.commit(s.prepare(0, true, writes(&[("a", Some("1"))])).unwrap())
            .unwrap();
        let last = s
            .commit(s.prepare(1, false, writes(&[("a", Some("2"))])).unwrap())
            .unwrap();
        assert!(matches!(
            Storage::open_existing(&live),
            Err(StorageError::InUse { .. })
        ));
        let copy = dir.path().join("copy");
        s.checkpoint(&copy).unwrap();
        // The copy is independent: a later commit to the live store is not in it.
        s.commit(s.prepare(2, false, writes(&[("a", Some("3"))])).unwrap())
            .unwrap();
        let c = Storage::open_existing(&copy).unwrap();
        assert_eq!(c.committed().unwrap(), Some(last));
        assert_eq!(c.get_raw("a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(c.root_at(1).unwrap(), last.app_hash);
    }

    #[test]
    fn prefix_scans_return_committed_keys_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        s.commit(
            s.prepare(
                0,
                true,
                writes(&[("p/b", Some("2")), ("p/a", Some("1")), ("q", Some("3"))]),
            )
            .unwrap(),
        )
        .unwrap();
        let keys: Vec<_> = s
            .prefix_raw("p/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec!["p/a", "p/b"]);
    }
}
