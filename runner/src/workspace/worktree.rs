//! `--worktree`: the source working tree's uncommitted changes, applied on top of a slot
//! checked out at the source's HEAD.
//!
//! Every path `git status` reports (staged or not, untracked but not ignored, deleted) is
//! made to look as it does in the source working tree right now: a regular file is copied
//! with its permission bits, a symlink is recreated as a symlink with the same target (never
//! followed, on either side), a path missing from the source is removed. Directories that
//! are other repositories (nested clones, submodules) are skipped. Paths under `.piste/` and
//! under the workspaces root are never copied: that is piste's own state.
//!
//! Writes never go through a symlink: a parent that is not a real directory in the slot is
//! replaced by one, and a file is created with `O_EXCL` after whatever held its name was
//! removed.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use git2::{Repository, RepositoryOpenFlags, StatusOptions};

use super::clean::remove_tree;
use super::{WorkspaceError, io_err};
use crate::artifacts::relative_components;

/// What [`apply`] changed in the slot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Applied {
    pub copied: usize,
    pub removed: usize,
}

/// Applies the uncommitted changes of the repository at `source` (its working directory) to
/// the workspace `ws`. `skip` lists path prefixes (relative to `source`, ending with `/`)
/// that are never copied.
pub(super) fn apply(source: &Path, ws: &Path, skip: &[Vec<u8>]) -> Result<Applied, WorkspaceError> {
    let git_err = |op| move |e| WorkspaceError::Git { op, path: source.to_owned(), source: e };
    let repo = Repository::open_ext(source, RepositoryOpenFlags::NO_SEARCH, std::iter::empty::<&OsStr>()).map_err(git_err("open"))?;
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(true)
        .renames_head_to_index(false)
        .renames_index_to_workdir(false);
    let statuses = repo.statuses(Some(&mut opts)).map_err(git_err("read the status of"))?;
    let mut applied = Applied::default();
    for entry in statuses.iter() {
        let path = entry.path_bytes();
        if skip.iter().any(|prefix| path.starts_with(prefix) || path == &prefix[..prefix.len().saturating_sub(1)]) {
            continue;
        }
        let rel: PathBuf = match relative_components(path) {
            Ok(parts) if !parts.is_empty() => parts.iter().map(|p| OsStr::from_bytes(p)).collect(),
            _ => {
                tracing::warn!(path = %String::from_utf8_lossy(path), "skipping a status entry that is not a plain relative path");
                continue;
            }
        };
        sync(source, ws, &rel, &mut applied)?;
    }
    Ok(applied)
}

/// Makes `ws/rel` look like `source/rel`.
fn sync(source: &Path, ws: &Path, rel: &Path, applied: &mut Applied) -> Result<(), WorkspaceError> {
    let src = source.join(rel);
    let dest = ws.join(rel);
    let meta = match fs::symlink_metadata(&src) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            if parents_are_dirs(ws, rel) && fs::symlink_metadata(&dest).is_ok() {
                remove_tree(&dest)?;
                applied.removed += 1;
            }
            return Ok(());
        }
        Err(e) => return Err(io_err("inspect", &src)(e)),
    };
    let ft = meta.file_type();
    if ft.is_dir() {
        return Ok(());
    }
    if !ft.is_file() && !ft.is_symlink() {
        tracing::warn!(path = %src.display(), "skipping a path that is neither a file nor a symlink");
        return Ok(());
    }
    make_parents(ws, rel)?;
    remove_tree(&dest)?;
    if ft.is_symlink() {
        let target = fs::read_link(&src).map_err(io_err("read symlink", &src))?;
        std::os::unix::fs::symlink(&target, &dest).map_err(io_err("create symlink", &dest))?;
    } else {
        let nofollow = i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).unwrap_or(0);
        let mut from = File::options().read(true).custom_flags(nofollow).open(&src).map_err(io_err("open", &src))?;
        let mode = meta.permissions().mode() & 0o777;
        let mut to = File::options().write(true).create_new(true).mode(mode).open(&dest).map_err(io_err("create", &dest))?;
        io::copy(&mut from, &mut to).map_err(io_err("copy into", &dest))?;
        // The umask may have narrowed the mode given at creation.
        to.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err("set permissions of", &dest))?;
    }
    applied.copied += 1;
    Ok(())
}

/// Whether every parent of `rel` inside `ws` is a real directory (not a symlink).
fn parents_are_dirs(ws: &Path, rel: &Path) -> bool {
    let mut at = ws.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for c in &parents[..parents.len().saturating_sub(1)] {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// Creates the parents of `rel` inside `ws`, replacing any that is a file or a symlink.
fn make_parents(ws: &Path, rel: &Path) -> Result<(), WorkspaceError> {
    let mut at = ws.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => remove_tree(&at)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(WorkspaceError::Io { op: "inspect", path: at, source }),
        }
        fs::create_dir(&at).map_err(|source| WorkspaceError::Io { op: "create directory", path: at.clone(), source })?;
    }
    Ok(())
}
