//! The scheduling core of piste: a pure, synchronous pipeline state machine.
//!
//! [`Engine::on`] takes an [`Event`] (pipeline started, job started or finished, lease expired,
//! time passed, a person played, canceled or retried something) and returns the [`Command`]s
//! that follow (run this attempt, cancel that one, statuses changed, pipeline finished). It
//! does no I/O, reads no clock (time comes in the events), starts no thread and knows nothing
//! of tokio; its whole state serializes with serde. The same engine drives `piste run`
//! (in-process) and the server (persisted between events).
//!
//! The rules are GitLab's, taken from its sources and documentation; each module names its
//! source of truth: `status` (composite statuses), `engine::process` (when a job runs),
//! `retry` (automatic retries), `engine::actions` (play, cancel, retry), [`PipelineSpec::subset`]
//! (`piste run JOB...`).
//!
//! Decisions that are piste's own:
//! * Job timeouts are enforced by the executor, which reports
//!   [`FailureReason::JobExecutionTimeout`]; the engine keeps no timers besides delayed jobs.
//! * A lease that expires fails the attempt with `runner_system_failure` (GitLab drops a job
//!   whose runner stopped reporting as `stuck_or_timeout_failure` after an hour; piste knows
//!   sooner, and knows why).
//! * Canceling the pipeline also cancels blocking manual jobs (GitLab leaves every manual job
//!   playable, which can leave a canceled pipeline "blocked" forever); `RetryJob` on such a
//!   job runs it. Optional manual jobs stay playable, as in GitLab.
//! * A job with `needs` waits until none of its needs can still change by itself before it is
//!   decided (see `engine::process`): GitLab can start a `when: always` job while some of its
//!   needs still run, when another need was skipped.
//! * Canceling an attempt waits for the executor: `Canceling` until its `JobFinished`.

mod engine;
mod error;
mod event;
mod from_plan;
mod graph;
pub mod job;
pub mod protocol;
mod retry;
mod spec;
mod status;
mod subset;

pub use engine::{Engine, EngineOptions, Failure, JobSnapshot, PlayManual, Snapshot};
pub use error::{EventError, SpecError};
pub use event::{AutoCancelMode, Command, Event, Outcome};
pub use from_plan::spec_from_plan;
pub use spec::{AllowFailure, FailureReason, JobNode, Need, PipelineSpec, Retry, RetryWhen, When};
pub use status::{JobStatus, PipelineStatus};
