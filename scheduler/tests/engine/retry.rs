//! Automatic retries (`retry`, GitLab's `AutoRetry`) and a person's `RetryJob`
//! (GitLab's `RetryJobService` + `ResetSkippedJobsService`).

use scheduler::JobStatus::*;
use scheduler::{Event, EventError, FailureReason, PipelineStatus};

use crate::check;
use crate::harness::Run;

#[test]
fn retry_max_reruns_a_failed_job_with_a_new_attempt() {
    let mut run = Run::new(
        "flaky test retry=2
         deploy deploy",
    );
    run.start().fail("flaky");
    assert_eq!(run.ran(), ["flaky#2"]);
    run.fail("flaky");
    assert_eq!(run.ran(), ["flaky#3"]);
    run.fail("flaky");
    assert!(run.ran().is_empty(), "2 retries used");
    assert_eq!(run.status("deploy"), Skipped);
    assert_eq!(run.pipeline(), PipelineStatus::Failed);
    check!(run);
}

#[test]
fn a_retried_attempt_that_succeeds_lets_the_pipeline_go_on() {
    let mut run = Run::new(
        "flaky test retry=1
         deploy deploy",
    );
    run.start().fail("flaky").succeed("flaky");
    assert_eq!(run.ran(), ["deploy#1"]);
    check!(run);
}

#[test]
fn retry_when_limits_the_failure_classes() {
    let mut run = Run::new(
        "infra test retry=2 retry_when=runner_system_failure
         script test retry=2 retry_when=runner_system_failure",
    );
    run.start().lease_expired("infra");
    assert_eq!(run.ran(), ["infra#2"], "a lost runner is a runner_system_failure");
    run.fail("script");
    assert!(run.ran().is_empty(), "a script failure is not retried");
    assert_eq!(run.status("script"), Failed);
    check!(run);
}

#[test]
fn retry_exit_codes_alone_retry_only_those_codes() {
    let mut run = Run::new(
        "oom test retry=2 retry_codes=137
         bug test retry=2 retry_codes=137",
    );
    run.start().fail_code("oom", 137);
    assert_eq!(run.ran(), ["oom#2"]);
    run.fail_code("bug", 1);
    assert!(run.ran().is_empty());
    run.fail_reason("oom", FailureReason::RunnerSystemFailure);
    assert!(run.ran().is_empty(), "`exit_codes` without `when` retries nothing else");
    check!(run);
}

#[test]
fn retry_when_or_exit_code_is_enough() {
    let mut run = Run::new("job test retry=2 retry_when=api_failure retry_codes=137");
    run.start().fail_reason("job", FailureReason::ApiFailure);
    assert_eq!(run.ran(), ["job#2"]);
    run.fail_code("job", 137);
    assert_eq!(run.ran(), ["job#3"]);
}

#[test]
fn canceled_attempts_are_not_retried() {
    let mut run = Run::new("job test retry=2");
    run.start().finish("job", scheduler::Outcome::Canceled);
    assert_eq!(run.status("job"), Canceled);
    assert_eq!(run.pipeline(), PipelineStatus::Canceled);
}

#[test]
fn an_allowed_failure_is_retried_first() {
    let mut run = Run::new("job test retry=1 allow=yes");
    run.start().fail("job");
    assert_eq!(run.ran(), ["job#2"]);
    run.fail("job");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    assert!(run.engine.has_warnings());
}

#[test]
fn a_person_retries_a_failed_job_and_skipped_jobs_are_processed_again() {
    let mut run = Run::new(
        "build build
         unit test needs=build
         lint test
         notify report when=on_failure
         deploy deploy",
    );
    run.start().fail("build");
    assert_eq!(run.pipeline(), PipelineStatus::Running);
    run.succeed("notify");
    assert_eq!(run.pipeline(), PipelineStatus::Failed);
    assert_eq!(run.statuses(&["unit", "lint", "deploy"]), [Skipped, Skipped, Skipped]);

    run.retry("build");
    assert_eq!(run.ran(), ["build#2"]);
    assert_eq!(run.pipeline(), PipelineStatus::Running, "the pipeline reopens");
    assert_eq!(run.statuses(&["unit", "lint", "deploy"]), [Created, Created, Created]);
    assert_eq!(run.status("notify"), Success, "jobs that ran are left alone");
    run.succeed("build").succeed("unit").succeed("lint").succeed("deploy");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    assert_eq!(run.finished_count(), 2);
    check!(run);
}

#[test]
fn a_person_retry_counts_against_the_automatic_retries() {
    let mut run = Run::new("job test retry=1");
    run.start().succeed("job").retry("job");
    assert_eq!(run.ran(), ["job#2"]);
    run.fail("job");
    assert!(run.ran().is_empty(), "attempt 2 already used the one retry");
}

#[test]
fn only_finished_jobs_can_be_retried() {
    let mut run = Run::new("job test");
    run.start();
    let now = run.now() + 1;
    assert_eq!(
        run.send(Event::RetryJob { job: "job".into(), now }),
        Err(EventError::InvalidTransition { job: "job".into(), status: Pending, action: "retry" })
    );
}

#[test]
fn reports_about_an_old_attempt_are_refused() {
    let mut run = Run::new("job test retry=1");
    run.start().fail("job");
    let now = run.now() + 1;
    assert_eq!(
        run.send(Event::JobFinished { job: "job".into(), attempt: 1, outcome: scheduler::Outcome::Success, now }),
        Err(EventError::StaleAttempt { job: "job".into(), attempt: 1, current: 2 })
    );
    assert_eq!(run.status("job"), Pending);
}

#[test]
fn a_reset_job_that_is_skipped_again_reports_nothing() {
    // Retrying `b` resets every skipped job of later stages; `c` only needs the failed `a`,
    // so it is skipped again at once and no status change is reported for it.
    let mut run = Run::new(
        "a build
         b build
         c test needs=a",
    );
    run.start().fail("a").succeed("b").retry("b");
    assert_eq!(run.status("c"), Skipped);
    assert!(!run.last.iter().any(|c| matches!(c, scheduler::Command::JobStatusChanged { job, .. } if job == "c")));
}
