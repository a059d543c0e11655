//! One project's files for includes: a folder, or a git repository whose refs, tags and
//! commits can be read.
//!
//! Without a ref (`include:local`, `include:project` without `ref:`) the files on disk are
//! read, so uncommitted changes count. With a ref, a git repository answers from that commit
//! (git's own order: a full commit id, a full ref, a tag, a branch, `origin`'s branch of that
//! name in a clone, an abbreviated commit id); a plain folder has no refs and its files stand
//! for every ref.

use std::fs;
use std::path::{Component, Path, PathBuf};

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use pipeline_spec::glob::Glob;
use pipeline_spec::include::ResolveError;

/// Most files listed when expanding a wildcard include, so a huge tree cannot stall a lint.
const MAX_LISTED: usize = 100_000;
/// Largest included file read; the YAML layer refuses larger ones with a clear message anyway.
pub(super) const MAX_READ: u64 = 64 * 1024 * 1024;

/// A project directory: where its files are and whether it is a git work tree (or a bare
/// repository) whose refs can be read.
#[derive(Debug, Clone)]
pub struct ProjectDir {
    dir: PathBuf,
    git: bool,
}

impl ProjectDir {
    /// `dir` is a git repository when it is the top of a work tree or a bare repository (a
    /// folder inside another repository is a plain folder).
    pub fn new(dir: impl Into<PathBuf>) -> ProjectDir {
        let dir = dir.into();
        let git = Repository::open(&dir).is_ok_and(|r| match r.workdir() {
            Some(w) => same_dir(w, &dir),
            None => r.is_bare(),
        });
        ProjectDir { dir, git }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_git(&self) -> bool {
        self.git
    }

    fn repo(&self) -> Result<Repository, ResolveError> {
        Repository::open(&self.dir)
            .map_err(|e| ResolveError::Other(format!("cannot open the repository `{}`: {}", self.dir.display(), e.message())))
    }

    pub fn read(&self, path: &str, git_ref: Option<&str>) -> Result<String, ResolveError> {
        match git_ref {
            Some(r) if self.git => {
                let repo = self.repo()?;
                let commit = self.commit_of(&repo, r)?;
                read_blob(&repo, commit, path)
            }
            _ => read_disk(&self.dir, path),
        }
    }

    pub fn glob(&self, pattern: &str, git_ref: Option<&str>) -> Result<Vec<String>, ResolveError> {
        let glob = Glob::new(pattern).ok_or_else(|| ResolveError::Other(format!("invalid pattern `{pattern}`")))?;
        match git_ref {
            Some(r) if self.git => {
                let repo = self.repo()?;
                let commit = self.commit_of(&repo, r)?;
                list_tree(&repo, commit, &glob)
            }
            _ => list_disk(&self.dir, &glob),
        }
    }

    pub fn tags(&self) -> Result<Vec<String>, ResolveError> {
        if !self.git {
            return Err(ResolveError::Unavailable(format!(
                "`{}` is not a git repository, so it has no tags to pick a version from: point `--project-dir` at a clone",
                self.dir.display()
            )));
        }
        let repo = self.repo()?;
        let names = repo.tag_names(None).map_err(|e| ResolveError::Other(e.message().to_string()))?;
        Ok(names.iter().flatten().flatten().map(str::to_string).collect())
    }

    pub fn commit(&self, git_ref: &str) -> Result<String, ResolveError> {
        if !self.git {
            return Err(ResolveError::Unavailable(format!("`{}` is not a git repository: it has no commits", self.dir.display())));
        }
        let repo = self.repo()?;
        Ok(self.commit_of(&repo, git_ref)?.to_string())
    }

    /// The commit `name` names, in git's order (see the module's documentation).
    fn commit_of(&self, repo: &Repository, name: &str) -> Result<Oid, ResolveError> {
        let peel = |r: git2::Reference<'_>| r.peel_to_commit().ok().map(|c| c.id());
        if name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Some(c) = Oid::from_str(name).ok().and_then(|o| repo.find_commit(o).ok()) {
                return Ok(c.id());
            }
        }
        let candidates: Vec<String> = if name.starts_with("refs/") {
            vec![name.to_string()]
        } else {
            vec![format!("refs/tags/{name}"), format!("refs/heads/{name}"), format!("refs/remotes/origin/{name}")]
        };
        for full in &candidates {
            if let Some(id) = repo.find_reference(full).ok().and_then(peel) {
                return Ok(id);
            }
        }
        if (7..40).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Some(id) = repo.revparse_single(name).ok().and_then(|o| o.peel_to_commit().ok()).map(|c| c.id()) {
                return Ok(id);
            }
        }
        // A clone may simply not have fetched it: not something the pipeline got wrong.
        Err(ResolveError::Unavailable(format!(
            "ref `{name}` is not in `{}`; fetch it there (`git -C {} fetch --tags origin`)",
            self.dir.display(),
            self.dir.display()
        )))
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Joins a project-relative path, refusing anything that would escape the project directory.
pub(super) fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf, ResolveError> {
    let rel = Path::new(rel.trim_start_matches('/'));
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => return Err(ResolveError::Other("the path leaves the project directory".into())),
        }
    }
    let full = dir.join(rel);
    // Symlinks inside the project must not lead outside it either.
    if let (Ok(real), Ok(base)) = (full.canonicalize(), dir.canonicalize()) {
        if !real.starts_with(&base) {
            return Err(ResolveError::Other("the path is a link that leaves the project directory".into()));
        }
    }
    Ok(full)
}

