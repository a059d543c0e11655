//! The predefined `CI_*` variables GitLab gives a pipeline, from a plain [`Context`].
//!
//! The caller fills a [`Context`] (from the local git repository for `piste run`, from a webhook
//! on the server) and asks for the variables of the phase it is in. GitLab makes variables
//! available in three phases, and `rules` only see the first two:
//!
//! * [`Context::pipeline_variables`]: what `workflow:rules` and `include:rules` see
//!   (GitLab's `Project#predefined_variables` + `Builder::Pipeline#predefined_variables`).
//! * [`Context::rules_variables`]: what a job's `rules` see, adding the job's name, stage,
//!   `parallel` index and environment (`Builder#predefined_variables_from_job_attr`).
//! * [`Context::job_variables`]: what the job's script sees, adding the "job-only" ones
//!   (`CI_JOB_ID`, `CI_PIPELINE_ID`, `CI_PROJECT_DIR`, …).
//!
//! When each variable is set, per GitLab's docs and `lib/gitlab/ci/variables/builder/`:
//!
//! | variables | set when |
//! |---|---|
//! | `CI`, `GITLAB_CI` (`true`), `CI_SERVER_URL/HOST/PORT/PROTOCOL/FQDN`, `CI_API_V4_URL`, `CI_API_GRAPHQL_URL`, `CI_PROJECT_*`, `CI_DEFAULT_BRANCH`, `CI_CONFIG_PATH`, `CI_TEMPLATE_REGISTRY_HOST`, `CI_PIPELINE_IID`, `CI_PIPELINE_SOURCE` | always |
//! | `CI_REGISTRY`, `CI_REGISTRY_IMAGE` (`<registry>/<project path, lowercase>`) | a registry is configured |
//! | `CI_PIPELINE_CREATED_AT`, `CI_PIPELINE_NAME`, `CI_PIPELINE_SCHEDULE_DESCRIPTION` | the value is known (the last for schedules) |
//! | `CI_COMMIT_SHA/SHORT_SHA/BEFORE_SHA/REF_NAME/REF_SLUG/MESSAGE/TITLE/DESCRIPTION/REF_PROTECTED/TIMESTAMP/AUTHOR`, `CI_COMMIT_MESSAGE_IS_TRUNCATED` | the pipeline has a commit |
//! | `CI_COMMIT_BRANCH` | branch pipelines only: **not** for tags nor merge requests |
//! | `CI_COMMIT_TAG`, `CI_COMMIT_TAG_MESSAGE` | tag pipelines only |
//! | `CI_MERGE_REQUEST_*` | merge request pipelines only (labels and milestone when present) |
//! | `CI_OPEN_MERGE_REQUESTS` | the branch has open merge requests |
//! | `GITLAB_USER_ID/EMAIL/LOGIN/NAME` | a user started the pipeline |
//! | `CI_JOB_NAME`, `CI_JOB_NAME_SLUG`, `CI_JOB_GROUP_NAME`, `CI_JOB_STAGE`, `CI_NODE_TOTAL` (`1` unless `parallel`) | job rules and job |
//! | `CI_NODE_INDEX` / `CI_JOB_MANUAL` / `CI_PIPELINE_TRIGGERED` / `CI_ENVIRONMENT_*` | `parallel` / `when: manual` or `delayed` / trigger pipelines / `environment` |
//! | `CI_JOB_ID`, `CI_JOB_URL`, `CI_PIPELINE_ID`, `CI_PIPELINE_URL`, `CI_PROJECT_DIR`, `CI_BUILDS_DIR`, `CI_SERVER` (`yes`), `CI_JOB_IMAGE`, `CI_JOB_TIMEOUT`, `CI_JOB_STARTED_AT` | job only (script), never in `rules` |
//!
//! In a merge request pipeline GitLab also sets `CI_COMMIT_REF_NAME` to the source branch,
//! `CI_COMMIT_BEFORE_SHA` to 40 zeros and `CI_COMMIT_REF_PROTECTED` to `false` (the ref is
//! `refs/merge-requests/<iid>/head`, neither a branch nor a tag); this module does the same.
//!
//! Not provided here, because they describe GitLab itself or secrets the runner owns:
//! `CI_SERVER_NAME/VERSION*/REVISION`, `GITLAB_FEATURES`, `CI_JOB_TOKEN`, `CI_REGISTRY_USER` /
//! `PASSWORD`, `CI_REPOSITORY_URL`, `CI_CONCURRENT_*`, and the external pull request, Pages,
//! dependency proxy and Kubernetes variables. The job runner (`runner::job::run`) sets
//! `CI_JOB_STATUS` (`running` during the script), `CI_JOB_STARTED_AT`, `CI_PROJECT_DIR`,
//! `CI_DISPOSABLE_ENVIRONMENT` / `CI_SHARED_ENVIRONMENT` and `CI_RUNNER_*`; `scheduler::job::JobSpec::variables` sets a job's `CI_ENVIRONMENT_*` with
//! [`environment_variables`] once its name is expanded ([`environment_slug`] is GitLab's slug,
//! SHA-256 suffix included).

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

