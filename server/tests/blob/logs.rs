//! Log semantics on every storage: appends by offset (a repeat acknowledged, a gap refused with
//! the expected offset), secrets re-masked across chunks with same-length replacements, reads,
//! a server restart, two servers, and sealing into one blob.

use bytes::Bytes;
use futures_util::StreamExt;
use server::blob::{BlobStore, Blobs};
use server::logs::{Append, LogError, Logs};
use server::store::{Backend, SqliteStore, Store};

const SECRET: &str = "s3cret-token";

async fn text(logs: &Logs, job: i64, attempt: i64) -> String {
    let Some(view) = logs.view(job, attempt).await.unwrap() else { return String::new() };
    let mut s = view.stream(0..view.total()).await.unwrap();
    let mut out = Vec::new();
    while let Some(p) = s.next().await {
        out.extend_from_slice(&p.unwrap());
    }
    String::from_utf8(out).unwrap()
}

/// Appends at time `offset * 1000` (ms), so each chunk's time mark tells which append it was.
async fn append(logs: &Logs, job: i64, offset: u64, data: &'static [u8]) -> Append {
    logs.append(job, 1, offset, Bytes::from_static(data), vec![SECRET.to_string()], offset as i64 * 1000).await.unwrap()
}

/// Marks past the log's first bytes.
fn after_first(marks: Vec<(u64, i64)>) -> Vec<(u64, i64)> {
    marks.into_iter().filter(|m| m.0 > 0).collect()
}

/// Everything a log promises; `restart` gives a second `Logs` over the same storage (a
/// restarted server, or another server).
async fn semantics(logs: &Logs, restart: impl Fn() -> Logs) {
    // Repeats, gaps, overlaps.
    assert_eq!(append(logs, 1, 0, b"hello ").await, Append::Ok { next_offset: 6 });
    assert_eq!(append(logs, 1, 0, b"hello ").await, Append::Ok { next_offset: 6 }, "a repeat is acknowledged");
    assert_eq!(append(logs, 1, 10, b"x").await, Append::Gap { expected_offset: 6 });
    assert_eq!(append(logs, 1, 3, b"lo world\n").await, Append::Ok { next_offset: 12 }, "an overlap adds only the new part");
    assert_eq!(text(logs, 1, 1).await, "hello world\n");
    assert_eq!(logs.len(1, 1).await.unwrap(), 12);
    assert_eq!(logs.len(1, 2).await.unwrap(), 0, "attempts have their own logs");
    assert!(logs.view(1, 2).await.unwrap().is_none());

    // A secret split over three chunks is masked with as many `*`, offsets unchanged.
    append(logs, 2, 0, b"token=s3").await;
    append(logs, 2, 8, b"cret-").await;
    assert_eq!(append(logs, 2, 13, b"token done\nline 2\nline 3").await, Append::Ok { next_offset: 37 });
    assert_eq!(text(logs, 2, 1).await, "token=************ done\nline 2\nline 3");
    let view = logs.view(2, 1).await.unwrap().unwrap();
    assert_eq!(view.total(), 37);
    assert_eq!(view.read_at(6, 4).await.unwrap(), b"****");
    assert_eq!(view.line_at(0).await.unwrap(), 1);
    assert_eq!(view.line_at(25).await.unwrap(), 2);
    assert_eq!(view.line_at(37).await.unwrap(), 3);
    // When each chunk arrived, a mark per chunk that added bytes (masking keeps them); file logs
    // leave the first bytes' to the job's start.
    assert_eq!(after_first(view.times(0..37).await.unwrap()), [(8, 8_000), (13, 13_000)]);
    assert_eq!(view.times(10..12).await.unwrap(), [(8, 8_000)], "the mark before the range dates its start");
    assert_eq!(view.times(9..20).await.unwrap(), [(8, 8_000), (13, 13_000)]);

    // Restarted (or another server): the log is where the storage says.
    let other = restart();
    assert_eq!(append(&other, 1, 6, b"world\n").await, Append::Ok { next_offset: 12 }, "a repeat, known from storage");
    assert_eq!(append(&other, 1, 13, b"!").await, Append::Gap { expected_offset: 12 });
    assert_eq!(append(&other, 1, 12, b"more\n").await, Append::Ok { next_offset: 17 });
    // ... and the first server sees what the other stored, and continues after it.
    assert_eq!(text(logs, 1, 1).await, "hello world\nmore\n");
    assert_eq!(append(logs, 1, 12, b"more\n").await, Append::Ok { next_offset: 17 });
    assert_eq!(append(logs, 1, 17, b"end\n").await, Append::Ok { next_offset: 21 });
    assert_eq!(text(&other, 1, 1).await, "hello world\nmore\nend\n");

    // Sealed: the same bytes, from any server.
    logs.seal(1, 1).await.unwrap();
    logs.seal(1, 1).await.unwrap();
    assert_eq!(text(logs, 1, 1).await, "hello world\nmore\nend\n");
    assert_eq!(text(&other, 1, 1).await, "hello world\nmore\nend\n");
    let view = other.view(1, 1).await.unwrap().unwrap();
    assert_eq!(view.read_at(6, 5).await.unwrap(), b"world");
    assert_eq!(after_first(view.times(0..21).await.unwrap()), [(6, 3_000), (12, 12_000), (17, 17_000)], "sealed, the marks stay");
}

