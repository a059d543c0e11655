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
//! secrets = { REGISTRY_PASSWORD = "at least 8 characters" }   # masked; protected refs only
//! # unprotected_secrets = ["NAME"]       # secrets that unprotected refs may have too
//! # protected_branches = ["main", "release/*"]   # default: the default branch
//! # protected_tags = ["v*"]               # default: none
//! # fork_pipelines = "no-secrets"         # or "off": no pipeline for a fork's merge request
//!
//! [project.forge]                         # commit statuses on the forge (optional)
//! kind = "github"                         # or "gitlab", "gitea" (Forgejo too)
//! api_url = "https://api.github.com"      # GitLab: https://gitlab.example/api/v4; Gitea: https://gitea.example/api/v1
//! repo = "owner/app"                      # GitLab: the project's id or path
//! token_env = "PISTE_GITHUB_TOKEN"        # or `token = "..."` here
//! # context = "piste/app"                 # the status's name on the forge
//! ```
//!
//! `external_url = "https://ci.example"` (top level) is the server's address as people reach
//! it, for links in commit statuses; default `http://<listen>`.

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
    /// The server's address as people reach it (`https://ci.example`), for links leaving the
    /// server (commit statuses); default `http://<listen>`.
    #[serde(default)]
    pub external_url: Option<String>,
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
    /// Masked in every log, and given only to pipelines of protected refs (see
    /// `unprotected_secrets`), never to pipelines of a fork's merge request.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Names of `secrets` that pipelines of unprotected refs receive too.
    #[serde(default)]
    pub unprotected_secrets: Vec<String>,
    /// Branches whose pipelines get the secrets: names, or patterns with `*` (GitLab's
    /// wildcard protected branches). Default: the default branch.
    #[serde(default)]
    pub protected_branches: Option<Vec<String>>,
    /// Tags whose pipelines get the secrets (names or `*` patterns). Default: none.
    #[serde(default)]
    pub protected_tags: Vec<String>,
    /// Merge requests from a fork: `no-secrets` (the default) plans and runs them without any
    /// secret; `off` creates no pipeline for them.
    #[serde(default)]
    pub fork_pipelines: ForkPipelines,
    /// Where the pipeline's state is posted as a commit status.
    #[serde(default)]
    pub forge: Option<ForgeConfig>,
}

/// A forge that receives commit statuses (`[project.forge]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgeConfig {
    pub kind: ForgeKind,
    /// The API's base URL: `https://api.github.com`, `https://gitlab.example/api/v4`,
    /// `https://gitea.example/api/v1`.
    pub api_url: String,
    /// `owner/name` (GitHub, Gitea), or the project's id or `group/name` path (GitLab).
    pub repo: String,
    /// The token itself (prefer `token_env`); never logged.
    #[serde(default)]
    pub token: Option<String>,
    /// The environment variable holding the token, read when the file is loaded.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The status's name on the forge (GitHub's and Gitea's `context`, GitLab's `name`);
    /// default `piste/<project>`.
    #[serde(default)]
    pub context: Option<String>,
}

impl std::fmt::Debug for ForgeConfig {
    /// Without the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeConfig")
            .field("kind", &self.kind)
            .field("api_url", &self.api_url)
            .field("repo", &self.repo)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .field("token_env", &self.token_env)
            .field("context", &self.context)
            .finish()
    }
}

/// Which commit-status API a forge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    Github,
    Gitlab,
    /// Gitea and Forgejo (the same API).
    #[serde(alias = "forgejo")]
    Gitea,
}

impl ForgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::Github => "github",
            ForgeKind::Gitlab => "gitlab",
            ForgeKind::Gitea => "gitea",
        }
    }
}

/// What the server does with a merge request whose source is another repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForkPipelines {
    #[default]
    NoSecrets,
    Off,
}

/// Secrets shorter than this are refused: masking a short value would blank ordinary words
/// of every log (GitLab's masked variables need 8 characters too).
pub const MIN_SECRET_LEN: usize = 8;

impl ProjectConfig {
    /// Whether a pipeline of this branch (`Some(branch)`) or tag is of a protected ref.
    pub fn is_protected(&self, branch: Option<&str>, tag: Option<&str>) -> bool {
        match (branch, tag) {
            (_, Some(tag)) => self.protected_tags.iter().any(|p| wildcard(p, tag)),
            (Some(branch), None) => match &self.protected_branches {
                Some(list) => list.iter().any(|p| wildcard(p, branch)),
                None => branch == self.default_branch,
            },
            (None, None) => false,
        }
    }

