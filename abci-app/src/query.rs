//! ABCI Query paths: which state key each path reads. Shared by the server and by clients, which
//! recompute the key to check that a proof is for what they asked.

use neurodata_proto::chain::v1 as pb;

use crate::address::Address;
use crate::{app, escrow, governance, ledger, market, membership};

/// The proof type name in `ProofOp.type`: a borsh `jmt::proof::SparseMerkleProof<Sha256>` for
/// `sha256(key)` against the app hash.
pub const PROOF_TYPE: &str = "jmt.sha256";

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No such path.
    #[error(
        "unknown query path {0:?}; known: /account /identity /revocation /org /proposal /params /supply /block /store /dataset /dataset_by_cid /dataset_stats /purchase /live_purchase /orgs /validators /proposals /datasets /purchases"
    )]
    UnknownPath(String),
    /// The data is not what the path expects.
    #[error("query {path}: {reason}")]
    BadData {
        /// The path.
        path: String,
        /// What the data should be.
        reason: &'static str,
    },
}

/// A query for one key (provable) or for a list (latest height, no proof).
#[derive(Clone, Debug, PartialEq)]
pub enum QueryTarget {
    /// One state key.
    Key(String),
    /// All records under a prefix.
    List(&'static str),
    /// Datasets passing a filter.
    Datasets(pb::DatasetFilter),
    /// Purchases passing a filter.
    Purchases(pb::PurchaseFilter),
}

fn id(path: &str, data: &[u8]) -> Result<u64, QueryError> {
    <[u8; 8]>::try_from(data)
        .map(u64::from_be_bytes)
        .map_err(|_| QueryError::BadData {
            path: path.to_owned(),
            reason: "data must be the id as 8 big-endian bytes",
        })
}

fn filter<M: prost::Message + Default>(path: &str, data: &[u8]) -> Result<M, QueryError> {
    M::decode(data).map_err(|_| QueryError::BadData {
        path: path.to_owned(),
        reason: "data must be the protobuf filter message (neurodata.chain.v1)",
    })
}

/// The data of a `/live_purchase` query: buyer address then dataset id.
pub fn live_purchase_data(buyer: &Address, dataset: u64) -> Vec<u8> {
    [&buyer.0[..], &dataset.to_be_bytes()].concat()
}

/// Encodes a filter as query data.
pub fn filter_data<M: prost::Message>(filter: &M) -> Vec<u8> {
    filter.encode_to_vec()
}

fn address(path: &str, data: &[u8]) -> Result<Address, QueryError> {
    Address::from_slice(data).ok_or(QueryError::BadData {
        path: path.to_owned(),
        reason: "data must be a 32-byte address or fingerprint",
    })
}

/// Maps a query path and its data to what it reads.
pub fn target(path: &str, data: &[u8]) -> Result<QueryTarget, QueryError> {
    use QueryTarget::{Key, List};
    Ok(match path {
        "/account" => Key(ledger::state_key::account(&address(path, data)?)),
        "/identity" => Key(membership::state_key::identity(&address(path, data)?.0)),
        "/revocation" => Key(membership::state_key::revocation(&address(path, data)?.0)),
        "/org" => {
            let id = std::str::from_utf8(data).map_err(|_| QueryError::BadData {
                path: path.to_owned(),
                reason: "data must be the UTF-8 org id",
            })?;
            Key(membership::state_key::org(id))
        }
        "/proposal" => {
            let id = <[u8; 8]>::try_from(data).map_err(|_| QueryError::BadData {
                path: path.to_owned(),
                reason: "data must be the proposal id as 8 big-endian bytes",
            })?;
            Key(governance::state_key::proposal(u64::from_be_bytes(id)))
        }
        "/params" => Key(governance::state_key::params().into()),
        "/supply" => Key(ledger::state_key::supply().into()),
        "/block" => Key(app::state_key::block().into()),
        "/store" => Key(
            String::from_utf8(data.to_vec()).map_err(|_| QueryError::BadData {
                path: path.to_owned(),
                reason: "data must be a UTF-8 state key",
            })?,
        ),
        "/dataset" => Key(market::state_key::dataset(id(path, data)?)),
        "/dataset_stats" => Key(market::state_key::stats(id(path, data)?)),
        "/dataset_by_cid" => {
            let (org, cid) = std::str::from_utf8(data)
                .ok()
                .and_then(|d| d.split_once('/'))
                .ok_or_else(|| QueryError::BadData {
                    path: path.to_owned(),
                    reason: "data must be ORG/CID in UTF-8 (see dataset_by_cid_data)",
                })?;
            Key(market::state_key::by_cid(org, cid))
        }
        "/purchase" => Key(escrow::state_key::purchase(id(path, data)?)),
        "/live_purchase" => {
            if data.len() != 40 {
                return Err(QueryError::BadData {
                    path: path.to_owned(),
                    reason: "data must be the 32-byte buyer then the 8-byte dataset id",
                });
            }
            Key(escrow::state_key::by_buyer(
                &address(path, &data[..32])?,
                id(path, &data[32..])?,
            ))
        }
        "/datasets" => QueryTarget::Datasets(filter(path, data)?),
        "/purchases" => QueryTarget::Purchases(filter(path, data)?),
        "/orgs" => List(membership::state_key::ORGS),
        "/validators" => List(governance::state_key::VALIDATORS),
        "/proposals" => List(governance::state_key::PROPOSALS),
        other => return Err(QueryError::UnknownPath(other.to_owned())),
    })
}

/// The data of a `/dataset_by_cid` query: the provider org and the CID.
pub fn dataset_by_cid_data(org: &str, cid: &str) -> Vec<u8> {
    format!("{org}/{cid}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_domain_keys_and_bad_data_is_refused() {
        assert_eq!(
            target("/org", b"medlab").unwrap(),
            QueryTarget::Key("membership/org/medlab".into())
        );
        assert_eq!(
            target("/proposal", &7u64.to_be_bytes()).unwrap(),
            QueryTarget::Key(governance::state_key::proposal(7))
        );
        assert!(matches!(
            target("/account", b"short"),
            Err(QueryError::BadData { .. })
        ));
        assert!(matches!(
            target("/nope", b""),
            Err(QueryError::UnknownPath(_))
        ));
    }
}
