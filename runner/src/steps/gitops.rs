//! `piste/gitops-bump@v1`: change one value in a deployment repository, commit, push.
//!
//! Everything happens in the runner process with git2, in a cached bare clone under the
//! runner's own directory (never the job's workspace): credentials go through git2's callbacks
//! only, so they are written nowhere. The file is changed with [`super::yaml_edit`] (only the
//! targeted value's bytes change) and committed as a blob and tree update on the fetched tip; no
//! working tree is needed.
//!
//! Safety rules: never a force push (`refs/heads/B` is updated only from the tip it was fetched
//! at); a rejected push (someone pushed first) is retried on the new tip, at most
//! [`MAX_ATTEMPTS`] times with jitter; bumps of one repository and branch are serialised within
//! the process; a bump never overwrites a value set by a newer pipeline of the same project (the
//! `Piste-*` trailers of the last bump of the same target say which pipeline set it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use git2::{FetchOptions, PushOptions, RemoteCallbacks, Repository};
use sha2::{Digest as _, Sha256};

use super::yaml_edit::{self, Edit, EditError};

/// How many times a bump is tried when pushes are rejected because the branch moved.
pub const MAX_ATTEMPTS: u32 = 6;

/// What to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A dotted key path in a YAML file (Helm values): `image.tag`.
    Key(String),
    /// The `images:` entry of a kustomization with this `name`.
    KustomizeImage(String),
    /// A Flux setter marker: `ns:name`, or with a `:tag` / `:name` / `:digest` suffix.
    ImagePolicy(String),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Key(k) => format!("key `{k}`"),
            Target::KustomizeImage(n) => format!("kustomize image `{n}`"),
            Target::ImagePolicy(p) => format!("Flux marker `{p}`"),
        }
    }

    /// The `Piste-Target:` trailer: file and target, so that bumps of other values of the same
    /// file do not count as "newer".
    fn trailer(&self, file: &str) -> String {
        match self {
            Target::Key(k) => format!("{file}#key={k}"),
            Target::KustomizeImage(n) => format!("{file}#kustomize_image={n}"),
            Target::ImagePolicy(p) => format!("{file}#imagepolicy={p}"),
        }
    }

    fn apply(&self, text: &str, value: &str) -> Result<Edit, EditError> {
        match self {
            Target::Key(k) => yaml_edit::set_key_path(text, k, value),
            Target::KustomizeImage(n) => yaml_edit::set_kustomize_image(text, n, value),
            Target::ImagePolicy(p) => yaml_edit::set_flux_marker(text, p, value),
        }
    }
}

/// How to authenticate to the remote.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    /// https: a token (`oauth2` as the user unless one is given).
    Token { user: String, token: String },
    /// ssh: a private key (PEM/OpenSSH text).
    SshKey(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "None",
            Auth::Token { .. } => "Token(..)",
            Auth::SshKey(_) => "SshKey(..)",
        })
    }
}

/// Who bumps, for the commit's trailers and the newer-pipeline rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub project: String,
    pub pipeline: u64,
    pub job: String,
}

/// One bump.
#[derive(Debug, Clone)]
pub struct Bump {
    pub repo: String,
    /// `None`: the remote's default branch.
    pub branch: Option<String>,
    pub file: String,
    pub target: Target,
    pub value: String,
    pub auth: Auth,
    /// `Name <email>`.
    pub author: Option<String>,
    pub message: Option<String>,
    pub origin: Origin,
    /// Where cached clones live (the runner's, never a job's).
    pub cache_dir: PathBuf,
}

/// How a bump ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bumped {
    /// The commit that holds the value: the one pushed, or the branch's tip when nothing changed.
    pub commit: String,
    pub changed: bool,
    pub branch: String,
    /// For the log: what happened, in order.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BumpError {
    /// The inputs or the repository's content are wrong: the user's to fix.
    #[error("{0}")]
    Input(String),
    /// The server refused the push (a hook, a protected branch): its message.
    #[error("the push to `{branch}` was refused: {message}")]
    Refused { branch: String, message: String },
    #[error("{what}: {source}")]
    Git { what: String, source: git2::Error },
    #[error("the branch kept moving: the push was rejected {0} times; try again")]
    TooManyAttempts(u32),
    #[error("{0}")]
    Io(String),
}

fn git(what: impl Into<String>) -> impl FnOnce(git2::Error) -> BumpError {
    let what = what.into();
    move |source| BumpError::Git { what, source }
}

/// Bumps of one repository and branch wait for each other within this process.
static LOCKS: LazyLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = LazyLock::new(Default::default);

fn lock_for(key: &str) -> Arc<Mutex<()>> {
    let mut map = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    // Forget locks nobody holds, so the map stays as small as the bumps in flight.
    map.retain(|_, l| Arc::strong_count(l) > 1);
    map.entry(key.to_string()).or_default().clone()
}

