//! Per-job checkouts that cost about a millisecond: one reusable workspace per concurrency
//! slot, GitLab Runner's `fetch` strategy adapted to a repository on the same disk.
//!
//! ```text
//! <root>/<slot>/<project>/          the job's project directory (CI_PROJECT_DIR)
//! <root>/<slot>/<project>/.git/     a repository with no objects of its own:
//!     objects/info/alternates       → the source repository's object directory
//! ```
//!
//! Creating a slot is `git init` plus one alternates line, so no object is ever copied; every
//! later job in the slot is `git reset --hard <sha>` (which rewrites only what differs from
//! the previous job's commit and repairs what the job changed; skipped, with nothing written,
//! when a status shows the slot already clean at that commit) followed by `git clean` with
//! `GIT_CLEAN_FLAGS`. git2 does all of it in process.
//!
//! # GitLab semantics
//!
//! - `GIT_STRATEGY`: `fetch` (default) reuses the slot and falls back to a fresh one when it
//!   is missing or unusable; `clone` recreates the slot; `none` creates the project
//!   directory if missing and touches nothing else (files of earlier jobs stay, as on a
//!   GitLab runner); `empty` (GitLab Runner 17.3+) leaves an empty project directory.
//! - `GIT_CHECKOUT: false` ([`CheckoutSpec::checkout`]): the slot repository is made ready
//!   but neither checkout nor clean runs, as gitlab-runner skips both.
//! - `GIT_CLEAN_FLAGS`: see [`CleanFlags`]; unset or empty is `-ffdx`, `none` disables it.
//!   Clean runs after checkout, with the checked-out commit's ignore rules.
//! - `GIT_DEPTH` ([`CheckoutSpec::depth`]) makes the slot shallow, as `git fetch --depth`
//!   would: `.git/shallow` lists the commits `depth` steps from the job's commit, so `git log`
//!   shows `depth` commits and `git rev-parse --is-shallow-repository` says `true`. Nothing is
//!   copied or removed (through alternates every object stays readable), so depth costs a walk
//!   of `depth` commits; unset or `0` (full history) removes the file.
//! - `GIT_SUBMODULE_STRATEGY` (`normal`, `recursive`) and the other `GIT_SUBMODULE_*`:
//!   [`submodules`], run by the caller after [`Workspaces::prepare`]; with the default `none`
//!   submodule directories stay empty. Git LFS files are checked out as their pointer files.
//! - The slot repository has no remote, no branches and no tags: HEAD is detached at the
//!   commit. Jobs that run `git describe` or `git log` still work (all objects are visible);
//!   jobs that expect `origin` do not.
//!
//! # Invariants
//!
//! - Nothing is written outside `<root>/<slot>/`; the slot number and a sanitised project
//!   name are the only path components added to `root`.
//! - The source repository is only read (its objects, HEAD and status), never written.
//! - Slots are independent repositories: different slots can be prepared from different
//!   threads at the same time. One slot serves one job at a time; handing slots out is the
//!   caller's job (two `piste run` processes sharing a root would share slots).
//! - Removal never follows a symlink.

mod clean;
pub mod submodules;
mod worktree;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{ErrorCode, Oid, Repository, RepositoryInitOptions, RepositoryOpenFlags, StatusOptions};

pub use clean::CleanFlags;
pub use submodules::{SubmoduleSource, SubmoduleSpec, SubmoduleStrategy};

/// `GIT_STRATEGY`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GitStrategy {
    /// Reuse the slot's repository: checkout and clean.
    #[default]
    Fetch,
    /// Recreate the slot's repository from scratch.
    Clone,
    /// No git operation at all; the directory keeps whatever it holds.
    None,
    /// No git operation, and the directory is emptied.
    Empty,
}

impl GitStrategy {
    /// Parses a `GIT_STRATEGY` value; empty means the default, `fetch`.
    pub fn parse(value: &str) -> Result<GitStrategy, WorkspaceError> {
        match value.trim() {
            "" | "fetch" => Ok(GitStrategy::Fetch),
            "clone" => Ok(GitStrategy::Clone),
            "none" => Ok(GitStrategy::None),
            "empty" => Ok(GitStrategy::Empty),
            other => Err(WorkspaceError::UnknownStrategy { value: other.chars().take(64).collect() }),
        }
    }
}

