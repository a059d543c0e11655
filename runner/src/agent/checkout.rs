//! Job checkouts from the server's git endpoint: one cache repository per project, fetched
//! with the job token, and [`Workspaces`] slots borrowing its objects.
//!
//! ```text
//! <work_dir>/repos/<key>/<name>/.git    the project's cache: objects and refs/piste/*, an
//!                                       empty working tree, HEAD detached at the last commit
//! <work_dir>/builds/<key>/<slot>/<name> a job's checkout ([`Workspaces`] slot `slot`)
//! ```
//!
//! `<name>` is the project's last path component and `<key>` the whole name made filesystem-safe
//! plus a hash (so `group/app` and `group-app` never share a cache).
//!
//! A job whose commit is already in the cache makes no network call at all: the next jobs of a
//! pipeline cost one checkout of about a millisecond. Otherwise the cache fetches the job's ref
//! (`+refs/heads/main:refs/piste/heads/main`; no tags, no other branch), and, when the commit
//! is not reachable from it any more (a force push), the commit itself, which needs a server
//! that allows fetching reachable commits by id (protocol v2, or `uploadpack.allowAnySHA1InWant`).
//! The cache itself is never shallow: `GIT_DEPTH` is applied to the job's slot (see
//! [`Workspaces`]), which borrows the cache's objects; a shallow cache would have to be
//! deepened by later jobs, and through alternates a slot pays nothing for history.
//!
//! Submodules (`GIT_SUBMODULE_STRATEGY`) are cloned into the slot by the `git` program after the
//! checkout ([`crate::workspace::submodules`]); relative URLs name other projects of the
//! server, served under the job's git URL (`…/git/-/projects/<group/name>.git`).
//!
//! Transports: an `http://` server is fetched from in-process with libgit2 (one connection, no
//! process). libgit2 is built here without TLS (its `https` needs OpenSSL), so an `https://`
//! server (one behind a TLS proxy) is fetched from by the `git` program, as the server fetches
//! its own `https://` mirrors: environment cleared but for paths and proxies, no prompt, only
//! `https`, no redirects, the job token as an `Authorization` header in `GIT_CONFIG_*`
//! variables (never on a command line), `ca_file` as `http.sslCAInfo`, a low-speed timeout,
//! and the process killed when the job is canceled.
//!
//! Concurrency: fetches into one cache are serialised by a per-project lock; checkouts are not
//! (each concurrent job has its own slot, and readers of a repository are safe while a fetch
//! adds packs to it).
//!
//! The cache repository stays open between jobs (under that lock: a `git2::Repository` is not
//! `Sync`), and the project's [`Workspaces`] are resolved once: opening a repository reads its
//! configuration, HEAD and object directories, which was a good part of a trivial job's
//! checkout. A failed fetch or check drops the open repository; the next job opens it again.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::{AutotagOption, Cred, CredentialType, FetchOptions, Oid, RemoteCallbacks, Repository, RepositoryOpenFlags};
use scheduler::protocol::GIT_USER;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::workspace::{CheckoutSpec, GitStrategy, SubmoduleSource, SubmoduleSpec, Workspaces, submodules};

/// What a job's checkout needs.
#[derive(Clone)]
pub(crate) struct CheckoutRequest {
    pub project: String,
    /// `<server><payload.git.path>`.
    pub url: String,
    pub token: String,
    pub sha: String,
    pub git_ref: String,
    pub strategy: GitStrategy,
    pub clean_flags: Option<String>,
    /// `GIT_CHECKOUT`.
    pub checkout: bool,
    /// `GIT_DEPTH`.
    pub depth: Option<u32>,
    /// `GIT_SUBMODULE_*`.
    pub submodules: SubmoduleSpec,
    pub slot: usize,
}

/// How the commit was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// Already in the cache (or not needed: `GIT_STRATEGY` none/empty).
    Cached,
    /// Fetched with the job's ref.
    Ref,
    /// Fetched by commit id.
    Commit,
}

/// A failed checkout.
#[derive(Debug)]
pub(crate) enum CheckoutError {
    /// The job's settings are wrong (`GIT_STRATEGY`, `GIT_CLEAN_FLAGS`, a malformed sha).
    Job(String),
    /// The network, the server or the disk failed.
    System(String),
    Canceled,
}

