//! Where models-marketplace records live in the state.

/// Prefix of all model listings.
pub const LISTINGS: &str = "models/listing/";

/// Model listing `id` (zero-padded so keys sort by id).
pub fn listing(id: u64) -> String {
    format!("{LISTINGS}{id:020}")
}

/// The id the next model listing gets.
pub fn next_listing_id() -> &'static str {
    "models/next-listing-id"
}

/// Usage statistics of model listing `id`.
pub fn stats(id: u64) -> String {
    format!("models/stats/{id:020}")
}

/// Index: the model listing of owner org `org` whose ciphertext (the model file's or the ONNX
/// export's) has this CID (value: 8-byte big-endian listing id). Per org, as datasets' CIDs are:
/// the owner org's gateway serves the ciphertexts of its own listings only.
pub fn by_cid(org: &str, cid: &str) -> String {
    format!("models/by-cid/{org}/{cid}")
}

/// Index: the model listing of owner org `org` whose data key has this commitment (value: 8-byte
/// big-endian listing id). The org's gateway finds keys by commitment, so a second listing (or a
/// dataset) with the same commitment would get that key delivered to its buyers.
pub fn by_key_commitment(org: &str, commitment: &[u8; 32]) -> String {
    format!("models/key-commitment/{org}/{}", hex::encode(commitment))
}

/// Index: the open (not delisted) listing of model version `model_version` (value: 8-byte
/// big-endian listing id): one open listing per model version.
pub fn by_version(model_version: u64) -> String {
    format!("models/by-version/{model_version:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_keys_sort_by_id_and_indexes_live_elsewhere() {
        assert!(listing(9) < listing(10));
        assert!(listing(1).starts_with(LISTINGS));
        assert!(!stats(1).starts_with(LISTINGS));
        assert!(!by_cid("medlab", "bafk").starts_with(LISTINGS));
        assert!(!by_version(1).starts_with(LISTINGS));
        assert!(!by_key_commitment("medlab", &[0; 32]).starts_with(LISTINGS));
    }
}