/// What a job's checkout should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSpec {
    /// The commit: a full sha (the usual case, no lookup in the source), or anything
    /// `git rev-parse` understands in the source repository (`HEAD`, a branch, a short sha).
    /// Empty means the source's HEAD.
    pub sha: String,
    /// `GIT_STRATEGY`.
    pub strategy: GitStrategy,
    /// `GIT_DEPTH`: the slot's history is cut `depth` commits from `sha` (see the module
    /// documentation); `None` or 0 for the full history.
    pub depth: Option<u32>,
    /// `GIT_CLEAN_FLAGS`: `None` or empty for `-ffdx`, `"none"` for no clean.
    pub clean_flags: Option<String>,
    /// `GIT_CHECKOUT`: `false` skips checkout and clean.
    pub checkout: bool,
    /// Apply the source working tree's uncommitted changes after checking out its HEAD.
    /// `sha` must then be empty or name HEAD's commit.
    pub worktree: bool,
}

impl CheckoutSpec {
    /// GitLab's defaults for commit `sha`: fetch, checkout, `-ffdx`.
    pub fn new(sha: impl Into<String>) -> CheckoutSpec {
        CheckoutSpec { sha: sha.into(), strategy: GitStrategy::Fetch, depth: None, clean_flags: None, checkout: true, worktree: false }
    }
}

