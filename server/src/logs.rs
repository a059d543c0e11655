//! Job logs, appended by offset. Every attempt has its own log: a retried job starts at offset 0
//! and the failed attempt's log stays. Two implementations behind [`Logs`]:
//!
//! * [`Logs::File`] (the default, blobs on the local disk): `<data_dir>/logs/<job id>.<attempt>.log`,
//!   appended in place. The file is the truth: its length is the next offset.
//! * [`Logs::Chunked`] (object storage, several servers): each accepted chunk is a row of the
//!   store's `log_chunks`; the length is derived from them, so a server that restarts, or
//!   another one, continues where the log stands. When the job finishes the chunks become one
//!   blob `logs/<job>.<attempt>.log` (streamed) and are deleted ([`chunked`]).
//!
//! Either way: a chunk that starts before the end repeats what is stored (a runner retrying
//! after a lost answer) and is acknowledged without writing; one that starts after the end is
//! refused with the expected offset. Nothing is held in memory beyond one chunk. Project
//! secrets are masked again here, with a same-length replacement so that offsets stay the
//! runner's; a secret split across two chunks is found by re-reading the stored tail.
//!
//! **Time marks.** An append that adds bytes records when the server received them, a mark
//! `(offset, unix ms)` of 16 bytes (the offset, then the time, little endian): the chunk row's
//! `at_ms` (sealed into the blob `logs/<job>.<attempt>.times`), or a record appended to
//! `<job>.<attempt>.times` beside a file log — there only when the clock's second changed since
//! the log's last mark, and not for the log's first bytes (their time is the job's start, which
//! readers add): a second file written per chunk made dispatch measurably slower. The job page
//! shows a line's time as the mark at or before its first byte: the runner ships its output
//! every 100 ms or 64 KiB, so that is the second the job wrote it while the runner is
//! connected.

mod chunked;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::blob::{BlobError, Blobs, ByteStream};
use crate::store::Backend;
pub use chunked::{BlobView, ChunkedLogs};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log file `{}`: {source}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("log chunks in the database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("a log task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the chunks of {0} do not follow each other from offset 0, and there is no whole log")]
    Broken(String),
}

/// Storage errors are logged with their cause; clients learn only that storage failed.
impl From<LogError> for crate::error::Error {
    fn from(e: LogError) -> Self {
        tracing::error!(error = %e, "log storage");
        crate::error::Error::Internal("the server's log storage failed; try again later".into())
    }
}

/// Where a server keeps job logs.
pub enum Logs {
    File(FileLogs),
    Chunked(ChunkedLogs),
}

/// Logs as files appended in place under one folder.
pub struct FileLogs {
    dir: PathBuf,
    /// The second of each running log's last time mark (a shortcut: forgotten when full).
    marked: std::sync::Mutex<std::collections::HashMap<(i64, i64), i64>>,
}

/// Logs whose last mark's second [`FileLogs`] remembers.
const MARKED_LOGS: usize = 1024;

impl FileLogs {
    /// The time to mark an append with: none in the second already marked.
    fn mark_for(&self, job: i64, attempt: i64, at_ms: i64) -> Option<i64> {
        let marked = self.marked.lock().unwrap_or_else(|e| e.into_inner());
        (marked.get(&(job, attempt)) != Some(&at_ms.div_euclid(1000))).then_some(at_ms)
    }

    fn marked(&self, job: i64, attempt: i64, at_ms: i64) {
        let mut marked = self.marked.lock().unwrap_or_else(|e| e.into_inner());
        if marked.len() >= MARKED_LOGS && !marked.contains_key(&(job, attempt)) {
            marked.clear();
        }
        marked.insert((job, attempt), at_ms.div_euclid(1000));
    }
}

impl Logs {
    /// Files under `<data_dir>/logs` when blobs are on the local disk; otherwise running logs
    /// in the store's `log_chunks` and finished ones in the blob store.
    pub fn for_blobs(data_dir: &Path, blobs: &Blobs, store: &Backend) -> Logs {
        match blobs {
            Blobs::Fs(_) => Logs::file(data_dir.join("logs")),
            other => Logs::chunked(other.clone(), store.clone()),
        }
    }

