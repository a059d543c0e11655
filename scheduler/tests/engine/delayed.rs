//! `when: delayed` (GitLab: the job is `scheduled` once its previous status allows it, and
//! enqueued `start_in` later).

use scheduler::JobStatus::*;
use scheduler::{Event, PipelineStatus};

use crate::check;
use crate::harness::Run;

#[test]
fn a_delayed_job_runs_start_in_after_it_became_ready() {
    let mut run = Run::new(
        "build build
         rollout deploy when=delayed:30000
         verify verify",
    );
    run.start().succeed("build");
    let ready = run.now();
    assert_eq!(run.status("rollout"), Scheduled);
    assert_eq!(run.engine.next_wakeup(), Some(ready + 30_000));
    assert_eq!(run.pipeline(), PipelineStatus::Scheduled);
    assert_eq!(run.status("verify"), Created, "a scheduled job holds later stages");

    run.wait(10_000);
    assert_eq!(run.status("rollout"), Scheduled);
    run.wait(20_000);
    assert_eq!(run.ran(), ["rollout#1"]);
    assert_eq!(run.engine.next_wakeup(), None);
    run.succeed("rollout").succeed("verify");
    assert_eq!(run.pipeline(), PipelineStatus::Success);
    check!(run);
}

#[test]
fn any_event_past_the_due_time_enqueues_the_job() {
    let mut run = Run::new(
        "a build
         b build
         later test needs=a when=delayed:500",
    );
    run.start().succeed("a");
    assert_eq!(run.status("later"), Scheduled);
    run.begin("b");
    assert_eq!(run.ran(), ["later#1"], "`b` starting at 4000 is past 3500");
}

#[test]
fn a_zero_delay_runs_at_once() {
    let mut run = Run::new("now build when=delayed:0");
    run.start();
    assert_eq!(run.ran(), ["now#1"]);
}

#[test]
fn a_scheduled_job_can_be_started_now_or_canceled() {
    let mut run = Run::new(
        "a build when=delayed:60000
         b build when=delayed:60000",
    );
    run.start().play("a");
    assert_eq!(run.ran(), ["a#1"]);
    run.cancel_job("b");
    assert_eq!(run.status("b"), Canceled);
    assert_eq!(run.engine.next_wakeup(), None);
    check!(run);
}

#[test]
fn time_never_goes_backwards() {
    let mut run = Run::new("a build when=delayed:1000");
    run.start();
    let due = run.engine.next_wakeup().unwrap();
    run.send(Event::Tick { now: due }).unwrap();
    assert_eq!(run.status("a"), Pending);
    run.send(Event::Tick { now: 0 }).unwrap();
    assert_eq!(run.engine.snapshot().now, due);
}
