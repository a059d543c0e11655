//! Blob storage for what outlives a request and must be shared by every server: job logs and
//! artifacts archives. One async trait, [`BlobStore`], one file per backend (as sccache's
//! `src/cache/`): [`FsBlobs`] (the embedded default, files under `data_dir`) and [`S3Blobs`]
//! (any S3-compatible object storage, through `object_store`; several servers then share only
//! the database and the bucket). [`Blobs`] is the one chosen at start-up by `storage` in
//! `piste.toml`.
//!
//! Keys are relative, `/`-separated, made only by this crate (see [`artifact_key`] and
//! `logs`); [`check_key`] refuses anything else. Bodies stream both ways: a writer takes
//! pieces and makes the blob visible only on [`BlobWriter::commit`] (a rename, or the
//! completion of an S3 multipart upload), so a reader never sees half an artifact.

mod fs;
mod s3;

use std::future::Future;
use std::ops::Range;

use bytes::Bytes;
use futures_util::stream::BoxStream;

pub use fs::{FsBlobs, FsWriter};
pub use s3::{S3Blobs, S3Writer};

/// A blob's bytes, in pieces as they arrive.
pub type ByteStream = BoxStream<'static, Result<Bytes, BlobError>>;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob key `{0}` is not valid")]
    InvalidKey(String),
    #[error("blob `{key}` on disk: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("blob `{key}` in object storage: {source}")]
    ObjectStore {
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("the object storage cannot be set up: {0}")]
    Setup(#[source] object_store::Error),
    #[error("the object storage cannot be set up: {0}")]
    Config(String),
    #[error("`storage = \"{0}\"`: use `s3://BUCKET` or `s3://BUCKET/PREFIX`")]
    BadLocation(String),
    #[error("a blob task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Storage errors are logged with their cause; clients learn only that storage failed.
impl From<BlobError> for crate::error::Error {
    fn from(e: BlobError) -> Self {
        tracing::error!(error = %e, "blob storage");
        crate::error::Error::Internal("the server's storage failed; try again later".into())
    }
}

/// A blob found by [`BlobStore::get`]: its whole size and the requested bytes.
pub struct Blob {
    pub size: u64,
    pub stream: ByteStream,
}

/// One listed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub key: String,
    pub size: u64,
}

/// Where blobs live. Every method is cancel-safe in the sense that matters here: a dropped
/// writer never makes a partial blob visible.
pub trait BlobStore: Send + Sync {
    type Writer: BlobWriter;

    /// A writer for `key`; the blob appears (or is replaced) on commit.
    fn create(&self, key: &str) -> impl Future<Output = Result<Self::Writer, BlobError>> + Send;

    /// The bytes of `key` in `range` (clipped to its end), or `None` when there is no such blob.
    fn get(&self, key: &str, range: Option<Range<u64>>) -> impl Future<Output = Result<Option<Blob>, BlobError>> + Send;

    /// The size of `key`, or `None` when there is no such blob.
    fn head(&self, key: &str) -> impl Future<Output = Result<Option<u64>, BlobError>> + Send;

    /// The blobs under the folder `prefix`, whose keys sort after `after` when given, in key order.
    fn list(&self, prefix: &str, after: Option<&str>) -> impl Future<Output = Result<Vec<Meta>, BlobError>> + Send;

    /// Removes `key`; removing a missing blob is not an error.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), BlobError>> + Send;

    /// Stores a small blob in one piece.
    fn put(&self, key: &str, data: Bytes) -> impl Future<Output = Result<(), BlobError>> + Send {
        async move {
            let mut w = self.create(key).await?;
            if let Err(e) = w.write(data).await {
                let _ = w.abort().await;
                return Err(e);
            }
            w.commit().await
        }
    }
}

/// A blob being written.
pub trait BlobWriter: Send {
    fn write(&mut self, data: Bytes) -> impl Future<Output = Result<(), BlobError>> + Send;
    /// Makes the blob visible under its key.
    fn commit(self) -> impl Future<Output = Result<(), BlobError>> + Send;
    /// Drops what was written.
    fn abort(self) -> impl Future<Output = Result<(), BlobError>> + Send;
}

/// The key of an artifacts archive: content-addressed by its SHA-256 (64 lowercase hex digits).
pub fn artifact_key(sha256_hex: &str) -> String {
    format!("artifacts/{sha256_hex}")
}

