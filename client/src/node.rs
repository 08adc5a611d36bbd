//! [`ChainAccess`] over a CometBFT node's RPC.

use neurodata_abci::query::{PROOF_TYPE, Query};
use neurodata_proto::gateway::v1 as gw;
use tendermint_rpc::{Client as _, HttpClient, Paging};

use crate::ClientError;
use crate::access::{Answer, ChainAccess, Committed, LightBlock};
use crate::light::validator_set;

/// A CometBFT RPC client speaking NeuroData.
#[derive(Clone, Debug)]
pub struct NodeClient {
    url: String,
    rpc: HttpClient,
}

fn height(h: u64) -> Result<tendermint::block::Height, ClientError> {
    tendermint::block::Height::try_from(h).map_err(|e| ClientError::Decode(e.to_string()))
}

/// The events of an ABCI result as the gateway API carries them.
pub fn convert_events(events: &[tendermint::abci::Event]) -> Vec<gw::Event> {
    events
        .iter()
        .map(|e| gw::Event {
            r#type: e.kind.clone(),
            attributes: e
                .attributes
                .iter()
                .map(|a| gw::Attribute {
                    key: String::from_utf8_lossy(a.key_bytes()).into_owned(),
                    value: String::from_utf8_lossy(a.value_bytes()).into_owned(),
                })
                .collect(),
        })
        .collect()
}

impl NodeClient {
    /// Connects to a CometBFT RPC address such as `http://127.0.0.1:26657`.
    pub fn new(url: &str) -> Result<Self, ClientError> {
        Ok(NodeClient {
            url: url.to_owned(),
            rpc: HttpClient::new(url).map_err(|e| ClientError::rpc(url, e))?,
        })
    }

    /// The RPC address.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The raw RPC client (block and result reads beyond [`ChainAccess`]).
    pub fn rpc(&self) -> &HttpClient {
        &self.rpc
    }

    fn rpc_error(&self, e: tendermint_rpc::Error) -> ClientError {
        // CometBFT refuses bytes it has already seen with an RPC error, not a CheckTx code.
        if e.to_string().contains("tx already exists in cache") {
            return ClientError::AlreadyReceived;
        }
        ClientError::rpc(&self.url, e)
    }

    /// Broadcasts and returns after CheckTx (the tx hash), or its refusal.
    pub async fn broadcast_sync(&self, tx: Vec<u8>) -> Result<String, ClientError> {
        let r = self
            .rpc
            .broadcast_tx_sync(tx)
            .await
            .map_err(|e| self.rpc_error(e))?;
        let hash = r.hash.to_string();
        if r.code.is_err() {
            return Err(ClientError::Rejected {
                hash,
                codespace: r.codespace,
                code: r.code.value(),
                log: r.log,
            });
        }
        Ok(hash)
    }
}

impl ChainAccess for NodeClient {
    async fn chain_id(&self) -> Result<String, ClientError> {
        let s = self.rpc.status().await.map_err(|e| self.rpc_error(e))?;
        Ok(s.node_info.network.to_string())
    }

    async fn latest_height(&self) -> Result<u64, ClientError> {
        let s = self.rpc.status().await.map_err(|e| self.rpc_error(e))?;
        Ok(s.sync_info.latest_block_height.value())
    }

    async fn read(&self, query: &Query, at: u64, prove: bool) -> Result<Answer, ClientError> {
        let h = if at == 0 { None } else { Some(height(at)?) };
        let r = self
            .rpc
            .abci_query(Some(query.path().to_owned()), query.data(), h, prove)
            .await
            .map_err(|e| self.rpc_error(e))?;
        if r.code.is_err() {
            return Err(ClientError::Query {
                path: query.path().into(),
                log: r.log,
            });
        }
        let proof = match (prove, r.proof.as_ref().and_then(|p| p.ops.first())) {
            (false, _) => vec![],
            (true, Some(op)) if op.field_type == PROOF_TYPE => op.data.clone(),
            (true, _) => return Err(ClientError::Proof("no jmt proof in the answer".into())),
        };
        Ok(Answer {
            height: r.height.value(),
            key: String::from_utf8_lossy(&r.key).into_owned(),
            value: r.value,
            proof,
        })
    }

    async fn light_block(&self, at: u64) -> Result<LightBlock, ClientError> {
        if self.latest_height().await? < at {
            return Err(ClientError::NotYet(format!(
                "block {at} is not committed yet"
            )));
        }
        let commit = self
            .rpc
            .commit(height(at)?)
            .await
            .map_err(|e| self.rpc_error(e))?;
        let next_height = at
            .checked_add(1)
            .ok_or_else(|| ClientError::Decode(format!("height {at} is out of range")))?;
        let (validators, next) = tokio::try_join!(
            self.rpc.validators(height(at)?, Paging::All),
            self.rpc.validators(height(next_height)?, Paging::All),
        )
        .map_err(|e| self.rpc_error(e))?;
        Ok(LightBlock {
            signed_header: commit.signed_header,
            validators: validator_set(validators.validators)?,
            next_validators: validator_set(next.validators)?,
        })
    }

    async fn broadcast(&self, tx: Vec<u8>) -> Result<Committed, ClientError> {
        let r = self
            .rpc
            .broadcast_tx_commit(tx)
            .await
            .map_err(|e| self.rpc_error(e))?;
        let hash = r.hash.to_string();
        for (code, codespace, log) in [
            (r.check_tx.code, r.check_tx.codespace, r.check_tx.log),
            (r.tx_result.code, r.tx_result.codespace, r.tx_result.log),
        ] {
            if code.is_err() {
                return Err(ClientError::Rejected {
                    hash,
                    codespace,
                    code: code.value(),
                    log,
                });
            }
        }
        Ok(Committed {
            height: r.height.value(),
            hash,
            events: convert_events(&r.tx_result.events),
        })
    }
}
