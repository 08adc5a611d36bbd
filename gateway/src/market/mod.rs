//! The marketplace's side of the gateway: who may download a dataset's ciphertext
//! ([`access::MarketAccess`]), the org's data keys at rest ([`keystore::KeyStore`]) and the task
//! that delivers them to buyers as purchases open ([`delivery::Delivery`]).

pub mod access;
pub mod delivery;
pub mod keystore;
pub mod retire;

use neurodata_abci::query::{self, OrgCid};
use neurodata_client::ChainAccess;
use neurodata_proto::chain::v1 as pb;

use crate::chain::{Chain, ChainError};

/// The dataset of provider org `org` listing a ciphertext CID, if any.
pub async fn dataset_by_cid(
    chain: &Chain,
    org: &str,
    cid: &str,
) -> Result<Option<pb::Dataset>, ChainError> {
    let id = chain
        .record(query::dataset_by_cid(OrgCid {
            org: org.into(),
            cid: cid.into(),
        }))
        .await?;
    let Some(id) = id else {
        return Ok(None);
    };
    Ok(chain.record(query::dataset(id.0)).await?)
}
