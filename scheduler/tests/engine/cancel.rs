//! Canceling the pipeline, one job, and auto-cancel of redundant pipelines (GitLab:
//! `Ci::CancelPipelineService`, `CANCELABLE_STATUSES`, `interruptible`).

use scheduler::JobStatus::*;
use scheduler::{AutoCancelMode, Command, EngineOptions, Event, EventError, Outcome, PipelineStatus};

use crate::check;
use crate::harness::{Run, spec};

#[test]
fn canceling_the_pipeline_stops_running_jobs_and_cancels_the_rest() {
    let mut run = Run::new(
        "build build
         slow build
         review build when=manual
         approve build when=manual allow=no
         test test
         cleanup report when=always",
    );
    run.start().begin("build");
    run.cancel();
    assert_eq!(run.last.iter().filter(|c| matches!(c, Command::CancelJob { .. })).count(), 2, "the running and the pending job");
    assert_eq!(
        run.statuses(&["build", "slow", "review", "approve", "test", "cleanup"]),
        [Canceling, Canceling, Manual, Canceled, Canceled, Canceled],
        "optional manual jobs stay playable; `always` jobs do not run after a cancel"
    );
    assert_eq!(run.pipeline(), PipelineStatus::Canceling);
    assert!(!run.engine.is_finished(), "waits for the executors to confirm");
    run.finish("build", Outcome::Canceled);
    run.finish("slow", Outcome::Canceled);
    assert_eq!(run.pipeline(), PipelineStatus::Canceled);
    assert!(!run.engine.has_warnings());
    assert_eq!(run.finished_count(), 1);
    check!(run);
}

#[test]
fn a_canceling_attempt_ends_canceled_whatever_it_reports() {
    let mut run = Run::new("build build");
    run.start().begin("build").cancel().succeed("build");
    assert_eq!(run.status("build"), Canceled);
    assert_eq!(run.pipeline(), PipelineStatus::Canceled);
}

#[test]
fn a_pending_attempt_may_still_start_while_canceling() {
    let mut run = Run::new("build build");
    run.start().cancel().begin("build");
    assert_eq!(run.status("build"), Canceling);
    run.finish("build", Outcome::Canceled);
    assert_eq!(run.pipeline(), PipelineStatus::Canceled);
}

#[test]
fn canceling_one_job_skips_what_depends_on_it() {
    // The previous status of `deploy` and `cleanup` is "canceled": neither on_success nor
    // always accepts it.
    let mut run = Run::new(
        "build build
         test test
         deploy deploy
         cleanup deploy when=always",
    );
    run.start().cancel_job("build");
    assert_eq!(run.last[1], Command::CancelJob { job: "build".into(), attempt: 1 });
    assert_eq!(run.status("test"), Created, "waits for the attempt to stop");
    run.finish("build", Outcome::Canceled);
    assert_eq!(run.statuses(&["test", "deploy", "cleanup"]), [Skipped, Skipped, Skipped]);
    assert_eq!(run.pipeline(), PipelineStatus::Canceled);
    check!(run);
}

#[test]
fn a_canceled_job_can_be_retried() {
    let mut run = Run::new(
        "build build
         test test",
    );
    run.start().cancel_job("build").finish("build", Outcome::Canceled);
    run.retry("build");
    assert_eq!(run.ran(), ["build#2"]);
    assert_eq!(run.status("test"), Created, "reset from skipped");
    run.succeed("build").succeed("test");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
}

#[test]
fn a_manual_job_canceled_with_its_pipeline_runs_when_retried() {
    let mut run = Run::new(
        "build build
         deploy deploy when=manual allow=no",
    );
    run.start().succeed("build").cancel();
    assert_eq!(run.status("deploy"), Canceled);
    assert_eq!(run.pipeline(), PipelineStatus::Canceled);
    run.retry("deploy");
    assert_eq!(run.ran(), ["deploy#2"]);
}

#[test]
fn canceling_a_job_that_is_not_cancelable_is_refused() {
    let mut run = Run::new(
        "build build
         review build when=manual",
    );
    run.start().succeed("build");
    let now = run.now() + 1;
    for job in ["build", "review"] {
        assert!(matches!(run.send(Event::CancelJob { job: job.into(), now }), Err(EventError::InvalidTransition { action: "cancel", .. })));
    }
}