    /// The secrets a pipeline receives: all of them on a protected ref, only the unprotected
    /// ones elsewhere, none for a fork's merge request.
    pub fn secrets_for(&self, protected: bool, fork: bool) -> impl Iterator<Item = (&String, &String)> {
        self.secrets.iter().filter(move |(k, _)| !fork && (protected || self.unprotected_secrets.contains(k)))
    }
}

/// GitLab's protected-branch wildcards: `*` matches any run of characters, `/` included.
fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else { return false };
            (0..=tail.len()).filter(|&i| tail.is_char_boundary(i)).any(|i| wildcard(rest, &tail[i..]))
        }
    }
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
            external_url: None,
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

/// A relative path to a local repository, as opposed to an absolute path or a URL (`https://…`,
/// `git://…`, `file://…`, or scp-like `user@host:path`).
fn is_relative_folder(repo: &str) -> bool {
    let scp_like = repo.split_once(':').is_some_and(|(host, _)| !host.contains('/'));
    !repo.is_empty() && !repo.contains("://") && !scp_like && Path::new(repo).is_relative()
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
        // So is a project's `repo` given as a relative folder (`app.git`); URLs stay as written.
        for project in &mut config.projects {
            if is_relative_folder(&project.repo) {
                let abs = absolute(&base.join(&project.repo)).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                project.repo = abs.to_string_lossy().into_owned();
            }
            // A forge token named by an environment variable is read once, here.
            if let Some(forge) = project.forge.as_mut().filter(|f| f.token.is_none()) {
                if let Some(var) = &forge.token_env {
                    let value = std::env::var(var).map_err(|_| ConfigError::Invalid {
                        path: path.to_path_buf(),
                        message: format!(
                            "project `{}`: `forge.token_env` names `{var}`, which is not set (or not UTF-8): export it before starting the server",
                            project.name
                        ),
                    })?;
                    forge.token = Some(value);
                }
            }
        }
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
            for (name, value) in &p.secrets {
                if value.chars().count() < MIN_SECRET_LEN {
                    return Err(format!(
                        "project `{}`: secret `{name}` has fewer than {MIN_SECRET_LEN} characters; masking it would blank ordinary text in every log: use a longer value, or make it a `variables` entry if it is not secret",
                        p.name
                    ));
                }
            }
            if let Some(unknown) = p.unprotected_secrets.iter().find(|n| !p.secrets.contains_key(*n)) {
                return Err(format!(
                    "project `{}`: `unprotected_secrets` names `{unknown}`, which is not in `secrets`: add it to `secrets` or remove it from the list",
                    p.name
                ));
            }
        }
        for p in &self.projects {
            if let Some(forge) = &p.forge {
                forge.validate().map_err(|e| format!("project `{}`: `forge`: {e}", p.name))?;
            }
        }
        if let Some(url) = &self.external_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("`external_url` is `{url}`: give the server's address as people reach it, e.g. `https://ci.example`"));
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

impl ForgeConfig {
    fn validate(&self) -> Result<(), String> {
        if !(self.api_url.starts_with("http://") || self.api_url.starts_with("https://")) {
            return Err(format!("`api_url` is `{}`: give an `https://` URL such as `https://api.github.com`", self.api_url));
        }
        if self.token.is_none() && self.token_env.is_none() {
            return Err("give the token as `token_env = \"VARIABLE\"` (or `token = \"...\"`)".into());
        }
        let segment = |s: &str| !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        let parts: Vec<&str> = self.repo.split('/').collect();
        let ok = match self.kind {
            ForgeKind::Github | ForgeKind::Gitea => parts.len() == 2 && parts.iter().all(|p| segment(p)),
            ForgeKind::Gitlab => parts.iter().all(|p| segment(p)),
        };
        if !ok {
            let want = match self.kind {
                ForgeKind::Gitlab => "a project id (`42`) or path (`group/app`)",
                _ => "`owner/name`",
            };
            return Err(format!("`repo` is `{}`: expected {want}", self.repo));
        }
        Ok(())
    }

