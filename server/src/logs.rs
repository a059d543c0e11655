//! Job logs on disk: `<data_dir>/logs/<job id>.<attempt>.log`, appended by offset. Every
//! attempt has its own log: a retried job starts at offset 0 and the failed attempt's log stays.
//!
//! The file is the truth: its length is the next offset. A chunk that starts before the end
//! repeats what is stored (a runner retrying after a lost answer) and is acknowledged without
//! writing; one that starts after the end is refused with the expected offset. Nothing is held
//! in memory beyond one chunk. Project secrets are masked again here, with a same-length
//! replacement so that offsets stay the runner's; a secret split across two chunks is found by
//! re-reading the stored tail.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    /// Stored (or already stored): the log now ends at this offset.
    Ok { next_offset: u64 },
    /// The chunk starts after the end of the log.
    Gap { expected_offset: u64 },
}

pub fn path(logs_dir: &Path, job_id: i64, attempt: i64) -> PathBuf {
    logs_dir.join(format!("{job_id}.{attempt}.log"))
}

/// Appends `data` at `offset`, masking `secrets`. Blocking: call from `spawn_blocking`, with the
/// job's log lock held.
pub fn append(logs_dir: &Path, job_id: i64, attempt: i64, offset: u64, data: &[u8], secrets: &[String]) -> std::io::Result<Append> {
    std::fs::create_dir_all(logs_dir)?;
    let p = path(logs_dir, job_id, attempt);
    let mut file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(&p)?;
    let len = file.metadata()?.len();
    if offset > len {
        return Ok(Append::Gap { expected_offset: len });
    }
    let end = offset + data.len() as u64;
    if end <= len {
        return Ok(Append::Ok { next_offset: len });
    }
    // Only the part past the stored end is new.
    let fresh = &data[(len - offset) as usize..];
    let longest = secrets.iter().map(String::len).max().unwrap_or(0);
    if longest == 0 {
        file.seek(SeekFrom::Start(len))?;
        file.write_all(fresh)?;
        return Ok(Append::Ok { next_offset: end });
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
    Ok(Append::Ok { next_offset: end })
}

/// Replaces every occurrence of a secret by `*`s of the same length.
fn mask_same_length(buf: &mut [u8], secrets: &[String]) {
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

/// Line number of byte `offset`: one plus the newlines before it (read in blocks).
pub async fn line_at(file: &mut tokio::fs::File, offset: u64) -> std::io::Result<usize> {
    tokio::io::AsyncSeekExt::seek(file, std::io::SeekFrom::Start(0)).await?;
    let mut left = offset;
    let mut lines = 1usize;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = tokio::io::AsyncReadExt::read(file, &mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
        left -= n as u64;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_idempotent_and_gaps_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(append(d, 1, 1, 0, b"hello ", &[]).unwrap(), Append::Ok { next_offset: 6 });
        assert_eq!(append(d, 1, 1, 0, b"hello ", &[]).unwrap(), Append::Ok { next_offset: 6 }, "a repeat is acknowledged");
        assert_eq!(append(d, 1, 1, 10, b"x", &[]).unwrap(), Append::Gap { expected_offset: 6 });
        assert_eq!(
            append(d, 1, 1, 3, b"lo world", &[]).unwrap(),
            Append::Ok { next_offset: 11 },
            "an overlapping retry adds only the new part"
        );
        assert_eq!(std::fs::read_to_string(path(d, 1, 1)).unwrap(), "hello world");
    }

    #[test]
    fn secrets_are_masked_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let secrets = vec!["s3cret-token".to_string()];
        append(d, 2, 1, 0, b"token=s3cr", &secrets).unwrap();
        append(d, 2, 1, 10, b"et-token done\n", &secrets).unwrap();
        let text = std::fs::read_to_string(path(d, 2, 1)).unwrap();
        assert_eq!(text, "token=************ done\n");
        assert_eq!(len(d, 2, 1), 24);
    }
}