/// The cache repositories and workspaces under one work directory.
pub(crate) struct Checkouts {
    work_dir: PathBuf,
    /// Certificate authorities for an `https://` server (the runner's `ca_file`).
    ca_file: Option<PathBuf>,
    projects: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Project>>>>,
}

/// What one project's jobs keep between them; its mutex is the project's fetch lock.
#[derive(Default)]
struct Project {
    /// The cache repository, once opened.
    repo: Option<Repository>,
    /// Its slots, once resolved.
    workspaces: Option<Workspaces>,
}

impl Checkouts {
    pub(crate) fn new(work_dir: &Path, ca_file: Option<PathBuf>) -> Checkouts {
        Checkouts { work_dir: work_dir.to_owned(), ca_file, projects: Mutex::new(HashMap::new()) }
    }

    fn project(&self, key: String) -> Arc<tokio::sync::Mutex<Project>> {
        self.projects.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone()
    }

    /// Runs `f` on the project's cache under its lock, in a blocking task, with the repository
    /// kept open from earlier jobs (dropped when `f` fails).
    async fn with_project<T: Send + 'static>(
        &self,
        key: String,
        f: impl FnOnce(&mut Project) -> Result<T, CheckoutError> + Send + 'static,
    ) -> Result<T, CheckoutError> {
        let project = self.project(key);
        let mut guard = project.lock().await;
        let mut taken = std::mem::take(&mut *guard);
        let (result, back) = tokio::task::spawn_blocking(move || {
            let result = f(&mut taken);
            if result.is_err() {
                taken.repo = None;
            }
            (result, taken)
        })
        .await
        .map_err(|e| CheckoutError::System(format!("the checkout task failed: {e}")))?;
        *guard = back;
        result
    }

    /// Makes the commit available and prepares the slot, with its submodules. `cancel` aborts a
    /// running fetch. Returns git's output about the submodules too, for the job log.
    pub(crate) async fn prepare(
        &self,
        req: CheckoutRequest,
        cancel: CancellationToken,
    ) -> Result<(PathBuf, Fetched, String), CheckoutError> {
        let (key, name) = dir_key(&req.project);
        let cache = self.work_dir.join("repos").join(&key).join(&name);
        let root = self.work_dir.join("builds").join(&key);
        let needs_commit = matches!(req.strategy, GitStrategy::Fetch | GitStrategy::Clone) && req.checkout;
        let (fetched, ws) = {
            let (cache, req, ca, cancel) = (cache.clone(), req.clone(), self.ca_file.clone(), cancel.clone());
            self.with_project(key, move |project| {
                let fetched = ensure_commit(&mut project.repo, &cache, &req, ca.as_deref(), needs_commit, &cancel)?;
                let ws = match &project.workspaces {
                    Some(ws) => ws.clone(),
                    None => {
                        let ws = Workspaces::new(&cache, &root).map_err(|e| CheckoutError::System(e.to_string()))?;
                        project.workspaces.insert(ws).clone()
                    }
                };
                Ok((fetched, ws))
            })
            .await?
        };
        let spec = CheckoutSpec {
            sha: req.sha.clone(),
            strategy: req.strategy,
            depth: req.depth,
            clean_flags: req.clean_flags.clone(),
            checkout: req.checkout,
            worktree: false,
        };
        let ca_file = self.ca_file.clone();
        let (dir, output) = blocking(move || {
            let dir = ws.prepare(req.slot, &spec).map_err(|e| match e {
                crate::workspace::WorkspaceError::CleanFlags { .. } | crate::workspace::WorkspaceError::UnknownStrategy { .. } => {
                    CheckoutError::Job(e.to_string())
                }
                e => CheckoutError::System(crate::job::error_chain(&e)),
            })?;
            if !needs_commit {
                return Ok((dir, String::new()));
            }
            let source = submodule_source(&req, ca_file);
            match submodules::update(&dir, &req.submodules, &source, &cancel) {
                Ok(output) => Ok((dir, output)),
                Err(crate::workspace::WorkspaceError::Canceled) => Err(CheckoutError::Canceled),
                // A submodule that cannot be cloned is the project's problem (its URL, its
                // access), as on GitLab, where the job fails with git's message.
                Err(e) => {
                    let mut message = e.to_string();
                    if message.contains("/-/projects/") {
                        message.push_str(
                            "\n(a relative submodule URL names a project of this piste server: it must be configured there, and name this project in its `job_token_allowlist` or be `public`)",
                        );
                    }
                    Err(CheckoutError::Job(message))
                }
            }
        })
        .await?;
        Ok((dir, fetched, output))
    }

    /// The git part of the job's reuse key ([`crate::reuse::tree_input`]: the commit's tree,
    /// or the entries matching `patterns`), read from the project's cache, into which the
    /// commit is fetched first when needed (the checkout after it then finds it there).
    pub(crate) async fn tree_input(
        &self,
        req: CheckoutRequest,
        patterns: Vec<String>,
        cancel: CancellationToken,
    ) -> Result<Vec<u8>, CheckoutError> {
        let (key, name) = dir_key(&req.project);
        let cache = self.work_dir.join("repos").join(&key).join(&name);
        let ca = self.ca_file.clone();
        self.with_project(key, move |project| {
            ensure_commit(&mut project.repo, &cache, &req, ca.as_deref(), true, &cancel)?;
            crate::reuse::tree_input(&cache, &req.sha, &patterns).map_err(CheckoutError::System)
        })
        .await
    }
}

