//! The content-addressed blob store: a blob lives under its CID, in a local directory (default),
//! in an S3-compatible bucket (`object_store`'s S3 client: AWS, MinIO, Ceph RGW, ...), or in an
//! IPFS node (kubo's RPC API; [`ipfs`] explains the mapping from our CIDs to kubo's).
//!
//! Writes are atomic: bytes go to a temporary name, are hashed on the way, and only once complete
//! (and the CID checked) become visible under `blobs/<cid>` — locally by fsync and rename (and a
//! directory fsync), in S3 by completing a multipart upload to `tmp/<random>` and a server-side
//! copy — so a crash or a failed upload never leaves a partial blob visible under a CID. Reads
//! re-hash the bytes and fail at the end if they no longer match their CID (corruption is
//! reported, never passed off as the blob). In IPFS a blob becomes visible when its mapping is
//! recorded, after the node pinned the checked bytes.

mod ipfs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use openssl::sha::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cid::Cid;

pub use ipfs::{INDEX_FILE as IPFS_INDEX_FILE, IpfsSettings};

/// What went wrong with a blob.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The upload is larger than the store accepts.
    #[error("blob exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The uploaded bytes hash to another CID than the client announced.
    #[error("uploaded bytes have CID {actual}, the client announced {expected}")]
    Mismatch {
        /// What the client said.
        expected: Cid,
        /// What the bytes are.
        actual: Cid,
    },
    /// No blob with this CID.
    #[error("no blob {0}")]
    NotFound(Cid),
    /// The stored bytes no longer hash to their CID.
    #[error("stored blob {cid} is corrupt: its bytes hash to {actual}")]
    Corrupt {
        /// The CID it is stored under.
        cid: Cid,
        /// What the bytes hash to now.
        actual: Cid,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    Object(#[from] object_store::Error),
    /// The IPFS node's RPC API failed or answered something unexpected.
    #[error("IPFS node {api}: {op}: {reason}")]
    Ipfs {
        /// The node's RPC API URL.
        api: String,
        /// The RPC (`add`, `cat`, `pin/add`, `pin/rm`).
        op: &'static str,
        /// What went wrong, with kubo's message when it sent one.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where blobs live.
#[derive(Clone, Debug)]
enum Backend {
    Local { blobs: PathBuf, tmp: PathBuf },
    Object(Arc<dyn ObjectStore>),
    Ipfs(Arc<ipfs::IpfsNode>),
}

/// Blobs named by CID.
#[derive(Clone, Debug)]
pub struct BlobStore {
    backend: Backend,
    max_bytes: u64,
}

/// Settings of an S3-compatible bucket. Credentials come from the standard `AWS_*` environment
/// variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...), so they live in a Secret, not
/// in the config file.
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint for non-AWS stores (e.g. `http://minio:9000`); None: AWS.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Access key, if not from the environment.
    pub access_key_id: Option<String>,
    /// Secret key, if not from the environment.
    pub secret_access_key: Option<String>,
}

fn random_name() -> String {
    let mut name = [0u8; 12];
    // rand_bytes only fails if the OS has no entropy source; a zero name is still unique enough
    // for one process's temporary files, and the CID check protects the content.
    let _ = openssl::rand::rand_bytes(&mut name);
    hex::encode(name)
}

impl BlobStore {
    /// Opens (creating) a local store under `root`; uploads above `max_bytes` are refused.
    /// Temporary files a crash left behind are removed.
    pub fn open(root: &Path, max_bytes: u64) -> Result<Self, BlobError> {
        let blobs = root.join("blobs");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        Ok(BlobStore {
            backend: Backend::Local { blobs, tmp },
            max_bytes,
        })
    }

    /// A store in an S3-compatible bucket.
    pub fn open_s3(settings: &S3Settings, max_bytes: u64) -> Result<Self, BlobError> {
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region);
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        if let Some(endpoint) = &settings.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        Ok(Self::with_object_store(Arc::new(b.build()?), max_bytes))
    }

    /// A store in a kubo node, with the CID mapping in `settings.state_dir`. The node is not
    /// contacted until the first call.
    pub fn open_ipfs(settings: &IpfsSettings, max_bytes: u64) -> Result<Self, BlobError> {
        Ok(BlobStore {
            backend: Backend::Ipfs(Arc::new(ipfs::IpfsNode::open(settings)?)),
            max_bytes,
        })
    }

    /// A store on any `object_store` backend.
    pub fn with_object_store(store: Arc<dyn ObjectStore>, max_bytes: u64) -> Self {
        BlobStore {
            backend: Backend::Object(store),
            max_bytes,
        }
    }

    /// The largest blob accepted.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn object_path(cid: &Cid) -> ObjectPath {
        ObjectPath::from(format!("blobs/{cid}"))
    }

    /// The size of a stored blob, or None.
    pub async fn size(&self, cid: &Cid) -> Result<Option<u64>, BlobError> {
        match &self.backend {
            Backend::Local { blobs, .. } => {
                let path = blobs.join(cid.to_string());
                match tokio::fs::metadata(&path).await {
                    Ok(m) => Ok(Some(m.len())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io(&path)(e)),
                }
            }
            Backend::Object(store) => match store.head(&Self::object_path(cid)).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Backend::Ipfs(node) => Ok(node.placement(cid).await.map(|p| p.size)),
        }
    }

    /// The root CID kubo stores a blob under (IPFS backend only; None elsewhere or if absent).
    pub async fn ipfs_root(&self, cid: &Cid) -> Option<String> {
        match &self.backend {
            Backend::Ipfs(node) => node.placement(cid).await.map(|p| p.root),
            Backend::Local { .. } | Backend::Object(_) => None,
        }
    }

    /// Removes a blob (in IPFS: unpins it and forgets its root). Returns whether it was stored.
    pub async fn remove(&self, cid: &Cid) -> Result<bool, BlobError> {
        match &self.backend {
            Backend::Local { blobs, .. } => {
                let path = blobs.join(cid.to_string());
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(io(&path)(e)),
                }
                let dir = blobs.clone();
                // As for a new blob: the removal is durable once the directory is on disk.
                tokio::task::spawn_blocking(move || {
                    std::fs::File::open(&dir).and_then(|d| d.sync_all())
                })
                .await
                .map_err(|e| BlobError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(e),
                })?
                .map_err(io(&path))?;
                Ok(true)
            }
            Backend::Object(store) => {
                let path = Self::object_path(cid);
                match store.head(&path).await {
                    Ok(_) => {}
                    Err(object_store::Error::NotFound { .. }) => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
                store.delete(&path).await?;
                Ok(true)
            }
            Backend::Ipfs(node) => node.remove(cid).await,
        }
    }

    /// Starts an upload.
    pub async fn begin(&self) -> Result<Upload, BlobError> {
        let sink = match &self.backend {
            Backend::Local { tmp, .. } => {
                let path = tmp.join(random_name());
                let file = tokio::fs::File::create(&path).await.map_err(io(&path))?;
                Sink::File {
                    file: Some(file),
                    path,
                }
            }
            Backend::Object(store) => {
                let key = ObjectPath::from(format!("tmp/{}", random_name()));
                let upload = store.put_multipart(&key).await?;
                Sink::Object {
                    writer: Some(object_store::WriteMultipart::new(upload)),
                    key,
                }
            }
            Backend::Ipfs(node) => Sink::Ipfs(node.begin_add()),
        };
        Ok(Upload {
            store: self.clone(),
            sink,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Opens a blob for reading.
    pub async fn open_blob(&self, cid: &Cid) -> Result<BlobReader, BlobError> {
        let (source, size) = match &self.backend {
            Backend::Local { blobs, .. } => {
                let path = blobs.join(cid.to_string());
                let file = match tokio::fs::File::open(&path).await {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(BlobError::NotFound(*cid));
                    }
                    Err(e) => return Err(io(&path)(e)),
                };
                let size = file.metadata().await.map_err(io(&path))?.len();
                (Source::File { file, path }, size)
            }
            Backend::Object(store) => match store.get(&Self::object_path(cid)).await {
                Ok(r) => {
                    let size = r.meta.size;
                    (
                        Source::Object {
                            stream: r.into_stream(),
                            pending: Bytes::new(),
                        },
                        size,
                    )
                }
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(BlobError::NotFound(*cid));
                }
                Err(e) => return Err(e.into()),
            },
            Backend::Ipfs(node) => {
                let placement = node.placement(cid).await.ok_or(BlobError::NotFound(*cid))?;
                (Source::Ipfs(node.cat(&placement).await?), placement.size)
            }
        };
        Ok(BlobReader {
            cid: *cid,
            source,
            hasher: Some(Sha256::new()),
            size,
        })
    }
}

