//! The server's memory and its delayed-job timer, in-process with a manual clock.

use std::time::Duration;

use scheduler::job::JobSpec;
use scheduler::protocol::GitSource;
use scheduler::{JobNode, JobStatus, Outcome, When};

use super::*;
use crate::pipelines::{JobTemplate, process};
use crate::store::{NewJob, NewPipeline, Recorded};

/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000;

async fn state(dir: &std::path::Path) -> Arc<AppState> {
    let config: Config = toml::from_str(&format!("data_dir = {:?}\n", dir.display().to_string())).unwrap();
    let store = Backend::open("", dir).await.unwrap();
    let blobs = crate::blob::Blobs::open(&config).unwrap();
    Arc::new(AppState::new(config, store, blobs).with_clock(Clock::manual(START)))
}

pub(crate) fn spec(node: JobNode) -> String {
    let git = GitSource { path: String::new(), sha: "0".repeat(40), git_ref: "refs/heads/main".into() };
    let job = JobSpec {
        name: node.name.clone(),
        stage: node.stage.clone(),
        image: None,
        services: vec![],
        script: vec!["true".into()],
        steps: vec![],
        after_script: vec![],
        variables: vec![],
        timeout_s: 60,
        artifacts: None,
        cache: vec![],
        dependencies: vec![],
        node_index: None,
        manual: false,
        coverage: None,
        environment: None,
        cross_needs: vec![],
        id_tokens: vec![],
    };
    let template = JobTemplate {
        node,
        job,
        git,
        coverage: None,
        auto_cancel: Default::default(),
        trigger: None,
        diff_base_sha: None,
        reuse_changes: None,
    };
    serde_json::to_string(&template).unwrap()
}

/// A started pipeline of these jobs; returns its id and its jobs' ids.
async fn started(state: &AppState, delivery: &str, nodes: Vec<JobNode>) -> (i64, Vec<i64>) {
    let new = NewPipeline {
        project: "app".into(),
        git_ref: "refs/heads/main".into(),
        sha: "0".repeat(40),
        before_sha: None,
        source: "push".into(),
        trigger: "{}".into(),
        created_at: state.now_ms(),
        needs_approval: false,
        upstream: None,
    };
    let Recorded::Created(id) = state.store.record_pipeline(delivery, &new).await.unwrap() else { panic!("a new delivery") };
    let jobs: Vec<NewJob> = nodes
        .into_iter()
        .map(|n| NewJob { name: n.name.clone(), stage: n.stage.clone(), stage_index: 0, tags: vec![], spec: spec(n), resource_group: None })
        .collect();
    let ids = state.store.save_plan(id, &jobs, PipelineStatus::Pending, state.now_ms()).await.unwrap();
    process(state, id, vec![Event::Start { now: state.now_ms() as u64 }], vec![]).await.unwrap();
    (id, ids)
}

