//! Workspaces (per-job checkouts), caches and dotenv reports, against real git repositories
//! built with git2 in temp dirs.

mod cache;
mod checkout;
mod clean;
mod dotenv;
mod submodules;
mod worktree;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use git2::{IndexAddOption, Repository, Signature};
use runner::workspace::Workspaces;

/// A source repository in a temp dir (`<tmp>/app`), with room beside it.
pub(crate) struct Repo {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) git: Repository,
}

impl Repo {
    pub(crate) fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let git = Repository::init(tmp.path().join("app")).unwrap();
        Repo { tmp, git }
    }

    /// The working directory.
    pub(crate) fn path(&self) -> PathBuf {
        self.tmp.path().join("app")
    }

    /// The usual workspaces root, `<repo>/.piste/builds`.
    pub(crate) fn workspaces(&self) -> Workspaces {
        Workspaces::new(&self.path(), &self.path().join(".piste/builds")).unwrap()
    }

    /// Writes `rel` in the working directory, creating parents.
    pub(crate) fn write(&self, rel: &str, content: &str) -> &Repo {
        write(&self.path(), rel, content);
        self
    }

    pub(crate) fn remove(&self, rel: &str) -> &Repo {
        fs::remove_file(self.path().join(rel)).unwrap();
        self
    }

    /// Stages everything (additions, changes, deletions) and commits; returns the sha.
    pub(crate) fn commit(&self, message: &str) -> String {
        let mut index = self.git.index().unwrap();
        index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = self.git.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("Test", "test@example.com").unwrap();
        let parent = self.git.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.git.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents).unwrap().to_string()
    }

    /// The files (content) and symlinks (`-> target`) of commit `sha`, by path.
    pub(crate) fn tree(&self, sha: &str) -> BTreeMap<String, String> {
        let commit = self.git.find_commit(git2::Oid::from_str(sha).unwrap()).unwrap();
        let mut out = BTreeMap::new();
        commit
            .tree()
            .unwrap()
            .walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
                if let Some(git2::ObjectType::Blob) = entry.kind() {
                    let blob = self.git.find_blob(entry.id()).unwrap();
                    let text = String::from_utf8_lossy(blob.content()).into_owned();
                    let value = if entry.filemode() == 0o120000 { format!("-> {text}") } else { text };
                    out.insert(format!("{dir}{}", entry.name().unwrap()), value);
                }
                git2::TreeWalkResult::Ok
            })
            .unwrap();
        out
    }
}

pub(crate) fn write(base: &Path, rel: &str, content: &str) {
    let path = base.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Files (content) and symlinks (`-> target`) under `dir`, except `.git/`, by relative path.
/// Directories are not listed; symlinks are not followed.
pub(crate) fn files(dir: &Path) -> BTreeMap<String, String> {
    listing(dir).into_iter().filter(|(_, v)| v != "/").collect()
}

/// Like [`files`], with directories too (value `/`).
pub(crate) fn listing(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(dir.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let child = rel.join(entry.file_name());
            if child == Path::new(".git") {
                continue;
            }
            let ft = entry.file_type().unwrap();
            let key = child.to_string_lossy().into_owned();
            if ft.is_symlink() {
                out.insert(key, format!("-> {}", fs::read_link(entry.path()).unwrap().display()));
            } else if ft.is_dir() {
                out.insert(key, "/".to_owned());
                stack.push(child);
            } else {
                out.insert(key, String::from_utf8_lossy(&fs::read(entry.path()).unwrap()).into_owned());
            }
        }
    }
    out
}

pub(crate) fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}
