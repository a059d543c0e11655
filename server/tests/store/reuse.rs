//! Reuse of job results: records are found by scoped key within their project only, point at
//! the attempt that passed (the latest success wins), and a job's attempt keeps its key, its
//! `reused_from` and whether it must run anyway — the first two go with a new attempt.

use std::sync::Arc;

use scheduler::{Event, JobStatus};
use server::store::{JobUpdate, ReuseRecord, Store, Transition};

use crate::support::{Db, claimer, enqueue, planned, runner};

store_tests!(records_are_found_by_key_within_their_project_only, an_attempt_keeps_its_key_and_a_new_one_starts_clean);

async fn records_are_found_by_key_within_their_project_only(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("build", &[]), ("test", &[])]).await;
    let (build, test) = (jobs[0], jobs[1]);
    let record = |job_id: i64, attempt: i64, name: &str, artifacts: Option<&str>| ReuseRecord {
        job_id,
        attempt,
        pipeline_id: p,
        job_name: name.into(),
        artifacts: artifacts.map(str::to_owned),
        dotenv: artifacts.map(|_| r#"[["A","1"]]"#.to_owned()),
        coverage: artifacts.map(|_| 87.5),
    };
    assert_eq!(s.reuse_record("k1", "demo").await.unwrap(), None);
    s.record_reuse("k1", "demo", &record(build, 1, "build", Some("sha256:aa")), 10).await.unwrap();
    assert_eq!(s.reuse_record("k1", "demo").await.unwrap(), Some(record(build, 1, "build", Some("sha256:aa"))));
    assert_eq!(s.reuse_record("k1", "other").await.unwrap(), None, "another project never finds it");
    assert_eq!(s.reuse_record("k2", "demo").await.unwrap(), None);
    // The latest success under a key replaces the earlier one.
    s.record_reuse("k1", "demo", &record(test, 2, "test", None), 20).await.unwrap();
    assert_eq!(s.reuse_record("k1", "demo").await.unwrap(), Some(record(test, 2, "test", None)));
    s.forget_reuse("k1").await.unwrap();
    assert_eq!(s.reuse_record("k1", "demo").await.unwrap(), None);
    s.forget_reuse("k1").await.unwrap();
}

async fn an_attempt_keeps_its_key_and_a_new_one_starts_clean(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("build", &[])]).await;
    let build = jobs[0];
    enqueue(&s, p, &[build], 1).await;
    assert!(!s.set_reuse_key(build, 1, "k").await.unwrap(), "only while the attempt runs");
    let r = runner(&s, "r").await;
    s.claim_job(&claimer(r, &[]), "token", 4_000, 9_000).await.unwrap().unwrap();
    assert!(!s.set_reuse_key(build, 2, "k").await.unwrap(), "another attempt");
    assert!(s.set_reuse_key(build, 1, "k").await.unwrap());
    s.set_reused_from(build, 1, r#"{"pipeline":1,"job_id":2,"job":"build"}"#).await.unwrap();
    assert!(s.set_reused_from(build + 100, 1, "{}").await.is_err(), "no such job");
    let row = s.job(build).await.unwrap().unwrap();
    assert_eq!(row.reuse_key.as_deref(), Some("k"));
    assert_eq!(row.reused_from.as_deref(), Some(r#"{"pipeline":1,"job_id":2,"job":"build"}"#));
    assert_eq!(row.run_anyway, None);

    // "Run anyway": the retry queues attempt 2 and marks it, in one transition.
    let version = s.pipeline(p).await.unwrap().unwrap().version;
    let jobs = vec![
        JobUpdate::Status { job_id: build, status: JobStatus::Pending, attempt: 2, at: 5_000 },
        JobUpdate::RunAnyway { job_id: build, attempt: 2 },
    ];
    let t = Transition {
        pipeline_id: p,
        expected_version: version,
        events: vec![Event::Tick { now: 5_000 }],
        jobs,
        pipeline_status: None,
        wake_at: None,
        at: 5_000,
    };
    s.apply(&t).await.unwrap();
    let row = s.job(build).await.unwrap().unwrap();
    assert_eq!((row.attempt, row.status), (2, JobStatus::Pending));
    assert_eq!((row.reuse_key, row.reused_from, row.run_anyway), (None, None, Some(2)));
}