#[tokio::test]
async fn delayed_jobs_wake_at_their_deadline_and_finished_pipelines_leave_memory() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path()).await;
    let start_in_ms = 30 * 60 * 1000;
    let mut later = JobNode::new("later", "test", 0);
    later.when = When::Delayed { start_in_ms };
    let (delayed, ids) = started(&state, "a", vec![later]).await;
    let deadline = START + start_in_ms as i64;
    let (plain, _) = started(&state, "b", vec![JobNode::new("now", "test", 0)]).await;
    assert_eq!(state.store.job(ids[0]).await.unwrap().unwrap().status, JobStatus::Scheduled);
    assert_eq!(state.store.wakeups(10).await.unwrap(), [crate::store::Wakeup { pipeline_id: delayed, at: deadline }]);

    // Before the deadline the timer wakes nobody and sleeps until it (or the rescan).
    state.clock.advance(Duration::from_secs(5));
    assert_eq!(wake_due(&state).await, state.now_ms() + RESCAN.as_millis() as i64);
    state.clock.advance(Duration::from_millis(start_in_ms - 5_000 - 3_000));
    assert_eq!(wake_due(&state).await, deadline, "3 s before: sleep until the deadline");
    assert_eq!(state.store.job(ids[0]).await.unwrap().unwrap().status, JobStatus::Scheduled);
    // At the deadline, the engine is told the time and queues the job.
    state.clock.advance(Duration::from_secs(3));
    assert_eq!(wake_due(&state).await, state.now_ms() + RESCAN.as_millis() as i64);
    assert_eq!(state.store.job(ids[0]).await.unwrap().unwrap().status, JobStatus::Pending);
    let ticks: Vec<u64> = state
        .store
        .events(delayed)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| if let Event::Tick { now } = e { Some(now) } else { None })
        .collect();
    assert_eq!(ticks, [deadline as u64]);
    assert_eq!(state.store.wakeups(10).await.unwrap(), []);
    // The other pipeline had no deadline: nothing was written to it.
    assert_eq!(state.store.pipeline(plain).await.unwrap().unwrap().version, 1);

    // Another server (a second state on the same database, whose engines never saw this
    // pipeline) wakes a pipeline whose deadline it did not compute.
    let mut again = JobNode::new("again", "test", 0);
    again.when = When::Delayed { start_in_ms: 1_000 };
    let (other, other_ids) = started(&state, "c", vec![again]).await;
    let config: Config = toml::from_str(&format!("data_dir = {:?}\n", dir.path().display().to_string())).unwrap();
    let blobs = crate::blob::Blobs::open(&config).unwrap();
    let peer = AppState::new(config, state.store.clone(), blobs).with_clock(state.clock.clone());
    state.clock.advance(Duration::from_secs(1));
    wake_due(&peer).await;
    assert_eq!(state.store.job(other_ids[0]).await.unwrap().unwrap().status, JobStatus::Pending);
    assert!(state.store.wakeups(10).await.unwrap().iter().all(|w| w.pipeline_id != other));
    // The delayed pipeline finishes: its engine leaves memory; the others' stay.
    assert_eq!(state.in_memory().await.engines, 3);
    let now = state.now_ms() as u64;
    let run = vec![
        Event::JobStarted { job: "later".into(), attempt: 1, now },
        Event::JobFinished { job: "later".into(), attempt: 1, outcome: Outcome::Success, now },
    ];
    process(&state, delayed, run, vec![]).await.unwrap();
    assert_eq!(state.store.pipeline(delayed).await.unwrap().unwrap().status, PipelineStatus::Success);
    // Engines: the plain and the third pipelines; queueing times: the plain one's job only
    // (the finished job's went with it).
    let held = state.in_memory().await;
    assert_eq!((held.engines, held.log_locks, held.log_watchers, held.queued_jobs), (2, 0, 0, 1));
}

#[tokio::test]
async fn per_job_entries_live_while_held_and_followers_hear_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path()).await;
    let follower = state.log_watcher(7);
    let second = state.log_watcher(7);
    {
        let ended = follower.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        assert_eq!(state.in_memory().await.log_watchers, 1);
        state.job_ended(7);
        tokio::time::timeout(Duration::from_secs(5), ended).await.expect("the follower is woken when the job ends");
    }
    drop(second);
    assert_eq!(state.in_memory().await.log_watchers, 1, "one follower still holds it");
    drop(follower);
    assert_eq!(state.in_memory().await.log_watchers, 0);

    let lock = state.log_lock(7).await;
    let guard = lock.lock().await;
    assert_eq!(state.in_memory().await.log_locks, 1);
    drop(guard);
    drop(lock);
    assert_eq!(state.in_memory().await.log_locks, 0);
}

