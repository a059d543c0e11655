//! How a bump reaches the deployment repository: fetch a branch, learn the default branch,
//! push a commit without force.
//!
//! `git://`, `file://` and paths go through libgit2 in this process (one connection, no
//! process). `https://`, `http://`, `ssh://` and scp-like `user@host:path` go through the `git`
//! program ([`git_remote::Remote`]), as the server's mirrors do: libgit2 is built here without
//! TLS or ssh (see ARCHITECTURE.md, "TLS"). Credentials reach `git` only through its
//! environment (an `Authorization` header in `GIT_CONFIG_*`) or, for an ssh key and known
//! hosts given as text, through files in a private temporary directory of the runner's
//! (mode 0700, outside every job's workspace) removed when the bump ends. Nothing is prompted.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use git_remote::{Remote, RemoteError};
use git2::{FetchOptions, PushOptions, RemoteCallbacks, Repository};

use super::{Auth, BumpError, git};

/// What a push did.
pub(super) enum Pushed {
    Done,
    /// The branch moved since it was fetched.
    Moved(String),
    /// The server said no for another reason: its message.
    Refused(String),
}

/// A deployment repository and the way to reach it.
pub(super) enum Link {
    /// libgit2, in this process.
    InProcess { url: String },
    /// The `git` program; `_secrets` holds the key and known hosts files while the bump runs.
    Program { remote: Remote, _secrets: Option<tempfile::TempDir> },
}

impl Link {
    /// The link for `url` with `auth`, `ca_file` (https) and `known_hosts` (ssh, as text).
    pub(super) fn open(url: &str, auth: &Auth, ca_file: Option<&Path>, known_hosts: Option<&str>) -> Result<Link, BumpError> {
        let mut remote = Remote::new(url);
        let shown = remote.to_string();
        if remote.in_process() {
            if !matches!(auth, Auth::None) {
                return Err(BumpError::Input(format!(
                    "`{shown}` takes no credentials: `credentials_variable` is for https:// URLs, `ssh_key_variable` for ssh ones"
                )));
            }
            if !url.contains("://") && !url.starts_with('/') {
                return Err(BumpError::Input(format!("`repo: {url}` is a relative path: give an absolute path or a URL")));
            }
            return Ok(Link::InProcess { url: url.to_string() });
        }
        let mut secrets = None;
        if remote.is_http() {
            match auth {
                Auth::Token { user, token } => remote = remote.with_credentials(user, token),
                Auth::SshKey(_) => {
                    return Err(BumpError::Input(format!("`{shown}` is an https URL: `ssh_key_variable` is for ssh ones")));
                }
                Auth::None => {}
            }
            let loopback = matches!(remote.host(), Some("127.0.0.1" | "::1" | "localhost"));
            if remote.url().starts_with("http://") && remote.has_credentials() && !loopback {
                return Err(BumpError::Input(format!(
                    "`{shown}`: credentials are not sent over plain http: use https:// (give `ca_file` for a private authority)"
                )));
            }
            remote.ca_file = ca_file.map(Path::to_path_buf);
        } else if remote.is_ssh() {
            match auth {
                Auth::SshKey(key) => {
                    let dir = private_dir()?;
                    remote.ssh_key = Some(write_private(dir.path(), "key", &normalise_key(key)?)?);
                    secrets = Some(dir);
                }
                Auth::Token { .. } => {
                    return Err(BumpError::Input(format!("`{shown}` is an ssh URL: `credentials_variable` is for https ones")));
                }
                Auth::None => {}
            }
            if let Some(hosts) = known_hosts {
                let dir = match secrets.take() {
                    Some(d) => d,
                    None => private_dir()?,
                };
                remote.known_hosts = Some(write_private(dir.path(), "known_hosts", &format!("{}\n", hosts.trim_end()))?);
                secrets = Some(dir);
            }
        } else {
            return Err(BumpError::Input(format!("`{shown}`: unsupported URL (paths, git://, file://, https:// and ssh are)")));
        }
        Ok(Link::Program { remote, _secrets: secrets })
    }

    /// The URL without credentials, for messages and the cache's name.
    pub(super) fn shown(&self) -> String {
        match self {
            Link::InProcess { url } => url.clone(),
            Link::Program { remote, .. } => remote.to_string(),
        }
    }

