//! `git clean` as `GIT_CLEAN_FLAGS` asks for it, run in a slot after checkout.
//!
//! The behaviour follows git's, checked against git 2.47 for the flag sets below:
//!
//! - `-f` is required (git refuses to clean without it); `-ff` also removes untracked
//!   directories that are other git repositories, which a single `-f` keeps.
//! - `-d` removes untracked directories; without it they are kept whole. Untracked files in
//!   tracked directories are always candidates.
//! - Without `-x`/`-X`, ignored files are kept, including ignored files inside an untracked
//!   directory (the rest of that directory goes, the directory stays).
//! - `-x` removes ignored files too; `-X` removes only ignored files (looking inside untracked
//!   directories for them); both at once is an error, as in git.
//! - `-e <pattern>` (`--exclude`) adds a gitignore-style pattern: kept even with `-x`, counted
//!   as ignored otherwise (so removed by `-X`). Negated patterns (`!x`) are not supported.
//! - `-q` and `--quiet` are accepted and change nothing. Anything else (pathspecs, `-n`,
//!   `-i`, unknown options) is refused with an error naming it.
//!
//! The walk never follows a symlink (a symlink is removed as a link) and is iterative, so a
//! deep tree left by a job cannot exhaust the stack.

use std::fs::{self, FileType};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use git2::Repository;
use globset::{GlobBuilder, GlobMatcher};

use super::{WorkspaceError, io_err};

/// Parsed `GIT_CLEAN_FLAGS`.
#[derive(Debug, Clone)]
pub struct CleanFlags {
    force: u8,
    dirs: bool,
    ignored: Ignored,
    excludes: Vec<Exclude>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ignored {
    /// Default: keep ignored files.
    Keep,
    /// `-x`: remove them too.
    Remove,
    /// `-X`: remove only them.
    Only,
}

/// One `-e` pattern, gitignore style.
#[derive(Debug, Clone)]
struct Exclude {
    matcher: GlobMatcher,
    /// The pattern had a `/` before its end: matched against the whole path.
    anchored: bool,
    /// The pattern ended with `/`: matches directories only.
    dir_only: bool,
}

impl CleanFlags {
    /// GitLab's default, `-ffdx`.
    pub fn gitlab_default() -> CleanFlags {
        CleanFlags { force: 2, dirs: true, ignored: Ignored::Remove, excludes: Vec::new() }
    }

    /// Parses the value of `GIT_CLEAN_FLAGS`: unset or empty means `-ffdx`, `none` means no
    /// clean (`Ok(None)`).
    pub fn parse(value: Option<&str>) -> Result<Option<CleanFlags>, WorkspaceError> {
        let text = value.unwrap_or("").trim();
        if text.is_empty() {
            return Ok(Some(CleanFlags::gitlab_default()));
        }
        if text == "none" {
            return Ok(None);
        }
        let fail = |reason: String| WorkspaceError::CleanFlags { flags: text.to_owned(), reason };
        let (mut force, mut dirs, mut x, mut big_x) = (0u8, false, false, false);
        let mut patterns: Vec<String> = Vec::new();
        let mut tokens = text.split_whitespace();
        while let Some(token) = tokens.next() {
            if let Some(long) = token.strip_prefix("--") {
                match long.split_once('=') {
                    Some(("exclude", p)) => patterns.push(p.to_owned()),
                    None if long == "exclude" => {
                        patterns.push(tokens.next().ok_or_else(|| fail("`--exclude` needs a pattern".into()))?.to_owned())
                    }
                    None if long == "force" => force = force.saturating_add(1),
                    None if long == "quiet" => {}
                    _ => return Err(fail(format!("`{token}` is not supported; use -f, -d, -x, -X, -e <pattern> or -q"))),
                }
                continue;
            }
            let Some(cluster) = token.strip_prefix('-').filter(|c| !c.is_empty()) else {
                return Err(fail(format!("`{token}`: paths are not supported in GIT_CLEAN_FLAGS")));
            };
            for (i, c) in cluster.char_indices() {
                match c {
                    'f' => force = force.saturating_add(1),
                    'd' => dirs = true,
                    'x' => x = true,
                    'X' => big_x = true,
                    'q' => {}
                    'e' => {
                        let rest = &cluster[i + 1..];
                        let pattern =
                            if rest.is_empty() { tokens.next().ok_or_else(|| fail("`-e` needs a pattern".into()))? } else { rest };
                        patterns.push(pattern.to_owned());
                        break;
                    }
                    other => return Err(fail(format!("`-{other}` is not supported; use -f, -d, -x, -X, -e <pattern> or -q"))),
                }
            }
        }
        if force == 0 {
            return Err(fail("git clean refuses to run without `-f`".into()));
        }
        let ignored = match (x, big_x) {
            (true, true) => return Err(fail("`-x` and `-X` cannot be used together".into())),
            (true, false) => Ignored::Remove,
            (false, true) => Ignored::Only,
            (false, false) => Ignored::Keep,
        };
        let excludes = patterns.iter().map(|p| Exclude::new(p).map_err(&fail)).collect::<Result<_, _>>()?;
        Ok(Some(CleanFlags { force, dirs, ignored, excludes }))
    }
}

impl Exclude {
    fn new(pattern: &str) -> Result<Exclude, String> {
        if pattern.starts_with('!') {
            return Err(format!("negated pattern `{pattern}` is not supported"));
        }
        let dir_only = pattern.ends_with('/');
        let body = pattern.trim_end_matches('/');
        let anchored = body.contains('/');
        let body = body.trim_start_matches('/');
        if body.is_empty() {
            return Err(format!("empty exclude pattern `{pattern}`"));
        }
        let glob = GlobBuilder::new(body).literal_separator(true).backslash_escape(true).build();
        let matcher = glob.map_err(|e| format!("exclude pattern `{pattern}`: {e}"))?.compile_matcher();
        Ok(Exclude { matcher, anchored, dir_only })
    }