/// A job start that changes nothing else the store keeps waits in memory and joins the
/// pipeline's log with its next transition, before it; one that changes the pipeline's status
/// is stored at once; and a start that never reached the log (another server, or a crash)
/// costs nothing: the job still finishes.
#[tokio::test]
async fn a_job_start_that_changes_nothing_else_is_stored_with_the_next_transition() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path()).await;
    let nodes = ["a", "b", "c", "d"].map(|n| JobNode::new(n, "test", 0)).to_vec();
    let (id, ids) = started(&state, "deferred", nodes).await;
    let pipeline = || async { state.store.pipeline(id).await.unwrap().unwrap() };
    let v0 = pipeline().await.version;
    let now = state.now_ms() as u64;
    let start = |job: &str| Event::JobStarted { job: job.into(), attempt: 1, now };

    crate::pipelines::job_started(&state, id, start("a")).await.unwrap();
    let p = pipeline().await;
    assert_eq!((p.version, p.status), (v0 + 1, PipelineStatus::Running), "the first start makes the pipeline running: stored");
    crate::pipelines::job_started(&state, id, start("b")).await.unwrap();
    crate::pipelines::job_started(&state, id, start("c")).await.unwrap();
    assert_eq!(pipeline().await.version, v0 + 1, "the next starts wait in memory");

    let finish = |job: &str| Event::JobFinished { job: job.into(), attempt: 1, outcome: Outcome::Success, now };
    process(&state, id, vec![finish("b")], vec![]).await.unwrap();
    let events = state.store.events(id).await.unwrap();
    let names: Vec<String> = events[events.len() - 3..].iter().map(|e| format!("{e:?}")).collect();
    assert!(names[0].starts_with("JobStarted") && names[0].contains("\"b\""), "{names:?}");
    assert!(names[1].starts_with("JobStarted") && names[1].contains("\"c\""), "{names:?}");
    assert!(names[2].starts_with("JobFinished") && names[2].contains("\"b\""), "{names:?}");

    crate::pipelines::job_started(&state, id, start("d")).await.unwrap();
    assert!(!format!("{:?}", state.store.events(id).await.unwrap()).contains("\"d\""), "d's start waits in memory");

    // Another server on the same store, whose engine is rebuilt from the log (without d's
    // start, as after a crash): every job finishes.
    let config: Config = toml::from_str(&format!("data_dir = {:?}\n", dir.path().display().to_string())).unwrap();
    let blobs = crate::blob::Blobs::open(&config).unwrap();
    let peer = AppState::new(config, state.store.clone(), blobs).with_clock(state.clock.clone());
    process(&peer, id, vec![finish("a"), finish("c"), finish("d")], vec![]).await.unwrap();
    let p = pipeline().await;
    assert_eq!(p.status, PipelineStatus::Success, "{p:?}");
    for job in ids {
        assert_eq!(state.store.job(job).await.unwrap().unwrap().status, JobStatus::Success);
    }
}

