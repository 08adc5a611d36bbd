//! A read-through cache over committed state for the duration of one block: a block reads the
//! same records (params, orgs, accounts touched by several txs) many times, and each uncached read
//! is a RocksDB lookup plus a copy.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::{StateError, StateRead};

/// Caches point reads of `base`; prefix scans pass through. The base must not change while the
/// cache lives (it wraps the committed state during FinalizeBlock, which Commit changes only
/// after the cache is dropped).
pub struct ReadCache<S> {
    base: S,
    cache: RefCell<BTreeMap<String, Option<Vec<u8>>>>,
}

impl<S: StateRead> ReadCache<S> {
    /// An empty cache over `base`.
    pub fn new(base: S) -> Self {
        ReadCache {
            base,
            cache: RefCell::new(BTreeMap::new()),
        }
    }
}

impl<S: StateRead> StateRead for ReadCache<S> {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(v) = self.cache.borrow().get(key) {
            return Ok(v.clone());
        }
        let v = self.base.get_raw(key)?;
        self.cache.borrow_mut().insert(key.to_owned(), v.clone());
        Ok(v)
    }

    fn prefix_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        self.base.prefix_raw(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryState, StateDelta, StateWrite};

    #[test]
    fn cached_reads_equal_base_reads_and_writes_above_shadow_them() {
        let mut base = MemoryState::default();
        let mut d = StateDelta::new(MemoryState::default());
        d.put_raw("k".into(), b"v".to_vec());
        base.apply(d.into_changes());
        let cache = ReadCache::new(&base);
        assert_eq!(cache.get_raw("k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(cache.get_raw("k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(cache.get_raw("missing").unwrap(), None);
        let mut block = StateDelta::new(&cache);
        block.put_raw("k".into(), b"w".to_vec());
        assert_eq!(block.get_raw("k").unwrap(), Some(b"w".to_vec()));
    }
}
