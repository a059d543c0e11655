//! Pipeline processing: deciding what every `Created` job becomes.
//!
//! Source of truth: `Ci::PipelineProcessing::AtomicProcessingService` and its
//! `StatusCollection`, and `Ci::ProcessBuildService` (app/services/ci/ in GitLab's sources).
//!
//! * Jobs are visited in stage order, then `needs` order, and the statuses are updated as they
//!   go, so one pass settles a chain; passes repeat until nothing changes.
//! * A `Created` job's "previous status" is the composite status ([`crate::status`]) of every
//!   job of earlier stages (stage ordering), or of its needs with the DAG rule (a need that did
//!   not run — skipped, or an optional manual job not played — gives `skipped`). No predecessor
//!   at all gives `success`.
//! * The job is processed only once that status is complete (success, failed, canceled,
//!   skipped); otherwise it stays `Created`. That is how a blocking manual job (composite
//!   `manual`), a delayed job (`scheduled`) or a running job holds the jobs after it.
//! * Then, by `when` (`valid_statuses_for_build`):
//!   `on_success`, `manual`, `delayed`: `success`, or also `skipped` with stage ordering (a
//!   skipped job in an earlier stage does not stop later ones); `on_failure`: `failed`;
//!   `always`: `success`, `failed` or `skipped` (so not after a cancel). Otherwise: `Skipped`.
//! * A valid job becomes `Manual` (`when: manual`), `Scheduled` until previous-status time +
//!   `start_in` (`when: delayed`), or `Pending` with a `RunJob`. A retried attempt skips the
//!   manual/delayed gate, as GitLab enqueues retried action jobs immediately.

use crate::event::Command;
use crate::spec::{AllowFailure, When};
use crate::status::{Composite, JobStatus, PipelineStatus};

use super::Engine;

impl Engine {
    /// Processes until nothing changes, then reports every status change and the pipeline's.
    pub(super) fn process(&mut self, out: &mut Vec<Command>) {
        loop {
            let mut changed = false;
            for k in 0..self.graph.order.len() {
                let i = self.graph.order[k];
                if self.d.jobs[i].status != JobStatus::Created {
                    continue;
                }
                let previous = self.previous_status(i);
                if !previous.is_complete() {
                    continue;
                }
                changed = true;
                if self.runs_after(i, previous) {
                    self.admit(i, out);
                } else {
                    self.transition(i, JobStatus::Skipped, out);
                }
            }
            changed |= self.fire_due(out);
            if !changed {
                break;
            }
        }
        for i in 0..self.d.jobs.len() {
            self.report(i, out);
        }
        self.update_pipeline_status(out);
    }

    /// Composite status of the jobs `i` waits for.
    ///
    /// One deviation from GitLab: a job with `needs` waits while any of its needs is still
    /// created, pending, running, canceling, scheduled, or a blocking manual job. GitLab's
    /// composite checks "a need was skipped" before anything else, so a `when: always` job
    /// starts as soon as one need is skipped, while its other needs still run or wait to be
    /// played; piste never starts a job before the jobs it needs have stopped. The decision
    /// is GitLab's; it is only taken later.
    fn previous_status(&self, i: usize) -> PipelineStatus {
        let dag = self.graph.dag[i];
        let mut composite = Composite::default();
        for &p in &self.graph.preds[i] {
            let status = self.d.jobs[p].status;
            let blocking_manual = status == JobStatus::Manual && !self.allows_failure(p);
            if dag && (is_alive(status) || blocking_manual) {
                return PipelineStatus::Running;
            }
            composite.add(status, self.allows_failure(p));
        }
        composite.status(dag).unwrap_or(PipelineStatus::Success)
    }

    fn runs_after(&self, i: usize, previous: PipelineStatus) -> bool {
        use PipelineStatus::{Failed, Skipped, Success};
        match self.d.spec.jobs[i].when {
            When::OnSuccess | When::Manual | When::Delayed { .. } if self.graph.dag[i] => previous == Success,
            When::OnSuccess | When::Manual | When::Delayed { .. } => matches!(previous, Success | Skipped),
            When::OnFailure => previous == Failed,
            When::Always => matches!(previous, Success | Failed | Skipped),
        }
    }

    /// A job whose predecessors allow it to run: gate it or enqueue it.
    fn admit(&mut self, i: usize, out: &mut Vec<Command>) {
        let node = &self.d.spec.jobs[i];
        if self.d.jobs[i].enqueue_immediately {
            return self.enqueue(i, out);
        }
        match node.when {
            When::Manual if self.d.options.play_manual.plays(&node.name) => self.enqueue(i, out),
            When::Manual => self.transition(i, JobStatus::Manual, out),
            When::Delayed { start_in_ms } => {
                self.d.jobs[i].scheduled_at = Some(self.d.now.saturating_add(start_in_ms));
                self.transition(i, JobStatus::Scheduled, out);
            }
            _ => self.enqueue(i, out),
        }
    }

