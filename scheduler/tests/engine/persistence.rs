//! Serialized state, the snapshot view, the critical path, and the wire shape of events and
//! commands.

use scheduler::{Command, Engine, EngineOptions, Event, FailureReason, Outcome, PipelineStatus};

use crate::harness::{Run, spec};

const PIPELINE: &str = "build build
                        lint build
                        unit test needs=build
                        e2e test
                        deploy deploy when=delayed:5000";

#[test]
fn a_stored_engine_resumes_exactly_where_it_stopped() {
    let mut live = Run::new(PIPELINE);
    live.start().succeed("build").begin("lint");
    let json = serde_json::to_string(&live.engine).unwrap();
    let restored: Engine = serde_json::from_str(&json).unwrap();
    assert_eq!(restored.snapshot(), live.engine.snapshot());

    let mut resumed = Run::from_spec(spec(PIPELINE), EngineOptions::default());
    resumed.engine = restored;
    let now = live.now();
    let events = [
        Event::JobFinished { job: "lint".into(), attempt: 1, outcome: Outcome::Success, now: now + 1_000 },
        Event::JobFinished { job: "unit".into(), attempt: 1, outcome: Outcome::Success, now: now + 2_000 },
        Event::JobFinished { job: "e2e".into(), attempt: 1, outcome: Outcome::Success, now: now + 3_000 },
        Event::Tick { now: now + 9_000 },
    ];
    for event in events {
        assert_eq!(resumed.send(event.clone()), live.send(event));
    }
    assert_eq!(resumed.engine.snapshot(), live.engine.snapshot());
    assert_eq!(serde_json::to_string(&resumed.engine).unwrap(), serde_json::to_string(&live.engine).unwrap());
}

#[test]
fn a_tampered_state_is_refused() {
    let run = Run::new(PIPELINE);
    let mut value = serde_json::to_value(&run.engine).unwrap();
    value["jobs"].as_array_mut().unwrap().pop();
    let err = serde_json::from_value::<Engine>(value).unwrap_err();
    assert!(err.to_string().contains("do not match"), "{err}");
}

#[test]
fn the_snapshot_records_attempts_failures_and_times() {
    let mut run = Run::new(
        "build build retry=1
         test test",
    );
    run.start(); // @1000
    run.begin("build"); // @2000
    run.fail_code("build", 2); // @3000, retried
    run.begin("build"); // @4000
    run.succeed("build"); // @5000
    let snapshot = run.engine.snapshot();
    let build = &snapshot.jobs[0];
    assert_eq!(build.attempt, 2);
    assert_eq!((build.queued_at, build.started_at, build.finished_at), (Some(3000), Some(4000), Some(5000)));
    assert_eq!(build.duration_ms, Some(1000));
    assert_eq!(build.failure, None, "the failure belonged to attempt 1");
    let test = &snapshot.jobs[1];
    assert_eq!(test.queued_at, Some(5000));
    assert_eq!(snapshot.status, PipelineStatus::Running);
    insta::with_settings!({ snapshot_path => "../snapshots", omit_expression => true }, {
        insta::assert_snapshot!(serde_json::to_string_pretty(&snapshot).unwrap());
    });
}

#[test]
fn the_critical_path_is_the_longest_chain_of_finished_jobs() {
    let mut run = Run::new(
        "fast build
         slow build
         unit test needs=fast
         docs test needs=
         deploy deploy",
    );
    run.start(); // everything of stage build, and docs, is pending @1000
    run.begin("fast").begin("slow").begin("docs"); // @2000..4000
    run.succeed("fast"); // @5000: fast took 3 s
    run.begin("unit"); // @6000
    run.succeed("unit"); // @7000: unit took 1 s -> chain fast+unit = 4 s
    run.succeed("docs"); // @8000: docs took 4 s
    run.succeed("slow"); // @9000: slow took 6 s
    run.succeed("deploy"); // started @10000, finished @11000: 1 s
    // deploy follows every earlier stage: slow (6 s) beats fast (3 s) and unit (4 s with fast).
    assert_eq!(run.engine.critical_path(), ["slow", "deploy"]);
}

#[test]
fn the_critical_path_ignores_jobs_that_never_ran() {
    let mut run = Run::new(
        "build build
         test test
         notify report when=on_failure",
    );
    run.start().succeed("build").succeed("test");
    assert_eq!(run.engine.critical_path(), ["build", "test"]);
    assert!(Run::new("a build").engine.critical_path().is_empty());
}

#[test]
fn events_and_commands_have_a_stable_wire_shape() {
    let events = vec![
        Event::Start { now: 1 },
        Event::JobFinished {
            job: "build".into(),
            attempt: 2,
            outcome: Outcome::Failed { reason: FailureReason::ScriptFailure, exit_code: Some(1) },
            now: 2,
        },
        Event::AutoCancel { mode: scheduler::AutoCancelMode::Interruptible, now: 3 },
    ];
    let commands = vec![
        Command::RunJob { job: "build".into(), attempt: 1 },
        Command::PipelineFinished { status: PipelineStatus::Success, has_warnings: true },
    ];
    insta::with_settings!({ snapshot_path => "../snapshots", omit_expression => true }, {
        insta::assert_snapshot!(serde_json::to_string_pretty(&(events, commands)).unwrap());
    });
}