/// Reads `path` under `dir` from disk, bounded and as UTF-8.
pub(super) fn read_disk(dir: &Path, path: &str) -> Result<String, ResolveError> {
    let full = safe_join(dir, path)?;
    let meta = match fs::metadata(&full) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ResolveError::NotFound),
        Err(e) => return Err(ResolveError::Other(e.to_string())),
    };
    if !meta.is_file() {
        return Err(ResolveError::Other(format!("`{path}` is not a regular file")));
    }
    if meta.len() > MAX_READ {
        return Err(ResolveError::Other(format!("`{path}` is {} bytes, too large to be a CI file", meta.len())));
    }
    let bytes = fs::read(&full).map_err(|e| ResolveError::Other(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| ResolveError::Other(format!("`{path}` is not UTF-8 text")))
}

fn list_disk(dir: &Path, glob: &Glob) -> Result<Vec<String>, ResolveError> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    let mut seen = 0usize;
    while let Some(rel) = stack.pop() {
        let Ok(entries) = fs::read_dir(dir.join(&rel)) else { continue };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_LISTED {
                return Err(ResolveError::Other(format!("more than {MAX_LISTED} files under the project; narrow the pattern")));
            }
            let name = entry.file_name();
            if name == ".git" {
                continue;
            }
            let child = rel.join(&name);
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(child);
            } else if ft.is_file() {
                let s = child.to_string_lossy().replace('\\', "/");
                if glob.matches(&s) {
                    out.push(s);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A path inside a tree: no `..`, no empty name.
fn clean(path: &str) -> Result<String, ResolveError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") || path.contains('\0') {
        return Err(ResolveError::Other(format!("`{path}` is not a path inside the repository")));
    }
    Ok(parts.join("/"))
}

fn read_blob(repo: &Repository, commit: Oid, path: &str) -> Result<String, ResolveError> {
    let git = |e: git2::Error| ResolveError::Other(e.message().to_string());
    let clean = clean(path)?;
    let tree = repo.find_commit(commit).and_then(|c| c.tree()).map_err(git)?;
    let entry = match tree.get_path(Path::new(&clean)) {
        Ok(e) => e,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(ResolveError::NotFound),
        Err(e) => return Err(git(e)),
    };
    if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == 0o120000 {
        return Err(ResolveError::Other(format!("`{clean}` is not a regular file in the repository")));
    }
    let (size, _) = repo.odb().and_then(|o| o.read_header(entry.id())).map_err(git)?;
    if size as u64 > MAX_READ {
        return Err(ResolveError::Other(format!("`{clean}` is {size} bytes, too large to be a CI file")));
    }
    let blob = repo.find_blob(entry.id()).map_err(git)?;
    String::from_utf8(blob.content().to_vec()).map_err(|_| ResolveError::Other(format!("`{clean}` is not UTF-8 text")))
}

fn list_tree(repo: &Repository, commit: Oid, glob: &Glob) -> Result<Vec<String>, ResolveError> {
    let git = |e: git2::Error| ResolveError::Other(e.message().to_string());
    let tree = repo.find_commit(commit).and_then(|c| c.tree()).map_err(git)?;
    let mut seen = 0usize;
    let mut out = Vec::new();
    let _ = tree.walk(TreeWalkMode::PreOrder, |root, entry| {
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
        return Err(ResolveError::Other(format!("more than {MAX_LISTED} files in the tree; narrow the pattern")));
    }
    out.sort();
    Ok(out)
}