/// Callers that queue while a pipeline's lock is held are stored together by the next
/// holder, each answered with its own commands; when the batch fails (one caller names a job
/// that does not exist), each caller applies its events alone: the others' results stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_queued_behind_a_pipeline_are_stored_together_and_answered_each() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path()).await;
    let nodes = ["a", "b", "c", "d", "e"].map(|n| JobNode::new(n, "test", 0)).to_vec();
    let (id, ids) = started(&state, "together", nodes).await;
    let now = state.now_ms() as u64;
    for job in ["a", "b", "c", "d", "e"] {
        crate::pipelines::job_started(&state, id, Event::JobStarted { job: job.into(), attempt: 1, now }).await.unwrap();
    }
    let finish = move |job: &str| Event::JobFinished { job: job.into(), attempt: 1, outcome: Outcome::Success, now };
    let result = move |job_id| crate::store::JobUpdate::Result { job_id, exit_code: Some(0), failure_reason: None, at: now as i64 };

    let entry = state.pipeline_lock(id).await;
    let round = |callers: Vec<(&'static str, i64)>| {
        let entry = entry.clone();
        let state = state.clone();
        async move {
            let held = entry.cached.lock().await;
            let tasks: Vec<_> = callers
                .iter()
                .map(|&(job, job_id)| {
                    let state = state.clone();
                    tokio::spawn(async move { process(&state, id, vec![finish(job)], vec![result(job_id)]).await })
                })
                .collect();
            while entry.waiting() < callers.len() {
                tokio::task::yield_now().await;
            }
            drop(held);
            let mut answers = Vec::new();
            for t in tasks {
                answers.push(t.await.unwrap());
            }
            assert_eq!(entry.waiting(), 0);
            answers
        }
    };

    let answers = round(vec![("a", ids[0]), ("b", ids[1])]).await;
    for (answer, job) in answers.iter().zip(["a", "b"]) {
        let commands = answer.as_ref().unwrap();
        assert!(
            commands
                .iter()
                .any(|c| matches!(c, scheduler::Command::JobStatusChanged { job: j, status: JobStatus::Success, .. } if j == job)),
            "each caller gets its own commands: {commands:?}"
        );
        assert!(
            !commands.iter().any(|c| format!("{c:?}").contains(&format!("\"{}\"", if job == "a" { "b" } else { "a" }))),
            "{commands:?}"
        );
    }

    // `d`'s caller names a job that does not exist: it alone fails.
    let answers = round(vec![("c", ids[2]), ("d", 999_999), ("e", ids[4])]).await;
    assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
    assert!(matches!(answers[1], Err(crate::store::StoreError::NotFound { what: "job", id: 999_999 })), "{:?}", answers[1]);
    for (job, done) in ids.iter().zip([true, true, true, false, true]) {
        let row = state.store.job(*job).await.unwrap().unwrap();
        assert_eq!((row.status == JobStatus::Success, row.finished_at.is_some()), (done, done), "job {job}: {row:?}");
    }
    process(&state, id, vec![finish("d")], vec![result(ids[3])]).await.unwrap();
    assert_eq!(state.store.pipeline(id).await.unwrap().unwrap().status, PipelineStatus::Success);
}

/// A resource group whose holder finished while the server was down without the group being
/// handed on (the stop fell between storing the job's end and granting the group): the next
/// server start gives it to the waiting job (`resume_resource_groups`).
#[tokio::test]
async fn a_restart_hands_on_a_group_whose_holder_finished_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = state(dir.path()).await;
    let nodes: Vec<JobNode> =
        ["one", "two"].iter().map(|n| JobNode { resource_group: Some("prod".into()), ..JobNode::new(*n, "test", 0) }).collect();
    let new = NewPipeline {
        project: "app".into(),
        git_ref: "refs/heads/main".into(),
        sha: "0".repeat(40),
        before_sha: None,
        source: "push".into(),
        trigger: "{}".into(),
        created_at: server.now_ms(),
        needs_approval: false,
        upstream: None,
    };
    let Recorded::Created(id) = server.store.record_pipeline("rg", &new).await.unwrap() else { panic!("a new delivery") };
    let jobs: Vec<NewJob> = nodes
        .into_iter()
        .map(|n| NewJob {
            name: n.name.clone(),
            stage: n.stage.clone(),
            stage_index: 0,
            tags: vec![],
            spec: spec(n),
            resource_group: Some("prod".into()),
        })
        .collect();
    let ids = server.store.save_plan(id, &jobs, PipelineStatus::Pending, server.now_ms()).await.unwrap();
    process(&server, id, vec![Event::Start { now: server.now_ms() as u64 }], vec![]).await.unwrap();
    let status = |s: &Arc<AppState>, i: usize| {
        let (s, job) = (s.clone(), ids[i]);
        async move { s.store.job(job).await.unwrap().unwrap().status }
    };
    assert_eq!(status(&server, 0).await, JobStatus::Pending);
    assert_eq!(status(&server, 1).await, JobStatus::WaitingForResource);
    assert_eq!(server.store.resource_holder("app", "prod").await.unwrap(), Some((ids[0], 1)));

    // `one` ends, and the server stops before handing the group on.
    let now = server.now_ms() as u64;
    let events = vec![
        Event::JobStarted { job: "one".into(), attempt: 1, now },
        Event::JobFinished { job: "one".into(), attempt: 1, outcome: Outcome::Success, now },
    ];
    crate::pipelines::process_cancels(&server, id, events, vec![]).await.unwrap();
    assert_eq!(status(&server, 0).await, JobStatus::Success);
    assert_eq!(status(&server, 1).await, JobStatus::WaitingForResource, "nobody handed the group on");
    drop(server);

    let restarted = state(dir.path()).await;
    crate::pipelines::resume_resource_groups(&restarted).await.unwrap();
    assert_eq!(restarted.store.resource_holder("app", "prod").await.unwrap(), Some((ids[1], 1)));
    assert_eq!(status(&restarted, 1).await, JobStatus::Pending);
}