/// How a pipeline was started: GitLab's `CI_PIPELINE_SOURCE` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum PipelineSource {
    Api,
    Chat,
    External,
    ExternalPullRequestEvent,
    MergeRequestEvent,
    OndemandDastScan,
    OndemandDastValidation,
    ParentPipeline,
    Pipeline,
    #[default]
    Push,
    Schedule,
    SecurityOrchestrationPolicy,
    Trigger,
    Web,
    WebIde,
}

impl PipelineSource {
    pub const ALL: [PipelineSource; 15] = [
        PipelineSource::Api,
        PipelineSource::Chat,
        PipelineSource::External,
        PipelineSource::ExternalPullRequestEvent,
        PipelineSource::MergeRequestEvent,
        PipelineSource::OndemandDastScan,
        PipelineSource::OndemandDastValidation,
        PipelineSource::ParentPipeline,
        PipelineSource::Pipeline,
        PipelineSource::Push,
        PipelineSource::Schedule,
        PipelineSource::SecurityOrchestrationPolicy,
        PipelineSource::Trigger,
        PipelineSource::Web,
        PipelineSource::WebIde,
    ];

    /// GitLab's exact string, as `$CI_PIPELINE_SOURCE` holds it.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineSource::Api => "api",
            PipelineSource::Chat => "chat",
            PipelineSource::External => "external",
            PipelineSource::ExternalPullRequestEvent => "external_pull_request_event",
            PipelineSource::MergeRequestEvent => "merge_request_event",
            PipelineSource::OndemandDastScan => "ondemand_dast_scan",
            PipelineSource::OndemandDastValidation => "ondemand_dast_validation",
            PipelineSource::ParentPipeline => "parent_pipeline",
            PipelineSource::Pipeline => "pipeline",
            PipelineSource::Push => "push",
            PipelineSource::Schedule => "schedule",
            PipelineSource::SecurityOrchestrationPolicy => "security_orchestration_policy",
            PipelineSource::Trigger => "trigger",
            PipelineSource::Web => "web",
            PipelineSource::WebIde => "webide",
        }
    }
}

impl fmt::Display for PipelineSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of GitLab's pipeline sources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pipeline source `{0}`: expected one of {list}", list = source_list())]
pub struct UnknownPipelineSource(pub String);

fn source_list() -> String {
    PipelineSource::ALL.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

impl FromStr for PipelineSource {
    type Err = UnknownPipelineSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PipelineSource::ALL.into_iter().find(|src| src.as_str() == s).ok_or_else(|| UnknownPipelineSource(s.to_string()))
    }
}

/// `CI_MERGE_REQUEST_EVENT_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum MergeRequestEventType {
    /// A pipeline on the source branch's head (the usual "merge request pipeline").
    #[default]
    Detached,
    /// A pipeline on the merge of source into target ("merged results").
    MergedResult,
    MergeTrain,
}

impl MergeRequestEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeRequestEventType::Detached => "detached",
            MergeRequestEventType::MergedResult => "merged_result",
            MergeRequestEventType::MergeTrain => "merge_train",
        }
    }
}

/// The merge request a `merge_request_event` pipeline runs for.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MergeRequest {
    /// Project-level number, the one in the merge request's URL.
    pub iid: u64,
    /// Instance-level ID; the IID when `None`.
    pub id: Option<u64>,
    pub title: String,
    pub description: String,
    pub labels: Vec<String>,
    pub milestone: Option<String>,
    pub source_branch: String,
    pub target_branch: String,
    /// Path of the source project when it is a fork; `None` means the pipeline's project.
    pub source_project_path: Option<String>,
    pub source_project_id: Option<u64>,
    /// Head of the source branch: GitLab sets it only for merged results and merge trains.
    pub source_branch_sha: Option<String>,
    /// Head of the target branch: likewise only for merged results and merge trains.
    pub target_branch_sha: Option<String>,
    pub diff_base_sha: Option<String>,
    pub event_type: MergeRequestEventType,
    pub source_branch_protected: bool,
    pub target_branch_protected: bool,
    pub squash_on_merge: bool,
}

/// Who started the pipeline (`GITLAB_USER_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
    pub login: String,
    pub name: String,
    pub email: String,
}