enum Sink {
    File {
        file: Option<tokio::fs::File>,
        path: PathBuf,
    },
    Object {
        writer: Option<object_store::WriteMultipart>,
        key: ObjectPath,
    },
    Ipfs(ipfs::AddSink),
}

/// An upload in progress. Dropped without [`Upload::finish`], its temporary file (or multipart
/// upload) is removed (in IPFS: the add is broken off, so the node pins nothing).
pub struct Upload {
    store: BlobStore,
    sink: Sink,
    hasher: Sha256,
    size: u64,
}

impl Upload {
    /// Appends bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.size += data.len() as u64;
        if self.size > self.store.max_bytes {
            return Err(BlobError::TooLarge {
                limit: self.store.max_bytes,
            });
        }
        self.hasher.update(data);
        match &mut self.sink {
            Sink::File {
                file: Some(f),
                path,
            } => f.write_all(data).await.map_err(io(path))?,
            Sink::Object {
                writer: Some(w), ..
            } => {
                // Bounded memory: at most a few parts in flight.
                w.wait_for_capacity(4).await?;
                w.write(data);
            }
            Sink::Ipfs(add) => add.write(data).await?,
            _ => {}
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The CID of the bytes written so far: what [`Upload::finish`] would store them under.
    pub fn cid(&self) -> Cid {
        Cid::from_digest(self.hasher.clone().finish())
    }

    /// Makes the blob visible under its CID (checked against `expected` if given). Uploading a
    /// blob that is already stored succeeds and keeps the stored copy.
    pub async fn finish(mut self, expected: Option<Cid>) -> Result<(Cid, u64), BlobError> {
        let hasher = std::mem::replace(&mut self.hasher, Sha256::new());
        let cid = Cid::from_digest(hasher.finish());
        if let Some(expected) = expected
            && expected != cid
        {
            return Err(BlobError::Mismatch {
                expected,
                actual: cid,
            });
        }
        match (&mut self.sink, &self.store.backend) {
            (Sink::File { file, path }, Backend::Local { blobs, .. }) => {
                if let Some(mut f) = file.take() {
                    f.flush().await.map_err(io(path))?;
                    f.sync_all().await.map_err(io(path))?;
                }
                let target = blobs.join(cid.to_string());
                tokio::fs::rename(&*path, &target)
                    .await
                    .map_err(io(&target))?;
                *path = PathBuf::new();
                let dir = blobs.clone();
                // The rename is durable only once the directory entry is on disk.
                tokio::task::spawn_blocking(move || {
                    std::fs::File::open(&dir).and_then(|d| d.sync_all())
                })
                .await
                .map_err(|e| BlobError::Io {
                    path: target.clone(),
                    source: std::io::Error::other(e),
                })?
                .map_err(io(&target))?;
            }
            (Sink::Object { writer, key }, Backend::Object(store)) => {
                if let Some(w) = writer.take() {
                    w.finish().await?;
                }
                let copied = store.copy(key, &BlobStore::object_path(&cid)).await;
                let removed = store.delete(key).await;
                copied?;
                if let Err(e) = removed {
                    tracing::warn!(%key, "removing a temporary object: {e}");
                }
            }
            (Sink::Ipfs(add), Backend::Ipfs(node)) => {
                // Only now, with the CID checked, is the body ended well-formed.
                let root = add.finish().await?;
                node.record(cid, root, self.size).await?;
            }
            _ => {}
        }
        Ok((cid, self.size))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        match &mut self.sink {
            Sink::File { path, .. } if !path.as_os_str().is_empty() => {
                let _ = std::fs::remove_file(&*path);
            }
            Sink::Object { writer, .. } => {
                if let Some(w) = writer.take()
                    && let Ok(rt) = tokio::runtime::Handle::try_current()
                {
                    rt.spawn(async move {
                        let _ = w.abort().await;
                    });
                }
            }
            _ => {}
        }
    }
}

enum Source {
    File {
        file: tokio::fs::File,
        path: PathBuf,
    },
    Object {
        stream: BoxStream<'static, object_store::Result<Bytes>>,
        pending: Bytes,
    },
    Ipfs(ipfs::CatStream),
}

/// Reads a stored blob in chunks, checking its CID at the end.
pub struct BlobReader {
    cid: Cid,
    source: Source,
    hasher: Option<Sha256>,
    size: u64,
}

impl BlobReader {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    async fn fill(&mut self, max: usize) -> Result<Vec<u8>, BlobError> {
        let mut buf = Vec::with_capacity(max);
        match &mut self.source {
            Source::File { file, path } => {
                buf.resize(max, 0);
                let mut filled = 0;
                while filled < max {
                    let n = file.read(&mut buf[filled..]).await.map_err(io(path))?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                buf.truncate(filled);
            }
            Source::Object { stream, pending } => {
                while buf.len() < max {
                    if pending.is_empty() {
                        match stream.next().await {
                            Some(chunk) => *pending = chunk?,
                            None => break,
                        }
                    }
                    let take = pending.len().min(max - buf.len());
                    buf.extend_from_slice(&pending.split_to(take));
                }
            }
            Source::Ipfs(cat) => cat.fill(&mut buf, max).await?,
        }
        Ok(buf)
    }

