//! Writing collected paths as a deterministic, streamed tar.gz.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use super::fsat::{self, WalkError};
use super::{ARCHIVE_MTIME, ArchiveSummary, ArtifactError, check_symlink_target, relative_components};
use crate::cas::Digest;

/// Archives `files` (relative to `workspace`, as returned by [`collect`](super::collect)) as
/// tar + gzip into `out`, streaming: memory use does not depend on file sizes.
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
    let gz = GzBuilder::new().mtime(0).write(sink, Compression::default());
    let mut tar = tar::Builder::new(gz);
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
                let file = File::from(fd);
                tar.append_data(&mut header, stored, Exact { inner: file, left: size })
            }
            _ => {
                warnings.push(format!("`{shown}`: not a regular file, directory or symlink; skipped"));
                continue;
            }
        };
        appended.map_err(io_err("archive", stored))?;
        entries += 1;
    }

    let gz = tar.into_inner().map_err(ArtifactError::Write)?;
    let sink = gz.finish().map_err(ArtifactError::Write)?;
    Ok(ArchiveSummary { entries, bytes: sink.bytes, sha256: Digest::from_bytes(sink.hasher.finalize().into()), warnings })
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
