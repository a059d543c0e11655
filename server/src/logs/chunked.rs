//! Logs in a blob store shared by several servers.
//!
//! Keys: `logs/live/<job>.<attempt>/<offset>` (offset zero-padded to 20 digits, so key order is
//! offset order) for each accepted chunk while the attempt runs, `logs/<job>.<attempt>.log`
//! once it is sealed. Chunks live under their own prefix so that finding the logs still in
//! chunks ([`ChunkedLogs::open_logs`]) lists running logs only, never every sealed one. The stored length is derived from the chunks (the last one's offset plus
//! its size), never kept elsewhere: whichever server receives the next chunk, or restarts,
//! lists them. Each server remembers the chunks it has seen per log ([`ChunkedLogs::known`]),
//! so an append or a follower's poll lists only what came after the last known key.
//!
//! Sealing writes the final blob from the chunks (streamed; multipart in S3), then deletes the
//! chunks in offset order. Readers look for the final blob first, then the chunks; a chunk that
//! vanished under a reader (sealed meanwhile) is read from the final blob instead. A second
//! sealer that finds the first chunk gone stops: the log is already whole.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{Append, LogError, mask_same_length};
use crate::blob::{BlobStore, BlobWriter, Blobs, ByteStream};

/// Running logs remembered per server before the memory is dropped (it is only a shortcut;
/// a sealed log is forgotten as soon as it is seen sealed).
const KNOWN_LOGS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    offset: u64,
    len: u64,
}

pub struct ChunkedLogs {
    blobs: Blobs,
    /// Chunks seen so far, per (job, attempt), in offset order.
    known: Mutex<HashMap<(i64, i64), Vec<Chunk>>>,
}

pub fn final_key(job: i64, attempt: i64) -> String {
    format!("logs/{job}.{attempt}.log")
}

/// The folder of every log still in chunks.
const LIVE: &str = "logs/live";

fn chunk_dir(job: i64, attempt: i64) -> String {
    format!("{LIVE}/{job}.{attempt}")
}

fn chunk_key(job: i64, attempt: i64, offset: u64) -> String {
    format!("{LIVE}/{job}.{attempt}/{offset:020}")
}

/// `(job, attempt)` of a chunk's key under [`LIVE`].
fn parse_chunk_key(key: &str) -> Option<(i64, i64)> {
    let (log, _offset) = key.strip_prefix(LIVE)?.strip_prefix('/')?.split_once('/')?;
    let (job, attempt) = log.split_once('.')?;
    Some((job.parse().ok()?, attempt.parse().ok()?))
}

/// Where contiguous chunks from offset 0 end; `None` when they are not (a seal is deleting them).
fn contiguous_end(chunks: &[Chunk]) -> Option<u64> {
    let mut end = 0;
    for c in chunks {
        if c.offset != end {
            return None;
        }
        end += c.len;
    }
    Some(end)
}

impl ChunkedLogs {
    pub fn new(blobs: Blobs) -> ChunkedLogs {
        ChunkedLogs { blobs, known: Mutex::new(HashMap::new()) }
    }

