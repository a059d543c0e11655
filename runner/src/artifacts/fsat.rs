//! Directory walking relative to an open directory, one component at a time with
//! `O_NOFOLLOW`: a symlink anywhere on the way is refused, never followed, even if it appears
//! while we walk.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Why [`open_dirs`] stopped.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// A component does not exist (and we were not asked to create it).
    Missing,
    /// Component number `.0` is a symlink or not a directory.
    NotDir(usize),
    Io(io::Error),
}

/// Opens a directory the caller trusts (symlinks in `path` itself are followed).
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// Opens `root/c0/c1/...` refusing symlinks on the way; with `create`, missing directories
/// are made with mode 0755 (minus umask).
pub(crate) fn open_dirs(root: impl AsFd, comps: &[&[u8]], create: bool) -> Result<OwnedFd, WalkError> {
    let mut cur = open_dir(root.as_fd(), b".").map_err(|e| WalkError::Io(e.into()))?;
    for (i, comp) in comps.iter().enumerate() {
        cur = match open_dir(&cur, comp) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&cur, *comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(WalkError::Io(e.into())),
                }
                open_dir(&cur, comp).map_err(|e| classify(e, i))?
            }
            Err(e) => return Err(classify(e, i)),
        };
    }
    Ok(cur)
}

/// Opens one directory below `dir`, not following a symlink.
pub(crate) fn open_dir(dir: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())
}

/// Whether an `openat` error means "this is a symlink or not a directory".
pub(crate) fn is_not_dir(e: Errno) -> bool {
    e == Errno::LOOP || e == Errno::NOTDIR
}

fn classify(e: Errno, i: usize) -> WalkError {
    match e {
        Errno::NOENT => WalkError::Missing,
        e if is_not_dir(e) => WalkError::NotDir(i),
        e => WalkError::Io(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn refuses_symlinks_and_files_on_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        fs::create_dir_all(root_path.join("a/b")).unwrap();
        fs::write(root_path.join("file"), b"x").unwrap();
        symlink(dir.path(), root_path.join("up")).unwrap();
        symlink("a", root_path.join("inner")).unwrap();
        let root = open_root(&root_path).unwrap();

        assert!(open_dirs(&root, &[b"a", b"b"], false).is_ok());
        assert!(matches!(open_dirs(&root, &[b"up", b"x"], true), Err(WalkError::NotDir(0))));
        assert!(matches!(open_dirs(&root, &[b"inner"], false), Err(WalkError::NotDir(0))));
        assert!(matches!(open_dirs(&root, &[b"file", b"x"], true), Err(WalkError::NotDir(0))));
        assert!(matches!(open_dirs(&root, &[b"a", b"nope"], false), Err(WalkError::Missing)));
        assert!(open_dirs(&root, &[b"a", b"new", b"deeper"], true).is_ok());
        assert!(root_path.join("a/new/deeper").is_dir());
        assert!(!dir.path().join("x").exists());
    }
}
