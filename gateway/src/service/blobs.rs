//! `Blobs`: client-streaming upload that answers with the CID, server-streaming download by CID.
//! Who may download what is decided by a [`BlobAccess`] hook (the marketplace's rules plug in
//! there); until then any admitted member may read.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use neurodata_proto::gateway::v1 as gw;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{Shared, caller, wait_until_refused};
use crate::auth::Caller;
use crate::blobstore::BlobError;
use crate::cid::Cid;

/// Decides who may read a blob.
#[tonic::async_trait]
pub trait BlobAccess: Send + Sync + 'static {
    /// Ok if `caller` (None: plaintext dev mode) may download `cid`.
    async fn may_download(&self, caller: Option<&Caller>, cid: &Cid) -> Result<(), Status>;
}

/// The default policy: any admitted member may download any blob (ciphertexts are useless
/// without the data key, which the marketplace hands out).
pub struct AnyMember;

#[tonic::async_trait]
impl BlobAccess for AnyMember {
    async fn may_download(&self, _: Option<&Caller>, _: &Cid) -> Result<(), Status> {
        Ok(())
    }
}

/// The status a caller sees for a blob failure.
pub fn blob_status(e: BlobError) -> Status {
    match &e {
        BlobError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        BlobError::Mismatch { .. } => Status::invalid_argument(e.to_string()),
        BlobError::NotFound(_) => Status::not_found(e.to_string()),
        BlobError::Corrupt { .. } => Status::data_loss(e.to_string()),
        BlobError::Io { .. } | BlobError::Object(_) => {
            tracing::error!("blob store: {e}");
            Status::unavailable("blob store error (see the gateway's log)")
        }
    }
}

/// The Blobs service.
pub struct BlobsService(pub Arc<Shared>);

/// Bytes per download message.
pub const DOWNLOAD_CHUNK: usize = 1 << 20;

type DownloadStream = Pin<Box<dyn Stream<Item = Result<gw::DownloadChunk, Status>> + Send>>;

#[tonic::async_trait]
impl gw::blobs_server::Blobs for BlobsService {
    async fn upload(
        &self,
        req: Request<Streaming<gw::UploadChunk>>,
    ) -> Result<Response<gw::UploadResponse>, Status> {
        let shared = &self.0;
        let mut stream = req.into_inner();
        let mut upload = shared.blobs.begin().await.map_err(blob_status)?;
        let mut expected = None;
        let mut first = true;
        while let Some(chunk) = stream.message().await? {
            if first && !chunk.expected_cid.is_empty() {
                expected = Some(
                    chunk
                        .expected_cid
                        .parse::<Cid>()
                        .map_err(|e| Status::invalid_argument(e.to_string()))?,
                );
            }
            first = false;
            upload.write(&chunk.data).await.map_err(blob_status)?;
        }
        let (cid, size) = upload.finish(expected).await.map_err(blob_status)?;
        shared.metrics.blob_bytes_in.inc_by(size);
        tracing::info!(%cid, size, "blob stored");
        Ok(Response::new(gw::UploadResponse {
            cid: cid.to_string(),
            size,
        }))
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        req: Request<gw::DownloadRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        let shared = self.0.clone();
        let who = caller(&req);
        let cid: Cid = req
            .into_inner()
            .cid
            .parse()
            .map_err(|e: crate::cid::CidError| Status::invalid_argument(e.to_string()))?;
        shared.access.may_download(who.as_ref(), &cid).await?;
        let mut reader = shared.blobs.open_blob(&cid).await.map_err(blob_status)?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let refused = wait_until_refused(&shared, who.as_ref());
            tokio::pin!(refused);
            loop {
                let next = tokio::select! {
                    status = &mut refused => Err(status),
                    r = reader.next_chunk(DOWNLOAD_CHUNK) => r.map_err(blob_status),
                };
                let msg = match next {
                    Ok(Some(data)) => {
                        shared.metrics.blob_bytes_out.inc_by(data.len() as u64);
                        Ok(gw::DownloadChunk { data })
                    }
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                let stop = msg.is_err();
                if tx.send(msg).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
