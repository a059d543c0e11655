//! The whole store side of dispatching jobs, from several tasks at once, as the server does
//! it: claim, check the token, heartbeat, record start and end (each pipeline's version kept in
//! memory under a lock, as the server's engine cache does). Prints the rate; `benches/store.rs`
//! measures each step.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use scheduler::{Event, JobStatus, Outcome};
use server::store::{JobUpdate, Store, Transition};
use tokio::sync::Mutex;

use crate::support::{Db, claimer, enqueue, planned, runner};

store_tests!(dispatch_many_jobs);

const PIPELINES: usize = 25;
const JOBS_PER_PIPELINE: usize = 20;
const WORKERS: usize = 4;

async fn dispatch_many_jobs(s: Arc<Db>) {
    let names: Vec<String> = (0..JOBS_PER_PIPELINE).map(|i| format!("job-{i}")).collect();
    let spec: Vec<(&str, &[&str])> = names.iter().map(|n| (n.as_str(), &[][..])).collect();
    let mut versions = HashMap::new();
    for _ in 0..PIPELINES {
        let (p, jobs) = planned(&s, &spec).await;
        versions.insert(p, Mutex::new(enqueue(&s, p, &jobs, 1).await));
    }
    let versions = Arc::new(versions);
    let mut runners = Vec::new();
    for i in 0..WORKERS {
        runners.push(runner(&s, &i.to_string()).await);
    }

    let start = Instant::now();
    let workers: Vec<_> = runners
        .into_iter()
        .map(|runner| {
            let (s, versions) = (s.clone(), versions.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                for n in 0.. {
                    let token = format!("{runner}-{n}");
                    let Some(claimed) = s.claim_job(&claimer(runner, &[]), &token, n, n + 60_000).await.unwrap() else { break };
                    let job = claimed.job;
                    assert_eq!(s.job_by_token(job.id, &token).await.unwrap().map(|j| j.id), Some(job.id));
                    assert!(!s.extend_lease(job.id, n + 120_000).await.unwrap());
                    let record = async |event: Event, jobs: Vec<JobUpdate>| {
                        let mut version = versions[&job.pipeline_id].lock().await;
                        let t = Transition {
                            pipeline_id: job.pipeline_id,
                            expected_version: *version,
                            events: vec![event],
                            jobs,
                            pipeline_status: None,
                            wake_at: None,
                            at: n,
                        };
                        *version = s.apply(&t).await.unwrap();
                    };
                    let started = Event::JobStarted { job: job.name.clone(), attempt: 1, now: 1 };
                    record(started, vec![JobUpdate::Status { job_id: job.id, status: JobStatus::Running, attempt: 1, at: n }]).await;
                    let finished = Event::JobFinished { job: job.name.clone(), attempt: 1, outcome: Outcome::Success, now: 2 };
                    let updates = vec![
                        JobUpdate::Result { job_id: job.id, exit_code: Some(0), failure_reason: None, at: n },
                        JobUpdate::Status { job_id: job.id, status: JobStatus::Success, attempt: 1, at: n },
                    ];
                    record(finished, updates).await;
                    done.push(job.id);
                }
                done
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for w in workers {
        for id in w.await.unwrap() {
            assert!(seen.insert(id), "job {id} dispatched twice");
        }
    }
    let elapsed = start.elapsed();
    let total = PIPELINES * JOBS_PER_PIPELINE;
    assert_eq!(seen.len(), total);
    let counts = s.counts().await.unwrap();
    assert_eq!(counts.jobs_by_status, [(JobStatus::Success, total as i64)]);
    for (p, version) in versions.iter() {
        assert_eq!(s.events(*p).await.unwrap().len() as i64, *version.lock().await);
    }
    eprintln!(
        "{:?}: {total} jobs dispatched by {WORKERS} tasks in {elapsed:?}: {:.0} jobs/s (claim, token, lease, 2 transitions each)",
        s.kind,
        total as f64 / elapsed.as_secs_f64()
    );
}