/// Where a job's submodules come from on a runner: relative URLs resolve against
/// `<job's git URL>/-/projects/<project>.git`, which the server serves for its configured
/// projects (`../lib.git` of `group/app` is the project `group/lib`); the job token goes only
/// to URLs under the job's git URL; no `file://`, no configuration of the runner's user.
fn submodule_source(req: &CheckoutRequest, ca_file: Option<PathBuf>) -> SubmoduleSource {
    let project: Vec<&str> = req.project.split('/').filter(|c| !c.is_empty()).collect();
    SubmoduleSource {
        base_url: Some(format!("{}/-/projects/{}.git", req.url.trim_end_matches('/'), project.join("/"))),
        credentials: Some((req.url.trim_end_matches('/').to_owned(), GIT_USER.to_owned(), req.token.clone())),
        ca_file,
        allow_file: false,
        isolated: true,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, CheckoutError> + Send + 'static) -> Result<T, CheckoutError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| CheckoutError::System(format!("the checkout task failed: {e}")))?
}

/// Ensures the cache holds the job's commit (or at least some commit, when the job checks
/// nothing out) and that its HEAD points at one, as [`Workspaces::new`] requires. `opened` is
/// the cache repository if an earlier job opened it.
fn ensure_commit(
    opened: &mut Option<Repository>,
    cache: &Path,
    req: &CheckoutRequest,
    ca_file: Option<&Path>,
    needs_commit: bool,
    cancel: &CancellationToken,
) -> Result<Fetched, CheckoutError> {
    // A cache removed since (by hand, to free space) is created again, as on a first job.
    if opened.as_ref().is_some_and(|r| !r.path().is_dir()) {
        *opened = None;
    }
    let repo = match opened {
        Some(repo) => repo,
        None => opened.insert(open_or_init(cache)?),
    };
    let head = repo.head().ok().and_then(|h| h.peel_to_commit().ok()).map(|c| c.id());
    if !needs_commit && head.is_some() {
        return Ok(Fetched::Cached);
    }
    let oid = parse_sha(&req.sha)?;
    let have = |repo: &Repository| repo.find_commit(oid).is_ok();
    let mut fetched = Fetched::Cached;
    if !have(repo) {
        if let Some(dst) = ref_destination(&req.git_ref) {
            fetch(repo, req, ca_file, &format!("+{}:{dst}", req.git_ref), cancel)?;
            fetched = Fetched::Ref;
        }
        if !have(repo) {
            fetch(repo, req, ca_file, &format!("+{oid}:refs/piste/commits/{oid}"), cancel)?;
            fetched = Fetched::Commit;
            if !have(repo) {
                return Err(CheckoutError::System(format!("the server's repository has no commit {oid} (ref `{}`)", req.git_ref)));
            }
        }
    }
    if head != Some(oid) {
        repo.set_head_detached(oid).map_err(|e| CheckoutError::System(format!("cannot set HEAD in `{}`: {e}", cache.display())))?;
    }
    Ok(fetched)
}

fn open_or_init(cache: &Path) -> Result<Repository, CheckoutError> {
    let sys = |op: &str, e: &dyn std::fmt::Display| CheckoutError::System(format!("cannot {op} `{}`: {e}", cache.display()));
    if let Ok(repo) = Repository::open_ext(cache, RepositoryOpenFlags::NO_SEARCH, std::iter::empty::<&OsStr>()) {
        if repo.workdir().is_some() {
            return Ok(repo);
        }
    }
    // Missing, or damaged beyond opening (e.g. the node crashed while creating it): start over.
    match fs::symlink_metadata(cache) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(cache).map_err(|e| sys("remove", &e))?,
        Ok(_) => fs::remove_file(cache).map_err(|e| sys("remove", &e))?,
        Err(_) => {}
    }
    fs::create_dir_all(cache).map_err(|e| sys("create", &e))?;
    let repo = Repository::init(cache).map_err(|e| sys("create a repository in", &e))?;
    // HEAD moves with every new commit: keep its reflog from growing.
    repo.config().and_then(|mut c| c.set_bool("core.logAllRefUpdates", false)).map_err(|e| sys("configure", &e))?;
    Ok(repo)
}

