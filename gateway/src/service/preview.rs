//! `Previews.Get`: the rows a member's on-chain preview request drew from this org's listing.
//!
//! The request is on chain (`RequestPreview`), so the rows are drawn with the hash of the block
//! after it, which did not exist when it was made: the provider cannot choose its best rows, and
//! each member asks once per dataset. The gateway decrypts the listing's ciphertext with the
//! deposited key, reads the table as the listing's format says, and returns the drawn rows with
//! their Merkle proofs against the listing's `rows_root`; the client checks the draw, the block
//! hash (light client) and every proof, so a gateway that shows other rows is caught.

use std::sync::Arc;
use std::time::Duration;

use neurodata_abci::address::Address;
use neurodata_abci::query::{self, BuyerDataset};
use neurodata_client::ChainAccess;
use neurodata_client::access::wait_light_block;
use neurodata_crypto::stream::DecryptingWriter;
use neurodata_proto::chain::v1 as pb;
use neurodata_proto::gateway::v1 as gw;
use neurodata_tabular::{Document, Format, ReadError, merkle};
use tonic::{Request, Response, Status};

use super::{Shared, caller};
use crate::auth::chain_status;
use crate::market::keystore::KeyStore;

/// How long a preview waits for the block after the request.
const NEXT_BLOCK_WAIT: Duration = Duration::from_secs(30);

/// Largest plaintext a preview decrypts (in memory).
const MAX_PREVIEW_PLAINTEXT: u64 = 256 << 20;

/// The Previews service.
pub struct PreviewService {
    /// What every service reads.
    pub shared: Arc<Shared>,
    /// The org's data keys (None: this gateway holds none and previews nothing).
    pub keystore: Option<Arc<KeyStore>>,
}

fn chain_err(e: neurodata_client::ClientError) -> Status {
    chain_status(e.into())
}

/// The listing's format as the reader knows it.
pub fn format_of(dataset: &pb::Dataset) -> Format {
    match pb::DataFormat::try_from(dataset.format) {
        Ok(pb::DataFormat::JsonLines) => Format::JsonLines,
        Ok(pb::DataFormat::JsonArray) => Format::JsonArray,
        _ => Format::Csv,
    }
}

impl PreviewService {
    async fn plaintext(&self, dataset: &pb::Dataset) -> Result<Vec<u8>, Status> {
        let keystore = self
            .keystore
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("this gateway holds no data keys"))?;
        let commitment = <[u8; 32]>::try_from(dataset.key_commitment.as_slice())
            .map_err(|_| Status::internal("listing key commitment is not 32 bytes"))?;
        let deposit = keystore
            .get(&commitment)
            .map_err(|e| Status::internal(e.to_string()))?
            .filter(|d| d.cid == dataset.cid)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "no data key for dataset {} in this gateway's keystore",
                    dataset.id
                ))
            })?;
        if dataset.size > MAX_PREVIEW_PLAINTEXT {
            return Err(Status::resource_exhausted(format!(
                "dataset {} is {} bytes; previews decrypt at most {MAX_PREVIEW_PLAINTEXT}",
                dataset.id, dataset.size
            )));
        }
        let cid = dataset
            .cid
            .parse::<crate::cid::Cid>()
            .map_err(|e| Status::internal(format!("listing CID: {e}")))?;
        let mut blob = self
            .shared
            .blobs
            .open_blob(&cid)
            .await
            .map_err(super::blobs::blob_status)?;
        let mut writer = DecryptingWriter::new(Vec::new(), &deposit.key);
        while let Some(chunk) = blob
            .next_chunk(1 << 20)
            .await
            .map_err(super::blobs::blob_status)?
        {
            std::io::Write::write_all(&mut writer, &chunk)
                .map_err(|e| Status::data_loss(format!("ciphertext {cid}: {e}")))?;
        }
        let (done, plain) = writer
            .finish()
            .map_err(|e| Status::data_loss(format!("ciphertext {cid}: {e}")))?;
        if done.plaintext_sha256.as_slice() != dataset.plaintext_sha256 {
            return Err(Status::data_loss(format!(
                "dataset {}: the decrypted bytes do not hash to the listing's plaintext SHA-256",
                dataset.id
            )));
        }
        Ok(plain)
    }
}

#[tonic::async_trait]
impl gw::previews_server::Previews for PreviewService {
    async fn get(
        &self,
        req: Request<gw::PreviewQuery>,
    ) -> Result<Response<gw::PreviewResponse>, Status> {
        let member = caller(&req)
            .map(|c| c.member)
            .ok_or_else(|| Status::unauthenticated("a preview is for a member certificate"))?;
        let id = req.into_inner().dataset_id;
        let chain = &*self.shared.chain;
        let dataset = chain
            .record(query::dataset(id))
            .await
            .map_err(chain_err)?
            .ok_or_else(|| Status::not_found(format!("dataset {id} does not exist")))?;
        if self.shared.config.org_id.as_deref() != Some(dataset.provider_org.as_str()) {
            return Err(Status::failed_precondition(format!(
                "dataset {id} is {}'s: ask its gateway ({})",
                dataset.provider_org, dataset.location
            )));
        }
        let request = chain
            .record(query::preview_request(BuyerDataset {
                buyer: Address(member.fingerprint),
                dataset: id,
            }))
            .await
            .map_err(chain_err)?
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "no preview request of yours for dataset {id} on chain: send RequestPreview \
                     first (ndctl dataset preview does)"
                ))
            })?;
        let root = <[u8; 32]>::try_from(dataset.rows_root.as_slice())
            .map_err(|_| Status::failed_precondition(format!("dataset {id} has no rows root")))?;
        let next = request
            .height
            .checked_add(1)
            .ok_or_else(|| Status::internal("request height out of range"))?;
        let block = wait_light_block(chain, next, NEXT_BLOCK_WAIT)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let block_hash = block.signed_header.header.hash();
        let drawn = merkle::draw_rows(block_hash.as_bytes(), dataset.rows, request.rows);

        let plain = self.plaintext(&dataset).await?;
        let document = Document::parse(&plain, format_of(&dataset))
            .map_err(|e| Status::data_loss(format!("dataset {id}: {e}")))?;
        let mut leaves = Vec::new();
        let mut shown = Vec::new();
        document
            .rows(|row| -> Result<(), ReadError> {
                let index = leaves.len() as u64;
                leaves.push(merkle::leaf(index, row.fields));
                if drawn.binary_search(&index).is_ok() {
                    shown.push((index, row.fields.iter().map(|f| (*f).to_owned()).collect()));
                }
                Ok(())
            })
            .map_err(|e| Status::data_loss(format!("dataset {id}: {e}")))?;
        if merkle::root(&leaves) != root || leaves.len() as u64 != dataset.rows {
            return Err(Status::data_loss(format!(
                "dataset {id}: the stored rows do not match the listing's rows root"
            )));
        }
        let rows = shown
            .into_iter()
            .map(|(index, cells): (u64, Vec<String>)| {
                let proof = merkle::proof(&leaves, index as usize)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|h| h.to_vec())
                    .collect();
                gw::PreviewRow {
                    index,
                    cells,
                    proof,
                }
            })
            .collect();
        Ok(Response::new(gw::PreviewResponse {
            dataset_id: id,
            request_height: request.height,
            block_hash: block_hash.as_bytes().to_vec(),
            header: document.header().names().to_vec(),
            rows,
        }))
    }
}