/// Errors from preparing a workspace.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The source directory is not in a git repository.
    #[error(
        "`{}` is not in a git repository; jobs need a commit to check out (set `GIT_STRATEGY: none` to run them without one)",
        path.display()
    )]
    NotARepository {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    /// The source repository has no working tree.
    #[error("`{}` is a bare repository; run piste from a clone with a working tree", path.display())]
    BareRepository { path: PathBuf },
    /// The source repository has no commit yet.
    #[error("the repository at `{}` has no commit yet; commit once (`git commit`) so that jobs have something to check out", path.display())]
    NoCommit { path: PathBuf },
    /// The workspaces root cannot hold workspaces for this repository.
    #[error("cannot keep workspaces in `{}`: {reason}", root.display())]
    InvalidRoot { root: PathBuf, reason: &'static str },
    /// `GIT_STRATEGY` has an unknown value.
    #[error("unknown GIT_STRATEGY `{value}`; expected fetch, clone, none or empty")]
    UnknownStrategy { value: String },
    /// `GIT_CLEAN_FLAGS` cannot be honoured.
    #[error("GIT_CLEAN_FLAGS `{flags}`: {reason}")]
    CleanFlags { flags: String, reason: String },
    /// The revision does not name a commit of the source repository.
    #[error("`{rev}` does not name a commit in `{}`", repo.display())]
    UnknownRevision {
        rev: String,
        repo: PathBuf,
        #[source]
        source: git2::Error,
    },
    /// `worktree` was asked for on top of a commit other than HEAD.
    #[error("uncommitted changes apply on top of HEAD ({head}), but the job asks for commit {requested}")]
    WorktreeNotHead { head: String, requested: String },
    /// A git operation failed.
    #[error("cannot {op} `{}`", path.display())]
    Git {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    /// `GIT_SUBMODULE_*` are wrong, or cloning a submodule failed (git's message).
    #[error("{0}")]
    Submodules(String),
    /// The job was canceled while git ran.
    #[error("canceled")]
    Canceled,
    /// A filesystem operation failed.
    #[error("cannot {op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The workspaces of one source repository under one root directory.
#[derive(Debug, Clone)]
pub struct Workspaces {
    /// The source's working directory, canonical.
    source: PathBuf,
    /// The source's object directory, canonical: the alternates line of every slot.
    objects: PathBuf,
    /// Where slots live, canonical.
    root: PathBuf,
    /// The project directory's name inside a slot.
    project: String,
    /// Prefixes (relative to `source`, with a trailing `/`) never copied in worktree mode.
    private: Vec<Vec<u8>>,
}

impl Workspaces {
    /// Finds the repository containing `source_repo` (which must have a working tree and a
    /// commit) and prepares `root` (created if missing) to hold its workspaces. When `root`
    /// is inside the repository (the usual `<repo>/.piste/builds`), a `.gitignore` holding
    /// `*` is written in it so that the source's `git status` stays quiet and fast.
    pub fn new(source_repo: &Path, root: &Path) -> Result<Workspaces, WorkspaceError> {
        let repo = Repository::discover(source_repo).map_err(|source| match source.code() {
            ErrorCode::NotFound => WorkspaceError::NotARepository { path: source_repo.to_owned(), source },
            _ => WorkspaceError::Git { op: "open the repository at", path: source_repo.to_owned(), source },
        })?;
        let Some(workdir) = repo.workdir() else {
            return Err(WorkspaceError::BareRepository { path: repo.path().to_owned() });
        };
        let canonical = |p: &Path, op| fs::canonicalize(p).map_err(|source| WorkspaceError::Io { op, path: p.to_owned(), source });
        let source = canonical(workdir, "resolve the repository directory")?;
        if repo.head().and_then(|h| h.peel_to_commit()).is_err() {
            return Err(WorkspaceError::NoCommit { path: source });
        }
        let objects = canonical(&repo.commondir().join("objects"), "resolve the object directory")?;
        if objects.as_os_str().as_bytes().contains(&b'\n') {
            return Err(WorkspaceError::InvalidRoot { root: objects, reason: "the object directory's path contains a newline" });
        }
        fs::create_dir_all(root).map_err(|source| WorkspaceError::Io { op: "create", path: root.to_owned(), source })?;
        let root = canonical(root, "resolve")?;
        if source.starts_with(&root) {
            return Err(WorkspaceError::InvalidRoot { root, reason: "it contains the repository itself" });
        }
        let mut private = vec![b".piste/".to_vec()];
        if let Ok(inside) = root.strip_prefix(&source) {
            let mut prefix = inside.as_os_str().as_bytes().to_vec();
            prefix.push(b'/');
            private.push(prefix);
            let ignore = root.join(".gitignore");
            if fs::symlink_metadata(&ignore).is_err() {
                fs::write(&ignore, "*\n").map_err(|source| WorkspaceError::Io { op: "write", path: ignore, source })?;
            }
        }
        let project = project_name(source.file_name().unwrap_or_default());
        Ok(Workspaces { source, objects, root, project, private })
    }

    /// The source repository's working directory.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The directory holding the slots.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The project directory of `slot` (whether or not it exists yet).
    pub fn path(&self, slot: usize) -> PathBuf {
        self.root.join(slot.to_string()).join(&self.project)
    }

    /// Prepares `slot`'s project directory as `spec` asks and returns its path.
    pub fn prepare(&self, slot: usize, spec: &CheckoutSpec) -> Result<PathBuf, WorkspaceError> {
        let dir = self.path(slot);
        let flags = CleanFlags::parse(spec.clean_flags.as_deref())?;
        self.ensure_slot_dir(slot)?;
        match spec.strategy {
            GitStrategy::None => {
                ensure_dir(&dir)?;
                return Ok(dir);
            }
            GitStrategy::Empty => {
                clean::remove_tree(&dir)?;
                ensure_dir(&dir)?;
                return Ok(dir);
            }
            GitStrategy::Clone => clean::remove_tree(&dir)?,
            GitStrategy::Fetch => {}
        }
        // A real directory: a symlink left in its place would take the checkout elsewhere.
        ensure_dir(&dir)?;
        let target = self.resolve(spec)?;
        let reused = match self.open_slot(&dir) {
            Some(repo) => match self.update(&repo, &dir, target, spec, flags.as_ref()) {
                Ok(()) => true,
                Err(e @ (WorkspaceError::UnknownRevision { .. } | WorkspaceError::CleanFlags { .. })) => return Err(e),
                Err(e) => {
                    // As gitlab-runner falls back to a clone when fetching fails.
                    tracing::info!(slot, error = %e, "workspace unusable, recreating it");
                    false
                }
            },
            None => false,
        };
        if !reused {
            clean::remove_tree(&dir)?;
            let repo = self.create_slot(&dir)?;
            // Nothing to clean in a fresh slot.
            self.update(&repo, &dir, target, spec, None)?;
        }
        shallow(&dir, target, spec.depth)?;
        if spec.worktree && spec.checkout {
            let applied = worktree::apply(&self.source, &dir, &self.private)?;
            tracing::debug!(slot, copied = applied.copied, removed = applied.removed, "applied uncommitted changes");
        }
        Ok(dir)
    }

    /// The commit to check out, as an id.
    fn resolve(&self, spec: &CheckoutSpec) -> Result<Oid, WorkspaceError> {
        let full_sha = spec.sha.len() == 40 && spec.sha.bytes().all(|b| b.is_ascii_hexdigit());
        if full_sha && !spec.worktree {
            return Oid::from_str(&spec.sha).map_err(|source| self.unknown(&spec.sha, source));
        }
        let repo = Repository::open_ext(&self.source, RepositoryOpenFlags::NO_SEARCH, std::iter::empty::<&OsStr>())
            .map_err(|source| WorkspaceError::Git { op: "open the repository at", path: self.source.clone(), source })?;
        let rev = if spec.sha.is_empty() { "HEAD" } else { spec.sha.as_str() };
        let commit = repo.revparse_single(rev).and_then(|o| o.peel_to_commit()).map_err(|source| self.unknown(rev, source))?;
        if spec.worktree {
            let head = repo.head().and_then(|h| h.peel_to_commit()).map_err(|_| WorkspaceError::NoCommit { path: self.source.clone() })?;
            if head.id() != commit.id() {
                return Err(WorkspaceError::WorktreeNotHead { head: head.id().to_string(), requested: commit.id().to_string() });
            }
        }
        Ok(commit.id())
    }

    fn unknown(&self, rev: &str, source: git2::Error) -> WorkspaceError {
        WorkspaceError::UnknownRevision { rev: rev.chars().take(80).collect(), repo: self.source.clone(), source }
    }

    /// `root/<slot>` as a real directory (a symlink in its place is replaced).
    fn ensure_slot_dir(&self, slot: usize) -> Result<(), WorkspaceError> {
        ensure_dir(&self.root.join(slot.to_string()))
    }

    /// The slot's repository, when it exists, borrows this source's objects and has `dir` as
    /// its working tree. A job may have run git in its checkout: a `.git` symlink or a
    /// `core.worktree` pointing elsewhere would make the next checkout and clean write outside
    /// the slot, so such a slot is recreated.
    fn open_slot(&self, dir: &Path) -> Option<Repository> {
        let git = dir.join(".git");
        if !fs::symlink_metadata(&git).is_ok_and(|m| m.is_dir()) {
            return None;
        }
        let alternates = fs::read(git.join("objects/info/alternates")).ok()?;
        if alternates != self.alternates_line() {
            return None;
        }
        let repo = Repository::open_ext(dir, RepositoryOpenFlags::NO_SEARCH, std::iter::empty::<&OsStr>()).ok()?;
        let workdir = fs::canonicalize(repo.workdir()?).ok()?;
        if workdir != fs::canonicalize(dir).ok()? {
            return None;
        }
        // Git configuration, hooks or attributes the slot did not start with (a job's
        // `git config core.fsmonitor ...` would run in every later job): recreate the slot.
        match foreign_git_setup(&git) {
            None => Some(repo),
            Some(what) => {
                tracing::warn!(slot = %dir.display(), what, "git metadata changed by a job; recreating the workspace");
                None
            }
        }
    }

    fn alternates_line(&self) -> Vec<u8> {
        let mut line = self.objects.as_os_str().as_bytes().to_vec();
        line.push(b'\n');
        line
    }

    /// A fresh slot repository at `dir` whose objects are the source's.
    fn create_slot(&self, dir: &Path) -> Result<Repository, WorkspaceError> {
        let git_err = |op| move |source| WorkspaceError::Git { op, path: dir.to_owned(), source };
        let mut opts = RepositoryInitOptions::new();
        opts.mkpath(true).external_template(false).no_reinit(true);
        let repo = Repository::init_opts(dir, &opts).map_err(git_err("create a repository in"))?;
        let mut config = repo.config().map_err(git_err("configure the repository in"))?;
        // Keep HEAD's reflog from growing by a line per job.
        config.set_bool("core.logAllRefUpdates", false).map_err(git_err("configure the repository in"))?;
        drop(repo);
        // libgit2's built-in template writes sample hooks; a slot has none, so that any hook
        // found later was put there by a job.
        let hooks = dir.join(".git/hooks");
        if let Err(source) = fs::remove_dir_all(&hooks) {
            if source.kind() != std::io::ErrorKind::NotFound {
                return Err(WorkspaceError::Io { op: "remove", path: hooks, source });
            }
        }
        let info = dir.join(".git/objects/info");
        fs::create_dir_all(&info).map_err(|source| WorkspaceError::Io { op: "create", path: info.clone(), source })?;
        let alternates = info.join("alternates");
        fs::write(&alternates, self.alternates_line()).map_err(|source| WorkspaceError::Io { op: "write", path: alternates, source })?;
        // Reopened so that the object database reads the alternates file.
        Repository::open_ext(dir, RepositoryOpenFlags::NO_SEARCH, std::iter::empty::<&OsStr>()).map_err(git_err("open the repository in"))
    }

    /// `git checkout --force <target>` then `git clean <flags>`, when the spec checks out.
    fn update(
        &self,
        repo: &Repository,
        dir: &Path,
        target: Oid,
        spec: &CheckoutSpec,
        flags: Option<&CleanFlags>,
    ) -> Result<(), WorkspaceError> {
        if !spec.checkout {
            return Ok(());
        }
        let git_err = |op| move |source| WorkspaceError::Git { op, path: dir.to_owned(), source };
        // A job killed during an earlier checkout may have left the index locked.
        let lock = dir.join(".git/index.lock");
        if let Err(e) = fs::remove_file(&lock) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(WorkspaceError::Io { op: "remove", path: lock, source: e });
            }
        }
        let commit = repo.find_commit(target).map_err(|source| match source.code() {
            ErrorCode::NotFound => self.unknown(&target.to_string(), source),
            _ => git_err("read the commit in")(source),
        })?;
        // The common case is the slot already at this commit (the previous job's checkout).
        // When, besides, the index matches HEAD and no tracked file changed, a checkout would
        // only rewrite the index: a lock file and a rename, a new inode, which costs more on
        // ext4 than the status that proves it useless. Otherwise the full checkout runs and
        // updates the index too, so that a job's `git add`/`git rm --cached` is undone.
        let already_there = repo.head_detached().unwrap_or(false) && repo.head().ok().and_then(|h| h.target()) == Some(target);
        if !already_there || modified(repo).map_err(git_err("read the status of"))? {
            // `git reset --hard`: the index becomes the commit's tree first (entries that did
            // not change keep their stat data), so that paths a job staged or unstaged are
            // put back; then the forced checkout writes what differs and saves the index.
            let tree = commit.tree().map_err(git_err("read the commit in"))?;
            let mut index = repo.index().map_err(git_err("read the index of"))?;
            index.read_tree(&tree).map_err(git_err("reset the index of"))?;
            let mut checkout = CheckoutBuilder::new();
            checkout.force().refresh(false);
            repo.checkout_tree(tree.as_object(), Some(&mut checkout)).map_err(git_err("check out the commit in"))?;
        }
        if !already_there {
            repo.set_head_detached(target).map_err(git_err("set HEAD in"))?;
        }
        if let Some(flags) = flags {
            clean::clean(repo, dir, flags)?;
        }
        Ok(())
    }
}

/// Whether the index or a tracked file differs from HEAD; untracked and ignored files do not
/// count (clean handles them). Like `git status`, refreshed stat data is saved: entries
/// written in the same clock tick as the index are "racily clean" and would otherwise be
/// hashed by every later job.
fn modified(repo: &Repository) -> Result<bool, git2::Error> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(false).include_ignored(false).exclude_submodules(true).update_index(true);
    opts.renames_head_to_index(false).renames_index_to_workdir(false);
    Ok(!repo.statuses(Some(&mut opts))?.is_empty())
}

