//! `piste/gitops-bump@v1`: change one value in a deployment repository, commit, push.
//!
//! Everything happens in the runner process, in a cached bare clone under the runner's own
//! directory (never the job's workspace). The repository is reached by [`link`]: libgit2 for
//! `git://` and paths, the `git` program for `https://` and ssh (credentials in its environment
//! or in private temporary files, never on a command line, in a job's files or in a log). The
//! file is changed with [`super::yaml_edit`] (only the targeted value's bytes change) and
//! committed as a blob and tree update on the fetched tip with git2; no working tree is needed.
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

use git2::Repository;
use sha2::{Digest as _, Sha256};

use self::link::{Link, Pushed};
use super::yaml_edit::{self, Edit, EditError};

mod link;

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

    /// Edits `text` (the content of `file`). In Argo CD's `.argocd-source-<app>.yaml`, `key`
    /// names a `helm.parameters` entry and `kustomize_image` a `kustomize.images` item.
    fn apply(&self, file: &str, text: &str, value: &str) -> Result<Edit, EditError> {
        let argocd = yaml_edit::is_argocd_source(file);
        match self {
            Target::Key(k) if argocd => yaml_edit::set_argocd_helm_parameter(text, k, value),
            Target::KustomizeImage(n) if argocd => yaml_edit::set_argocd_kustomize_image(text, n, value),
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
    /// https: a token (`oauth2` as the user unless one is given), sent as Basic credentials.
    Token { user: String, token: String },
    /// ssh: a private key (PEM/OpenSSH text, without a passphrase).
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
    /// https: a PEM bundle of the certificate authorities to trust (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// ssh: `known_hosts` lines for the server (default: the runner user's
    /// `~/.ssh/known_hosts`); host keys are always checked strictly.
    pub known_hosts: Option<String>,
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
    /// The `git` program failed (https, ssh): what was being done, the redacted URL and git's
    /// own message, scrubbed of credentials.
    #[error("{what}: {source}")]
    Remote { what: String, source: git_remote::RemoteError },
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
    let link = Link::open(&b.repo, &b.auth, b.ca_file.as_deref(), b.known_hosts.as_deref())?;
    let shown = link.shown();
    let repo = cached_clone(&b.cache_dir, &shown)?;
    let mut notes = Vec::new();
    let branch = match &b.branch {
        Some(br) if !br.is_empty() => br.trim_start_matches("refs/heads/").to_string(),
        _ => {
            let br = link.default_branch(&repo)?;
            notes.push(format!("The remote's default branch is `{br}`"));
            br
        }
    };
    if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
        return Err(BumpError::Input(format!("`{branch}` is not a valid branch name")));
    }
    let lock = lock_for(&format!("{shown}\n{branch}"));
    let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
    let tracking = format!("refs/piste/remote/{branch}");
    for attempt in 1..=MAX_ATTEMPTS {
        let tip = link.fetch(&repo, &branch, &tracking)?;
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
            .map_err(|_| BumpError::Input(format!("`{}` does not exist on `{branch}` of `{shown}`", b.file)))?;
        let blob = repo.find_blob(entry.id()).map_err(|_| BumpError::Input(format!("`{}` is not a file on `{branch}`", b.file)))?;
        let text = std::str::from_utf8(blob.content()).map_err(|_| BumpError::Input(format!("`{}` is not UTF-8 text", b.file)))?;
        let edit = b.target.apply(&b.file, text, &b.value).map_err(|e| BumpError::Input(format!("`{}`: {e}", b.file)))?;
        if !edit.changed() {
            notes.push(format!("`{}` already has {} = `{}`: nothing to commit", b.file, b.target.describe(), b.value));
            return Ok(Bumped { commit: tip.to_string(), changed: false, branch, notes });
        }
        let commit = commit_edit(&repo, &tip_commit, b, &edit)?;
        notes.push(format!("Changed {} in `{}`: `{}` → `{}` (commit {})", b.target.describe(), b.file, edit.old, edit.new, short(commit)));
        // One ref per branch: bumps of other branches of the same repository may run at once.
        let local = format!("refs/piste/push/{branch}");
        repo.reference(&local, commit, true, "piste gitops bump").map_err(git("preparing the push"))?;
        match link.push(&repo, &local, &branch)? {
            Pushed::Done => {
                notes.push(format!("Pushed {} to `{branch}` of `{shown}`", short(commit)));
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
