//! State access: the read and write traits every domain builds its typed views on, the
//! copy-on-write [`StateDelta`] each transaction runs in, and typed [`Event`]s.
//!
//! Keys are UTF-8 paths (`ledger/account/<hex>`) built only by the domains' `state_key` modules;
//! values are protobuf records. Handlers never touch raw keys: they go through the per-domain
//! extension traits (`LedgerRead`, `MembershipWrite`, ...).

mod cache;
mod delta;
mod event;
mod memory;

pub use cache::ReadCache;
pub use delta::{Changes, StateDelta};
pub use event::Event;
pub use memory::MemoryState;

/// A failure of the storage below the state machine (not the user's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The backing store failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A stored record did not decode: state corruption.
    #[error("record at {key} does not decode: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoder's message.
        reason: String,
    },
}

/// An amount stored as decimal text at `key`; text that does not parse is state corruption.
pub fn stored_amount(
    s: &str,
    key: impl FnOnce() -> String,
) -> Result<crate::amount::Amount, StateError> {
    s.parse()
        .map_err(|e: crate::amount::AmountError| StateError::Corrupt {
            key: key(),
            reason: e.to_string(),
        })
}

/// Read access to a state (committed, or a delta over it).
pub trait StateRead {
    /// The value at `key`, if any.
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;

    /// Every `(key, value)` whose key starts with `prefix`, ascending by key.
    fn prefix_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError>;

    /// The protobuf record at `key`, decoded.
    fn get_proto<M: prost::Message + Default>(&self, key: &str) -> Result<Option<M>, StateError>
    where
        Self: Sized,
    {
        match self.get_raw(key)? {
            None => Ok(None),
            Some(bytes) => M::decode(bytes.as_slice())
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    key: key.to_owned(),
                    reason: e.to_string(),
                }),
        }
    }

    /// Every protobuf record under `prefix`, decoded, ascending by key.
    fn prefix_proto<M: prost::Message + Default>(&self, prefix: &str) -> Result<Vec<M>, StateError>
    where
        Self: Sized,
    {
        self.prefix_raw(prefix)?
            .into_iter()
            .map(|(key, bytes)| {
                M::decode(bytes.as_slice()).map_err(|e| StateError::Corrupt {
                    key,
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

/// Write access: puts, deletes and events, all dropped together if the delta is dropped.
pub trait StateWrite: StateRead {
    /// Sets `key` to `value`.
    fn put_raw(&mut self, key: String, value: Vec<u8>);
    /// Removes `key`.
    fn delete(&mut self, key: String);
    /// Records an event; it is emitted only if this delta is applied.
    fn emit(&mut self, event: Event);
    /// Records a CometBFT validator power change (power 0 removes).
    fn push_validator_update(&mut self, pub_key: [u8; 32], power: i64);
    /// Applies a child delta's changes (see [`StateDelta`]).
    fn apply_changes(&mut self, changes: Changes);

    /// Sets `key` to the protobuf encoding of `record`.
    fn put_proto<M: prost::Message>(&mut self, key: String, record: &M)
    where
        Self: Sized,
    {
        self.put_raw(key, record.encode_to_vec());
    }
}

impl<T: StateRead + ?Sized> StateRead for &T {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        (**self).get_raw(key)
    }
    fn prefix_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        (**self).prefix_raw(prefix)
    }
}