/// Everything the predefined variables of a pipeline are made of. Plain data; see
/// [`Context::default`] for the values of an unconfigured local run.
/// Serialisable so a server can store it with the pipeline and rebuild job variables later.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Context {
    /// Base URL of the server, e.g. `https://gitlab.example.com` (a path prefix is kept).
    pub server_url: String,
    /// Full project path, `group/subgroup/name`.
    pub project_path: String,
    pub project_id: u64,
    /// Display name; the last path segment when `None`.
    pub project_title: Option<String>,
    pub project_description: String,
    /// `private`, `internal` or `public`.
    pub project_visibility: String,
    pub default_branch: String,
    /// Path of the pipeline file, `.gitlab-ci.yml` by default.
    pub config_path: String,
    /// Full commit SHA; when empty, no `CI_COMMIT_*` variable is set (as in GitLab).
    pub commit_sha: String,
    /// The branch's previous head; `None` gives GitLab's 40 zeros.
    pub before_sha: Option<String>,
    /// Branch of a branch pipeline (ignored when `tag` or `merge_request` is set).
    pub branch: Option<String>,
    /// Tag of a tag pipeline.
    pub tag: Option<String>,
    /// Annotation of the tag (empty for a lightweight tag).
    pub tag_message: String,
    /// Whether the branch or tag is protected.
    pub ref_protected: bool,
    pub commit_message: String,
    pub commit_author_name: String,
    pub commit_author_email: String,
    /// Commit time in ISO 8601 as the caller formats it, e.g. `2022-01-31T16:47:55+00:00`.
    pub commit_timestamp: String,
    pub source: PipelineSource,
    /// Instance-level pipeline ID (job-only in GitLab).
    pub pipeline_id: u64,
    /// Project-level pipeline number.
    pub pipeline_iid: u64,
    /// Pipeline creation time in ISO 8601; not set when empty.
    pub pipeline_created_at: String,
    /// `workflow:name` once expanded.
    pub pipeline_name: Option<String>,
    /// Description of the schedule, for `schedule` pipelines.
    pub schedule_description: Option<String>,
    /// Set for merge request pipelines (whose source is `merge_request_event`).
    pub merge_request: Option<MergeRequest>,
    /// `group/project!iid` references of open merge requests from this branch (up to four).
    pub open_merge_requests: Vec<String>,
    pub user: Option<User>,
    /// Container registry `host[:port]`, when there is one.
    pub registry: Option<String>,
    /// Where jobs check the project out: `CI_BUILDS_DIR`; `CI_PROJECT_DIR` is below it.
    pub builds_dir: String,
    /// Whose pages `CI_PROJECT_URL`, `CI_PIPELINE_URL` and `CI_JOB_URL` link to.
    #[serde(default)]
    pub pages: Pages,
}

/// The web pages the URL variables point at: GitLab's paths (`<server>/<project>/-/jobs/<id>`),
/// or a piste server's (`<server>/projects/<project>`, `/pipelines/<id>`, `/jobs/<id>`), so
/// that a link a job prints opens the page of the server that ran it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pages {
    #[default]
    Gitlab,
    Piste,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            server_url: "http://localhost".to_string(),
            project_path: "local/project".to_string(),
            project_id: 1,
            project_title: None,
            project_description: String::new(),
            project_visibility: "private".to_string(),
            default_branch: "main".to_string(),
            config_path: ".gitlab-ci.yml".to_string(),
            commit_sha: String::new(),
            before_sha: None,
            branch: None,
            tag: None,
            tag_message: String::new(),
            ref_protected: false,
            commit_message: String::new(),
            commit_author_name: String::new(),
            commit_author_email: String::new(),
            commit_timestamp: String::new(),
            source: PipelineSource::Push,
            pipeline_id: 1,
            pipeline_iid: 1,
            pipeline_created_at: String::new(),
            pipeline_name: None,
            schedule_description: None,
            merge_request: None,
            open_merge_requests: Vec::new(),
            user: None,
            registry: None,
            builds_dir: "/builds".to_string(),
            pages: Pages::Gitlab,
        }
    }
}

/// The job's side of the variables (see [`Context::rules_variables`] and
/// [`Context::job_variables`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobContext<'a> {
    /// Full job name, including a `parallel` suffix such as `rspec 1/3` or `test: [a, b]`.
    pub name: &'a str,
    pub stage: &'a str,
    /// Instance-level job ID (job-only).
    pub job_id: u64,
    /// 1-based index among the instances of a `parallel` job.
    pub node_index: Option<u32>,
    /// Number of parallel instances; `0` means not parallel and gives GitLab's `1`.
    pub node_total: u32,
    /// `when: manual` or `when: delayed`.
    pub manual: bool,
    pub environment: Option<EnvironmentContext<'a>>,
    /// Image the job runs in (job-only).
    pub image: Option<&'a str>,
    /// Job timeout in seconds (job-only).
    pub timeout_secs: Option<u64>,
    /// Start time in ISO 8601 (job-only).
    pub started_at: Option<&'a str>,
}