    pub fn file(dir: PathBuf) -> Logs {
        Logs::File(FileLogs { dir, marked: Default::default() })
    }

    pub fn chunked(blobs: Blobs, store: Backend) -> Logs {
        Logs::Chunked(ChunkedLogs::new(blobs, store))
    }

    /// Appends `data` at `offset`, received at `at_ms`, masking `secrets`. Call with the job's
    /// log lock held.
    pub async fn append(
        &self,
        job: i64,
        attempt: i64,
        offset: u64,
        data: Bytes,
        secrets: Vec<String>,
        at_ms: i64,
    ) -> Result<Append, LogError> {
        match self {
            Logs::File(f) => {
                let dir = f.dir.clone();
                let p = path(&dir, job, attempt);
                let mark = f.mark_for(job, attempt, at_ms);
                let (appended, marked) = tokio::task::spawn_blocking(move || append(&dir, job, attempt, offset, &data, &secrets, mark))
                    .await?
                    .map_err(|source| LogError::File { path: p, source })?;
                if marked {
                    f.marked(job, attempt, at_ms);
                }
                Ok(appended)
            }
            Logs::Chunked(c) => c.append(job, attempt, offset, data, &secrets, at_ms).await,
        }
    }

    /// Stores an attempt's whole log, received with its finish report (the runner shipped
    /// none of it before; see [`scheduler::protocol::FinishRequest::log`]). On object storage
    /// it becomes the final object at once, with no chunk rows and nothing to seal; files
    /// append as usual. Call with the job's log lock held. Idempotent: a retried finish stores
    /// the same bytes again.
    pub async fn store_whole(&self, job: i64, attempt: i64, data: Bytes, secrets: Vec<String>, at_ms: i64) -> Result<Whole, LogError> {
        match self {
            Logs::Chunked(c) => c.store_whole(job, attempt, data, &secrets, at_ms).await,
            Logs::File(_) => match self.append(job, attempt, 0, data, secrets, at_ms).await? {
                Append::Ok { next_offset } => Ok(Whole::Appended { length: next_offset }),
                Append::Gap { expected_offset: length } | Append::Sealed { length } => Ok(Whole::Appended { length }),
            },
        }
    }

    /// What is stored of the log now, or `None` when nothing is.
    pub async fn view(&self, job: i64, attempt: i64) -> Result<Option<LogView>, LogError> {
        match self {
            Logs::File(f) => {
                let p = path(&f.dir, job, attempt);
                match tokio::fs::metadata(&p).await {
                    Ok(m) => Ok(Some(LogView::File { path: p, total: m.len() })),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(LogError::File { path: p, source }),
                }
            }
            Logs::Chunked(c) => Ok(c.view(job, attempt).await?.map(LogView::Blob)),
        }
    }

    /// Bytes stored so far.
    pub async fn len(&self, job: i64, attempt: i64) -> Result<u64, LogError> {
        Ok(self.view(job, attempt).await?.map_or(0, |v| v.total()))
    }

    /// The attempt is over: its log becomes one blob (nothing to do for files).
    pub async fn seal(&self, job: i64, attempt: i64) -> Result<(), LogError> {
        match self {
            Logs::File(_) => Ok(()),
            Logs::Chunked(c) => c.seal(job, attempt).await,
        }
    }

    /// Whether finished logs need [`Logs::seal`] at all.
    pub fn seals(&self) -> bool {
        matches!(self, Logs::Chunked(_))
    }

    /// `(job, attempt)` of every log still in chunks: running, or finished and not sealed yet.
    pub async fn open_logs(&self) -> Result<Vec<(i64, i64)>, LogError> {
        match self {
            Logs::File(_) => Ok(Vec::new()),
            Logs::Chunked(c) => c.open_logs().await,
        }
    }
}

/// A log as stored when it was looked at: its length then, and reads within it.
pub enum LogView {
    File { path: PathBuf, total: u64 },
    Blob(BlobView),
}

impl LogView {
    pub fn total(&self) -> u64 {
        match self {
            LogView::File { total, .. } => *total,
            LogView::Blob(b) => b.total(),
        }
    }

