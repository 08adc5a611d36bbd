//! `Status.Get`: chain id, height, versions, and who the gateway thinks the caller is.

use std::sync::Arc;

use neurodata_proto::gateway::v1 as gw;
use tendermint_rpc::Client as _;
use tonic::{Request, Response, Status};

use super::{Shared, caller};
use crate::auth::chain_status;

/// The Status service.
pub struct StatusService(pub Arc<Shared>);

#[tonic::async_trait]
impl gw::status_server::Status for StatusService {
    async fn get(
        &self,
        req: Request<gw::StatusRequest>,
    ) -> Result<Response<gw::StatusResponse>, Status> {
        let chain = &self.0.chain;
        let s = chain
            .rpc()
            .status()
            .await
            .map_err(|e| chain_status(chain.rpc_error(e)))?;
        let member = caller(&req).map(|c| c.member);
        Ok(Response::new(gw::StatusResponse {
            chain_id: s.node_info.network.to_string(),
            height: s.sync_info.latest_block_height.value(),
            app_hash: s.sync_info.latest_app_hash.as_bytes().to_vec(),
            block_time_unix: s.sync_info.latest_block_time.unix_timestamp(),
            node_id: s.node_info.id.to_string(),
            node_version: s.node_info.version.to_string(),
            gateway_version: env!("CARGO_PKG_VERSION").to_owned(),
            catching_up: s.sync_info.catching_up,
            member_fingerprint: member
                .as_ref()
                .map(|m| m.fingerprint_hex())
                .unwrap_or_default(),
            member_org: member
                .as_ref()
                .map(|m| m.org_id.clone())
                .unwrap_or_default(),
            member_role: member.map(|m| m.role.to_string()).unwrap_or_default(),
        }))
    }
}
