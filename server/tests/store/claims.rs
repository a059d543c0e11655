//! The queue: claiming jobs by tags, at once from many tasks; tokens, leases, counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use scheduler::{JobStatus, PipelineStatus};
use server::store::{Store, StoreError};

use crate::support::{Db, claimer, enqueue, new_job, new_pipeline, planned, runner, tags};

store_tests!(
    oldest_pending_first,
    tags_must_all_be_on_the_runner,
    concurrent_claims_hand_out_each_job_once,
    claimed_job_and_its_token,
    leases_extend_and_expire,
    queue_depth_and_counts,
    runner_scopes_limit_what_a_runner_gets,
    access_tokens_and_sessions,
);

async fn oldest_pending_first(s: Arc<Db>) {
    let (p, jobs) = planned(&s, &[("a", &[]), ("b", &[]), ("c", &[])]).await;
    let r = runner(&s, "r").await;
    assert_eq!(s.claim_job(&claimer(r, &[]), "t0", 1, 2).await.unwrap(), None, "created jobs are not queued");
    // Queued in the order c, a: the queue is by job id (plan order), not by queueing time.
    let v = enqueue(&s, p, &[jobs[2]], 1).await;
    assert_eq!(v, 1);
    enqueue(&s, p, &[jobs[0]], 1).await;
    let first = s.claim_job(&claimer(r, &[]), "t1", 10, 20).await.unwrap().unwrap();
    let second = s.claim_job(&claimer(r, &[]), "t2", 11, 21).await.unwrap().unwrap();
    assert_eq!((first.job.id, second.job.id), (jobs[0], jobs[2]));
    assert_eq!(s.claim_job(&claimer(r, &[]), "t3", 12, 22).await.unwrap(), None);
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
        async move { s.claim_job(&claimer(r, &tags(runner_tags)), "t", 1, 2).await.unwrap().map(|c| c.job.name) }
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

    // Untagged jobs go to any runner that takes untagged jobs (`claimer` does).
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
                while let Some(c) = s.claim_job(&claimer(runner, &runner_tags), &format!("r{runner}-{}", got.len()), 1, 2).await.unwrap() {
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
    let runner = s.register_runner("r", &tags(&["docker"]), &Default::default(), "runner-hash", 1).await.unwrap();
    let claimed = s.claim_job(&runner, "job-hash", 5_000, 65_000).await.unwrap().unwrap();
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
    let a = s.claim_job(&claimer(r, &[]), "ta", 1_000, 10_000).await.unwrap().unwrap().job.id;
    let b = s.claim_job(&claimer(r, &[]), "tb", 1_000, 20_000).await.unwrap().unwrap().job.id;
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
    s.claim_job(&claimer(r, &[]), "t", 1, 2).await.unwrap().unwrap();
    assert_eq!(s.queue_depth().await.unwrap(), 2);
    let counts = s.counts().await.unwrap();
    assert_eq!(counts.jobs_by_status, [(JobStatus::Created, 1), (JobStatus::Pending, 2), (JobStatus::Running, 1)]);
    assert_eq!(counts.pipelines_by_status, [(PipelineStatus::Created, 1), (PipelineStatus::Pending, 1)]);
    assert_eq!(counts.runners, 1);
}

/// A pipeline of `project` (protected ref or not) with one job of these tags, queued.
async fn queued_job(s: &Db, project: &str, protected: bool, name: &str, job_tags: &[&str]) -> i64 {
    let mut p = new_pipeline(project, 1_000);
    p.trigger = format!(r#"{{"branch":"main","ref_protected":{protected}}}"#);
    let server::store::Recorded::Created(id) = s.record_pipeline(&crate::support::random_name(), &p).await.unwrap() else { panic!() };
    let jobs = s.save_plan(id, &[new_job(name, job_tags)], PipelineStatus::Pending, 2_000).await.unwrap();
    enqueue(s, id, &jobs, 1).await;
    jobs[0]
}

async fn runner_scopes_limit_what_a_runner_gets(s: Arc<Db>) {
    use server::store::RunnerScope;
    let register = |name: &'static str, t: &'static [&'static str], scope: RunnerScope| {
        let s = s.clone();
        async move { s.register_runner(name, &tags(t), &scope, &format!("hash-{name}"), 1).await.unwrap() }
    };
    let tagged = register("tagged", &["docker"], RunnerScope::default()).await;
    let untagged_too = register("untagged-too", &["docker"], RunnerScope { run_untagged: true, ..Default::default() }).await;
    let protected = register("protected", &[], RunnerScope { protected_only: true, ..Default::default() }).await;
    let web_only = register("web-only", &[], RunnerScope { projects: Some(tags(&["web"])), ..Default::default() }).await;
    // The scope survives the round trip through the store.
    let again = s.runner_by_token("hash-web-only", 2).await.unwrap().unwrap();
    assert_eq!(again.scope, web_only.scope);
    assert!(s.runner_by_token("hash-untagged-too", 2).await.unwrap().unwrap().scope.run_untagged);

    let plain = queued_job(&s, "app", false, "plain", &[]).await;
    // A tagged runner does not take an untagged job unless it runs untagged ones.
    assert_eq!(s.claim_job(&tagged, "t1", 1, 2).await.unwrap(), None);
    // A protected runner skips unprotected refs; a project runner other projects.
    assert_eq!(s.claim_job(&protected, "t2", 1, 2).await.unwrap(), None);
    assert_eq!(s.claim_job(&web_only, "t3", 1, 2).await.unwrap(), None);
    assert_eq!(s.claim_job(&untagged_too, "t4", 1, 2).await.unwrap().map(|c| c.job.id), Some(plain));

    let release = queued_job(&s, "app", true, "release", &[]).await;
    let web = queued_job(&s, "web", false, "web", &[]).await;
    let docker = queued_job(&s, "app", false, "docker", &["docker"]).await;
    assert_eq!(s.claim_job(&web_only, "t5", 1, 2).await.unwrap().map(|c| c.job.id), Some(web));
    assert_eq!(s.claim_job(&protected, "t6", 1, 2).await.unwrap().map(|c| c.job.id), Some(release));
    assert_eq!(s.claim_job(&protected, "t7", 1, 2).await.unwrap(), None, "the docker job needs a tag the runner lacks");
    assert_eq!(s.claim_job(&tagged, "t8", 1, 2).await.unwrap().map(|c| c.job.id), Some(docker));
    assert_eq!(s.queue_depth().await.unwrap(), 0);
}

async fn access_tokens_and_sessions(s: Arc<Db>) {
    let forever = s.create_access_token("alice", "ci", "hash-a", 1_000, None).await.unwrap();
    let short = s.create_access_token("bob", "", "hash-b", 1_000, Some(5_000)).await.unwrap();
    assert_eq!(s.access_token("hash-a", 10_000).await.unwrap().map(|t| t.user), Some("alice".into()));
    assert_eq!(s.access_token("hash-b", 4_999).await.unwrap().map(|t| t.id), Some(short.id));
    assert_eq!(s.access_token("hash-b", 5_000).await.unwrap(), None, "expired");
    assert_eq!(s.access_token("nope", 1).await.unwrap(), None);
    assert!(s.revoke_access_token(forever.id, 11_000).await.unwrap());
    assert!(!s.revoke_access_token(forever.id, 12_000).await.unwrap(), "already revoked");
    assert_eq!(s.access_token("hash-a", 11_001).await.unwrap(), None, "revoked");
    let all = s.access_tokens(None).await.unwrap();
    assert_eq!(all.iter().map(|t| (t.user.as_str(), t.revoked_at)).collect::<Vec<_>>(), [("alice", Some(11_000)), ("bob", None)]);
    assert_eq!(s.access_tokens(Some("bob")).await.unwrap().len(), 1);

    let session = server::store::Session { user: "carol".into(), groups: tags(&["/app-devs", "/x y"]), created_at: 100, expires_at: 1_000 };
    s.create_session("sess-1", &session).await.unwrap();
    assert_eq!(s.session("sess-1", 999).await.unwrap(), Some(session.clone()));
    assert_eq!(s.session("sess-1", 1_000).await.unwrap(), None, "expired");
    // A new login forgets expired sessions.
    let later = server::store::Session { created_at: 2_000, expires_at: 3_000, ..session };
    s.create_session("sess-2", &later).await.unwrap();
    assert_eq!(s.session("sess-1", 0).await.unwrap(), None, "deleted");
    s.delete_session("sess-2").await.unwrap();
    assert_eq!(s.session("sess-2", 2_500).await.unwrap(), None, "logged out");
}
