//! Job artifacts: choosing files the GitLab way, archiving them as a deterministic `.tar.zst`
//! (already-compressed files stored, not compressed again: see [`codec`]), and extracting
//! untrusted archives — zstd, or gzip from before — without ever writing outside the
//! destination.
//!
//! These are blocking functions; async callers run them under `spawn_blocking`. They are
//! Unix-only: safety rests on `openat` with `O_NOFOLLOW`, one path component at a time.
//!
//! # Decisions
//!
//! - **Symlinks** are archived as symlink entries, never dereferenced, and a directory symlink
//!   is never traversed (as gitlab-runner does). A symlink whose target is absolute, climbs
//!   above the workspace, or has `..` after a name (`a/../..`, which can escape once `a` is
//!   itself a symlink) is skipped with a warning at collection and refused at extraction, so
//!   whatever [`write_archive`] produces, [`extract`] accepts.
//! - **Hard links** in the workspace are archived as independent regular files (each name gets
//!   its own copy of the bytes): every name of a file is equally real, cargo hard-links its
//!   outputs (`target/release/app`), and the content is read through a path checked to be
//!   inside the workspace. Archives therefore never contain hard-link entries, and
//!   [`extract`] refuses every hard-link entry.
//! - **Devices, fifos, sockets** are skipped with a warning at collection and refused at
//!   extraction.
//! - **Determinism:** entries sorted by path, owner 0:0 with no names, a fixed mtime
//!   ([`ARCHIVE_MTIME`]), permission bits as on disk (setuid, setgid and sticky dropped), zstd
//!   frames whose output does not depend on the number of compressor threads. The same tree gives the same bytes and digest. On
//!   extraction, mtimes are not restored: files get the time they were written, which keeps
//!   them newer than the fresh checkout they land in.

mod archive;
pub mod codec;
mod collect;
mod extract;
mod fsat;
mod read;

use std::io;
use std::path::PathBuf;

pub use archive::write_archive;
pub use collect::collect;
pub use extract::extract;
pub use read::{FileInArchive, read_file};

use crate::cas::Digest;

/// The mtime stored for every entry: 2000-01-01T00:00:00Z. Fixed so that archives are
/// reproducible; not zero, which tar tools report as an "implausibly old" time stamp.
pub const ARCHIVE_MTIME: u64 = 946_684_800;

/// What a job's `artifacts:` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactSpec {
    /// `artifacts:paths`: relative to the project directory; `*`, `?`, `[...]`, `{a,b}` and
    /// `**` globs; a matched directory brings everything under it.
    pub paths: Vec<String>,
    /// `artifacts:exclude`: globs matched against each collected path. Like GitLab's, not
    /// recursive: `build/tmp` drops that directory's own entry only; `build/tmp/**` drops it
    /// and everything under it.
    pub exclude: Vec<String>,
    /// `artifacts:untracked`: relative paths the caller computed as untracked, already
    /// filtered. `exclude` applies to them too.
    pub untracked: Vec<PathBuf>,
}

/// The result of [`collect`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Relative paths (directories, regular files, symlinks), sorted and deduplicated; a
    /// directory sorts before everything under it.
    pub files: Vec<PathBuf>,
    /// GitLab-style warnings for the job log, e.g. "`x`: no matching files".
    pub warnings: Vec<String>,
}

/// The result of [`write_archive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Tar entries written (one per path archived).
    pub entries: u64,
    /// Bytes of the archive written to `out`.
    pub bytes: u64,
    /// The sha256 of the archive, as the server will verify it (hashed while writing).
    pub sha256: Digest,
    /// Bytes (tar headers and file content) written in stored frames, not compressed again.
    pub stored_bytes: u64,
    /// Paths that changed or vanished between [`collect`] and archiving, and were skipped.
    pub warnings: Vec<String>,
}

