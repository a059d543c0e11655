//! Persistence for the server: one async trait, one file per backend (`sqlite.rs`, the embedded
//! default; `postgres.rs`, for several `piste serve` sharing one queue). Every backend passes
//! the same test suite (`server/tests/store/`).
//!
//! What is stored: runners (token hashes only, and their scope), users' access tokens and
//! browser sessions (hashes only), webhook deliveries (for de-duplication),
//! pipelines with the engine's event log (the engine is deterministic: its state is the replay
//! of its events, and `version` is their count, used for optimistic concurrency between
//! servers; `wake_at`, when its engine next needs the time), and jobs (the queue: pending rows are claimed atomically by runners;
//! a claimed job holds a lease that heartbeats extend). Logs and artifacts live on disk under
//! the data directory, not here.
//!
//! Times are milliseconds since the Unix epoch (`i64`).

use serde::{Deserialize, Serialize};

use scheduler::{Event, JobStatus, PipelineStatus};

mod backend;
mod postgres;
mod sqlite;

pub use backend::Backend;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Backend errors. `Conflict` is expected under concurrency and handled by the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another server appended events first: reload and retry.
    #[error("pipeline {pipeline} changed concurrently (expected version {expected}, found {found})")]
    Conflict { pipeline: i64, expected: i64, found: i64 },
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: i64 },
    /// The database refused or failed (connection, constraint, I/O): an `sqlx::Error`
    /// (PostgreSQL, migrations) or a `rusqlite::Error` (the SQLite store's statements).
    #[error("database error")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store was closed (the server is stopping).
    #[error("the database is closed")]
    Closed,
    #[error("migrating the schema")]
    Migrate(#[source] Box<sqlx::migrate::MigrateError>),
    /// `--database` names something this server cannot open.
    #[error("{0}")]
    Location(String),
    #[error("cannot create `{path}`")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot encode {what}")]
    Encode { what: &'static str, source: serde_json::Error },
    /// A stored value does not decode (`what` says which).
    #[error("stored data is corrupt: {what}")]
    Corrupt { what: String, source: Option<Box<dyn std::error::Error + Send + Sync>> },
    /// Other servers kept changing the pipeline while this one retried.
    #[error("pipeline {0}: too many concurrent changes")]
    Contended(i64),
}

impl StoreError {
    /// Corrupt stored data, with the decoding error as the source.
    pub fn corrupt(what: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Corrupt { what: what.into(), source: Some(source.into()) }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    pub id: i64,
    pub name: String,
    pub tags: Vec<String>,
    pub scope: RunnerScope,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// Which jobs a runner may take besides its tags (`piste runner register` options). A job's
/// secrets go only to a runner allowed to run it, since they join the job when it is leased.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerScope {
    /// A runner with tags takes jobs without tags too (a runner without tags always does).
    pub run_untagged: bool,
    /// Only jobs of pipelines of protected refs (the ones that receive protected secrets).
    pub protected_only: bool,
    /// Only these projects' jobs; `None`: every project.
    pub projects: Option<Vec<String>>,
}

/// A user's personal access token (`piste token create`); the token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessToken {
    pub id: i64,
    pub user: String,
    pub label: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A browser's login, found by the hash of its cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    /// The identity provider's groups claim at login (`/app-devs`), for `group:` members.
    pub groups: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A pipeline to record, with the webhook delivery that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPipeline {
    pub project: String,
    /// `refs/heads/main`, `refs/tags/v1`, `refs/merge-requests/3/head`.
    pub git_ref: String,
    pub sha: String,
    pub before_sha: Option<String>,
    /// GitLab's `CI_PIPELINE_SOURCE`: `push`, `merge_request_event`, `web`, `api`, ...
    pub source: String,
    /// The trigger as JSON (branch, tag, merge request, commit message, ...), for planning.
    pub trigger: String,
    pub created_at: i64,
    /// A fork's merge request under `fork_pipelines = "approval"`: planned, but started only
    /// once a maintainer approves it.
    pub needs_approval: bool,
    /// A downstream pipeline: the pipeline and trigger job that created it (migration 0013).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
}

/// Where a downstream pipeline comes from: its upstream pipeline and that pipeline's trigger job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    pub pipeline_id: i64,
    pub job_id: i64,
}

/// Where a pipeline that needs a maintainer's approval stands (`fork_pipelines = "approval"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Who approved it; `None` while it waits.
    pub by: Option<String>,
    pub at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRow {
    pub id: i64,
    pub project: String,
    pub git_ref: String,
    pub sha: String,
    pub before_sha: Option<String>,
    pub source: String,
    pub trigger: String,
    /// `Created` until planned, then the engine's pipeline status; `Failed` with `error` set
    /// when planning failed.
    pub status: PipelineStatus,
    pub error: Option<String>,
    /// Number of engine events appended so far.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The pipeline's number within its project (`CI_PIPELINE_IID`; migration `0012`).
    pub iid: Option<i64>,
    /// `Some` for a pipeline that needs a maintainer's approval before it starts.
    pub approval: Option<Approval>,
    /// `Some` for a downstream pipeline (created by a trigger job).
    pub upstream: Option<Upstream>,
}

impl PipelineRow {
    /// Planned but waiting for a maintainer's approval: nothing of it may run yet.
    pub fn awaiting_approval(&self) -> bool {
        self.approval.as_ref().is_some_and(|a| a.by.is_none())
    }
}

/// Result of recording a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A new pipeline with this id.
    Created(i64),
    /// The delivery id was seen before: no new pipeline; this is the one it created.
    Duplicate(i64),
}

