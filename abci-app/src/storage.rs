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
//! - `meta`: the last committed height and app hash, the genesis height, and the earliest height
//!   still readable (after pruning or a state-sync restore);
//! - `stale`: `since_version_be ‖ tag ‖ key` for every tree node (`n`) and value entry (`v`) that
//!   a later version replaced, so pruning deletes exactly what no kept version reads.
//!
//! Pruning (`keep_recent` heights, see [`Storage::with_pruning`]) runs inside Commit's write
//! batch: a node or value entry stale since version `s` is read only by versions below `s`, so
//! once the oldest kept version is `K` every entry with `s <= K` goes. A crash cannot leave half
//! a prune, and the earliest readable height moves in the same batch.
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
    WriteBatch, WriteBufferManager, WriteOptions,
};
use sha2::Sha256;

use crate::state::{StateError, StateRead};

const NODES: &str = "nodes";
const VALUES: &str = "values";
const LATEST: &str = "latest";
const META: &str = "meta";
const STALE: &str = "stale";

const META_LAST_HEIGHT: &[u8] = b"last_height";
const META_LAST_HASH: &[u8] = b"last_app_hash";
const META_GENESIS_HEIGHT: &[u8] = b"genesis_height";
const META_EARLIEST_HEIGHT: &[u8] = b"earliest_height";

/// Tags of the `stale` column family's entries.
const STALE_NODE: u8 = b'n';
const STALE_VALUE: u8 = b'v';

/// Versions one Commit prunes at most: turning pruning on for a long archive, or a large
/// `keep_recent` drop, spreads the deletions over many blocks instead of one huge write.
const MAX_PRUNE_STEP: u64 = 100;

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
    /// A height this node pruned (it keeps only recent heights).
    #[error(
        "height {height} was pruned: this node keeps heights from {earliest} on (its app runs \
         with --pruning-keep-recent); ask an archive node, or a height >= {earliest}"
    )]
    Pruned {
        /// Requested.
        height: u64,
        /// The earliest height still stored.
        earliest: u64,
    },
    /// A state-sync snapshot's entries do not give the app hash CometBFT's light client verified.
    #[error(
        "the restored state's app hash {got} is not the verified app hash {expected} of height \
         {height}: the snapshot is wrong"
    )]
    RestoreMismatch {
        /// The snapshot's height.
        height: u64,
        /// The app hash the light client verified (hex).
        expected: String,
        /// The root of the snapshot's entries (hex).
        got: String,
    },
    /// A restore into a store that already holds state.
    #[error(
        "the state store already holds state (height {height}): restore only into an empty one"
    )]
    NotEmpty {
        /// Its last committed height.
        height: u64,
    },
    /// A pruning setting that would delete what CometBFT may still ask for.
    #[error(
        "keep-recent {0} is too small: keep at least 2 heights (0 keeps every height), since \
         CometBFT's handshake may replay the last one"
    )]
    KeepRecentTooSmall(u64),
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

impl PreparedCommit {
    /// Keys written (set or deleted) and tree nodes added: the size of the block's change.
    pub fn size(&self) -> (usize, usize) {
        (self.writes.len(), self.tree.node_batch.nodes().len())
    }
}

/// Bytes of tree nodes kept in memory (an estimate, see [`node_bytes`]).
const NODE_CACHE_BYTES: usize = 64 << 20;

/// The store's RocksDB memory when no other size is given: the block cache, which also carries
/// the index and filter blocks and the memtables (charged to it), so one number bounds it.
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// Tree nodes kept in memory. Nodes are immutable once written (a key names a version), so any
/// cached node is correct. Commit inserts the nodes it writes and evicts those they replace, so
/// the cache holds the live tree (what the next block reads) rather than its history; nodes of
/// older versions enter only when a query reads them. Past [`NODE_CACHE_BYTES`] it starts over.
#[derive(Default)]
struct NodeCache {
    nodes: BTreeMap<NodeKey, Node>,
    bytes: usize,
}

