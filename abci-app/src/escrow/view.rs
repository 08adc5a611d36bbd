//! Typed reads and writes of purchases and their indexes; the only code that uses escrow state
//! keys.

use neurodata_proto::chain::v1 as pb;

use super::lifecycle::{Item, Purchase};
use super::state_key;
use crate::address::Address;
use crate::market::view::read_u64;
use crate::state::{StateError, StateRead, StateWrite};

/// Reads of escrow records.
pub trait EscrowRead: StateRead + Sized {
    /// Purchase `id` as stored, the form queries return.
    fn purchase(&self, id: u64) -> Result<Option<pb::Purchase>, StateError> {
        self.get_proto(&state_key::purchase(id))
    }

    /// Purchase `id`, decoded for its lifecycle (a record that does not decode is corrupt).
    fn load_purchase(&self, id: u64) -> Result<Option<Purchase>, StateError> {
        self.purchase(id)?.map(Purchase::try_from).transpose()
    }

    /// Every purchase as stored, ascending by id.
    fn purchases(&self) -> Result<Vec<pb::Purchase>, StateError> {
        self.prefix_proto(state_key::PURCHASES)
    }

    /// The id the next purchase gets.
    fn next_purchase_id(&self) -> Result<u64, StateError> {
        Ok(read_u64(self, state_key::next_purchase_id())?.unwrap_or(1))
    }

    /// The buyer's live purchase of a dataset.
    fn live_purchase(&self, buyer: &Address, dataset: u64) -> Result<Option<u64>, StateError> {
        read_u64(self, &state_key::by_buyer(buyer, dataset))
    }

    /// The buyer's live purchase of an item (a dataset or a model listing).
    fn live_mark(&self, buyer: &Address, item: Item) -> Result<Option<u64>, StateError> {
        match item {
            Item::Dataset(d) => self.live_purchase(buyer, d),
            Item::Model(l) => read_u64(self, &state_key::by_buyer_model(buyer, l)),
        }
    }

    /// Every access mark of `buyer`: (dataset, purchase), ascending by dataset.
    fn live_purchases_of(&self, buyer: &Address) -> Result<Vec<(u64, u64)>, StateError> {
        self.marks_under(&state_key::by_buyer_prefix(buyer))
    }

    /// Every access mark of `buyer`, datasets then model listings, each ascending by id.
    fn live_marks_of(&self, buyer: &Address) -> Result<Vec<(Item, u64)>, StateError> {
        let datasets = self.live_purchases_of(buyer)?;
        let models = self.marks_under(&state_key::by_buyer_model_prefix(buyer))?;
        Ok(datasets
            .into_iter()
            .map(|(d, id)| (Item::Dataset(d), id))
            .chain(models.into_iter().map(|(l, id)| (Item::Model(l), id)))
            .collect())
    }

    /// The (item id, purchase id) of the marks under `prefix`.
    fn marks_under(&self, prefix: &str) -> Result<Vec<(u64, u64)>, StateError> {
        self.prefix_raw(prefix)?
            .into_iter()
            .map(|(key, value)| {
                let dataset = key.rsplit('/').next().and_then(|d| d.parse().ok());
                let id = <[u8; 8]>::try_from(value.as_slice())
                    .ok()
                    .map(u64::from_be_bytes);
                match (dataset, id) {
                    (Some(d), Some(i)) => Ok((d, i)),
                    _ => Err(StateError::Corrupt {
                        key,
                        reason: "access mark without item or purchase id".into(),
                    }),
                }
            })
            .collect()
    }

    /// Open validation requests of `org`.
    fn open_validations(&self, org: &str) -> Result<u64, StateError> {
        Ok(read_u64(self, &state_key::open_validations(org))?.unwrap_or(0))
    }

    /// Ids of every open purchase (each has one schedule entry), ascending by due height.
    fn open_purchase_ids(&self) -> Result<Vec<u64>, StateError> {
        self.scheduled(state_key::DUE)
    }

    /// Ids of the purchases due at the end of block `height`.
    fn due_at(&self, height: u64) -> Result<Vec<u64>, StateError> {
        self.scheduled(&state_key::due_at(height))
    }

    /// Purchase ids of the schedule entries under `prefix`.
    fn scheduled(&self, prefix: &str) -> Result<Vec<u64>, StateError> {
        self.prefix_raw(prefix)?
            .into_iter()
            .map(|(key, _)| {
                key.rsplit('/')
                    .next()
                    .and_then(|id| id.parse().ok())
                    .ok_or(StateError::Corrupt {
                        key,
                        reason: "due entry without a purchase id".into(),
                    })
            })
            .collect()
    }
}

impl<T: StateRead> EscrowRead for T {}

/// Writes of escrow records.
pub trait EscrowWrite: StateWrite + EscrowRead {
    /// Stores a purchase.
    fn put_purchase(&mut self, purchase: &Purchase) {
        self.put_proto(
            state_key::purchase(purchase.id),
            &pb::Purchase::from(purchase),
        );
    }

    /// Sets the next purchase id.
    fn put_next_purchase_id(&mut self, id: u64) {
        self.put_raw(
            state_key::next_purchase_id().into(),
            id.to_be_bytes().to_vec(),
        );
    }

    /// Marks the buyer's live purchase of a dataset.
    fn put_live_purchase(&mut self, buyer: &Address, dataset: u64, purchase: u64) {
        self.put_raw(
            state_key::by_buyer(buyer, dataset),
            purchase.to_be_bytes().to_vec(),
        );
    }

    /// Removes the buyer's live purchase mark (after a refund).
    fn drop_live_purchase(&mut self, buyer: &Address, dataset: u64) {
        self.delete(state_key::by_buyer(buyer, dataset));
    }

    /// Marks the buyer's live purchase of an item.
    fn put_live_mark(&mut self, buyer: &Address, item: Item, purchase: u64) {
        match item {
            Item::Dataset(d) => self.put_live_purchase(buyer, d, purchase),
            Item::Model(l) => self.put_raw(
                state_key::by_buyer_model(buyer, l),
                purchase.to_be_bytes().to_vec(),
            ),
        }
    }

    /// Removes the buyer's live mark of an item.
    fn drop_live_mark(&mut self, buyer: &Address, item: Item) {
        match item {
            Item::Dataset(d) => self.drop_live_purchase(buyer, d),
            Item::Model(l) => self.delete(state_key::by_buyer_model(buyer, l)),
        }
    }

    /// Sets the count of open validation requests of `org`.
    fn put_open_validations(&mut self, org: &str, count: u64) {
        self.put_raw(
            state_key::open_validations(org),
            count.to_be_bytes().to_vec(),
        );
    }

    /// Schedules purchase `id` to close at the end of block `height`.
    fn schedule(&mut self, height: u64, id: u64) {
        self.put_raw(state_key::due(height, id), vec![]);
    }

    /// Cancels a schedule entry.
    fn unschedule(&mut self, height: u64, id: u64) {
        self.delete(state_key::due(height, id));
    }
}

impl<T: StateWrite> EscrowWrite for T {}
