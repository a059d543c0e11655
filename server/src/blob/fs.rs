//! Blobs as files under a root folder (the server's `data_dir`): `<root>/<key>`. Writers fill a
//! file in `<root>/tmp/` and rename it into place on commit.

use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{Blob, BlobError, BlobStore, BlobWriter, Meta, check_key};

#[derive(Clone, Debug)]
pub struct FsBlobs {
    root: PathBuf,
}

fn io(key: &str) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { key: key.to_string(), source }
}

impl FsBlobs {
    pub fn new(root: PathBuf) -> FsBlobs {
        FsBlobs { root }
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

/// A file being written; removed unless committed.
pub struct FsWriter {
    key: String,
    tmp: PathBuf,
    target: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
}

impl BlobStore for FsBlobs {
    type Writer = FsWriter;

    async fn create(&self, key: &str) -> Result<FsWriter, BlobError> {
        let target = self.path(key)?;
        let dir = self.root.join("tmp");
        tokio::fs::create_dir_all(&dir).await.map_err(io(key))?;
        let tmp = dir.join(crate::new_token());
        let file = tokio::fs::File::create(&tmp).await.map_err(io(key))?;
        Ok(FsWriter { key: key.to_string(), tmp, target, file: Some(tokio::io::BufWriter::with_capacity(256 * 1024, file)) })
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Blob>, BlobError> {
        let path = self.path(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(key)(e)),
        };
        let size = file.metadata().await.map_err(io(key))?.len();
        let Range { start, end } = range.unwrap_or(0..size);
        let (start, end) = (start.min(size), end.min(size).max(start.min(size)));
        file.seek(std::io::SeekFrom::Start(start)).await.map_err(io(key))?;
        let owned = key.to_string();
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(end - start), 64 * 1024)
            .map(move |r| r.map_err(|source| BlobError::Io { key: owned.clone(), source }));
        Ok(Some(Blob { size, stream: stream.boxed() }))
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(key)(e)),
        }
    }

    async fn list(&self, prefix: &str, after: Option<&str>) -> Result<Vec<Meta>, BlobError> {
        let dir = self.path(prefix)?;
        let (prefix, after) = (prefix.to_string(), after.map(str::to_string));
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&dir, &prefix, &mut out).map_err(io(&prefix))?;
            out.retain(|m| after.as_ref().is_none_or(|a| m.key.as_str() > a.as_str()));
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await?
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(key)(e)),
        }
    }
}

/// Every file under `dir` (missing: none), keyed `<key>/<relative path>`.
fn walk(dir: &Path, key: &str, out: &mut Vec<Meta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::NotADirectory => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let child = format!("{key}/{name}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), &child, out)?;
        } else if kind.is_file() {
            out.push(Meta { key: child, size: entry.metadata()?.len() });
        }
    }
    Ok(())
}

impl BlobWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), BlobError> {
        let key = &self.key;
        match self.file.as_mut() {
            Some(f) => f.write_all(&data).await.map_err(io(key)),
            None => Err(io(key)(std::io::Error::other("write after commit or abort"))),
        }
    }

    async fn commit(mut self) -> Result<(), BlobError> {
        let key = self.key.clone();
        let Some(mut file) = self.file.take() else { return Err(io(&key)(std::io::Error::other("committed twice"))) };
        let result = async {
            file.flush().await?;
            drop(file);
            if let Some(parent) = self.target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::rename(&self.tmp, &self.target).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&self.tmp).await;
        }
        result.map_err(io(&key))
    }

    async fn abort(mut self) -> Result<(), BlobError> {
        self.file.take();
        match tokio::fs::remove_file(&self.tmp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&self.key)(e)),
        }
    }
}

impl Drop for FsWriter {
    /// A writer dropped mid-way (the client went away) leaves no temporary file behind.
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let tmp = std::mem::take(&mut self.tmp);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn_blocking(move || std::fs::remove_file(tmp));
            }
        }
    }
}