/// A job's `environment:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentContext<'a> {
    /// Name once expanded.
    pub name: &'a str,
    /// `start` (the default), `prepare`, `stop`, `verify` or `access`.
    pub action: Option<&'a str>,
    /// `deployment_tier`, when known.
    pub tier: Option<&'a str>,
    pub url: Option<&'a str>,
    /// GitLab's `CI_ENVIRONMENT_SLUG`, when the caller computed it (job-only here).
    pub slug: Option<&'a str>,
}

/// GitLab's `Gitlab::Utils.slugify`, used for `CI_COMMIT_REF_SLUG`, `CI_PROJECT_PATH_SLUG` and
/// `CI_JOB_NAME_SLUG`: lowercase (Unicode-aware, as Ruby's `downcase`), every character
/// outside `a-z0-9` becomes `-`, then the first 63 characters (all ASCII by then, so 63
/// bytes), then leading and trailing `-` removed. Inner runs of `-` are kept.
pub fn slugify(s: &str) -> String {
    let slug: String =
        s.to_lowercase().chars().map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' }).take(63).collect();
    slug.trim_matches('-').to_string()
}

/// GitLab's `Gitlab::Slug::Environment#generate` (`CI_ENVIRONMENT_SLUG`): lowercase, every
/// character outside `a-z0-9` becomes `-`, `env-` in front unless it starts with a letter, runs
/// of `-` squeezed; then, when that is longer than 24 characters or differs from the name, its
/// first 17 characters, a `-` (unless it ends with one) and a 6-character suffix: the SHA-256 of
/// the name as a base-36 number, last 6 digits (predictable, so the same name gives the same
/// slug on both paths); otherwise the slug without a trailing `-`.
pub fn environment_slug(name: &str) -> String {
    let lowered: String = name.to_lowercase().chars().map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' }).collect();
    let prefixed = if lowered.starts_with(|c: char| c.is_ascii_lowercase()) { lowered } else { format!("env-{lowered}") };
    let mut slug = String::with_capacity(prefixed.len());
    for c in prefixed.chars() {
        if !(c == '-' && slug.ends_with('-')) {
            slug.push(c);
        }
    }
    if slug.len() > 24 || slug != name {
        let mut short: String = slug.chars().take(17).collect();
        if !short.ends_with('-') {
            short.push('-');
        }
        short.push_str(&base36_suffix(name));
        short
    } else {
        slug.trim_end_matches('-').to_string()
    }
}

/// `Digest::SHA2.hexdigest(name).to_i(16).to_s(36).last(6)`.
pub(crate) fn base36_suffix(name: &str) -> String {
    use sha2::Digest;
    base36_last6(&sha2::Sha256::digest(name.as_bytes()))
}

/// The last 6 base-36 digits of a big-endian number.
pub(crate) fn base36_last6(digest: &[u8]) -> String {
    const MODULUS: u64 = 36u64.pow(6);
    let rest = digest.iter().fold(0u64, |r, &b| (r * 256 + u64::from(b)) % MODULUS);
    let mut digits = [b'0'; 6];
    let mut n = rest;
    for d in digits.iter_mut().rev() {
        *d = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

/// GitLab's `Environment#guess_tier` (`CI_ENVIRONMENT_TIER` when `deployment_tier` is not set).
pub fn guess_environment_tier(name: &str) -> &'static str {
    static TIERS: LazyLock<[(Regex, &str); 4]> = LazyLock::new(|| {
        let re = |p: &str| Regex::new(&format!("(?i){p}")).expect("static regex");
        [
            (re("(dev|review|trunk)"), "development"),
            (re("(test|tst|int|ac(ce|)pt|qa|qc|control|quality)"), "testing"),
            (re("(st(a|)g|mod(e|)l|pre|demo|non)"), "staging"),
            (re("(pr(o|)d|live)"), "production"),
        ]
    });
    TIERS.iter().find(|(re, _)| re.is_match(name)).map_or("other", |(_, tier)| tier)
}

/// `CI_ENVIRONMENT_NAME/SLUG/URL/ACTION/TIER` of a job with `environment:`, from its name and
/// URL already expanded: the action defaults to `start`, the tier to GitLab's guess from the
/// name, and the URL is set only when there is one.
pub fn environment_variables(name: &str, url: Option<&str>, action: Option<&str>, tier: Option<&str>) -> Vec<(String, String)> {
    let mut v = vec![
        ("CI_ENVIRONMENT_NAME".to_string(), name.to_string()),
        ("CI_ENVIRONMENT_SLUG".to_string(), environment_slug(name)),
        ("CI_ENVIRONMENT_ACTION".to_string(), action.unwrap_or("start").to_string()),
        ("CI_ENVIRONMENT_TIER".to_string(), tier.unwrap_or_else(|| guess_environment_tier(name)).to_string()),
    ];
    if let Some(url) = url.filter(|u| !u.is_empty()) {
        v.push(("CI_ENVIRONMENT_URL".to_string(), url.to_string()));
    }
    v
}

/// GitLab's `Gitlab::Utils::Job.group_name` (`CI_JOB_GROUP_NAME`): the job name without its
/// `parallel` suffix (`rspec 1/3` → `rspec`, `test: [ruby, 3.2]` → `test`).
pub fn job_group_name(name: &str) -> String {
    // Ruby: %r{([\b\s:]+((\[.*\])|(\d+[\s:/\\]+\d+))){1,3}\s*\z}, where `[\b]` is a backspace
    // and `\s`, `\d` are ASCII.
    static SUFFIX: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?:[\x08\t\n\x0B\x0C\r :]+(?:\[.*\]|[0-9]+[\t\n\x0B\x0C\r :/\\]+[0-9]+)){1,3}[\t\n\x0B\x0C\r ]*\z")
            .expect("static regex")
    });
    let stripped = SUFFIX.replace(name, "");
    stripped.trim_matches(|c: char| matches!(c, '\0' | '\t' | '\n' | '\x0B' | '\x0C' | '\r' | ' ')).to_string()
}

