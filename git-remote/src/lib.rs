//! Reaching a git repository with the `git` program, over any transport it speaks: local
//! paths, `file://`, `git://`, `http(s)://` with credentials and a private CA, `ssh://` and
//! scp-like `user@host:path` with a key and strict host keys.
//!
//! Used by the server's mirrors (fetch) and by the runner's `piste/gitops-bump@v1` step (fetch
//! and push); neither depends on the other, so this small crate holds what they share.
//!
//! Why the `git` program and not libgit2 (see ARCHITECTURE.md, "TLS"): libgit2's `https` and
//! `ssh` need OpenSSL and libssh2 built in besides rustls, whereas `git` is a runtime
//! dependency already and brings its own TLS (libcurl) and OpenSSH, configured the way
//! operators know.
//!
//! Secrets never reach a command line, a log line or an error: credentials written in the URL
//! are taken out of it; credentials travel as an `Authorization` header set through
//! `GIT_CONFIG_*` environment variables of the `git` process (readable only by its user); an
//! ssh key is a file the caller names (the runner writes a key it got as text to a private
//! temporary file); every URL shown goes through [`redact`], and git's messages through
//! [`Remote::scrub`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A repository to reach, with what it takes to reach it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Remote {
    /// The URL without credentials.
    url: String,
    /// Basic credentials for `http(s)://` (user, password or token).
    credentials: Option<(String, String)>,
    /// PEM bundle of the certificate authorities to trust for `https://` (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// Private key for `ssh://` and scp-like URLs.
    pub ssh_key: Option<PathBuf>,
    /// Known hosts for ssh (default: the user's `~/.ssh/known_hosts`); hosts are always checked
    /// strictly: an unknown or changed host key fails.
    pub known_hosts: Option<PathBuf>,
}

/// Why the `git` program failed: the redacted URL and git's own message, scrubbed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{url}`: {message}")]
pub struct RemoteError {
    pub url: String,
    pub message: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &redact(&self.url))
            .field("credentials", &self.credentials.as_ref().map(|_| "[REDACTED]"))
            .field("ca_file", &self.ca_file)
            .field("ssh_key", &self.ssh_key)
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

/// Longest a transfer may stay below 1 KB/s before it is given up (s).
const LOW_SPEED_SECONDS: u32 = 60;
/// Longest message kept from git's standard error.
const MAX_MESSAGE: usize = 2000;

impl Remote {
    /// `url` as written; credentials in it (`https://user:token@host/…`) are used and kept out
    /// of the URL.
    pub fn new(url: &str) -> Remote {
        let (url, credentials) = split_credentials(url);
        Remote { url, credentials, ..Remote::default() }
    }

    /// Basic credentials for `http(s)://` (GitLab and GitHub take a token as the password).
    pub fn with_credentials(mut self, user: &str, password: &str) -> Remote {
        self.credentials = Some((user.to_string(), password.to_string()));
        self
    }

    /// The URL without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether credentials are set (given, or taken from the URL).
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Whether libgit2 (built here without TLS or ssh) reaches this remote itself: `git://`,
    /// `file://` and local folders, with no credentials. It does so in one connection, where
    /// the `git` program over `git://` waits on delayed ACKs (≈ 40 ms per round trip on
    /// loopback) and needs a second connection for the default branch.
    pub fn in_process(&self) -> bool {
        let plain =
            self.url.starts_with("git://") || self.url.starts_with("file://") || !self.url.contains("://") && !is_scp_like(&self.url);
        plain && self.credentials.is_none() && self.ssh_key.is_none()
    }

    /// `ssh://`, `git+ssh://` or scp-like `user@host:path`.
    pub fn is_ssh(&self) -> bool {
        self.url.starts_with("ssh://") || self.url.starts_with("git+ssh://") || is_scp_like(&self.url)
    }

    /// `http://` or `https://`.
    pub fn is_http(&self) -> bool {
        self.url.starts_with("http://") || self.url.starts_with("https://")
    }

    /// The host the URL names (`None` for paths and `file://`).
    pub fn host(&self) -> Option<&str> {
        let rest = match self.url.split_once("://") {
            Some(("file", _)) => return None,
            Some((_, rest)) => rest,
            None if is_scp_like(&self.url) => self.url.split_once(':').map(|(h, _)| h).unwrap_or_default(),
            None => return None,
        };
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if let Some(v6) = host.strip_prefix('[') {
            return v6.split_once(']').map(|(h, _)| h);
        }
        Some(host.split_once(':').map_or(host, |(h, _)| h))
    }

