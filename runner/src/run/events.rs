//! What a run reports as it goes. The binary renders these (text on a terminal, JSON Lines with
//! `--format json`); nothing here prints.

use serde::Serialize;

/// Final status of a job in this run, with GitLab's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobResult {
    Success,
    Failed,
    Skipped,
    Canceled,
    Manual,
}

impl JobResult {
    pub fn as_str(self) -> &'static str {
        match self {
            JobResult::Success => "success",
            JobResult::Failed => "failed",
            JobResult::Skipped => "skipped",
            JobResult::Canceled => "canceled",
            JobResult::Manual => "manual",
        }
    }
}

/// One event of a run. Serialised as `{"event": "...", ...}` JSON Lines.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// Which executor runs the jobs, and why.
    ExecutorChosen {
        executor: String,
        reason: String,
    },
    /// A pipeline of this run started: the first event of every pipeline, the top one's and
    /// each downstream one's (then inside [`RunEvent::Downstream`]).
    PipelineStarted {
        pipeline_id: u64,
        /// `CI_PIPELINE_SOURCE`: `parent_pipeline` for a child, `pipeline` for a multi-project one.
        source: String,
    },
    /// An event of a downstream pipeline (`trigger:`), as `{"event":"downstream",
    /// "pipeline_id":N,"trigger":["deploy"],"inner":{…}}`. `trigger` is the path of trigger jobs
    /// from the top pipeline down to the one that created pipeline `pipeline_id`.
    Downstream {
        pipeline_id: u64,
        trigger: Vec<String>,
        inner: Box<RunEvent>,
    },
    JobStarted {
        job: String,
        stage: String,
        attempt: u32,
        time: String,
    },
    /// Lines of a job's output, masked, without their newlines; ANSI sequences are kept.
    /// Batched for throughput; `--format json` prints one `{"event":"log","job","line"}` each.
    Log {
        job: String,
        lines: Vec<String>,
    },
    JobFinished {
        job: String,
        stage: String,
        status: JobResult,
        allow_failure: bool,
        exit_code: Option<i32>,
        attempt: u32,
        duration_ms: u64,
        time: String,
        /// Why it failed, for people (runner system failures, timeouts).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The earlier job whose result this is (`piste run`'s reuse), when it was not run.
        #[serde(skip_serializing_if = "Option::is_none")]
        reused_from: Option<super::reuse::ReusedFrom>,
        /// The job's `coverage:` value, found in its log.
        #[serde(skip_serializing_if = "Option::is_none")]
        coverage: Option<f64>,
    },
    PipelineFinished {
        /// The pipeline's number in the project (`CI_PIPELINE_IID`, `.piste/pipelines/<n>/`).
        pipeline: u64,
        status: String,
        duration_ms: u64,
        /// Status `manual`: the blocking manual jobs the pipeline waits for (GitLab's
        /// "blocked"); `piste run JOB` plays them.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        blocked_by: Vec<String>,
    },
}

/// A row of the final table.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub job: String,
    pub stage: String,
    pub status: JobResult,
    pub allow_failure: bool,
    pub attempt: u32,
    pub duration_ms: Option<u64>,
    /// The earlier job whose result this is, when it was reused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<super::reuse::ReusedFrom>,
    /// The job's `coverage:` value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
}

/// What `run_pipeline` returns once the pipeline finished.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// GitLab's pipeline status: `success`, `failed`, `canceled`, `manual` (blocked), `skipped`.
    pub status: String,
    /// `success` (allowed failures included) or `skipped`, and not canceled.
    pub passed: bool,
    /// Status `manual`: the blocking manual jobs the pipeline waits for. `piste run` returns
    /// then (exit code 4) instead of waiting for a person.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<String>,
    pub has_warnings: bool,
    pub duration_ms: u64,
    pub jobs: Vec<JobSummary>,
    pub critical_path: Vec<String>,
    /// Where the full logs of this run are.
    pub log_dir: std::path::PathBuf,
    /// This pipeline's number (`.piste/pipelines/<n>/`).
    pub pipeline_id: u64,
    /// The pipelines its trigger jobs created (or did not), in the order they were triggered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub downstream: Vec<DownstreamSummary>,
}

/// What became of one trigger job's downstream pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct DownstreamSummary {
    /// The trigger job.
    pub job: String,
    /// `child` (`trigger:include`) or the project path of a multi-project trigger.
    pub kind: String,
    /// The downstream pipeline's status, or `not_created` / `not_run_locally`.
    pub status: String,
    /// Why it was not created or not run, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The downstream pipeline's own summary, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Box<RunSummary>>,
}

/// RFC 3339 UTC time with milliseconds, for events.
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let base = crate::gitinfo::iso8601(secs, 0);
    // iso8601 gives `YYYY-MM-DDTHH:MM:SS+00:00`; insert milliseconds and use `Z`.
    format!("{}.{:03}Z", &base[..19], d.subsec_millis())
}

/// RFC 3339 UTC time to the second, as GitLab's `Time#iso8601` (`CI_PIPELINE_CREATED_AT`,
/// `CI_JOB_STARTED_AT`): `2024-05-01T10:01:00Z`.
pub fn now_rfc3339_seconds() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
