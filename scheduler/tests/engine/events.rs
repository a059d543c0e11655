//! The event protocol: what is refused, and that a refusal changes nothing.

use scheduler::JobStatus::*;
use scheduler::{Event, EventError, FailureReason, Outcome, PipelineStatus};

use crate::harness::Run;

#[test]
fn events_before_start_are_refused() {
    let mut run = Run::new("build build");
    let refused = run.send(Event::Tick { now: 5 });
    assert_eq!(refused, Err(EventError::NotStarted));
    assert_eq!(run.engine.snapshot().now, 0, "not even the clock moved");
    assert_eq!(run.pipeline(), PipelineStatus::Created);
}

#[test]
fn starting_twice_is_refused() {
    let mut run = Run::new("build build");
    run.start();
    assert_eq!(run.send(Event::Start { now: 9_000 }), Err(EventError::AlreadyStarted));
}

#[test]
fn unknown_jobs_are_refused() {
    let mut run = Run::new("build build");
    run.start();
    assert_eq!(run.send(Event::RetryJob { job: "nope".into(), now: 9_000 }), Err(EventError::UnknownJob { job: "nope".into() }));
}

#[test]
fn a_job_that_was_not_handed_out_cannot_start_or_finish() {
    let mut run = Run::new(
        "build build
         test test",
    );
    run.start();
    let before = run.engine.snapshot();
    assert_eq!(
        run.send(Event::JobStarted { job: "test".into(), attempt: 1, now: 9_000 }),
        Err(EventError::InvalidTransition { job: "test".into(), status: Created, action: "start" })
    );
    assert_eq!(
        run.send(Event::JobFinished { job: "test".into(), attempt: 1, outcome: Outcome::Success, now: 9_000 }),
        Err(EventError::InvalidTransition { job: "test".into(), status: Created, action: "finish" })
    );
    assert_eq!(run.engine.snapshot(), before);
}

#[test]
fn duplicated_reports_are_refused_without_effect() {
    let mut run = Run::new("build build");
    run.start().begin("build");
    assert!(matches!(
        run.send(Event::JobStarted { job: "build".into(), attempt: 1, now: 9_000 }),
        Err(EventError::InvalidTransition { action: "start", .. })
    ));
    run.succeed("build");
    let before = run.engine.snapshot();
    assert!(matches!(
        run.send(Event::JobFinished { job: "build".into(), attempt: 1, outcome: Outcome::Success, now: 99_000 }),
        Err(EventError::InvalidTransition { action: "finish", .. })
    ));
    assert!(matches!(
        run.send(Event::LeaseExpired { job: "build".into(), attempt: 1, now: 99_000 }),
        Err(EventError::InvalidTransition { .. })
    ));
    assert_eq!(run.engine.snapshot(), before);
}

#[test]
fn an_attempt_may_fail_before_it_starts() {
    let mut run = Run::new("build build");
    run.start();
    run.send(Event::JobFinished {
        job: "build".into(),
        attempt: 1,
        outcome: Outcome::Failed { reason: FailureReason::RunnerSystemFailure, exit_code: None },
        now: 2_000,
    })
    .unwrap();
    assert_eq!(run.status("build"), Failed);
    assert_eq!(run.pipeline(), PipelineStatus::Failed);
}

#[test]
fn a_lease_expiry_is_a_runner_system_failure() {
    let mut run = Run::new("build build");
    run.start().begin("build").lease_expired("build");
    let failure = run.engine.snapshot().jobs[0].failure.unwrap();
    assert_eq!(failure.reason, FailureReason::RunnerSystemFailure);
    assert_eq!(failure.exit_code, None);
    assert_eq!(run.pipeline(), PipelineStatus::Failed);
}