    fn matches_one(&self, rel: &Path, is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        if self.anchored { self.matcher.is_match(rel) } else { rel.file_name().is_some_and(|n| self.matcher.is_match(n)) }
    }
}

/// Whether `rel` or one of its parent directories matches an `-e` pattern.
fn excluded(excludes: &[Exclude], rel: &Path, is_dir: bool) -> bool {
    if excludes.is_empty() {
        return false;
    }
    if excludes.iter().any(|e| e.matches_one(rel, is_dir)) {
        return true;
    }
    rel.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()).any(|a| excludes.iter().any(|e| e.matches_one(a, true)))
}

/// Tracked paths of the slot's index, sorted bytewise as git sorts them.
struct Tracked(Vec<Vec<u8>>);

impl Tracked {
    fn load(repo: &Repository, ws: &Path) -> Result<Tracked, WorkspaceError> {
        let index = repo.index().map_err(|source| WorkspaceError::Git { op: "read the index of", path: ws.to_owned(), source })?;
        let mut paths: Vec<Vec<u8>> = index.iter().map(|e| e.path).collect();
        paths.sort_unstable();
        Ok(Tracked(paths))
    }

    fn contains(&self, rel: &[u8]) -> bool {
        self.0.binary_search_by(|p| p.as_slice().cmp(rel)).is_ok()
    }

    /// Whether some tracked path lies under the directory `rel`.
    fn has_under(&self, rel: &[u8]) -> bool {
        let mut prefix = rel.to_vec();
        prefix.push(b'/');
        let i = self.0.partition_point(|p| p.as_slice() < prefix.as_slice());
        self.0.get(i).is_some_and(|p| p.starts_with(&prefix))
    }
}

enum Work {
    /// A directory holding tracked files: look at each entry.
    Tracked(PathBuf),
    /// An untracked directory being cleaned entry by entry; with `true`, removed afterwards
    /// if that emptied it (`-X` removes a directory once all it held was ignored).
    Untracked(PathBuf, bool),
    /// Remove this directory if cleaning left it empty.
    RmdirIfEmpty(PathBuf),
}

