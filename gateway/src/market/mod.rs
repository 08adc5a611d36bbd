//! The marketplace's side of the gateway: who may download a dataset's ciphertext
//! ([`access::MarketAccess`]), the org's data keys at rest ([`keystore::KeyStore`]) and the task
//! that delivers them to buyers as purchases open ([`delivery::Delivery`]).

pub mod access;
pub mod delivery;
pub mod keystore;

use neurodata_proto::chain::v1 as pb;
use prost::Message;
use tendermint_rpc::Client as _;

use crate::chain::{Chain, ChainError};

/// Reads one record at the latest height through the ABCI query `path` (None: absent).
pub async fn query<M: Message + Default>(
    chain: &Chain,
    path: &str,
    data: Vec<u8>,
) -> Result<Option<M>, ChainError> {
    let r = chain
        .rpc()
        .abci_query(Some(path.to_owned()), data, None, false)
        .await
        .map_err(|e| chain.rpc_error(e))?;
    let bad = |reason: String| ChainError::Bad {
        url: path.to_owned(),
        reason,
    };
    if r.code.is_err() {
        return Err(bad(r.log));
    }
    if r.value.is_empty() {
        return Ok(None);
    }
    M::decode(r.value.as_slice())
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

/// The dataset listing a ciphertext CID, if any.
pub async fn dataset_by_cid(chain: &Chain, cid: &str) -> Result<Option<pb::Dataset>, ChainError> {
    let r = chain
        .rpc()
        .abci_query(
            Some("/dataset_by_cid".to_owned()),
            cid.as_bytes().to_vec(),
            None,
            false,
        )
        .await
        .map_err(|e| chain.rpc_error(e))?;
    let Ok(id) = <[u8; 8]>::try_from(r.value.as_slice()) else {
        return Ok(None);
    };
    query(chain, "/dataset", id.to_vec()).await
}
