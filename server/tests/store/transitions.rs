//! `apply`: the event log, optimistic concurrency, and what each `JobUpdate` does to a job.

use std::sync::Arc;

use scheduler::{Event, FailureReason, JobStatus, Outcome, PipelineStatus};
use server::store::{JobRow, JobUpdate, Store, StoreError, Transition, Wakeup};

use crate::support::{Db, claimer, enqueue, planned, runner};

store_tests!(
    events_append_in_order,
    stale_version_conflicts,
    concurrent_appends_one_wins,
    failed_transition_writes_nothing,
    a_finish_of_another_pipelines_job_writes_nothing,
    finishes_stored_together_record_each_job,
    running_and_finished_statuses_record,
    pending_starts_a_new_attempt,
    a_result_then_a_retry_in_one_transition,
    cancel_request,
    wake_at_orders_deadlines,
);

fn transition(pipeline_id: i64, expected_version: i64, events: Vec<Event>, jobs: Vec<JobUpdate>) -> Transition {
    Transition { pipeline_id, expected_version, events, jobs, pipeline_status: None, wake_at: None, at: 50_000 }
}

async fn events_append_in_order(s: Arc<Db>) {
    let (p, _) = planned(&s, &[("build", &[])]).await;
    let first = vec![Event::Start { now: 1 }];
    let second = vec![
        Event::JobStarted { job: "build".into(), attempt: 1, now: 2 },
        Event::JobFinished {
            job: "build".into(),
            attempt: 1,
            outcome: Outcome::Failed { reason: FailureReason::ScriptFailure, exit_code: Some(2) },
            now: 3,
        },
        Event::RetryJob { job: "build".into(), now: 4 },
    ];
    let mut t = transition(p, 0, first.clone(), vec![]);
    t.pipeline_status = Some(PipelineStatus::Pending);
    assert_eq!(s.apply(&t).await.unwrap(), 1);
    let mut t = transition(p, 1, second.clone(), vec![]);
    t.pipeline_status = Some(PipelineStatus::Running);
    t.at = 60_000;
    assert_eq!(s.apply(&t).await.unwrap(), 4);
    // No events, no status: the version stays and the status is kept.
    assert_eq!(s.apply(&transition(p, 4, vec![], vec![])).await.unwrap(), 4);

    let all: Vec<Event> = first.into_iter().chain(second).collect();
    assert_eq!(s.events(p).await.unwrap(), all);
    let row = s.pipeline(p).await.unwrap().unwrap();
    assert_eq!((row.version, row.status.as_str()), (4, "running"));

    // Another pipeline's log is its own.
    let (q, _) = planned(&s, &[("x", &[])]).await;
    assert_eq!(s.events(q).await.unwrap(), []);
    assert_eq!(s.apply(&transition(q, 0, vec![Event::Cancel { now: 9 }], vec![])).await.unwrap(), 1);
    assert_eq!(s.events(q).await.unwrap(), [Event::Cancel { now: 9 }]);
    assert_eq!(s.events(p).await.unwrap().len(), 4);
}

async fn stale_version_conflicts(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("build", &[])]).await;
    s.apply(&transition(p, 0, vec![Event::Start { now: 1 }], vec![])).await.unwrap();
    let stale = transition(p, 0, vec![Event::Tick { now: 2 }], vec![JobUpdate::RequestCancel { job_id: jobs[0] }]);
    let r = s.apply(&stale).await;
    assert!(matches!(r, Err(StoreError::Conflict { pipeline, expected: 0, found: 1 }) if pipeline == p), "{r:?}");
    let ahead = transition(p, 5, vec![Event::Tick { now: 2 }], vec![]);
    assert!(matches!(s.apply(&ahead).await, Err(StoreError::Conflict { expected: 5, found: 1, .. })));
    // Nothing of the refused transitions was written.
    assert_eq!(s.events(p).await.unwrap(), [Event::Start { now: 1 }]);
    assert!(!s.job(jobs[0]).await.unwrap().unwrap().cancel_requested);

    let missing = transition(p + 1000, 0, vec![Event::Tick { now: 2 }], vec![]);
    assert!(matches!(s.apply(&missing).await, Err(StoreError::NotFound { what: "pipeline", .. })));
}

