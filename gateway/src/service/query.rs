//! `Query`: state reads at a height, with the Merkle proof and the next block's header when asked
//! for, so the client can check the answer itself ([`neurodata_client::gateway`] does).

use std::sync::Arc;
use std::time::Duration;

use neurodata_abci::address::Address;
use neurodata_abci::query::{self, Query};
use neurodata_client::access::wait_light_block;
use neurodata_client::{ChainAccess, ClientError};
use neurodata_proto::gateway::v1 as gw;
use tendermint_proto::Protobuf;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::auth::chain_status;

/// How long a proved query waits for the block after the one it read (the header that carries
/// the app hash of that state).
const NEXT_HEADER_WAIT: Duration = Duration::from_secs(15);

/// The Query service.
pub struct QueryService(pub Arc<Shared>);

fn read_status(e: ClientError) -> Status {
    match e {
        ClientError::Query { path, log } => {
            Status::invalid_argument(format!("query {path}: {log}"))
        }
        ClientError::Timeout(what) => {
            Status::deadline_exceeded(format!("no header yet to prove against: {what}"))
        }
        ClientError::NotYet(what) => Status::unavailable(what),
        other => chain_status(other.into()),
    }
}

impl QueryService {
    /// Reads one row of the query table; with `prove`, adds the proof and the next block's header.
    async fn serve(
        &self,
        query: Query,
        height: u64,
        prove: bool,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let chain = &*self.0.chain;
        let r = chain
            .read(&query, height, prove)
            .await
            .map_err(read_status)?;
        let mut out = gw::QueryResponse {
            height: r.height,
            key: r.key,
            value: r.value,
            proof: r.proof,
            ..Default::default()
        };
        if prove {
            let next = wait_light_block(chain, r.height + 1, NEXT_HEADER_WAIT)
                .await
                .map_err(read_status)?;
            let header = next.signed_header.header;
            out.app_hash = header.app_hash.as_bytes().to_vec();
            out.next_header = Protobuf::<tendermint_proto::types::Header>::encode_vec(header);
        }
        Ok(Response::new(out))
    }

    /// A list at the latest height.
    async fn list(&self, query: Query) -> Result<Response<gw::ListResponse>, Status> {
        let r = self
            .0
            .chain
            .read(&query, 0, false)
            .await
            .map_err(read_status)?;
        Ok(Response::new(gw::ListResponse {
            height: r.height,
            value: r.value,
        }))
    }
}

fn address(a: &[u8]) -> Result<Address, Status> {
    Address::from_slice(a).ok_or_else(|| {
        Status::invalid_argument(format!(
            "address must be 32 bytes (SHA-256 of the member certificate), got {}",
            a.len()
        ))
    })
}

#[tonic::async_trait]
impl gw::query_server::Query for QueryService {
    async fn account(
        &self,
        req: Request<gw::AddressQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.serve(Query::Account(address(&q.address)?), q.height, q.prove)
            .await
    }

    async fn identity(
        &self,
        req: Request<gw::AddressQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.serve(Query::Identity(address(&q.address)?), q.height, q.prove)
            .await
    }

    async fn revocation(
        &self,
        req: Request<gw::AddressQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.serve(Query::Revocation(address(&q.address)?), q.height, q.prove)
            .await
    }

    async fn org(&self, req: Request<gw::OrgQuery>) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.serve(Query::Org(q.org_id), q.height, q.prove).await
    }

    async fn proposal(
        &self,
        req: Request<gw::ProposalQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.serve(Query::Proposal(q.proposal_id), q.height, q.prove)
            .await
    }

    async fn params(
        &self,
        req: Request<gw::StateQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.serve(Query::Params, q.height, q.prove).await
    }

    async fn supply(
        &self,
        req: Request<gw::StateQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.serve(Query::Supply, q.height, q.prove).await
    }

    async fn orgs(&self, _: Request<gw::ListQuery>) -> Result<Response<gw::ListResponse>, Status> {
        self.list(Query::Orgs).await
    }

    async fn validators(
        &self,
        _: Request<gw::ListQuery>,
    ) -> Result<Response<gw::ListResponse>, Status> {
        self.list(Query::Validators).await
    }

    async fn proposals(
        &self,
        _: Request<gw::ListQuery>,
    ) -> Result<Response<gw::ListResponse>, Status> {
        self.list(Query::Proposals).await
    }

    async fn dataset(
        &self,
        req: Request<gw::IdQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.serve(Query::Dataset(q.id), q.height, q.prove).await
    }

    async fn dataset_stats(
        &self,
        req: Request<gw::IdQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.serve(Query::DatasetStats(q.id), q.height, q.prove)
            .await
    }

    async fn purchase(
        &self,
        req: Request<gw::IdQuery>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let q = req.into_inner();
        self.serve(Query::Purchase(q.id), q.height, q.prove).await
    }

    async fn datasets(
        &self,
        req: Request<gw::DatasetsQuery>,
    ) -> Result<Response<gw::ListResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        self.list(Query::Datasets(f)).await
    }

    async fn purchases(
        &self,
        req: Request<gw::PurchasesQuery>,
    ) -> Result<Response<gw::ListResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        self.list(Query::Purchases(f)).await
    }

    async fn read(
        &self,
        req: Request<gw::ReadRequest>,
    ) -> Result<Response<gw::QueryResponse>, Status> {
        let r = req.into_inner();
        let q = query::Query::parse(&r.path, &r.data)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Raw state keys are for operators on the node, not for members through a gateway.
        if let Query::Store(_) = q {
            return Err(Status::permission_denied(
                "/store reads raw state keys: ask the node's operator; members read records",
            ));
        }
        if r.prove && q.proof() == query::Proof::None {
            return Err(Status::invalid_argument(format!(
                "{} is a list: lists carry no proof",
                q.path()
            )));
        }
        self.serve(q, r.height, r.prove).await
    }

    async fn leaderboard(
        &self,
        req: Request<gw::IdQuery>,
    ) -> Result<Response<gw::ListResponse>, Status> {
        // A list at the latest height: scores settle by block, and every entry comes from the
        // chain's evaluation records.
        self.list(query::leaderboard(req.into_inner().id).query)
            .await
    }

    async fn light_block(
        &self,
        req: Request<gw::LightBlockRequest>,
    ) -> Result<Response<gw::LightBlockResponse>, Status> {
        let height = req.into_inner().height;
        if height == 0 {
            return Err(Status::invalid_argument("height must be at least 1"));
        }
        let lb = self
            .0
            .chain
            .light_block(height)
            .await
            .map_err(read_status)?;
        Ok(Response::new(lb.to_response()))
    }
}