/// Runs one bump to its end. Blocking: call it from `spawn_blocking`.
pub fn bump(b: &Bump) -> Result<Bumped, BumpError> {
    if b.file.starts_with('/') || b.file.split('/').any(|c| c == ".." || c == ".git") || b.file.is_empty() {
        return Err(BumpError::Input(format!("`file: {}` must be a path inside the repository", b.file)));
    }
    check_transport(&b.repo)?;
    let repo = cached_clone(&b.cache_dir, &b.repo)?;
    let mut notes = Vec::new();
    let branch = match &b.branch {
        Some(br) if !br.is_empty() => br.trim_start_matches("refs/heads/").to_string(),
        _ => {
            let br = default_branch(&repo, &b.repo, &b.auth)?;
            notes.push(format!("The remote's default branch is `{br}`"));
            br
        }
    };
    if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
        return Err(BumpError::Input(format!("`{branch}` is not a valid branch name")));
    }
    let lock = lock_for(&format!("{}\n{branch}", b.repo));
    let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
    let tracking = format!("refs/piste/remote/{branch}");
    for attempt in 1..=MAX_ATTEMPTS {
        let tip = fetch(&repo, &b.repo, &branch, &tracking, &b.auth)?;
        let tip_commit = repo.find_commit(tip).map_err(git("reading the fetched tip"))?;
        notes.push(format!("Fetched `{branch}` at {}", short(tip)));
        if let Some((pipeline, commit)) = newer_bump(&repo, tip, &b.origin, &b.target.trailer(&b.file))? {
            notes.push(format!(
                "Skipped: pipeline {pipeline} of `{}` (newer than this pipeline, {}) set this value in {}",
                b.origin.project,
                b.origin.pipeline,
                short(commit)
            ));
            return Ok(Bumped { commit: tip.to_string(), changed: false, branch, notes });
        }
        let tree = tip_commit.tree().map_err(git("reading the tip's tree"))?;
        let entry = tree
            .get_path(Path::new(&b.file))
            .map_err(|_| BumpError::Input(format!("`{}` does not exist on `{branch}` of `{}`", b.file, b.repo)))?;
        let blob = repo.find_blob(entry.id()).map_err(|_| BumpError::Input(format!("`{}` is not a file on `{branch}`", b.file)))?;
        let text = std::str::from_utf8(blob.content()).map_err(|_| BumpError::Input(format!("`{}` is not UTF-8 text", b.file)))?;
        let edit = b.target.apply(text, &b.value).map_err(|e| BumpError::Input(format!("`{}`: {e}", b.file)))?;
        if !edit.changed() {
            notes.push(format!("`{}` already has {} = `{}`: nothing to commit", b.file, b.target.describe(), b.value));
            return Ok(Bumped { commit: tip.to_string(), changed: false, branch, notes });
        }
        let commit = commit_edit(&repo, &tip_commit, b, &edit)?;
        notes.push(format!("Changed {} in `{}`: `{}` → `{}` (commit {})", b.target.describe(), b.file, edit.old, edit.new, short(commit)));
        match push(&repo, &b.repo, commit, &branch, &b.auth)? {
            Pushed::Done => {
                notes.push(format!("Pushed {} to `{branch}` of `{}`", short(commit), b.repo));
                return Ok(Bumped { commit: commit.to_string(), changed: true, branch, notes });
            }
            Pushed::Moved(why) => {
                notes
                    .push(format!("The push was rejected ({why}): the branch moved; fetching and trying again ({attempt}/{MAX_ATTEMPTS})"));
                // Jitter, so that bumps racing from several runners do not collide again.
                let ms = 20 * u64::from(attempt) + getrandom::u64().unwrap_or(0) % (50 * u64::from(attempt));
                std::thread::sleep(Duration::from_millis(ms));
            }
            Pushed::Refused(message) => return Err(BumpError::Refused { branch, message }),
        }
    }
    Err(BumpError::TooManyAttempts(MAX_ATTEMPTS))
}

/// A repository URL this runner can reach: a clear error for a relative path (relative to
/// what?) and for a transport libgit2 was built without (this build has no TLS and no ssh
/// backend, like the server's mirrors: see the README).
fn check_transport(url: &str) -> Result<(), BumpError> {
    let version = git2::Version::get();
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let scp_like = scheme.is_none() && url.split_once(':').is_some_and(|(host, _)| !host.contains('/'));
    match scheme.as_deref() {
        Some("https") | Some("http") if !version.https() => Err(BumpError::Input(format!(
            "`{url}`: this runner's git library was built without https support; use a git:// URL or a path for now"
        ))),
        Some("ssh") | Some("git+ssh") if !version.ssh() => Err(BumpError::Input(format!(
            "`{url}`: this runner's git library was built without ssh support; use a git:// URL or a path for now"
        ))),
        None if scp_like && !version.ssh() => Err(BumpError::Input(format!(
            "`{url}`: this runner's git library was built without ssh support; use a git:// URL or a path for now"
        ))),
        None if !scp_like && !url.starts_with('/') => {
            Err(BumpError::Input(format!("`repo: {url}` is a relative path: give an absolute path or a URL")))
        }
        _ => Ok(()),
    }
}

