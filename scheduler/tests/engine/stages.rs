//! Stage ordering, `when`, and `allow_failure` (GitLab: `Ci::ProcessBuildService`, the `when`
//! and `allow_failure` keywords).

use scheduler::JobStatus::*;
use scheduler::PipelineStatus;

use crate::check;
use crate::harness::Run;

#[test]
fn stages_run_in_order_and_the_pipeline_succeeds() {
    let mut run = Run::new(
        "build build
         lint build
         test test
         deploy deploy",
    );
    run.start();
    assert_eq!(run.ran(), ["build#1", "lint#1"]);
    run.succeed("build");
    assert_eq!(run.status("test"), Created, "waits for the whole build stage");
    run.succeed("lint");
    assert_eq!(run.ran(), ["test#1"]);
    run.succeed("test").succeed("deploy");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    assert_eq!(run.finished_count(), 1);
    check!(run);
}

#[test]
fn a_failure_skips_later_on_success_jobs_and_runs_on_failure_and_always() {
    let mut run = Run::new(
        "build build
         test test
         notify report when=on_failure
         cleanup report when=always
         deploy deploy",
    );
    run.start().fail("build");
    assert_eq!(run.statuses(&["test", "notify", "cleanup"]), [Skipped, Pending, Pending]);
    run.succeed("notify").succeed("cleanup");
    assert_eq!(run.status("deploy"), Skipped, "on_success after a failure is skipped, not canceled");
    assert_eq!(run.pipeline(), PipelineStatus::Failed);
    check!(run);
}

#[test]
fn on_failure_jobs_are_skipped_when_nothing_failed() {
    let mut run = Run::new(
        "build build
         notify report when=on_failure
         cleanup report when=always",
    );
    run.start().succeed("build");
    assert_eq!(run.statuses(&["notify", "cleanup"]), [Skipped, Pending]);
    run.succeed("cleanup");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    check!(run);
}

#[test]
fn a_skipped_job_does_not_block_later_stages() {
    // The stage before `deploy` holds only a skipped job: its previous status is "skipped",
    // which on_success accepts with stage ordering.
    let mut run = Run::new(
        "build build
         rollback recover when=on_failure
         deploy deploy",
    );
    run.start().succeed("build");
    assert_eq!(run.status("rollback"), Skipped);
    assert_eq!(run.ran(), ["deploy#1"]);
    run.succeed("deploy");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    check!(run);
}

#[test]
fn allowed_failures_count_as_success_with_warnings() {
    let mut run = Run::new(
        "build build
         flaky test allow=yes
         notify report when=on_failure
         deploy deploy",
    );
    run.start().succeed("build").fail("flaky");
    assert_eq!(run.status("notify"), Skipped, "an allowed failure is not a failure for on_failure");
    assert_eq!(run.status("deploy"), Pending);
    run.succeed("deploy");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    assert!(run.engine.has_warnings());
    check!(run);
}

#[test]
fn exit_codes_allow_only_the_listed_codes() {
    let mut run = Run::new(
        "a test allow=3,4
         b test allow=3,4
         deploy deploy",
    );
    run.start().fail_code("a", 3);
    assert!(run.engine.snapshot().jobs[0].allow_failure);
    run.fail_code("b", 1);
    assert!(!run.engine.snapshot().jobs[1].allow_failure);
    assert_eq!(run.status("deploy"), Skipped);
    assert_eq!(run.pipeline(), PipelineStatus::Failed);
    check!(run);
}

#[test]
fn allowed_exit_code_lets_the_pipeline_pass_with_warnings() {
    let mut run = Run::new(
        "audit test allow=42
         deploy deploy",
    );
    run.start().fail_code("audit", 42).succeed("deploy");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    assert!(run.engine.has_warnings());
    check!(run);
}

#[test]
fn always_jobs_run_after_a_failure_and_later_stages_see_the_failure() {
    // `always` runs whatever happened; the failure still skips the on_success job after it.
    let mut run = Run::new(
        "build build
         collect report when=always
         publish publish",
    );
    run.start().fail("build");
    assert_eq!(run.status("collect"), Pending);
    run.succeed("collect");
    assert_eq!(run.status("publish"), Skipped);
    assert_eq!(run.pipeline(), PipelineStatus::Failed);
    check!(run);
}

#[test]
fn a_stage_waits_for_running_jobs_even_after_a_failure() {
    let mut run = Run::new(
        "slow test
         broken test
         notify report when=on_failure",
    );
    run.start().fail("broken");
    assert_eq!(run.status("notify"), Created, "the stage still runs `slow`");
    assert_eq!(run.pipeline(), PipelineStatus::Running);
    run.succeed("slow");
    assert_eq!(run.status("notify"), Pending);
    run.succeed("notify");
    assert_eq!(run.pipeline(), PipelineStatus::Failed);
    check!(run);
}