/// GitLab's limit on `CI_COMMIT_MESSAGE`, `_TITLE` and `_DESCRIPTION`, in bytes.
const MAX_COMMIT_MESSAGE_BYTES: usize = 100_000;
/// GitLab's limit on `CI_MERGE_REQUEST_DESCRIPTION`, in characters.
const MAX_MR_DESCRIPTION_CHARS: usize = 2700;
const BLANK_SHA: &str = "0000000000000000000000000000000000000000";

impl Context {
    pub fn is_merge_request(&self) -> bool {
        self.merge_request.is_some()
    }

    pub fn is_tag(&self) -> bool {
        self.tag.is_some() && !self.is_merge_request()
    }

    /// A branch pipeline: the only kind with `CI_COMMIT_BRANCH`.
    pub fn is_branch(&self) -> bool {
        self.branch.is_some() && self.tag.is_none() && !self.is_merge_request()
    }

    /// `CI_COMMIT_REF_NAME`: the merge request's source branch, else the tag, else the branch.
    pub fn ref_name(&self) -> &str {
        match &self.merge_request {
            Some(mr) => &mr.source_branch,
            None => self.tag.as_deref().or(self.branch.as_deref()).unwrap_or(""),
        }
    }

    /// `CI_COMMIT_SHORT_SHA`: the first eight characters.
    pub fn short_sha(&self) -> &str {
        self.commit_sha.get(..8).unwrap_or(&self.commit_sha)
    }

    /// `CI_PROJECT_NAME`: the last segment of the project path.
    pub fn project_name(&self) -> &str {
        self.project_path.rsplit('/').next().unwrap_or(&self.project_path)
    }

    /// `CI_PROJECT_NAMESPACE`: the path without its last segment.
    pub fn project_namespace(&self) -> &str {
        self.project_path.rsplit_once('/').map_or("", |(ns, _)| ns)
    }

    /// `CI_PROJECT_URL`.
    pub fn project_url(&self) -> String {
        match self.pages {
            Pages::Gitlab => format!("{}/{}", self.server_base(), self.project_path),
            Pages::Piste => format!("{}/projects/{}", self.server_base(), self.project_path),
        }
    }

    /// `CI_PIPELINE_URL`.
    pub fn pipeline_url(&self) -> String {
        match self.pages {
            Pages::Gitlab => format!("{}/-/pipelines/{}", self.project_url(), self.pipeline_id),
            Pages::Piste => format!("{}/pipelines/{}", self.server_base(), self.pipeline_id),
        }
    }

    /// `CI_JOB_URL` of job `job_id`.
    pub fn job_url(&self, job_id: u64) -> String {
        match self.pages {
            Pages::Gitlab => format!("{}/-/jobs/{job_id}", self.project_url()),
            Pages::Piste => format!("{}/jobs/{job_id}", self.server_base()),
        }
    }

    /// `CI_PROJECT_DIR`: the checkout, `<builds_dir>/<project path>`.
    pub fn project_dir(&self) -> String {
        format!("{}/{}", self.builds_dir.trim_end_matches('/'), self.project_path)
    }

    fn server_base(&self) -> &str {
        self.server_url.trim_end_matches('/')
    }

