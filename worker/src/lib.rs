//! The NeuroData worker: runs training jobs the chain assigns to a trainer org's worker
//! (`neurodata-worker train`), and re-runs the segments a validator is assigned of a result
//! (`neurodata-worker verify`), leaving the verdict for the validator's abci-app to commit to.
//!
//! Start with [`journal`]: what is recorded per job and the pure decisions a (restarted) worker
//! or verifier takes from the chain's view plus that record. Then [`runner`] (where a run
//! executes: a child process now, a Kubernetes Job later), [`fetch`] and [`assemble`] (a job's
//! data, decrypted, checked and joined into one file, the same way on every machine),
//! [`artifacts`] (a run's published files and the result a worker submits), [`judge`] (how a
//! validator rebuilds the run from the chain record and decides its verdict), [`validation`]
//! (how a validator checks a listed dataset against its listing for `AttestDataset`, and the
//! request–attest–confirm steps it shares with model listings), [`model_listing`] (how it
//! checks a model listing's ciphertexts against the card for `AttestModelListing`) and
//! [`evaluation`] (how a validator scores a model on a dataset's hidden evaluation split for the
//! leaderboard). The loops that drive them against the chain are in the binary (`src/main.rs`,
//! `train.rs`, `verify.rs`, `validate.rs`, `evaluate.rs`).

pub mod artifacts;
pub mod assemble;
pub mod evaluation;
pub mod fetch;
pub mod journal;
pub mod judge;
pub mod kube_runner;
pub mod model_listing;
pub mod runner;
pub mod validation;