    /// The token (resolved from `token_env` at load).
    pub fn token(&self) -> &str {
        self.token.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's first server run used `data_dir = "piste-data"`: it must mean "next to
    /// piste.toml" whatever the current directory, resolved once.
    #[test]
    fn relative_paths_are_resolved_against_the_files_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conf/piste.toml");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            "data_dir = \"piste-data\"\n[[project]]\nname = \"app\"\nrepo = \"./repos/app.git\"\nwebhook_secret = \"0123456789\"\n\
             [[project]]\nname = \"web\"\nrepo = \"git@forge.example:group/web.git\"\nwebhook_secret = \"0123456789\"\n",
        )
        .unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.data_dir, dir.path().join("conf/piste-data"));
        assert_eq!(c.projects[0].repo, dir.path().join("conf/repos/app.git").to_string_lossy());
        assert_eq!(c.projects[1].repo, "git@forge.example:group/web.git", "scp-like URLs stay as written");
    }

    #[test]
    fn urls_and_absolute_paths_are_not_folders_to_resolve() {
        for url in ["https://forge.example/app.git", "git://127.0.0.1/app.git", "file:///srv/app.git", "/srv/app.git", "user@host:app.git"]
        {
            assert!(!is_relative_folder(url), "{url}");
        }
        for folder in ["app.git", "./app.git", "../repos/app.git"] {
            assert!(is_relative_folder(folder), "{folder}");
        }
    }

    fn project(extra: &str) -> Result<Config, String> {
        let text = format!("[[project]]\nname = \"app\"\nrepo = \"/srv/app.git\"\nwebhook_secret = \"0123456789\"\n{extra}");
        let c: Config = toml::from_str(&text).map_err(|e| e.to_string())?;
        c.validate().map(|()| c)
    }

    #[test]
    fn short_secrets_are_refused_with_the_reason() {
        let err = project("secrets = { TOKEN = \"...\" }\n").unwrap_err();
        assert!(err.contains("secret `TOKEN` has fewer than 8 characters"), "{err}");
        let err = project("secrets = { TOKEN = \"long-enough\" }\nunprotected_secrets = [\"OTHER\"]\n").unwrap_err();
        assert!(err.contains("`OTHER`"), "{err}");
    }

    /// GitLab: the default branch is protected by default; `*` wildcards match across `/`.
    #[test]
    fn protected_refs_and_who_gets_which_secret() {
        let c = project("secrets = { A = \"aaaaaaaa\", B = \"bbbbbbbb\" }\nunprotected_secrets = [\"B\"]\n").unwrap();
        let p = &c.projects[0];
        assert!(p.is_protected(Some("main"), None) && !p.is_protected(Some("feature"), None) && !p.is_protected(None, Some("v1")));
        let names = |protected, fork| p.secrets_for(protected, fork).map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(names(true, false), ["A", "B"]);
        assert_eq!(names(false, false), ["B"]);
        assert!(names(true, true).is_empty(), "a fork never gets a secret");
        let c = project("protected_branches = [\"release/*\"]\nprotected_tags = [\"v*\"]\n").unwrap();
        let p = &c.projects[0];
        assert!(p.is_protected(Some("release/1.2/hotfix"), None) && !p.is_protected(Some("main"), None));
        assert!(p.is_protected(None, Some("v1.0")) && !p.is_protected(None, Some("x1")));
    }

    #[test]
    fn forge_tables_are_checked() {
        let forge = |kind: &str, repo: &str, token: &str| {
            project(&format!("[project.forge]\nkind = \"{kind}\"\napi_url = \"https://api.github.com\"\nrepo = \"{repo}\"\n{token}\n"))
        };
        assert!(forge("github", "owner/app", "token = \"x\"").is_ok());
        assert!(forge("gitlab", "group/sub/app", "token_env = \"T\"").is_ok());
        assert!(forge("forgejo", "owner/app", "token = \"x\"").is_ok());
        let err = forge("github", "group/sub/app", "token = \"x\"").unwrap_err();
        assert!(err.contains("expected `owner/name`"), "{err}");
        let err = forge("gitea", "owner/../app", "token = \"x\"").unwrap_err();
        assert!(err.contains("`repo`"), "{err}");
        let err = forge("github", "owner/app", "").unwrap_err();
        assert!(err.contains("token_env"), "{err}");
        let err = forge("bitbucket", "owner/app", "token = \"x\"").unwrap_err();
        assert!(err.contains("bitbucket"), "{err}");
    }

    #[test]
    fn a_token_variable_that_is_not_set_is_an_error_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("piste.toml");
        std::fs::write(
            &file,
            "[[project]]\nname = \"app\"\nrepo = \"/srv/app.git\"\nwebhook_secret = \"0123456789\"\n\
             [project.forge]\nkind = \"github\"\napi_url = \"https://api.github.com\"\nrepo = \"o/app\"\ntoken_env = \"PISTE_TEST_UNSET_FORGE_TOKEN\"\n",
        )
        .unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(err.contains("`PISTE_TEST_UNSET_FORGE_TOKEN`, which is not set"), "{err}");
    }
}
