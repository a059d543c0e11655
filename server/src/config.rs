//! `piste.toml`: what a server serves.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_dir = "/var/lib/piste"
//! runner_registration_token = "a long random string"
//! # database = "postgres://piste@db/piste"   # default: SQLite in data_dir
//! # storage = "s3://bucket/prefix"            # logs and artifacts; default: files in data_dir
//! # [limits]                                  # defaults shown
//! # max_connections = 1024
//! # header_timeout_ms = 30000                 # request head, and idle keep-alive
//! # body_timeout_ms = 60000                   # longest pause within a request body
//! # webhook_bytes = 1048576
//! # json_bytes = 262144
//! # max_needs = 50                            # top level: GitLab's `ci_max_needs` instance limit
//!
//! [[project]]
//! name = "app"
//! repo = "https://forge.example/group/app.git"   # cloned by the server; never a URL from a payload
//! # repo_token_env = "APP_REPO_TOKEN"     # or repo_token = "..."; Basic credentials (repo_username)
//! # ca_file = "private-ca.pem"            # for https (top-level: also PostgreSQL, OIDC, forges, S3)
//! # ssh_key = "deploy-key"                # for ssh:// and git@host:path; known_hosts = "..."
//! webhook_secret = "shared with the forge"
//! default_branch = "main"
//! variables = { DEPLOY_ENV = "staging" }
//! secrets = { REGISTRY_PASSWORD = "at least 8 characters" }   # masked; protected refs only
//! # unprotected_secrets = ["NAME"]       # secrets that unprotected refs may have too
//! # protected_branches = ["main", "release/*"]   # default: the default branch
//! # protected_tags = ["v*"]               # default: none
//! # fork_pipelines = "no-secrets"         # or "approval" (waits for a maintainer), "off" (none)
//! # reuse = true                          # reuse of job results; "per-job": PISTE_REUSE jobs only
//! visibility = "private"                  # the default; "public": anyone may read
//! members = { alice = "maintainer", bob = "viewer", "group:/app-devs" = "developer" }
//!
//! [project.forge]                         # commit statuses on the forge (optional)
//! kind = "github"                         # or "gitlab", "gitea" (Forgejo too)
//! api_url = "https://api.github.com"      # GitLab: https://gitlab.example/api/v4; Gitea: https://gitea.example/api/v1
//! repo = "owner/app"                      # GitLab: the project's id or path
//! token_env = "PISTE_GITHUB_TOKEN"        # or `token = "..."` here
//! # context = "piste/app"                 # the status's name on the forge
//! ```
//!
//! Who is who (see `auth.rs` and the README's *Security model*):
//!
//! ```toml
//! external_url = "https://ci.example"      # the address people use; `Secure` cookies when https
//! admins = ["root", "group:/ci-admins"]    # maintainers of every project
//!
//! [[user]]                                 # optional: users whose tokens act for groups too
//! name = "deploy-bot"
//! groups = ["/app-devs"]
//!
//! [oidc]                                   # web login (Keycloak: a realm's issuer URL)
//! issuer = "https://sso.example/realms/acme"
//! client_id = "piste"
//! client_secret = "from the provider"
//! # username_claim = "preferred_username"  # which claim is the user name
//! # groups_claim = "groups"                # `/app-devs` there is `group:/app-devs` in members
//! ```
//!
//! `external_url = "https://ci.example"` (top level) is the server's address as people reach
//! it, for links in commit statuses; default `http://<listen>`.
//!
//! Includes that are not in a configured project's repository (see `includes.rs`):
//!
//! ```toml
//! [includes]
//! templates_dir = "/srv/gitlab-ci-templates"   # `include:template`: GitLab's lib/gitlab/ci/templates
//! remote_allow = ["https://gitlab.gnome.org/GNOME/citemplates/raw/*"]   # `include:remote`; default: none
//! # remote_max_bytes = 2097152
//! # remote_timeout_ms = 10000
//! # remote_cache_entries = 256                 # bodies kept for `cache:` (by URL)
//! component_hosts = ["gitlab.gnome.org"]       # hosts that name this server in component addresses
//! ```
//!
//! Image signatures (see [`SigningConfig`]):
//!
//! ```toml
//! [signing]
//! key_file = "signing.pem"                 # PKCS#8 ECDSA P-256; jobs never see it
//! # unprotected = false                    # sign images of unprotected refs too
//! ```
//!
//! Jobs' ID tokens (`id_tokens:`) are signed with ES256 by a key the server generates and keeps
//! in its database; to sign them with RS256 instead (GitLab's algorithm, for relying parties
//! that take nothing else), give every server the same RSA key:
//!
//! ```toml
//! [id_tokens]
//! key_file = "id-tokens.pem"               # PKCS#8 RSA (openssl genpkey -algorithm RSA)
//! ```
//!
//! The generated key is kept in the database encrypted (AES-256-GCM) when the server has a
//! secret key, the same file on every server sharing the database:
//!
//! ```toml
//! secret_key_file = "piste-secret.key"     # head -c 32 /dev/urandom > piste-secret.key
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
    /// PEM bundle of certificate authorities trusted for everything that speaks TLS to the
    /// outside: `https://` repositories (unless a project sets its own), PostgreSQL
    /// (`sslrootcert`, unless the URL names one), the OpenID provider, forges' status APIs and
    /// S3 (besides webpki's roots). Default: the system's (git), webpki's (the others).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Known hosts for `ssh://` repositories (unless a project sets its own); default: the
    /// server user's `~/.ssh/known_hosts`. Host keys are always checked strictly.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// Connections, timeouts and body sizes (`[limits]`; see `limits.rs`).
    #[serde(default)]
    pub limits: crate::limits::Limits,
    #[serde(default, rename = "project")]
    pub projects: Vec<ProjectConfig>,
    /// The server's address as people reach it (`https://ci.example`): OpenID Connect's
    /// redirect address, the origin page forms must come from, and `Secure` cookies when it is
    /// https. Default: `http://<listen>`.
    #[serde(default)]
    pub external_url: Option<String>,
    /// Users (or `group:/name` groups) who are maintainers of every project.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Users declared with the groups their access tokens act for; users named in `members`
    /// or `admins` need no declaration.
    #[serde(default, rename = "user")]
    pub users: Vec<UserConfig>,
    /// Web login with OpenID Connect; without it, pages of private projects cannot be opened.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// Templates, remote files and component hosts for `include:` (`[includes]`).
    #[serde(default)]
    pub includes: IncludesConfig,
    /// The most `needs` one job may list (GitLab's instance limit `ci_max_needs`).
    #[serde(default = "default_max_needs")]
    pub max_needs: usize,
    /// `[signing]`: the key images built by `piste/image-build@v1` are signed with.
    #[serde(default)]
    pub signing: Option<SigningConfig>,
    /// `[id_tokens]`: an RSA key to sign jobs' ID tokens with (RS256) instead of the generated
    /// ES256 one.
    #[serde(default)]
    pub id_tokens: Option<IdTokensConfig>,
    /// A file of at least 32 random bytes (`head -c 32 /dev/urandom > piste-secret.key`),
    /// relative to `piste.toml`, the same for every server sharing a database: the secrets the
    /// server keeps in its database (the ID-token signing key) are encrypted with a key derived
    /// from it. Without it they are stored as they are, and the server says so.
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
    /// The file's bytes, read by [`Config::load`].
    #[serde(skip)]
    pub secret_key: Option<SecretKey>,
}

