//! Where training records live in the state.

use crate::address::Address;

/// Prefix of all jobs.
pub const JOBS: &str = "training/job/";

/// Job `id` (zero-padded so keys sort by id).
pub fn job(id: u64) -> String {
    format!("{JOBS}{id:020}")
}

/// The id the next job gets.
pub fn next_job_id() -> &'static str {
    "training/next-job-id"
}

/// Prefix of the index of jobs not yet final or refunded (value: empty).
pub const ACTIVE: &str = "training/active/";

/// Index entry: job `id` is still running.
pub fn active(id: u64) -> String {
    format!("{ACTIVE}{id:020}")
}

/// Prefix of all workers.
pub const WORKERS: &str = "training/worker/";

/// The worker registered by `address`.
pub fn worker(address: &Address) -> String {
    format!("{WORKERS}{}", address.to_hex())
}

/// Prefix of all model versions.
pub const MODELS: &str = "training/model/";

/// Model version `id`.
pub fn model(id: u64) -> String {
    format!("{MODELS}{id:020}")
}

/// The id the next model version gets.
pub fn next_model_id() -> &'static str {
    "training/next-model-id"
}

/// A validator's attestation record, by CometBFT address (20 bytes).
pub fn attestor(validator: &[u8]) -> String {
    attestor_hex(&hex::encode(validator))
}

/// The same, from the address in hex (either case).
pub fn attestor_hex(validator: &str) -> String {
    format!("training/attestor/{}", validator.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_numerically() {
        assert!(job(2) < job(10));
        assert!(active(2).starts_with(ACTIVE));
        assert!(model(9) < model(10));
    }
}