fn short(oid: git2::Oid) -> String {
    oid.to_string()[..12].to_string()
}

/// The bare repository caching `url`'s objects.
fn cached_clone(cache_dir: &Path, url: &str) -> Result<Repository, BumpError> {
    let name = hex::encode(&Sha256::digest(url.as_bytes())[..12]);
    let dir = cache_dir.join("gitops").join(name);
    match Repository::open_bare(&dir) {
        Ok(r) => Ok(r),
        Err(_) => {
            std::fs::create_dir_all(&dir).map_err(|e| BumpError::Io(format!("cannot create `{}`: {e}", dir.display())))?;
            Repository::init_bare(&dir).map_err(git(format!("creating a cache repository in `{}`", dir.display())))
        }
    }
}

fn callbacks<'a>(auth: &'a Auth, remote_messages: Option<&'a std::cell::RefCell<String>>) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let mut tries = 0;
    cb.credentials(move |_url, user_from_url, allowed| {
        tries += 1;
        if tries > 3 {
            return Err(git2::Error::from_str("the remote refused the credentials"));
        }
        match auth {
            Auth::Token { user, token } if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) => {
                git2::Cred::userpass_plaintext(user, token)
            }
            Auth::SshKey(key) if allowed.contains(git2::CredentialType::SSH_KEY) => {
                git2::Cred::ssh_key_from_memory(user_from_url.unwrap_or("git"), None, key, None)
            }
            Auth::SshKey(_) if allowed.contains(git2::CredentialType::USERNAME) => git2::Cred::username(user_from_url.unwrap_or("git")),
            _ => Err(git2::Error::from_str(
                "the remote asks for credentials: give `credentials_variable` (https) or `ssh_key_variable` (ssh)",
            )),
        }
    });
    if let Some(messages) = remote_messages {
        cb.sideband_progress(move |data| {
            let mut m = messages.borrow_mut();
            if m.len() < 16 * 1024 {
                m.push_str(&String::from_utf8_lossy(data));
            }
            true
        });
    }
    cb
}

fn default_branch(repo: &Repository, url: &str, auth: &Auth) -> Result<String, BumpError> {
    let mut remote = repo.remote_anonymous(url).map_err(git(format!("opening `{url}`")))?;
    let conn =
        remote.connect_auth(git2::Direction::Fetch, Some(callbacks(auth, None)), None).map_err(git(format!("connecting to `{url}`")))?;
    let head = conn.default_branch().map_err(git(format!("reading the default branch of `{url}`")))?;
    let head = head.as_str().unwrap_or_default();
    head.strip_prefix("refs/heads/")
        .map(str::to_string)
        .ok_or_else(|| BumpError::Input(format!("`{url}` has no default branch: give `branch:`")))
}

fn fetch(repo: &Repository, url: &str, branch: &str, tracking: &str, auth: &Auth) -> Result<git2::Oid, BumpError> {
    let mut remote = repo.remote_anonymous(url).map_err(git(format!("opening `{url}`")))?;
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks(auth, None));
    opts.download_tags(git2::AutotagOption::None);
    let refspec = format!("+refs/heads/{branch}:{tracking}");
    remote.fetch(&[&refspec], Some(&mut opts), None).map_err(git(format!("fetching `{branch}` from `{url}`")))?;
    repo.refname_to_id(tracking).map_err(|_| BumpError::Input(format!("`{url}` has no branch `{branch}`")))
}

/// The most recent bump of `target` by a newer pipeline of the same project, if its commit is
/// the last bump of that target (looked for in the last 1,000 commits).
fn newer_bump(repo: &Repository, tip: git2::Oid, origin: &Origin, target: &str) -> Result<Option<(u64, git2::Oid)>, BumpError> {
    let mut walk = repo.revwalk().map_err(git("walking history"))?;
    walk.push(tip).map_err(git("walking history"))?;
    walk.simplify_first_parent().map_err(git("walking history"))?;
    for oid in walk.take(1000) {
        let oid = oid.map_err(git("walking history"))?;
        let commit = repo.find_commit(oid).map_err(git("reading a commit"))?;
        let Ok(message) = commit.message() else { continue };
        let Ok(trailers) = git2::message_trailers_strs(message) else { continue };
        let get = |k: &str| trailers.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.trim().to_string());
        if get("Piste-Project").as_deref() != Some(origin.project.as_str()) || get("Piste-Target").as_deref() != Some(target) {
            continue;
        }
        let pipeline = get("Piste-Pipeline").and_then(|p| p.parse::<u64>().ok()).unwrap_or(0);
        return Ok((pipeline > origin.pipeline).then_some((pipeline, oid)));
    }
    Ok(None)
}