    /// `git` with the environment for this remote: nothing inherited but the paths and proxies,
    /// messages in English (callers read them), no prompt, only real transports, credentials
    /// and CA through configuration variables. `GIT_DIR` is `git_dir`.
    pub fn command(&self, git_dir: &Path) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear();
        for name in ["PATH", "HOME", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"] {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.env("LC_ALL", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            // Empty: no askpass program either (an empty `GIT_ASKPASS` also hides `core.askPass`).
            .env("GIT_ASKPASS", "")
            .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
            .env("GIT_DIR", git_dir);
        let mut config: Vec<(String, String)> = vec![
            ("http.lowSpeedLimit".into(), "1000".into()),
            ("http.lowSpeedTime".into(), LOW_SPEED_SECONDS.to_string()),
            // Credentials go to the configured host only, not where a redirect points.
            ("http.followRedirects".into(), "false".into()),
            ("credential.helper".into(), String::new()),
        ];
        if let Some((user, password)) = &self.credentials {
            use base64::Engine as _;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            config.push(("http.extraHeader".into(), format!("Authorization: Basic {basic}")));
        }
        if let Some(ca) = &self.ca_file {
            config.push(("http.sslCAInfo".into(), ca.to_string_lossy().into_owned()));
        }
        config.push(("http.sslVerify".into(), "true".into()));
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (k, v)) in config.into_iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k).env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        if self.is_ssh() {
            let mut ssh = String::from(
                "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4",
            );
            if let Some(key) = &self.ssh_key {
                ssh.push_str(&format!(" -o IdentitiesOnly=yes -i {}", shell_quote(&key.to_string_lossy())));
            }
            if let Some(hosts) = &self.known_hosts {
                ssh.push_str(&format!(" -o UserKnownHostsFile={}", shell_quote(&hosts.to_string_lossy())));
            }
            cmd.env("GIT_SSH_COMMAND", ssh);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `git args… -- <url> rest…` and returns what it printed, whatever its exit status;
    /// an error only when `git` cannot be started. Standard error is scrubbed.
    pub fn output(&self, git_dir: &Path, args: &[&str], rest: &[&str]) -> Result<Output, RemoteError> {
        let mut out = self
            .command(git_dir)
            .args(args)
            .arg("--")
            .arg(&self.url)
            .args(rest)
            .output()
            .map_err(|e| RemoteError { url: self.to_string(), message: format!("cannot run `git`: {e}") })?;
        out.stderr = self.scrub(&String::from_utf8_lossy(&out.stderr)).into_bytes();
        Ok(out)
    }

    /// Runs `git args… -- <url> rest…`; its standard output on success, a [`RemoteError`]
    /// naming the redacted URL and git's own message otherwise.
    pub fn run(&self, git_dir: &Path, args: &[&str], rest: &[&str]) -> Result<String, RemoteError> {
        let out = self.output(git_dir, args, rest)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(self.error(&out))
    }

    /// The error a failed [`Remote::output`] stands for.
    pub fn error(&self, out: &Output) -> RemoteError {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        RemoteError { url: self.to_string(), message: if message.is_empty() { format!("git exited with {}", out.status) } else { message } }
    }

    /// `text` (a message of git's) without this remote's password, with every URL redacted,
    /// at most 2,000 characters.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        if let Some((_, password)) = self.credentials.as_ref().filter(|(_, p)| !p.is_empty()) {
            text = text.replace(password.as_str(), "[REDACTED]");
        }
        redact_all(&text).chars().take(MAX_MESSAGE).collect()
    }
}

/// `url` with its user information replaced: `https://[REDACTED]@host/…`. For ssh, a user
/// name alone (`git@…`) is kept; a password never.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            let user = &rest[..at];
            let http = scheme.starts_with("http");
            if http || user.contains(':') {
                return format!("{scheme}://[REDACTED]@{}", &rest[at + 1..]);
            }
        }
    }
    url.to_string()
}

