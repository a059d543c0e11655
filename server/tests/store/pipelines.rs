//! Recording pipelines from deliveries, listing them, planning them.

use std::sync::Arc;

use scheduler::PipelineStatus;
use server::store::{Approval, NewPipeline, PipelineRow, Recorded, Store, StoreError, Transition, Upstream};

use crate::support::{Db, new_job, new_pipeline, recorded, tags};

store_tests!(
    record_and_read,
    iids_count_per_project_without_gaps_or_twins,
    deliveries_are_deduplicated,
    concurrent_deliveries_create_one_pipeline,
    list_newest_first,
    list_by_status,
    plan_keeps_job_order,
    plan_once,
    approval_once,
    fail_unplanned,
    missing_pipeline,
    downstream_pipelines_keep_their_upstream,
);

async fn record_and_read(s: Arc<Db>) {
    let new = new_pipeline("web", 1_234);
    let Recorded::Created(id) = s.record_pipeline("d-1", &new).await.unwrap() else { panic!("not created") };
    let row = s.pipeline(id).await.unwrap().expect("stored");
    let expected = PipelineRow {
        id,
        project: new.project.clone(),
        git_ref: new.git_ref.clone(),
        sha: new.sha.clone(),
        before_sha: new.before_sha.clone(),
        source: new.source.clone(),
        trigger: new.trigger.clone(),
        status: PipelineStatus::Created,
        error: None,
        version: 0,
        created_at: 1_234,
        updated_at: 1_234,
        iid: Some(1),
        approval: None,
        upstream: None,
    };
    assert_eq!(row, expected);

    let tag = server::store::NewPipeline { before_sha: None, git_ref: "refs/tags/v1".into(), ..new };
    let Recorded::Created(id) = s.record_pipeline("d-2", &tag).await.unwrap() else { panic!("not created") };
    assert_eq!(s.pipeline(id).await.unwrap().unwrap().before_sha, None);
    assert_eq!(s.pipeline(id + 1000).await.unwrap(), None);
}

/// GitLab's `CI_PIPELINE_IID`: each project numbers its pipelines 1, 2, 3…, allocated in the
/// transaction that records the pipeline, so concurrent deliveries never share a number and a
/// replayed delivery takes none.
async fn iids_count_per_project_without_gaps_or_twins(s: Arc<Db>) {
    let mut tasks = Vec::new();
    for n in 0..24 {
        let s = s.clone();
        let project = if n % 3 == 0 { "api" } else { "web" };
        tasks.push(tokio::spawn(async move {
            let Recorded::Created(id) = s.record_pipeline(&format!("iid-{n}"), &new_pipeline(project, n)).await.unwrap() else {
                panic!("created")
            };
            (project, s.pipeline(id).await.unwrap().unwrap().iid.expect("an iid"))
        }));
    }
    let mut web = Vec::new();
    let mut api = Vec::new();
    for t in tasks {
        let (project, iid) = t.await.unwrap();
        if project == "web" { web.push(iid) } else { api.push(iid) }
    }
    web.sort();
    api.sort();
    assert_eq!(web, (1..=16).collect::<Vec<i64>>());
    assert_eq!(api, (1..=8).collect::<Vec<i64>>());
    assert!(matches!(s.record_pipeline("iid-0", &new_pipeline("api", 99)).await.unwrap(), Recorded::Duplicate(_)));
    let Recorded::Created(id) = s.record_pipeline("iid-next", &new_pipeline("api", 100)).await.unwrap() else { panic!() };
    assert_eq!(s.pipeline(id).await.unwrap().unwrap().iid, Some(9), "a replayed delivery took no number");
}

