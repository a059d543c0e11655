//! `piste.toml`: what a server serves.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_dir = "/var/lib/piste"
//! runner_registration_token = "a long random string"
//! # database = "postgres://piste@db/piste"   # default: SQLite in data_dir
//! # storage = "s3://bucket/prefix"            # logs and artifacts; default: files in data_dir
//!
//! [[project]]
//! name = "app"
//! repo = "https://forge.example/group/app.git"   # cloned by the server; never a URL from a payload
//! webhook_secret = "shared with the forge"
//! default_branch = "main"
//! variables = { DEPLOY_ENV = "staging" }
//! secrets = { REGISTRY_PASSWORD = "..." }         # masked in every log
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Runners present it once to register. Required for runners to join.
    #[serde(default)]
    pub runner_registration_token: String,
    /// `postgres://...` to share the queue between servers; default: SQLite in `data_dir`.
    #[serde(default)]
    pub database: Option<String>,
    /// `s3://BUCKET/PREFIX` to keep logs and artifacts in object storage (credentials and
    /// endpoint from the `AWS_*` environment); default: files in `data_dir`.
    #[serde(default)]
    pub storage: Option<String>,
    /// How long a runner may stay silent before its job is taken back (ms).
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// How long a job request waits for a job before answering 204 (ms).
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Largest artifacts archive accepted (bytes).
    #[serde(default = "default_max_artifacts")]
    pub max_artifacts_bytes: u64,
    #[serde(default, rename = "project")]
    pub projects: Vec<ProjectConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// Path-like name, used in URLs (`/api/v1/webhooks/<name>`) and as `CI_PROJECT_PATH`.
    pub name: String,
    /// Where the server fetches the repository from.
    pub repo: String,
    pub webhook_secret: String,
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// Pipeline file in the repository; default `.gitlab-ci.yml`, else `.gitlab-ci-dso.yml`.
    #[serde(default)]
    pub pipeline_file: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("piste-data")
}
fn default_lease_ms() -> u64 {
    30_000
}
fn default_poll_ms() -> u64 {
    20_000
}
fn default_max_artifacts() -> u64 {
    1 << 30
}
fn default_branch() -> String {
    "main".into()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            data_dir: default_data_dir(),
            runner_registration_token: String::new(),
            database: None,
            storage: None,
            lease_ms: default_lease_ms(),
            poll_ms: default_poll_ms(),
            max_artifacts_bytes: default_max_artifacts(),
            projects: Vec::new(),
        }
    }
}

/// `path` made absolute against the current directory, without touching the filesystem (the
/// folder may not exist yet); `.` components are dropped.
pub fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    Ok(abs.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{}`: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("`{}`: {message}", .path.display())]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| ConfigError::Invalid { path: path.to_path_buf(), message: e.to_string() })?;
        // A relative `data_dir` means "next to this file", resolved once, here: everything after
        // (SQLite, logs, mirrors, the git CGI's working directory) sees one absolute path.
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        config.data_dir =
            absolute(&base.join(&config.data_dir)).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        config.validate().map_err(|message| ConfigError::Invalid { path: path.to_path_buf(), message })?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for p in &self.projects {
            if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) || p.name.contains("..") {
                return Err(format!("project name `{}`: use letters, digits, `-`, `_`, `.` and `/`", p.name));
            }
            if !seen.insert(&p.name) {
                return Err(format!("project `{}` is declared twice", p.name));
            }
            if p.webhook_secret.len() < 8 {
                return Err(format!("project `{}`: `webhook_secret` must have at least 8 characters", p.name));
            }
        }
        if let Some(url) = &self.storage {
            crate::blob::S3Location::parse(url).map_err(|e| e.to_string())?;
        }
        if self.lease_ms < 1000 {
            return Err("`lease_ms` must be at least 1000".into());
        }
        Ok(())
    }

    pub fn project(&self, name: &str) -> Option<&ProjectConfig> {
        self.projects.iter().find(|p| p.name == name)
    }
}