async fn concurrent_appends_one_wins(s: Arc<Db>) {
    let (p, _) = planned(&s, &[("build", &[])]).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(
                async move { s.apply(&transition(p, 0, vec![Event::Tick { now: i }, Event::Tick { now: 100 + i }], vec![])).await },
            )
        })
        .collect();
    let mut won = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(version) => won.push((i as u64, version)),
            Err(StoreError::Conflict { expected: 0, found: 2, .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let (i, version) = won[0];
    assert_eq!(version, 2);
    assert_eq!(s.events(p).await.unwrap(), [Event::Tick { now: i }, Event::Tick { now: 100 + i }]);
}

async fn failed_transition_writes_nothing(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("a", &[])]).await;
    let (_, others) = planned(&s, &[("b", &[])]).await;
    // A job of another pipeline (or none) fails the whole transition.
    for job_id in [others[0], others[0] + 1000] {
        let t = transition(
            p,
            0,
            vec![Event::Start { now: 1 }],
            vec![JobUpdate::RequestCancel { job_id: jobs[0] }, JobUpdate::RequestCancel { job_id }],
        );
        let r = s.apply(&t).await;
        assert!(matches!(r, Err(StoreError::NotFound { what: "job", id }) if id == job_id), "{r:?}");
    }
    assert_eq!(s.events(p).await.unwrap(), []);
    assert_eq!(s.pipeline(p).await.unwrap().unwrap().version, 0);
    assert!(!s.job(jobs[0]).await.unwrap().unwrap().cancel_requested);
    assert!(!s.job(others[0]).await.unwrap().unwrap().cancel_requested);
}

/// A job's finish (its result, then its final status: the transition PostgreSQL applies in
/// one statement) naming a job of another pipeline, or none, changes nothing; a stale
/// version is still a conflict.
async fn a_finish_of_another_pipelines_job_writes_nothing(s: Arc<Db>) {
    let (p, _) = planned(&s, &[("a", &[])]).await;
    let (_, others) = planned(&s, &[("b", &[])]).await;
    let finish = |job_id| {
        vec![JobUpdate::Result { job_id, exit_code: Some(0), failure_reason: None, at: 7 }, status(job_id, JobStatus::Success, 1, 7)]
    };
    for job_id in [others[0], others[0] + 1000] {
        let r = s.apply(&transition(p, 0, vec![Event::Start { now: 1 }], finish(job_id))).await;
        assert!(matches!(r, Err(StoreError::NotFound { what: "job", id }) if id == job_id), "{r:?}");
    }
    assert_eq!(s.events(p).await.unwrap(), []);
    assert_eq!(s.pipeline(p).await.unwrap().unwrap().version, 0);
    let other = s.job(others[0]).await.unwrap().unwrap();
    assert_eq!((other.status, other.exit_code, other.finished_at), (JobStatus::Created, None, None));
    let r = s.apply(&transition(p, 3, vec![Event::Start { now: 1 }], finish(others[0]))).await;
    assert!(matches!(r, Err(StoreError::Conflict { expected: 3, found: 0, .. })), "{r:?}");
}

/// Finishes that arrived together (`pipelines::process` stores them as one transition):
/// each job keeps its own result and status; one job that is not the pipeline's, and
/// nothing of the transition is written.
async fn finishes_stored_together_record_each_job(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("a", &[]), ("b", &[]), ("c", &[])]).await;
    let (_, others) = planned(&s, &[("x", &[])]).await;
    let (a, b, c) = (jobs[0], jobs[1], jobs[2]);
    let v = enqueue(&s, p, &[a, b, c], 1).await;
    let result = |job_id, code: i32, reason: Option<&str>, at| JobUpdate::Result {
        job_id,
        exit_code: Some(code),
        failure_reason: reason.map(str::to_owned),
        at,
    };
    let finished = |a_status| {
        vec![
            result(a, 0, None, 10),
            result(b, 3, Some("script_failure"), 11),
            status(a, a_status, 1, 10),
            status(b, JobStatus::Failed, 1, 11),
        ]
    };
    // A job of another pipeline among them: refused whole.
    let mut foreign = finished(JobStatus::Success);
    foreign.extend([result(others[0], 0, None, 12), status(others[0], JobStatus::Success, 1, 12)]);
    let r = s.apply(&transition(p, v, vec![Event::Tick { now: 10 }], foreign)).await;
    assert!(matches!(r, Err(StoreError::NotFound { what: "job", .. })), "{r:?}");
    for id in [a, b, others[0]] {
        let row = s.job(id).await.unwrap().unwrap();
        assert_eq!((row.exit_code, row.finished_at), (None, None), "job {id} untouched");
    }
    assert_eq!(s.pipeline(p).await.unwrap().unwrap().version, v);

    let v2 =
        s.apply(&transition(p, v, vec![Event::Tick { now: 10 }, Event::Tick { now: 11 }], finished(JobStatus::Success))).await.unwrap();
    assert_eq!(v2, v + 2);
    let (ra, rb, rc) = (s.job(a).await.unwrap().unwrap(), s.job(b).await.unwrap().unwrap(), s.job(c).await.unwrap().unwrap());
    assert_eq!((ra.status, ra.exit_code, ra.failure_reason.as_deref(), ra.finished_at), (JobStatus::Success, Some(0), None, Some(10)));
    assert_eq!(
        (rb.status, rb.exit_code, rb.failure_reason.as_deref(), rb.finished_at),
        (JobStatus::Failed, Some(3), Some("script_failure"), Some(11))
    );
    assert_eq!((rc.status, rc.finished_at), (JobStatus::Pending, None), "a job outside the transition is untouched");
    assert_eq!(s.events(p).await.unwrap().len() as i64, v2);
}

