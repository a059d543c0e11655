//! The planned pipeline, as the scheduler sees it.
//!
//! These types are deliberately plain: the YAML planner (`pipeline-spec`) resolves every default
//! (`allow_failure` of manual jobs, `retry:when`, `optional` needs on absent jobs, `when: never`)
//! and converts its `Dag` into a [`PipelineSpec`]. The scheduler only checks what it relies on
//! (unique names, known needs, no cycles; see [`crate::Engine::new`]).

use serde::{Deserialize, Serialize};

/// One job of the planned pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobNode {
    pub name: String,
    pub stage: String,
    /// Position of `stage` in the pipeline's `stages:` list; only the order matters.
    pub stage_index: usize,
    /// `None`: stage ordering (waits for every job of earlier stages).
    /// `Some(vec![])`: starts immediately. `Some(list)`: waits for the listed jobs only.
    pub needs: Option<Vec<Need>>,
    pub when: When,
    pub allow_failure: AllowFailure,
    pub retry: Retry,
    /// Used by [`crate::Event::AutoCancel`] (GitLab's `interruptible`).
    pub interruptible: bool,
    /// Passed through for the executor, which enforces it and reports
    /// [`FailureReason::JobExecutionTimeout`]; the engine keeps no job timers.
    pub timeout_ms: Option<u64>,
    /// `resource_group:`, expanded: at most one job of the group (across pipelines, on the
    /// server) is pending or running at a time. The host grants it ([`crate::Event::ResourceGranted`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
}

impl JobNode {
    /// A job with GitLab's defaults: stage ordering, `when: on_success`, no `allow_failure`,
    /// no retry, not interruptible, no timeout.
    pub fn new(name: impl Into<String>, stage: impl Into<String>, stage_index: usize) -> Self {
        JobNode {
            name: name.into(),
            stage: stage.into(),
            stage_index,
            needs: None,
            when: When::OnSuccess,
            allow_failure: AllowFailure::No,
            retry: Retry::default(),
            interruptible: false,
            timeout_ms: None,
            resource_group: None,
        }
    }

    /// Whether a manual job holds the pipeline (GitLab: a manual job is blocking when its
    /// effective `allow_failure` is false; `exit_codes` do not make it optional).
    pub fn is_blocking_manual(&self) -> bool {
        self.when == When::Manual && self.allow_failure != AllowFailure::Yes
    }
}

/// One entry of `needs:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Need {
    pub job: String,
    /// `needs:optional`: ignored when the job is absent from the pipeline.
    pub optional: bool,
    /// `needs:artifacts`: the executor downloads the artifacts; no effect on scheduling.
    pub artifacts: bool,
}

impl Need {
    /// A required need that downloads artifacts (GitLab's default).
    pub fn on(job: impl Into<String>) -> Self {
        Need { job: job.into(), optional: false, artifacts: true }
    }
}

/// `when:` of a job. `never` jobs are removed by the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    OnSuccess,
    OnFailure,
    Always,
    Manual,
    Delayed { start_in_ms: u64 },
}

/// `allow_failure:` of a job, with the planner's default already applied (GitLab: `true` for
/// `when: manual` outside `rules`, `false` everywhere else).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowFailure {
    No,
    Yes,
    /// `allow_failure:exit_codes`: a failure is allowed only when its exit code is listed.
    ExitCodes(Vec<i32>),
}

/// `retry:` of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Retries after the first attempt (GitLab accepts 0..=2).
    pub max: u8,
    /// Failure classes that are retried. Use [`Retry::from_yaml`] to get GitLab's default.
    pub when: Vec<RetryWhen>,
    /// Exit codes that are retried whatever the failure class.
    pub exit_codes: Vec<i32>,
}

impl Retry {
    /// `retry: N`: retried on any failure.
    pub fn max(max: u8) -> Self {
        Retry { max, when: vec![RetryWhen::Always], exit_codes: Vec::new() }
    }

