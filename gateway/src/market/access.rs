//! Who may download a blob: for a listed dataset, members of the provider's org and members with
//! a live purchase of it (buyers, and validators whose key request is open or answered); a blob
//! no dataset lists yet, only members of the gateway's own org (a provider checking an upload
//! before listing it). Decided from the chain at the latest height on every call.

use std::sync::Arc;

use neurodata_abci::address::Address;
use neurodata_abci::query::live_purchase_data;
use tonic::Status;

use super::dataset_by_cid;
use crate::auth::{Caller, chain_status};
use crate::chain::Chain;
use crate::cid::Cid;
use crate::service::blobs::BlobAccess;

/// The marketplace's download policy.
pub struct MarketAccess {
    chain: Arc<Chain>,
    own_org: Option<String>,
}

impl MarketAccess {
    /// The policy for a gateway of `own_org` (None: unlisted blobs are readable by nobody).
    pub fn new(chain: Arc<Chain>, own_org: Option<String>) -> Self {
        MarketAccess { chain, own_org }
    }
}

#[tonic::async_trait]
impl BlobAccess for MarketAccess {
    async fn may_download(&self, caller: Option<&Caller>, cid: &Cid) -> Result<(), Status> {
        // Plain-text development mode has no identities to check.
        let Some(caller) = caller else {
            return Ok(());
        };
        let member = &caller.member;
        let cid_text = cid.to_string();
        let dataset = dataset_by_cid(&self.chain, &cid_text)
            .await
            .map_err(chain_status)?;
        let Some(dataset) = dataset else {
            if self.own_org.as_deref() == Some(member.org_id.as_str()) {
                return Ok(());
            }
            return Err(Status::permission_denied(format!(
                "blob {cid_text} is not a listed dataset; only members of this gateway's org may read it"
            )));
        };
        if dataset.provider_org == member.org_id {
            return Ok(());
        }
        let live = self
            .chain
            .query_latest(
                "/live_purchase",
                live_purchase_data(&Address(member.fingerprint), dataset.id),
            )
            .await
            .map_err(chain_status)?;
        if !live.is_empty() {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "dataset {} ({cid_text}) is downloadable by its provider's org and by members who \
             bought it; buy it first (ndctl dataset buy {})",
            dataset.id, dataset.id
        )))
    }
}