fn default_max_needs() -> usize {
    pipeline_spec::load::LoadOptions::default().max_needs
}

/// `[includes]`: what pipelines may include besides the configured projects' files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncludesConfig {
    /// A folder laid out as GitLab's `lib/gitlab/ci/templates` (`Jobs/Build.gitlab-ci.yml`),
    /// for `include:template`. Without it, templates are unavailable.
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
    /// URL patterns `include:remote` may fetch: `https://host[:port]/path`, where `*` in the
    /// path matches any characters (`/` too). Empty: nothing is fetched.
    #[serde(default)]
    pub remote_allow: Vec<String>,
    #[serde(default = "default_remote_max_bytes")]
    pub remote_max_bytes: u64,
    #[serde(default = "default_remote_timeout_ms")]
    pub remote_timeout_ms: u64,
    /// Most bodies kept for `include: cache:`.
    #[serde(default = "default_remote_cache_entries")]
    pub remote_cache_entries: usize,
    /// Hosts that name this server in `include:component` addresses, besides
    /// `$CI_SERVER_FQDN` and `external_url`'s (pipelines written for `gitlab.example.com`).
    #[serde(default)]
    pub component_hosts: Vec<String>,
}

impl Default for IncludesConfig {
    fn default() -> Self {
        IncludesConfig {
            templates_dir: None,
            remote_allow: Vec::new(),
            remote_max_bytes: default_remote_max_bytes(),
            remote_timeout_ms: default_remote_timeout_ms(),
            remote_cache_entries: default_remote_cache_entries(),
            component_hosts: Vec::new(),
        }
    }
}

fn default_remote_max_bytes() -> u64 {
    2 * 1024 * 1024
}

fn default_remote_timeout_ms() -> u64 {
    10_000
}

fn default_remote_cache_entries() -> usize {
    256
}