    /// The remote's default branch.
    pub(super) fn default_branch(&self, repo: &Repository) -> Result<String, BumpError> {
        let shown = self.shown();
        let head = match self {
            Link::InProcess { url } => {
                let mut remote = repo.remote_anonymous(url).map_err(git(format!("opening `{url}`")))?;
                let conn = remote.connect_auth(git2::Direction::Fetch, None, None).map_err(git(format!("connecting to `{url}`")))?;
                let head = conn.default_branch().map_err(git(format!("reading the default branch of `{url}`")))?;
                head.as_str().unwrap_or_default().to_string()
            }
            Link::Program { remote, .. } => {
                let listed = remote
                    .run(repo.path(), &["ls-remote", "--symref"], &["HEAD"])
                    .map_err(|e| failed(remote, "listing the branches", e))?;
                listed.lines().find_map(|l| l.strip_prefix("ref: ")).and_then(|l| l.split('\t').next()).unwrap_or_default().to_string()
            }
        };
        head.strip_prefix("refs/heads/")
            .map(str::to_string)
            .ok_or_else(|| BumpError::Input(format!("`{shown}` has no default branch: give `branch:`")))
    }

    /// Fetches `branch` into `tracking`; its commit.
    pub(super) fn fetch(&self, repo: &Repository, branch: &str, tracking: &str) -> Result<git2::Oid, BumpError> {
        let refspec = format!("+refs/heads/{branch}:{tracking}");
        let shown = self.shown();
        match self {
            Link::InProcess { url } => {
                let mut remote = repo.remote_anonymous(url).map_err(git(format!("opening `{url}`")))?;
                let mut opts = FetchOptions::new();
                opts.download_tags(git2::AutotagOption::None);
                remote.fetch(&[&refspec], Some(&mut opts), None).map_err(git(format!("fetching `{branch}` from `{url}`")))?;
            }
            Link::Program { remote, .. } => {
                let out = remote
                    .output(repo.path(), &["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-gc"], &[&refspec])
                    .map_err(|e| failed(remote, "fetching", e))?;
                if !out.status.success() {
                    let e = remote.error(&out);
                    if e.message.contains("couldn't find remote ref") {
                        return Err(BumpError::Input(format!("`{shown}` has no branch `{branch}`")));
                    }
                    return Err(failed(remote, &format!("fetching `{branch}`"), e));
                }
            }
        }
        repo.refname_to_id(tracking).map_err(|_| BumpError::Input(format!("`{shown}` has no branch `{branch}`")))
    }

    /// Pushes `local` (a ref of `repo`) to `refs/heads/<branch>`, never forced.
    pub(super) fn push(&self, repo: &Repository, local: &str, branch: &str) -> Result<Pushed, BumpError> {
        // No `+`: never a force push.
        let refspec = format!("{local}:refs/heads/{branch}");
        match self {
            Link::InProcess { url } => push_in_process(repo, url, &refspec),
            Link::Program { remote, .. } => {
                let out = remote
                    .output(repo.path(), &["push", "--porcelain", "--no-verify"], &[&refspec])
                    .map_err(|e| failed(remote, "pushing", e))?;
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                if out.status.success() {
                    return Ok(Pushed::Done);
                }
                // `!\t<src>:<dst>\t[rejected] (fetch first)` or `[remote rejected] (pre-receive hook declined)`.
                let Some(status) = stdout.lines().find(|l| l.starts_with('!')).and_then(|l| l.split('\t').nth(2)) else {
                    return Err(failed(remote, "pushing", remote.error(&out)));
                };
                let status = remote.scrub(status);
                if moved(&status) {
                    return Ok(Pushed::Moved(status));
                }
                let said: Vec<&str> =
                    stderr.lines().filter_map(|l| l.strip_prefix("remote:")).map(str::trim).filter(|l| !l.is_empty()).collect();
                Ok(Pushed::Refused(if said.is_empty() { status } else { format!("{status}\n{}", said.join("\n")) }))
            }
        }
    }
}

/// A failure of the `git` program, with a hint when the remote wanted credentials.
fn failed(remote: &Remote, what: &str, e: RemoteError) -> BumpError {
    let asked = e.message.contains("could not read Username") || e.message.contains("terminal prompts disabled");
    let hint = if asked && remote.has_credentials() {
        " (the remote refused the credentials: check the token `credentials_variable` names)"
    } else if asked {
        " (the remote asks for credentials: give `credentials_variable`)"
    } else if e.message.contains("Permission denied (publickey") {
        " (give `ssh_key_variable` with a key the server accepts)"
    } else if e.message.contains("Host key verification failed") {
        " (give `known_hosts_variable` with the server's host key)"
    } else {
        ""
    };
    BumpError::Remote { what: format!("{what}{hint}"), source: e }
}