    /// The bytes in `range` (clipped to the end), streamed.
    pub async fn stream(&self, range: Range<u64>) -> Result<ByteStream, LogError> {
        let end = range.end.min(self.total());
        let start = range.start.min(end);
        match self {
            LogView::File { path, .. } => {
                use tokio::io::{AsyncReadExt, AsyncSeekExt};
                let file_err = |source| LogError::File { path: path.clone(), source };
                let mut f = tokio::fs::File::open(path).await.map_err(file_err)?;
                f.seek(SeekFrom::Start(start)).await.map_err(file_err)?;
                let key = path.display().to_string();
                let s = tokio_util::io::ReaderStream::with_capacity(f.take(end - start), 64 * 1024)
                    .map(move |r| r.map_err(|source| BlobError::Io { key: key.clone(), source }));
                Ok(s.boxed())
            }
            LogView::Blob(b) => Ok(b.stream(start..end)),
        }
    }

    /// At most `max` bytes from `offset` (bounded: one event or one page's worth).
    pub async fn read_at(&self, offset: u64, max: usize) -> Result<Vec<u8>, LogError> {
        let end = offset.saturating_add(max as u64).min(self.total());
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut s = self.stream(offset..end).await?;
        while let Some(piece) = s.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    /// The number the log page gives the line starting at byte `offset`: one plus the lines
    /// before it that show ([`crate::web::ansi::LineCounter`], read in blocks).
    pub async fn line_at(&self, offset: u64) -> Result<usize, LogError> {
        let mut counter = crate::web::ansi::LineCounter::new();
        let mut s = self.stream(0..offset).await?;
        while let Some(piece) = s.next().await {
            counter.push(&piece?);
        }
        Ok(counter.numbered() + 1)
    }

    /// The time marks that date the bytes of `range`: the last mark at or before its start,
    /// then the marks inside it. Empty for logs stored before marks were kept.
    pub async fn times(&self, range: Range<u64>) -> Result<Vec<(u64, i64)>, LogError> {
        match self {
            LogView::File { path, .. } => {
                let times = path.with_extension("times");
                let p = times.clone();
                tokio::task::spawn_blocking(move || read_marks(&times, range)).await?.map_err(|source| LogError::File { path: p, source })
            }
            LogView::Blob(b) => b.times(range).await,
        }
    }
}

/// Bytes of one time mark: the offset, then unix ms, little endian.
pub(crate) const MARK_BYTES: usize = 16;

pub(crate) fn encode_mark(offset: u64, at_ms: i64) -> [u8; MARK_BYTES] {
    let mut m = [0u8; MARK_BYTES];
    m[..8].copy_from_slice(&offset.to_le_bytes());
    m[8..].copy_from_slice(&at_ms.to_le_bytes());
    m
}

fn decode_mark(bytes: &[u8]) -> (u64, i64) {
    let offset = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
    let at = i64::from_le_bytes(bytes[8..MARK_BYTES].try_into().unwrap_or_default());
    (offset, at)
}

/// Collects, from marks in offset order, those that date `range`.
#[derive(Default)]
pub(crate) struct MarksFor {
    range: Range<u64>,
    out: Vec<(u64, i64)>,
    /// A partial mark carried between reads.
    carry: Vec<u8>,
    done: bool,
}

impl MarksFor {
    pub(crate) fn new(range: Range<u64>) -> MarksFor {
        MarksFor { range, ..MarksFor::default() }
    }

    fn mark(&mut self, (offset, at): (u64, i64)) {
        if offset <= self.range.start {
            self.out.clear();
            self.out.push((offset, at));
        } else if offset < self.range.end {
            self.out.push((offset, at));
        } else {
            self.done = true;
        }
    }

    /// Feeds encoded marks; `false` once the rest cannot matter.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) -> bool {
        if !self.carry.is_empty() {
            let need = MARK_BYTES - self.carry.len();
            let take = need.min(bytes.len());
            self.carry.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.carry.len() == MARK_BYTES {
                let m = decode_mark(&self.carry);
                self.carry.clear();
                self.mark(m);
            }
        }
        let mut records = bytes.chunks_exact(MARK_BYTES);
        for r in records.by_ref() {
            if self.done {
                return false;
            }
            self.mark(decode_mark(r));
        }
        self.carry.extend_from_slice(records.remainder());
        !self.done
    }