/// `[signing]`: images are signed (cosign `.sig`) and their SLSA provenance attached (`.att`)
/// with this key. The key is read at start and travels to a runner only inside the payload of a
/// leased job that has a `piste/image-build@v1` step, of a protected ref (any ref with
/// `unprotected = true`; never a fork's merge request): never as a variable, never in a job's
/// environment or files, masked in its log.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// A PKCS#8 PEM ECDSA P-256 private key (`openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256`), relative to `piste.toml`.
    pub key_file: PathBuf,
    /// Sign images built on unprotected refs too (default: protected refs only, so a branch
    /// anyone may push cannot produce a signed image). A fork's merge request never is.
    #[serde(default)]
    pub unprotected: bool,
    /// The key's PEM, read by [`Config::load`].
    #[serde(skip)]
    pub key_pem: String,
}

impl std::fmt::Debug for SigningConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningConfig").field("key_file", &self.key_file).field("unprotected", &self.unprotected).finish_non_exhaustive()
    }
}

/// `[id_tokens]`: jobs' ID tokens are signed with this RSA key (RS256) rather than with the
/// ES256 key the server generates. Every server sharing a database must be given the same file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdTokensConfig {
    /// A PKCS#8 PEM RSA private key (`openssl genpkey -algorithm RSA -pkeyopt
    /// rsa_keygen_bits:2048`), relative to `piste.toml`.
    pub key_file: PathBuf,
    /// The key (PKCS#8 DER), read and checked by [`Config::load`].
    #[serde(skip)]
    pub key_der: Vec<u8>,
}

impl std::fmt::Debug for IdTokensConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTokensConfig").field("key_file", &self.key_file).finish_non_exhaustive()
    }
}

/// The bytes of `secret_key_file`; `Debug` never shows them.
#[derive(Clone)]
pub struct SecretKey(pub Vec<u8>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({} bytes)", self.0.len())
    }
}

/// Fewest bytes `secret_key_file` may hold.
pub const SECRET_KEY_MIN_BYTES: usize = 32;

/// The DER of the one unencrypted PKCS#8 `PRIVATE KEY` block of `pem`.
fn pkcs8_der(pem: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    if pem.contains("BEGIN EC PRIVATE KEY") || pem.contains("BEGIN RSA PRIVATE KEY") {
        return Err("it is not PKCS#8 (`EC`/`RSA PRIVATE KEY`): convert it with `openssl pkcs8 -topk8 -nocrypt -in KEY`".into());
    }
    if pem.contains("ENCRYPTED") {
        return Err("it is encrypted: give an unencrypted PKCS#8 key (`openssl pkcs8 -topk8 -nocrypt -in KEY`)".into());
    }
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| *l != "-----END PRIVATE KEY-----")
        .collect();
    Ok(base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .ok()
        .filter(|d| !d.is_empty())
        .ok_or("it holds no PEM `PRIVATE KEY` block")?)
}

/// Checks that `pem` is an unencrypted PKCS#8 RSA key `ring` signs RS256 with; its DER.
fn check_id_tokens_key(pem: &str) -> Result<Vec<u8>, String> {
    let der = pkcs8_der(pem)?;
    match ring::signature::RsaKeyPair::from_pkcs8(&der) {
        Ok(_) => Ok(der),
        Err(e) => Err(format!("it is not an RSA key of 2048 to 8192 bits ({e})")),
    }
}

/// Checks that `pem` is an unencrypted PKCS#8 ECDSA P-256 key, as the runner's signer takes.
fn check_signing_key(pem: &str) -> Result<(), String> {
    let der = pkcs8_der(pem)?;
    let rng = ring::rand::SystemRandom::new();
    ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING, &der, &rng)
        .map(|_| ())
        .map_err(|_| "it is not an ECDSA P-256 key".to_string())
}

/// A user declared in `piste.toml` (`[[user]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Groups as the identity provider names them (`/app-devs`): tokens of this user act as a
    /// member of `group:/app-devs` too.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[oidc]`: the authorization code flow with PKCE against one provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer (`iss`); `<issuer>/.well-known/openid-configuration` says the rest.
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: String,
    /// Scopes asked for; default `openid profile email`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim that is the user name (`members` keys); default `preferred_username`.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The ID token claim listing the user's groups; default `groups` (Keycloak's group
    /// mapper, full paths: `/app-devs`).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// How long a login lasts (hours); default 12.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
}

/// What a member may do in a project; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads pipelines, jobs, logs and artifacts.
    Viewer,
    /// Also retries, cancels and plays jobs of unprotected refs.
    Developer,
    /// Also acts on pipelines of protected refs.
    Maintainer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
        }
    }
}

