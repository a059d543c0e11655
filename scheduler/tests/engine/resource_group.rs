//! `resource_group`: a ready job waits for its group (GitLab's `waiting_for_resource`), the host
//! grants it, and the group is released when the job leaves the executors' hands. The host (the
//! server across pipelines, `piste run` within one) decides who gets a free group.

use scheduler::JobStatus::*;
use scheduler::{Command, Event, EventError, Outcome, PipelineStatus};

use crate::check;
use crate::harness::Run;

#[test]
fn a_job_with_a_resource_group_waits_until_granted_and_releases_it_when_it_ends() {
    let mut run = Run::new(
        "build build
         deploy deploy group=production",
    );
    run.start().succeed("build");
    assert_eq!(run.status("deploy"), WaitingForResource);
    assert!(run.last.contains(&Command::WaitForResource { job: "deploy".into(), attempt: 1, group: "production".into() }));
    assert_eq!(run.pipeline(), PipelineStatus::WaitingForResource, "GitLab's composite: waiting_for_resource when nothing runs");
    run.grant("deploy");
    assert_eq!(run.status("deploy"), Pending);
    assert!(run.last.contains(&Command::RunJob { job: "deploy".into(), attempt: 1 }));
    run.succeed("deploy");
    assert!(run.last.contains(&Command::ReleaseResource { job: "deploy".into(), attempt: 1, group: "production".into() }));
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    check!(run);
}

#[test]
fn a_waiting_job_canceled_frees_its_place_and_a_grant_for_it_is_refused() {
    let mut run = Run::new("deploy deploy group=production");
    run.start().cancel_job("deploy");
    assert_eq!(run.status("deploy"), Canceled);
    assert!(run.last.iter().any(|c| matches!(c, Command::ReleaseResource { .. })), "the host drops it from the queue");
    let now = run.now() + 1;
    let refused = run.send(Event::ResourceGranted { job: "deploy".into(), attempt: 1, now });
    assert!(matches!(refused, Err(EventError::InvalidTransition { .. })), "{refused:?}");
}

#[test]
fn a_retried_attempt_releases_and_waits_again() {
    let mut run = Run::new("deploy deploy group=production retry=1");
    run.start().grant("deploy").fail("deploy");
    assert!(run.last.contains(&Command::ReleaseResource { job: "deploy".into(), attempt: 1, group: "production".into() }));
    assert!(run.last.contains(&Command::WaitForResource { job: "deploy".into(), attempt: 2, group: "production".into() }));
    assert_eq!(run.status("deploy"), WaitingForResource);
    run.grant("deploy").finish("deploy", Outcome::Success);
    assert_eq!(run.pipeline(), PipelineStatus::Success);
}

#[test]
fn a_canceled_running_job_releases_once_it_stopped() {
    let mut run = Run::new("deploy deploy group=production");
    run.start().grant("deploy").begin("deploy").cancel();
    assert!(!run.last.iter().any(|c| matches!(c, Command::ReleaseResource { .. })), "still running: held");
    run.finish("deploy", Outcome::Canceled);
    assert!(run.last.iter().any(|c| matches!(c, Command::ReleaseResource { .. })));
}
