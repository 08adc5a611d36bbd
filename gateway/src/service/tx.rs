//! `Tx.Broadcast`: relays a signed tx to CometBFT and, in COMMIT mode, waits for the block.

use std::sync::Arc;
use std::time::Duration;

use neurodata_proto::gateway::v1 as gw;
use tonic::{Request, Response, Status};

use super::{Shared, blobs};
use crate::auth::chain_status;
use crate::chain::SendError;

/// The Tx service.
pub struct TxService(pub Arc<Shared>);

#[tonic::async_trait]
impl gw::tx_server::Tx for TxService {
    async fn broadcast(
        &self,
        req: Request<gw::BroadcastRequest>,
    ) -> Result<Response<gw::BroadcastResponse>, Status> {
        let shared = &self.0;
        let req = req.into_inner();
        if req.tx.is_empty() {
            return Err(Status::invalid_argument(
                "tx is empty: send the bytes of a signed neurodata.chain.v1.Tx",
            ));
        }
        require_listed_blobs(shared, &req.tx).await?;
        let wait = (req.mode() == gw::BroadcastMode::Commit).then(|| match req.timeout_ms {
            0 => shared.config.commit_timeout(),
            ms => Duration::from_millis(u64::from(ms)).min(shared.config.max_commit_timeout()),
        });
        submit(shared, req.tx, wait).await.map(Response::new)
    }
}

/// A listing must point at a ciphertext this gateway holds: buyers download it from here, and
/// validators attest it. The chain cannot see blob stores, so the provider org's gateway refuses
/// such a tx before it is broadcast. Txs that do not decode are left for the chain to refuse.
async fn require_listed_blobs(shared: &Shared, tx: &[u8]) -> Result<(), Status> {
    use neurodata_proto::chain::v1 as pb;
    use pb::message::Action;
    use prost::Message as _;
    let Ok(envelope) = pb::Tx::decode(tx) else {
        return Ok(());
    };
    let Ok(body) = pb::TxBody::decode(envelope.body.as_slice()) else {
        return Ok(());
    };
    for m in body.messages {
        if let Some(Action::RegisterDataset(r)) = m.action
            && let Ok(cid) = r.cid.parse::<crate::cid::Cid>()
        {
            let size = shared.blobs.size(&cid).await.map_err(blobs::blob_status)?;
            match size {
                None => {
                    return Err(Status::failed_precondition(format!(
                        "blob {cid} is not in this gateway's store: upload the ciphertext before \
                         listing it"
                    )));
                }
                Some(n) if n != r.ciphertext_size => {
                    return Err(Status::failed_precondition(format!(
                        "blob {cid} holds {n} bytes but the listing says ciphertext_size {}",
                        r.ciphertext_size
                    )));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Sends a signed tx to CometBFT; with `commit_wait`, waits up to that long for the block that
/// holds it and answers with its execution result.
pub async fn submit(
    shared: &Shared,
    tx: Vec<u8>,
    commit_wait: Option<Duration>,
) -> Result<gw::BroadcastResponse, Status> {
    shared
        .chain
        .send(tx, commit_wait)
        .await
        .map_err(|e| match e {
            SendError::AlreadyReceived => Status::already_exists(e.to_string()),
            SendError::Chain(e) => chain_status(e),
            SendError::Timeout { .. } => Status::deadline_exceeded(e.to_string()),
            SendError::ShuttingDown => Status::unavailable(e.to_string()),
        })
}
