//! `needs` (GitLab: jobs with `scheduling_type: dag`, previous status from their needs only,
//! and the composite DAG rule "a need that did not run skips the job").

use scheduler::JobStatus::*;
use scheduler::{Engine, EngineOptions, PipelineStatus, SpecError};

use crate::check;
use crate::harness::{Run, spec};

#[test]
fn needs_start_a_job_before_its_stage() {
    let mut run = Run::new(
        "build build
         slow build
         unit test needs=build
         package deploy needs=unit",
    );
    run.start().succeed("build");
    assert_eq!(run.ran(), ["unit#1"], "does not wait for `slow`");
    run.succeed("unit");
    assert_eq!(run.ran(), ["package#1"]);
    run.succeed("package").succeed("slow");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    check!(run);
}

#[test]
fn empty_needs_start_immediately() {
    let mut run = Run::new(
        "build build
         docs deploy needs=",
    );
    run.start();
    assert_eq!(run.ran(), ["build#1", "docs#1"]);
    check!(run);
}

#[test]
fn same_stage_needs_are_honoured() {
    let mut run = Run::new(
        "compile build
         link build needs=compile",
    );
    run.start();
    assert_eq!(run.ran(), ["compile#1"]);
    run.succeed("compile");
    assert_eq!(run.ran(), ["link#1"]);
    check!(run);
}

#[test]
fn a_failed_need_skips_on_success_dependents_transitively() {
    let mut run = Run::new(
        "build build
         other build
         unit test needs=build
         package deploy needs=unit
         report deploy needs=build when=on_failure
         cleanup deploy needs=build when=always",
    );
    run.start().fail("build");
    assert_eq!(run.statuses(&["unit", "package", "report", "cleanup"]), [Skipped, Skipped, Pending, Pending]);
    run.succeed("report").succeed("cleanup").succeed("other");
    assert_eq!(run.pipeline(), PipelineStatus::Failed);
    check!(run);
}

#[test]
fn a_skipped_need_skips_the_dependent_unlike_stage_ordering() {
    // `rollback` is skipped. Its stage-ordered successor runs; its DAG dependent is skipped
    // ("the DAG job is skipped if one of the needs does not run at all").
    let mut run = Run::new(
        "build build
         rollback recover when=on_failure
         verify check needs=rollback
         smoke check",
    );
    run.start().succeed("build");
    assert_eq!(run.statuses(&["rollback", "verify", "smoke"]), [Skipped, Skipped, Pending]);
    run.succeed("smoke");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    check!(run);
}

#[test]
fn an_allowed_failure_need_lets_the_dependent_run() {
    let mut run = Run::new(
        "scan test allow=yes
         publish deploy needs=scan",
    );
    run.start().fail("scan");
    assert_eq!(run.status("publish"), Pending);
    run.succeed("publish");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    assert!(run.engine.has_warnings());
    check!(run);
}

#[test]
fn on_failure_with_needs_looks_only_at_the_needs() {
    let mut run = Run::new(
        "a build
         b build
         on_a report needs=a when=on_failure
         on_b report needs=b when=on_failure",
    );
    run.start().fail("a").succeed("b");
    assert_eq!(run.statuses(&["on_a", "on_b"]), [Pending, Skipped]);
    check!(run);
}

#[test]
fn optional_needs_on_absent_jobs_are_ignored() {
    let mut run = Run::new(
        "build build
         test test needs=build,gone?",
    );
    run.start().succeed("build");
    assert_eq!(run.ran(), ["test#1"]);
}

#[test]
fn an_optional_need_that_exists_is_waited_for() {
    let mut run = Run::new(
        "build build
         test test needs=build?",
    );
    run.start();
    assert_eq!(run.status("test"), Created);
    run.succeed("build");
    assert_eq!(run.ran(), ["test#1"]);
}

#[test]
fn invalid_needs_are_refused_at_construction() {
    let unknown = spec(
        "build build
         test test needs=biuld",
    );
    assert_eq!(
        Engine::new(unknown, EngineOptions::default()).unwrap_err(),
        SpecError::UnknownNeed { job: "test".into(), need: "biuld".into(), suggestion: Some("build".into()) }
    );
    let cycle = spec(
        "a build needs=b
         b build needs=a",
    );
    assert!(matches!(Engine::new(cycle, EngineOptions::default()), Err(SpecError::NeedsCycle { .. })));
    let later = spec(
        "a build needs=b
         b test",
    );
    let err = Engine::new(later, EngineOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "job `a` (stage `build`) needs `b`, which is in a later stage `test`");
}

#[test]
fn an_always_job_waits_for_every_need_even_when_one_was_skipped() {
    // piste's one deviation: GitLab would start `report` as soon as `rollback` is skipped,
    // while `e2e` still runs.
    let mut run = Run::new(
        "rollback build when=on_failure
         e2e build
         gate build when=manual allow=no
         report test needs=rollback,e2e when=always
         audit test needs=rollback,gate when=always",
    );
    run.start();
    assert_eq!(run.status("rollback"), Skipped);
    assert_eq!(run.statuses(&["report", "audit"]), [Created, Created]);
    run.succeed("e2e");
    assert_eq!(run.ran(), ["report#1"]);
    assert_eq!(run.status("audit"), Created, "waits for the blocking manual `gate`");
    run.play("gate").succeed("gate");
    assert_eq!(run.ran(), ["audit#1"]);
    check!(run);
}

#[test]
fn an_always_job_runs_when_its_optional_manual_need_is_not_played() {
    // The need "did not run": GitLab's DAG status is skipped, which `always` accepts.
    let mut run = Run::new(
        "review build when=manual
         report test needs=review when=always",
    );
    run.start();
    assert_eq!(run.ran(), ["report#1"]);
}