    /// The next chunk of at most `max` bytes; None at the end, after the bytes were checked
    /// against the CID (a mismatch is [`BlobError::Corrupt`]).
    pub async fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>, BlobError> {
        if self.hasher.is_none() {
            return Ok(None);
        }
        let buf = self.fill(max).await?;
        if !buf.is_empty() {
            if let Some(h) = self.hasher.as_mut() {
                h.update(&buf);
            }
            return Ok(Some(buf));
        }
        if let Source::Ipfs(cat) = &self.source {
            cat.check_complete()?;
        }
        let digest = self.hasher.take().map(Sha256::finish).unwrap_or_default();
        let actual = Cid::from_digest(digest);
        if actual != self.cid {
            return Err(BlobError::Corrupt {
                cid: self.cid,
                actual,
            });
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn put(store: &BlobStore, data: &[u8]) -> Result<(Cid, u64), BlobError> {
        let mut up = store.begin().await?;
        for chunk in data.chunks(7) {
            up.write(chunk).await?;
        }
        up.finish(None).await
    }

    async fn get(store: &BlobStore, cid: &Cid) -> Result<Vec<u8>, BlobError> {
        let mut r = store.open_blob(cid).await?;
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk(5).await? {
            out.extend(c);
        }
        Ok(out)
    }

    fn tmp_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn stores_under_the_cid_and_reads_back() -> Result<(), BlobError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let store = BlobStore::open(dir.path(), 1 << 20)?;
        let data = b"patient_id,age,chol\n1,63,233\n".repeat(10);
        let (cid, size) = put(&store, &data).await?;
        assert_eq!(cid, Cid::of(&data));
        assert_eq!(size, data.len() as u64);
        assert_eq!(get(&store, &cid).await?, data);
        // Idempotent: the same bytes again give the same CID.
        assert_eq!(put(&store, &data).await?.0, cid);
        assert_eq!(tmp_files(dir.path()), 0);
        Ok(())
    }

    #[tokio::test]
    async fn refuses_oversize_and_mismatching_uploads_leaving_nothing() -> Result<(), BlobError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let store = BlobStore::open(dir.path(), 10)?;
        assert!(matches!(
            put(&store, &[1u8; 11]).await,
            Err(BlobError::TooLarge { limit: 10 })
        ));
        let mut up = store.begin().await?;
        up.write(b"abc").await?;
        let wrong = Cid::of(b"abd");
        assert!(matches!(
            up.finish(Some(wrong)).await,
            Err(BlobError::Mismatch { .. })
        ));
        assert!(matches!(
            store.open_blob(&wrong).await,
            Err(BlobError::NotFound(_))
        ));
        assert_eq!(tmp_files(dir.path()), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs"))
                .map(|d| d.count())
                .ok(),
            Some(0)
        );
        Ok(())
    }

