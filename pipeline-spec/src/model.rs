//! The resolved pipeline: typed, validated, independent of any particular commit or trigger.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::expr::Expr;
use crate::source::Span;

/// A pipeline after includes, `extends`, `!reference` and `default` were applied.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Declared stages with `.pre` first and `.post` last.
    pub stages: Vec<String>,
    pub variables: Vec<Variable>,
    pub workflow: Option<Workflow>,
    /// Visible jobs (hidden `.name` templates removed), in definition order.
    pub jobs: IndexMap<String, Job>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Variable {
    pub name: String,
    pub value: String,
    pub description: Option<String>,
    pub options: Vec<String>,
    /// `expand: false` makes the value raw: `$` stays as written.
    pub expand: bool,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: Option<String>,
    pub rules: Option<Vec<Rule>>,
    /// `workflow:auto_cancel`; a matching rule's `auto_cancel` overrides each key it sets.
    pub auto_cancel: AutoCancel,
    pub span: Span,
}

/// `workflow:auto_cancel` (GitLab 16.8+). `None` in a field: not set here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AutoCancel {
    pub on_new_commit: Option<OnNewCommit>,
    pub on_job_failure: Option<OnJobFailure>,
}

/// `auto_cancel:on_new_commit`: what a newer pipeline on the same branch does to this one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNewCommit {
    /// GitLab's default: cancel the pipeline, unless an `interruptible: false` job has started.
    #[default]
    Conservative,
    /// Cancel only the `interruptible: true` jobs.
    Interruptible,
    /// Cancel nothing.
    None,
}

impl OnNewCommit {
    pub const NAMES: &'static [&'static str] = &["conservative", "interruptible", "none"];

    pub fn parse(s: &str) -> Option<OnNewCommit> {
        Some(match s {
            "conservative" => OnNewCommit::Conservative,
            "interruptible" => OnNewCommit::Interruptible,
            "none" => OnNewCommit::None,
            _ => return None,
        })
    }
}

/// `auto_cancel:on_job_failure`: whether a failed job cancels the rest of its pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnJobFailure {
    /// GitLab's default: the other jobs go on.
    #[default]
    None,
    /// Cancel the pipeline as soon as one job fails.
    All,
}