/// A job of a planned pipeline, as inserted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    pub name: String,
    pub stage: String,
    pub stage_index: i64,
    /// Runner tags the job needs (all of them must be on the runner).
    pub tags: Vec<String>,
    /// The job's payload template as JSON (a `protocol::JobPayload` without token and attempt).
    pub spec: String,
    /// `resource_group:`, expanded.
    pub resource_group: Option<String>,
}

/// A job of a resource group that has not run yet (`created`, `scheduled` or
/// `waiting_for_resource`, in a started pipeline), in pipeline then job order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceCandidate {
    pub job_id: i64,
    pub pipeline_id: i64,
    pub name: String,
    pub status: JobStatus,
    pub attempt: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub name: String,
    pub stage: String,
    pub stage_index: i64,
    pub tags: Vec<String>,
    pub spec: String,
    pub status: JobStatus,
    pub attempt: i64,
    pub runner_id: Option<i64>,
    pub lease_expires_at: Option<i64>,
    pub cancel_requested: bool,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub failure_reason: Option<String>,
    /// `sha256:<hex>` of the uploaded artifacts archive.
    pub artifacts: Option<String>,
    /// Variables from the job's dotenv report, as JSON `[[k, v], ...]`.
    pub dotenv: Option<String>,
    /// A reused attempt: `{"pipeline","job_id","job"}` (`protocol::ReusedFrom`) of the job
    /// whose result it is.
    pub reused_from: Option<String>,
    /// The current attempt's scoped reuse key (`runners::scope_key`), once its runner asked.
    pub reuse_key: Option<String>,
    /// The attempt that runs whatever its key ("run anyway").
    pub run_anyway: Option<i64>,
}

/// An earlier attempt of a job, as it ended (the current one is the job row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRow {
    pub attempt: i64,
    pub status: JobStatus,
    pub exit_code: Option<i64>,
    pub failure_reason: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A key that signs jobs' ID tokens, as stored: the JWS algorithm and the private key (PKCS#8
/// DER). Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub alg: String,
    pub pkcs8: Vec<u8>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey").field("alg", &self.alg).field("pkcs8", &"[redacted]").finish()
    }
}