/// Bounds on what [`extract`] accepts; exceeding one stops extraction with
/// [`ArtifactError::Limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries (files, directories, symlinks, PAX global headers); default 500 000.
    pub max_entries: u64,
    /// Sum of the sizes of regular files; default 8 GiB.
    pub max_total_bytes: u64,
    /// Size of one regular file; default 4 GiB.
    pub max_entry_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_entries: 500_000, max_total_bytes: 8 << 30, max_entry_bytes: 4 << 30 }
    }
}

/// The result of [`extract`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractSummary {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Errors from collecting, archiving and extracting artifacts.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A filesystem operation failed.
    #[error("cannot {op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the archive stream failed.
    #[error("cannot write the archive")]
    Write(#[source] io::Error),
    /// [`write_archive`] was given a path that is not a plain relative path.
    #[error("invalid artifact path `{}`: {reason}", path.display())]
    InvalidPath { path: PathBuf, reason: &'static str },
    /// An archive entry would escape the destination or is of a refused kind.
    #[error("refusing archive entry `{entry}`: {reason}")]
    Unsafe { entry: String, reason: String },
    /// The archive exceeds a [`Limits`] bound.
    #[error("archive exceeds the limit of {limit} {what} at entry `{entry}`")]
    Limit { what: &'static str, limit: u64, entry: String },
    /// The archive is not a valid tar.zst (or tar.gz) stream.
    #[error("corrupt archive after entry `{after}`")]
    Corrupt {
        after: String,
        #[source]
        source: io::Error,
    },
}

/// Splits a relative path into its components, dropping empty and `.` ones; `Err` for
/// absolute paths, `..` and NUL bytes.
pub(crate) fn relative_components(path: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if path.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("`..` path component"),
            c if c.contains(&0) => return Err("NUL byte in path"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Whether a symlink at a path of `depth` components may point at `target` without leaving
/// the tree it is in. Leading `..` may climb at most to the root; `..` after a name is
/// refused because the name may itself be a symlink.
pub(crate) fn check_symlink_target(depth: usize, target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("symlink with an empty target");
    }
    if target[0] == b'/' {
        return Err("symlink to an absolute path");
    }
    if target.contains(&0) {
        return Err("NUL byte in symlink target");
    }
    let mut ups = 0usize;
    let mut named = false;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if named => return Err("symlink target has `..` after a name"),
            b".." => ups += 1,
            _ => named = true,
        }
    }
    if ups >= depth {
        return Err("symlink pointing outside the tree");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_of_relative_paths() {
        assert_eq!(relative_components(b"a/./b//c/").unwrap(), [&b"a"[..], b"b", b"c"]);
        assert!(relative_components(b"./").unwrap().is_empty());
        assert_eq!(relative_components(b"/etc/passwd"), Err("absolute path"));
        assert_eq!(relative_components(b"a/../b"), Err("`..` path component"));
        assert_eq!(relative_components(b".."), Err("`..` path component"));
        assert_eq!(relative_components(b"a\0b"), Err("NUL byte in path"));
    }

    #[test]
    fn symlink_targets() {
        // link at depth 1 (`link`), its parent is the root
        assert!(check_symlink_target(1, b"file").is_ok());
        assert!(check_symlink_target(1, b"./dir/file").is_ok());
        assert!(check_symlink_target(1, b"..").is_err());
        assert!(check_symlink_target(1, b"../x").is_err());
        // link at `a/b/link`: two levels up is the root, three is outside
        assert!(check_symlink_target(3, b"../../x").is_ok());
        assert!(check_symlink_target(3, b"../../../x").is_err());
        assert!(check_symlink_target(3, b"/etc").is_err());
        assert!(check_symlink_target(3, b"").is_err());
        assert!(check_symlink_target(3, b"d/../../..").is_err());
        assert!(check_symlink_target(5, b"x/..").is_err());
    }

    #[test]
    fn default_limits_are_finite() {
        let l = Limits::default();
        assert!(l.max_entry_bytes <= l.max_total_bytes);
        assert!(l.max_entries > 0 && l.max_total_bytes < u64::MAX);
    }
}