/// `bridges::resume`: a `strategy: depend` trigger job whose child pipeline ended while the
/// server was down (the end never reached it) is started again by the next server and takes
/// the child's status, as GitLab's `inherit_status_from_downstream!` gives it — without a
/// second child (one per trigger job attempt).
#[tokio::test]
async fn a_restart_ends_a_trigger_job_whose_child_ended_while_down() {
    use pipeline_spec::model::{Forward, Strategy, Trigger, TriggerInclude};
    let dir = tempfile::tempdir().unwrap();
    let server = state(dir.path()).await;
    let mut template: JobTemplate = serde_json::from_str(&spec(JobNode::new("t", "test", 0))).unwrap();
    template.trigger = Some(Trigger {
        project: None,
        branch: None,
        include: vec![TriggerInclude::Local { path: "ci/child.yml".into() }],
        strategy: Some(Strategy::Depend),
        forward: Forward { yaml_variables: true, pipeline_variables: false },
    });
    let stored = crate::bridges::StoredTrigger { context: pipeline_spec::predefined::Context::default(), downstream: None };
    let new = NewPipeline {
        project: "app".into(),
        git_ref: "refs/heads/main".into(),
        sha: "0".repeat(40),
        before_sha: None,
        source: "push".into(),
        trigger: serde_json::to_string(&stored).unwrap(),
        created_at: server.now_ms(),
        needs_approval: false,
        upstream: None,
    };
    let Recorded::Created(parent) = server.store.record_pipeline("parent", &new).await.unwrap() else { panic!("a new delivery") };
    let job = NewJob {
        name: "t".into(),
        stage: "test".into(),
        stage_index: 0,
        tags: vec![],
        spec: serde_json::to_string(&template).unwrap(),
        resource_group: None,
    };
    let ids = server.store.save_plan(parent, &[job], PipelineStatus::Pending, server.now_ms()).await.unwrap();
    process(&server, parent, vec![Event::Start { now: server.now_ms() as u64 }], vec![]).await.unwrap();
    // Nobody runs trigger jobs here (no `serve` task): the server "stopped" with `t` running.
    assert_eq!(server.store.job(ids[0]).await.unwrap().unwrap().status, JobStatus::Running);
    // Its child (the delivery id of `t`'s first attempt) ran and passed meanwhile.
    let (child, child_jobs) = started(&server, &format!("trigger:{}:1", ids[0]), vec![JobNode::new("unit", "test", 0)]).await;
    let now = server.now_ms() as u64;
    let run = vec![
        Event::JobStarted { job: "unit".into(), attempt: 1, now },
        Event::JobFinished { job: "unit".into(), attempt: 1, outcome: Outcome::Success, now },
    ];
    process(&server, child, run, vec![]).await.unwrap();
    assert_eq!(server.store.job(child_jobs[0]).await.unwrap().unwrap().status, JobStatus::Success);
    assert_eq!(server.store.job(ids[0]).await.unwrap().unwrap().status, JobStatus::Running, "the child's end did not reach `t`");
    drop(server);

    let restarted = state(dir.path()).await;
    crate::bridges::resume(&restarted).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let row = restarted.store.job(ids[0]).await.unwrap().unwrap();
        if row.status.is_complete() || std::time::Instant::now() > deadline {
            break row.status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status, JobStatus::Success);
    assert_eq!(restarted.store.pipeline(parent).await.unwrap().unwrap().status, PipelineStatus::Success);
    assert_eq!(restarted.store.pipelines(Some("app"), 10).await.unwrap().len(), 2, "no second child");
}