/// About what one cached node costs: the map entry, the path's bytes, and an internal node's
/// boxed array of 16 child slots.
fn node_bytes(key: &NodeKey, node: &Node) -> usize {
    let children = match node {
        Node::Internal(_) => 16 * (32 + 8 + 16) + 16,
        _ => 0,
    };
    std::mem::size_of::<(NodeKey, Node)>()
        + 32
        + key.nibble_path().num_nibbles().div_ceil(2)
        + children
}

impl NodeCache {
    fn get(&self, key: &NodeKey) -> Option<&Node> {
        self.nodes.get(key)
    }

    fn insert(&mut self, key: NodeKey, node: Node) {
        let size = node_bytes(&key, &node);
        if self.bytes + size > NODE_CACHE_BYTES {
            self.nodes.clear();
            self.bytes = 0;
        }
        if self.nodes.insert(key, node).is_none() {
            self.bytes += size;
        }
    }

    fn remove(&mut self, key: &NodeKey) {
        if let Some(node) = self.nodes.remove(key) {
            self.bytes = self.bytes.saturating_sub(node_bytes(key, &node));
        }
    }
}

type SharedNodeCache = std::sync::Mutex<NodeCache>;

/// The store's memory: RocksDB's (bounded by the block cache's capacity, which the memtables and
/// the index and filter blocks are charged to) and the tree node cache's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreMemory {
    /// Bytes in RocksDB's block cache: data, index and filter blocks, and the memtables' charge.
    pub cache_bytes: usize,
    /// The block cache's capacity.
    pub cache_capacity: usize,
    /// Bytes in memtables (part of `cache_bytes`).
    pub memtable_bytes: u64,
    /// Table-reader memory outside the cache (small: index and filter blocks are in it).
    pub table_reader_bytes: u64,
    /// Tree nodes cached.
    pub tree_nodes: usize,
    /// About the tree node cache's bytes (at most its own bound).
    pub tree_bytes: usize,
}

/// The RocksDB-backed, Merkle-committed store.
#[derive(Clone)]
pub struct Storage {
    db: Arc<DB>,
    cache: Cache,
    cache_capacity: usize,
    nodes: Arc<SharedNodeCache>,
    /// Heights kept readable (0: all).
    keep_recent: u64,
}

struct Tree<'a> {
    db: &'a DB,
    nodes: &'a SharedNodeCache,
}

fn lock_nodes(c: &SharedNodeCache) -> std::sync::MutexGuard<'_, NodeCache> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StorageError> {
    db.cf_handle(name)
        .ok_or_else(|| StorageError::Corrupt(format!("column family {name} missing")))
}

