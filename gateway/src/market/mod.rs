//! The marketplace's side of the gateway: who may download a dataset's ciphertext
//! ([`access::MarketAccess`]), the org's data keys at rest ([`keystore::KeyStore`]) and the task
//! that delivers them to buyers as purchases open ([`delivery::Delivery`]).

pub mod access;
pub mod delivery;
pub mod keystore;

use neurodata_proto::chain::v1 as pb;
use prost::Message;

use crate::chain::{Chain, ChainError};

/// Reads one record at the latest height through the ABCI query `path` (None: absent).
pub async fn query<M: Message + Default>(
    chain: &Chain,
    path: &str,
    data: Vec<u8>,
) -> Result<Option<M>, ChainError> {
    let value = chain.query_latest(path, data).await?;
    if value.is_empty() {
        return Ok(None);
    }
    M::decode(value.as_slice())
        .map(Some)
        .map_err(|e| ChainError::Bad {
            url: path.to_owned(),
            reason: format!("answer does not decode: {e}"),
        })
}

/// The dataset of provider org `org` listing a ciphertext CID, if any.
pub async fn dataset_by_cid(
    chain: &Chain,
    org: &str,
    cid: &str,
) -> Result<Option<pb::Dataset>, ChainError> {
    let id = chain
        .query_latest(
            "/dataset_by_cid",
            neurodata_abci::query::dataset_by_cid_data(org, cid),
        )
        .await?;
    let Ok(id) = <[u8; 8]>::try_from(id.as_slice()) else {
        return Ok(None);
    };
    query(chain, "/dataset", id.to_vec()).await
}