    pub(crate) fn finish(self) -> Vec<(u64, i64)> {
        self.out
    }
}

/// The marks of a `.times` file that date `range`: a binary search for the last mark at or
/// before its start, then a read up to its end. Blocking.
fn read_marks(path: &Path, range: Range<u64>) -> std::io::Result<Vec<(u64, i64)>> {
    use std::os::unix::fs::FileExt;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let count = file.metadata()?.len() / MARK_BYTES as u64;
    let mut buf = [0u8; MARK_BYTES];
    let mut read = |i: u64| -> std::io::Result<(u64, i64)> {
        file.read_exact_at(&mut buf, i * MARK_BYTES as u64)?;
        Ok(decode_mark(&buf))
    };
    // The first mark after `range.start`; the one before it dates the start.
    let (mut lo, mut hi) = (0, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if read(mid)?.0 <= range.start {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut marks = MarksFor::new(range);
    let mut block = vec![0u8; 4096 * MARK_BYTES];
    let mut at = lo.saturating_sub(1) * MARK_BYTES as u64;
    loop {
        let n = file.read_at(&mut block, at)?;
        if n == 0 || !marks.push(&block[..n]) {
            break;
        }
        at += n as u64;
    }
    Ok(marks.finish())
}

/// Outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    /// Stored (or already stored): the log now ends at this offset.
    Ok { next_offset: u64 },
    /// The chunk starts after the end of the log.
    Gap { expected_offset: u64 },
    /// The attempt's log was sealed (its job finished): nothing more is added.
    Sealed { length: u64 },
}

/// How [`Logs::store_whole`] stored a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whole {
    /// As the final object: the log needs no sealing.
    Final { length: u64 },
    /// Appended like any chunk (files, or a log that already had chunks): sealed as usual.
    Appended { length: u64 },
}

impl Whole {
    pub fn length(self) -> u64 {
        match self {
            Whole::Final { length } | Whole::Appended { length } => length,
        }
    }
}

pub fn path(logs_dir: &Path, job_id: i64, attempt: i64) -> PathBuf {
    logs_dir.join(format!("{job_id}.{attempt}.log"))
}

/// Appends `data` at `offset`, masking `secrets`; with `mark`, records that time for the bytes
/// added, unless they are the log's first (whether it did is the `bool`). Blocking: call from
/// `spawn_blocking`, with the job's log lock held.
pub fn append(
    logs_dir: &Path,
    job_id: i64,
    attempt: i64,
    offset: u64,
    data: &[u8],
    secrets: &[String],
    mark: Option<i64>,
) -> std::io::Result<(Append, bool)> {
    std::fs::create_dir_all(logs_dir)?;
    let p = path(logs_dir, job_id, attempt);
    let mut file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(&p)?;
    let len = file.metadata()?.len();
    if offset > len {
        return Ok((Append::Gap { expected_offset: len }, false));
    }
    let end = offset + data.len() as u64;
    if end <= len {
        return Ok((Append::Ok { next_offset: len }, false));
    }
    // Only the part past the stored end is new. Its time mark goes first: a mark past the end
    // (the write below failed) dates nothing, and the bytes written again get their own.
    let fresh = &data[(len - offset) as usize..];
    let marked = match mark.filter(|_| len > 0) {
        Some(at_ms) => {
            OpenOptions::new().create(true).append(true).open(p.with_extension("times"))?.write_all(&encode_mark(len, at_ms))?;
            true
        }
        None => false,
    };
    let longest = secrets.iter().map(String::len).max().unwrap_or(0);
    if longest == 0 {
        file.seek(SeekFrom::Start(len))?;
        file.write_all(fresh)?;
        return Ok((Append::Ok { next_offset: end }, marked));
    }
    // Re-read up to `longest - 1` stored bytes so a secret spanning the boundary is seen.
    let back = (longest as u64 - 1).min(len);
    let mut buf = vec![0u8; back as usize];
    file.seek(SeekFrom::Start(len - back))?;
    file.read_exact(&mut buf)?;
    buf.extend_from_slice(fresh);
    mask_same_length(&mut buf, secrets);
    file.seek(SeekFrom::Start(len - back))?;
    file.write_all(&buf)?;
    Ok((Append::Ok { next_offset: end }, marked))
}

