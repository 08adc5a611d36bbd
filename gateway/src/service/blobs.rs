//! `Blobs`: client-streaming upload that answers with the CID, server-streaming download by CID.
//! Only members of the gateway's own org may upload, within the upload quotas
//! ([`crate::uploads`]). Who may download what is decided by a [`BlobAccess`] hook (the
//! marketplace's rules plug in there).

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
use crate::uploads::UploadError;

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

/// Who an upload is charged to: a gateway stores uploads of its own org's members only (any
/// member of another org could otherwise fill its store, and list what it stored there). None:
/// plain-text development mode, charged to an all-zero "anonymous" uploader.
pub fn uploader(caller: Option<&Caller>, own_org: Option<&str>) -> Result<[u8; 32], Status> {
    let Some(c) = caller else {
        return Ok([0; 32]);
    };
    let member = &c.member;
    match own_org {
        None => Err(Status::permission_denied(
            "this gateway has no org_id configured, so it stores no uploads",
        )),
        Some(own) if own != member.org_id => Err(Status::permission_denied(format!(
            "this gateway stores uploads of org {own} only; {} belongs to {}: upload to your \
             own org's gateway",
            member.common_name, member.org_id
        ))),
        Some(_) => Ok(member.fingerprint),
    }
}

/// The status a caller sees for an upload the accounting refuses.
pub fn upload_status(e: UploadError) -> Status {
    match &e {
        UploadError::MemberQuota { .. } | UploadError::OrgQuota { .. } => {
            Status::resource_exhausted(e.to_string())
        }
        UploadError::Io { .. } | UploadError::Corrupt { .. } => {
            tracing::error!("{e}");
            Status::unavailable("upload index error (see the gateway's log)")
        }
    }
}

/// The status a caller sees for a blob failure.
pub fn blob_status(e: BlobError) -> Status {
    match &e {
        BlobError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        BlobError::Mismatch { .. } => Status::invalid_argument(e.to_string()),
        BlobError::NotFound(_) => Status::not_found(e.to_string()),
        BlobError::Corrupt { .. } => Status::data_loss(e.to_string()),
        BlobError::Io { .. } | BlobError::Object(_) | BlobError::Ipfs { .. } => {
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
        let who = caller(&req);
        let uploader = uploader(who.as_ref(), shared.config.org_id.as_deref())?;
        let mut quota = shared.uploads.reserve(uploader);
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
            quota.grow(chunk.data.len() as u64).map_err(upload_status)?;
            upload.write(&chunk.data).await.map_err(blob_status)?;
        }
        let cid = upload.cid();
        if let Some(expected) = expected
            && expected != cid
        {
            return Err(blob_status(BlobError::Mismatch {
                expected,
                actual: cid,
            }));
        }
        // Charged before the blob becomes visible: a crash in between over-counts (repaired at
        // the next start), never leaves a blob nobody is charged for.
        let charged = quota.record(&cid, upload.size()).map_err(upload_status)?;
        let (cid, size) = match upload.finish(Some(cid)).await {
            Ok(stored) => stored,
            Err(e) => {
                if charged && let Err(f) = shared.uploads.forget(&cid) {
                    tracing::error!(%cid, "upload index: {f}");
                }
                return Err(blob_status(e));
            }
        };
        shared.metrics.blob_bytes_in.inc_by(size);
        tracing::info!(%cid, size, uploader = %hex::encode(uploader), "blob stored");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Member;
    use neurodata_abci::membership::Role;

    fn caller(org: &str) -> Caller {
        Caller {
            member: Member::for_tests([5; 32], org, Role::Provider),
            cert_der: vec![],
        }
    }

    #[test]
    fn only_members_of_the_gateways_own_org_may_upload() {
        assert_eq!(
            uploader(Some(&caller("medlab")), Some("medlab")).ok(),
            Some([5; 32])
        );
        let refused = uploader(Some(&caller("datacorp")), Some("medlab")).err();
        assert_eq!(
            refused.as_ref().map(Status::code),
            Some(tonic::Code::PermissionDenied)
        );
        assert!(
            refused.is_some_and(|s| s.message().contains("uploads of org medlab only")),
            "the refusal says whose gateway this is"
        );
        assert_eq!(
            uploader(Some(&caller("medlab")), None)
                .err()
                .map(|s| s.code()),
            Some(tonic::Code::PermissionDenied),
            "a gateway without org_id stores nobody's uploads"
        );
        assert_eq!(uploader(None, Some("medlab")).ok(), Some([0; 32]));
    }

    #[test]
    fn quota_refusals_are_resource_exhausted_and_name_the_setting() {
        let s = upload_status(UploadError::OrgQuota {
            used: 10,
            adding: 5,
            limit: 12,
        });
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message().contains("upload_quota_org_bytes"),
            "{}",
            s.message()
        );
    }
}
