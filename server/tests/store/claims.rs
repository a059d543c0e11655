//! The queue: claiming jobs by tags, at once from many tasks; tokens, leases, counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use scheduler::{JobStatus, PipelineStatus};
use server::store::{Store, StoreError};

use crate::support::{Db, enqueue, planned, runner, tags};

store_tests!(
    oldest_pending_first,
    tags_must_all_be_on_the_runner,
    concurrent_claims_hand_out_each_job_once,
    claimed_job_and_its_token,
    leases_extend_and_expire,
    queue_depth_and_counts,
);

async fn oldest_pending_first(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("a", &[]), ("b", &[]), ("c", &[])]).await;
    let r = runner(&s, "r").await;
    assert_eq!(s.claim_job(r, &[], "t0", 1, 2).await.unwrap(), None, "created jobs are not queued");
    // Queued in the order c, a: the queue is by job id (plan order), not by queueing time.
    let v = enqueue(&s, p, &[jobs[2]], 1).await;
    assert_eq!(v, 1);
    enqueue(&s, p, &[jobs[0]], 1).await;
    let first = s.claim_job(r, &[], "t1", 10, 20).await.unwrap().unwrap();
    let second = s.claim_job(r, &[], "t2", 11, 21).await.unwrap().unwrap();
    assert_eq!((first.job.id, second.job.id), (jobs[0], jobs[2]));
    assert_eq!(s.claim_job(r, &[], "t3", 12, 22).await.unwrap(), None);
    assert_eq!(s.job(jobs[1]).await.unwrap().unwrap().status, JobStatus::Created);
}

async fn tags_must_all_be_on_the_runner(s: Arc<Db>) {
    let (p, jobs) = planned(
        &s,
        &[("docker-linux", &["docker", "linux"]), ("docker", &["docker"]), ("untagged", &[]), ("arm", &["arm64"]), ("odd", &["a b", "é"])],
    )
    .await;
    enqueue(&s, p, &jobs, 1).await;
    let r = runner(&s, "r").await;
    let claim = |runner_tags: &'static [&'static str]| {
        let s = s.clone();
        async move { s.claim_job(r, &tags(runner_tags), "t", 1, 2).await.unwrap().map(|c| c.job.name) }
    };
    // An untagged runner only takes untagged jobs, skipping older tagged ones.
    assert_eq!(claim(&[]).await.as_deref(), Some("untagged"));
    assert_eq!(claim(&[]).await, None);
    // A job's tags must all be on the runner; the runner may have more.
    assert_eq!(claim(&["linux"]).await, None);
    assert_eq!(claim(&["linux", "docker", "gpu"]).await.as_deref(), Some("docker-linux"));
    assert_eq!(claim(&["linux", "docker", "gpu"]).await.as_deref(), Some("docker"));
    assert_eq!(claim(&["docker", "linux"]).await, None);
    assert_eq!(claim(&["é", "a"]).await, None);
    assert_eq!(claim(&["é", "a b"]).await.as_deref(), Some("odd"));
    assert_eq!(claim(&["ARM64"]).await, None, "tags are case-sensitive");
    assert_eq!(claim(&["arm64"]).await.as_deref(), Some("arm"));
    assert_eq!(s.queue_depth().await.unwrap(), 0);

    // Untagged jobs go to any runner.
    let (q, more) = planned(&s, &[("any", &[])]).await;
    enqueue(&s, q, &more, 1).await;
    assert_eq!(claim(&["docker"]).await.as_deref(), Some("any"));
}

async fn concurrent_claims_hand_out_each_job_once(s: Arc<Db>) {
    const JOBS: usize = 200;
    const CLAIMERS: i64 = 8;
    let names: Vec<String> = (0..JOBS).map(|i| format!("job {i}")).collect();
    let spec: Vec<(&str, &[&str])> =
        names.iter().enumerate().map(|(i, n)| (n.as_str(), if i % 3 == 0 { &["docker"][..] } else { &[][..] })).collect();
    let (p, jobs) = planned(&s, &spec).await;
    enqueue(&s, p, &jobs, 1).await;

    let mut runners = Vec::new();
    for i in 0..CLAIMERS {
        runners.push(runner(&s, &i.to_string()).await);
    }
    let tasks: Vec<_> = runners
        .into_iter()
        .map(|runner| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let runner_tags = tags(&["docker"]);
                while let Some(c) = s.claim_job(runner, &runner_tags, &format!("r{runner}-{}", got.len()), 1, 2).await.unwrap() {
                    assert_eq!(c.job.runner_id, Some(runner));
                    got.push(c.job.id);
                }
                (runner, got)
            })
        })
        .collect();
    let mut claimed: BTreeMap<i64, i64> = BTreeMap::new();
    for t in tasks {
        let (runner, got) = t.await.unwrap();
        for id in got {
            if let Some(other) = claimed.insert(id, runner) {
                panic!("job {id} claimed by runners {other} and {runner}");
            }
        }
    }
    assert_eq!(claimed.keys().copied().collect::<Vec<_>>(), jobs, "every job claimed exactly once");
    // The store agrees on who holds what.
    for row in s.jobs(p).await.unwrap() {
        assert_eq!((row.status.as_str(), row.runner_id), ("running", Some(claimed[&row.id])));
    }
    assert_eq!(s.queue_depth().await.unwrap(), 0);
}