/// Cleans the workspace `ws` of the slot repository `repo` (checked out just before).
pub(super) fn clean(repo: &Repository, ws: &Path, flags: &CleanFlags) -> Result<(), WorkspaceError> {
    let tracked = Tracked::load(repo, ws)?;
    let mut c = Cleaner { repo, ws, flags, tracked };
    let mut stack = vec![Work::Tracked(PathBuf::new())];
    while let Some(work) = stack.pop() {
        match work {
            Work::Tracked(dir) => {
                for (rel, ft) in c.list(&dir)? {
                    if dir.as_os_str().is_empty() && rel.as_os_str() == ".git" {
                        continue;
                    }
                    let bytes = rel.as_os_str().as_bytes();
                    if c.tracked.contains(bytes) {
                        continue;
                    }
                    if ft.is_dir() && c.tracked.has_under(bytes) {
                        stack.push(Work::Tracked(rel));
                    } else {
                        c.untracked(rel, ft, &mut stack)?;
                    }
                }
            }
            Work::Untracked(dir, rmdir_if_emptied) => {
                let entries = c.list(&dir)?;
                if rmdir_if_emptied && !entries.is_empty() {
                    stack.push(Work::RmdirIfEmpty(dir));
                }
                for (rel, ft) in entries {
                    c.untracked(rel, ft, &mut stack)?;
                }
            }
            Work::RmdirIfEmpty(dir) => {
                let full = ws.join(&dir);
                match fs::remove_dir(&full) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {}
                    Err(source) => return Err(WorkspaceError::Io { op: "remove directory", path: full, source }),
                }
            }
        }
    }
    Ok(())
}

struct Cleaner<'a> {
    repo: &'a Repository,
    ws: &'a Path,
    flags: &'a CleanFlags,
    tracked: Tracked,
}

impl Cleaner<'_> {
    fn list(&self, dir: &Path) -> Result<Vec<(PathBuf, FileType)>, WorkspaceError> {
        let full = self.ws.join(dir);
        let io_err = |source| WorkspaceError::Io { op: "list", path: full.clone(), source };
        let mut out = Vec::new();
        for entry in fs::read_dir(&full).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            out.push((dir.join(entry.file_name()), entry.file_type().map_err(io_err)?));
        }
        Ok(out)
    }

    fn ignored(&self, rel: &Path) -> Result<bool, WorkspaceError> {
        self.repo.is_path_ignored(rel).map_err(|source| WorkspaceError::Git {
            op: "read ignore rules in",
            path: self.ws.to_owned(),
            source,
        })
    }

    /// Decides what happens to an untracked (or ignored) entry.
    fn untracked(&mut self, rel: PathBuf, ft: FileType, stack: &mut Vec<Work>) -> Result<(), WorkspaceError> {
        let is_dir = ft.is_dir();
        let excluded = excluded(&self.flags.excludes, &rel, is_dir);
        let ignored = self.ignored(&rel)?;
        let removable = match self.flags.ignored {
            Ignored::Remove => !excluded,
            Ignored::Only => ignored || excluded,
            Ignored::Keep => !(ignored || excluded),
        };
        let full = self.ws.join(&rel);
        if !is_dir {
            if removable {
                remove_file(&full)?;
            }
            return Ok(());
        }
        if fs::symlink_metadata(full.join(".git")).is_ok() {
            // Another repository: a unit, removed only with `-ff` (and `-d`).
            if removable && self.flags.dirs && self.flags.force >= 2 {
                remove_tree(&full)?;
            }
            return Ok(());
        }
        if removable {
            if !self.flags.dirs {
                return Ok(());
            }
            let may_keep_some = match self.flags.ignored {
                Ignored::Remove => !self.flags.excludes.is_empty(),
                Ignored::Only => false,
                Ignored::Keep => true,
            };
            if may_keep_some {
                stack.push(Work::RmdirIfEmpty(rel.clone()));
                stack.push(Work::Untracked(rel, false));
            } else {
                remove_tree(&full)?;
            }
        } else if self.flags.ignored == Ignored::Only && !ignored && !excluded {
            // `-X` looks for ignored files inside untracked directories.
            stack.push(Work::Untracked(rel, self.flags.dirs));
        }
        Ok(())
    }
}

fn remove_file(path: &Path) -> Result<(), WorkspaceError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(WorkspaceError::Io { op: "remove", path: path.to_owned(), source }),
    }
}