/// Who may read a project without being a member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Members only (and admins).
    #[default]
    Private,
    /// Anyone may read, anonymous visitors included; actions still need a role.
    Public,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// Path-like name, used in URLs (`/api/v1/webhooks/<name>`) and as `CI_PROJECT_PATH`.
    pub name: String,
    /// Where the server fetches the repository from: a folder, `file://`, `git://`,
    /// `http(s)://` or `ssh://` / `user@host:path`.
    pub repo: String,
    /// User name for `repo_token` (default `piste`; GitLab and GitHub accept any name with a
    /// token).
    #[serde(default)]
    pub repo_username: Option<String>,
    /// Password or access token for an `http(s)://` `repo`, sent as Basic credentials. Never
    /// logged. `repo_token_env` names an environment variable to read it from instead.
    #[serde(default)]
    pub repo_token: Option<String>,
    #[serde(default)]
    pub repo_token_env: Option<String>,
    /// Certificate authorities for this project's `https://` repository (else the top-level
    /// `ca_file`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Private key for an `ssh://` or `user@host:path` repository.
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    /// Known hosts for this project's ssh repository (else the top-level `known_hosts`).
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
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
    /// secret; `approval` plans them and runs them once a maintainer approves, with the secrets
    /// of an unprotected ref (`unprotected_secrets`); `off` creates no pipeline for them.
    #[serde(default)]
    pub fork_pipelines: ForkPipelines,
    /// `[project.resource_groups] NAME = "oldest_first"`: the process mode of each resource
    /// group (GitLab sets it through its API; piste has none). Unlisted groups: `unordered`.
    #[serde(default)]
    pub resource_groups: BTreeMap<String, ProcessMode>,
    #[serde(default)]
    pub visibility: Visibility,
    /// Projects whose jobs may fetch this project's repository with their job token (a
    /// submodule with a relative URL), as GitLab's CI/CD job token allowlist ("Authorized groups
    /// and projects"). A project's own jobs always may; `public` projects allow every project.
    #[serde(default)]
    pub job_token_allowlist: Vec<String>,
    /// User names, or `group:<name as the groups claim says it>`, and their role.
    #[serde(default)]
    pub members: BTreeMap<String, Role>,
    /// Where the pipeline's state is posted as a commit status.
    #[serde(default)]
    pub forge: Option<ForgeConfig>,
    /// Projects of this server whose trigger jobs may start this project's pipelines
    /// (`trigger: project: <this name>`). Empty (the default): none may — a downstream
    /// pipeline of a protected branch gets that branch's secrets, so the target opts in.
    #[serde(default)]
    pub triggered_by: Vec<String>,
    /// Reuse of job results: `true` (every eligible job), `"per-job"` (jobs with
    /// `PISTE_REUSE: "true"`), `false` (the default: never, whatever the jobs say).
    #[serde(default)]
    pub reuse: ReuseSetting,
}

/// `reuse` of a project: whether a job whose inputs did not change since it passed may be
/// recorded as passed again with that job's results instead of running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub enum ReuseSetting {
    #[default]
    Off,
    /// Only jobs with `PISTE_REUSE: "true"`.
    PerJob,
    /// Every eligible job, unless it says `PISTE_REUSE: "false"`.
    All,
}

impl TryFrom<toml::Value> for ReuseSetting {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<ReuseSetting, String> {
        match value {
            toml::Value::Boolean(true) => Ok(ReuseSetting::All),
            toml::Value::Boolean(false) => Ok(ReuseSetting::Off),
            toml::Value::String(s) if s == "per-job" => Ok(ReuseSetting::PerJob),
            other => Err(format!("`reuse` is `true`, `false` or `\"per-job\"`, not `{other}`")),
        }
    }
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
    /// Planned, then held until a maintainer approves (API or page); then run as a merge
    /// request of an unprotected ref of the project would be.
    Approval,
    Off,
}

/// Where a pipeline's code comes from, for its secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The project's own repository.
    Project,
    /// A fork's merge request: someone else's code.
    Fork,
    /// A fork's merge request a maintainer approved (`fork_pipelines = "approval"`).
    ApprovedFork,
}

/// Secrets shorter than this are refused: masking a short value would blank ordinary words
/// of every log (GitLab's masked variables need 8 characters too).
pub const MIN_SECRET_LEN: usize = 8;