/// `GIT_DEPTH`: makes the slot a shallow repository of `depth` commits from `target`, as
/// `git fetch --depth` leaves one (`git log` lists at most `depth` commits, `git rev-parse
/// --is-shallow-repository` says `true`), by writing `.git/shallow`: the commits whose parents
/// the history stops at. No object is removed (they are the source's, through alternates), so
/// this costs a walk of `depth` commits and one small file. Unset or 0 (GitLab: full history)
/// removes the file.
fn shallow(dir: &Path, target: Oid, depth: Option<u32>) -> Result<(), WorkspaceError> {
    let file = dir.join(".git/shallow");
    // Removed first either way: libgit2 reads it, and would stop the walk below at the old cut.
    if let Err(e) = fs::remove_file(&file) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(io_err("remove", &file)(e));
        }
    }
    let Some(depth) = depth.filter(|d| *d > 0) else { return Ok(()) };
    let git_err = |op| move |source| WorkspaceError::Git { op, path: dir.to_owned(), source };
    let repo = Repository::open_ext(dir, RepositoryOpenFlags::NO_SEARCH, std::iter::empty::<&OsStr>()).map_err(git_err("open"))?;
    // Breadth first: a commit is at the depth of its shortest path from the tip, as in git.
    let mut seen = std::collections::HashSet::from([target]);
    let mut level = vec![target];
    for _ in 1..depth {
        let mut next = Vec::new();
        for id in &level {
            let commit = repo.find_commit(*id).map_err(git_err("read a commit in"))?;
            next.extend(commit.parent_ids().filter(|p| seen.insert(*p)));
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    let mut boundary = Vec::new();
    for id in level {
        if repo.find_commit(id).map_err(git_err("read a commit in"))?.parent_count() > 0 {
            boundary.push(id.to_string());
        }
    }
    if boundary.is_empty() {
        // The whole history is shorter than `depth`: git leaves no shallow file either.
        return Ok(());
    }
    boundary.sort();
    let text: String = boundary.iter().map(|b| format!("{b}\n")).collect();
    let tmp = dir.join(".git/shallow.piste");
    fs::write(&tmp, text).map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &file).map_err(io_err("write", &file))
}