    #[tokio::test]
    async fn detects_a_corrupted_blob_on_read() -> Result<(), BlobError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let store = BlobStore::open(dir.path(), 1 << 20)?;
        let (cid, _) = put(&store, b"original bytes").await?;
        let path = dir.path().join("blobs").join(cid.to_string());
        std::fs::write(&path, b"tampered bytes").map_err(io(&path))?;
        assert!(matches!(
            get(&store, &cid).await,
            Err(BlobError::Corrupt { .. })
        ));
        Ok(())
    }

    #[tokio::test]
    async fn object_store_backend_is_atomic_and_checks_cids() -> Result<(), BlobError> {
        // object_store's own in-memory implementation of the trait the S3 client implements;
        // the S3 wire protocol itself is exercised against a real S3 server in tests/s3.rs.
        let inner = Arc::new(object_store::memory::InMemory::new());
        let store = BlobStore::with_object_store(inner.clone(), 64 << 20);
        let data: Vec<u8> = (0..12_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut up = store.begin().await?;
        for chunk in data.chunks(1 << 20) {
            up.write(chunk).await?;
        }
        let (cid, size) = up.finish(None).await?;
        assert_eq!((cid, size), (Cid::of(&data), data.len() as u64));
        assert_eq!(store.size(&cid).await?, Some(size));
        let mut r = store.open_blob(&cid).await?;
        let mut back = Vec::new();
        while let Some(c) = r.next_chunk(1 << 20).await? {
            assert!(c.len() <= 1 << 20);
            back.extend(c);
        }
        assert_eq!(back, data);
        // A mismatching upload leaves nothing under blobs/ but the first blob.
        let mut up = store.begin().await?;
        up.write(b"abc").await?;
        assert!(matches!(
            up.finish(Some(Cid::of(b"abd"))).await,
            Err(BlobError::Mismatch { .. })
        ));
        let listed: Vec<_> = inner
            .list(Some(&ObjectPath::from("blobs")))
            .collect::<Vec<_>>()
            .await;
        assert_eq!(listed.len(), 1);
        // Corruption in the bucket is detected on read.
        inner
            .put(
                &BlobStore::object_path(&cid),
                Bytes::from_static(b"evil").into(),
            )
            .await?;
        let mut r = store.open_blob(&cid).await?;
        let mut result = Ok(None);
        for _ in 0..10 {
            result = r.next_chunk(1 << 20).await;
            if !matches!(result, Ok(Some(_))) {
                break;
            }
        }
        assert!(matches!(result, Err(BlobError::Corrupt { .. })));
        assert!(matches!(
            store.open_blob(&Cid::of(b"nothing")).await,
            Err(BlobError::NotFound(_))
        ));
        Ok(())
    }

    #[tokio::test]
    async fn a_crash_mid_upload_leaves_no_visible_blob() -> Result<(), BlobError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let store = BlobStore::open(dir.path(), 1 << 20)?;
        let mut up = store.begin().await?;
        up.write(b"half of a file").await?;
        std::mem::forget(up); // as if the process died: the temp file stays
        assert_eq!(tmp_files(dir.path()), 1);
        let store = BlobStore::open(dir.path(), 1 << 20)?; // restart
        assert_eq!(tmp_files(dir.path()), 0);
        assert_eq!(store.size(&Cid::of(b"half of a file")).await?, None);
        Ok(())
    }
}
