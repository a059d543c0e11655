//! What each event does before processing. Every handler checks first and changes state only
//! once the event is accepted, so an `Err` leaves the engine untouched.

use crate::error::EventError;
use crate::event::{AutoCancelMode, Command, Event, Outcome};
use crate::retry::should_retry;
use crate::spec::FailureReason;
use crate::status::JobStatus;

use super::{Engine, Failure};

impl Engine {
    pub(super) fn apply(&mut self, event: Event, out: &mut Vec<Command>) -> Result<(), EventError> {
        if !self.d.started && !matches!(event, Event::Start { .. } | Event::Cancel { .. }) {
            return Err(EventError::NotStarted);
        }
        match event {
            Event::Start { now } => {
                if self.d.started {
                    return Err(EventError::AlreadyStarted);
                }
                self.advance(now);
                self.d.started = true;
            }
            Event::JobStarted { job, attempt, now } => {
                let i = self.current_attempt(&job, attempt)?;
                match self.d.jobs[i].status {
                    JobStatus::Pending => {
                        self.advance(now);
                        self.mark_started(i);
                        self.transition(i, JobStatus::Running, out);
                    }
                    // Started before it got our CancelJob: it still owes a JobFinished.
                    JobStatus::Canceling => {
                        self.advance(now);
                        self.mark_started(i);
                    }
                    status => return Err(self.invalid(i, status, "start")),
                }
            }
            Event::JobFinished { job, attempt, outcome, now } => {
                let i = self.active_attempt(&job, attempt, "finish")?;
                self.advance(now);
                self.finish(i, outcome, out);
            }
            Event::LeaseExpired { job, attempt, now } => {
                let i = self.active_attempt(&job, attempt, "expire the lease of")?;
                self.advance(now);
                let outcome = Outcome::Failed { reason: FailureReason::RunnerSystemFailure, exit_code: None };
                self.finish(i, outcome, out);
            }
            Event::Tick { now } => self.advance(now),
            Event::PlayManual { job, now } => {
                let i = self.index(&job)?;
                match self.d.jobs[i].status {
                    // GitLab's `ResetSkippedJobsService` runs for a job going from a stopped
                    // status to an alive one: jobs skipped because of it are processed again.
                    JobStatus::Manual => {
                        self.advance(now);
                        self.enqueue(i, out);
                        self.reset_skipped_after(i);
                    }
                    // "Start now" on a delayed job.
                    JobStatus::Scheduled => {
                        self.advance(now);
                        self.enqueue(i, out);
                    }
                    status => return Err(self.invalid(i, status, "play")),
                }
            }
            Event::CancelJob { job, now } => {
                let i = self.index(&job)?;
                match self.d.jobs[i].status {
                    // GitLab's `CANCELABLE_STATUSES`: alive or scheduled; not manual.
                    JobStatus::Created | JobStatus::Scheduled | JobStatus::WaitingForResource | JobStatus::Pending | JobStatus::Running => {
                        self.advance(now);
                        self.cancel(i, out);
                    }
                    status => return Err(self.invalid(i, status, "cancel")),
                }
            }
            Event::RetryJob { job, now } => {
                let i = self.index(&job)?;
                match self.d.jobs[i].status {
                    // GitLab's `retryable?`: success, failed or canceled.
                    JobStatus::Success | JobStatus::Failed | JobStatus::Canceled => {
                        self.advance(now);
                        self.new_attempt(i);
                        self.reset_skipped_after(i);
                    }
                    status => return Err(self.invalid(i, status, "retry")),
                }
            }
            Event::Cancel { now } => {
                self.ensure_not_finished()?;
                self.advance(now);
                self.d.started = true;
                for i in 0..self.d.jobs.len() {
                    self.cancel(i, out);
                }
            }
            Event::AutoCancel { mode, now } => {
                self.ensure_not_finished()?;
                self.advance(now);
                self.auto_cancel(mode, out);
            }
            Event::ResourceGranted { job, attempt, now } => {
                let i = self.current_attempt(&job, attempt)?;
                match self.d.jobs[i].status {
                    JobStatus::WaitingForResource => {
                        self.advance(now);
                        self.run(i, out);
                    }
                    status => return Err(self.invalid(i, status, "grant the resource to")),
                }
            }
        }
        Ok(())
    }

    fn advance(&mut self, now: u64) {
        self.d.now = self.d.now.max(now);
    }

    fn mark_started(&mut self, i: usize) {
        let now = self.d.now;
        let job = &mut self.d.jobs[i];
        job.started_at = Some(now);
        job.first_started_at.get_or_insert(now);
    }

    fn invalid(&self, i: usize, status: JobStatus, action: &'static str) -> EventError {
        EventError::InvalidTransition { job: self.d.spec.jobs[i].name.clone(), status, action }
    }

    fn current_attempt(&self, job: &str, attempt: u32) -> Result<usize, EventError> {
        let i = self.index(job)?;
        let current = self.d.jobs[i].attempt;
        if attempt != current {
            return Err(EventError::StaleAttempt { job: job.to_owned(), attempt, current });
        }
        Ok(i)
    }