#[test]
fn a_finished_pipeline_cannot_be_canceled() {
    let mut run = Run::new("build build");
    run.start().succeed("build");
    let now = run.now() + 1;
    assert_eq!(run.send(Event::Cancel { now }), Err(EventError::PipelineComplete { status: PipelineStatus::Success }));
}

#[test]
fn a_pipeline_canceled_before_it_starts_finishes_canceled() {
    let mut run = Run::new(
        "build build
         test test",
    );
    run.cancel();
    assert_eq!(run.statuses(&["build", "test"]), [Canceled, Canceled]);
    assert_eq!(run.pipeline(), PipelineStatus::Canceled);
    assert_eq!(run.finished_count(), 1);
    let now = run.now() + 1;
    assert_eq!(run.send(Event::Start { now }), Err(EventError::AlreadyStarted));
}

#[test]
fn conservative_auto_cancel_cancels_until_a_non_interruptible_job_started() {
    let spec = "build build interruptible
                deploy deploy";
    let mut early = Run::new(spec);
    early.start().auto_cancel(AutoCancelMode::Conservative);
    assert_eq!(early.status("build"), Canceling);

    let mut late = Run::new(spec);
    late.start().succeed("build").begin("deploy");
    late.auto_cancel(AutoCancelMode::Conservative);
    assert!(late.last.is_empty(), "`deploy` is not interruptible and has started");
    assert_eq!(late.status("deploy"), Running);
    check!(late);
}

#[test]
fn a_pending_non_interruptible_job_does_not_protect_the_pipeline() {
    let mut run = Run::new("deploy deploy");
    run.start().auto_cancel(AutoCancelMode::Conservative);
    assert_eq!(run.status("deploy"), Canceling);
}

#[test]
fn interruptible_auto_cancel_cancels_only_interruptible_jobs() {
    let mut run = Run::new(
        "unit test interruptible
         e2e test
         deploy deploy interruptible",
    );
    run.start().auto_cancel(AutoCancelMode::Interruptible);
    assert_eq!(run.statuses(&["unit", "e2e", "deploy"]), [Canceling, Pending, Canceled]);
    run.finish("unit", Outcome::Canceled).succeed("e2e");
    assert_eq!(run.pipeline(), PipelineStatus::Canceled);
    check!(run);
}

#[test]
fn a_lost_runner_while_canceling_ends_the_job_canceled() {
    let mut run = Run::new("build build retry=2");
    run.start().begin("build").cancel().lease_expired("build");
    assert_eq!(run.status("build"), Canceled);
    assert!(run.ran().is_empty(), "a canceled attempt is not retried");
    assert_eq!(run.pipeline(), PipelineStatus::Canceled);
}

/// GitLab's `workflow:auto_cancel:on_job_failure: all`: "cancel the pipeline as soon as one
/// job fails" — the running jobs are asked to stop, the ones not started are canceled.
#[test]
fn on_job_failure_all_cancels_the_pipeline_when_a_job_fails() {
    let mut spec = spec(
        "unit test
         lint test
         e2e test
         deploy deploy",
    );
    spec.cancel_on_job_failure = true;
    let mut run = Run::from_spec(spec, EngineOptions::default());
    run.start().begin("lint").fail("unit");
    assert_eq!(run.statuses(&["unit", "lint", "e2e", "deploy"]), [Failed, Canceling, Canceling, Canceled]);
    run.finish("lint", Outcome::Success).finish("e2e", Outcome::Canceled);
    assert_eq!(run.pipeline(), PipelineStatus::Failed);
    check!(run);
}

/// A failure that is allowed, or that is retried, cancels nothing (GitLab checks
/// `allow_failure?` and `auto_retry_expected?` before canceling).
#[test]
fn on_job_failure_all_ignores_allowed_and_retried_failures() {
    let mut spec = spec(
        "flaky test retry=1
         lint test allow=yes
         e2e test",
    );
    spec.cancel_on_job_failure = true;
    let mut run = Run::from_spec(spec, EngineOptions::default());
    run.start().fail("flaky").fail("lint");
    assert_eq!(run.statuses(&["flaky", "lint", "e2e"]), [Pending, Failed, Pending]);
    check!(run);
}

/// Without the setting (GitLab's default `none`), a failure cancels nothing.
#[test]
fn on_job_failure_none_lets_the_other_jobs_finish() {
    let mut run = Run::new(
        "unit test
         e2e test",
    );
    run.start().fail("unit");
    assert_eq!(run.statuses(&["unit", "e2e"]), [Failed, Pending]);
}
