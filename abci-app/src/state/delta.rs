//! Copy-on-write state: a transaction runs on a delta over the block's state and is applied only
//! if every message succeeded; an error drops the delta, so no manual rollback exists to get wrong.

use std::collections::BTreeMap;

use super::{Event, StateError, StateRead, StateWrite};

/// What a delta did: writes (None = delete), events and validator updates, in order.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Key writes; `None` deletes.
    pub writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Events in emission order.
    pub events: Vec<Event>,
    /// Validator power changes by key: a later change to one key replaces an earlier one, so a
    /// block never hands CometBFT two updates for one validator (which it refuses by halting).
    pub validator_updates: BTreeMap<[u8; 32], i64>,
}

impl Changes {
    /// Folds `later` on top of `self`.
    pub fn extend(&mut self, later: Changes) {
        self.writes.extend(later.writes);
        self.events.extend(later.events);
        self.validator_updates.extend(later.validator_updates);
    }
}

/// A layer of uncommitted changes over a readable state.
pub struct StateDelta<S> {
    base: S,
    changes: Changes,
}

impl<S: StateRead> StateDelta<S> {
    /// An empty delta over `base`.
    pub fn new(base: S) -> Self {
        StateDelta {
            base,
            changes: Changes::default(),
        }
    }

    /// Read access to what is below this delta.
    pub fn base(&self) -> &S {
        &self.base
    }

    /// The changes so far, leaving the delta empty.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// The changes, consuming the delta.
    pub fn into_changes(self) -> Changes {
        self.changes
    }

    /// Applies a child delta's changes on top of this one.
    pub fn apply(&mut self, child: Changes) {
        self.changes.extend(child);
    }

    /// Events emitted so far.
    pub fn events(&self) -> &[Event] {
        &self.changes.events
    }
}

impl<S: StateRead> StateRead for StateDelta<S> {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        match self.changes.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get_raw(key),
        }
    }

    fn prefix_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let mut merged: BTreeMap<String, Vec<u8>> =
            self.base.prefix_raw(prefix)?.into_iter().collect();
        for (k, v) in self
            .changes
            .writes
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            match v {
                Some(v) => {
                    merged.insert(k.clone(), v.clone());
                }
                None => {
                    merged.remove(k);
                }
            }
        }
        Ok(merged.into_iter().collect())
    }
}

impl<S: StateRead> StateWrite for StateDelta<S> {
    fn put_raw(&mut self, key: String, value: Vec<u8>) {
        self.changes.writes.insert(key, Some(value));
    }

    fn delete(&mut self, key: String) {
        self.changes.writes.insert(key, None);
    }

    fn emit(&mut self, event: Event) {
        self.changes.events.push(event);
    }

    fn push_validator_update(&mut self, pub_key: [u8; 32], power: i64) {
        self.changes.validator_updates.insert(pub_key, power);
    }

    fn apply_changes(&mut self, changes: Changes) {
        self.changes.extend(changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryState;

    #[test]
    fn dropped_child_leaves_parent_unchanged_and_applied_child_shows_through() {
        let base = MemoryState::default();
        let mut block = StateDelta::new(&base);
        block.put_raw("a".into(), b"1".to_vec());
        {
            let mut tx = StateDelta::new(&block);
            tx.put_raw("a".into(), b"2".to_vec());
            tx.emit(Event::new(crate::events::EventKind::FeePaid));
            // dropped: failed tx
        }
        assert_eq!(block.get_raw("a").unwrap(), Some(b"1".to_vec()));
        assert!(block.events().is_empty());
        let mut tx = StateDelta::new(&block);
        tx.delete("a".into());
        tx.put_raw("b".into(), b"3".to_vec());
        let changes = tx.into_changes();
        block.apply(changes);
        assert_eq!(block.get_raw("a").unwrap(), None);
        assert_eq!(
            block.prefix_raw("").unwrap(),
            vec![("b".to_owned(), b"3".to_vec())]
        );
    }
}
