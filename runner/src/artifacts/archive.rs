//! Writing collected paths as a deterministic, streamed tar in zstd frames ([`super::codec`]).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use super::codec::FrameWriter;
use super::fsat::{self, WalkError};
use super::{ARCHIVE_MTIME, ArchiveSummary, ArtifactError, check_symlink_target, relative_components};
use crate::cas::Digest;

/// Archives `files` (relative to `workspace`, as returned by [`collect`](super::collect)) as
/// tar + zstd into `out`, streaming: memory use does not depend on file sizes. The bytes are
/// hashed as they are written: the summary's digest is that of `out`'s content.
///
/// Files that are already compressed (by name, or by the byte entropy of their first 64 KiB)
/// go into stored frames: copied, not compressed again (a known extension such as `.gz`, `.zip`, `.jar`, `.png`, `.woff2`,
/// or an entropy probe).
///
/// Every path is opened component by component without following symlinks, so a path that
/// turned into a symlink (or went through one) after collection is skipped with a warning
/// rather than read from outside the workspace; a path that vanished is skipped the same way.
/// A regular file that shrinks while it is read fails the archive (its header already
/// announced the size); one that grows is cut at the announced size.
pub fn write_archive(workspace: &Path, files: &[PathBuf], out: impl Write) -> Result<ArchiveSummary, ArtifactError> {
    let io_err = |op, path: &Path| {
        let path = path.to_owned();
        move |source| ArtifactError::Io { op, path, source }
    };
    let root = fsat::open_root(workspace).map_err(io_err("open workspace", workspace))?;

    // Validate and normalize everything first: a bad path fails before any byte is written.
    let mut paths = Vec::with_capacity(files.len());
    for path in files {
        let comps =
            relative_components(path.as_os_str().as_bytes()).map_err(|reason| ArtifactError::InvalidPath { path: path.clone(), reason })?;
        if comps.is_empty() {
            return Err(ArtifactError::InvalidPath { path: path.clone(), reason: "empty path" });
        }
        let stored: PathBuf = comps.iter().map(|c| OsStr::from_bytes(c)).collect();
        paths.push(stored);
    }
    // Component-wise order: a directory comes right before what is under it.
    paths.sort();
    paths.dedup();

    let sink = HashingWriter { inner: out, hasher: Sha256::new(), bytes: 0 };
    let frames = FrameWriter::new(sink).map_err(ArtifactError::Write)?;
    let mut tar = tar::Builder::new(frames);
    let mut entries = 0u64;
    let mut warnings = Vec::new();

    for stored in &paths {
        let comps = relative_components(stored.as_os_str().as_bytes()).unwrap_or_default();
        let Some((name, dirs)) = comps.split_last() else { continue };
        let shown = stored.display();
        let parent = match fsat::open_dirs(&root, dirs, false) {
            Ok(fd) => fd,
            Err(WalkError::Missing) => {
                warnings.push(format!("`{shown}`: vanished before archiving; skipped"));
                continue;
            }
            Err(WalkError::NotDir(_)) => {
                warnings.push(format!("`{shown}`: now goes through a symlink; skipped"));
                continue;
            }
            Err(WalkError::Io(e)) => return Err(io_err("open", stored)(e)),
        };
        let stat = match rustix::fs::statat(&parent, *name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => {
                warnings.push(format!("`{shown}`: vanished before archiving; skipped"));
                continue;
            }
            Err(e) => return Err(io_err("stat", stored)(e.into())),
        };
        let mut header = Header::new_gnu();
        header.set_mtime(ARCHIVE_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(stat.st_mode & 0o777);
        header.set_size(0);
        let appended = match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                header.set_entry_type(EntryType::Directory);
                tar.append_data(&mut header, stored, io::empty())
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(&parent, *name, Vec::new()).map_err(|e| io_err("read symlink", stored)(e.into()))?;
                let target = target.as_bytes();
                if let Err(reason) = check_symlink_target(comps.len(), target) {
                    warnings.push(format!("`{shown}`: {reason}; skipped"));
                    continue;
                }
                header.set_entry_type(EntryType::Symlink);
                header.set_mode(0o777);
                tar.append_link(&mut header, stored, OsStr::from_bytes(target))
            }
            FileType::RegularFile => {
                // NONBLOCK: should a fifo be swapped in after the stat, opening it must not hang.
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
                let fd = match rustix::fs::openat(&parent, *name, flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(e) if e == Errno::NOENT || fsat::is_not_dir(e) => {
                        warnings.push(format!("`{shown}`: changed before archiving; skipped"));
                        continue;
                    }
                    Err(e) => return Err(io_err("open", stored)(e.into())),
                };
                let st = rustix::fs::fstat(fd.as_fd()).map_err(|e| io_err("stat", stored)(e.into()))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    warnings.push(format!("`{shown}`: changed before archiving; skipped"));
                    continue;
                }
                let size = u64::try_from(st.st_size).unwrap_or(0);
                header.set_entry_type(EntryType::Regular);
                header.set_mode(st.st_mode & 0o777);
                header.set_size(size);
                let mut file = File::from(fd);
                let mut probe = Vec::new();
                let mut store = size >= STORE_MIN && by_name(name);
                if size >= STORE_MIN && !store {
                    let want = size.min(PROBE as u64);
                    (&mut file).take(want).read_to_end(&mut probe).map_err(io_err("read", stored))?;
                    if (probe.len() as u64) < want {
                        return Err(io_err("read", stored)(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shrank while being archived",
                        )));
                    }
                    store = high_entropy(&probe);
                }
                let left = size - probe.len() as u64;
                tar.get_mut().set_stored(store);
                let r = tar.append_data(&mut header, stored, io::Cursor::new(probe).chain(Exact { inner: file, left }));
                tar.get_mut().set_stored(false);
                r
            }
            _ => {
                warnings.push(format!("`{shown}`: not a regular file, directory or symlink; skipped"));
                continue;
            }
        };
        appended.map_err(io_err("archive", stored))?;
        entries += 1;
    }

    let frames = tar.into_inner().map_err(ArtifactError::Write)?;
    let stored_bytes = frames.stored_bytes();
    let sink = frames.finish().map_err(ArtifactError::Write)?;
    Ok(ArchiveSummary { entries, bytes: sink.bytes, sha256: Digest::from_bytes(sink.hasher.finalize().into()), stored_bytes, warnings })
}