async fn deliveries_are_deduplicated(s: Arc<Db>) {
    let first = s.record_pipeline("delivery-1", &new_pipeline("web", 1)).await.unwrap();
    let Recorded::Created(first) = first else { panic!("{first:?}") };
    // The same delivery again, even with another body: nothing new.
    assert_eq!(s.record_pipeline("delivery-1", &new_pipeline("web", 2)).await.unwrap(), Recorded::Duplicate(first));
    assert_eq!(s.record_pipeline("delivery-1", &new_pipeline("web", 3)).await.unwrap(), Recorded::Duplicate(first));
    // The same id from another project's forge is another delivery.
    let other = s.record_pipeline("delivery-1", &new_pipeline("api", 4)).await.unwrap();
    let Recorded::Created(other) = other else { panic!("{other:?}") };
    assert_ne!(other, first);
    assert_eq!(s.record_pipeline("delivery-2", &new_pipeline("web", 5)).await.unwrap(), Recorded::Created(other + 1));
    assert_eq!(s.pipelines(None, 100).await.unwrap().len(), 3);
}

async fn concurrent_deliveries_create_one_pipeline(s: Arc<Db>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.record_pipeline("replayed", &new_pipeline("web", i)).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let created: Vec<i64> = outcomes.iter().filter_map(|o| if let Recorded::Created(id) = o { Some(*id) } else { None }).collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Recorded::Created(id) | Recorded::Duplicate(id) if *id == created[0])), "{outcomes:?}");
    let all = s.pipelines(Some("web"), 100).await.unwrap();
    assert_eq!(all.iter().map(|p| p.id).collect::<Vec<_>>(), created);
}

async fn list_newest_first(s: Arc<Db>) {
    let mut web = Vec::new();
    for i in 0..5 {
        let project = if i % 2 == 0 { "web" } else { "api" };
        let Recorded::Created(id) = s.record_pipeline(&format!("d{i}"), &new_pipeline(project, i)).await.unwrap() else { panic!() };
        if project == "web" {
            web.push(id);
        }
    }
    let ids = |rows: Vec<PipelineRow>| rows.into_iter().map(|p| p.id).collect::<Vec<_>>();
    web.reverse();
    assert_eq!(ids(s.pipelines(Some("web"), 10).await.unwrap()), web);
    assert_eq!(ids(s.pipelines(Some("web"), 2).await.unwrap()), web[..2]);
    assert_eq!(s.pipelines(None, 10).await.unwrap().len(), 5);
    assert_eq!(s.pipelines(None, 0).await.unwrap(), []);
    assert_eq!(s.pipelines(None, -1).await.unwrap(), []);
    assert_eq!(s.pipelines(Some("nope"), 10).await.unwrap(), []);
}

async fn list_by_status(s: Arc<Db>) {
    let a = recorded(&s, "a").await;
    let b = recorded(&s, "b").await;
    let c = recorded(&s, "c").await;
    s.save_plan(b, &[new_job("x", &[])], PipelineStatus::Running, 5).await.unwrap();
    s.fail_pipeline(c, "bad yaml", 6).await.unwrap();
    let ids = |rows: Vec<PipelineRow>| rows.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(s.pipelines_with_status(&[PipelineStatus::Created]).await.unwrap()), [a]);
    assert_eq!(ids(s.pipelines_with_status(&[PipelineStatus::Created, PipelineStatus::Running]).await.unwrap()), [a, b]);
    assert_eq!(
        ids(s.pipelines_with_status(&[PipelineStatus::Failed, PipelineStatus::Running, PipelineStatus::Created]).await.unwrap()),
        [a, b, c]
    );
    assert_eq!(ids(s.pipelines_with_status(&[]).await.unwrap()), [] as [i64; 0]);
}