impl OnJobFailure {
    pub const NAMES: &'static [&'static str] = &["all", "none"];

    pub fn parse(s: &str) -> Option<OnJobFailure> {
        Some(match s {
            "all" => OnJobFailure::All,
            "none" => OnJobFailure::None,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    OnSuccess,
    OnFailure,
    Always,
    Manual,
    Delayed,
    Never,
}

impl When {
    pub fn parse(s: &str) -> Option<When> {
        Some(match s {
            "on_success" => When::OnSuccess,
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            "manual" => When::Manual,
            "delayed" => When::Delayed,
            "never" => When::Never,
            _ => return None,
        })
    }

    pub const NAMES: &'static [&'static str] = &["on_success", "on_failure", "always", "manual", "delayed", "never"];

    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Manual => "manual",
            When::Delayed => "delayed",
            When::Never => "never",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AllowFailure {
    Bool(bool),
    ExitCodes(Vec<i32>),
}

impl AllowFailure {
    /// Whether a failure with this exit code is allowed.
    pub fn allows(&self, exit_code: Option<i32>) -> bool {
        match self {
            AllowFailure::Bool(b) => *b,
            AllowFailure::ExitCodes(codes) => exit_code.is_some_and(|c| codes.contains(&c)),
        }
    }

    /// How `piste graph` and `piste jobs` show it: allowed at all?
    pub fn any(&self) -> bool {
        match self {
            AllowFailure::Bool(b) => *b,
            AllowFailure::ExitCodes(c) => !c.is_empty(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Retry {
    pub max: u8,
    /// Failure reasons that are retried; empty means `always`.
    pub when: Vec<String>,
    pub exit_codes: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    pub entrypoint: Option<Vec<String>>,
    pub pull_policy: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub alias: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub variables: Vec<(String, String)>,
    /// As `image:pull_policy`; job rows stored before it existed read as none (the default).
    #[serde(default)]
    pub pull_policy: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub job: String,
    pub span: Span,
    pub artifacts: bool,
    pub optional: bool,
    /// `needs: [{job, parallel: {matrix: [...]}}]`: which matrix instances are needed.
    pub matrix: Option<Vec<IndexMap<String, Vec<String>>>>,
    /// `needs:pipeline:job` or `needs:project`: the job is of another pipeline.
    pub cross: Option<CrossSource>,
}

/// Where a need of another pipeline points, as written (`$VARS` are expanded with the job's
/// variables when it starts, as GitLab's `Ci::BuildDependencies` does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CrossSource {
    /// `needs:pipeline:job`: a pipeline of this parent-child hierarchy (`$PARENT_PIPELINE_ID`).
    Pipeline { pipeline: String },
    /// `needs:project` + `ref`: the newest successful job of that name on that ref.
    Project {
        project: String,
        #[serde(rename = "ref")]
        git_ref: String,
    },
}

/// A job of another pipeline whose artifacts and dotenv variables a job receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossNeed {
    pub job: String,
    #[serde(flatten)]
    pub from: CrossSource,
    /// `artifacts: false`: nothing is fetched, and nothing is required (GitLab selects only
    /// the cross dependencies with `artifacts: true`).
    pub artifacts: bool,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub span: Span,
    pub if_: Option<Condition>,
    pub changes: Option<Vec<String>>,
    pub compare_to: Option<String>,
    pub exists: Option<Vec<String>>,
    pub when: Option<When>,
    pub start_in: Option<u64>,
    pub allow_failure: Option<AllowFailure>,
    pub variables: Vec<Variable>,
    pub needs: Option<Vec<Need>>,
    pub interruptible: Option<bool>,
    /// `workflow:rules:auto_cancel` (workflow rules only).
    pub auto_cancel: AutoCancel,
}

/// A parsed `if:` expression with its source text.
#[derive(Debug, Clone)]
pub struct Condition {
    pub source: String,
    pub expr: Expr,
    pub span: Span,
}

/// `only:` / `except:` in their common forms.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `None` when the policy names no refs. `Some([])` (`only: []`, `except: []`) matches no
    /// pipeline, as GitLab's `Refs` policy does: `except: []` excludes nothing and `only: []`
    /// keeps the job out of every pipeline.
    pub refs: Option<Vec<String>>,
    pub variables: Vec<Condition>,
    pub changes: Vec<String>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Artifacts {
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub name: Option<String>,
    pub when: ArtifactsWhen,
    pub expire_in: Option<String>,
    pub untracked: bool,
    pub expose_as: Option<String>,
    pub reports: Reports,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactsWhen {
    #[default]
    OnSuccess,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Reports {
    pub dotenv: Vec<String>,
    pub junit: Vec<String>,
    /// Other report kinds (coverage_report, sast, ...): kind and paths, kept as artifacts.
    pub other: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    pub key: CacheKey,
    pub paths: Vec<String>,
    pub policy: CachePolicy,
    pub when: ArtifactsWhen,
    pub untracked: bool,
    pub fallback_keys: Vec<String>,
    pub unprotect: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CacheKey {
    Literal(String),
    Files { files: Vec<String>, prefix: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CachePolicy {
    Pull,
    Push,
    PullPush,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Environment {
    pub name: String,
    pub url: Option<String>,
    pub action: Option<String>,
    pub on_stop: Option<String>,
    /// Where `on_stop` is written: an unknown job is reported there.
    #[serde(skip)]
    pub on_stop_span: Option<Span>,
    pub deployment_tier: Option<String>,
    pub auto_stop_in: Option<String>,
}

/// One `id_tokens:` entry: the variable that receives the token and the audience it names.
/// A piste server signs one per entry when the job is leased; `piste run` issues none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdToken {
    pub name: String,
    pub aud: Audience,
}

/// `aud:` as written (`$VARS` expanded when the token is signed): GitLab puts a string in the
/// token's `aud` claim as a string and a list as a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parallel {
    Count(u32),
    Matrix(Vec<IndexMap<String, Vec<String>>>),
}

/// `trigger:` — a bridge job: it runs no script, it creates a downstream pipeline.
/// GitLab's `Ci::Bridge`; see docs.gitlab.com `ci/pipelines/downstream_pipelines`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// `project` for multi-project pipelines (`trigger: group/name` or `trigger:project`).
    pub project: Option<String>,
    /// `trigger:branch` of a multi-project trigger (`None`: the project's default branch).
    pub branch: Option<String>,
    /// `trigger:include` for child pipelines: the child's configuration is these includes.
    pub include: Vec<TriggerInclude>,
    /// `strategy:`; without it the trigger job succeeds once the downstream pipeline exists.
    pub strategy: Option<Strategy>,
    pub forward: Forward,
}

/// `trigger:strategy`: the trigger job waits for the downstream pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Takes the downstream pipeline's final status (success, failed, canceled).
    Depend,
    /// GitLab 18.2: mirrors the downstream status as it changes, including a pipeline blocked
    /// by a manual job. Once the downstream pipeline ends it is `depend`'s outcome.
    Mirror,
}

impl Trigger {
    /// Whether the trigger job waits for the downstream pipeline (`strategy: depend|mirror`).
    pub fn waits(&self) -> bool {
        self.strategy.is_some()
    }

    /// A child pipeline of the same project (`trigger:include`), not a multi-project one.
    pub fn is_child(&self) -> bool {
        self.project.is_none()
    }

    /// The jobs whose artifacts the child configuration reads (`trigger:include:artifact`).
    pub fn artifact_jobs(&self) -> impl Iterator<Item = &str> {
        self.include.iter().filter_map(|i| match i {
            TriggerInclude::Artifact { job, .. } => Some(job.as_str()),
            _ => None,
        })
    }

    /// The child pipeline's entry file: GitLab builds a child's configuration as
    /// `include: <trigger:include>` (`Ci::Bridge#downstream_pipeline_params`), so the
    /// loader reads every entry as any `include:` (rules, inputs, limits, positions).
    /// JSON is YAML: the text is parsed by the same loader.
    pub fn child_config(&self) -> String {
        let items: Vec<serde_json::Value> = self.include.iter().map(TriggerInclude::to_json).collect();
        serde_json::json!({ "include": items }).to_string()
    }
}

/// One entry of `trigger:include`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerInclude {
    /// `include: path` or `- local: path`: a file of the same commit.
    Local { path: String },
    /// `- artifact: path` + `job: name`: a file from an artifact of an earlier job of the
    /// parent pipeline (dynamic child pipelines).
    Artifact { path: String, job: String },
    /// `- project: p` + `file:` (+ `ref:`).
    Project { project: String, files: Vec<String>, git_ref: Option<String> },
    /// `- template: Name.gitlab-ci.yml`.
    Template { name: String },
    /// `- remote: https://…`.
    Remote { url: String },
    /// `- component: host/project/name@version`.
    Component { address: String },
}

impl TriggerInclude {
    fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            TriggerInclude::Local { path } => json!({ "local": path }),
            TriggerInclude::Artifact { path, job } => json!({ "artifact": path, "job": job }),
            TriggerInclude::Project { project, files, git_ref } => match git_ref {
                Some(r) => json!({ "project": project, "file": files, "ref": r }),
                None => json!({ "project": project, "file": files }),
            },
            TriggerInclude::Template { name } => json!({ "template": name }),
            TriggerInclude::Remote { url } => json!({ "remote": url }),
            TriggerInclude::Component { address } => json!({ "component": address }),
        }
    }
}

/// `trigger:forward`: what the downstream pipeline receives (GitLab's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The trigger job's `variables:` (and the global ones it inherits). Default true.
    pub yaml_variables: bool,
    /// Variables given to the upstream pipeline (`--var`, a trigger's variables). Default false.
    pub pipeline_variables: bool,
}

impl Default for Forward {
    fn default() -> Self {
        Forward { yaml_variables: true, pipeline_variables: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inherit {
    All,
    None,
}

/// One job as written (after `extends`, `!reference` and `default`), before planning.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub span: Span,
    pub stage: String,
    pub stage_span: Span,
    pub script: Vec<String>,
    pub before_script: Vec<String>,
    pub after_script: Vec<String>,
    pub image: Option<Image>,
    pub services: Vec<Service>,
    /// Job variables only; global ones are in [`Pipeline::variables`] (subject to `inherit`).
    pub variables: Vec<Variable>,
    /// `inherit:variables`: all, none, or a list of names.
    pub inherit_variables: Option<Vec<String>>,
    pub needs: Option<Vec<Need>>,
    pub dependencies: Option<Vec<(String, Span)>>,
    pub rules: Option<Vec<Rule>>,
    pub only: Option<Policy>,
    pub except: Option<Policy>,
    pub when: When,
    pub when_span: Span,
    pub start_in: Option<u64>,
    /// `None`: the default (false, or true for a job-level `when: manual`).
    pub allow_failure: Option<AllowFailure>,
    pub retry: Retry,
    pub timeout: Option<u64>,
    pub parallel: Option<Parallel>,
    pub artifacts: Option<Artifacts>,
    pub cache: Vec<Cache>,
    pub interruptible: bool,
    pub resource_group: Option<String>,
    pub environment: Option<Environment>,
    pub tags: Vec<String>,
    pub coverage: Option<String>,
    pub trigger: Option<Trigger>,
    /// `run:` (GitLab's CI/CD Steps): steps run in order instead of `script`.
    pub steps: Vec<Step>,
    /// `id_tokens:`, in the order written.
    pub id_tokens: Vec<IdToken>,
}

/// One entry of a job's `run:` list. Two steps are equal when their name and action are: the
/// position is where it was read, and does not travel in a job specification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Letters, digits and `_`; unique in the job. Outputs reach later jobs as `NAME_KEY`.
    pub name: String,
    #[serde(flatten)]
    pub action: StepAction,
    #[serde(skip)]
    pub span: Span,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepAction {
    /// `script:`: a shell script, run through the executor as a job's script is.
    Script(String),
    /// `step: piste/NAME@v1` with its `inputs:` as written (expanded when the step runs).
    Builtin { step: String, inputs: Vec<(String, StepInput)> },
}

/// An input's value: a string (numbers and booleans as written), or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepInput {
    Text(String),
    List(Vec<String>),
}

impl PartialEq for Step {
    fn eq(&self, other: &Step) -> bool {
        self.name == other.name && self.action == other.action
    }
}

impl Eq for Step {}

impl Step {
    /// The built-in step's name, when it is one.
    pub fn builtin(&self) -> Option<&str> {
        match &self.action {
            StepAction::Builtin { step, .. } => Some(step),
            StepAction::Script(_) => None,
        }
    }
}

impl Job {
    /// GitLab's default: a job-level `when: manual` may fail without failing the pipeline.
    pub fn effective_allow_failure(&self) -> AllowFailure {
        match &self.allow_failure {
            Some(a) => a.clone(),
            None => AllowFailure::Bool(self.when == When::Manual),
        }
    }
}