    fn remembered(&self, job: i64, attempt: i64) -> Vec<Chunk> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).get(&(job, attempt)).cloned().unwrap_or_default()
    }

    fn remember(&self, job: i64, attempt: i64, chunks: Vec<Chunk>) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= KNOWN_LOGS && !known.contains_key(&(job, attempt)) {
            known.clear();
        }
        known.insert((job, attempt), chunks);
    }

    fn forget(&self, job: i64, attempt: i64) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).remove(&(job, attempt));
    }

    /// `known` plus the chunks stored after its last one.
    async fn refresh(&self, job: i64, attempt: i64, mut known: Vec<Chunk>) -> Result<Vec<Chunk>, LogError> {
        let after = known.last().map(|c| chunk_key(job, attempt, c.offset));
        for meta in self.blobs.list(&chunk_dir(job, attempt), after.as_deref()).await? {
            let Some(offset) = meta.key.rsplit('/').next().and_then(|n| n.parse::<u64>().ok()) else { continue };
            known.push(Chunk { offset, len: meta.size });
        }
        Ok(known)
    }

    pub async fn append(&self, job: i64, attempt: i64, offset: u64, data: Bytes, secrets: &[String]) -> Result<Append, LogError> {
        let mut chunks = self.refresh(job, attempt, self.remembered(job, attempt)).await?;
        let len = match contiguous_end(&chunks) {
            Some(len) if !chunks.is_empty() => len,
            _ => {
                // No chunk (a new log, or a sealed one) or chunks being deleted by a seal.
                if let Some(length) = self.blobs.head(&final_key(job, attempt)).await? {
                    self.forget(job, attempt);
                    return Ok(Append::Sealed { length });
                }
                chunks = self.refresh(job, attempt, Vec::new()).await?;
                contiguous_end(&chunks).ok_or_else(|| LogError::Broken(chunk_dir(job, attempt)))?
            }
        };
        if offset > len {
            self.remember(job, attempt, chunks);
            return Ok(Append::Gap { expected_offset: len });
        }
        let end = offset + data.len() as u64;
        if end <= len {
            self.remember(job, attempt, chunks);
            return Ok(Append::Ok { next_offset: len });
        }
        let mut fresh = data.slice((len - offset) as usize..);
        let longest = secrets.iter().map(String::len).max().unwrap_or(0);
        if longest > 0 {
            // Re-read up to `longest - 1` stored bytes so a secret spanning the boundary is seen.
            let back = (longest as u64 - 1).min(len);
            let view = BlobView {
                blobs: self.blobs.clone(),
                final_key: final_key(job, attempt),
                source: Source::Chunks(chunks.clone()),
                job,
                attempt,
                total: len,
            };
            let mut buf = collect(view.stream(len - back..len)).await?;
            let tail = buf.clone();
            buf.extend_from_slice(&fresh);
            mask_same_length(&mut buf, secrets);
            if buf[..tail.len()] != tail[..] {
                self.rewrite(job, attempt, &chunks, len - back, &buf[..tail.len()]).await?;
            }
            fresh = Bytes::copy_from_slice(&buf[tail.len()..]);
        }
        let added = Chunk { offset: len, len: fresh.len() as u64 };
        self.blobs.put(&chunk_key(job, attempt, len), fresh).await?;
        chunks.push(added);
        self.remember(job, attempt, chunks);
        Ok(Append::Ok { next_offset: end })
    }

    /// Replaces the stored bytes from `at` with `bytes` (a secret masked across chunks).
    async fn rewrite(&self, job: i64, attempt: i64, chunks: &[Chunk], at: u64, bytes: &[u8]) -> Result<(), LogError> {
        let until = at + bytes.len() as u64;
        for c in chunks.iter().filter(|c| c.offset < until && c.offset + c.len > at) {
            let key = chunk_key(job, attempt, c.offset);
            let Some(blob) = self.blobs.get(&key, None).await? else { continue };
            let mut whole = collect(blob.stream).await?;
            let from = at.max(c.offset);
            let to = until.min(c.offset + c.len).min(c.offset + whole.len() as u64);
            if from >= to {
                continue;
            }
            whole[(from - c.offset) as usize..(to - c.offset) as usize].copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
            self.blobs.put(&key, Bytes::from(whole)).await?;
        }
        Ok(())
    }

    pub async fn view(&self, job: i64, attempt: i64) -> Result<Option<BlobView>, LogError> {
        let key = final_key(job, attempt);
        let sealed = |total| BlobView { blobs: self.blobs.clone(), final_key: key.clone(), source: Source::Final, job, attempt, total };
        if let Some(total) = self.blobs.head(&key).await? {
            self.forget(job, attempt);
            return Ok(Some(sealed(total)));
        }
        let chunks = self.refresh(job, attempt, self.remembered(job, attempt)).await?;
        if chunks.is_empty() {
            return Ok(None);
        }
        match contiguous_end(&chunks) {
            Some(total) => {
                self.remember(job, attempt, chunks.clone());
                Ok(Some(BlobView { blobs: self.blobs.clone(), final_key: key, source: Source::Chunks(chunks), job, attempt, total }))
            }
            // Sealed between the two looks.
            None => {
                self.forget(job, attempt);
                Ok(self.blobs.head(&key).await?.map(sealed))
            }
        }
    }

    /// The logs that still have chunks (running, or finished but not sealed yet), each once.
    pub async fn open_logs(&self) -> Result<Vec<(i64, i64)>, LogError> {
        let open: std::collections::BTreeSet<(i64, i64)> =
            self.blobs.list(LIVE, None).await?.iter().filter_map(|meta| parse_chunk_key(&meta.key)).collect();
        Ok(open.into_iter().collect())
    }

    /// Concatenates the chunks into the final blob, then deletes them.
    pub async fn seal(&self, job: i64, attempt: i64) -> Result<(), LogError> {
        let chunks = self.refresh(job, attempt, Vec::new()).await?;
        self.forget(job, attempt);
        if chunks.is_empty() {
            return Ok(());
        }
        let key = final_key(job, attempt);
        let whole = self.blobs.head(&key).await?.is_some();
        if !whole {
            if contiguous_end(&chunks).is_none() {
                // Another server is sealing (it deletes from offset 0 on): the final blob exists.
                return Ok(());
            }
            let mut w = self.blobs.create(&key).await?;
            for c in &chunks {
                let part = match self.blobs.get(&chunk_key(job, attempt, c.offset), None).await {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        let _ = w.abort().await;
                        return Ok(());
                    }
                    Err(e) => {
                        let _ = w.abort().await;
                        return Err(e.into());
                    }
                };
                let mut s = part.stream;
                while let Some(piece) = s.next().await {
                    let written = match piece {
                        Ok(p) => w.write(p).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = written {
                        let _ = w.abort().await;
                        return Err(e.into());
                    }
                }
            }
            w.commit().await?;
        }
        for c in &chunks {
            self.blobs.delete(&chunk_key(job, attempt, c.offset)).await?;
        }
        Ok(())
    }
}