fn commit_edit(repo: &Repository, parent: &git2::Commit<'_>, b: &Bump, edit: &Edit) -> Result<git2::Oid, BumpError> {
    let blob = repo.blob(edit.text.as_bytes()).map_err(git("writing the file"))?;
    let tree = parent.tree().map_err(git("reading the tip's tree"))?;
    let mode = tree.get_path(Path::new(&b.file)).map(|e| e.filemode()).unwrap_or(0o100644);
    let mut update = git2::build::TreeUpdateBuilder::new();
    update.upsert(&b.file, blob, if mode == 0o100755 { git2::FileMode::BlobExecutable } else { git2::FileMode::Blob });
    let new_tree = update.create_updated(repo, &tree).map_err(git("writing the tree"))?;
    let new_tree = repo.find_tree(new_tree).map_err(git("writing the tree"))?;
    let (name, email) = parse_author(b.author.as_deref())?;
    let sig = git2::Signature::now(&name, &email).map_err(git("making the commit's author"))?;
    let subject =
        b.message.clone().unwrap_or_else(|| format!("Bump {} in {} to {}", b.target.describe().replace('`', ""), b.file, b.value));
    let message = format!(
        "{}\n\nPiste-Project: {}\nPiste-Pipeline: {}\nPiste-Job: {}\nPiste-Target: {}\n",
        subject.lines().next().unwrap_or_default(),
        b.origin.project,
        b.origin.pipeline,
        b.origin.job,
        b.target.trailer(&b.file)
    );
    repo.commit(None, &sig, &sig, &message, &new_tree, &[parent]).map_err(git("writing the commit"))
}

fn parse_author(author: Option<&str>) -> Result<(String, String), BumpError> {
    let Some(a) = author.filter(|a| !a.trim().is_empty()) else { return Ok(("piste".into(), "piste@localhost".into())) };
    match (a.find('<'), a.rfind('>')) {
        (Some(l), Some(r)) if l < r => Ok((a[..l].trim().to_string(), a[l + 1..r].trim().to_string())),
        _ => Err(BumpError::Input(format!("`author: {a}` must read `Name <email>`"))),
    }
}

enum Pushed {
    Done,
    /// The branch moved since it was fetched.
    Moved(String),
    /// The server said no for another reason: its message.
    Refused(String),
}

fn push(repo: &Repository, url: &str, commit: git2::Oid, branch: &str, auth: &Auth) -> Result<Pushed, BumpError> {
    // One per branch: bumps of other branches of the same repository may run at the same time.
    let local = format!("refs/piste/push/{branch}");
    repo.reference(&local, commit, true, "piste gitops bump").map_err(git("preparing the push"))?;
    let messages = std::cell::RefCell::new(String::new());
    let status: std::cell::RefCell<Option<String>> = std::cell::RefCell::new(None);
    let result = {
        let mut cb = callbacks(auth, Some(&messages));
        cb.push_update_reference(|_refname, st| {
            if let Some(st) = st {
                *status.borrow_mut() = Some(st.to_string());
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb);
        let mut remote = repo.remote_anonymous(url).map_err(git(format!("opening `{url}`")))?;
        // No `+`: never a force push.
        remote.push(&[&format!("{local}:refs/heads/{branch}")], Some(&mut opts))
    };
    let remote_text = messages.into_inner();
    let remote_text: String =
        remote_text.lines().map(|l| l.trim_end_matches('\r').trim()).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n");
    let moved = |s: &str| {
        let s = s.to_ascii_lowercase();
        [
            "non-fast-forward",
            "fetch first",
            "cannot lock ref",
            "failed to lock",
            "stale info",
            "not present locally",
            "failed to update ref",
        ]
        .iter()
        .any(|w| s.contains(w))
    };
    match (result, status.into_inner()) {
        (Err(e), _) if e.code() == git2::ErrorCode::NotFastForward || moved(e.message()) => Ok(Pushed::Moved(e.message().to_string())),
        (Err(e), _) => {
            if remote_text.is_empty() {
                Err(BumpError::Git { what: format!("pushing to `{url}`"), source: e })
            } else {
                Ok(Pushed::Refused(format!("{}\n{remote_text}", e.message())))
            }
        }
        (Ok(()), Some(st)) if moved(&st) => Ok(Pushed::Moved(st)),
        (Ok(()), Some(st)) => Ok(Pushed::Refused(if remote_text.is_empty() { st } else { format!("{st}\n{remote_text}") })),
        (Ok(()), None) => Ok(Pushed::Done),
    }
}