fn status(job_id: i64, status: JobStatus, attempt: u32, at: i64) -> JobUpdate {
    JobUpdate::Status { job_id, status, attempt, at }
}

async fn running_and_finished_statuses_record(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("a", &[]), ("b", &[]), ("c", &[])]).await;
    let (a, b, c) = (jobs[0], jobs[1], jobs[2]);
    let v = enqueue(&s, p, &[a], 1).await;
    let r = runner(&s, "r").await;
    let claimed = s.claim_job(&claimer(r, &[]), "token", 4_000, 9_000).await.unwrap().unwrap();
    assert_eq!((claimed.job.id, claimed.job.started_at), (a, Some(4_000)));

    // The engine's `running` keeps the claim's start time; its `success` sets the end.
    let v = s.apply(&transition(p, v, vec![], vec![status(a, JobStatus::Running, 1, 4_100)])).await.unwrap();
    let row = s.job(a).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.started_at, row.runner_id), ("running", Some(4_000), Some(r)));
    let result = JobUpdate::Result { job_id: a, exit_code: Some(0), failure_reason: None, at: 5_000 };
    let v = s.apply(&transition(p, v, vec![], vec![result, status(a, JobStatus::Success, 1, 5_001)])).await.unwrap();
    let row = s.job(a).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.exit_code, row.finished_at), ("success", Some(0), Some(5_000)));
    assert_eq!((row.started_at, row.runner_id, row.attempt), (Some(4_000), Some(r), 1));

    // A failure with its reason; a job that never ran is skipped, and ends then.
    let failed = JobUpdate::Result { job_id: b, exit_code: Some(137), failure_reason: Some("script_failure".into()), at: 6_000 };
    let v = s
        .apply(&transition(p, v, vec![], vec![status(b, JobStatus::Running, 1, 5_500), failed, status(b, JobStatus::Failed, 1, 6_000)]))
        .await
        .unwrap();
    let row = s.job(b).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.exit_code, row.failure_reason.as_deref()), ("failed", Some(137), Some("script_failure")));
    assert_eq!((row.started_at, row.finished_at), (Some(5_500), Some(6_000)));
    s.apply(&transition(p, v, vec![], vec![status(c, JobStatus::Manual, 1, 6_100), status(c, JobStatus::Skipped, 1, 6_200)]))
        .await
        .unwrap();
    let row = s.job(c).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.started_at, row.finished_at), ("skipped", None, Some(6_200)));
}

async fn pending_starts_a_new_attempt(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("a", &[])]).await;
    let a = jobs[0];
    let v = enqueue(&s, p, &[a], 1).await;
    assert_eq!(s.job(a).await.unwrap().unwrap().status, JobStatus::Pending);
    let (r3, r4) = (runner(&s, "3").await, runner(&s, "4").await);
    s.claim_job(&claimer(r3, &[]), "first-token", 4_000, 9_000).await.unwrap().unwrap();
    s.set_artifacts(a, "sha256:00ff").await.unwrap();
    s.set_dotenv(a, r#"[["K","V"]]"#).await.unwrap();
    let lost = JobUpdate::Result { job_id: a, exit_code: None, failure_reason: Some("runner_system_failure".into()), at: 9_500 };
    let v = s
        .apply(&transition(p, v, vec![], vec![JobUpdate::RequestCancel { job_id: a }, lost, status(a, JobStatus::Failed, 1, 9_500)]))
        .await
        .unwrap();
    let old = s.job(a).await.unwrap().unwrap();
    assert_eq!((old.runner_id, old.artifacts.as_deref(), old.cancel_requested), (Some(r3), Some("sha256:00ff"), true));

    // Retried: attempt 2 is queued with nothing of attempt 1.
    s.apply(&transition(p, v, vec![], vec![status(a, JobStatus::Pending, 2, 10_000)])).await.unwrap();
    let row = s.job(a).await.unwrap().unwrap();
    let expected = JobRow { status: JobStatus::Pending, attempt: 2, ..bare(&old) };
    assert_eq!(row, expected);
    assert_eq!(s.job_by_token(a, "first-token").await.unwrap(), None);
    assert_eq!(s.queue_depth().await.unwrap(), 1);

    let again = s.claim_job(&claimer(r4, &[]), "second-token", 11_000, 20_000).await.unwrap().unwrap();
    assert_eq!((again.job.id, again.job.attempt, again.job.runner_id), (a, 2, Some(r4)));
    assert_eq!(s.job_by_token(a, "second-token").await.unwrap().unwrap().attempt, 2);
}

