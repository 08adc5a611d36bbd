//! The blob-store suite (tests/common) on the backends that need no server: the local
//! directory (the default) and `object_store`'s in-memory implementation of the trait the S3
//! client implements. tests/s3.rs and tests/ipfs.rs run the same suite against real servers.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::sync::Arc;

use neurodata_gateway::blobstore::BlobStore;

#[tokio::test]
async fn directory_backend_passes_the_blob_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path(), 32 << 20).unwrap();
    common::blob_store_suite(&store).await;
    // Nothing left half-written.
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn object_store_backend_passes_the_blob_store_suite() {
    let store =
        BlobStore::with_object_store(Arc::new(object_store::memory::InMemory::new()), 32 << 20);
    common::blob_store_suite(&store).await;
}