/// An attempt that passed under a reuse key: where its log is (`job_id`, `attempt`) and what
/// it left (the job row of a later attempt no longer says).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReuseRecord {
    pub job_id: i64,
    pub attempt: i64,
    pub pipeline_id: i64,
    pub job_name: String,
    /// `sha256:<hex>` of its artifacts archive.
    pub artifacts: Option<String>,
    /// Its dotenv variables as JSON `[[k, v], ...]` (the runner reads them; not in the archive).
    pub dotenv: Option<String>,
    /// Its `coverage:` value.
    pub coverage: Option<f64>,
}

/// A change to a job row, derived from engine commands or runner reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobUpdate {
    /// `JobStatusChanged` from the engine. `Pending` puts the job in the queue (clearing
    /// runner, lease and token of an earlier attempt, whose result is kept first as one of the
    /// job's past attempts); other statuses are recorded as is.
    Status { job_id: i64, status: JobStatus, attempt: u32, at: i64 },
    /// How an attempt ended, from the runner (or a lease expiry).
    Result { job_id: i64, exit_code: Option<i32>, failure_reason: Option<String>, at: i64 },
    /// The engine asked to cancel a running job: the next heartbeat answers `cancel`.
    RequestCancel { job_id: i64 },
    /// Attempt `attempt` of the job runs whatever its reuse key ("run anyway"). Kept by
    /// `pipelines::process` only when its events queue that attempt.
    RunAnyway { job_id: i64, attempt: u32 },
}

/// Everything that changes together when the engine processes events for a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub pipeline_id: i64,
    /// The version the caller's engine state has; the append fails with `Conflict` otherwise.
    pub expected_version: i64,
    pub events: Vec<Event>,
    pub jobs: Vec<JobUpdate>,
    pub pipeline_status: Option<PipelineStatus>,
    /// When the engine next needs the time (`Engine::next_wakeup`), stored on the pipeline so
    /// that any server wakes it then; `None` when nothing waits for the clock.
    pub wake_at: Option<i64>,
    pub at: i64,
}

/// A pipeline whose engine needs the time at `at` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup {
    pub pipeline_id: i64,
    pub at: i64,
}

/// A job handed to a runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub job: JobRow,
    pub lease_expires_at: i64,
}

/// The commit status last sent to the forge for a pipeline (see `crate::forge`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgePost {
    pub pipeline_id: i64,
    /// The state last tried (`pending`, `running`, `success`, `failed`, `canceled`, `skipped`).
    pub state: String,
    /// The last state the forge accepted.
    pub posted: Option<String>,
    /// Why the last try failed; `None` when it succeeded.
    pub error: Option<String>,
    pub at: i64,
}

/// A pipeline whose status may not be on its forge yet (see `Store::forge_unposted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unposted {
    pub pipeline_id: i64,
    pub status: PipelineStatus,
    pub posted: Option<String>,
}

/// What a job's reports said (see `crate::reports`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    pub job_id: i64,
    /// `reports::TestReport` as JSON.
    pub tests: Option<String>,
    pub coverage: Option<f64>,
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// `(status, number of jobs)`.
    pub jobs_by_status: Vec<(JobStatus, i64)>,
    pub pipelines_by_status: Vec<(PipelineStatus, i64)>,
    pub runners: i64,
}

/// The server's storage. Every method is one transaction. Implementations may write `async fn`;
/// the futures must be `Send` (the server awaits them from spawned tasks).
pub trait Store: Send + Sync {
    // Runners.
    fn register_runner(
        &self,
        name: &str,
        tags: &[String],
        scope: &RunnerScope,
        token_hash: &str,
        now: i64,
    ) -> impl std::future::Future<Output = Result<Runner>> + Send;
    /// The registered runners, oldest first (at most `limit`).
    fn runners(&self, limit: i64) -> impl std::future::Future<Output = Result<Vec<Runner>>> + Send;
    /// The runner with this token hash, marking it seen.
    fn runner_by_token(&self, token_hash: &str, now: i64) -> impl std::future::Future<Output = Result<Option<Runner>>> + Send;

