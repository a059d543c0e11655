//! Job and pipeline statuses, and GitLab's composite status.
//!
//! Source of truth: `Gitlab::Ci::Status::Composite` (lib/gitlab/ci/status/composite.rb) and
//! `Ci::HasStatus` (app/models/concerns/ci/has_status.rb) in GitLab's sources. One function
//! gives both the status of a pipeline (all its jobs) and the "previous status" a job is
//! processed against (the jobs of earlier stages, or the jobs it needs).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Status of one job (GitLab's `AVAILABLE_STATUSES`, without `preparing` and
/// `waiting_for_callback`, which need features the engine does not model: trigger jobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its predecessors.
    Created,
    /// Ready: handed to an executor with `RunJob`, not started yet.
    Pending,
    Running,
    Success,
    Failed,
    /// `CancelJob` was sent; waiting for the executor to confirm the attempt ended.
    Canceling,
    Canceled,
    /// Will not run: its predecessors' outcome does not match its `when`.
    Skipped,
    /// A `when: manual` job waiting to be played.
    Manual,
    /// A `when: delayed` job waiting for its time.
    Scheduled,
    /// Ready, but its `resource_group` is held by another job: `WaitForResource` was sent,
    /// and `ResourceGranted` makes it pending.
    WaitingForResource,
}

impl JobStatus {
    /// GitLab's `COMPLETED_STATUSES`.
    pub fn is_complete(self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::Canceled | Self::Skipped)
    }

    /// An attempt is in an executor's hands.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Running | Self::Canceling)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Canceling => "canceling",
            Self::Canceled => "canceled",
            Self::Skipped => "skipped",
            Self::Manual => "manual",
            Self::Scheduled => "scheduled",
            Self::WaitingForResource => "waiting_for_resource",
        }
    }

    /// Every status, for decoding.
    pub const ALL: [JobStatus; 11] = [
        Self::Created,
        Self::Pending,
        Self::Running,
        Self::Success,
        Self::Failed,
        Self::Canceling,
        Self::Canceled,
        Self::Skipped,
        Self::Manual,
        Self::Scheduled,
        Self::WaitingForResource,
    ];

    /// The inverse of [`JobStatus::as_str`].
    pub fn parse(text: &str) -> Option<JobStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of the pipeline, as GitLab computes it. `Manual` is shown as "blocked" by GitLab: a
/// blocking manual job holds the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStatus {
    Created,
    Pending,
    Running,
    Success,
    Failed,
    Canceling,
    Canceled,
    Skipped,
    Manual,
    Scheduled,
    /// A job waits for its resource group and nothing runs.
    WaitingForResource,
}

impl PipelineStatus {
    /// The pipeline is over (GitLab's `COMPLETED_STATUSES`).
    pub fn is_complete(self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::Canceled | Self::Skipped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Canceling => "canceling",
            Self::Canceled => "canceled",
            Self::Skipped => "skipped",
            Self::Manual => "manual",
            Self::Scheduled => "scheduled",
            Self::WaitingForResource => "waiting_for_resource",
        }
    }

    /// Every status, for decoding.
    pub const ALL: [PipelineStatus; 11] = [
        Self::Created,
        Self::Pending,
        Self::Running,
        Self::Success,
        Self::Failed,
        Self::Canceling,
        Self::Canceled,
        Self::Skipped,
        Self::Manual,
        Self::Scheduled,
        Self::WaitingForResource,
    ];

    /// The inverse of [`PipelineStatus::as_str`].
    pub fn parse(text: &str) -> Option<PipelineStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for PipelineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The set of statuses seen, GitLab-style: an allowed failure counts as
/// "success with warnings", an optional manual job as "ignored".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Composite {
    set: u16,
}

#[derive(Clone, Copy)]
enum Key {
    Created,
    Pending,
    Running,
    Success,
    Failed,
    Canceling,
    Canceled,
    Skipped,
    Manual,
    Scheduled,
    SuccessWithWarnings,
    Ignored,
    WaitingForResource,
}

const fn bit(key: Key) -> u16 {
    1 << key as u16
}

impl Composite {
    /// Adds one job. `allow_failure` is the job's effective value: `PASSED_WITH_WARNINGS_STATUSES`
    /// (failed, canceled) then become success-with-warnings, `IGNORED_STATUSES` (manual) become
    /// ignored.
    pub(crate) fn add(&mut self, status: JobStatus, allow_failure: bool) {
        let key = match status {
            JobStatus::Failed | JobStatus::Canceled if allow_failure => Key::SuccessWithWarnings,
            JobStatus::Manual if allow_failure => Key::Ignored,
            JobStatus::Created => Key::Created,
            JobStatus::Pending => Key::Pending,
            JobStatus::Running => Key::Running,
            JobStatus::Success => Key::Success,
            JobStatus::Failed => Key::Failed,
            JobStatus::Canceling => Key::Canceling,
            JobStatus::Canceled => Key::Canceled,
            JobStatus::Skipped => Key::Skipped,
            JobStatus::Manual => Key::Manual,
            JobStatus::Scheduled => Key::Scheduled,
            JobStatus::WaitingForResource => Key::WaitingForResource,
        };
        self.set |= bit(key);
    }

