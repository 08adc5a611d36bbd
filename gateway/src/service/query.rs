//! `Query`: state reads at a height, with the Merkle proof and the next block's header when asked
//! for, so the client can check the answer itself ([`neurodata_client::gateway`] does).

use std::sync::Arc;
use std::time::Duration;

use neurodata_abci::query::PROOF_TYPE;
use neurodata_proto::gateway::v1 as gw;
use tendermint_proto::Protobuf;
use tendermint_rpc::Client as _;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::auth::chain_status;

/// How long a proved query waits for the block after the one it read (the header that carries
/// the app hash of that state).
const NEXT_HEADER_WAIT: Duration = Duration::from_secs(15);

/// The Query service.
pub struct QueryService(pub Arc<Shared>);

impl QueryService {
    async fn read(
        &self,
        path: &str,
        data: Vec<u8>,
        height: u64,
        prove: bool,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let chain = &self.0.chain;
        let h = match height {
            0 => None,
            h => Some(
                tendermint::block::Height::try_from(h)
                    .map_err(|e| Status::invalid_argument(format!("height {h}: {e}")))?,
            ),
        };
        let r = chain
            .rpc()
            .abci_query(Some(path.to_owned()), data, h, prove)
            .await
            .map_err(|e| chain_status(chain.rpc_error(e)))?;
        if r.code.is_err() {
            return Err(Status::invalid_argument(format!(
                "query {path} at height {height}: {}",
                r.log
            )));
        }
        let height = r.height.value();
        let mut out = gw::QueryResponse {
            height,
            key: String::from_utf8_lossy(&r.key).into_owned(),
            value: r.value,
            ..Default::default()
        };
        if prove {
            let op = r
                .proof
                .as_ref()
                .and_then(|p| p.ops.first())
                .filter(|op| op.field_type == PROOF_TYPE)
                .ok_or_else(|| Status::internal(format!("node returned no {PROOF_TYPE} proof")))?;
            out.proof = op.data.clone();
            let header = next_header(chain, height).await?;
            out.app_hash = header.app_hash.as_bytes().to_vec();
            out.next_header = Protobuf::<tendermint_proto::types::Header>::encode_vec(header);
        }
        Ok(Response::new(out))
    }

    async fn list(&self, path: &str) -> Result<Response<gw::ListResponse>, Status> {
        self.list_with(path, vec![]).await
    }

    async fn list_with(
        &self,
        path: &str,
        data: Vec<u8>,
    ) -> Result<Response<gw::ListResponse>, Status> {
        let chain = &self.0.chain;
        let r = chain
            .rpc()
            .abci_query(Some(path.to_owned()), data, None, false)
            .await
            .map_err(|e| chain_status(chain.rpc_error(e)))?;
        if r.code.is_err() {
            return Err(Status::internal(format!("query {path}: {}", r.log)));
        }
        Ok(Response::new(gw::ListResponse {
            height: r.height.value(),
            value: r.value,
        }))
    }
}

async fn next_header(
    chain: &crate::chain::Chain,
    height: u64,
) -> Result<tendermint::block::Header, Status> {
    let next = tendermint::block::Height::try_from(height + 1)
        .map_err(|e| Status::internal(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + NEXT_HEADER_WAIT;
    loop {
        match chain.rpc().header(next).await {
            Ok(h) => return Ok(h.header),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(Status::deadline_exceeded(format!(
                    "no header at height {next} yet to prove against: {e}"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn address(a: &[u8]) -> Result<Vec<u8>, Status> {
    if a.len() != 32 {
        return Err(Status::invalid_argument(format!(
            "address must be 32 bytes (SHA-256 of the member certificate), got {}",
            a.len()
        )));
    }
    Ok(a.to_vec())
}

#[tonic::async_trait]
impl gw::query_server::Query for QueryService {
    async fn account(
        &self,
        req: Request<gw::AddressQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.read("/account", address(&q.address)?, q.height, q.prove)
            .await
    }

    async fn identity(
        &self,
        req: Request<gw::AddressQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.read("/identity", address(&q.address)?, q.height, q.prove)
            .await
    }

    async fn revocation(
        &self,
        req: Request<gw::AddressQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.read("/revocation", address(&q.address)?, q.height, q.prove)
            .await
    }

    async fn org(&self, req: Request<gw::OrgQuery>) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.read("/org", q.org_id.into_bytes(), q.height, q.prove)
            .await
    }

    async fn proposal(
        &self,
        req: Request<gw::ProposalQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.read(
            "/proposal",
            q.proposal_id.to_be_bytes().to_vec(),
            q.height,
            q.prove,
        )
        .await
    }

    async fn params(
        &self,
        req: Request<gw::StateQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.read("/params", vec![], q.height, q.prove).await
    }

    async fn supply(
        &self,
        req: Request<gw::StateQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.read("/supply", vec![], q.height, q.prove).await
    }

    async fn orgs(&self, _: Request<gw::ListQuery>) -> Result<Response<gw::ListResponse>, Status> {
        self.list("/orgs").await
    }

    async fn validators(
        &self,
        _: Request<gw::ListQuery>,
    ) -> Result<Response<gw::ListResponse>, Status> {
        self.list("/validators").await
    }

    async fn proposals(
        &self,
        _: Request<gw::ListQuery>,
    ) -> Result<Response<gw::ListResponse>, Status> {
        self.list("/proposals").await
    }

    async fn dataset(
        &self,
        req: Request<gw::IdQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.read("/dataset", q.id.to_be_bytes().to_vec(), q.height, q.prove)
            .await
    }

    async fn dataset_stats(
        &self,
        req: Request<gw::IdQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.read(
            "/dataset_stats",
            q.id.to_be_bytes().to_vec(),
            q.height,
            q.prove,
        )
        .await
    }

    async fn purchase(
        &self,
        req: Request<gw::IdQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.read("/purchase", q.id.to_be_bytes().to_vec(), q.height, q.prove)
            .await
    }

    async fn datasets(
        &self,
        req: Request<gw::DatasetsQuery>,
    ) -> Result<Response<gw::ListResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        self.list_with("/datasets", neurodata_abci::query::filter_data(&f))
            .await
    }

    async fn purchases(
        &self,
        req: Request<gw::PurchasesQuery>,
    ) -> Result<Response<gw::ListResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        self.list_with("/purchases", neurodata_abci::query::filter_data(&f))
            .await
    }
}