/// Refuses keys that could leave the store's root: only `[A-Za-z0-9._-]` segments, no empty,
/// `.` or `..` segment, at most 512 bytes.
pub fn check_key(key: &str) -> Result<(), BlobError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
    if ok { Ok(()) } else { Err(BlobError::InvalidKey(key.chars().take(80).collect())) }
}

/// `storage` in `piste.toml`: absent means files under `data_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Folder inside the bucket, without slashes at either end; may be empty.
    pub prefix: String,
}

impl S3Location {
    pub fn parse(url: &str) -> Result<S3Location, BlobError> {
        let bad = || BlobError::BadLocation(url.chars().take(200).collect());
        let rest = url.strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok || (!prefix.is_empty() && check_key(prefix).is_err()) {
            return Err(bad());
        }
        Ok(S3Location { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }
}

/// The blob store a server uses.
#[derive(Clone)]
pub enum Blobs {
    Fs(FsBlobs),
    S3(S3Blobs),
}

impl Blobs {
    /// Files under `data_dir`, or the bucket named by `storage` with credentials and endpoint
    /// from the standard `AWS_*` environment.
    pub fn open(config: &crate::Config) -> Result<Blobs, BlobError> {
        match &config.storage {
            None => Ok(Blobs::Fs(FsBlobs::new(config.data_dir.clone()))),
            Some(url) => {
                let ca = config.ca_pem().map_err(BlobError::Config)?;
                Ok(Blobs::S3(S3Blobs::from_env(&S3Location::parse(url)?, ca.as_deref())?))
            }
        }
    }
}

pub enum Writer {
    Fs(FsWriter),
    S3(S3Writer),
}

impl BlobWriter for Writer {
    async fn write(&mut self, data: Bytes) -> Result<(), BlobError> {
        match self {
            Writer::Fs(w) => w.write(data).await,
            Writer::S3(w) => w.write(data).await,
        }
    }
    async fn commit(self) -> Result<(), BlobError> {
        match self {
            Writer::Fs(w) => w.commit().await,
            Writer::S3(w) => w.commit().await,
        }
    }
    async fn abort(self) -> Result<(), BlobError> {
        match self {
            Writer::Fs(w) => w.abort().await,
            Writer::S3(w) => w.abort().await,
        }
    }
}

impl BlobStore for Blobs {
    type Writer = Writer;

    async fn create(&self, key: &str) -> Result<Writer, BlobError> {
        Ok(match self {
            Blobs::Fs(b) => Writer::Fs(b.create(key).await?),
            Blobs::S3(b) => Writer::S3(b.create(key).await?),
        })
    }
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Blob>, BlobError> {
        match self {
            Blobs::Fs(b) => b.get(key, range).await,
            Blobs::S3(b) => b.get(key, range).await,
        }
    }
    async fn head(&self, key: &str) -> Result<Option<u64>, BlobError> {
        match self {
            Blobs::Fs(b) => b.head(key).await,
            Blobs::S3(b) => b.head(key).await,
        }
    }
    async fn list(&self, prefix: &str, after: Option<&str>) -> Result<Vec<Meta>, BlobError> {
        match self {
            Blobs::Fs(b) => b.list(prefix, after).await,
            Blobs::S3(b) => b.list(prefix, after).await,
        }
    }
    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self {
            Blobs::Fs(b) => b.delete(key).await,
            Blobs::S3(b) => b.delete(key).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_store() {
        for good in ["artifacts/ab12", "logs/1.1.log", "logs/1.1/00000000000000000000"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in ["", "/etc/passwd", "a//b", "../x", "a/../b", "a/./b", "a b", "a\\b", "a/"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_configuration_refuses_a_storage_that_is_not_s3() {
        let config = crate::Config { storage: Some("gs://bucket".into()), ..crate::Config::default() };
        let message = config.validate().unwrap_err();
        assert!(message.contains("s3://BUCKET/PREFIX"), "{message}");
        let config = crate::Config { storage: Some("s3://ci-artifacts/piste".into()), ..crate::Config::default() };
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn storage_locations() {
        assert_eq!(S3Location::parse("s3://ci-logs").unwrap(), S3Location { bucket: "ci-logs".into(), prefix: String::new() });
        assert_eq!(
            S3Location::parse("s3://ci-logs/piste/prod/").unwrap(),
            S3Location { bucket: "ci-logs".into(), prefix: "piste/prod".into() }
        );
        for bad in ["ci-logs", "s3://", "s3://UPPER", "s3://b", "s3://bucket/../x", "file:///tmp"] {
            assert!(matches!(S3Location::parse(bad), Err(BlobError::BadLocation(_))), "{bad}");
        }
    }
}
