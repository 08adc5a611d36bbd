//! An in-memory committed state, for unit and property tests of the domain rules.

use std::collections::BTreeMap;

use super::{Changes, StateError, StateRead};

/// A `BTreeMap` standing in for committed state (the RocksDB store is tested on its own).
#[derive(Clone, Debug, Default)]
pub struct MemoryState {
    entries: BTreeMap<String, Vec<u8>>,
}

impl MemoryState {
    /// Applies a delta's changes, as Commit would.
    pub fn apply(&mut self, changes: Changes) {
        for (k, v) in changes.writes {
            match v {
                Some(v) => {
                    self.entries.insert(k, v);
                }
                None => {
                    self.entries.remove(&k);
                }
            }
        }
    }
}

impl StateRead for MemoryState {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.entries.get(key).cloned())
    }

    fn prefix_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        Ok(self
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
