//! Typed reads and writes of datasets, their CID index and usage statistics; the only code that
//! uses market state keys.

use neurodata_proto::chain::v1 as pb;

use crate::address::Address;

use super::state_key;
use crate::state::{StateError, StateRead, StateWrite};

pub(crate) fn read_u64<S: StateRead>(state: &S, key: &str) -> Result<Option<u64>, StateError> {
    state
        .get_raw(key)?
        .map(|b| {
            <[u8; 8]>::try_from(b.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| StateError::Corrupt {
                    key: key.to_owned(),
                    reason: "not 8 bytes".into(),
                })
        })
        .transpose()
}

/// Reads of market records.
pub trait MarketRead: StateRead + Sized {
    /// Dataset `id`.
    fn dataset(&self, id: u64) -> Result<Option<pb::Dataset>, StateError> {
        self.get_proto(&state_key::dataset(id))
    }

    /// Every dataset, ascending by id.
    fn datasets(&self) -> Result<Vec<pb::Dataset>, StateError> {
        self.prefix_proto(state_key::DATASETS)
    }

    /// The dataset of provider org `org` listing ciphertext `cid`, if any.
    fn dataset_by_cid(&self, org: &str, cid: &str) -> Result<Option<u64>, StateError> {
        read_u64(self, &state_key::by_cid(org, cid))
    }

    /// The dataset of provider org `org` whose key has this commitment, if any.
    fn dataset_by_key_commitment(
        &self,
        org: &str,
        commitment: &[u8; 32],
    ) -> Result<Option<u64>, StateError> {
        read_u64(self, &state_key::by_key_commitment(org, commitment))
    }

    /// The id the next dataset gets.
    fn next_dataset_id(&self) -> Result<u64, StateError> {
        Ok(read_u64(self, state_key::next_dataset_id())?.unwrap_or(1))
    }

    /// Usage of dataset `id` (zeros if never used).
    fn dataset_stats(&self, id: u64) -> Result<pb::DatasetStats, StateError> {
        Ok(self
            .get_proto(&state_key::stats(id))?
            .unwrap_or_else(|| pb::DatasetStats {
                dataset_id: id,
                revenue: "0".into(),
                royalties: "0".into(),
                ..Default::default()
            }))
    }
}

impl<T: StateRead> MarketRead for T {}

/// Writes of market records.
pub trait MarketWrite: StateWrite + MarketRead {
    /// Stores a dataset.
    fn put_dataset(&mut self, dataset: &pb::Dataset) {
        self.put_proto(state_key::dataset(dataset.id), dataset);
    }

    /// Indexes `cid` of provider org `org` to dataset `id`.
    fn put_cid_index(&mut self, org: &str, cid: &str, id: u64) {
        self.put_raw(state_key::by_cid(org, cid), id.to_be_bytes().to_vec());
    }

    /// Indexes a key commitment to dataset `id`.
    fn put_key_commitment_index(&mut self, org: &str, commitment: &[u8; 32], id: u64) {
        self.put_raw(
            state_key::by_key_commitment(org, commitment),
            id.to_be_bytes().to_vec(),
        );
    }

    /// Sets the next dataset id.
    fn put_next_dataset_id(&mut self, id: u64) {
        self.put_raw(
            state_key::next_dataset_id().into(),
            id.to_be_bytes().to_vec(),
        );
    }

    /// Stores a preview request.
    fn put_preview_request(&mut self, request: &pb::PreviewRequest, requester: &Address) {
        self.put_proto(state_key::preview(request.dataset_id, requester), request);
    }

    /// Stores usage statistics.
    fn put_dataset_stats(&mut self, stats: &pb::DatasetStats) {
        self.put_proto(state_key::stats(stats.dataset_id), stats);
    }
}

impl<T: StateWrite> MarketWrite for T {}