async fn plan_keeps_job_order(s: Arc<Db>) {
    let p = recorded(&s, "d").await;
    let jobs = [new_job("build", &[]), new_job("test 1/2", &["docker"]), new_job("test 2/2", &["docker", "linux"]), new_job("deploy", &[])];
    let ids = s.save_plan(p, &jobs, PipelineStatus::Pending, 7_000).await.unwrap();
    assert_eq!(ids.len(), 4);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let row = s.pipeline(p).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.updated_at, row.version), ("pending", 7_000, 0));

    let rows = s.jobs(p).await.unwrap();
    assert_eq!(rows.iter().map(|j| j.id).collect::<Vec<_>>(), ids);
    for (row, job) in rows.iter().zip(&jobs) {
        assert_eq!(
            (&row.name, &row.stage, row.stage_index, &row.tags, &row.spec),
            (&job.name, &job.stage, job.stage_index, &job.tags, &job.spec)
        );
        assert_eq!((row.pipeline_id, row.status.as_str(), row.attempt), (p, "created", 1));
        assert_eq!((row.runner_id, row.lease_expires_at, row.cancel_requested), (None, None, false));
        assert_eq!((row.started_at, row.finished_at, row.exit_code), (None, None, None));
        assert_eq!((&row.failure_reason, &row.artifacts, &row.dotenv), (&None, &None, &None));
        assert_eq!(s.job(row.id).await.unwrap().as_ref(), Some(row));
    }
    assert_eq!(rows[2].tags, tags(&["docker", "linux"]));
    assert_eq!(s.jobs(p + 1000).await.unwrap(), []);
    assert_eq!(s.job(ids[3] + 1000).await.unwrap(), None);
}

async fn plan_once(s: Arc<Db>) {
    let p = recorded(&s, "d").await;
    s.save_plan(p, &[new_job("a", &[])], PipelineStatus::Pending, 1).await.unwrap();
    // A second planner (another server after a restart) finds it planned.
    let again = s.save_plan(p, &[new_job("a", &[])], PipelineStatus::Pending, 2).await;
    assert!(matches!(again, Err(StoreError::Conflict { pipeline, .. }) if pipeline == p), "{again:?}");
    let failed = s.fail_pipeline(p, "too late", 3).await;
    assert!(matches!(failed, Err(StoreError::Conflict { .. })), "{failed:?}");
    assert_eq!(s.jobs(p).await.unwrap().len(), 1);
    let row = s.pipeline(p).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.error), ("pending", None));

    // Planned to nothing: skipped, and still planned once.
    let q = recorded(&s, "e").await;
    assert_eq!(s.save_plan(q, &[], PipelineStatus::Skipped, 4).await.unwrap(), Vec::<i64>::new());
    assert!(matches!(s.save_plan(q, &[], PipelineStatus::Skipped, 5).await, Err(StoreError::Conflict { .. })));
    assert_eq!(s.pipeline(q).await.unwrap().unwrap().status, PipelineStatus::Skipped);
}

/// A fork's pipeline under `fork_pipelines = "approval"`: approved once, by one maintainer,
/// only while it waits (planned, not started, not canceled).
async fn approval_once(s: Arc<Db>) {
    let fork = NewPipeline { needs_approval: true, ..new_pipeline("demo", 1_000) };
    let Recorded::Created(p) = s.record_pipeline("fork-1", &fork).await.unwrap() else { panic!("not created") };
    assert_eq!(s.pipeline(p).await.unwrap().unwrap().approval, Some(Approval { by: None, at: None }));
    assert!(!s.approve_pipeline(p, "alice", 2).await.unwrap(), "not before it is planned");
    s.save_plan(p, &[new_job("a", &[])], PipelineStatus::Manual, 3).await.unwrap();
    assert!(s.pipeline(p).await.unwrap().unwrap().awaiting_approval());
    assert!(s.approve_pipeline(p, "alice", 4).await.unwrap());
    assert!(!s.approve_pipeline(p, "bob", 5).await.unwrap(), "approved once");
    let row = s.pipeline(p).await.unwrap().unwrap();
    assert_eq!(row.approval, Some(Approval { by: Some("alice".into()), at: Some(4) }));
    assert!(!row.awaiting_approval());

    // A pipeline that needs no approval, and one canceled while it waited.
    let plain = recorded(&s, "plain").await;
    s.save_plan(plain, &[new_job("a", &[])], PipelineStatus::Manual, 3).await.unwrap();
    assert!(!s.approve_pipeline(plain, "alice", 4).await.unwrap());
    assert_eq!(s.pipeline(plain).await.unwrap().unwrap().approval, None);
    let Recorded::Created(c) = s.record_pipeline("fork-2", &fork).await.unwrap() else { panic!("not created") };
    s.save_plan(c, &[new_job("a", &[])], PipelineStatus::Manual, 3).await.unwrap();
    let cancel = Transition {
        pipeline_id: c,
        expected_version: 0,
        events: vec![scheduler::Event::Cancel { now: 6 }],
        jobs: Vec::new(),
        pipeline_status: Some(PipelineStatus::Canceled),
        wake_at: None,
        at: 6,
    };
    s.apply(&cancel).await.unwrap();
    assert!(!s.approve_pipeline(c, "alice", 7).await.unwrap(), "canceled first");
}