    /// Variables for `workflow:rules` and `include:rules`: everything GitLab knows before any
    /// job exists.
    pub fn pipeline_variables(&self) -> Vec<(String, String)> {
        let mut v = Vars::default();
        self.server_and_project(&mut v);
        self.pipeline_and_commit(&mut v);
        if let Some(mr) = &self.merge_request {
            self.merge_request_vars(mr, &mut v);
        }
        if !self.open_merge_requests.is_empty() {
            v.set("CI_OPEN_MERGE_REQUESTS", self.open_merge_requests.join(","));
        }
        if let Some(user) = &self.user {
            v.set("GITLAB_USER_ID", user.id.to_string());
            v.set("GITLAB_USER_EMAIL", &user.email);
            v.set("GITLAB_USER_LOGIN", &user.login);
            v.set("GITLAB_USER_NAME", &user.name);
        }
        v.0
    }

    /// Variables a job's `rules` see: the pipeline's plus the job's name, stage, `parallel`
    /// position and environment. Job-only values such as `CI_JOB_ID` are absent, as in GitLab.
    pub fn rules_variables(&self, job: &JobContext<'_>) -> Vec<(String, String)> {
        let mut v = Vars::default();
        v.set("CI_JOB_NAME", job.name);
        v.set("CI_JOB_NAME_SLUG", slugify(job.name));
        v.set("CI_JOB_GROUP_NAME", job_group_name(job.name));
        v.set("CI_JOB_STAGE", job.stage);
        if job.manual {
            v.set("CI_JOB_MANUAL", "true");
        }
        if self.source == PipelineSource::Trigger {
            v.set("CI_PIPELINE_TRIGGERED", "true");
        }
        if let Some(index) = job.node_index {
            v.set("CI_NODE_INDEX", index.to_string());
        }
        v.set("CI_NODE_TOTAL", job.node_total.max(1).to_string());
        if let Some(env) = &job.environment {
            v.set("CI_ENVIRONMENT_NAME", env.name);
            v.set("CI_ENVIRONMENT_ACTION", env.action.unwrap_or("start"));
            if let Some(tier) = env.tier {
                v.set("CI_ENVIRONMENT_TIER", tier);
            }
            if let Some(url) = env.url {
                v.set("CI_ENVIRONMENT_URL", url);
            }
        }
        v.0.extend(self.pipeline_variables());
        v.0
    }

    /// Everything a job's script sees from GitLab: [`Self::rules_variables`] plus the job-only
    /// values.
    /// A merge request pipeline whose source is another project (a fork): untrusted code.
    pub fn from_fork(&self) -> bool {
        self.merge_request.as_ref().is_some_and(|mr| mr.source_project_path.is_some())
    }

    pub fn job_variables(&self, job: &JobContext<'_>) -> Vec<(String, String)> {
        let mut v = Vars(self.rules_variables(job));
        v.set("CI_JOB_ID", job.job_id.to_string());
        v.set("CI_JOB_URL", self.job_url(job.job_id));
        if let Some(image) = job.image {
            v.set("CI_JOB_IMAGE", image);
        }
        if let Some(timeout) = job.timeout_secs {
            v.set("CI_JOB_TIMEOUT", timeout.to_string());
        }
        if let Some(started) = job.started_at {
            v.set("CI_JOB_STARTED_AT", started);
        }
        if let Some(slug) = job.environment.as_ref().and_then(|e| e.slug) {
            v.set("CI_ENVIRONMENT_SLUG", slug);
        }
        v.set("CI_PIPELINE_ID", self.pipeline_id.to_string());
        v.set("CI_PIPELINE_URL", self.pipeline_url());
        v.set("CI_BUILDS_DIR", self.builds_dir.trim_end_matches('/'));
        v.set("CI_PROJECT_DIR", self.project_dir());
        v.set("CI_SERVER", "yes");
        v.0
    }

