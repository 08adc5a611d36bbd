//! Where market records live in the state.

/// Prefix of all datasets.
pub const DATASETS: &str = "market/dataset/";

/// Dataset `id` (zero-padded so keys sort by id).
pub fn dataset(id: u64) -> String {
    format!("{DATASETS}{id:020}")
}

/// The id the next dataset gets.
pub fn next_dataset_id() -> &'static str {
    "market/next-dataset-id"
}

/// Index: the dataset of provider org `org` listing a ciphertext CID (value: 8-byte big-endian
/// id). Per org: a CID is public once its listing is in a mempool, and another org listing it
/// first must not lock the rightful org out of its own ciphertext (gateways serve only their own
/// org's listings, so a listing of another org's CID gives access to nothing).
pub fn by_cid(org: &str, cid: &str) -> String {
    format!("market/cid/{org}/{cid}")
}

/// Index: the dataset of provider org `org` whose data key has this commitment (value: 8-byte
/// big-endian id). Per org: a commitment is public once listed, and another org must not be able
/// to squat it.
pub fn by_key_commitment(org: &str, commitment: &[u8; 32]) -> String {
    format!("market/key-commitment/{org}/{}", hex::encode(commitment))
}

/// The preview request of `requester` for dataset `id`.
pub fn preview(id: u64, requester: &crate::address::Address) -> String {
    format!("market/preview/{id:020}/{}", requester.to_hex())
}

/// Usage statistics of dataset `id`.
pub fn stats(id: u64) -> String {
    format!("market/stats/{id:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_keys_sort_by_id_and_indexes_live_elsewhere() {
        assert!(dataset(9) < dataset(10));
        assert!(dataset(1).starts_with(DATASETS));
        assert!(!by_cid("medlab", "bafk").starts_with(DATASETS));
        assert!(!stats(1).starts_with(DATASETS));
    }
}