    /// Enqueues delayed jobs whose time has come.
    fn fire_due(&mut self, out: &mut Vec<Command>) -> bool {
        let mut fired = false;
        for k in 0..self.graph.order.len() {
            let i = self.graph.order[k];
            let job = &self.d.jobs[i];
            if job.status == JobStatus::Scheduled && job.scheduled_at.is_some_and(|at| at <= self.d.now) {
                self.enqueue(i, out);
                fired = true;
            }
        }
        fired
    }

    /// Hands the current attempt to the executors.
    /// A job with a `resource_group` first waits for it (GitLab's `waiting_for_resource`).
    pub(super) fn enqueue(&mut self, i: usize, out: &mut Vec<Command>) {
        let job = &mut self.d.jobs[i];
        job.scheduled_at = None;
        job.queued_at = Some(self.d.now);
        let attempt = job.attempt;
        match self.d.spec.jobs[i].resource_group.clone() {
            Some(group) => {
                self.transition(i, JobStatus::WaitingForResource, out);
                out.push(Command::WaitForResource { job: self.d.spec.jobs[i].name.clone(), attempt, group });
            }
            None => self.run(i, out),
        }
    }

    /// Hands the current attempt to the executors.
    pub(super) fn run(&mut self, i: usize, out: &mut Vec<Command>) {
        let attempt = self.d.jobs[i].attempt;
        self.transition(i, JobStatus::Pending, out);
        out.push(Command::RunJob { job: self.d.spec.jobs[i].name.clone(), attempt });
    }

    /// Changes a job's status; a job that leaves the executors' hands (or stops waiting for
    /// its resource) frees its resource group.
    pub(super) fn transition(&mut self, i: usize, status: JobStatus, out: &mut Vec<Command>) {
        let before = self.d.jobs[i].status;
        self.d.jobs[i].status = status;
        self.report(i, out);
        let held = before.is_active() || before == JobStatus::WaitingForResource;
        if held && !status.is_active() && status != JobStatus::WaitingForResource {
            if let Some(group) = self.d.spec.jobs[i].resource_group.clone() {
                out.push(Command::ReleaseResource { job: self.d.spec.jobs[i].name.clone(), attempt: self.d.jobs[i].attempt, group });
            }
        }
    }

    /// Sends `JobStatusChanged` if the job's status or attempt changed since the last report.
    /// Changes made without a report (a reset to `Created` that ends `Skipped` again) vanish.
    fn report(&mut self, i: usize, out: &mut Vec<Command>) {
        let job = &mut self.d.jobs[i];
        let current = (job.status, job.attempt);
        if job.reported != current {
            job.reported = current;
            out.push(Command::JobStatusChanged { job: self.d.spec.jobs[i].name.clone(), attempt: current.1, status: current.0 });
        }
    }

    /// The job's effective `allow_failure` (GitLab's column, which `exit_codes` set to true
    /// when the attempt failed with a listed code). For a manual job it means "optional".
    pub(super) fn allows_failure(&self, i: usize) -> bool {
        match &self.d.spec.jobs[i].allow_failure {
            AllowFailure::No => false,
            AllowFailure::Yes => true,
            AllowFailure::ExitCodes(codes) => {
                let job = &self.d.jobs[i];
                job.status == JobStatus::Failed && job.failure.and_then(|f| f.exit_code).is_some_and(|code| codes.contains(&code))
            }
        }
    }

    fn update_pipeline_status(&mut self, out: &mut Vec<Command>) {
        let mut composite = Composite::default();
        for i in 0..self.d.jobs.len() {
            composite.add(self.d.jobs[i].status, self.allows_failure(i));
        }
        let status = composite.status(false).unwrap_or(PipelineStatus::Success);
        self.d.has_warnings = composite.warnings();
        if status != self.d.status {
            self.d.status = status;
            out.push(Command::PipelineStatusChanged { status });
        }
        if !status.is_complete() {
            self.d.finished = false;
        } else if !self.d.finished {
            self.d.finished = true;
            out.push(Command::PipelineFinished { status, has_warnings: self.d.has_warnings });
        }
    }
}

/// Will change by itself: GitLab's `ALIVE_STATUSES` plus `scheduled`.
fn is_alive(status: JobStatus) -> bool {
    use JobStatus::*;
    matches!(status, Created | Pending | Running | Canceling | Scheduled | WaitingForResource)
}