async fn fail_unplanned(s: Arc<Db>) {
    let p = recorded(&s, "d").await;
    s.fail_pipeline(p, ".gitlab-ci.yml:3:5: unknown key `scirpt`", 9_000).await.unwrap();
    let row = s.pipeline(p).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.error.as_deref(), row.updated_at),
        ("failed", Some(".gitlab-ci.yml:3:5: unknown key `scirpt`"), 9_000)
    );
    assert!(matches!(s.save_plan(p, &[new_job("a", &[])], PipelineStatus::Pending, 1).await, Err(StoreError::Conflict { .. })));
    assert_eq!(s.jobs(p).await.unwrap(), []);
}

async fn missing_pipeline(s: Arc<Db>) {
    let r = s.save_plan(42, &[new_job("a", &[])], PipelineStatus::Pending, 1).await;
    assert!(matches!(r, Err(StoreError::NotFound { what: "pipeline", id: 42 })), "{r:?}");
    let r = s.fail_pipeline(42, "x", 1).await;
    assert!(matches!(r, Err(StoreError::NotFound { what: "pipeline", id: 42 })), "{r:?}");
    assert_eq!(s.events(42).await.unwrap(), []);
}

/// Migration 0013: a pipeline created by a trigger job keeps its upstream pipeline and job
/// (GitLab's `ci_sources_pipelines`); the upstream lists its downstream pipelines in order;
/// the bridge's delivery id makes a repeated creation return the first one.
async fn downstream_pipelines_keep_their_upstream(s: Arc<Db>) {
    let parent = recorded(&s, "parent").await;
    s.save_plan(parent, &[new_job("bridge", &[]), new_job("other", &[])], PipelineStatus::Pending, 2).await.unwrap();
    let jobs = s.jobs(parent).await.unwrap();
    let child = |job: i64| NewPipeline {
        source: "parent_pipeline".into(),
        upstream: Some(Upstream { pipeline_id: parent, job_id: job }),
        ..new_pipeline("web", 3)
    };
    let Recorded::Created(a) = s.record_pipeline(&format!("bridge-{}-1", jobs[0].id), &child(jobs[0].id)).await.unwrap() else {
        panic!("not created")
    };
    let Recorded::Created(b) = s.record_pipeline(&format!("bridge-{}-1", jobs[1].id), &child(jobs[1].id)).await.unwrap() else {
        panic!("not created")
    };
    assert_eq!(s.record_pipeline(&format!("bridge-{}-1", jobs[0].id), &child(jobs[0].id)).await.unwrap(), Recorded::Duplicate(a));
    let row = s.pipeline(a).await.unwrap().unwrap();
    assert_eq!(row.upstream, Some(Upstream { pipeline_id: parent, job_id: jobs[0].id }));
    assert_eq!(s.pipeline(parent).await.unwrap().unwrap().upstream, None);
    let down: Vec<i64> = s.downstream_pipelines(parent).await.unwrap().iter().map(|p| p.id).collect();
    assert_eq!(down, [a, b]);
    assert!(s.downstream_pipelines(a).await.unwrap().is_empty());
}
