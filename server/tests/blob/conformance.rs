//! One suite, every backend: what `BlobStore` promises.

use bytes::Bytes;
use futures_util::StreamExt;
use server::blob::{BlobError, BlobStore, BlobWriter, Meta};
use sha2::{Digest, Sha256};

async fn read<B: BlobStore>(b: &B, key: &str, range: Option<std::ops::Range<u64>>) -> Option<(u64, Vec<u8>)> {
    let blob = b.get(key, range).await.unwrap()?;
    let mut out = Vec::new();
    let mut s = blob.stream;
    while let Some(piece) = s.next().await {
        out.extend_from_slice(&piece.unwrap());
    }
    Some((blob.size, out))
}

fn keys(list: Vec<Meta>) -> Vec<String> {
    list.into_iter().map(|m| m.key).collect()
}

async fn put_get_range_list_delete<B: BlobStore>(b: &B) {
    b.put("a/one", Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(read(b, "a/one", None).await, Some((5, b"hello".to_vec())));
    assert_eq!(b.head("a/one").await.unwrap(), Some(5));
    assert_eq!(read(b, "a/missing", None).await, None);
    assert_eq!(b.head("a/missing").await.unwrap(), None);
    // Ranges: inside, clipped at the end, past the end, empty.
    assert_eq!(read(b, "a/one", Some(1..3)).await, Some((5, b"el".to_vec())));
    assert_eq!(read(b, "a/one", Some(2..100)).await, Some((5, b"llo".to_vec())));
    assert_eq!(read(b, "a/one", Some(5..9)).await, Some((5, Vec::new())));
    assert_eq!(read(b, "a/one", Some(3..3)).await, Some((5, Vec::new())));
    // Listing: a folder, in key order, optionally after a key.
    b.put("a/two", Bytes::from_static(b"2")).await.unwrap();
    b.put("a/sub/three", Bytes::from_static(b"333")).await.unwrap();
    b.put("ab/not-in-a", Bytes::from_static(b"x")).await.unwrap();
    let all = b.list("a", None).await.unwrap();
    assert_eq!(keys(all.clone()), ["a/one", "a/sub/three", "a/two"]);
    assert_eq!(all[1].size, 3);
    assert_eq!(keys(b.list("a", Some("a/one")).await.unwrap()), ["a/sub/three", "a/two"]);
    assert!(b.list("nothing-here", None).await.unwrap().is_empty());
    // Replace, delete (twice: no error).
    b.put("a/two", Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(read(b, "a/two", None).await, Some((3, b"two".to_vec())));
    b.delete("a/one").await.unwrap();
    b.delete("a/one").await.unwrap();
    assert_eq!(b.head("a/one").await.unwrap(), None);
    // A writer's blob appears on commit only; an aborted or dropped one never does.
    let mut w = b.create("w/aborted").await.unwrap();
    w.write(Bytes::from_static(b"partial")).await.unwrap();
    w.abort().await.unwrap();
    assert_eq!(b.head("w/aborted").await.unwrap(), None);
    let mut w = b.create("w/dropped").await.unwrap();
    w.write(Bytes::from_static(b"partial")).await.unwrap();
    drop(w);
    assert_eq!(b.head("w/dropped").await.unwrap(), None);
    let mut w = b.create("w/committed").await.unwrap();
    w.write(Bytes::from_static(b"whole")).await.unwrap();
    assert_eq!(b.head("w/committed").await.unwrap(), None, "not visible before commit");
    w.commit().await.unwrap();
    assert_eq!(b.head("w/committed").await.unwrap(), Some(5));
    // Keys that could escape are refused.
    for bad in ["../escape", "/abs", "a/../b", "a//b"] {
        assert!(matches!(b.get(bad, None).await, Err(BlobError::InvalidKey(_))), "{bad}");
        assert!(matches!(b.create(bad).await, Err(BlobError::InvalidKey(_))), "{bad}");
    }
}

/// Deterministic, incompressible-looking bytes.
fn piece(i: u64, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// 40 MiB written in 1 MiB pieces (multipart in S3) and read back as a stream: never one
/// buffer of the whole blob, and the digest of what streams out is the digest of what went in.
async fn large_blobs_stream_both_ways<B: BlobStore>(b: &B) {
    const PIECES: u64 = 40;
    let mut w = b.create("big/blob").await.unwrap();
    let mut sent = Sha256::new();
    for i in 0..PIECES {
        let p = piece(i, 1 << 20);
        sent.update(&p);
        w.write(p).await.unwrap();
    }
    w.commit().await.unwrap();
    let blob = b.get("big/blob", None).await.unwrap().unwrap();
    assert_eq!(blob.size, PIECES << 20);
    let mut got = Sha256::new();
    let (mut pieces, mut largest, mut total) = (0, 0, 0);
    let mut s = blob.stream;
    while let Some(p) = s.next().await {
        let p = p.unwrap();
        pieces += 1;
        largest = largest.max(p.len());
        total += p.len() as u64;
        got.update(&p);
    }
    assert_eq!(total, PIECES << 20);
    assert_eq!(got.finalize(), sent.finalize());
    assert!(pieces > 1 && largest <= 16 << 20, "streamed in {pieces} pieces, the largest {largest} bytes");
    // A range across the 8 MiB part boundary.
    let r = read(b, "big/blob", Some((8 << 20) - 3..(8 << 20) + 5)).await.unwrap().1;
    let whole: Vec<u8> = [piece(7, 1 << 20), piece(8, 1 << 20)].concat();
    assert_eq!(r, whole[(1 << 20) - 3..(1 << 20) + 5]);
}

/// Writers at once: distinct keys, and several writing the same content-addressed key.
async fn concurrent_writers<B: BlobStore + Clone + 'static>(b: &B) {
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let key = if i < 4 { format!("many/{i}") } else { "many/same".to_string() };
            let seed = if i < 4 { i } else { 99 };
            let mut w = b.create(&key).await.unwrap();
            for j in 0..3 {
                w.write(piece(seed * 10 + j, 1 << 20)).await.unwrap();
                tokio::task::yield_now().await;
            }
            w.commit().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in [0u64, 1, 2, 3, 99] {
        let key = if i < 4 { format!("many/{i}") } else { "many/same".to_string() };
        let want: Vec<u8> = (0..3).flat_map(|j| piece(i * 10 + j, 1 << 20)).collect();
        assert_eq!(read(b, &key, None).await.unwrap().1, want, "{key}");
    }
    assert_eq!(b.list("many", None).await.unwrap().len(), 5);
}

#[tokio::test]
async fn files() {
    let (_dir, b) = crate::fs();
    put_get_range_list_delete(&b).await;
    large_blobs_stream_both_ways(&b).await;
    concurrent_writers(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3() {
    let (_moto, b) = crate::s3();
    put_get_range_list_delete(&b).await;
    large_blobs_stream_both_ways(&b).await;
    concurrent_writers(&b).await;
}

#[tokio::test]
async fn files_leave_no_temporary_file_behind() {
    let (dir, b) = crate::fs();
    let mut w = b.create("x/aborted").await.unwrap();
    w.write(Bytes::from_static(b"partial")).await.unwrap();
    w.abort().await.unwrap();
    b.put("x/kept", Bytes::from_static(b"kept")).await.unwrap();
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("data/tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    assert_eq!(std::fs::read(dir.path().join("data/x/kept")).unwrap(), b"kept", "a key is a path under the root");
}

/// A multipart upload cut off mid-way (the writer dropped: the client went away) is aborted,
/// and an aborted one leaves no parts: nothing stays billed in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_uploads_cut_off_leave_no_parts() {
    let (moto, b) = crate::s3();
    let uploads = || moto.request("GET", "/piste-tests?uploads", b"").expect("moto answers").1.matches("<Upload>").count();
    for drop_it in [false, true] {
        let mut w = b.create("cut/off").await.unwrap();
        for i in 0..3 {
            w.write(piece(i, 4 << 20)).await.unwrap();
        }
        assert_eq!(uploads(), 1, "past one part, the upload is multipart");
        if drop_it {
            drop(w);
        } else {
            w.abort().await.unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while uploads() > 0 {
            assert!(std::time::Instant::now() < deadline, "the upload was not aborted (dropped: {drop_it})");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(b.head("cut/off").await.unwrap(), None);
    }
}