#[tokio::test]
async fn files_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::file(dir.path().join("logs"));
    semantics(&logs, || Logs::file(dir.path().join("logs"))).await;
    assert_eq!(std::fs::read_to_string(dir.path().join("logs/2.1.log")).unwrap(), "token=************ done\nline 2\nline 3");
    // One mark a second at most: the lines' times are read to the second.
    for (offset, at) in [(0, 5_000), (1, 5_100), (2, 5_900), (3, 6_000), (4, 6_999)] {
        logs.append(5, 1, offset, Bytes::from_static(b"x"), Vec::new(), at).await.unwrap();
    }
    let view = logs.view(5, 1).await.unwrap().unwrap();
    assert_eq!(view.times(0..5).await.unwrap(), [(1, 5_100), (3, 6_000)]);
}

/// A store for running logs' chunks (SQLite in a temporary folder).
async fn store(dir: &std::path::Path) -> Backend {
    Backend::Sqlite(SqliteStore::open(&dir.join("piste.db")).await.unwrap())
}

/// The chunk lifecycle, looked at in the store and the blobs: a row per chunk while the log
/// runs, one blob once sealed and no row.
async fn chunks_then_one_blob(blobs: &Blobs, store: &Backend) {
    assert_eq!(store.log_chunks(2, 1, 0).await.unwrap(), [(0, 8), (8, 5), (13, 24)]);
    assert!(blobs.head("logs/2.1.log").await.unwrap().is_none(), "running: no blob yet");
    assert!(store.log_chunks(1, 1, 0).await.unwrap().is_empty(), "sealed: no chunk left");
    assert_eq!(blobs.head("logs/1.1.log").await.unwrap(), Some(21));
    let logs = Logs::chunked(blobs.clone(), store.clone());
    assert_eq!(append(&logs, 1, 21, b"late").await, Append::Sealed { length: 21 }, "nothing is added to a sealed log");
    assert_eq!(logs.open_logs().await.unwrap(), [(2, 1)], "only the log still in chunks");
    logs.seal(2, 1).await.unwrap();
    assert!(store.log_chunks(2, 1, 0).await.unwrap().is_empty());
    assert!(logs.open_logs().await.unwrap().is_empty());
    // Chunks that do not start at 0, and no whole log: refused, never taken for an empty log.
    store.put_log_chunk(9, 1, 5, b"x", Some(1)).await.unwrap();
    let broken = logs.append(9, 1, 0, Bytes::from_static(b"hello"), Vec::new(), 1).await;
    assert!(matches!(broken, Err(LogError::Broken(_))), "{broken:?}");
    assert_eq!(text(&logs, 2, 1).await, "token=************ done\nline 2\nline 3");
}

#[tokio::test]
async fn chunks_in_the_store_blobs_in_files() {
    let (dir, fs) = crate::fs();
    let (blobs, store) = (Blobs::Fs(fs), store(dir.path()).await);
    let logs = Logs::chunked(blobs.clone(), store.clone());
    semantics(&logs, || Logs::chunked(blobs.clone(), store.clone())).await;
    chunks_then_one_blob(&blobs, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_in_the_store_blobs_in_s3() {
    let (_moto, s3) = crate::s3();
    let dir = tempfile::tempdir().unwrap();
    let (blobs, store) = (Blobs::S3(s3), store(dir.path()).await);
    let logs = Logs::chunked(blobs.clone(), store.clone());
    semantics(&logs, || Logs::chunked(blobs.clone(), store.clone())).await;
    chunks_then_one_blob(&blobs, &store).await;
}

/// A log of many chunks seals into one blob (multipart past 8 MiB) with the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_log_seals_into_one_blob_in_s3() {
    let (_moto, s3) = crate::s3();
    let dir = tempfile::tempdir().unwrap();
    let (blobs, store) = (Blobs::S3(s3), store(dir.path()).await);
    let logs = Logs::chunked(blobs.clone(), store.clone());
    let line = "0123456789abcdef".repeat(64 * 1024); // 1 MiB
    let mut offset = 0;
    for _ in 0..12 {
        let r = logs.append(7, 1, offset, Bytes::from(line.clone()), Vec::new(), offset as i64).await.unwrap();
        offset += line.len() as u64;
        assert_eq!(r, Append::Ok { next_offset: offset });
    }
    logs.seal(7, 1).await.unwrap();
    assert_eq!(blobs.head("logs/7.1.log").await.unwrap(), Some(offset));
    assert!(store.log_chunks(7, 1, 0).await.unwrap().is_empty());
    let view = logs.view(7, 1).await.unwrap().unwrap();
    assert_eq!(view.read_at(offset - 16, 100).await.unwrap(), b"0123456789abcdef");
    assert_eq!(view.times(offset - 16..offset).await.unwrap(), [(offset - (1 << 20), (offset - (1 << 20)) as i64)]);
}
