//! What goes into the engine and what comes out.

use serde::{Deserialize, Serialize};

use crate::spec::FailureReason;
use crate::status::{JobStatus, PipelineStatus};

/// Something that happened. Every event carries `now` (milliseconds, any epoch, never read from
/// a clock by the engine); the engine's time only moves forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Process the pipeline for the first time.
    Start { now: u64 },
    /// An executor began the attempt.
    JobStarted { job: String, attempt: u32, now: u64 },
    /// The attempt ended. Also the answer to a `CancelJob` command (any outcome then means
    /// canceled). An attempt may finish without `JobStarted` (e.g. the image could not be pulled).
    JobFinished { job: String, attempt: u32, outcome: Outcome, now: u64 },
    /// The runner holding the attempt stopped renewing its lease: the attempt failed with
    /// `runner_system_failure` and is retried per its `retry` rules.
    LeaseExpired { job: String, attempt: u32, now: u64 },
    /// Time passed: delayed jobs whose time came are enqueued. (Any event does this; `Tick` does
    /// nothing else. See [`crate::Engine::next_wakeup`].)
    Tick { now: u64 },
    /// A person plays a manual job, or starts a delayed job now.
    PlayManual { job: String, now: u64 },
    /// A person cancels one job.
    CancelJob { job: String, now: u64 },
    /// A person retries a finished job (success, failed or canceled): a new attempt.
    RetryJob { job: String, now: u64 },
    /// A person cancels the whole pipeline.
    Cancel { now: u64 },
    /// A newer pipeline started on the same ref (GitLab's `workflow:auto_cancel:on_new_commit`).
    AutoCancel { mode: AutoCancelMode, now: u64 },
    /// The host gave this attempt its `resource_group` (answer to `WaitForResource`).
    ResourceGranted { job: String, attempt: u32, now: u64 },
}

impl Event {
    pub fn now(&self) -> u64 {
        match self {
            Event::Start { now }
            | Event::JobStarted { now, .. }
            | Event::JobFinished { now, .. }
            | Event::LeaseExpired { now, .. }
            | Event::Tick { now }
            | Event::PlayManual { now, .. }
            | Event::CancelJob { now, .. }
            | Event::RetryJob { now, .. }
            | Event::Cancel { now }
            | Event::AutoCancel { now, .. }
            | Event::ResourceGranted { now, .. } => *now,
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failed { reason: FailureReason, exit_code: Option<i32> },
    Canceled,
}

/// `workflow:auto_cancel:on_new_commit` (`none` means: do not send the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoCancelMode {
    /// Cancel the whole pipeline, but only if no `interruptible: false` job has started yet.
    Conservative,
    /// Cancel only the `interruptible: true` jobs; the others go on.
    Interruptible,
}

/// What the engine asks for or reports, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Run this attempt of the job. Every ready job gets one, with no concurrency limit (the
    /// executor pool applies `--jobs N`). The executor answers with `JobStarted` (optional) and
    /// exactly one `JobFinished`, or the server sends `LeaseExpired`.
    RunJob {
        job: String,
        attempt: u32,
    },
    /// This attempt is ready but needs its resource group: answer with `ResourceGranted` when
    /// no other job holds the group (the job is `waiting_for_resource` meanwhile).
    WaitForResource {
        job: String,
        attempt: u32,
        group: String,
    },
    /// The attempt that held `group` stopped (ended, or canceled before it ran): the group is free.
    ReleaseResource {
        job: String,
        attempt: u32,
        group: String,
    },
    /// Stop this attempt; answer with `JobFinished` once it is stopped.
    CancelJob {
        job: String,
        attempt: u32,
    },
    /// A job's status or attempt changed (for logs, the database and the UI).
    JobStatusChanged {
        job: String,
        attempt: u32,
        status: JobStatus,
    },
    PipelineStatusChanged {
        status: PipelineStatus,
    },
    /// The pipeline reached a complete status. Sent once per completion: only a person's
    /// `PlayManual`/`RetryJob` on a finished pipeline can reopen it (GitLab allows both).
    PipelineFinished {
        status: PipelineStatus,
        has_warnings: bool,
    },
}
