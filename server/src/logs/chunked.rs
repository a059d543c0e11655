//! Logs of servers that keep finished logs in object storage.
//!
//! A running log is rows of the store's `log_chunks` table, one per accepted chunk, keyed by
//! `(job, attempt, offset)`; once the attempt is over it is **sealed**: the chunks are streamed
//! into one blob `logs/<job>.<attempt>.log` (multipart in S3), then deleted. This is GitLab's
//! own split (live trace chunks in the database or Redis, archived traces in object storage):
//! an append is one small database write instead of several object-storage requests, and the
//! store is already shared by every server, so any of them continues a log another accepted.
//! The stored length is derived from the chunks (the last one's offset plus its size), never
//! kept elsewhere. Each server remembers the chunks it has seen per log
//! ([`ChunkedLogs::known`]), so an append or a follower's poll lists only what came after.
//!
//! Readers look at the chunks first, then the final blob; a chunk that vanished under a reader
//! (sealed meanwhile) is read from the final blob instead. Two sealers write the same bytes.
//! Each row keeps when it was received (`at_ms`); sealing writes those time marks (where the
//! second changes, none for the first bytes, as file logs) to
//! `logs/<job>.<attempt>.times` before the log itself, so a reader that finds the log sealed
//! finds its marks too.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{Append, LogError, MarksFor, Whole, encode_mark, mask_same_length};
use crate::blob::{BlobError, BlobStore, BlobWriter, Blobs, ByteStream};
use crate::store::{Backend, Store};

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
    store: Backend,
    /// Chunks seen so far, per (job, attempt), in offset order.
    known: Mutex<HashMap<(i64, i64), Vec<Chunk>>>,
}

pub fn final_key(job: i64, attempt: i64) -> String {
    format!("logs/{job}.{attempt}.log")
}

/// The time marks of a sealed log.
pub fn times_key(job: i64, attempt: i64) -> String {
    format!("logs/{job}.{attempt}.times")
}

fn chunk_name(job: i64, attempt: i64, offset: u64) -> String {
    format!("log chunk {job}.{attempt}@{offset}")
}

