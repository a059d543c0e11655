//! Server-side git against real repositories built with git2 in temp dirs, served by a real
//! `git daemon` and by `git http-backend` behind a minimal axum app, all on 127.0.0.1.

mod daemon;
mod http;
#[path = "../common/https.rs"]
mod https_forge;
mod mirror;
mod resolver;
#[path = "../common/ssh.rs"]
mod ssh_forge;
#[path = "../common/tls.rs"]
mod tls_ca;
mod transport;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use git2::{ObjectType, Oid, Repository, Signature, Time};
use server::git::Mirror;

/// A working repository (`<tmp>/src`) to commit into, with room beside it for mirrors.
pub(crate) struct Source {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) repo: Repository,
}

impl Source {
    pub(crate) fn new() -> Source {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path().join("src")).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        Source { tmp, repo }
    }

    pub(crate) fn path(&self) -> &Path {
        self.repo.workdir().unwrap()
    }

    /// The source's location as a plain path, the way a project's `repo` may be configured.
    pub(crate) fn url(&self) -> String {
        self.path().to_str().unwrap().to_string()
    }

    /// Writes (`Some`) or deletes (`None`) files and commits them on the current branch.
    pub(crate) fn commit(&self, files: &[(&str, Option<&str>)], message: &str) -> String {
        self.commit_bytes(&files.iter().map(|(p, c)| (*p, c.map(str::as_bytes))).collect::<Vec<_>>(), message)
    }

    pub(crate) fn commit_bytes(&self, files: &[(&str, Option<&[u8]>)], message: &str) -> String {
        let mut index = self.repo.index().unwrap();
        for (path, content) in files {
            let full = self.path().join(path);
            match content {
                Some(bytes) => {
                    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                    std::fs::write(&full, bytes).unwrap();
                    index.add_path(Path::new(path)).unwrap();
                }
                None => {
                    std::fs::remove_file(&full).unwrap();
                    index.remove_path(Path::new(path)).unwrap();
                }
            }
        }
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = signature();
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents).unwrap().to_string()
    }

    /// Adds a symbolic link to the tree (no file on disk needed).
    pub(crate) fn commit_symlink(&self, path: &str, target: &str, message: &str) -> String {
        std::os::unix::fs::symlink(target, self.path().join(path)).unwrap();
        let mut index = self.repo.index().unwrap();
        index.add_path(Path::new(path)).unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = signature();
        let parent = self.repo.head().unwrap().peel_to_commit().unwrap();
        self.repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&parent]).unwrap().to_string()
    }

    pub(crate) fn branch(&self, name: &str, sha: &str) {
        self.repo.reference(&format!("refs/heads/{name}"), Oid::from_str(sha).unwrap(), true, "test").unwrap();
    }

    /// An annotated tag; returns the tag object's id.
    pub(crate) fn annotated_tag(&self, name: &str, sha: &str, message: &str) -> String {
        let target = self.repo.find_object(Oid::from_str(sha).unwrap(), Some(ObjectType::Commit)).unwrap();
        self.repo.tag(name, &target, &signature(), message, true).unwrap().to_string()
    }

    /// A fresh mirror of this source under `<tmp>/mirrors/<name>.git`, fetched.
    pub(crate) fn mirror(&self, name: &str) -> Mirror {
        let mirror = Mirror::open_or_init(&self.tmp.path().join("mirrors").join(format!("{name}.git"))).unwrap();
        mirror.fetch(&self.url()).unwrap();
        mirror
    }
}

pub(crate) fn signature() -> Signature<'static> {
    Signature::new("Ada Lovelace", "ada@example.com", &Time::new(1_700_000_000, 60)).unwrap()
}

/// A `git` command isolated from the machine's and the user's configuration.
pub(crate) fn git(home: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", home)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .stdin(Stdio::null());
    cmd
}

/// A free port on 127.0.0.1 (bound, read, released).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something listens on `addr`.
pub(crate) fn wait_for(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed and reaped when dropped.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn read_at(repo: &Path, rev: &str, path: &str) -> String {
    let repo = Repository::open(repo).unwrap();
    let tree = repo.revparse_single(rev).unwrap().peel_to_tree().unwrap();
    let blob = tree.get_path(Path::new(path)).unwrap().to_object(&repo).unwrap().peel_to_blob().unwrap();
    String::from_utf8(blob.content().to_vec()).unwrap()
}