fn parse_sha(sha: &str) -> Result<Oid, CheckoutError> {
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CheckoutError::Job(format!("`{}` is not a full commit id", sha.chars().take(80).collect::<String>())));
    }
    Oid::from_str(sha).map_err(|e| CheckoutError::Job(e.to_string()))
}

/// Where the cache keeps `git_ref` (`refs/heads/x` → `refs/piste/heads/x`); `None` for a name
/// git would not accept, which is then fetched by commit only.
fn ref_destination(git_ref: &str) -> Option<String> {
    let rest = git_ref.strip_prefix("refs/")?;
    let dst = format!("refs/piste/{rest}");
    (git2::Reference::is_valid_name(git_ref) && git2::Reference::is_valid_name(&dst)).then_some(dst)
}

fn fetch(
    repo: &Repository,
    req: &CheckoutRequest,
    ca_file: Option<&Path>,
    refspec: &str,
    cancel: &CancellationToken,
) -> Result<(), CheckoutError> {
    if req.url.starts_with("https://") {
        return fetch_with_git(repo.path(), req, ca_file, refspec, cancel);
    }
    let mut callbacks = RemoteCallbacks::new();
    let mut asked = 0u32;
    let token = req.token.clone();
    callbacks.credentials(move |_url, _user, allowed| {
        asked += 1;
        // libgit2 asks again after a 401: the token was refused, asking forever would loop.
        if asked > 2 || !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            return Err(git2::Error::from_str("the server refused the job token"));
        }
        Cred::userpass_plaintext(GIT_USER, &token)
    });
    let stop = cancel.clone();
    callbacks.transfer_progress(move |_| !stop.is_cancelled());
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks).download_tags(AutotagOption::None).update_fetchhead(false);
    let mut remote =
        repo.remote_anonymous(&req.url).map_err(|e| CheckoutError::System(format!("invalid repository URL `{}`: {e}", req.url)))?;
    match remote.fetch(&[refspec], Some(&mut opts), None) {
        Ok(()) => Ok(()),
        Err(_) if cancel.is_cancelled() => Err(CheckoutError::Canceled),
        Err(e) => {
            let refspec = refspec.trim_start_matches('+');
            tracing::warn!(url = %req.url, refspec, error = e.message(), "git fetch from the server failed");
            Err(CheckoutError::System(format!("fetching `{refspec}` from `{}` failed: {}", req.url, e.message())))
        }
    }
}

/// How often a running `git fetch` is checked for the job's cancellation.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(25);
/// The end of `git`'s error output kept for the message.
const MAX_GIT_STDERR: usize = 16 * 1024;

