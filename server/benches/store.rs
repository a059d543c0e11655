//! The store's cost per dispatched job on SQLite, the embedded default: what the server does
//! for each trivial job besides HTTP (claim it, check the job token, extend the lease, record
//! its start and its end), and each of those steps alone. The server's target is 500 trivial
//! jobs/s through HTTP on a 2-core machine, so the whole store side must stay well under 2 ms.

use std::collections::HashMap;

use scheduler::{Event, JobStatus, Outcome, PipelineStatus};
use server::store::{JobUpdate, NewJob, NewPipeline, Recorded, SqliteStore, Store, Transition};

fn main() {
    divan::main();
}

const JOBS_PER_PIPELINE: usize = 50;

/// A store with pending jobs, tracking each pipeline's version like the server's engine cache.
struct Queue {
    rt: tokio::runtime::Runtime,
    store: SqliteStore,
    runner: server::store::Runner,
    versions: HashMap<i64, i64>,
    claimed: u64,
    _dir: tempfile::TempDir,
}

impl Queue {
    fn new(pipelines: usize) -> Queue {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = rt.block_on(SqliteStore::open(&dir.path().join("piste.db"))).unwrap();
        let runner = rt.block_on(store.register_runner("bench", &[], &Default::default(), "runner-hash", 0)).unwrap();
        let mut queue = Queue { rt, store, runner, versions: HashMap::new(), claimed: 0, _dir: dir };
        queue.fill(pipelines);
        queue
    }

    fn fill(&mut self, pipelines: usize) {
        let jobs: Vec<NewJob> = (0..JOBS_PER_PIPELINE)
            .map(|i| NewJob {
                name: format!("job {i}"),
                stage: "test".into(),
                stage_index: 0,
                tags: vec![],
                spec: "{}".into(),
                resource_group: None,
            })
            .collect();
        self.rt.block_on(async {
            for _ in 0..pipelines {
                let new = NewPipeline {
                    project: "bench".into(),
                    git_ref: "refs/heads/main".into(),
                    sha: "0".repeat(40),
                    before_sha: None,
                    source: "push".into(),
                    trigger: "{}".into(),
                    created_at: 0,
                    needs_approval: false,
                    upstream: None,
                };
                let Recorded::Created(p) = self.store.record_pipeline(&format!("d{}", self.versions.len()), &new).await.unwrap() else {
                    unreachable!()
                };
                let ids = self.store.save_plan(p, &jobs, PipelineStatus::Pending, 0).await.unwrap();
                let queued =
                    ids.iter().map(|&job_id| JobUpdate::Status { job_id, status: JobStatus::Pending, attempt: 1, at: 0 }).collect();
                let start = Transition {
                    pipeline_id: p,
                    expected_version: 0,
                    events: vec![Event::Start { now: 0 }],
                    jobs: queued,
                    pipeline_status: None,
                    wake_at: None,
                    at: 0,
                };
                self.versions.insert(p, self.store.apply(&start).await.unwrap());
            }
        });
    }

    /// Claims the next job (refilling the queue when empty).
    fn claim(&mut self) -> server::store::JobRow {
        self.claimed += 1;
        let token = format!("job-{}", self.claimed);
        loop {
            if let Some(c) = self.rt.block_on(self.store.claim_job(&self.runner, &token, 1, 60_000)).unwrap() {
                return c.job;
            }
            self.fill(20);
        }
    }

    fn record(&mut self, pipeline_id: i64, event: Event, jobs: Vec<JobUpdate>) {
        let version = self.versions[&pipeline_id];
        let t =
            Transition { pipeline_id, expected_version: version, events: vec![event], jobs, pipeline_status: None, wake_at: None, at: 2 };
        self.versions.insert(pipeline_id, self.rt.block_on(self.store.apply(&t)).unwrap());
    }
}

/// Everything the store does for one trivial job. Jobs per second = 1 / this time.
#[divan::bench(sample_count = 100, sample_size = 50)]
fn dispatch_one_job(b: divan::Bencher) {
    let mut q = Queue::new(100);
    b.bench_local(|| {
        let job = q.claim();
        let token = format!("job-{}", q.claimed);
        assert!(q.rt.block_on(q.store.job_by_token(job.id, &token)).unwrap().is_some());
        assert!(!q.rt.block_on(q.store.extend_lease(job.id, 120_000)).unwrap());
        let started = Event::JobStarted { job: job.name.clone(), attempt: 1, now: 1 };
        q.record(job.pipeline_id, started, vec![JobUpdate::Status { job_id: job.id, status: JobStatus::Running, attempt: 1, at: 1 }]);
        let finished = Event::JobFinished { job: job.name.clone(), attempt: 1, outcome: Outcome::Success, now: 2 };
        let done = vec![
            JobUpdate::Result { job_id: job.id, exit_code: Some(0), failure_reason: None, at: 2 },
            JobUpdate::Status { job_id: job.id, status: JobStatus::Success, attempt: 1, at: 2 },
        ];
        q.record(job.pipeline_id, finished, done);
    });
}

#[divan::bench(sample_count = 100, sample_size = 50)]
fn claim_job(b: divan::Bencher) {
    let mut q = Queue::new(100);
    b.bench_local(|| q.claim());
}

/// One transition: an event and a job status.
#[divan::bench(sample_count = 100, sample_size = 50)]
fn apply(b: divan::Bencher) {
    let mut q = Queue::new(1);
    let job = q.claim();
    b.bench_local(|| {
        let event = Event::Tick { now: 1 };
        q.record(job.pipeline_id, event, vec![JobUpdate::Status { job_id: job.id, status: JobStatus::Running, attempt: 1, at: 1 }]);
    });
}

#[divan::bench]
fn job_by_token(b: divan::Bencher) {
    let mut q = Queue::new(1);
    let job = q.claim();
    b.bench_local(|| q.rt.block_on(q.store.job_by_token(job.id, "job-1")).unwrap());
}

#[divan::bench]
fn extend_lease(b: divan::Bencher) {
    let mut q = Queue::new(1);
    let job = q.claim();
    b.bench_local(|| q.rt.block_on(q.store.extend_lease(job.id, 120_000)).unwrap());
}
