//! The blob-store suite every backend passes (directory, object store, S3, IPFS): what the
//! Blobs service relies on, asserted through [`BlobStore`]'s public API only, so a new backend
//! is checked by calling [`blob_store_suite`] on it.

#![allow(dead_code)] // each test crate uses part of this module
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use neurodata_gateway::Cid;
use neurodata_gateway::blobstore::{BlobError, BlobStore};

/// The largest chunk a read is asked for in the suite (the service reads 1 MiB messages).
pub const CHUNK: usize = 1 << 20;

/// Stores `data`, written in `chunk`-byte pieces; returns the CID and size.
pub async fn put(store: &BlobStore, data: &[u8], chunk: usize) -> Result<(Cid, u64), BlobError> {
    let mut up = store.begin().await?;
    for piece in data.chunks(chunk.max(1)) {
        up.write(piece).await?;
    }
    up.finish(None).await
}

/// Reads a blob back in chunks of at most [`CHUNK`] bytes, checking the bound and the announced
/// size on the way.
pub async fn get(store: &BlobStore, cid: &Cid) -> Result<Vec<u8>, BlobError> {
    let mut r = store.open_blob(cid).await?;
    let size = r.size();
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk(CHUNK).await? {
        assert!(c.len() <= CHUNK, "a chunk of {} bytes > {CHUNK}", c.len());
        out.extend(c);
    }
    assert_eq!(out.len() as u64, size, "reader announced {size} bytes");
    Ok(out)
}

/// 12 MB of non-repeating-looking bytes: more than one S3 part and many IPFS blocks.
pub fn large_blob() -> Vec<u8> {
    (0..12_000_000u32).map(|i| (i * 31 % 251) as u8).collect()
}

/// The suite. `store` must accept blobs of 12 MB and refuse them above 40 MiB.
pub async fn blob_store_suite(store: &BlobStore) {
    let limit = store.max_bytes();
    assert!(
        (12_000_000..40 << 20).contains(&limit),
        "suite needs a limit in [12 MB, 40 MiB), not {limit}"
    );

    // Round trip of a large blob written in 1 MiB pieces, read in 1 MiB chunks.
    let data = large_blob();
    let (cid, size) = put(store, &data, 1 << 20).await.unwrap();
    assert_eq!(cid, Cid::of(&data), "stored under the CID of its bytes");
    assert_eq!(size, data.len() as u64);
    assert_eq!(store.size(&cid).await.unwrap(), Some(size));
    assert!(
        get(store, &cid).await.unwrap() == data,
        "read back other bytes"
    );

    // The same bytes again: the same CID, the copy kept.
    assert_eq!(put(store, &data, 3 << 20).await.unwrap(), (cid, size));
    assert!(get(store, &cid).await.unwrap() == data);

    // Small and empty blobs, odd piece sizes.
    for small in [&b"patient_id,age,chol\n1,63,233\n"[..], b""] {
        let (c, n) = put(store, small, 7).await.unwrap();
        assert_eq!((c, n), (Cid::of(small), small.len() as u64));
        assert_eq!(get(store, &c).await.unwrap(), small);
    }

    // A wrong announced CID: refused, and nothing appears under either CID.
    let mut up = store.begin().await.unwrap();
    up.write(b"some bytes").await.unwrap();
    let wrong = Cid::of(b"other bytes");
    assert!(matches!(
        up.finish(Some(wrong)).await,
        Err(BlobError::Mismatch { .. })
    ));
    assert_eq!(store.size(&wrong).await.unwrap(), None);
    assert_eq!(store.size(&Cid::of(b"some bytes")).await.unwrap(), None);
    assert!(matches!(
        store.open_blob(&wrong).await,
        Err(BlobError::NotFound(_))
    ));

    // An upload abandoned half-way (the client went away) leaves nothing visible.
    let mut up = store.begin().await.unwrap();
    up.write(b"half of an upload").await.unwrap();
    drop(up);
    assert_eq!(
        store.size(&Cid::of(b"half of an upload")).await.unwrap(),
        None
    );

    // Over the size limit: refused while streaming, nothing stored.
    let mut up = store.begin().await.unwrap();
    let mb = vec![7u8; 1 << 20];
    let mut refused = false;
    for _ in 0..=(limit >> 20) + 1 {
        match up.write(&mb).await {
            Ok(()) => {}
            Err(BlobError::TooLarge { limit: l }) => {
                assert_eq!(l, limit);
                refused = true;
                break;
            }
            Err(e) => panic!("oversize upload failed otherwise: {e}"),
        }
    }
    assert!(refused, "an upload over {limit} bytes was not refused");
    drop(up);

    // Removal: gone under its CID, other blobs untouched, a second removal finds nothing.
    let (other, _) = put(store, b"another blob", 4).await.unwrap();
    assert!(store.remove(&other).await.unwrap(), "remove finds the blob");
    assert_eq!(store.size(&other).await.unwrap(), None);
    assert!(matches!(
        store.open_blob(&other).await,
        Err(BlobError::NotFound(_))
    ));
    assert!(!store.remove(&other).await.unwrap(), "removed twice");
    assert!(
        get(store, &cid).await.unwrap() == data,
        "removal touched another blob"
    );

    // Nothing stored: not found.
    assert!(matches!(
        store.open_blob(&Cid::of(b"nothing")).await,
        Err(BlobError::NotFound(_))
    ));
    assert_eq!(store.size(&Cid::of(b"nothing")).await.unwrap(), None);
}