/// Maps an I/O error on `path` to [`WorkspaceError::Io`].
fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WorkspaceError + use<> {
    let path = path.to_owned();
    move |source| WorkspaceError::Io { op, path, source }
}

/// Creates `dir` as a real directory; a file or symlink in its place is removed first.
fn ensure_dir(dir: &Path) -> Result<(), WorkspaceError> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => clean::remove_tree(dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(WorkspaceError::Io { op: "inspect", path: dir.to_owned(), source }),
    }
    fs::create_dir_all(dir).map_err(|source| WorkspaceError::Io { op: "create", path: dir.to_owned(), source })
}

/// Keys a slot's `.git/config` holds when [`Workspaces::create_slot`] made it.
const SLOT_CONFIG_KEYS: &[&str] =
    &["core.repositoryformatversion", "core.filemode", "core.bare", "core.logallrefupdates", "core.symlinks", "core.ignorecase"];

/// What in a slot's git metadata piste did not create, if anything: another configuration key,
/// an include, a hook, or an attributes file.
fn foreign_git_setup(git: &Path) -> Option<String> {
    let Ok(config) = git2::Config::open(&git.join("config")) else { return Some("an unreadable config".into()) };
    let Ok(mut entries) = config.entries(None) else { return Some("an unreadable config".into()) };
    while let Some(Ok(entry)) = entries.next() {
        let name = entry.name().unwrap_or("").to_ascii_lowercase();
        if !SLOT_CONFIG_KEYS.contains(&name.as_str()) {
            return Some(format!("config `{name}`"));
        }
    }
    if fs::read_dir(git.join("hooks")).is_ok_and(|mut d| d.next().is_some()) {
        return Some("hooks".into());
    }
    for extra in ["info/attributes", "config.worktree", "commondir"] {
        if fs::symlink_metadata(git.join(extra)).is_ok() {
            return Some(extra.into());
        }
    }
    None
}

