//! The NeuroData state machine and its ABCI 2.0 server for CometBFT v0.38.
//!
//! Where to start reading:
//! - [`app`]: what happens to one transaction ([`app::execute_tx`]) and one block.
//! - [`tx`]: the envelope and its stateless checks; [`tx::Action`] lists every message.
//! - The domains, each with its messages, checks, state keys and typed views:
//!   [`membership`] (X.509 identities, roles, revocation), [`ledger`] (NRC), [`governance`]
//!   (proposals, votes, validators, parameters), [`market`] (dataset listings and validation),
//!   [`escrow`] (purchases, key delivery, settlement), [`training`] (jobs, workers, validators'
//!   commit–reveal attestation, model versions), [`models`] (model listings and their sales with
//!   royalties, validator-scored evaluations on datasets' hidden splits, leaderboards).
//! - [`extension`]: validators' attestations on the wire — the verdict inbox, vote extensions,
//!   and the signed extensions a proposer injects into its block.
//! - [`events`]: every event kind and attribute key the chain emits (consumers match on these).
//! - [`state`]: the read/write traits and copy-on-write deltas; [`storage`] (feature `storage`,
//!   part of `server`): RocksDB under a Jellyfish Merkle tree, with pruning; [`snapshot`]
//!   (feature `server`): state-sync snapshots; [`abci`] (feature `server`): the thin ABCI
//!   adapter.
//! - [`genesis`]: the consortium at InitChain.

#![deny(clippy::unwrap_used)]

pub mod address;
pub mod amount;
pub mod app;
mod error;
pub mod escrow;
pub mod events;
pub mod extension;
pub mod genesis;
pub mod governance;
pub mod ledger;
pub mod market;
pub mod membership;
pub mod models;
pub mod query;
pub mod state;
pub mod training;
pub mod tx;
pub mod verifier;

#[cfg(feature = "server")]
pub mod abci;
#[cfg(feature = "storage")]
pub mod fault;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod snapshot;
#[cfg(feature = "storage")]
pub mod storage;

pub use error::{CODE_BLOCKS, TxError};