/// Whether a push status says the branch moved since it was fetched (retry), rather than a
/// refusal.
fn moved(status: &str) -> bool {
    let s = status.to_ascii_lowercase();
    ["non-fast-forward", "fetch first", "cannot lock ref", "failed to lock", "stale info", "not present locally", "failed to update ref"]
        .iter()
        .any(|w| s.contains(w))
}

fn push_in_process(repo: &Repository, url: &str, refspec: &str) -> Result<Pushed, BumpError> {
    let messages = std::cell::RefCell::new(String::new());
    let status: std::cell::RefCell<Option<String>> = std::cell::RefCell::new(None);
    let result = {
        let mut cb = RemoteCallbacks::new();
        cb.sideband_progress(|data| {
            let mut m = messages.borrow_mut();
            if m.len() < 16 * 1024 {
                m.push_str(&String::from_utf8_lossy(data));
            }
            true
        });
        cb.push_update_reference(|_refname, st| {
            if let Some(st) = st {
                *status.borrow_mut() = Some(st.to_string());
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb);
        let mut remote = repo.remote_anonymous(url).map_err(git(format!("opening `{url}`")))?;
        remote.push(&[refspec], Some(&mut opts))
    };
    let remote_text = messages.into_inner();
    let remote_text: String =
        remote_text.lines().map(|l| l.trim_end_matches('\r').trim()).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n");
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

/// A directory only this user may enter, in the system's temporary directory (never a job's
/// workspace); removed when dropped.
fn private_dir() -> Result<tempfile::TempDir, BumpError> {
    use std::os::unix::fs::PermissionsExt as _;
    tempfile::Builder::new()
        .prefix("piste-gitops-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| BumpError::Io(format!("cannot create a private temporary directory: {e}")))
}

/// `text` in `dir/name`, mode 0600, created here.
fn write_private(dir: &Path, name: &str, text: &str) -> Result<PathBuf, BumpError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| BumpError::Io(format!("cannot create `{}`: {e}", path.display())))?;
    f.write_all(text.as_bytes()).map_err(|e| BumpError::Io(format!("cannot write `{}`: {e}", path.display())))?;
    Ok(path)
}

/// An ssh private key as OpenSSH reads it: `\n` line ends and a final newline (keys pasted into
/// CI variables often lose it, and `ssh` then says "error in libcrypto").
fn normalise_key(key: &str) -> Result<String, BumpError> {
    let key = key.replace("\r\n", "\n");
    let key = key.trim();
    if !(key.starts_with("-----BEGIN ") && key.contains("PRIVATE KEY-----")) {
        return Err(BumpError::Input(
            "the variable `ssh_key_variable` names does not hold a private key (`-----BEGIN … PRIVATE KEY-----`)".into(),
        ));
    }
    Ok(format!("{key}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_and_credentials_are_checked_before_anything_runs() {
        let token = Auth::Token { user: "ci".into(), token: "tok-1234567890".into() };
        let err = |url: &str, auth: &Auth| match Link::open(url, auth, None, None) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("`{url}` was accepted"),
        };
        assert!(err("git://h/deploy.git", &token).contains("takes no credentials"));
        assert!(err("http://forge.example/deploy.git", &token).contains("not sent over plain http"));
        assert!(err("https://h/d.git", &Auth::SshKey("k".into())).contains("is an https URL"));
        assert!(err("ssh://git@h/d.git", &token).contains("is an ssh URL"));
        assert!(err("git@h:d.git", &Auth::SshKey("not a key".into())).contains("does not hold a private key"));
        assert!(err("deploy.git", &Auth::None).contains("relative path"));
        assert!(matches!(Link::open("http://127.0.0.1:8080/d.git", &token, None, None), Ok(Link::Program { .. })));
        assert!(matches!(Link::open("/srv/deploy.git", &Auth::None, None, None), Ok(Link::InProcess { .. })));
        let shown = Link::open("https://ci:tok-1234567890@h/d.git", &Auth::None, None, None).unwrap().shown();
        assert_eq!(shown, "https://h/d.git");
    }

    #[test]
    fn an_ssh_key_lives_in_a_private_file_only_while_the_link_does() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\r\nAAAA\r\n-----END OPENSSH PRIVATE KEY-----";
        let link = Link::open("ssh://git@h/d.git", &Auth::SshKey(key.into()), None, Some("h ssh-ed25519 AAAA")).unwrap();
        let Link::Program { remote, .. } = &link else { panic!("the git program") };
        let file = remote.ssh_key.clone().unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(file.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
        );
        drop(link);
        assert!(!file.exists() && !file.parent().unwrap().exists());
    }
}