async fn collect(mut s: ByteStream) -> Result<Vec<u8>, LogError> {
    let mut out = Vec::new();
    while let Some(piece) = s.next().await {
        out.extend_from_slice(&piece?);
    }
    Ok(out)
}

enum Source {
    Final,
    Chunks(Vec<Chunk>),
}

/// A chunked log as it was when looked at.
pub struct BlobView {
    blobs: Blobs,
    final_key: String,
    source: Source,
    job: i64,
    attempt: i64,
    total: u64,
}

impl BlobView {
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The bytes in `range` (within `total`), chunk after chunk; a chunk that a seal removed
    /// meanwhile is read from the final blob.
    pub fn stream(&self, range: Range<u64>) -> ByteStream {
        let blobs = self.blobs.clone();
        let final_key = self.final_key.clone();
        let parts: Vec<(Option<String>, Range<u64>)> = match &self.source {
            Source::Final => vec![(None, range.clone())],
            Source::Chunks(chunks) => chunks
                .iter()
                .filter(|c| c.offset < range.end && c.offset + c.len > range.start)
                .map(|c| {
                    let from = range.start.max(c.offset) - c.offset;
                    let to = range.end.min(c.offset + c.len) - c.offset;
                    (Some(chunk_key(self.job, self.attempt, c.offset)), from..to)
                })
                .collect(),
        };
        let end = range.end;
        // Absolute position reached, to resume from the final blob when a chunk is gone.
        let starts: Vec<u64> = match &self.source {
            Source::Final => vec![range.start],
            Source::Chunks(chunks) => chunks
                .iter()
                .filter(|c| c.offset < range.end && c.offset + c.len > range.start)
                .map(|c| range.start.max(c.offset))
                .collect(),
        };
        let steps = parts.into_iter().zip(starts);
        futures_util::stream::unfold((steps, false), move |(mut steps, done)| {
            let blobs = blobs.clone();
            let final_key = final_key.clone();
            async move {
                if done {
                    return None;
                }
                let ((key, r), at) = steps.next()?;
                let got = match &key {
                    Some(k) => blobs.get(k, Some(r)).await,
                    None => blobs.get(&final_key, Some(r)).await,
                };
                match got {
                    Ok(Some(b)) => Some((b.stream, (steps, false))),
                    // The chunk was sealed away: the rest is in the final blob.
                    Ok(None) if key.is_some() => match blobs.get(&final_key, Some(at..end)).await {
                        Ok(Some(b)) => Some((b.stream, (steps, true))),
                        Ok(None) => Some((futures_util::stream::empty().boxed(), (steps, true))),
                        Err(e) => Some((futures_util::stream::once(async move { Err(e) }).boxed(), (steps, true))),
                    },
                    Ok(None) => Some((futures_util::stream::empty().boxed(), (steps, true))),
                    Err(e) => Some((futures_util::stream::once(async move { Err(e) }).boxed(), (steps, true))),
                }
            }
        })
        .flatten()
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_keys_name_their_log() {
        assert_eq!(chunk_key(12, 3, 8), "logs/live/12.3/00000000000000000008");
        assert_eq!(parse_chunk_key(&chunk_key(12, 3, 8)), Some((12, 3)));
        assert_eq!(parse_chunk_key("logs/12.3.log"), None);
        assert_eq!(parse_chunk_key("logs/live/x.3/0"), None);
        assert_eq!(parse_chunk_key("logs/live/12.3"), None);
    }
}