impl ProjectConfig {
    /// Whether a job of `project` may fetch this repository with its job token (see
    /// `job_token_allowlist`).
    pub fn allows_job_of(&self, project: &str) -> bool {
        self.name == project || self.visibility == Visibility::Public || self.job_token_allowlist.iter().any(|p| p == project)
    }

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
    /// ones elsewhere (an approved fork's merge request included: its ref is never protected),
    /// none for a fork's merge request nobody approved.
    pub fn secrets_for(&self, protected: bool, source: Source) -> impl Iterator<Item = (&String, &String)> {
        let protected = protected && source == Source::Project;
        self.secrets.iter().filter(move |(k, _)| source != Source::Fork && (protected || self.unprotected_secrets.contains(k)))
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
fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_session_hours() -> u64 {
    12
}

/// A user name: letters, digits, `.`, `_`, `-`, `@` (e-mail-like names work), at most 255.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

/// A `members`/`admins` key: a user name or `group:<non-empty name>`.
fn valid_member(key: &str) -> bool {
    match key.strip_prefix("group:") {
        Some(group) => !group.is_empty() && group.len() <= 255 && !group.chars().any(char::is_control),
        None => valid_user_name(key),
    }
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
            ca_file: None,
            known_hosts: None,
            limits: crate::limits::Limits::default(),
            projects: Vec::new(),
            external_url: None,
            admins: Vec::new(),
            users: Vec::new(),
            oidc: None,
            includes: IncludesConfig::default(),
            max_needs: default_max_needs(),
            signing: None,
            id_tokens: None,
            secret_key_file: None,
            secret_key: None,
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
        // And so are the files of the transport options.
        let resolve = |p: &mut Option<PathBuf>| -> Result<(), ConfigError> {
            if let Some(file) = p.as_mut() {
                *file = absolute(&base.join(&*file)).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
            }
            Ok(())
        };
        resolve(&mut config.ca_file)?;
        resolve(&mut config.known_hosts)?;
        resolve(&mut config.includes.templates_dir)?;
        // A key file piste.toml names: its absolute path and its bytes.
        let read_key = |name: &Path, what: &str| -> Result<(PathBuf, Vec<u8>), ConfigError> {
            let file = absolute(&base.join(name)).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
            let bytes = std::fs::read(&file).map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!("`{what}`: cannot read `{}`: {e}", file.display()),
            })?;
            Ok((file, bytes))
        };
        let invalid = |what: &str, file: &Path, why: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: format!("`{what}` `{}`: {why}", file.display()),
        };
        let pem = |file: &Path, bytes: Vec<u8>, what: &str| {
            String::from_utf8(bytes).map_err(|_| invalid(what, file, "it is not a PEM file (not text)".into()))
        };
        if let Some(signing) = config.signing.as_mut() {
            const WHAT: &str = "[signing] key_file";
            let (file, bytes) = read_key(&signing.key_file, WHAT)?;
            let pem = pem(&file, bytes, WHAT)?;
            check_signing_key(&pem).map_err(|why| invalid(WHAT, &file, why))?;
            signing.key_file = file;
            signing.key_pem = pem;
        }
        if let Some(ids) = config.id_tokens.as_mut() {
            const WHAT: &str = "[id_tokens] key_file";
            let (file, bytes) = read_key(&ids.key_file, WHAT)?;
            ids.key_der = check_id_tokens_key(&pem(&file, bytes, WHAT)?).map_err(|why| invalid(WHAT, &file, why))?;
            ids.key_file = file;
        }
        if let Some(name) = config.secret_key_file.as_ref() {
            let (file, bytes) = read_key(name, "secret_key_file")?;
            if bytes.len() < SECRET_KEY_MIN_BYTES {
                let why = format!(
                    "holds {} bytes: it needs at least {SECRET_KEY_MIN_BYTES} random bytes (`head -c 32 /dev/urandom > FILE`)",
                    bytes.len()
                );
                return Err(invalid("secret_key_file", &file, why));
            }
            config.secret_key_file = Some(file);
            config.secret_key = Some(SecretKey(bytes));
        }
        for project in &mut config.projects {
            if is_relative_folder(&project.repo) {
                let abs = absolute(&base.join(&project.repo)).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                project.repo = abs.to_string_lossy().into_owned();
            }
            resolve(&mut project.ca_file)?;
            resolve(&mut project.ssh_key)?;
            resolve(&mut project.known_hosts)?;
            if let Some(var) = project.repo_token_env.clone() {
                let token = std::env::var(&var).map_err(|_| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("project `{}`: `repo_token_env` names `{var}`, which is not set in the environment", project.name),
                })?;
                project.repo_token = Some(token);
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
        config.ca_pem().map_err(|message| ConfigError::Invalid { path: path.to_path_buf(), message })?;
        Ok(config)
    }

    /// The top-level `ca_file`'s PEM bundle, checked to hold certificates; `None` without one.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(path) = &self.ca_file else { return Ok(None) };
        let pem = std::fs::read(path).map_err(|e| format!("cannot read `ca_file` `{}`: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("`ca_file` `{}` is not a PEM certificate bundle: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("`ca_file` `{}` holds no PEM certificate", path.display()));
        }
        Ok(Some(pem))
    }

    /// The top-level `ca_file`'s certificates, for the server's HTTPS clients (the OpenID
    /// provider, forges' APIs); empty without one.
    pub fn tls_roots(&self) -> Result<Vec<reqwest::Certificate>, String> {
        match self.ca_pem()? {
            Some(pem) => reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string()),
            None => Ok(Vec::new()),
        }
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
            if let Some(bad) = p.members.keys().find(|k| !valid_member(k)) {
                return Err(format!(
                    "project `{}`: member `{bad}` is neither a user name (letters, digits, `.`, `_`, `-`, `@`) nor `group:<name>`",
                    p.name
                ));
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
        if let Some(bad) = self.admins.iter().find(|k| !valid_member(k)) {
            return Err(format!("admin `{bad}` is neither a user name (letters, digits, `.`, `_`, `-`, `@`) nor `group:<name>`"));
        }
        let mut users = std::collections::HashSet::new();
        for u in &self.users {
            if !valid_user_name(&u.name) {
                return Err(format!("user `{}`: use letters, digits, `.`, `_`, `-` and `@`", u.name));
            }
            if !users.insert(&u.name) {
                return Err(format!("user `{}` is declared twice", u.name));
            }
        }
        if let Some(url) = &self.external_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.trim_end_matches('/').matches('/').count() != 2 {
                return Err(format!("`external_url = \"{url}\"`: give the scheme and host only, like `https://ci.example`"));
            }
        }
        if let Some(o) = &self.oidc {
            if !o.issuer.starts_with("https://") && !o.issuer.starts_with("http://") {
                return Err(format!("`[oidc] issuer = \"{}\"`: an `https://` URL is expected", o.issuer));
            }
            if o.client_id.is_empty() {
                return Err("`[oidc]` needs a `client_id`".into());
            }
            if self.external_url.is_none() {
                return Err("`[oidc]` needs `external_url` (the address browsers use, e.g. `https://ci.example`): the provider sends people back to `<external_url>/auth/callback`".into());
            }
            if !o.scopes.iter().any(|s| s == "openid") {
                return Err("`[oidc] scopes` must include `openid`".into());
            }
        }
        for pattern in &self.includes.remote_allow {
            crate::includes::AllowList::new(std::slice::from_ref(pattern)).map_err(|e| format!("`[includes] remote_allow`: {e}"))?;
        }
        if self.includes.remote_timeout_ms == 0 || self.includes.remote_max_bytes == 0 {
            return Err("`[includes] remote_timeout_ms` and `remote_max_bytes` must be more than 0".into());
        }
        self.limits.validate()?;
        if self.lease_ms < 1000 {
            return Err("`lease_ms` must be at least 1000".into());
        }
        Ok(())
    }

    pub fn project(&self, name: &str) -> Option<&ProjectConfig> {
        self.projects.iter().find(|p| p.name == name)
    }

    /// Whether `name` is a user this configuration knows: declared, a member, or an admin.
    pub fn knows_user(&self, name: &str) -> bool {
        self.users.iter().any(|u| u.name == name)
            || self.admins.iter().any(|a| a == name)
            || self.projects.iter().any(|p| p.members.contains_key(name))
    }

    /// The groups a user's access tokens act for (`[[user]] groups`).
    pub fn user_groups(&self, name: &str) -> Vec<String> {
        self.users.iter().find(|u| u.name == name).map(|u| u.groups.clone()).unwrap_or_default()
    }

    /// The address people reach the server at, without a trailing `/`.
    pub fn external_url(&self) -> String {
        match &self.external_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }

    /// Where and how the server fetches `project`'s repository.
    pub fn remote(&self, project: &ProjectConfig) -> crate::git::Remote {
        let mut remote = crate::git::Remote::new(&project.repo);
        if let Some(token) = &project.repo_token {
            remote = remote.with_credentials(project.repo_username.as_deref().unwrap_or("piste"), token);
        }
        remote.ca_file = project.ca_file.clone().or_else(|| self.ca_file.clone());
        remote.ssh_key = project.ssh_key.clone();
        remote.known_hosts = project.known_hosts.clone().or_else(|| self.known_hosts.clone());
        remote
    }

    /// The `database` URL, with the top-level `ca_file` as PostgreSQL's `sslrootcert` when the
    /// URL names none (use `sslmode=verify-full` in the URL to check the server's name too).
    pub fn database_url(&self) -> Option<String> {
        let url = self.database.clone()?;
        let Some(ca) = &self.ca_file else { return Some(url) };
        if !url.starts_with("postgres") || url.contains("sslrootcert=") {
            return Some(url);
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        Some(format!("{url}{sep}sslrootcert={}", ca.display()))
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

    /// `[signing] key_file` is read and checked at load (relative to piste.toml); a key piste
    /// cannot sign with is a clear error saying how to convert it; `Debug` never shows the key.
    #[test]
    fn the_signing_key_is_read_and_checked_at_load() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
        std::fs::write(dir.path().join("signing.pem"), &pem).unwrap();
        let file = dir.path().join("piste.toml");
        std::fs::write(&file, "[signing]\nkey_file = \"signing.pem\"\n").unwrap();
        let c = Config::load(&file).unwrap();
        let signing = c.signing.as_ref().unwrap();
        assert_eq!(signing.key_pem, pem);
        assert!(!signing.unprotected);
        assert!(!format!("{c:?}").contains(&b64[..40]), "the key is not in the configuration's Debug text");

        let load_err = |key: &str| {
            std::fs::write(dir.path().join("signing.pem"), key).unwrap();
            Config::load(&file).unwrap_err().to_string()
        };
        assert!(load_err("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n").contains("openssl pkcs8 -topk8"));
        assert!(load_err("not a key").contains("no PEM `PRIVATE KEY` block"));
        let rsa_like = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode([0x30u8, 3, 2, 1, 0])
        );
        assert!(load_err(&rsa_like).contains("not an ECDSA P-256 key"));
        std::fs::remove_file(dir.path().join("signing.pem")).unwrap();
        let missing = Config::load(&file).unwrap_err().to_string();
        assert!(missing.contains("`[signing] key_file`: cannot read") && missing.contains("signing.pem"), "{missing}");
    }

    /// `secret_key_file` is read at load, relative to piste.toml; fewer than 32 bytes, or no
    /// file, is a clear error; `Debug` never shows the bytes.
    #[test]
    fn the_secret_key_is_read_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("piste.toml");
        std::fs::write(&file, "secret_key_file = \"piste-secret.key\"\n").unwrap();
        let missing = Config::load(&file).unwrap_err().to_string();
        assert!(missing.contains("`secret_key_file`: cannot read") && missing.contains("piste-secret.key"), "{missing}");
        std::fs::write(dir.path().join("piste-secret.key"), "short").unwrap();
        let short = Config::load(&file).unwrap_err().to_string();
        assert!(short.contains("holds 5 bytes") && short.contains("head -c 32 /dev/urandom"), "{short}");
        let bytes: Vec<u8> = (0..48u8).map(|b| b.wrapping_mul(37).wrapping_add(0x41)).collect();
        std::fs::write(dir.path().join("piste-secret.key"), &bytes).unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.secret_key.as_ref().map(|k| k.0.clone()), Some(bytes.clone()));
        assert_eq!(c.secret_key_file.as_deref(), Some(dir.path().join("piste-secret.key").as_path()));
        let shown = format!("{c:?}");
        assert!(shown.contains("SecretKey(48 bytes)") && !shown.contains(&format!("{:?}", &bytes[..8])), "{shown}");
    }

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
    fn reuse_is_off_by_default_and_takes_true_false_or_per_job() {
        assert_eq!(project("").unwrap().projects[0].reuse, ReuseSetting::Off);
        assert_eq!(project("reuse = true\n").unwrap().projects[0].reuse, ReuseSetting::All);
        assert_eq!(project("reuse = false\n").unwrap().projects[0].reuse, ReuseSetting::Off);
        assert_eq!(project("reuse = \"per-job\"\n").unwrap().projects[0].reuse, ReuseSetting::PerJob);
        let err = project("reuse = \"yes\"\n").unwrap_err();
        assert!(err.contains("`reuse` is `true`, `false` or `\"per-job\"`"), "{err}");
    }

    #[test]
    fn short_secrets_are_refused_with_the_reason() {
        let err = project("secrets = { TOKEN = \"...\" }\n").unwrap_err();
        assert!(err.contains("secret `TOKEN` has fewer than 8 characters"), "{err}");
        let err = project("secrets = { TOKEN = \"long-enough\" }\nunprotected_secrets = [\"OTHER\"]\n").unwrap_err();
        assert!(err.contains("`OTHER`"), "{err}");
    }

    #[test]
    fn limits_and_transport_options_are_read_and_checked() {
        let c = project("repo_token = \"glpat-xyz-123456\"\nrepo_username = \"deploy\"\nca_file = \"/etc/ca.pem\"\n").unwrap();
        assert_eq!(c.limits.max_connections, 1024, "defaults without `[limits]`");
        let remote = c.remote(&c.projects[0]);
        assert_eq!(remote.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert!(!format!("{remote} {remote:?}").contains("glpat"), "credentials are never shown");
        let text = "[limits]\nmax_connections = 8\nheader_timeout_ms = 500\n";
        let c: Config = toml::from_str(text).unwrap();
        assert_eq!((c.limits.max_connections, c.limits.header_timeout_ms, c.limits.json_bytes), (8, 500, 256 << 10));
        for bad in ["max_connections = 0", "webhook_bytes = 10", "webhook_bytes = 100000000"] {
            let c: Config = toml::from_str(&format!("[limits]\n{bad}\n")).unwrap();
            let err = c.validate().unwrap_err();
            assert!(err.starts_with("`[limits]`"), "{bad}: {err}");
        }
        assert!(toml::from_str::<Config>("[limits]\nmax_conections = 8\n").is_err(), "misspelt keys are refused");
        let c = Config {
            database: Some("postgres://db/piste?sslmode=verify-full".into()),
            ca_file: Some("/ca.pem".into()),
            ..Config::default()
        };
        assert_eq!(c.database_url().unwrap(), "postgres://db/piste?sslmode=verify-full&sslrootcert=/ca.pem");
    }

    /// GitLab: the default branch is protected by default; `*` wildcards match across `/`.
    #[test]
    fn protected_refs_and_who_gets_which_secret() {
        let c = project("secrets = { A = \"aaaaaaaa\", B = \"bbbbbbbb\" }\nunprotected_secrets = [\"B\"]\n").unwrap();
        let p = &c.projects[0];
        assert!(p.is_protected(Some("main"), None) && !p.is_protected(Some("feature"), None) && !p.is_protected(None, Some("v1")));
        let names = |protected, source| p.secrets_for(protected, source).map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(names(true, Source::Project), ["A", "B"]);
        assert_eq!(names(false, Source::Project), ["B"]);
        assert!(names(true, Source::Fork).is_empty() && names(false, Source::Fork).is_empty(), "a fork gets no secret");
        assert_eq!(names(true, Source::ApprovedFork), ["B"], "an approved fork: an unprotected ref's");
        assert_eq!(names(false, Source::ApprovedFork), ["B"]);
        let c = project("protected_branches = [\"release/*\"]\nprotected_tags = [\"v*\"]\n").unwrap();
        let p = &c.projects[0];
        assert!(p.is_protected(Some("release/1.2/hotfix"), None) && !p.is_protected(Some("main"), None));
        assert!(p.is_protected(None, Some("v1.0")) && !p.is_protected(None, Some("x1")));
    }

    #[test]
    fn users_members_admins_and_login_are_checked() {
        let err = project("members = { \"al ice\" = \"viewer\" }\n").unwrap_err();
        assert!(err.contains("member `al ice`"), "{err}");
        let err = project("members = { \"group:\" = \"viewer\" }\n").unwrap_err();
        assert!(err.contains("member `group:`"), "{err}");
        let err = project("members = { alice = \"owner\" }\n").unwrap_err();
        assert!(err.contains("owner"), "{err}");
        let c = project("visibility = \"public\"\nmembers = { alice = \"maintainer\", \"group:/app-devs\" = \"developer\" }\n").unwrap();
        assert!(c.knows_user("alice") && !c.knows_user("bob"));
        let login = |top: &str| -> Result<Config, String> {
            let text = format!("{top}\n[oidc]\nissuer = \"https://sso.example/realms/acme\"\nclient_id = \"piste\"\n");
            let c: Config = toml::from_str(&text).map_err(|e| e.to_string())?;
            c.validate().map(|()| c)
        };
        let err = login("").unwrap_err();
        assert!(err.contains("needs `external_url`"), "{err}");
        let err = login("external_url = \"https://ci.example/piste\"").unwrap_err();
        assert!(err.contains("scheme and host only"), "{err}");
        let c =
            login("external_url = \"https://ci.example/\"\nadmins = [\"group:/ops\"]\n[[user]]\nname = \"bot\"\ngroups = [\"/app-devs\"]")
                .unwrap();
        assert_eq!(c.external_url(), "https://ci.example");
        assert_eq!(c.oidc.as_ref().unwrap().groups_claim, "groups");
        assert!(c.knows_user("bot") && c.user_groups("bot") == ["/app-devs"]);
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

    /// `[includes]`: URL patterns are checked when the file is read; `max_needs` raises
    /// GitLab's `ci_max_needs` for the whole server.
    #[test]
    fn includes_and_needs_limit_are_read_and_checked() {
        let c = project("").unwrap();
        assert_eq!((c.max_needs, c.includes.remote_max_bytes, c.includes.remote_timeout_ms), (50, 2 << 20, 10_000));
        let text = "max_needs = 200\n[includes]\ntemplates_dir = \"/srv/t\"\nremote_allow = [\"https://ci.example/raw/*\"]\ncomponent_hosts = [\"gitlab.example.com\"]\n";
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.max_needs, 200);
        assert_eq!(c.includes.component_hosts, ["gitlab.example.com"]);
        for bad in ["remote_allow = [\"http://ci.example/x\"]", "remote_allow = [\"https://*.example/x\"]", "remote_timeout_ms = 0"] {
            let c: Config = toml::from_str(&format!("[includes]\n{bad}\n")).unwrap();
            let err = c.validate().unwrap_err();
            assert!(err.contains("[includes]"), "{bad}: {err}");
        }
        assert!(toml::from_str::<Config>("[includes]\ntemplate_dir = \"/x\"\n").is_err(), "misspelt keys are refused");
    }
}

/// How a free resource group picks its next job (GitLab's `process_mode`, docs "Resource
/// group > Process modes").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessMode {
    /// Any job ready to run (the default).
    #[default]
    Unordered,
    /// The first of the upcoming jobs (`created`, `scheduled` or `waiting_for_resource`)
    /// sorted by pipeline id ascending; if that one is not ready yet, nobody gets the resource.
    OldestFirst,
    /// The same, sorted by pipeline id descending.
    NewestFirst,
}
