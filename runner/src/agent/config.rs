//! The runner's configuration file (`runner.toml`) and registration.
//!
//! The file holds the runner token in clear (the runner must present it), so it is written
//! with mode `0600`, atomically (a temporary file in the same directory, fsynced, renamed over
//! the target, the directory fsynced), and [`register`] never overwrites a file that already
//! has content: a second registration would otherwise silently orphan the first runner on the
//! server. To re-register, remove the file first.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use scheduler::protocol::RegisterRequest;
use serde::{Deserialize, Serialize};

use super::AgentError;
use super::api::{Api, CallError};

/// What `runner.toml` holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerConfig {
    /// The server's base URL (`http://ci.example:8080`), without a trailing slash.
    pub url: String,
    /// The runner token the server issued at registration.
    pub token: String,
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where workspaces, repository caches and temporary archives live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builds_dir: Option<PathBuf>,
    /// `docker` or `shell`: the default of `piste runner run --executor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// The default of `piste runner run --concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// PEM bundle of certificate authorities trusted for an `https://` server besides the
    /// usual ones (a private CA): the protocol's calls and the checkouts use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long a running job's new output may wait before it is sent, in milliseconds
    /// (default 100, so followers see lines at once; GitLab's runner waits 3 s). Longer means
    /// fewer requests; a job shorter than this sends its whole log with its finish report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_interval_ms: Option<u64>,
}

/// Never prints the token.
impl std::fmt::Debug for RunnerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("tags", &self.tags)
            .field("builds_dir", &self.builds_dir)
            .field("executor", &self.executor)
            .field("concurrency", &self.concurrency)
            .field("ca_file", &self.ca_file)
            .field("log_interval_ms", &self.log_interval_ms)
            .finish()
    }
}

impl RunnerConfig {
    /// Reads and checks a configuration file. A file readable by others is accepted with a
    /// warning (the token in it should be rotated).
    pub fn load(path: &Path) -> Result<RunnerConfig, AgentError> {
        let text = fs::read_to_string(path).map_err(|source| AgentError::Io { op: "read", path: path.to_owned(), source })?;
        let mut config: RunnerConfig =
            toml::from_str(&text).map_err(|e| AgentError::Config { path: path.to_owned(), message: e.to_string() })?;
        // A relative `ca_file` is next to this file.
        if let (Some(ca), Some(dir)) = (config.ca_file.as_mut(), path.parent()) {
            if ca.is_relative() {
                *ca = dir.join(&*ca);
            }
        }
        if let Ok(meta) = fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the runner configuration is readable by other users; `chmod 600` it");
            }
        }
        config.check().map_err(|message| AgentError::Config { path: path.to_owned(), message })?;
        Ok(config)
    }

    /// Writes the file atomically with mode `0600`, replacing what was there.
    pub fn save(&self, path: &Path) -> Result<(), AgentError> {
        let text = toml::to_string(self).map_err(|e| AgentError::Config { path: path.to_owned(), message: e.to_string() })?;
        write_private(path, text.as_bytes())
    }

    fn check(&self) -> Result<(), String> {
        check_url(&self.url)?;
        if self.token.is_empty() {
            return Err("`token` is empty; register the runner again (`piste runner register`)".into());
        }
        if self.concurrency == Some(0) {
            return Err("`concurrency` must be at least 1".into());
        }
        if let Some(ms) = self.log_interval_ms.filter(|ms| !(10..=60_000).contains(ms)) {
            return Err(format!("`log_interval_ms` is {ms}; it must be between 10 and 60000 (milliseconds)"));
        }
        if let Some(ca) = &self.ca_file {
            super::api::read_ca_file(ca)?;
        }
        Ok(())
    }
}