/// Replaces every occurrence of a secret by `*`s of the same length.
pub(crate) fn mask_same_length(buf: &mut [u8], secrets: &[String]) {
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        let s = s.as_bytes();
        let mut i = 0;
        while i + s.len() <= buf.len() {
            if &buf[i..i + s.len()] == s {
                buf[i..i + s.len()].fill(b'*');
                i += s.len();
            } else {
                i += 1;
            }
        }
    }
}

/// Bytes stored so far.
pub fn len(logs_dir: &Path, job_id: i64, attempt: i64) -> u64 {
    std::fs::metadata(path(logs_dir, job_id, attempt)).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_idempotent_and_gaps_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(
            append(d, 1, 1, 0, b"hello ", &[], Some(1)).unwrap(),
            (Append::Ok { next_offset: 6 }, false),
            "the first bytes: the job's start"
        );
        assert_eq!(
            append(d, 1, 1, 0, b"hello ", &[], Some(2)).unwrap(),
            (Append::Ok { next_offset: 6 }, false),
            "a repeat is acknowledged"
        );
        assert_eq!(append(d, 1, 1, 10, b"x", &[], Some(3)).unwrap(), (Append::Gap { expected_offset: 6 }, false));
        assert_eq!(
            append(d, 1, 1, 3, b"lo world", &[], Some(4)).unwrap(),
            (Append::Ok { next_offset: 11 }, true),
            "an overlapping retry adds only the new part"
        );
        assert_eq!(append(d, 1, 1, 11, b"!", &[], None).unwrap(), (Append::Ok { next_offset: 12 }, false));
        assert_eq!(std::fs::read_to_string(path(d, 1, 1)).unwrap(), "hello world!");
        assert_eq!(read_marks(&path(d, 1, 1).with_extension("times"), 0..11).unwrap(), [(6, 4)], "a mark for the bytes added");
    }

    #[test]
    fn marks_for_a_range_are_the_one_before_and_those_inside() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("1.1.times");
        let marks: Vec<(u64, i64)> = (0..10_000).map(|i| (i * 10, i as i64)).collect();
        std::fs::write(&file, marks.iter().flat_map(|&(o, t)| encode_mark(o, t)).collect::<Vec<u8>>()).unwrap();
        assert_eq!(read_marks(&file, 25..50).unwrap(), [(20, 2), (30, 3), (40, 4)]);
        assert_eq!(read_marks(&file, 30..31).unwrap(), [(30, 3)]);
        assert_eq!(read_marks(&file, 0..1).unwrap(), [(0, 0)]);
        assert_eq!(read_marks(&file, 200_000..300_000).unwrap(), [(99_990, 9_999)], "past the end: the last mark");
        assert!(read_marks(&dir.path().join("none.times"), 0..10).unwrap().is_empty());
        let mut m = MarksFor::new(15..35);
        let bytes: Vec<u8> = marks.iter().take(5).flat_map(|&(o, t)| encode_mark(o, t)).collect();
        for piece in bytes.chunks(7) {
            m.push(piece);
        }
        assert_eq!(m.finish(), [(10, 1), (20, 2), (30, 3)], "marks split across reads");
    }

    #[test]
    fn secrets_are_masked_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let secrets = vec!["s3cret-token".to_string()];
        append(d, 2, 1, 0, b"token=s3cr", &secrets, Some(1)).unwrap();
        append(d, 2, 1, 10, b"et-token done\n", &secrets, Some(2)).unwrap();
        let text = std::fs::read_to_string(path(d, 2, 1)).unwrap();
        assert_eq!(text, "token=************ done\n");
        assert_eq!(len(d, 2, 1), 24);
    }
}