/// Removes `path` and everything under it without following symlinks, iteratively. Read-only
/// directories (Go's module cache makes them) are made writable first.
pub(super) fn remove_tree(path: &Path) -> Result<(), WorkspaceError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    if !meta.is_dir() {
        return remove_file(path);
    }
    let mut stack: Vec<(PathBuf, bool)> = vec![(path.to_owned(), false)];
    while let Some((dir, emptied)) = stack.pop() {
        if emptied {
            fs::remove_dir(&dir).map_err(io_err("remove directory", &dir))?;
            continue;
        }
        let meta = fs::symlink_metadata(&dir).map_err(io_err("inspect", &dir))?;
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o700)).map_err(io_err("make writable", &dir))?;
        }
        stack.push((dir.clone(), true));
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let child = entry.path();
            if entry.file_type().map_err(io_err("inspect", &child))?.is_dir() {
                stack.push((child, false));
            } else {
                remove_file(&child)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> CleanFlags {
        CleanFlags::parse(Some(s)).unwrap().unwrap()
    }

    fn error(s: &str) -> String {
        CleanFlags::parse(Some(s)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_none() {
        for unset in [None, Some(""), Some("  ")] {
            let f = CleanFlags::parse(unset).unwrap().unwrap();
            assert_eq!((f.force, f.dirs, f.ignored), (2, true, Ignored::Remove));
        }
        assert!(CleanFlags::parse(Some("none")).unwrap().is_none());
    }

    #[test]
    fn flag_sets() {
        let f = parse("-ffd");
        assert_eq!((f.force, f.dirs, f.ignored), (2, true, Ignored::Keep));
        let f = parse("-ffdX");
        assert_eq!(f.ignored, Ignored::Only);
        let f = parse("-f -d -x -q");
        assert_eq!((f.force, f.dirs, f.ignored), (1, true, Ignored::Remove));
        let f = parse("--force --force --quiet");
        assert_eq!((f.force, f.dirs), (2, false));
        let f = parse("-ffdx -e cache/ --exclude=*.keep --exclude vendor -evendor2");
        assert_eq!(f.excludes.len(), 4);
        let f = parse("-ffdxe keep");
        assert_eq!(f.excludes.len(), 1);
    }

    #[test]
    fn refused_flags() {
        assert!(error("-dx").contains("without `-f`"), "{}", error("-dx"));
        assert!(error("-fxX").contains("cannot be used together"));
        assert!(error("-fdn").contains("`-n` is not supported"));
        assert!(error("-ffdx --dry-run").contains("`--dry-run` is not supported"));
        assert!(error("-ffdx src/").contains("paths are not supported"));
        assert!(error("-ffdx -").contains("paths are not supported"));
        assert!(error("-ffdx -e").contains("`-e` needs a pattern"));
        assert!(error("-ffdx --exclude").contains("needs a pattern"));
        assert!(error("-ffdx -e !keep").contains("negated pattern"));
        assert!(error("-ffdx -e /").contains("empty exclude pattern"));
        assert!(error("-ffdx -e a[").contains("exclude pattern `a[`"));
        assert!(error("-ffdx -e a[").contains("GIT_CLEAN_FLAGS"));
    }

    #[test]
    fn exclude_patterns_are_gitignore_like() {
        let ex = |p: &str| vec![Exclude::new(p).unwrap()];
        assert!(excluded(&ex("*.keep"), Path::new("a/b/x.keep"), false));
        assert!(excluded(&ex("cache/"), Path::new("cache"), true));
        assert!(!excluded(&ex("cache/"), Path::new("cache"), false));
        assert!(excluded(&ex("cache/"), Path::new("cache/deep/file"), false));
        assert!(excluded(&ex("/top"), Path::new("top"), false));
        assert!(!excluded(&ex("/top"), Path::new("sub/top"), false));
        assert!(excluded(&ex("u/x.txt"), Path::new("u/x.txt"), false));
        assert!(!excluded(&ex("u/x.txt"), Path::new("u"), true));
        assert!(excluded(&ex("build"), Path::new("build/out.o"), false));
        assert!(!excluded(&[], Path::new("x"), false));
    }

    #[test]
    fn tracked_lookup() {
        let t = Tracked(vec![b"a".to_vec(), b"b/c".to_vec(), b"b-d".to_vec(), b"bb/e".to_vec()]);
        let mut sorted = t.0.clone();
        sorted.sort();
        let t = Tracked(sorted);
        assert!(t.contains(b"a") && t.contains(b"b/c") && !t.contains(b"b"));
        assert!(t.has_under(b"b") && t.has_under(b"bb") && !t.has_under(b"a") && !t.has_under(b"b-"));
    }
}