/// `git fetch` into `git_dir` from an `https://` server (see the module documentation).
fn fetch_with_git(
    git_dir: &Path,
    req: &CheckoutRequest,
    ca_file: Option<&Path>,
    refspec: &str,
    cancel: &CancellationToken,
) -> Result<(), CheckoutError> {
    use std::io::Read as _;
    // The shared `git` set-up (git-remote): no inherited configuration or prompt, the token as a
    // Basic `Authorization` header in `GIT_CONFIG_*` (never on the command line), no redirects,
    // `ca_file` as `http.sslCAInfo`, a low-speed timeout. Only https is allowed here.
    let mut remote = git_remote::Remote::new(&req.url).with_credentials(GIT_USER, &req.token);
    remote.ca_file = ca_file.map(Path::to_path_buf);
    let mut cmd = remote.command(git_dir);
    cmd.env("GIT_ALLOW_PROTOCOL", "https");
    cmd.args(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--"]).arg(&req.url).arg(refspec);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut child =
        cmd.spawn().map_err(|e| CheckoutError::System(format!("cannot run `git` (needed to check out from an https server): {e}")))?;
    // Read stderr on the side (bounded), so a chatty git never blocks on a full pipe.
    let stderr = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > MAX_GIT_STDERR {
                    kept.drain(..kept.len() - MAX_GIT_STDERR);
                }
            }
            kept
        })
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if cancel.is_cancelled() => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CheckoutError::Canceled);
            }
            Ok(None) => std::thread::sleep(CANCEL_POLL),
            Err(e) => return Err(CheckoutError::System(format!("waiting for `git fetch`: {e}"))),
        }
    };
    let message = stderr.and_then(|t| t.join().ok()).map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let refspec = refspec.trim_start_matches('+');
    // git never prints the header; the token is masked all the same, should it ever.
    let message = message.replace(&req.token, "[MASKED]");
    let message = if message.is_empty() { format!("git exited with {status}") } else { message };
    tracing::warn!(url = %req.url, refspec, error = %message, "git fetch from the server failed");
    Err(CheckoutError::System(format!("fetching `{refspec}` from `{}` failed: {message}", req.url)))
}

/// `(key, name)` for a project: `key` is unique per project name and safe as a directory
/// name; `name` is the last path component, safe, for the checkout's directory.
fn dir_key(project: &str) -> (String, String) {
    let safe = |s: &str| -> String {
        let s: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect();
        if s.is_empty() || s.bytes().all(|b| b == b'.') { "project".to_owned() } else { s.chars().take(64).collect() }
    };
    let name = safe(project.rsplit('/').find(|c| !c.is_empty()).unwrap_or(""));
    let hash = hex::encode(&Sha256::digest(project.as_bytes())[..6]);
    (format!("{}-{hash}", safe(project)), name)
}

/// `/builds/<project>` for container jobs: the project's path components, made safe.
pub(crate) fn container_project_dir(project: &str) -> String {
    let parts: Vec<String> = project
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .map(|c| c.chars().map(|ch| if ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-') { ch } else { '-' }).collect())
        .collect();
    if parts.is_empty() { "/builds/project".to_owned() } else { format!("/builds/{}", parts.join("/")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_keys_are_safe_and_distinct() {
        let (k1, n1) = dir_key("group/app");
        let (k2, n2) = dir_key("group-app");
        assert_ne!(k1, k2);
        assert_eq!((n1.as_str(), n2.as_str()), ("app", "group-app"));
        assert!(k1.starts_with("group-app-"));
        let (k, n) = dir_key("../..");
        assert!(!k.contains('/') && n == "project", "{k} {n}");
    }

    #[test]
    fn container_dirs() {
        assert_eq!(container_project_dir("group/app"), "/builds/group/app");
        assert_eq!(container_project_dir("../x/./y"), "/builds/x/y");
        assert_eq!(container_project_dir(""), "/builds/project");
        assert_eq!(container_project_dir("a b"), "/builds/a-b");
    }

    #[test]
    fn refs() {
        assert_eq!(ref_destination("refs/heads/main").as_deref(), Some("refs/piste/heads/main"));
        assert_eq!(ref_destination("refs/merge-requests/3/head").as_deref(), Some("refs/piste/merge-requests/3/head"));
        assert_eq!(ref_destination("main"), None);
        assert_eq!(ref_destination("refs/heads/a..b"), None);
    }
}
