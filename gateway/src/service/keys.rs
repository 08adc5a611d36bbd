//! `Keys.Deposit`: a provider of the gateway's org hands over a dataset's data key so the
//! gateway can deliver it to buyers. The key is stored sealed in the keystore.

use std::sync::Arc;

use neurodata_crypto::DataKey;
use neurodata_proto::gateway::v1 as gw;
use tonic::{Request, Response, Status};

use super::{Shared, caller};
use crate::market::keystore::KeyStore;

/// The Keys service.
pub struct KeysService {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The keystore (None: this gateway does not deliver keys).
    pub keystore: Option<Arc<KeyStore>>,
}

#[tonic::async_trait]
impl gw::keys_server::Keys for KeysService {
    async fn deposit(
        &self,
        req: Request<gw::DepositKeyRequest>,
    ) -> Result<Response<gw::DepositKeyResponse>, Status> {
        let Some(keystore) = &self.keystore else {
            return Err(Status::failed_precondition(
                "this gateway keeps no keystore (set keystore_dir and delivery_cert)",
            ));
        };
        let own = self.shared.config.org_id.as_deref();
        if let Some(c) = caller(&req)
            && Some(c.member.org_id.as_str()) != own
        {
            return Err(Status::permission_denied(format!(
                "this gateway keeps the keys of org {}; {} belongs to {}",
                own.unwrap_or("?"),
                c.member.common_name,
                c.member.org_id
            )));
        }
        let key = DataKey::from_slice(&req.into_inner().key)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let commitment = keystore.put(&key).map_err(|e| {
            tracing::error!("keystore: {e}");
            Status::unavailable("keystore error (see the gateway's log)")
        })?;
        Ok(Response::new(gw::DepositKeyResponse {
            commitment: commitment.to_vec(),
        }))
    }
}