async fn claimed_job_and_its_token(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("a", &["docker"])]).await;
    enqueue(&s, p, &jobs, 1).await;
    let runner = s.register_runner("r", &tags(&["docker"]), "runner-hash", 1).await.unwrap();
    let claimed = s.claim_job(runner.id, &runner.tags, "job-hash", 5_000, 65_000).await.unwrap().unwrap();
    assert_eq!(claimed.lease_expires_at, 65_000);
    let job = &claimed.job;
    assert_eq!((job.id, job.pipeline_id, job.name.as_str(), job.attempt), (jobs[0], p, "a", 1));
    assert_eq!(
        (job.status.as_str(), job.runner_id, job.lease_expires_at, job.started_at),
        ("running", Some(runner.id), Some(65_000), Some(5_000))
    );
    assert_eq!(s.job(job.id).await.unwrap().as_ref(), Some(job));

    // The token reaches this job only, and only with the right hash.
    assert_eq!(s.job_by_token(job.id, "job-hash").await.unwrap().as_ref(), Some(job));
    assert_eq!(s.job_by_token(job.id, "other-hash").await.unwrap(), None);
    assert_eq!(s.job_by_token(job.id, "").await.unwrap(), None);
    assert_eq!(s.job_by_token(job.id + 1, "job-hash").await.unwrap(), None);

    // Artifacts and dotenv are recorded on the job.
    s.set_artifacts(job.id, "sha256:abcd").await.unwrap();
    s.set_dotenv(job.id, r#"[["VERSION","1.2"]]"#).await.unwrap();
    let row = s.job(job.id).await.unwrap().unwrap();
    assert_eq!((row.artifacts.as_deref(), row.dotenv.as_deref()), (Some("sha256:abcd"), Some(r#"[["VERSION","1.2"]]"#)));
    assert!(matches!(s.set_artifacts(job.id + 1000, "sha256:00").await, Err(StoreError::NotFound { what: "job", .. })));
    // What lets a runner skip an upload: the project (`demo`) has it; other projects never match.
    assert!(s.project_has_artifacts("demo", "sha256:abcd").await.unwrap());
    assert!(!s.project_has_artifacts("demo", "sha256:abce").await.unwrap());
    assert!(!s.project_has_artifacts("other", "sha256:abcd").await.unwrap());
    assert!(matches!(s.set_dotenv(job.id + 1000, "[]").await, Err(StoreError::NotFound { what: "job", .. })));
}

async fn leases_extend_and_expire(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("a", &[]), ("b", &[]), ("c", &[])]).await;
    enqueue(&s, p, &jobs, 1).await;
    let r = runner(&s, "r").await;
    let a = s.claim_job(r, &[], "ta", 1_000, 10_000).await.unwrap().unwrap().job.id;
    let b = s.claim_job(r, &[], "tb", 1_000, 20_000).await.unwrap().unwrap().job.id;
    let ids = |rows: Vec<server::store::JobRow>| rows.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(ids(s.expired_leases(10_000).await.unwrap()), [] as [i64; 0], "a lease ending now has not expired");
    assert_eq!(ids(s.expired_leases(10_001).await.unwrap()), [a]);
    assert_eq!(ids(s.expired_leases(30_000).await.unwrap()), [a, b]);

    assert!(!s.extend_lease(a, 40_000).await.unwrap());
    assert_eq!(s.job(a).await.unwrap().unwrap().lease_expires_at, Some(40_000));
    assert_eq!(ids(s.expired_leases(30_000).await.unwrap()), [b]);
    // Pending (c) and unknown jobs have no lease to extend.
    assert!(matches!(s.extend_lease(jobs[2], 40_000).await, Err(StoreError::NotFound { what: "running job", .. })));
    assert!(matches!(s.extend_lease(a + 1000, 40_000).await, Err(StoreError::NotFound { .. })));
    assert_eq!(s.job(jobs[2]).await.unwrap().unwrap().lease_expires_at, None);
}

async fn queue_depth_and_counts(s: Arc<Db>) {
    let counts = s.counts().await.unwrap();
    assert_eq!((counts.jobs_by_status, counts.pipelines_by_status, counts.runners), (vec![], vec![], 0));
    assert_eq!(s.queue_depth().await.unwrap(), 0);

    let (p, jobs) = planned(&s, &[("a", &[]), ("b", &[]), ("c", &[]), ("d", &[])]).await;
    crate::support::recorded(&s, "unplanned").await;
    let r = runner(&s, "r").await;
    enqueue(&s, p, &jobs[..3], 1).await;
    assert_eq!(s.queue_depth().await.unwrap(), 3);
    s.claim_job(r, &[], "t", 1, 2).await.unwrap().unwrap();
    assert_eq!(s.queue_depth().await.unwrap(), 2);
    let counts = s.counts().await.unwrap();
    assert_eq!(counts.jobs_by_status, [(JobStatus::Created, 1), (JobStatus::Pending, 2), (JobStatus::Running, 1)]);
    assert_eq!(counts.pipelines_by_status, [(PipelineStatus::Created, 1), (PipelineStatus::Pending, 1)]);
    assert_eq!(counts.runners, 1);
}