    // Pipelines.
    /// Records the delivery and its pipeline atomically; a repeated `(project, delivery_id)`
    /// creates nothing and returns the first pipeline.
    fn record_pipeline(&self, delivery_id: &str, pipeline: &NewPipeline) -> impl std::future::Future<Output = Result<Recorded>> + Send;
    fn pipeline(&self, id: i64) -> impl std::future::Future<Output = Result<Option<PipelineRow>>> + Send;
    /// Newest first.
    fn pipelines(&self, project: Option<&str>, limit: i64) -> impl std::future::Future<Output = Result<Vec<PipelineRow>>> + Send;
    /// The pipelines trigger jobs of `pipeline_id` created, oldest first.
    fn downstream_pipelines(&self, pipeline_id: i64) -> impl std::future::Future<Output = Result<Vec<PipelineRow>>> + Send;
    /// Pipelines with one of these statuses (e.g. `created` ones to plan after a restart).
    fn pipelines_with_status(&self, statuses: &[PipelineStatus]) -> impl std::future::Future<Output = Result<Vec<PipelineRow>>> + Send;
    /// Stores the plan's jobs (in order; ids returned in the same order) and sets the status.
    /// A pipeline is planned once: `Conflict` unless its status is still `created`.
    fn save_plan(
        &self,
        pipeline_id: i64,
        jobs: &[NewJob],
        status: PipelineStatus,
        now: i64,
    ) -> impl std::future::Future<Output = Result<Vec<i64>>> + Send;
    /// Marks a pipeline that could not be planned (status `failed`, with `error`): `Conflict` unless its
    /// status is still `created` (another server planned it meanwhile).
    fn fail_pipeline(&self, pipeline_id: i64, error: &str, now: i64) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Records `by`'s approval of a pipeline that waits for one: `true` if it still waited
    /// (it needs one, nobody approved it, and it has not started nor been canceled: no event,
    /// status `manual`), `false` otherwise. The caller then starts it.
    fn approve_pipeline(&self, pipeline_id: i64, by: &str, now: i64) -> impl std::future::Future<Output = Result<bool>> + Send;
    /// The pipeline's engine events, in order (replayed to rebuild the engine).
    fn events(&self, pipeline_id: i64) -> impl std::future::Future<Output = Result<Vec<Event>>> + Send;
    /// Appends events and applies job and pipeline changes atomically, if the pipeline's
    /// version is still `expected_version`. Returns the new version.
    fn apply(&self, transition: &Transition) -> impl std::future::Future<Output = Result<i64>> + Send;

