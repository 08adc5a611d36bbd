//! The NeuroData gateway: the gRPC service a member organisation runs in front of the chain.
//!
//! Every call comes over mTLS with a member certificate and is checked against on-chain
//! membership ([`auth`]); the services ([`service`]) relay signed txs, read state with proofs,
//! stream events, and store blobs by CID ([`blobstore`], [`cid`]) within the org's upload quotas
//! ([`uploads`]); the marketplace's rules live in [`market`]. [`server::Gateway`] puts it
//! together; [`config`] is how it is set up.

// tonic::Status (176 bytes) is the error of every gRPC handler; boxing it would only add noise.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod blobstore;
pub mod chain;
pub mod config;
pub mod durable;
pub mod market;
pub mod metrics;
pub mod server;
pub mod service;
pub mod tls;
pub mod uploads;

pub use config::Config;
pub use neurodata_client::cid::{self, Cid};
pub use server::Gateway;