    /// `retry: {max, when, exit_codes}` as written. GitLab (`Gitlab::Ci::Build::AutoRetry`):
    /// when `when` is absent it defaults to `[always]`, unless `exit_codes` is given, in which
    /// case it defaults to `[]` (only the exit codes retry).
    pub fn from_yaml(max: u8, when: Option<Vec<RetryWhen>>, exit_codes: Option<Vec<i32>>) -> Self {
        let when = match (when, &exit_codes) {
            (Some(when), _) => when,
            (None, None) => vec![RetryWhen::Always],
            (None, Some(_)) => Vec::new(),
        };
        Retry { max, when, exit_codes: exit_codes.unwrap_or_default() }
    }
}

/// Values of `retry:when` (GitLab's list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryWhen {
    Always,
    UnknownFailure,
    ScriptFailure,
    ApiFailure,
    StuckOrTimeoutFailure,
    RunnerSystemFailure,
    RunnerUnsupported,
    StaleSchedule,
    JobExecutionTimeout,
    ArchivedFailure,
    UnmetPrerequisites,
    SchedulerFailure,
    DataIntegrityFailure,
    RunnerInterrupted,
}

/// Why an attempt failed, as reported by the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    UnknownFailure,
    ScriptFailure,
    ApiFailure,
    StuckOrTimeoutFailure,
    RunnerSystemFailure,
    RunnerUnsupported,
    StaleSchedule,
    JobExecutionTimeout,
    ArchivedFailure,
    UnmetPrerequisites,
    SchedulerFailure,
    DataIntegrityFailure,
    /// The runner stopped the job (shutdown, or it lost its host) before it could finish.
    RunnerInterrupted,
    /// Artifacts of a need are gone. Never retried (GitLab's `RETRY_OVERRIDES`).
    MissingDependencyFailure,
    /// A trigger job could not create its downstream pipeline (invalid configuration, depth
    /// limit, unknown project): GitLab's `downstream_pipeline_creation_failed`. Never retried.
    DownstreamPipelineCreationFailed,
}

impl FailureReason {
    /// The `retry:when` value that names this failure class, if any.
    pub fn retry_when(self) -> Option<RetryWhen> {
        use FailureReason as F;
        Some(match self {
            F::UnknownFailure => RetryWhen::UnknownFailure,
            F::ScriptFailure => RetryWhen::ScriptFailure,
            F::ApiFailure => RetryWhen::ApiFailure,
            F::StuckOrTimeoutFailure => RetryWhen::StuckOrTimeoutFailure,
            F::RunnerSystemFailure => RetryWhen::RunnerSystemFailure,
            F::RunnerUnsupported => RetryWhen::RunnerUnsupported,
            F::StaleSchedule => RetryWhen::StaleSchedule,
            F::JobExecutionTimeout => RetryWhen::JobExecutionTimeout,
            F::ArchivedFailure => RetryWhen::ArchivedFailure,
            F::UnmetPrerequisites => RetryWhen::UnmetPrerequisites,
            F::SchedulerFailure => RetryWhen::SchedulerFailure,
            F::DataIntegrityFailure => RetryWhen::DataIntegrityFailure,
            F::RunnerInterrupted => RetryWhen::RunnerInterrupted,
            F::MissingDependencyFailure | F::DownstreamPipelineCreationFailed => return None,
        })
    }
}

/// The planned pipeline. `jobs` are in YAML order, which breaks every tie deterministically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineSpec {
    pub jobs: Vec<JobNode>,
    /// `workflow:auto_cancel:on_job_failure: all`: a job that fails (not allowed to, and not
    /// retried) cancels the rest of the pipeline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_on_job_failure: bool,
}

impl PipelineSpec {
    pub fn new(jobs: Vec<JobNode>) -> Self {
        PipelineSpec { jobs, cancel_on_job_failure: false }
    }

    pub fn job(&self, name: &str) -> Option<&JobNode> {
        self.jobs.iter().find(|job| job.name == name)
    }

    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.jobs.iter().position(|job| job.name == name)
    }
}
