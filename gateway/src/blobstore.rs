//! The content-addressed blob store: a local directory where a blob lives under its CID.
//!
//! Writes are atomic: bytes go to a temporary file in the same directory tree, are hashed on the
//! way, fsynced, and only then renamed to `blobs/<cid>` (and the directory fsynced), so a crash
//! or a failed upload never leaves a partial blob visible under a CID. Reads re-hash the bytes
//! and fail at the end if they no longer match their CID (disk corruption is reported, never
//! passed off as the blob).

use std::path::{Path, PathBuf};

use openssl::sha::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cid::Cid;

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A directory of blobs named by CID.
#[derive(Clone, Debug)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    max_bytes: u64,
}

impl BlobStore {
    /// Opens (creating) the store under `root`; uploads above `max_bytes` are refused. Temporary
    /// files a crash left behind are removed.
    pub fn open(root: &Path, max_bytes: u64) -> Result<Self, BlobError> {
        let blobs = root.join("blobs");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        Ok(BlobStore {
            blobs,
            tmp,
            max_bytes,
        })
    }

    /// The largest blob accepted.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn path(&self, cid: &Cid) -> PathBuf {
        self.blobs.join(cid.to_string())
    }

    /// The size of a stored blob, or None.
    pub async fn size(&self, cid: &Cid) -> Result<Option<u64>, BlobError> {
        let path = self.path(cid);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Starts an upload.
    pub async fn begin(&self) -> Result<Upload, BlobError> {
        let mut name = [0u8; 12];
        openssl::rand::rand_bytes(&mut name).map_err(|e| BlobError::Io {
            path: self.tmp.clone(),
            source: std::io::Error::other(e),
        })?;
        let path = self.tmp.join(hex::encode(name));
        let file = tokio::fs::File::create(&path).await.map_err(io(&path))?;
        Ok(Upload {
            store: self.clone(),
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Opens a blob for reading.
    pub async fn open_blob(&self, cid: &Cid) -> Result<BlobReader, BlobError> {
        let path = self.path(cid);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(*cid));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let size = file.metadata().await.map_err(io(&path))?.len();
        Ok(BlobReader {
            cid: *cid,
            file,
            path,
            hasher: Some(Sha256::new()),
            size,
        })
    }
}

/// An upload in progress. Dropped without [`Upload::finish`], its temporary file is removed.
pub struct Upload {
    store: BlobStore,
    file: Option<tokio::fs::File>,
    path: PathBuf,
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
        if let Some(f) = self.file.as_mut() {
            f.write_all(data).await.map_err(io(&self.path))?;
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
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
        if let Some(mut f) = self.file.take() {
            f.flush().await.map_err(io(&self.path))?;
            f.sync_all().await.map_err(io(&self.path))?;
        }
        let target = self.store.path(&cid);
        tokio::fs::rename(&self.path, &target)
            .await
            .map_err(io(&target))?;
        let dir = self.store.blobs.clone();
        // The rename is durable only once the directory entry is on disk.
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
            .await
            .map_err(|e| BlobError::Io {
                path: target.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(io(&target))?;
        self.path = PathBuf::new();
        Ok((cid, self.size))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Reads a stored blob in chunks, checking its CID at the end.
pub struct BlobReader {
    cid: Cid,
    file: tokio::fs::File,
    path: PathBuf,
    hasher: Option<Sha256>,
    size: u64,
}

impl BlobReader {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk of at most `max` bytes; None at the end, after the bytes were checked
    /// against the CID (a mismatch is [`BlobError::Corrupt`]).
    pub async fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>, BlobError> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(None);
        };
        let mut buf = vec![0u8; max];
        let mut filled = 0;
        while filled < max {
            let n = self
                .file
                .read(&mut buf[filled..])
                .await
                .map_err(io(&self.path))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled > 0 {
            buf.truncate(filled);
            hasher.update(&buf);
            return Ok(Some(buf));
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