fn stale_key(since: Version, tag: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.extend_from_slice(&since.to_be_bytes());
    k.push(tag);
    k.extend_from_slice(key);
    k
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
                lock_nodes(self.nodes).insert(node_key.clone(), node.clone());
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
    /// Opens (or creates) the store in `path`, with the default memory bound
    /// ([`DEFAULT_CACHE_BYTES`]).
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with(path, true, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store in `path` with `cache_bytes` of RocksDB block cache, which
    /// the memtables and the index and filter blocks are charged to.
    pub fn open_sized(path: &Path, cache_bytes: usize) -> Result<Self, StorageError> {
        Self::open_with(path, true, cache_bytes)
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
        Self::open_with(path, false, DEFAULT_CACHE_BYTES)
    }

    fn open_with(path: &Path, create: bool, cache_bytes: usize) -> Result<Self, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(create);
        opts.create_missing_column_families(true);
        // One shared block cache bounds RocksDB's memory: the memtables are charged to it (a
        // quarter of it fills before the largest is flushed), and so are the index and filter
        // blocks, which would otherwise grow with the number of SST files, that is with the
        // chain's age. Bloom filters, so that reads of absent keys (a revocation that does not
        // exist, a fresh account) rarely touch an SST file.
        let cache = Cache::new_lru_cache(cache_bytes);
        opts.set_write_buffer_manager(&WriteBufferManager::new_write_buffer_manager_with_cache(
            cache_bytes / 4,
            false,
            cache.clone(),
        ));
        let cfs = [NODES, VALUES, LATEST, META, STALE].into_iter().map(|n| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_bloom_filter(10.0, false);
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
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
            cache,
            cache_capacity: cache_bytes,
            nodes: Arc::new(SharedNodeCache::default()),
            keep_recent: 0,
        })
    }

    /// Keeps only the last `keep_recent` heights readable (0: every height, an archive node):
    /// each Commit then deletes the tree nodes and values only older heights read. At least 2,
    /// since CometBFT's handshake may replay the last block.
    pub fn with_pruning(mut self, keep_recent: u64) -> Result<Self, StorageError> {
        if keep_recent == 1 {
            return Err(StorageError::KeepRecentTooSmall(keep_recent));
        }
        self.keep_recent = keep_recent;
        Ok(self)
    }

    /// The earliest height whose state is readable (the genesis height unless pruned or
    /// restored from a snapshot); `None` before InitChain.
    pub fn earliest_height(&self) -> Result<Option<u64>, StorageError> {
        match self.db.get_cf(cf(&self.db, META)?, META_EARLIEST_HEIGHT)? {
            Some(b) => Ok(Some(u64_of(&b)?)),
            None => self.genesis_height(),
        }
    }

    /// Compacts every column family, so that space pruning freed is returned to the filesystem
    /// now rather than at RocksDB's next background compaction.
    pub fn compact(&self) -> Result<(), StorageError> {
        for name in [NODES, VALUES, LATEST, META, STALE] {
            self.db
                .compact_range_cf(cf(&self.db, name)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Calls `f` with every key and value of the last committed state, in key order (a
    /// state-sync snapshot's content).
    pub fn for_each_entry(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        for entry in self
            .db
            .iterator_cf(cf(&self.db, LATEST)?, IteratorMode::Start)
        {
            let (k, v) = entry?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// Writes the state of `height` from a state-sync snapshot's `entries` (key order, each key
    /// once) into this empty store, after checking that they give `app_hash`, the hash CometBFT's
    /// light client verified for that height. Nothing is written when they do not. Heights
    /// before `height` are not readable afterwards (as if pruned).
    pub fn restore(
        &self,
        genesis_height: u64,
        height: u64,
        app_hash: [u8; 32],
        entries: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Committed, StorageError> {
        if let Some(c) = self.committed()? {
            return Err(StorageError::NotEmpty { height: c.height });
        }
        let version = height
            .checked_sub(genesis_height)
            .ok_or(StorageError::NoSuchHeight {
                height,
                genesis: genesis_height,
                last: height,
            })?;
        let reader = RestoreReader {
            tree: self.tree(),
            empty_root: version.checked_sub(1),
        };
        let (root, batch) = Sha256Jmt::new(&reader)
            .put_value_set(
                entries
                    .iter()
                    .map(|(k, v)| (KeyHash::with::<Sha256>(k), Some(v.clone()))),
                version,
            )
            .map_err(|e| StorageError::Tree(e.to_string()))?;
        if root.0 != app_hash {
            return Err(StorageError::RestoreMismatch {
                height,
                expected: hex::encode(app_hash),
                got: hex::encode(root.0),
            });
        }
        let (latest, meta) = (cf(&self.db, LATEST)?, cf(&self.db, META)?);
        let mut wb = WriteBatch::default();
        self.put_tree(&mut wb, &batch)?;
        for (k, v) in entries {
            wb.put_cf(latest, k, v);
        }
        wb.put_cf(meta, META_GENESIS_HEIGHT, genesis_height.to_be_bytes());
        wb.put_cf(meta, META_EARLIEST_HEIGHT, height.to_be_bytes());
        wb.put_cf(meta, META_LAST_HEIGHT, height.to_be_bytes());
        wb.put_cf(meta, META_LAST_HASH, app_hash);
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(wb, &opts)?;
        Ok(Committed { height, app_hash })
    }

    /// Writes a consistent copy of the store as of its last write into `dir`, which must not
    /// exist (a RocksDB checkpoint: hard links to the immutable table files where `dir` is on the
    /// same filesystem, copies elsewhere). Every committed block is in it, since each Commit is
    /// one synced write batch, and nothing half-written is.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// What the store holds in memory now.
    pub fn memory(&self) -> Result<StoreMemory, StorageError> {
        let (mut memtable_bytes, mut table_reader_bytes) = (0, 0);
        for name in [NODES, VALUES, LATEST, META, STALE] {
            let cf = cf(&self.db, name)?;
            let prop = |p: &str| -> Result<u64, StorageError> {
                Ok(self.db.property_int_value_cf(cf, p)?.unwrap_or(0))
            };
            memtable_bytes += prop("rocksdb.cur-size-all-mem-tables")?;
            table_reader_bytes += prop("rocksdb.estimate-table-readers-mem")?;
        }
        let nodes = lock_nodes(&self.nodes);
        Ok(StoreMemory {
            cache_bytes: self.cache.get_usage(),
            cache_capacity: self.cache_capacity,
            memtable_bytes,
            table_reader_bytes,
            tree_nodes: nodes.nodes.len(),
            tree_bytes: nodes.bytes,
        })
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
        let earliest = self.earliest_height()?.unwrap_or(genesis);
        if height < earliest {
            return Err(StorageError::Pruned { height, earliest });
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

    /// Puts jmt's new tree nodes and versioned values into `batch` (a deleted value is stored as
    /// the tombstone tag 0, a present one as 1 and its bytes).
    fn put_tree(&self, batch: &mut WriteBatch, tree: &TreeUpdateBatch) -> Result<(), StorageError> {
        let (nodes, values) = (cf(&self.db, NODES)?, cf(&self.db, VALUES)?);
        for (key, node) in tree.node_batch.nodes() {
            let k = borsh::to_vec(key).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            let v = borsh::to_vec(node).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            batch.put_cf(nodes, k, v);
        }
        for ((version, key_hash), value) in tree.node_batch.values() {
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
        Ok(())
    }

    /// Writes a prepared block atomically and durably (one synced write batch).
    pub fn commit(&self, prepared: PreparedCommit) -> Result<Committed, StorageError> {
        let (latest, meta) = (cf(&self.db, LATEST)?, cf(&self.db, META)?);
        let mut batch = WriteBatch::default();
        self.put_tree(&mut batch, &prepared.tree)?;
        for (k, v) in &prepared.writes {
            match v {
                Some(v) => batch.put_cf(latest, k.as_bytes(), v),
                None => batch.delete_cf(latest, k.as_bytes()),
            }
        }
        self.index_stale(&mut batch, &prepared)?;
        if prepared.version == 0 {
            batch.put_cf(meta, META_GENESIS_HEIGHT, prepared.height.to_be_bytes());
        } else if self.keep_recent > 0 {
            self.prune_into(&mut batch, prepared.height, prepared.version)?;
        }
        batch.put_cf(meta, META_LAST_HEIGHT, prepared.height.to_be_bytes());
        batch.put_cf(meta, META_LAST_HASH, prepared.app_hash);
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        crate::fault::hit(crate::fault::Point::CommitWrite, prepared.height);
        self.db.write_opt(batch, &opts)?;
        crate::fault::hit(crate::fault::Point::AfterWrite, prepared.height);
        let mut cache = lock_nodes(&self.nodes);
        for index in &prepared.tree.stale_node_index_batch {
            cache.remove(&index.node_key);
        }
        for (key, node) in prepared.tree.node_batch.nodes() {
            cache.insert(key.clone(), node.clone());
        }
        Ok(Committed {
            height: prepared.height,
            app_hash: prepared.app_hash,
        })
    }

    /// Records what `prepared` makes stale: the tree nodes jmt replaced, and for each key it
    /// writes the value entry it supersedes (and a deletion's own tombstone, which only hides
    /// that older entry).
    fn index_stale(
        &self,
        batch: &mut WriteBatch,
        prepared: &PreparedCommit,
    ) -> Result<(), StorageError> {
        let (stale, values) = (cf(&self.db, STALE)?, cf(&self.db, VALUES)?);
        for index in &prepared.tree.stale_node_index_batch {
            let node =
                borsh::to_vec(&index.node_key).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            batch.put_cf(
                stale,
                stale_key(index.stale_since_version, STALE_NODE, &node),
                [],
            );
        }
        for ((version, key_hash), value) in prepared.tree.node_batch.values() {
            if let Some(before) = version.checked_sub(1) {
                let target = value_key(key_hash, before);
                let mut iter = self
                    .db
                    .iterator_cf(values, IteratorMode::From(&target, Direction::Reverse));
                if let Some(entry) = iter.next() {
                    let (k, _) = entry?;
                    if k.len() == 40 && k[..32] == key_hash.0 {
                        batch.put_cf(stale, stale_key(*version, STALE_VALUE, &k), []);
                    }
                }
            }
            if value.is_none() {
                batch.put_cf(
                    stale,
                    stale_key(*version, STALE_VALUE, &value_key(key_hash, *version)),
                    [],
                );
            }
        }
        Ok(())
    }

    /// Adds to `batch` the deletion of everything only heights below the new earliest one read,
    /// `keep_recent` heights back from `height` (at most [`MAX_PRUNE_STEP`] versions a block).
    fn prune_into(
        &self,
        batch: &mut WriteBatch,
        height: u64,
        version: Version,
    ) -> Result<(), StorageError> {
        let genesis = height - version;
        let earliest = self.earliest_height()?.unwrap_or(genesis);
        let wanted = (height + 1).saturating_sub(self.keep_recent);
        let target = wanted.min(earliest.saturating_add(MAX_PRUNE_STEP));
        if target <= earliest {
            return Ok(());
        }
        let (from, to) = (earliest - genesis + 1, target - genesis);
        let (stale, nodes, values, meta) = (
            cf(&self.db, STALE)?,
            cf(&self.db, NODES)?,
            cf(&self.db, VALUES)?,
            cf(&self.db, META)?,
        );
        let start = from.to_be_bytes();
        for entry in self
            .db
            .iterator_cf(stale, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, _) = entry?;
            let Some((since, rest)) = k.split_first_chunk::<8>() else {
                return Err(StorageError::Corrupt("short stale index key".into()));
            };
            if u64::from_be_bytes(*since) > to {
                break;
            }
            match rest.split_first() {
                Some((&STALE_NODE, node)) => batch.delete_cf(nodes, node),
                Some((&STALE_VALUE, value)) => batch.delete_cf(values, value),
                _ => return Err(StorageError::Corrupt("unknown stale index tag".into())),
            }
            batch.delete_cf(stale, &k);
        }
        batch.put_cf(meta, META_EARLIEST_HEIGHT, target.to_be_bytes());
        Ok(())
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

/// The tree of an empty store about to receive a snapshot's state at `version`: jmt builds on
/// the root of the version before, which here is the empty tree.
struct RestoreReader<'a> {
    tree: Tree<'a>,
    /// The version whose root reads as an empty tree (the one before the restored version).
    empty_root: Option<Version>,
}

impl TreeReader for RestoreReader<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        if self.empty_root == Some(node_key.version()) && node_key.nibble_path().num_nibbles() == 0
        {
            return Ok(Some(Node::Null));
        }
        self.tree.get_node_option(node_key)
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        self.tree.get_value_option(max_version, key_hash)
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        self.tree.get_rightmost_leaf()
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

    fn count(s: &Storage, name: &str) -> usize {
        s.db.iterator_cf(cf(&s.db, name).unwrap(), IteratorMode::Start)
            .count()
    }

    /// Commits `blocks` (block i at height i+1 over genesis 0) and returns every height's state.
    fn run_blocks(
        s: &Storage,
        blocks: &[Vec<(String, Option<String>)>],
    ) -> Vec<BTreeMap<String, String>> {
        let mut model = BTreeMap::new();
        model.insert("g".to_string(), "0".to_string());
        s.commit(s.prepare(0, true, writes(&[("g", Some("0"))])).unwrap())
            .unwrap();
        let mut states = vec![model.clone()];
        for (i, block) in blocks.iter().enumerate() {
            let w: BTreeMap<String, Option<Vec<u8>>> = block
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(|v| v.as_bytes().to_vec())))
                .collect();
            for (k, v) in block {
                match v {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(k),
                };
            }
            s.commit(s.prepare(i as u64 + 1, false, w).unwrap())
                .unwrap();
            states.push(model.clone());
        }
        states
    }

    fn churn(blocks: usize, keys: usize) -> Vec<Vec<(String, Option<String>)>> {
        (0..blocks)
            .map(|b| {
                (0..keys)
                    .filter(|k| (k * 7 + b) % 3 != 0)
                    .map(|k| {
                        let v = if (k + b) % 5 == 0 {
                            None
                        } else {
                            Some(format!("{b}-{k}"))
                        };
                        (format!("k{k}"), v)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn pruning_keeps_recent_heights_exact_and_refuses_older_ones_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Storage::open(&dir.path().join("a")).unwrap();
        let pruned = Storage::open(&dir.path().join("p"))
            .unwrap()
            .with_pruning(3)
            .unwrap();
        let blocks = churn(30, 40);
        let states = run_blocks(&archive, &blocks);
        run_blocks(&pruned, &blocks);
        assert_eq!(pruned.earliest_height().unwrap(), Some(28));
        assert_eq!(archive.earliest_height().unwrap(), Some(0));
        for h in 0..=30u64 {
            if h < 28 {
                let e = pruned.get_with_proof("k1", h).unwrap_err();
                assert!(
                    matches!(e, StorageError::Pruned { earliest: 28, .. }),
                    "{e}"
                );
                assert!(e.to_string().contains("was pruned"), "{e}");
                continue;
            }
            assert_eq!(pruned.root_at(h).unwrap(), archive.root_at(h).unwrap());
            for k in 0..40 {
                let key = format!("k{k}");
                let (v, proof) = pruned.get_with_proof(&key, h).unwrap();
                let want = states[h as usize].get(&key).map(|v| v.as_bytes().to_vec());
                assert_eq!(v, want, "{key} at {h}");
                let proof: jmt::proof::SparseMerkleProof<Sha256> =
                    borsh::from_slice(&proof).unwrap();
                proof
                    .verify(
                        jmt::RootHash(pruned.root_at(h).unwrap()),
                        KeyHash::with::<Sha256>(key.as_bytes()),
                        v,
                    )
                    .unwrap();
            }
        }
        // Archive state everywhere, and the pruned store is a fraction of it.
        assert_eq!(archive.get_at("g", 0).unwrap(), Some(b"0".to_vec()));
        let (a_nodes, p_nodes) = (count(&archive, NODES), count(&pruned, NODES));
        let (a_values, p_values) = (count(&archive, VALUES), count(&pruned, VALUES));
        assert!(p_nodes * 4 < a_nodes, "nodes {p_nodes} vs {a_nodes}");
        assert!(p_values * 4 < a_values, "values {p_values} vs {a_values}");
        // A pruned store reopened as an archive keeps what it has and reads what it kept.
        drop(pruned);
        let reopened = Storage::open(&dir.path().join("p")).unwrap();
        assert_eq!(
            reopened.get_at("k1", 30).unwrap(),
            archive.get_at("k1", 30).unwrap()
        );
        assert!(matches!(
            Storage::open(&dir.path().join("x"))
                .unwrap()
                .with_pruning(1),
            Err(StorageError::KeepRecentTooSmall(1))
        ));
    }

    #[test]
    fn turning_pruning_on_late_catches_up_a_bounded_step_per_block() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        run_blocks(&s, &churn(250, 4));
        let s = s.with_pruning(2).unwrap();
        s.commit(s.prepare(251, false, writes(&[("k1", Some("x"))])).unwrap())
            .unwrap();
        assert_eq!(s.earliest_height().unwrap(), Some(MAX_PRUNE_STEP));
        s.commit(s.prepare(252, false, writes(&[("k1", Some("y"))])).unwrap())
            .unwrap();
        s.commit(s.prepare(253, false, writes(&[("k1", Some("z"))])).unwrap())
            .unwrap();
        assert_eq!(s.earliest_height().unwrap(), Some(252));
        assert_eq!(s.get_at("k1", 252).unwrap(), Some(b"y".to_vec()));
    }

    #[test]
    fn a_restore_from_the_entries_of_a_height_gives_its_root_and_follows_on() {
        let dir = tempfile::tempdir().unwrap();
        let src = Storage::open(&dir.path().join("src")).unwrap();
        let blocks = churn(12, 30);
        run_blocks(&src, &blocks[..10]);
        let at = src.committed().unwrap().unwrap();
        let mut entries = Vec::new();
        src.for_each_entry(|k, v| {
            entries.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();

        // Entries that do not give the verified hash are refused, and nothing is written.
        let dst = Storage::open(&dir.path().join("dst")).unwrap();
        let mut bad = entries.clone();
        bad[3].1.push(b'!');
        let e = dst.restore(0, at.height, at.app_hash, &bad).unwrap_err();
        assert!(matches!(e, StorageError::RestoreMismatch { .. }), "{e}");
        assert_eq!(dst.committed().unwrap(), None);
        assert_eq!(count(&dst, NODES), 0);

        assert_eq!(
            dst.restore(0, at.height, at.app_hash, &entries).unwrap(),
            at
        );
        assert_eq!(dst.earliest_height().unwrap(), Some(10));
        assert!(matches!(
            dst.get_at("k1", 9),
            Err(StorageError::Pruned { earliest: 10, .. })
        ));
        assert!(matches!(
            dst.restore(0, at.height, at.app_hash, &entries),
            Err(StorageError::NotEmpty { height: 10 })
        ));
        // The next blocks give the same roots on both.
        for (i, block) in blocks[10..].iter().enumerate() {
            let w: BTreeMap<String, Option<Vec<u8>>> = block
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(|v| v.as_bytes().to_vec())))
                .collect();
            let h = 11 + i as u64;
            let a = src
                .commit(src.prepare(h, false, w.clone()).unwrap())
                .unwrap();
            let b = dst.commit(dst.prepare(h, false, w).unwrap()).unwrap();
            assert_eq!(a, b, "height {h}");
        }
        let (v, proof) = dst.get_with_proof("k2", 12).unwrap();
        let proof: jmt::proof::SparseMerkleProof<Sha256> = borsh::from_slice(&proof).unwrap();
        proof
            .verify(
                jmt::RootHash(dst.root_at(12).unwrap()),
                KeyHash::with::<Sha256>(b"k2"),
                v,
            )
            .unwrap();
        // And a restored store prunes like any other.
        let dst = dst.with_pruning(2).unwrap();
        dst.commit(
            dst.prepare(13, false, writes(&[("k1", Some("q"))]))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(dst.earliest_height().unwrap(), Some(12));
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

    #[test]
    fn the_tree_node_cache_holds_the_live_tree_not_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open_sized(dir.path(), 16 << 20).unwrap();
        let keys = |b: usize| -> BTreeMap<String, Option<Vec<u8>>> {
            (0..200)
                .map(|k| (format!("k{k}"), Some(format!("{b}-{k}").into_bytes())))
                .collect()
        };
        s.commit(s.prepare(0, true, keys(0)).unwrap()).unwrap();
        let live = s.memory().unwrap().tree_nodes;
        // Every block rewrites every key: each version replaces the whole tree.
        for b in 1..300 {
            s.commit(s.prepare(b as u64, false, keys(b)).unwrap())
                .unwrap();
        }
        let m = s.memory().unwrap();
        assert_eq!(m.tree_nodes, live, "{m:?}");
        assert!(
            m.tree_bytes > 0 && m.tree_bytes <= NODE_CACHE_BYTES,
            "{m:?}"
        );
        assert_eq!(m.cache_capacity, 16 << 20);
        assert!(m.cache_bytes <= m.cache_capacity, "{m:?}");
        // Reading old versions caches their nodes too, within the bound; the reads are exact.
        for b in 1..300u64 {
            assert_eq!(
                s.get_at("k7", b).unwrap(),
                Some(format!("{b}-7").into_bytes())
            );
        }
        assert!(s.memory().unwrap().tree_bytes <= NODE_CACHE_BYTES);
    }
}
