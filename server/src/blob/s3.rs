//! Blobs in an S3-compatible bucket through `object_store` (reqwest 0.12, rustls with ring: the
//! one crypto provider of the build). Keys live under the location's prefix. Writes are
//! multipart past [`PART_BYTES`], with at most [`PARTS_IN_FLIGHT`] parts uploading at once,
//! so an upload holds a bounded amount of memory whatever its size.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::io::AsyncWriteExt;

use super::{Blob, BlobError, BlobStore, BlobWriter, Meta, S3Location, check_key};

/// Part size of multipart uploads (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Clone)]
pub struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl std::fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Blobs").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn os(key: &str) -> impl FnOnce(object_store::Error) -> BlobError + '_ {
    move |source| BlobError::ObjectStore { key: key.to_string(), source }
}

impl S3Blobs {
    /// Credentials, region and endpoint from the standard environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`); plain http
    /// is allowed when the endpoint itself says `http://`. `ca_pem`: certificate authorities
    /// trusted besides webpki's (the top-level `ca_file`).
    pub fn from_env(location: &S3Location, ca_pem: Option<&[u8]>) -> Result<S3Blobs, BlobError> {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")).ok();
        let mut options = object_store::ClientOptions::new();
        for cert in ca_pem.map(object_store::Certificate::from_pem_bundle).transpose().map_err(BlobError::Setup)?.into_iter().flatten() {
            options = options.with_root_certificate(cert);
        }
        // `AmazonS3Builder::from_env`, on a builder that has the client options first (setting
        // them after would drop the client settings read from the environment).
        let mut builder = AmazonS3Builder::new().with_client_options(options);
        for (key, value) in std::env::vars_os() {
            if let (Some(key), Some(value)) = (key.to_str(), value.to_str()) {
                if let Some(config_key) = key.starts_with("AWS_").then(|| key.to_ascii_lowercase().parse().ok()).flatten() {
                    builder = builder.with_config(config_key, value);
                }
            }
        }
        let mut builder = builder.with_bucket_name(&location.bucket);
        if endpoint.as_deref().is_some_and(|e| e.starts_with("http://")) {
            builder = builder.with_allow_http(true);
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            builder = builder.with_region("us-east-1");
        }
        S3Blobs::from_builder(builder, &location.prefix)
    }

    /// A bucket set up by the caller (tests give the endpoint and keys explicitly).
    pub fn from_builder(builder: AmazonS3Builder, prefix: &str) -> Result<S3Blobs, BlobError> {
        let store = builder.build().map_err(BlobError::Setup)?;
        Ok(S3Blobs { store: Arc::new(store), prefix: prefix.trim_matches('/').to_string() })
    }

    fn path(&self, key: &str) -> Result<Path, BlobError> {
        check_key(key)?;
        Ok(if self.prefix.is_empty() { Path::from(key) } else { Path::from(format!("{}/{key}", self.prefix)) })
    }

    fn key_of(&self, location: &Path) -> String {
        let full = location.as_ref();
        if self.prefix.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(&self.prefix).unwrap_or(full).trim_start_matches('/').to_string()
        }
    }
}

pub struct S3Writer {
    key: String,
    /// `None` once committed or aborted.
    inner: Option<BufWriter>,
}

impl BlobStore for S3Blobs {
    type Writer = S3Writer;

    async fn create(&self, key: &str) -> Result<S3Writer, BlobError> {
        let path = self.path(key)?;
        let inner = BufWriter::with_capacity(self.store.clone(), path, PART_BYTES).with_max_concurrency(PARTS_IN_FLIGHT);
        Ok(S3Writer { key: key.to_string(), inner: Some(inner) })
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Blob>, BlobError> {
        let path = self.path(key)?;
        // S3 refuses empty ranges: an empty read only needs the size.
        if range.as_ref().is_some_and(|r| r.start >= r.end) {
            let Some(size) = self.head(key).await? else { return Ok(None) };
            return Ok(Some(Blob { size, stream: futures_util::stream::empty().boxed() }));
        }
        let start = range.as_ref().map(|r| r.start);
        let options = GetOptions { range: range.map(GetRange::Bounded), ..GetOptions::default() };
        match self.store.get_opts(&path, options).await {
            Ok(result) => {
                let size = result.meta.size;
                let owned = key.to_string();
                let stream = result.into_stream().map_err(move |source| BlobError::ObjectStore { key: owned.clone(), source });
                Ok(Some(Blob { size, stream: stream.boxed() }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            // A range starting past the end is refused by S3: the blob is there, the bytes are not.
            Err(e) => match (start, self.head(key).await?) {
                (Some(start), Some(size)) if start >= size => Ok(Some(Blob { size, stream: futures_util::stream::empty().boxed() })),
                (_, None) => Ok(None),
                _ => Err(os(key)(e)),
            },
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, BlobError> {
        match self.store.head(&self.path(key)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(os(key)(e)),
        }
    }

    async fn list(&self, prefix: &str, after: Option<&str>) -> Result<Vec<Meta>, BlobError> {
        let dir = self.path(prefix)?;
        let listing = match after {
            Some(a) => self.store.list_with_offset(Some(&dir), &self.path(a)?),
            None => self.store.list(Some(&dir)),
        };
        let mut out: Vec<Meta> =
            listing.map_ok(|m| Meta { key: self.key_of(&m.location), size: m.size }).try_collect().await.map_err(os(prefix))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(os(key)(e)),
        }
    }
}

impl BlobWriter for S3Writer {
    async fn write(&mut self, data: Bytes) -> Result<(), BlobError> {
        match self.inner.as_mut() {
            Some(w) => w.put(data).await.map_err(os(&self.key)),
            None => Err(BlobError::Io { key: self.key.clone(), source: std::io::Error::other("write after commit or abort") }),
        }
    }

    async fn commit(mut self) -> Result<(), BlobError> {
        let Some(mut w) = self.inner.take() else { return Ok(()) };
        // Completes the multipart upload (or puts a small blob in one request).
        w.shutdown().await.map_err(|source| BlobError::Io { key: self.key.clone(), source })
    }

    async fn abort(mut self) -> Result<(), BlobError> {
        match self.inner.take() {
            Some(mut w) => w.abort().await.map_err(os(&self.key)),
            None => Ok(()),
        }
    }
}

impl Drop for S3Writer {
    /// A writer dropped mid-way (the client went away) aborts its multipart upload, so no
    /// parts are left billed in the bucket.
    fn drop(&mut self) {
        if let Some(mut w) = self.inner.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let key = std::mem::take(&mut self.key);
                rt.spawn(async move {
                    if let Err(e) = w.abort().await {
                        tracing::warn!(key, error = %e, "cannot abort an unfinished upload");
                    }
                });
            }
        }
    }
}