/// Files smaller than this are compressed whatever they hold: the frame switch would cost
/// more than it saves.
const STORE_MIN: u64 = 32 * 1024;
/// How much of a file the entropy probe reads.
const PROBE: usize = 64 * 1024;

/// Extensions of formats that are compressed already (lowercase).
const COMPRESSED: &[&str] = &[
    "gz", "tgz", "zst", "zstd", "tzst", "xz", "txz", "lz", "lz4", "lzma", "bz2", "tbz2", "7z", "zip", "jar", "war", "ear", "apk", "aar",
    "whl", "egg", "nupkg", "crate", "gem", "deb", "rpm", "br", "png", "jpg", "jpeg", "gif", "webp", "avif", "heic", "woff", "woff2", "mp3",
    "mp4", "m4a", "m4v", "mkv", "webm", "ogg", "opus", "flac", "mov", "pdf", "docx", "xlsx", "pptx", "odt", "squashfs",
];

/// Whether a file name says its content is compressed already.
fn by_name(name: &[u8]) -> bool {
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else { return false };
    let ext = &name[dot + 1..];
    COMPRESSED.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(ext))
}

/// Whether bytes look incompressible: an order-0 entropy above 7.9 bits per byte, which
/// compressed and encrypted data have and text, code and executables do not.
fn high_entropy(data: &[u8]) -> bool {
    if data.len() < 4096 {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    let n = data.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    bits > 7.9
}

/// Reads exactly `left` bytes: fails if the source ends early, stops if it has more.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being archived"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Passes bytes through while hashing and counting them.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // `min`: a writer claiming more than it was given must not make us panic.
        let n = self.inner.write(buf)?.min(buf.len());
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
