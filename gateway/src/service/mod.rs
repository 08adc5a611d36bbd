//! The gRPC services of `neurodata.gateway.v1`, one module each. They share [`Shared`]: the chain
//! client, the membership checker, the blob store with its upload accounting and authorization
//! hook, and the config.

pub mod blobs;
pub mod events;
pub mod keys;
pub mod models;
pub mod preview;
pub mod query;
pub mod status;
pub mod tx;

use std::sync::Arc;

use tonic::{Request, Status};

use crate::auth::{Caller, Membership};
use crate::blobstore::BlobStore;
use crate::chain::Chain;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::uploads::UploadLedger;

/// What every service reads.
pub struct Shared {
    /// The chain.
    pub chain: Arc<Chain>,
    /// Membership checks.
    pub membership: Arc<Membership>,
    /// Blobs.
    pub blobs: BlobStore,
    /// Who stored which blob, against the upload quotas.
    pub uploads: Arc<UploadLedger>,
    /// Who may download which blob.
    pub access: Arc<dyn blobs::BlobAccess>,
    /// Settings.
    pub config: Arc<Config>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// The member making a call (None in plaintext dev mode, or for calls that need no certificate).
pub fn caller<T>(req: &Request<T>) -> Option<Caller> {
    req.extensions().get::<Caller>().cloned()
}

/// A stream that must end when its caller's certificate stops being valid: waits for the next
/// membership change and re-checks the caller. Returns the refusal once there is one.
pub async fn wait_until_refused(shared: &Shared, caller: Option<&Caller>) -> Status {
    let mut epoch = shared.chain.membership_epoch();
    loop {
        if epoch.changed().await.is_err() {
            return Status::unavailable("gateway shutting down");
        }
        if let Some(c) = caller
            && let Err(status) = shared.membership.recheck(&c.cert_der, &c.member).await
        {
            return status;
        }
    }
}
