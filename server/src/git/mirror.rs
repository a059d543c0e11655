//! A project's bare mirror: fetch, commits, files at a commit, changed paths.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use git2::{DiffOptions, ObjectType, Oid, Repository, RepositoryInitOptions, TreeWalkMode, TreeWalkResult};
use pipeline_spec::glob::Glob;

use super::remote::Remote;
use super::{CommitInfo, GitError, MAX_CHANGED_FILES, MAX_FILE_BYTES, MAX_LISTED, TreeResolver};
use crate::webhook::validate;

/// What [`Mirror::fetch`] brings: branches, tags, and the merge request heads that GitLab
/// (`refs/merge-requests/*`) and GitHub or Gitea (`refs/pull/*`) publish, so that a merge
/// request from a fork can be built. Refs gone upstream are pruned.
pub const DEFAULT_REFSPECS: [&str; 4] =
    ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*", "+refs/merge-requests/*:refs/merge-requests/*", "+refs/pull/*:refs/pull/*"];

/// A bare repository mirroring one project, at `<data_dir>/mirrors/<project>.git`.
///
/// Holds only its path: every method opens the repository, so a `Mirror` is cheap to clone
/// and to send across threads. Every method blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    dir: PathBuf,
}

/// Fetches of one mirror are serialised within this process (libgit2 takes ref locks and a
/// concurrent fetch would fail on them instead of waiting).
fn lock_for(dir: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut map = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    map.entry(dir.to_path_buf()).or_default().clone()
}

impl Mirror {
    /// Opens the bare repository at `dir`, creating it (and its parents) when missing.
    pub fn open_or_init(dir: &Path) -> Result<Mirror, GitError> {
        let lock = lock_for(dir);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        match Repository::open_bare(dir) {
            Ok(_) => {}
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                Repository::init_opts(dir, RepositoryInitOptions::new().bare(true).mkpath(true))?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Mirror { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn repo(&self) -> Result<Repository, GitError> {
        Ok(Repository::open_bare(&self.dir)?)
    }

    /// Fetches [`DEFAULT_REFSPECS`] from `url`, which must be the project's configured URL,
    /// never one taken from a payload. Also points the mirror's `HEAD` at the remote's default
    /// branch.
    pub fn fetch(&self, url: &str) -> Result<(), GitError> {
        self.fetch_from(&Remote::new(url))
    }

    /// [`Mirror::fetch`] from a remote with its credentials, CA and ssh settings.
    pub fn fetch_from(&self, remote: &Remote) -> Result<(), GitError> {
        self.fetch_refspecs_from(remote, &DEFAULT_REFSPECS)
    }

    /// Fetches only `refspecs` (e.g. a [`Trigger::fetch_refspec`](crate::webhook::Trigger::fetch_refspec)).
    pub fn fetch_refspecs(&self, url: &str, refspecs: &[&str]) -> Result<(), GitError> {
        self.fetch_refspecs_from(&Remote::new(url), refspecs)
    }

    /// Fetches `refspecs` with the `git` program (see [`Remote`] for why), pruning refs gone
    /// upstream, without tags beyond the refspecs.
    pub fn fetch_refspecs_from(&self, remote: &Remote, refspecs: &[&str]) -> Result<(), GitError> {
        let lock = lock_for(&self.dir);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        if remote.in_process() {
            return self.fetch_in_process(remote.url(), refspecs);
        }
        // Anonymous: the URL is not written into the mirror's config.
        remote.run(&self.dir, &["fetch", "--quiet", "--prune", "--no-tags", "--no-write-fetch-head", "--no-auto-gc"], refspecs)?;
        // The remote's default branch, best effort (a remote may not advertise it).
        let listed = remote.run(&self.dir, &["ls-remote", "--symref"], &["HEAD"]).unwrap_or_default();
        let head = listed.lines().find_map(|l| l.strip_prefix("ref: ")).and_then(|l| l.split('\t').next()).map(str::to_string);
        let repo = self.repo()?;
        if let Some(name) = head.filter(|n| n.starts_with("refs/heads/") && repo.find_reference(n).is_ok()) {
            repo.set_head(&name)?;
        }
        Ok(())
    }

    /// The fetch through libgit2, for the transports it has here (see [`Remote::in_process`]):
    /// one connection gives the refs, the objects and the remote's default branch.
    fn fetch_in_process(&self, url: &str, refspecs: &[&str]) -> Result<(), GitError> {
        // Quick acknowledgements on `git://` (see git/tcp.rs); libgit2's own socket otherwise.
        super::tcp::register();
        let repo = self.repo()?;
        let fetch_error = |e: git2::Error| GitError::Fetch { url: url.to_string(), message: e.message().to_string() };
        // Anonymous: the URL is not written into the mirror's config.
        let mut remote = repo.remote_anonymous(url).map_err(fetch_error)?;
        let mut opts = git2::FetchOptions::new();
        opts.prune(git2::FetchPrune::On).download_tags(git2::AutotagOption::None).update_fetchhead(false);
        remote.fetch(refspecs, Some(&mut opts), None).map_err(fetch_error)?;
        let head = remote.default_branch().ok().and_then(|b| b.as_str().ok().map(str::to_string));
        if let Some(name) = head.filter(|n| n.starts_with("refs/heads/") && repo.find_reference(n).is_ok()) {
            repo.set_head(&name)?;
        }
        Ok(())
    }

    /// Whether the commit `sha` (40 hex digits) is in the mirror.
    pub fn has_commit(&self, sha: &str) -> bool {
        let Ok(oid) = parse_sha(sha) else { return false };
        self.repo().is_ok_and(|r| r.find_commit(oid).is_ok())
    }

    /// The commit `sha` names, peeling an annotated tag to its commit.
    pub fn commit(&self, sha: &str) -> Result<CommitInfo, GitError> {
        let repo = self.repo()?;
        let oid = parse_sha(sha)?;
        let object = repo.find_object(oid, None).map_err(|_| GitError::MissingCommit(sha.to_string()))?;
        let commit = object.peel_to_commit().map_err(|_| GitError::MissingCommit(sha.to_string()))?;
        let author = commit.author();
        Ok(CommitInfo {
            id: commit.id().to_string(),
            message: String::from_utf8_lossy(commit.message_bytes()).into_owned(),
            author_name: String::from_utf8_lossy(author.name_bytes()).into_owned(),
            author_email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
            timestamp: super::iso8601(author.when().seconds(), author.when().offset_minutes()),
        })
    }

    /// The commit a ref points to, in git's order: a full commit id, a full ref (`refs/...`),
    /// a tag, a branch (a tag wins over a branch of the same name, as in GitLab), then an
    /// abbreviated commit id. `None` when nothing matches.
    pub fn resolve_ref(&self, name: &str) -> Result<Option<String>, GitError> {
        let repo = self.repo()?;
        if validate::is_sha(name) {
            let oid = parse_sha(name)?;
            return Ok(repo.find_object(oid, None).and_then(|o| o.peel_to_commit()).ok().map(|c| c.id().to_string()));
        }
        validate::ref_name("ref", name).map_err(|_| GitError::InvalidRef(validate::shorten(name)))?;
        let candidates = if name.starts_with("refs/") {
            vec![name.to_string()]
        } else {
            vec![format!("refs/tags/{name}"), format!("refs/heads/{name}")]
        };
        for full in candidates {
            if let Ok(r) = repo.find_reference(&full) {
                return Ok(Some(r.peel_to_commit()?.id().to_string()));
            }
        }
        if (7..40).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Some(c) = repo.revparse_single(name).ok().and_then(|o| o.peel_to_commit().ok()) {
                return Ok(Some(c.id().to_string()));
            }
        }
        Ok(None)
    }

    /// The mirror's tag names (`refs/tags/*`), for component versions.
    pub fn tags(&self) -> Result<Vec<String>, GitError> {
        let repo = self.repo()?;
        let names = repo.tag_names(None)?;
        Ok(names.iter().flatten().flatten().map(str::to_string).collect())
    }

    /// The head commit of the default branch: `HEAD` (set from the remote on fetch), else
    /// `main`, else `master`. `None` in an empty mirror.
    pub fn default_head(&self) -> Result<Option<String>, GitError> {
        let repo = self.repo()?;
        if let Ok(c) = repo.head().and_then(|h| h.peel_to_commit()) {
            return Ok(Some(c.id().to_string()));
        }
        for name in ["refs/heads/main", "refs/heads/master"] {
            if let Ok(c) = repo.find_reference(name).and_then(|r| r.peel_to_commit()) {
                return Ok(Some(c.id().to_string()));
            }
        }
        Ok(None)
    }

    /// The best common ancestor of two commits (what a merge request's changes are measured
    /// from), `None` when their histories are unrelated.
    pub fn merge_base(&self, a: &str, b: &str) -> Result<Option<String>, GitError> {
        let repo = self.repo()?;
        let (a, b) = (self.commit_oid(&repo, a)?, self.commit_oid(&repo, b)?);
        match repo.merge_base(a, b) {
            Ok(oid) => Ok(Some(oid.to_string())),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps `sha` reachable as `refs/pipelines/<id>` (as GitLab does), so that runners can
    /// fetch it and pruning a deleted branch does not lose it. Returns the ref name.
    ///
    /// Runners' checkouts pin again (another server may have planned the pipeline), several at
    /// once: a ref already at `sha` is left alone, and a concurrent writer's lock (libgit2 does
    /// not wait for it) is waited out briefly, instead of failing the checkout.
    pub fn pin(&self, pipeline_id: i64, sha: &str) -> Result<String, GitError> {
        let repo = self.repo()?;
        let oid = self.commit_oid(&repo, sha)?;
        let name = format!("refs/pipelines/{pipeline_id}");
        let pinned = |repo: &Repository| repo.find_reference(&name).ok().and_then(|r| r.target()) == Some(oid);
        let mut tries = 0;
        loop {
            if pinned(&repo) {
                return Ok(name);
            }
            match repo.reference(&name, oid, true, "piste: pipeline ref") {
                Ok(_) => return Ok(name),
                Err(e) if e.code() == git2::ErrorCode::Locked && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn commit_oid(&self, repo: &Repository, sha: &str) -> Result<Oid, GitError> {
        let oid = parse_sha(sha)?;
        repo.find_commit(oid).map(|c| c.id()).map_err(|_| GitError::MissingCommit(sha.to_string()))
    }

    /// The text of `path` at commit `sha`; `None` when there is no such file. Refuses
    /// directories, symbolic links, submodules, files over [`MAX_FILE_BYTES`] (checked before
    /// the blob is inflated) and files that are not UTF-8.
    pub fn read_file(&self, sha: &str, path: &str) -> Result<Option<String>, GitError> {
        let repo = self.repo()?;
        let clean = clean_path(path)?;
        let tree = repo.find_commit(parse_sha(sha)?).map_err(|_| GitError::MissingCommit(sha.to_string()))?.tree()?;
        let entry = match tree.get_path(Path::new(&clean)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let not_a_file = |what| GitError::NotAFile { path: clean.clone(), what };
        match entry.kind() {
            Some(ObjectType::Blob) if entry.filemode() == 0o120000 => return Err(not_a_file("a symbolic link")),
            Some(ObjectType::Blob) => {}
            Some(ObjectType::Tree) => return Err(not_a_file("a directory")),
            _ => return Err(not_a_file("a submodule")),
        }
        let (size, _) = repo.odb()?.read_header(entry.id())?;
        if size as u64 > MAX_FILE_BYTES {
            return Err(GitError::TooLarge { path: clean, size: size as u64, limit: MAX_FILE_BYTES });
        }
        let blob = repo.find_blob(entry.id())?;
        String::from_utf8(blob.content().to_vec()).map(Some).map_err(|_| GitError::NotText(clean))
    }

    /// Paths that differ between the trees of `before` and `after` (added, modified, deleted,
    /// type changed; a rename counts as both paths), sorted. More than
    /// [`MAX_CHANGED_FILES`] is an error: treat the changes as unknown then.
    pub fn changed_files(&self, before: &str, after: &str) -> Result<Vec<String>, GitError> {
        let repo = self.repo()?;
        let old = repo.find_commit(self.commit_oid(&repo, before)?)?.tree()?;
        let new = repo.find_commit(self.commit_oid(&repo, after)?)?.tree()?;
        let mut opts = DiffOptions::new();
        opts.include_typechange(true);
        let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), Some(&mut opts))?;
        if diff.deltas().len() > MAX_CHANGED_FILES {
            return Err(GitError::TooManyChanges { limit: MAX_CHANGED_FILES });
        }
        let mut paths = BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(p) = file.path_bytes() {
                    paths.insert(String::from_utf8_lossy(p).into_owned());
                }
            }
        }
        Ok(paths.into_iter().collect())
    }

    /// Regular files at commit `sha` whose path matches `glob`, sorted. Walks at most
    /// [`MAX_LISTED`] tree entries.
    pub fn list_files(&self, sha: &str, glob: &Glob) -> Result<Vec<String>, GitError> {
        let repo = self.repo()?;
        let tree = repo.find_commit(parse_sha(sha)?).map_err(|_| GitError::MissingCommit(sha.to_string()))?.tree()?;
        let mut seen = 0usize;
        let mut out = Vec::new();
        let walked = tree.walk(TreeWalkMode::PreOrder, |root, entry| {
            seen += 1;
            if seen > MAX_LISTED {
                return TreeWalkResult::Abort;
            }
            if entry.kind() == Some(ObjectType::Blob) && entry.filemode() != 0o120000 {
                let path = format!("{root}{}", String::from_utf8_lossy(entry.name_bytes()));
                if glob.matches(&path) {
                    out.push(path);
                }
            }
            TreeWalkResult::Ok
        });
        if seen > MAX_LISTED {
            return Err(GitError::TooManyEntries { limit: MAX_LISTED });
        }
        walked?;
        out.sort();
        Ok(out)
    }

    /// The include resolver of a pipeline at commit `sha` of this mirror; `include:project`
    /// and `include:component` read from `others` (project name → mirror).
    pub fn resolver(&self, sha: &str, others: &HashMap<String, Mirror>) -> TreeResolver {
        TreeResolver::new(self.clone(), sha.to_string(), others.clone())
    }
}

fn parse_sha(sha: &str) -> Result<Oid, GitError> {
    if !validate::is_sha(sha) {
        return Err(GitError::InvalidSha(validate::shorten(sha)));
    }
    Oid::from_str(sha).map_err(|_| GitError::InvalidSha(sha.to_string()))
}

/// A repository-relative path without `.` components: no `..`, no NUL, not empty.
pub(super) fn clean_path(path: &str) -> Result<String, GitError> {
    let bad = |why| GitError::InvalidPath { path: validate::shorten(path), why };
    if path.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    if path.len() > 4096 {
        return Err(bad("it is longer than 4096 bytes"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(bad("it leaves the repository")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad("it names no file"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::clean_path;

    #[test]
    fn paths() {
        assert_eq!(clean_path("./ci//a.yml").unwrap(), "ci/a.yml");
        assert_eq!(clean_path("/a.yml").unwrap(), "a.yml");
        assert!(clean_path("../a.yml").is_err());
        assert!(clean_path("a/../../b").is_err());
        assert!(clean_path("").is_err());
        assert!(clean_path("a\0b").is_err());
    }
}