    fn active_attempt(&self, job: &str, attempt: u32, action: &'static str) -> Result<usize, EventError> {
        let i = self.current_attempt(job, attempt)?;
        match self.d.jobs[i].status {
            status if status.is_active() => Ok(i),
            status => Err(self.invalid(i, status, action)),
        }
    }

    fn ensure_not_finished(&self) -> Result<(), EventError> {
        if self.d.status.is_complete() {
            return Err(EventError::PipelineComplete { status: self.d.status });
        }
        Ok(())
    }

    /// Ends the current attempt. A canceling attempt ends canceled whatever it reports.
    fn finish(&mut self, i: usize, outcome: Outcome, out: &mut Vec<Command>) {
        self.d.jobs[i].finished_at = Some(self.d.now);
        if self.d.jobs[i].status == JobStatus::Canceling {
            return self.transition(i, JobStatus::Canceled, out);
        }
        match outcome {
            Outcome::Success => self.transition(i, JobStatus::Success, out),
            Outcome::Canceled => self.transition(i, JobStatus::Canceled, out),
            Outcome::Failed { reason, exit_code } => {
                self.d.jobs[i].failure = Some(Failure { reason, exit_code });
                self.transition(i, JobStatus::Failed, out);
                let attempt = self.d.jobs[i].attempt;
                if should_retry(&self.d.spec.jobs[i].retry, attempt, reason, exit_code) {
                    self.new_attempt(i);
                } else if self.d.spec.cancel_on_job_failure && !self.allows_failure(i) {
                    // `workflow:auto_cancel:on_job_failure: all` (GitLab: a job that fails,
                    // not allowed to and not retried, cancels the pipeline's other jobs).
                    for k in 0..self.d.jobs.len() {
                        self.cancel(k, out);
                    }
                }
            }
        }
    }

    /// A new attempt of a finished job, processed like a new job (GitLab clones the job as
    /// `created`); the manual/delayed gate does not apply again.
    fn new_attempt(&mut self, i: usize) {
        let job = &mut self.d.jobs[i];
        job.attempt += 1;
        job.status = JobStatus::Created;
        job.failure = None;
        job.scheduled_at = None;
        job.queued_at = None;
        job.started_at = None;
        job.finished_at = None;
        job.enqueue_immediately = true;
    }

    /// GitLab's `ResetSkippedJobsService`: skipped jobs of later stages and skipped jobs that
    /// transitively need `i` go back to `Created`, to be processed again.
    fn reset_skipped_after(&mut self, i: usize) {
        let stage = self.d.spec.jobs[i].stage_index;
        let descendants = self.graph.need_descendants(i);
        for k in 0..self.d.jobs.len() {
            let later = self.d.spec.jobs[k].stage_index > stage || descendants.contains(&k);
            if later && self.d.jobs[k].status == JobStatus::Skipped {
                self.d.jobs[k].status = JobStatus::Created;
            }
        }
    }

    /// Cancels one job if it can be: an attempt in an executor's hands is asked to stop, a job
    /// that has not started is canceled at once, a finished one is left alone. An optional
    /// manual job stays playable, as in GitLab (manual is not a cancelable status there); a
    /// blocking one is canceled, or a canceled pipeline would stay blocked on it forever.
    fn cancel(&mut self, i: usize, out: &mut Vec<Command>) {
        match self.d.jobs[i].status {
            JobStatus::Pending | JobStatus::Running => {
                self.transition(i, JobStatus::Canceling, out);
                out.push(Command::CancelJob { job: self.d.spec.jobs[i].name.clone(), attempt: self.d.jobs[i].attempt });
            }
            JobStatus::Manual if self.allows_failure(i) => {}
            JobStatus::Created | JobStatus::Scheduled | JobStatus::WaitingForResource | JobStatus::Manual => {
                self.d.jobs[i].scheduled_at = None;
                self.d.jobs[i].finished_at = Some(self.d.now);
                self.transition(i, JobStatus::Canceled, out);
            }
            _ => {}
        }
    }

    /// `conservative`: cancel everything unless an `interruptible: false` job has started.
    /// `interruptible`: cancel only interruptible jobs that are alive or scheduled.
    fn auto_cancel(&mut self, mode: AutoCancelMode, out: &mut Vec<Command>) {
        match mode {
            AutoCancelMode::Conservative => {
                let protected =
                    (0..self.d.jobs.len()).any(|i| !self.d.spec.jobs[i].interruptible && self.d.jobs[i].first_started_at.is_some());
                if !protected {
                    for i in 0..self.d.jobs.len() {
                        self.cancel(i, out);
                    }
                }
            }
            AutoCancelMode::Interruptible => {
                for i in 0..self.d.jobs.len() {
                    if self.d.spec.jobs[i].interruptible && self.d.jobs[i].status != JobStatus::Manual {
                        self.cancel(i, out);
                    }
                }
            }
        }
    }
}