/// Where contiguous chunks from offset 0 end; `None` when they are not.
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
    pub fn new(blobs: Blobs, store: Backend) -> ChunkedLogs {
        ChunkedLogs { blobs, store, known: Mutex::new(HashMap::new()) }
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

    /// `known` plus the chunks stored after its last one; `None` when the last known chunk is
    /// gone (the log was sealed meanwhile: what is remembered is stale).
    async fn refresh(&self, job: i64, attempt: i64, mut known: Vec<Chunk>) -> Result<Option<Vec<Chunk>>, LogError> {
        let last = known.last().copied();
        let mut stored = self.store.log_chunks(job, attempt, last.map_or(0, |c| c.offset)).await?.into_iter();
        if let Some(last) = last {
            if stored.next().map(|(offset, _)| offset) != Some(last.offset) {
                return Ok(None);
            }
        }
        known.extend(stored.map(|(offset, len)| Chunk { offset, len }));
        Ok(Some(known))
    }

    /// All the chunks stored now.
    async fn stored(&self, job: i64, attempt: i64) -> Result<Vec<Chunk>, LogError> {
        Ok(self.refresh(job, attempt, Vec::new()).await?.unwrap_or_default())
    }

    pub async fn append(
        &self,
        job: i64,
        attempt: i64,
        offset: u64,
        data: Bytes,
        secrets: &[String],
        at_ms: i64,
    ) -> Result<Append, LogError> {
        let refreshed = self.refresh(job, attempt, self.remembered(job, attempt)).await?;
        let stale = refreshed.is_none();
        let mut chunks = refreshed.unwrap_or_default();
        let len = match contiguous_end(&chunks) {
            Some(len) if !chunks.is_empty() => len,
            // A new log: only a running attempt's runner appends (its token ends with it), so
            // a first chunk needs no look at object storage.
            Some(_) if offset == 0 && !stale => 0,
            _ => {
                // No chunk past offset 0 (a sealed log?), or chunks deleted under us by a seal.
                if let Some(length) = self.blobs.head(&final_key(job, attempt)).await? {
                    self.forget(job, attempt);
                    return Ok(Append::Sealed { length });
                }
                chunks = self.stored(job, attempt).await?;
                contiguous_end(&chunks).ok_or_else(|| LogError::Broken(format!("log {job}.{attempt}")))?
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
        if longest > 0 && len > 0 {
            // Re-read up to `longest - 1` stored bytes so a secret spanning the boundary is seen.
            let back = (longest as u64 - 1).min(len);
            let view = self.view_of(job, attempt, Source::Chunks(chunks.clone()), len);
            let mut buf = collect(view.stream(len - back..len)).await?;
            let tail = buf.clone();
            buf.extend_from_slice(&fresh);
            mask_same_length(&mut buf, secrets);
            if buf[..tail.len()] != tail[..] {
                self.rewrite(job, attempt, &chunks, len - back, &buf[..tail.len()]).await?;
            }
            fresh = Bytes::copy_from_slice(&buf[tail.len()..]);
        } else if longest > 0 {
            let mut buf = fresh.to_vec();
            mask_same_length(&mut buf, secrets);
            fresh = Bytes::from(buf);
        }
        let added = Chunk { offset: len, len: fresh.len() as u64 };
        self.store.put_log_chunk(job, attempt, len, &fresh, Some(at_ms)).await?;
        chunks.push(added);
        self.remember(job, attempt, chunks);
        Ok(Append::Ok { next_offset: end })
    }

    /// A whole log from the finish report: straight to the final object when no chunk of it
    /// is stored (the runner shipped none: the common case of a short job), so the log costs
    /// one object write and no row of the store; otherwise appended and sealed as usual. No
    /// time marks are needed: the first bytes of a log never have one.
    ///
    /// The object is written while the store is asked whether chunks exist (one round trip
    /// less before the finish is answered): the report holds the whole log from its first
    /// byte, so the object is right either way. `piste runner` sends a log whole only when it
    /// started no chunk request; should chunks exist all the same (another client), the log
    /// is appended to them and sealed as usual, which writes the object again from them.
    pub async fn store_whole(&self, job: i64, attempt: i64, data: Bytes, secrets: &[String], at_ms: i64) -> Result<Whole, LogError> {
        let known = self.remembered(job, attempt);
        if !known.is_empty() {
            return self.append_whole(job, attempt, data, secrets, at_ms).await;
        }
        let mut bytes = data.to_vec();
        mask_same_length(&mut bytes, secrets);
        let length = bytes.len() as u64;
        let write = async {
            let mut w = self.blobs.create(&final_key(job, attempt)).await?;
            if let Err(e) = w.write(Bytes::from(bytes)).await {
                let _ = w.abort().await;
                return Err(LogError::from(e));
            }
            w.commit().await?;
            Ok(())
        };
        let (chunks, written) = tokio::join!(self.stored(job, attempt), write);
        if !chunks?.is_empty() {
            return self.append_whole(job, attempt, data, secrets, at_ms).await;
        }
        written?;
        self.forget(job, attempt);
        Ok(Whole::Final { length })
    }

    /// [`ChunkedLogs::store_whole`] of a log that has chunks: appended from offset 0.
    async fn append_whole(&self, job: i64, attempt: i64, data: Bytes, secrets: &[String], at_ms: i64) -> Result<Whole, LogError> {
        Ok(match self.append(job, attempt, 0, data, secrets, at_ms).await? {
            Append::Ok { next_offset: length } | Append::Gap { expected_offset: length } => Whole::Appended { length },
            Append::Sealed { length } => Whole::Final { length },
        })
    }

    /// Replaces the stored bytes from `at` with `bytes` (a secret masked across chunks).
    async fn rewrite(&self, job: i64, attempt: i64, chunks: &[Chunk], at: u64, bytes: &[u8]) -> Result<(), LogError> {
        let until = at + bytes.len() as u64;
        for c in chunks.iter().filter(|c| c.offset < until && c.offset + c.len > at) {
            let Some(mut whole) = self.store.log_chunk(job, attempt, c.offset).await? else { continue };
            let from = at.max(c.offset);
            let to = until.min(c.offset + c.len).min(c.offset + whole.len() as u64);
            if from >= to {
                continue;
            }
            whole[(from - c.offset) as usize..(to - c.offset) as usize].copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
            self.store.put_log_chunk(job, attempt, c.offset, &whole, None).await?;
        }
        Ok(())
    }

    fn view_of(&self, job: i64, attempt: i64, source: Source, total: u64) -> BlobView {
        BlobView { blobs: self.blobs.clone(), store: self.store.clone(), final_key: final_key(job, attempt), source, job, attempt, total }
    }

    pub async fn view(&self, job: i64, attempt: i64) -> Result<Option<BlobView>, LogError> {
        let chunks = self.refresh(job, attempt, self.remembered(job, attempt)).await?.unwrap_or_default();
        if let Some(total) = contiguous_end(&chunks).filter(|_| !chunks.is_empty()) {
            // Running, or finished and not sealed yet: chunks that vanish under the reader
            // (sealed meanwhile) are read from the final blob.
            self.remember(job, attempt, chunks.clone());
            return Ok(Some(self.view_of(job, attempt, Source::Chunks(chunks), total)));
        }
        self.forget(job, attempt);
        Ok(self.blobs.head(&final_key(job, attempt)).await?.map(|total| self.view_of(job, attempt, Source::Final, total)))
    }

    /// `(job, attempt)` of every log still in chunks: running, or finished and not sealed yet.
    pub async fn open_logs(&self) -> Result<Vec<(i64, i64)>, LogError> {
        Ok(self.store.open_logs().await?)
    }

    /// Streams the chunks into the final blob, then deletes them.
    pub async fn seal(&self, job: i64, attempt: i64) -> Result<(), LogError> {
        let chunks = self.stored(job, attempt).await?;
        self.forget(job, attempt);
        if chunks.is_empty() {
            return Ok(());
        }
        if contiguous_end(&chunks).is_none() {
            return Err(LogError::Broken(format!("log {job}.{attempt}")));
        }
        // The marks first: once the log blob exists, readers look for them in the bucket.
        let marks = sealed_marks(self.store.log_chunk_times(job, attempt, 0..u64::MAX).await?);
        if !marks.is_empty() {
            let bytes: Vec<u8> = marks.iter().flat_map(|&(o, t)| encode_mark(o, t)).collect();
            let mut w = self.blobs.create(&times_key(job, attempt)).await?;
            if let Err(e) = w.write(Bytes::from(bytes)).await {
                let _ = w.abort().await;
                return Err(e.into());
            }
            w.commit().await?;
        }
        let key = final_key(job, attempt);
        let mut w = self.blobs.create(&key).await?;
        for c in &chunks {
            let part = match self.store.log_chunk(job, attempt, c.offset).await {
                Ok(Some(b)) => b,
                // Another server sealed it meanwhile: the final blob is whole.
                Ok(None) => {
                    let _ = w.abort().await;
                    return Ok(());
                }
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(e.into());
                }
            };
            if let Err(e) = w.write(Bytes::from(part)).await {
                let _ = w.abort().await;
                return Err(e.into());
            }
        }
        w.commit().await?;
        self.store.delete_log_chunks(job, attempt).await?;
        Ok(())
    }
}

/// The marks a sealed log keeps, by the rule file logs follow: none for the first bytes (the
/// pages date them by the job's start) and one only where the second changes. A log that came
/// in one chunk, or within one second, then needs no marks object: one object-storage write
/// per finished job, not two.
fn sealed_marks(marks: Vec<(u64, i64)>) -> Vec<(u64, i64)> {
    let mut kept: Vec<(u64, i64)> = Vec::new();
    let mut second = None;
    for (offset, at) in marks {
        let s = at.div_euclid(1000);
        if offset > 0 && second != Some(s) {
            kept.push((offset, at));
        }
        second = Some(s);
    }
    kept
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
    store: Backend,
    final_key: String,
    source: Source,
    job: i64,
    attempt: i64,
    total: u64,
}

/// One piece of a read: part of a chunk (by offset) or of the final blob.
enum Part {
    Chunk { offset: u64, within: Range<u64> },
    Final(Range<u64>),
}

impl BlobView {
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The time marks that date `range` (see [`super::LogView::times`]): from the rows while
    /// they last, else from the sealed marks.
    pub async fn times(&self, range: Range<u64>) -> Result<Vec<(u64, i64)>, LogError> {
        if matches!(self.source, Source::Chunks(_)) {
            let marks = self.store.log_chunk_times(self.job, self.attempt, range.clone()).await?;
            if !marks.is_empty() {
                return Ok(marks);
            }
        }
        let key = times_key(self.job, self.attempt);
        let Some(blob) = self.blobs.get(&key, None).await? else { return Ok(Vec::new()) };
        let mut marks = MarksFor::new(range);
        let mut stream = blob.stream;
        while let Some(piece) = stream.next().await {
            if !marks.push(&piece?) {
                break;
            }
        }
        Ok(marks.finish())
    }

    /// The bytes in `range` (within `total`), chunk after chunk; a chunk that a seal removed
    /// meanwhile is read, with the rest, from the final blob.
    pub fn stream(&self, range: Range<u64>) -> ByteStream {
        let parts: Vec<Part> = match &self.source {
            Source::Final => vec![Part::Final(range.clone())],
            Source::Chunks(chunks) => chunks
                .iter()
                .filter(|c| c.offset < range.end && c.offset + c.len > range.start)
                .map(|c| Part::Chunk {
                    offset: c.offset,
                    within: range.start.max(c.offset) - c.offset..range.end.min(c.offset + c.len) - c.offset,
                })
                .collect(),
        };
        let (blobs, store, final_key, job, attempt, end) =
            (self.blobs.clone(), self.store.clone(), self.final_key.clone(), self.job, self.attempt, range.end);
        let from_final = move |blobs: Blobs, key: String, r: Range<u64>| async move {
            match blobs.get(&key, Some(r)).await {
                Ok(Some(b)) => b.stream,
                Ok(None) => futures_util::stream::empty().boxed(),
                Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            }
        };
        futures_util::stream::unfold((parts.into_iter(), false), move |(mut parts, done)| {
            let (blobs, store, final_key) = (blobs.clone(), store.clone(), final_key.clone());
            async move {
                if done {
                    return None;
                }
                match parts.next()? {
                    Part::Final(r) => Some((from_final(blobs, final_key, r).await, (parts, true))),
                    Part::Chunk { offset, within } => match store.log_chunk(job, attempt, offset).await {
                        Ok(Some(data)) => {
                            let to = (within.end as usize).min(data.len());
                            let from = (within.start as usize).min(to);
                            let piece = Bytes::from(data).slice(from..to);
                            Some((futures_util::stream::once(async move { Ok(piece) }).boxed(), (parts, false)))
                        }
                        // Sealed away meanwhile: the rest is in the final blob.
                        Ok(None) => Some((from_final(blobs, final_key, offset + within.start..end).await, (parts, true))),
                        Err(e) => {
                            let e = BlobError::Io { key: chunk_name(job, attempt, offset), source: std::io::Error::other(e) };
                            Some((futures_util::stream::once(async move { Err(e) }).boxed(), (parts, true)))
                        }
                    },
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
    fn contiguous_chunks_have_an_end() {
        let c = |offset, len| Chunk { offset, len };
        assert_eq!(contiguous_end(&[]), Some(0));
        assert_eq!(contiguous_end(&[c(0, 3), c(3, 2)]), Some(5));
        assert_eq!(contiguous_end(&[c(3, 2)]), None, "a seal deleted the first chunk");
        assert_eq!(contiguous_end(&[c(0, 3), c(4, 2)]), None);
    }
}

#[cfg(test)]
mod sealed_marks_tests {
    use super::sealed_marks;

    #[test]
    fn a_sealed_log_keeps_a_mark_only_where_the_second_changes_and_none_for_its_start() {
        assert!(sealed_marks(vec![(0, 5_000)]).is_empty(), "one chunk: nothing to keep");
        assert!(sealed_marks(vec![(0, 5_000), (10, 5_400), (20, 5_999)]).is_empty(), "one second");
        assert_eq!(sealed_marks(vec![(0, 5_000), (10, 5_400), (20, 6_100), (30, 6_200), (40, 9_000)]), vec![(20, 6_100), (40, 9_000)]);
    }
}