    /// Whether an allowed failure was seen (GitLab's `warnings?`).
    pub(crate) fn warnings(&self) -> bool {
        self.any(&[Key::SuccessWithWarnings])
    }

    /// The composite status; `None` for an empty set. `dag`: the status of a job's `needs`,
    /// where a need that did not run (skipped, or an optional manual job) skips the job.
    /// The order of the checks is GitLab's and matters.
    pub(crate) fn status(&self, dag: bool) -> Option<PipelineStatus> {
        use Key::*;
        use PipelineStatus as S;
        if self.set == 0 {
            return None;
        }
        // GitLab checks "dag and a need did not run" first, then "only skipped or ignored".
        let status = if (dag && self.any(&[Skipped, Ignored])) || self.only(&[Skipped, Ignored]) {
            S::Skipped
        } else if self.only(&[Success, Skipped, SuccessWithWarnings, Ignored]) {
            S::Success
        } else if self.only(&[Created, SuccessWithWarnings, Ignored]) {
            S::Created
        } else if self.only(&[Canceled, Success, Skipped, SuccessWithWarnings, Ignored]) {
            S::Canceled
        } else if self.only(&[Pending, Created, Skipped, SuccessWithWarnings, Ignored]) {
            S::Pending
        } else if self.any(&[Running, Pending]) {
            S::Running
        } else if self.any(&[WaitingForResource]) {
            S::WaitingForResource
        } else if self.any(&[Manual]) {
            S::Manual
        } else if self.any(&[Scheduled]) {
            S::Scheduled
        } else if self.any(&[Created]) {
            S::Running
        } else if self.any(&[Canceling]) {
            S::Canceling
        } else {
            S::Failed
        };
        Some(status)
    }

    fn any(&self, keys: &[Key]) -> bool {
        keys.iter().any(|&key| self.set & bit(key) != 0)
    }

    /// Every status seen is one of `keys` (GitLab's `only_of?`; the set is non-empty).
    fn only(&self, keys: &[Key]) -> bool {
        let mask = keys.iter().fold(0, |mask, &key| mask | bit(key));
        self.set & !mask == 0
    }
}

#[cfg(test)]
mod tests {
    use super::JobStatus::*;
    use super::*;

    #[test]
    fn statuses_decode_what_they_encode_and_nothing_else() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in PipelineStatus::ALL {
            assert_eq!(PipelineStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(JobStatus::parse("Running"), None);
        assert_eq!(PipelineStatus::parse("error"), None);
    }

    fn composite(jobs: &[(JobStatus, bool)], dag: bool) -> Option<PipelineStatus> {
        let mut composite = Composite::default();
        for &(status, allow_failure) in jobs {
            composite.add(status, allow_failure);
        }
        composite.status(dag)
    }

    #[test]
    fn empty_set_has_no_status() {
        assert_eq!(composite(&[], false), None);
    }

    #[test]
    fn stage_statuses_follow_gitlab_order() {
        use PipelineStatus as P;
        let cases: &[(&[(JobStatus, bool)], PipelineStatus)] = &[
            (&[(Success, false), (Skipped, false)], P::Success),
            (&[(Skipped, false)], P::Skipped),
            (&[(Manual, true)], P::Skipped),
            (&[(Manual, true), (Success, false)], P::Success),
            (&[(Failed, true), (Success, false)], P::Success),
            (&[(Canceled, true), (Success, false)], P::Success),
            (&[(Failed, false), (Success, false)], P::Failed),
            (&[(Failed, false), (Running, false)], P::Running),
            (&[(Failed, false), (Created, false)], P::Running),
            (&[(Canceled, false), (Success, false)], P::Canceled),
            (&[(Canceled, false), (Failed, false)], P::Failed),
            (&[(Created, false)], P::Created),
            (&[(Pending, false), (Created, false)], P::Pending),
            (&[(Pending, false), (Success, false)], P::Running),
            (&[(Manual, false), (Success, false)], P::Manual),
            (&[(Manual, false), (Failed, false), (Created, false)], P::Manual),
            (&[(Manual, false), (Running, false)], P::Running),
            (&[(Scheduled, false), (Success, false)], P::Scheduled),
            (&[(Canceling, false), (Canceled, false)], P::Canceling),
            (&[(Canceling, false), (Running, false)], P::Running),
        ];
        for (jobs, expected) in cases {
            assert_eq!(composite(jobs, false), Some(*expected), "{jobs:?}");
        }
    }

    #[test]
    fn dag_status_is_skipped_when_a_need_did_not_run() {
        assert_eq!(composite(&[(Success, false), (Skipped, false)], true), Some(PipelineStatus::Skipped));
        assert_eq!(composite(&[(Manual, true)], true), Some(PipelineStatus::Skipped));
        assert_eq!(composite(&[(Manual, false)], true), Some(PipelineStatus::Manual));
        assert_eq!(composite(&[(Failed, true)], true), Some(PipelineStatus::Success));
        assert_eq!(composite(&[(Failed, false), (Success, false)], true), Some(PipelineStatus::Failed));
    }

    #[test]
    fn warnings_come_from_allowed_failures_only() {
        let mut with = Composite::default();
        with.add(Failed, true);
        assert!(with.warnings());
        let mut without = Composite::default();
        without.add(Failed, false);
        without.add(Manual, true);
        assert!(!without.warnings());
    }
}