    fn server_and_project(&self, v: &mut Vars) {
        let server = ServerUrl::parse(self.server_base());
        v.set("CI", "true");
        v.set("GITLAB_CI", "true");
        v.set("CI_SERVER_URL", self.server_base());
        v.set("CI_SERVER_HOST", server.host);
        v.set("CI_SERVER_PORT", server.port.to_string());
        v.set("CI_SERVER_PROTOCOL", server.protocol);
        v.set("CI_SERVER_FQDN", server.fqdn());
        v.set("CI_API_V4_URL", format!("{}/api/v4", self.server_base()));
        v.set("CI_API_GRAPHQL_URL", format!("{}/api/graphql", self.server_base()));
        v.set("CI_PROJECT_ID", self.project_id.to_string());
        v.set("CI_PROJECT_NAME", self.project_name());
        v.set("CI_PROJECT_TITLE", self.project_title.as_deref().unwrap_or(self.project_name()));
        v.set("CI_PROJECT_DESCRIPTION", &self.project_description);
        v.set("CI_PROJECT_PATH", &self.project_path);
        v.set("CI_PROJECT_PATH_SLUG", slugify(&self.project_path));
        v.set("CI_PROJECT_NAMESPACE", self.project_namespace());
        v.set("CI_PROJECT_ROOT_NAMESPACE", self.project_path.split('/').next().unwrap_or(""));
        v.set("CI_PROJECT_URL", self.project_url());
        v.set("CI_PROJECT_VISIBILITY", &self.project_visibility);
        v.set("CI_DEFAULT_BRANCH", &self.default_branch);
        v.set("CI_CONFIG_PATH", &self.config_path);
        if let Some(registry) = &self.registry {
            v.set("CI_REGISTRY", registry);
            v.set("CI_REGISTRY_IMAGE", format!("{registry}/{}", self.project_path.to_lowercase()));
        }
        v.set("CI_TEMPLATE_REGISTRY_HOST", "registry.gitlab.com");
    }

    fn pipeline_and_commit(&self, v: &mut Vars) {
        v.set("CI_PIPELINE_IID", self.pipeline_iid.to_string());
        v.set("CI_PIPELINE_SOURCE", self.source.as_str());
        if !self.pipeline_created_at.is_empty() {
            v.set("CI_PIPELINE_CREATED_AT", &self.pipeline_created_at);
        }
        if let Some(name) = &self.pipeline_name {
            v.set("CI_PIPELINE_NAME", name);
        }
        if self.source == PipelineSource::Schedule
            && let Some(description) = &self.schedule_description
        {
            v.set("CI_PIPELINE_SCHEDULE_DESCRIPTION", description);
        }
        if self.commit_sha.is_empty() {
            return;
        }
        let before = match (&self.before_sha, self.is_merge_request()) {
            (Some(sha), false) if !sha.is_empty() => sha.as_str(),
            _ => BLANK_SHA,
        };
        let message = CommitMessage::new(&self.commit_message);
        v.set("CI_COMMIT_SHA", &self.commit_sha);
        v.set("CI_COMMIT_SHORT_SHA", self.short_sha());
        v.set("CI_COMMIT_BEFORE_SHA", before);
        v.set("CI_COMMIT_REF_NAME", self.ref_name());
        v.set("CI_COMMIT_REF_SLUG", slugify(self.ref_name()));
        if self.is_branch() {
            v.set("CI_COMMIT_BRANCH", self.ref_name());
        }
        v.set("CI_COMMIT_MESSAGE", message.message);
        v.set("CI_COMMIT_MESSAGE_IS_TRUNCATED", message.truncated.to_string());
        v.set("CI_COMMIT_TITLE", message.title);
        v.set("CI_COMMIT_DESCRIPTION", message.description);
        v.set("CI_COMMIT_REF_PROTECTED", (self.ref_protected && !self.is_merge_request()).to_string());
        v.set("CI_COMMIT_TIMESTAMP", &self.commit_timestamp);
        v.set("CI_COMMIT_AUTHOR", format!("{} <{}>", self.commit_author_name, self.commit_author_email));
        if self.is_tag() {
            v.set("CI_COMMIT_TAG", self.ref_name());
            v.set("CI_COMMIT_TAG_MESSAGE", &self.tag_message);
        }
    }

    fn merge_request_vars(&self, mr: &MergeRequest, v: &mut Vars) {
        let base = self.server_base();
        let source_path = mr.source_project_path.as_deref().unwrap_or(&self.project_path);
        let (description, truncated) = truncate_chars(&mr.description, MAX_MR_DESCRIPTION_CHARS);
        v.set("CI_MERGE_REQUEST_EVENT_TYPE", mr.event_type.as_str());
        v.set("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA", mr.source_branch_sha.as_deref().unwrap_or(""));
        v.set("CI_MERGE_REQUEST_TARGET_BRANCH_SHA", mr.target_branch_sha.as_deref().unwrap_or(""));
        if let Some(sha) = &mr.diff_base_sha {
            v.set("CI_MERGE_REQUEST_DIFF_BASE_SHA", sha);
        }
        v.set("CI_MERGE_REQUEST_ID", mr.id.unwrap_or(mr.iid).to_string());
        v.set("CI_MERGE_REQUEST_IID", mr.iid.to_string());
        v.set("CI_MERGE_REQUEST_REF_PATH", format!("refs/merge-requests/{}/head", mr.iid));
        v.set("CI_MERGE_REQUEST_PROJECT_ID", self.project_id.to_string());
        v.set("CI_MERGE_REQUEST_PROJECT_PATH", &self.project_path);
        v.set("CI_MERGE_REQUEST_PROJECT_URL", self.project_url());
        v.set("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", &mr.target_branch);
        v.set("CI_MERGE_REQUEST_TARGET_BRANCH_PROTECTED", mr.target_branch_protected.to_string());
        v.set("CI_MERGE_REQUEST_TITLE", &mr.title);
        v.set("CI_MERGE_REQUEST_DESCRIPTION", description);
        v.set("CI_MERGE_REQUEST_DESCRIPTION_IS_TRUNCATED", truncated.to_string());
        if let Some(milestone) = &mr.milestone {
            v.set("CI_MERGE_REQUEST_MILESTONE", milestone);
        }
        if !mr.labels.is_empty() {
            v.set("CI_MERGE_REQUEST_LABELS", mr.labels.join(","));
        }
        v.set("CI_MERGE_REQUEST_SQUASH_ON_MERGE", mr.squash_on_merge.to_string());
        v.set("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", mr.source_project_id.unwrap_or(self.project_id).to_string());
        v.set("CI_MERGE_REQUEST_SOURCE_PROJECT_PATH", source_path);
        v.set("CI_MERGE_REQUEST_SOURCE_PROJECT_URL", format!("{base}/{source_path}"));
        v.set("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", &mr.source_branch);
        v.set("CI_MERGE_REQUEST_SOURCE_BRANCH_PROTECTED", mr.source_branch_protected.to_string());
    }
}

