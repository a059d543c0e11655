//! Blob storage and the logs kept in it, against every backend: files in a folder, and a real
//! S3-compatible server (moto, started per test; a test fails when it is missing).

#[path = "../../../tests/server/moto.rs"]
mod moto;

mod conformance;
mod logs;

use object_store::aws::AmazonS3Builder;
use server::blob::{FsBlobs, S3Blobs};

/// A bucket in a fresh moto; keep the `Moto` alive as long as the store.
pub fn s3() -> (moto::Moto, S3Blobs) {
    let m = moto::Moto::start();
    m.create_bucket("piste-tests");
    let builder = AmazonS3Builder::new()
        .with_endpoint(&m.endpoint)
        .with_allow_http(true)
        .with_access_key_id(moto::ACCESS_KEY)
        .with_secret_access_key(moto::SECRET_KEY)
        .with_region(moto::REGION)
        .with_bucket_name("piste-tests");
    let blobs = S3Blobs::from_builder(builder, "some/prefix").unwrap();
    (m, blobs)
}

pub fn fs() -> (tempfile::TempDir, FsBlobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsBlobs::new(dir.path().join("data"));
    (dir, blobs)
}
