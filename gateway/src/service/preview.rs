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

/// Answers kept, so a repeated call costs nothing (an answer never changes: the request, the
/// drawing block and the data are fixed).
const CACHED: usize = 256;

/// A cached answer's key: the dataset and the requester.
type AnswerKey = (u64, [u8; 32]);

/// The Previews service.
pub struct PreviewService {
    /// What every service reads.
    pub shared: Arc<Shared>,
    /// The org's data keys (None: this gateway holds none and previews nothing).
    pub keystore: Option<Arc<KeyStore>>,
    /// One preview is computed at a time: each decrypts and hashes a whole dataset.
    pub busy: tokio::sync::Semaphore,
    /// Answers by (dataset, requester), oldest dropped first.
    pub answers: std::sync::Mutex<std::collections::VecDeque<(AnswerKey, gw::PreviewResponse)>>,
}

impl PreviewService {
    /// The service over `shared` with `keystore`.
    pub fn new(shared: Arc<Shared>, keystore: Option<Arc<KeyStore>>) -> Self {
        PreviewService {
            shared,
            keystore,
            busy: tokio::sync::Semaphore::new(1),
            answers: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    fn cached(&self, key: AnswerKey) -> Option<gw::PreviewResponse> {
        let answers = self
            .answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        answers
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, r)| r.clone())
    }

    fn keep(&self, key: AnswerKey, answer: gw::PreviewResponse) {
        let mut answers = self
            .answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        answers.push_back((key, answer));
        while answers.len() > CACHED {
            answers.pop_front();
        }
    }
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
        if dataset.size > MAX_PREVIEW_PLAINTEXT
            || self
                .shared
                .blobs
                .size(
                    &dataset
                        .cid
                        .parse::<crate::cid::Cid>()
                        .map_err(|e| Status::internal(format!("listing CID: {e}")))?,
                )
                .await
                .map_err(super::blobs::blob_status)?
                != Some(dataset.ciphertext_size)
        {
            return Err(Status::resource_exhausted(format!(
                "dataset {} cannot be previewed here: previews decrypt at most \
                 {MAX_PREVIEW_PLAINTEXT} bytes of a ciphertext this store holds",
                dataset.id
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
        if let Some(answer) = self.cached((id, member.fingerprint)) {
            return Ok(Response::new(answer));
        }
        let _turn = self
            .busy
            .acquire()
            .await
            .map_err(|_| Status::unavailable("gateway shutting down"))?;
        if let Some(answer) = self.cached((id, member.fingerprint)) {
            return Ok(Response::new(answer));
        }
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
        let seed = merkle::preview_seed(block_hash.as_bytes(), id, &request.requester);
        let drawn = merkle::draw_rows(&seed, dataset.rows, request.rows);

        let plain = self.plaintext(&dataset).await?;
        let format = format_of(&dataset);
        let rows_expected = dataset.rows;
        // Hashing every row is CPU work: off the async threads.
        let (header, rows) =
            tokio::task::spawn_blocking(move || draw(&plain, format, &drawn, root, rows_expected))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| {
                    // The reader's message may quote a cell: it stays in this gateway's log.
                    tracing::error!(dataset = id, "preview: {e}");
                    Status::data_loss(format!(
                        "dataset {id}: the stored data does not read as its listing says"
                    ))
                })?;
        let answer = gw::PreviewResponse {
            dataset_id: id,
            request_height: request.height,
            block_hash: block_hash.as_bytes().to_vec(),
            header,
            rows,
        };
        self.keep((id, member.fingerprint), answer.clone());
        Ok(Response::new(answer))
    }
}

/// The drawn rows of `plain` with their proofs, after checking every row against `root`.
fn draw(
    plain: &[u8],
    format: Format,
    drawn: &[u64],
    root: [u8; 32],
    rows: u64,
) -> Result<(Vec<String>, Vec<gw::PreviewRow>), String> {
    let document = Document::parse(plain, format).map_err(|e| e.to_string())?;
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
        .map_err(|e| e.to_string())?;
    if merkle::root(&leaves) != root || leaves.len() as u64 != rows {
        return Err("the stored rows do not match the listing's rows root".into());
    }
    let rows = shown
        .into_iter()
        .map(|(index, cells): (u64, Vec<String>)| gw::PreviewRow {
            index,
            cells,
            proof: merkle::proof(&leaves, index as usize)
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.to_vec())
                .collect(),
        })
        .collect();
    Ok((document.header().names().to_vec(), rows))
}