/// A runner's result, the engine's `failed` and a retry's `pending` in one transition (`retry:`
/// queues the next attempt as the first ends): the first attempt keeps its result among the
/// past ones, the row starts over. PostgreSQL writes the result with the final status, in one
/// statement: it must come out as applying them in turn does.
async fn a_result_then_a_retry_in_one_transition(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("a", &[])]).await;
    let a = jobs[0];
    let v = enqueue(&s, p, &[a], 1).await;
    let r = runner(&s, "r").await;
    s.claim_job(&claimer(r, &[]), "token", 4_000, 9_000).await.unwrap().unwrap();
    let failed = JobUpdate::Result { job_id: a, exit_code: Some(3), failure_reason: Some("script_failure".into()), at: 5_000 };
    let updates = vec![failed, status(a, JobStatus::Failed, 1, 5_001), status(a, JobStatus::Pending, 2, 5_001)];
    s.apply(&transition(p, v, vec![], updates)).await.unwrap();
    let row = s.job(a).await.unwrap().unwrap();
    assert_eq!((row.status, row.attempt, row.exit_code, row.failure_reason, row.finished_at), (JobStatus::Pending, 2, None, None, None));
    let past = s.past_attempts(a).await.unwrap();
    assert_eq!(past.len(), 1, "{past:?}");
    assert_eq!((past[0].attempt, past[0].status, past[0].exit_code), (1, JobStatus::Failed, Some(3)));
    assert_eq!(
        (past[0].failure_reason.as_deref(), past[0].started_at, past[0].finished_at),
        (Some("script_failure"), Some(4_000), Some(5_000))
    );
}

/// The row without anything an attempt leaves.
fn bare(job: &JobRow) -> JobRow {
    JobRow {
        runner_id: None,
        lease_expires_at: None,
        cancel_requested: false,
        started_at: None,
        finished_at: None,
        exit_code: None,
        failure_reason: None,
        artifacts: None,
        dotenv: None,
        reused_from: None,
        reuse_key: None,
        ..job.clone()
    }
}

async fn cancel_request(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("a", &[])]).await;
    let a = jobs[0];
    let v = enqueue(&s, p, &[a], 1).await;
    let r = runner(&s, "r").await;
    s.claim_job(&claimer(r, &[]), "t", 1_000, 2_000).await.unwrap().unwrap();
    assert!(!s.extend_lease(a, 3_000).await.unwrap());
    // The engine cancels: the job is `canceling` until the runner reports; its token and lease
    // still work, and the heartbeat says cancel.
    let cancel = vec![JobUpdate::RequestCancel { job_id: a }, status(a, JobStatus::Canceling, 1, 2_500)];
    let v = s.apply(&transition(p, v, vec![Event::CancelJob { job: "a".into(), now: 2_500 }], cancel)).await.unwrap();
    assert!(s.extend_lease(a, 4_000).await.unwrap());
    assert_eq!(s.job_by_token(a, "t").await.unwrap().unwrap().status, JobStatus::Canceling);
    assert_eq!(s.expired_leases(4_001).await.unwrap().iter().map(|j| j.id).collect::<Vec<_>>(), [a]);
    // Once canceled, the attempt is over.
    s.apply(&transition(p, v, vec![], vec![status(a, JobStatus::Canceled, 1, 3_000)])).await.unwrap();
    assert_eq!(s.job_by_token(a, "t").await.unwrap(), None);
    assert!(matches!(s.extend_lease(a, 5_000).await, Err(StoreError::NotFound { what: "running job", .. })));
    assert_eq!(s.expired_leases(10_000).await.unwrap(), []);
}

async fn wake_at_orders_deadlines(s: Arc<Db>) {
    let (a, _) = planned(&s, &[("x", &[])]).await;
    let (b, _) = planned(&s, &[("x", &[])]).await;
    let (c, _) = planned(&s, &[("x", &[])]).await;
    for (p, at) in [(a, Some(9_000)), (b, Some(4_000)), (c, None)] {
        let mut t = transition(p, 0, vec![Event::Start { now: 1 }], vec![]);
        t.wake_at = at;
        s.apply(&t).await.unwrap();
    }
    let w = |pipeline_id, at| Wakeup { pipeline_id, at };
    assert_eq!(s.wakeups(10).await.unwrap(), [w(b, 4_000), w(a, 9_000)]);
    assert_eq!(s.wakeups(1).await.unwrap(), [w(b, 4_000)]);
    // Every transition states the next deadline: none left for `b`, a later one for `a`.
    s.apply(&transition(b, 1, vec![], vec![])).await.unwrap();
    let mut t = transition(a, 1, vec![], vec![]);
    t.wake_at = Some(12_000);
    s.apply(&t).await.unwrap();
    assert_eq!(s.wakeups(10).await.unwrap(), [w(a, 12_000)]);
}