/// Every URL in `text` redacted (git's messages quote the URL).
pub fn redact_all(text: &str) -> String {
    text.split_inclusive(|c: char| c.is_whitespace() || c == '\'' || c == '"')
        .map(|word| {
            let trimmed = word.trim_end_matches(|c: char| c.is_whitespace() || c == '\'' || c == '"');
            if trimmed.contains("://") { format!("{}{}", redact(trimmed), &word[trimmed.len()..]) } else { word.to_string() }
        })
        .collect()
}

/// The URL without user information, and the credentials it held (http(s) only).
fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), None) };
    if !scheme.starts_with("http") {
        return (url.to_string(), None);
    }
    let end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else { return (url.to_string(), None) };
    let userinfo = &rest[..at];
    let (user, password) = userinfo.split_once(':').unwrap_or(("piste", userinfo));
    (format!("{scheme}://{}", &rest[at + 1..]), Some((percent_decode(user), percent_decode(password))))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `user@host:path` (no scheme, a colon before any slash).
pub fn is_scp_like(url: &str) -> bool {
    !url.contains("://") && url.split_once(':').is_some_and(|(host, _)| !host.contains('/') && host.contains('@'))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_every_message() {
        let r = Remote::new("https://deploy:s3cr3t-t0ken@forge.example/group/app.git");
        assert_eq!(r.url(), "https://forge.example/group/app.git");
        assert_eq!(r.credentials, Some(("deploy".into(), "s3cr3t-t0ken".into())));
        assert!(!format!("{r} {r:?}").contains("s3cr3t"));
        assert_eq!(r.scrub("fatal: s3cr3t-t0ken at 'https://u:p@h/a.git/'"), "fatal: [REDACTED] at 'https://[REDACTED]@h/a.git/'");
        assert_eq!(redact("https://tok@forge.example/a.git"), "https://[REDACTED]@forge.example/a.git");
        assert_eq!(redact("ssh://git@forge.example/a.git"), "ssh://git@forge.example/a.git");
        assert_eq!(redact("ssh://git:pw@forge.example/a.git"), "ssh://[REDACTED]@forge.example/a.git");
        assert_eq!(
            redact_all("fatal: unable to access 'https://u:p@h/a.git/': SSL"),
            "fatal: unable to access 'https://[REDACTED]@h/a.git/': SSL"
        );
        assert_eq!(Remote::new("https://a%40b:p%2Fw@h/x").credentials, Some(("a@b".into(), "p/w".into())));
    }

    #[test]
    fn transports_and_hosts_are_recognised() {
        assert!(Remote::new("git@forge.example:group/app.git").is_ssh());
        assert!(Remote::new("ssh://git@forge.example:2222/app.git").is_ssh());
        assert!(!Remote::new("/srv/app.git").is_ssh() && !Remote::new("https://h/a.git").is_ssh());
        assert!(Remote::new("git://h/a.git").in_process() && Remote::new("/srv/a.git").in_process());
        assert!(!Remote::new("https://h/a.git").in_process() && !Remote::new("git@h:a.git").in_process());
        assert_eq!(Remote::new("https://u:p@127.0.0.1:8443/a.git").host(), Some("127.0.0.1"));
        assert_eq!(Remote::new("ssh://git@[::1]:22/a.git").host(), Some("::1"));
        assert_eq!(Remote::new("git@forge.example:a.git").host(), Some("forge.example"));
        assert_eq!(Remote::new("/srv/a.git").host(), None);
    }

    #[test]
    fn the_command_carries_secrets_in_its_environment_only() {
        let mut r = Remote::new("https://ci:tok-123456@h/a.git");
        r.ca_file = Some("/etc/ca.pem".into());
        let cmd = r.command(Path::new("/tmp/x.git"));
        assert!(cmd.get_args().all(|a| !a.to_string_lossy().contains("tok-123456")));
        let env: Vec<(String, String)> =
            cmd.get_envs().filter_map(|(k, v)| Some((k.to_string_lossy().into_owned(), v?.to_string_lossy().into_owned()))).collect();
        assert!(env.iter().any(|(_, v)| v.starts_with("Authorization: Basic ")));
        assert!(env.iter().any(|(k, v)| k == "GIT_TERMINAL_PROMPT" && v == "0"));
        assert!(env.iter().any(|(_, v)| v == "/etc/ca.pem"));
    }
}