    // Jobs.
    fn job(&self, id: i64) -> impl std::future::Future<Output = Result<Option<JobRow>>> + Send;
    fn jobs(&self, pipeline_id: i64) -> impl std::future::Future<Output = Result<Vec<JobRow>>> + Send;
    /// Who holds a project's resource group: (job, attempt).
    fn resource_holder(&self, project: &str, group: &str) -> impl std::future::Future<Output = Result<Option<(i64, i64)>>> + Send;
    /// Gives the group to this attempt if nobody holds it (atomic); whether it did.
    fn grant_resource(&self, project: &str, group: &str, job: i64, attempt: i64) -> impl std::future::Future<Output = Result<bool>> + Send;
    /// Frees the group if this attempt holds it; whether it did.
    fn release_resource(
        &self,
        project: &str,
        group: &str,
        job: i64,
        attempt: i64,
    ) -> impl std::future::Future<Output = Result<bool>> + Send;
    /// Every `(project, group)` that has a holder or a job waiting for it: what the server looks
    /// at when it starts, so that a group whose holder finished while it was down (or that was
    /// released but not granted again) goes to its next job.
    fn resource_groups_in_use(&self) -> impl std::future::Future<Output = Result<Vec<(String, String)>>> + Send;
    /// The group's jobs that have not run yet, by pipeline then job id.
    fn resource_queue(&self, project: &str, group: &str) -> impl std::future::Future<Output = Result<Vec<ResourceCandidate>>> + Send;
    /// The job's earlier attempts, oldest first (the current one is the job row).
    fn past_attempts(&self, job_id: i64) -> impl std::future::Future<Output = Result<Vec<AttemptRow>>> + Send;
    /// Atomically gives the runner the oldest pending job it may run: every tag of the job is
    /// among the runner's (a job without tags only if the runner has none or runs untagged
    /// jobs), of a protected ref if the runner is `protected_only`, of one of its `projects`
    /// if it names some. The job gets status `running`, the job token hash, a lease until
    /// `lease_until`. Safe when several servers and runners claim at once (each job is claimed
    /// once).
    fn claim_job(
        &self,
        runner: &Runner,
        token_hash: &str,
        now: i64,
        lease_until: i64,
    ) -> impl std::future::Future<Output = Result<Option<Claimed>>> + Send;
    /// The running job `id` if `token_hash` is its current token. (`canceling` counts as
    /// running: the runner still holds the attempt until it reports.)
    fn job_by_token(&self, id: i64, token_hash: &str) -> impl std::future::Future<Output = Result<Option<JobRow>>> + Send;
    /// Extends a running (or `canceling`) job's lease; returns whether a cancel was requested.
    /// `NotFound` when no attempt of the job is running.
    fn extend_lease(&self, id: i64, until: i64) -> impl std::future::Future<Output = Result<bool>> + Send;
    /// Running (or `canceling`) jobs whose lease ended before `now`.
    fn expired_leases(&self, now: i64) -> impl std::future::Future<Output = Result<Vec<JobRow>>> + Send;
    fn set_artifacts(&self, id: i64, digest: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Whether a job of a pipeline of `project` has the artifacts `digest` (`sha256:<hex>`):
    /// what lets a runner skip uploading an archive the server already holds, without telling
    /// anyone whether another project has it.
    fn project_has_artifacts(&self, project: &str, digest: &str) -> impl std::future::Future<Output = Result<bool>> + Send;
    fn set_dotenv(&self, id: i64, dotenv_json: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    // Reuse of job results.
    /// Keeps the scoped key of the job's attempt `attempt` while it runs; whether it still did.
    fn set_reuse_key(&self, id: i64, attempt: i64, scope_key: &str) -> impl std::future::Future<Output = Result<bool>> + Send;
    /// Marks attempt `attempt` of the job as reused (`reused_from` as JSON).
    fn set_reused_from(&self, id: i64, attempt: i64, reused_from: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    /// The attempt that succeeded with this scoped key in `project`.
    fn reuse_record(&self, scope_key: &str, project: &str) -> impl std::future::Future<Output = Result<Option<ReuseRecord>>> + Send;
    /// Records that an attempt succeeded with this scoped key (the latest success replaces an
    /// earlier one).
    fn record_reuse(
        &self,
        scope_key: &str,
        project: &str,
        record: &ReuseRecord,
        at: i64,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Forgets a record whose job can no longer be reused (its artifacts or log are gone).
    fn forget_reuse(&self, scope_key: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    // Jobs' ID tokens.
    /// The signing key named `name`: the one stored, or else `candidate`, stored now. Servers
    /// that race here all get the first one inserted.
    fn id_token_key(&self, name: &str, candidate: &StoredKey, now: i64) -> impl std::future::Future<Output = Result<StoredKey>> + Send;
    // Running logs' chunks (with object storage: finished logs are sealed into one object).
    /// `(offset, length)` of the chunks of a log from offset `from` on, in offset order.
    fn log_chunks(&self, job: i64, attempt: i64, from: u64) -> impl std::future::Future<Output = Result<Vec<(u64, u64)>>> + Send;
    fn log_chunk(&self, job: i64, attempt: i64, offset: u64) -> impl std::future::Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// Stores a chunk received at `at_ms`, or replaces the bytes of one stored at the same
    /// offset (a secret masked across chunks: `at_ms` is `None` and the time stays).
    fn put_log_chunk(
        &self,
        job: i64,
        attempt: i64,
        offset: u64,
        data: &[u8],
        at_ms: Option<i64>,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    /// `(offset, received at ms)` of the chunks that hold bytes of `range`: the last one
    /// starting at or before `range.start`, then those starting before `range.end`.
    fn log_chunk_times(
        &self,
        job: i64,
        attempt: i64,
        range: std::ops::Range<u64>,
    ) -> impl std::future::Future<Output = Result<Vec<(u64, i64)>>> + Send;
    fn delete_log_chunks(&self, job: i64, attempt: i64) -> impl std::future::Future<Output = Result<()>> + Send;
    /// `(job, attempt)` of every log that has chunks.
    fn open_logs(&self) -> impl std::future::Future<Output = Result<Vec<(i64, i64)>>> + Send;
    /// Number of pending jobs.
    fn queue_depth(&self) -> impl std::future::Future<Output = Result<i64>> + Send;
    fn counts(&self) -> impl std::future::Future<Output = Result<Counts>> + Send;
    /// The `limit` earliest `wake_at` of all pipelines, earliest first.
    fn wakeups(&self, limit: i64) -> impl std::future::Future<Output = Result<Vec<Wakeup>>> + Send;

    // Users' tokens and sessions.
    fn create_access_token(
        &self,
        user: &str,
        label: &str,
        token_hash: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> impl std::future::Future<Output = Result<AccessToken>> + Send;
    /// The token with this hash if it is neither revoked nor expired at `now`.
    fn access_token(&self, token_hash: &str, now: i64) -> impl std::future::Future<Output = Result<Option<AccessToken>>> + Send;
    /// Every token (of `user` when given), oldest first, revoked and expired ones included.
    fn access_tokens(&self, user: Option<&str>) -> impl std::future::Future<Output = Result<Vec<AccessToken>>> + Send;
    /// Revokes token `id`; `false` when there is no such token or it was revoked already.
    fn revoke_access_token(&self, id: i64, now: i64) -> impl std::future::Future<Output = Result<bool>> + Send;
    /// Stores a new session (and forgets sessions expired before `session.created_at`).
    fn create_session(&self, token_hash: &str, session: &Session) -> impl std::future::Future<Output = Result<()>> + Send;
    /// The session with this hash if it has not expired at `now`.
    fn session(&self, token_hash: &str, now: i64) -> impl std::future::Future<Output = Result<Option<Session>>> + Send;
    fn delete_session(&self, token_hash: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    // Commit statuses on the forge.
    /// Records one try to post `state` for the pipeline: `error` is `None` when the forge
    /// accepted it (then `posted` becomes `state`).
    fn record_forge_post(
        &self,
        pipeline_id: i64,
        state: &str,
        error: Option<&str>,
        at: i64,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    fn forge_post(&self, pipeline_id: i64) -> impl std::future::Future<Output = Result<Option<ForgePost>>> + Send;
    /// The `limit` newest pipelines of `projects` whose status name is not the last state their
    /// forge accepted (none yet, or another): candidates to post at start.
    fn forge_unposted(&self, projects: &[String], limit: i64) -> impl std::future::Future<Output = Result<Vec<Unposted>>> + Send;

    // Reports.
    /// Stores (or clears, with `None`) the job's test report (JSON).
    fn set_test_report(&self, job_id: i64, pipeline_id: i64, tests: Option<&str>) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Stores (or clears) the job's coverage value.
    fn set_coverage(&self, job_id: i64, pipeline_id: i64, coverage: Option<f64>) -> impl std::future::Future<Output = Result<()>> + Send;
    /// The reports of the pipeline's jobs (only jobs that have one), by job id.
    fn job_reports(&self, pipeline_id: i64) -> impl std::future::Future<Output = Result<Vec<JobReport>>> + Send;
}
