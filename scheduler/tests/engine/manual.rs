//! Manual jobs: optional (`allow_failure: true`) and blocking (`false`), playing them, and
//! `piste run`'s play-on-start option.

use scheduler::JobStatus::*;
use scheduler::{EngineOptions, Event, EventError, PipelineStatus, PlayManual};

use crate::check;
use crate::harness::Run;

#[test]
fn an_optional_manual_job_does_not_hold_the_pipeline() {
    let mut run = Run::new(
        "build build
         review review when=manual
         deploy deploy",
    );
    run.start().succeed("build");
    assert_eq!(run.status("review"), Manual);
    assert_eq!(run.ran(), ["deploy#1"]);
    run.succeed("deploy");
    assert_eq!(run.pipeline(), PipelineStatus::Success, "finishes with the manual job left");
    assert_eq!(run.status("review"), Manual);
    check!(run);
}

#[test]
fn a_blocking_manual_job_holds_later_stages_until_played() {
    let mut run = Run::new(
        "build build
         approve approve when=manual allow=no
         deploy deploy",
    );
    run.start().succeed("build");
    assert_eq!(run.status("deploy"), Created);
    assert_eq!(run.pipeline(), PipelineStatus::Manual, "GitLab shows it as blocked");
    assert_eq!(run.engine.blocking_manual_jobs(), ["approve"]);
    assert!(!run.engine.is_finished());

    run.play("approve");
    assert_eq!(run.ran(), ["approve#1"]);
    run.succeed("approve");
    assert_eq!(run.ran(), ["deploy#1"]);
    run.succeed("deploy");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    check!(run);
}

#[test]
fn a_dependent_of_an_unplayed_optional_manual_job_is_skipped_until_it_is_played() {
    // GitLab (issue 31264): the DAG job is skipped; playing the manual job resets it.
    let mut run = Run::new(
        "build build
         stage_env deploy needs=build when=manual
         smoke verify needs=stage_env",
    );
    run.start().succeed("build");
    assert_eq!(run.statuses(&["stage_env", "smoke"]), [Manual, Skipped]);
    assert_eq!(run.pipeline(), PipelineStatus::Success);

    run.play("stage_env");
    assert_eq!(run.pipeline(), PipelineStatus::Running);
    assert_eq!(run.status("smoke"), Created);
    run.succeed("stage_env");
    assert_eq!(run.ran(), ["smoke#1"]);
    run.succeed("smoke");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    assert_eq!(run.finished_count(), 2);
    check!(run);
}

#[test]
fn a_dependent_of_a_blocking_manual_job_waits() {
    let mut run = Run::new(
        "build build
         gate deploy needs=build when=manual allow=no
         release deploy needs=gate",
    );
    run.start().succeed("build");
    assert_eq!(run.statuses(&["gate", "release"]), [Manual, Created]);
    assert_eq!(run.pipeline(), PipelineStatus::Manual);
    run.play("gate").succeed("gate");
    assert_eq!(run.ran(), ["release#1"]);
    check!(run);
}

#[test]
fn a_manual_job_after_a_failure_is_skipped_and_cannot_be_played() {
    let mut run = Run::new(
        "build build
         deploy deploy when=manual",
    );
    run.start().fail("build");
    assert_eq!(run.status("deploy"), Skipped);
    let now = run.now() + 1;
    assert_eq!(
        run.send(Event::PlayManual { job: "deploy".into(), now }),
        Err(EventError::InvalidTransition { job: "deploy".into(), status: Skipped, action: "play" })
    );
}

#[test]
fn only_manual_or_scheduled_jobs_can_be_played() {
    let mut run = Run::new("build build");
    run.start();
    let now = run.now() + 1;
    assert!(matches!(run.send(Event::PlayManual { job: "build".into(), now }), Err(EventError::InvalidTransition { action: "play", .. })));
}

#[test]
fn retrying_a_played_manual_job_runs_it_again_without_a_new_play() {
    let mut run = Run::new("deploy deploy when=manual");
    run.start().play("deploy").fail("deploy").retry("deploy");
    assert_eq!(run.ran(), ["deploy#2"]);
}

#[test]
fn play_manual_option_runs_named_manual_jobs_like_played_ones() {
    let options = EngineOptions { play_manual: PlayManual::Jobs(vec!["deploy".into()]) };
    let mut run = Run::with(
        "build build
         deploy deploy when=manual
         review deploy when=manual",
        options,
    );
    run.start().succeed("build");
    assert_eq!(run.ran(), ["deploy#1"]);
    assert_eq!(run.status("review"), Manual);
    check!(run);
}

#[test]
fn play_manual_all_runs_every_manual_job() {
    let options = EngineOptions { play_manual: PlayManual::All };
    let mut run = Run::with(
        "a build when=manual
         b build when=manual allow=no",
        options,
    );
    run.start();
    assert_eq!(run.ran(), ["a#1", "b#1"]);
}

#[test]
fn play_manual_option_refuses_unknown_names() {
    let options = EngineOptions { play_manual: PlayManual::Jobs(vec!["deplyo".into()]) };
    let err = scheduler::Engine::new(crate::harness::spec("deploy deploy when=manual"), options).unwrap_err();
    assert_eq!(err.to_string(), "there is no job `deplyo`; did you mean `deploy`?");
}