/// The repository directory's name, kept to `[A-Za-z0-9._-]` (others become `-`); `project`
/// when nothing usable remains.
fn project_name(name: &OsStr) -> String {
    let cleaned: String = name
        .as_bytes()
        .iter()
        .map(|&b| if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') { char::from(b) } else { '-' })
        .collect();
    if cleaned.is_empty() || cleaned.bytes().all(|b| b == b'.') { "project".to_owned() } else { cleaned }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies() {
        assert_eq!(GitStrategy::parse("").unwrap(), GitStrategy::Fetch);
        assert_eq!(GitStrategy::parse(" clone ").unwrap(), GitStrategy::Clone);
        assert_eq!(GitStrategy::parse("none").unwrap(), GitStrategy::None);
        assert_eq!(GitStrategy::parse("empty").unwrap(), GitStrategy::Empty);
        let err = GitStrategy::parse("shallow").unwrap_err().to_string();
        assert!(err.contains("`shallow`") && err.contains("fetch, clone, none or empty"), "{err}");
    }

    #[test]
    fn project_names_are_plain() {
        assert_eq!(project_name(OsStr::new("piste")), "piste");
        assert_eq!(project_name(OsStr::new("my app (v2)")), "my-app--v2-");
        assert_eq!(project_name(OsStr::new("")), "project");
        assert_eq!(project_name(OsStr::new("..")), "project");
        assert_eq!(project_name(OsStr::from_bytes(b"caf\xc3\xa9")), "caf--");
    }
}