/// Registers a runner with the server at `url` and writes its configuration to `config_path`.
/// `req` says its name, tags and scope (`run_untagged`, `protected`, `projects`): the server
/// keeps the scope and hands this runner only the jobs it allows. `ca_file`: certificate
/// authorities to trust for an `https://` server (kept in the configuration, absolute).
///
/// Refuses ([`AgentError::ConfigExists`]), before contacting the server, when `config_path`
/// already has content: remove the file to register again.
pub async fn register(url: &str, req: &RegisterRequest, config_path: &Path, ca_file: Option<&Path>) -> Result<RunnerConfig, AgentError> {
    let url = url.trim_end_matches('/');
    check_url(url).map_err(|message| AgentError::InvalidUrl { url: url.to_owned(), message })?;
    refuse_existing(config_path)?;
    let ca_file = ca_file
        .map(|p| std::path::absolute(p).map_err(|source| AgentError::Io { op: "resolve", path: p.to_owned(), source }))
        .transpose()?;
    let api = Api::new(url, ca_file.as_deref()).map_err(AgentError::Client)?;
    let (name, tags) = (&req.name, &req.tags);
    let resp = api.register(req).await.map_err(|e| match e {
        CallError::Rejected { status, message } => AgentError::Refused { what: "registration", status, message },
        other => AgentError::Unreachable { url: url.to_owned(), message: other.to_string() },
    })?;
    let config = RunnerConfig {
        url: url.to_owned(),
        token: resp.token,
        name: name.to_owned(),
        tags: tags.to_vec(),
        builds_dir: None,
        executor: None,
        concurrency: None,
        ca_file,
        log_interval_ms: None,
    };
    // Checked again: another `register` may have written the file meanwhile.
    refuse_existing(config_path)?;
    config.save(config_path)?;
    tracing::info!(runner = resp.id, path = %config_path.display(), "runner registered");
    Ok(config)
}

fn refuse_existing(path: &Path) -> Result<(), AgentError> {
    match fs::metadata(path) {
        Ok(meta) if meta.len() > 0 => Err(AgentError::ConfigExists { path: path.to_owned() }),
        _ => Ok(()),
    }
}

pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).ok_or("it must start with `http://` or `https://`")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err("it has no host".into());
    }
    if host.contains('@') {
        return Err("it must not hold credentials; the runner authenticates with its token".into());
    }
    if rest.contains(['?', '#']) {
        return Err("it must not have a query or fragment".into());
    }
    Ok(())
}

/// Writes `bytes` to `path` through a `0600` temporary file in the same directory.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| AgentError::Config { path: path.to_owned(), message: "not a file path".into() })?;
    let nonce = getrandom::u64().unwrap_or_default();
    let tmp = dir.join(format!(".{}.{nonce:016x}.tmp", file_name.to_string_lossy()));
    let io = |op: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| AgentError::Io { op, path: p, source }
    };
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io("create", &tmp))?;
        file.write_all(bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("replace", path))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io("sync", &dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1:8080").is_ok());
        assert!(check_url("https://ci.example/piste").is_ok());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("http://").is_err());
        assert!(check_url("http://user:pw@host").unwrap_err().contains("credentials"));
        assert!(check_url("http://host/?a=b").is_err());
    }

    #[test]
    fn the_log_interval_is_bounded() {
        let config = |ms| RunnerConfig {
            url: "http://x".into(),
            token: "t".into(),
            name: "n".into(),
            tags: vec![],
            builds_dir: None,
            executor: None,
            concurrency: None,
            ca_file: None,
            log_interval_ms: Some(ms),
        };
        assert!(config(100).check().is_ok());
        assert!(config(60_000).check().is_ok());
        let e = config(5).check().unwrap_err();
        assert!(e.contains("`log_interval_ms` is 5; it must be between 10 and 60000"), "{e}");
        assert!(config(60_001).check().is_err());
    }

    #[test]
    fn debug_hides_the_token() {
        let c = RunnerConfig {
            url: "http://x".into(),
            token: "s3cret-token".into(),
            name: "n".into(),
            tags: vec![],
            builds_dir: None,
            executor: None,
            concurrency: None,
            ca_file: None,
            log_interval_ms: None,
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
