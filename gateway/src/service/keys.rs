//! `Keys.Deposit`: a member of the gateway's org hands over a data key so the gateway can
//! deliver it to buyers: a dataset's provider the dataset's key, a model's owner (its job's
//! submitter, whatever its role, or an admin) the key of the model's two ciphertexts, deposited
//! with the ONNX export's ciphertext CID. The key is stored sealed in the keystore, bound to the
//! depositor and to the CID of the ciphertext it encrypts (already stored here), which the
//! delivery task checks against the listing before it hands the key to anyone.

use std::sync::Arc;

use neurodata_crypto::DataKey;
use neurodata_proto::gateway::v1 as gw;
use tonic::{Request, Response, Status};

use super::blobs::blob_status;
use super::{Shared, caller};
use crate::cid::Cid;
use crate::market::keystore::{Deposit, KeyStore, KeyStoreError};

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
        let who = caller(&req);
        if let Some(c) = &who
            && Some(c.member.org_id.as_str()) != own
        {
            return Err(Status::permission_denied(format!(
                "this gateway keeps the keys of org {}; {} belongs to {}",
                own.unwrap_or("?"),
                c.member.common_name,
                c.member.org_id
            )));
        }
        // The deposit is bound to its depositor, so the delivery task can refuse a listing by
        // anyone else; plain-text development mode has no identity to bind to.
        let Some(depositor) = who.map(|c| c.member.fingerprint) else {
            return Err(Status::failed_precondition(
                "deposits are bound to the depositor's certificate: call over mTLS",
            ));
        };
        let r = req.into_inner();
        let key =
            DataKey::from_slice(&r.key).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if r.cid.is_empty() {
            return Err(Status::invalid_argument(
                "DepositKeyRequest.cid is required: the CID of the ciphertext this key \
                 encrypts (a model's: its ONNX export's; upload the ciphertext first)",
            ));
        }
        let cid = r
            .cid
            .parse::<Cid>()
            .map_err(|e| Status::invalid_argument(format!("DepositKeyRequest.cid: {e}")))?;
        if self
            .shared
            .blobs
            .size(&cid)
            .await
            .map_err(blob_status)?
            .is_none()
        {
            return Err(Status::failed_precondition(format!(
                "blob {cid} is not in this gateway's store: upload the ciphertext before \
                 depositing its key"
            )));
        }
        let deposit = Deposit {
            key,
            depositor,
            cid: cid.to_string(),
        };
        let commitment = keystore.put(&deposit).map_err(|e| match e {
            KeyStoreError::AlreadyBound { .. } => Status::already_exists(e.to_string()),
            KeyStoreError::Unbound(_) => Status::failed_precondition(e.to_string()),
            KeyStoreError::BadCid => Status::invalid_argument(e.to_string()),
            KeyStoreError::Io { .. } | KeyStoreError::Sealed(_) | KeyStoreError::Crypto(_) => {
                tracing::error!("keystore: {e}");
                Status::unavailable("keystore error (see the gateway's log)")
            }
        })?;
        tracing::info!(
            commitment = %hex::encode(commitment),
            %cid,
            depositor = %hex::encode(depositor),
            "data key deposited"
        );
        Ok(Response::new(gw::DepositKeyResponse {
            commitment: commitment.to_vec(),
        }))
    }
}