/// An ordered variable list under construction.
#[derive(Default)]
struct Vars(Vec<(String, String)>);

impl Vars {
    fn set(&mut self, name: &str, value: impl AsRef<str>) {
        self.0.push((name.to_string(), value.as_ref().to_string()));
    }
}

/// `CI_SERVER_PROTOCOL`, `_HOST`, `_PORT` from the server URL.
struct ServerUrl<'a> {
    protocol: &'a str,
    host: &'a str,
    port: u16,
}

impl<'a> ServerUrl<'a> {
    fn parse(url: &'a str) -> Self {
        let (protocol, rest) = url.split_once("://").unwrap_or(("http", url));
        let authority = rest.split('/').next().unwrap_or("");
        let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        let default_port = if protocol.eq_ignore_ascii_case("https") { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]:8080` or `host:8080`, but not the inside of a bare `[::1]`.
            Some((host, port)) if !port.contains(']') => (host, port.parse().unwrap_or(default_port)),
            _ => (authority, default_port),
        };
        ServerUrl { protocol, host, port }
    }

    /// `CI_SERVER_FQDN`: the host, with the port when it is not the protocol's default.
    fn fqdn(&self) -> String {
        let default = if self.protocol.eq_ignore_ascii_case("https") { 443 } else { 80 };
        if self.port == default { self.host.to_string() } else { format!("{}:{}", self.host, self.port) }
    }
}

/// GitLab's commit title and description (`Commit#full_title`, `Commit#description`).
struct CommitMessage<'a> {
    message: &'a str,
    title: String,
    description: String,
    truncated: bool,
}

impl<'a> CommitMessage<'a> {
    fn new(full: &'a str) -> Self {
        let truncated = full.len() > MAX_COMMIT_MESSAGE_BYTES;
        let message = truncate_bytes(full, MAX_COMMIT_MESSAGE_BYTES);
        let title = if full.trim().is_empty() {
            "No commit message".to_string()
        } else {
            truncate_bytes(full.split('\n').next().unwrap_or(""), MAX_COMMIT_MESSAGE_BYTES).to_string()
        };
        // A first line over 100 characters is cut at 80 for the title shown in GitLab, and the
        // description then starts with an ellipsis and the rest of the message.
        let title_end = full.chars().position(|c| c == '\n');
        let long_title = title_end.map_or(full.chars().count() > 100, |end| end > 100);
        let description = if long_title {
            format!("…{}", full.chars().skip(80).collect::<String>())
        } else {
            let rest = full.split_once('\n').map_or("", |(_, rest)| rest);
            let rest = rest.strip_suffix("\r\n").or_else(|| rest.strip_suffix(['\n', '\r'])).unwrap_or(rest);
            rest.to_string()
        };
        let description = truncate_bytes(&description, MAX_COMMIT_MESSAGE_BYTES).to_string();
        CommitMessage { message, title, description, truncated }
    }
}

/// At most `max` bytes, cut at a character boundary (GitLab cuts bytes and may split one).
fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// `ActiveSupport`'s `truncate(max)`: over `max` characters, the first `max - 3` and `...`.
fn truncate_chars(s: &str, max: usize) -> (String, bool) {
    if s.chars().count() <= max {
        return (s.to_string(), false);
    }
    (format!("{}...", s.chars().take(max - 3).collect::<String>()), true)
}

#[cfg(test)]
mod tests;
