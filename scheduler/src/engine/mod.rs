//! The engine: a pure state machine driven by [`Event`]s.

mod actions;
mod process;
mod report;

use serde::{Deserialize, Serialize};

use crate::error::{EventError, SpecError, suggest};
use crate::event::{Command, Event};
use crate::graph::{Graph, normalize};
use crate::spec::{FailureReason, PipelineSpec};
use crate::status::{JobStatus, PipelineStatus};

pub use report::{JobSnapshot, Snapshot};

/// How the engine is run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineOptions {
    pub play_manual: PlayManual,
}

/// Which manual jobs are played as soon as they are reached (for `piste run`, where naming a
/// manual job on the command line means "run it").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlayManual {
    /// Manual jobs wait for `PlayManual` (the server).
    #[default]
    None,
    /// Every manual job runs as if played.
    All,
    /// These manual jobs run as if played; the others wait.
    Jobs(Vec<String>),
}

impl PlayManual {
    fn plays(&self, name: &str) -> bool {
        match self {
            PlayManual::None => false,
            PlayManual::All => true,
            PlayManual::Jobs(names) => names.iter().any(|n| crate::subset::selects(n, name)),
        }
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: FailureReason,
    pub exit_code: Option<i32>,
}

/// The pipeline state machine. `on` is the only way to change it; it never reads a clock,
/// does no I/O and is deterministic, so replaying the same events gives the same commands.
///
/// Serializes to its whole state (spec, options, job states); deserializing validates the
/// spec again, so a stored engine resumes exactly where it stopped.
#[derive(Debug, Clone)]
pub struct Engine {
    d: EngineData,
    graph: Graph,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EngineData {
    spec: PipelineSpec,
    options: EngineOptions,
    started: bool,
    now: u64,
    jobs: Vec<JobState>,
    /// Last reported pipeline status.
    status: PipelineStatus,
    has_warnings: bool,
    /// `PipelineFinished` was sent for the current completion.
    finished: bool,
}

/// Per-job state. `attempt` starts at 1 and grows with every retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JobState {
    status: JobStatus,
    attempt: u32,
    failure: Option<Failure>,
    /// When a delayed job becomes pending.
    scheduled_at: Option<u64>,
    queued_at: Option<u64>,
    started_at: Option<u64>,
    first_started_at: Option<u64>,
    finished_at: Option<u64>,
    /// A retried attempt skips the manual/delayed gate (GitLab's `enqueue_immediately`).
    enqueue_immediately: bool,
    /// Last `(status, attempt)` sent in `JobStatusChanged`.
    reported: (JobStatus, u32),
}

impl JobState {
    fn new() -> Self {
        JobState {
            status: JobStatus::Created,
            attempt: 1,
            failure: None,
            scheduled_at: None,
            queued_at: None,
            started_at: None,
            first_started_at: None,
            finished_at: None,
            enqueue_immediately: false,
            reported: (JobStatus::Created, 1),
        }
    }
}

impl Engine {
    /// Validates `spec` (unique names, known needs, needs in the same or an earlier stage, no
    /// cycle, at least one job) and the job names in `options`. Optional needs on absent jobs
    /// are dropped. Every job starts `Created`; nothing runs before [`Event::Start`].
    pub fn new(spec: PipelineSpec, options: EngineOptions) -> Result<Engine, SpecError> {
        let spec = normalize(&spec);
        let graph = Graph::build(&spec)?;
        if let PlayManual::Jobs(names) = &options.play_manual {
            for name in names {
                if !spec.jobs.iter().any(|job| crate::subset::selects(name, &job.name)) {
                    return Err(SpecError::UnknownJob {
                        name: name.clone(),
                        suggestion: suggest(name, spec.jobs.iter().map(|job| job.name.as_str())),
                    });
                }
            }
        }
        let jobs = spec.jobs.iter().map(|_| JobState::new()).collect();
        let d = EngineData {
            spec,
            options,
            started: false,
            now: 0,
            jobs,
            status: PipelineStatus::Created,
            has_warnings: false,
            finished: false,
        };
        Ok(Engine { d, graph })
    }

    /// Applies one event and returns what to do, in order. On `Err` nothing changed.
    pub fn on(&mut self, event: Event) -> Result<Vec<Command>, EventError> {
        let mut out = Vec::new();
        self.apply(event, &mut out)?;
        if self.d.started {
            self.process(&mut out);
        }
        Ok(out)
    }

    pub fn spec(&self) -> &PipelineSpec {
        &self.d.spec
    }

    pub fn status(&self) -> PipelineStatus {
        self.d.status
    }

    /// Some failure was allowed (GitLab shows "passed with warnings").
    pub fn has_warnings(&self) -> bool {
        self.d.has_warnings
    }

    /// The pipeline reached a complete status (success, failed, canceled, skipped).
    pub fn is_finished(&self) -> bool {
        self.d.finished
    }

    pub fn job_status(&self, job: &str) -> Option<JobStatus> {
        self.d.spec.position(job).map(|i| self.d.jobs[i].status)
    }

    /// The earliest time a delayed job is due: send `Tick { now }` then.
    pub fn next_wakeup(&self) -> Option<u64> {
        self.d.jobs.iter().filter(|job| job.status == JobStatus::Scheduled).filter_map(|job| job.scheduled_at).min()
    }

    /// Manual jobs that hold the pipeline (status `Manual`, not `allow_failure: true`).
    /// Non-empty with nothing running means the pipeline waits for a person.
    pub fn blocking_manual_jobs(&self) -> Vec<&str> {
        self.d
            .spec
            .jobs
            .iter()
            .zip(&self.d.jobs)
            .filter(|(node, state)| state.status == JobStatus::Manual && node.is_blocking_manual())
            .map(|(node, _)| node.name.as_str())
            .collect()
    }

    fn index(&self, job: &str) -> Result<usize, EventError> {
        self.d.spec.position(job).ok_or_else(|| EventError::UnknownJob { job: job.to_owned() })
    }
}

impl Serialize for Engine {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.d.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Engine {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let d = EngineData::deserialize(deserializer)?;
        let graph = Graph::build(&d.spec).map_err(serde::de::Error::custom)?;
        if d.jobs.len() != d.spec.jobs.len() || normalize(&d.spec) != d.spec {
            return Err(serde::de::Error::custom("the saved job states do not match the pipeline"));
        }
        Ok(Engine { d, graph })
    }
}
