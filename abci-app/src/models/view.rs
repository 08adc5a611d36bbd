//! Typed reads and writes of model listings, their indexes and usage statistics; the only code
//! that uses the listing state keys.

use neurodata_proto::chain::v1 as pb;

use super::state_key;
use crate::market::view::read_u64;
use crate::state::{StateError, StateRead, StateWrite};

/// Reads of model listings.
pub trait ModelsRead: StateRead + Sized {
    /// Model listing `id`.
    fn model_listing(&self, id: u64) -> Result<Option<pb::ModelListing>, StateError> {
        self.get_proto(&state_key::listing(id))
    }

    /// Every model listing, ascending by id.
    fn model_listings(&self) -> Result<Vec<pb::ModelListing>, StateError> {
        self.prefix_proto(state_key::LISTINGS)
    }

    /// The id the next model listing gets.
    fn next_listing_id(&self) -> Result<u64, StateError> {
        Ok(read_u64(self, state_key::next_listing_id())?.unwrap_or(1))
    }

    /// Usage of model listing `id` (zeros if never sold).
    fn model_stats(&self, id: u64) -> Result<pb::ModelStats, StateError> {
        Ok(self
            .get_proto(&state_key::stats(id))?
            .unwrap_or_else(|| pb::ModelStats {
                listing_id: id,
                revenue: "0".into(),
                royalties: "0".into(),
                ..Default::default()
            }))
    }

    /// The model listing of owner org `org` with a ciphertext of this CID, if any.
    fn listing_by_cid(&self, org: &str, cid: &str) -> Result<Option<u64>, StateError> {
        read_u64(self, &state_key::by_cid(org, cid))
    }

    /// The model listing of owner org `org` whose key has this commitment, if any.
    fn listing_by_key_commitment(
        &self,
        org: &str,
        commitment: &[u8; 32],
    ) -> Result<Option<u64>, StateError> {
        read_u64(self, &state_key::by_key_commitment(org, commitment))
    }

    /// The open listing of model version `model_version`, if any.
    fn open_listing_of(&self, model_version: u64) -> Result<Option<u64>, StateError> {
        read_u64(self, &state_key::by_version(model_version))
    }
}

impl<T: StateRead> ModelsRead for T {}

/// Writes of model listings.
pub trait ModelsWrite: StateWrite + ModelsRead {
    /// Stores a model listing.
    fn put_model_listing(&mut self, listing: &pb::ModelListing) {
        self.put_proto(state_key::listing(listing.id), listing);
    }

    /// Sets the next model listing id.
    fn put_next_listing_id(&mut self, id: u64) {
        self.put_raw(
            state_key::next_listing_id().into(),
            id.to_be_bytes().to_vec(),
        );
    }

    /// Stores usage statistics.
    fn put_model_stats(&mut self, stats: &pb::ModelStats) {
        self.put_proto(state_key::stats(stats.listing_id), stats);
    }

    /// Indexes ciphertext `cid` of owner org `org` to listing `id`.
    fn put_listing_cid(&mut self, org: &str, cid: &str, id: u64) {
        self.put_raw(state_key::by_cid(org, cid), id.to_be_bytes().to_vec());
    }

    /// Indexes a key commitment of owner org `org` to listing `id`.
    fn put_listing_key_commitment(&mut self, org: &str, commitment: &[u8; 32], id: u64) {
        self.put_raw(
            state_key::by_key_commitment(org, commitment),
            id.to_be_bytes().to_vec(),
        );
    }

    /// Records listing `id` as the open listing of model version `model_version`.
    fn put_open_listing_of(&mut self, model_version: u64, id: u64) {
        self.put_raw(
            state_key::by_version(model_version),
            id.to_be_bytes().to_vec(),
        );
    }

    /// Forgets the open listing of model version `model_version` (it was delisted).
    fn drop_open_listing_of(&mut self, model_version: u64) {
        self.delete(state_key::by_version(model_version));
    }
}

impl<T: StateWrite> ModelsWrite for T {}
