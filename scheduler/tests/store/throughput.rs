//! The whole store side of dispatching jobs, from several tasks at once, as the server does
//! it: claim, check the token, heartbeat, record start and end (retrying on `Conflict`).
//! Prints the rate; `benches/store.rs` measures one task precisely.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use scheduler::store::{JobUpdate, Store, StoreError, Transition};
use scheduler::{Event, JobStatus, Outcome};

use crate::support::{Db, enqueue, planned, runner};

store_tests!(dispatch_many_jobs);

const PIPELINES: usize = 25;
const JOBS_PER_PIPELINE: usize = 20;
const WORKERS: i64 = 4;
static CONFLICTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn dispatch_many_jobs(s: Arc<Db>) {
    let names: Vec<String> = (0..JOBS_PER_PIPELINE).map(|i| format!("job-{i}")).collect();
    let spec: Vec<(&str, &[&str])> = names.iter().map(|n| (n.as_str(), &[][..])).collect();
    for _ in 0..PIPELINES {
        let (p, jobs) = planned(&s, &spec).await;
        enqueue(&s, p, &jobs, 1).await;
    }

    let mut runners = Vec::new();
    for i in 0..WORKERS {
        runners.push(runner(&s, &i.to_string()).await);
    }
    let start = Instant::now();
    let workers: Vec<_> = runners
        .into_iter()
        .map(|runner| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                let mut n = 0;
                loop {
                    n += 1;
                    let token = format!("{runner}-{n}");
                    let Some(claimed) = s.claim_job(runner, &[], &token, n, n + 60_000).await.unwrap() else { break };
                    let job = claimed.job;
                    assert_eq!(s.job_by_token(job.id, &token).await.unwrap().map(|j| j.id), Some(job.id));
                    assert!(!s.extend_lease(job.id, n + 120_000).await.unwrap());
                    let started = Event::JobStarted { job: job.name.clone(), attempt: 1, now: 1 };
                    record(
                        &s,
                        job.pipeline_id,
                        started,
                        vec![JobUpdate::Status { job_id: job.id, status: JobStatus::Running, attempt: 1, at: n }],
                    )
                    .await;
                    let finished = Event::JobFinished { job: job.name.clone(), attempt: 1, outcome: Outcome::Success, now: 2 };
                    let updates = vec![
                        JobUpdate::Result { job_id: job.id, exit_code: Some(0), failure_reason: None, at: n },
                        JobUpdate::Status { job_id: job.id, status: JobStatus::Success, attempt: 1, at: n },
                    ];
                    record(&s, job.pipeline_id, finished, updates).await;
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
    assert_eq!(counts.jobs_by_status, [("success".to_string(), total as i64)]);
    eprintln!(
        "{:?}: {total} jobs dispatched by {WORKERS} tasks in {elapsed:?}: {:.0} jobs/s (claim, token, lease, 2 transitions each)",
        s.kind,
        total as f64 / elapsed.as_secs_f64()
    );
    eprintln!("conflicts {}", CONFLICTS.load(std::sync::atomic::Ordering::Relaxed));
}

/// Appends one event with its job updates, retrying on `Conflict` the way the server does.
async fn record(s: &Db, pipeline_id: i64, event: Event, jobs: Vec<JobUpdate>) {
    loop {
        let version = s.pipeline(pipeline_id).await.unwrap().unwrap().version;
        let t = Transition {
            pipeline_id,
            expected_version: version,
            events: vec![event.clone()],
            jobs: jobs.clone(),
            pipeline_status: None,
            at: 0,
        };
        match s.apply(&t).await {
            Ok(_) => return,
            Err(StoreError::Conflict { .. }) => {
                CONFLICTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            Err(e) => panic!("{e}"),
        }
    }
}
