//! `piste serve`: the HTTP server, the engine driven from the store, the queue and leases,
//! webhook intake, git mirrors, the store and the web pages.
//!
//! [`serve`] takes an already-bound listener and a shutdown future, so tests start it
//! in-process on `127.0.0.1:0`. Background tasks: the lease reaper (a runner that stops
//! heartbeating loses its job: `LeaseExpired`, retried or failed by the engine's `retry` rules),
//! the timer for delayed jobs, and at start-up the planning of pipelines recorded but not yet
//! planned (a crash between the webhook's answer and the plan loses nothing).

mod api;
pub mod blob;
pub mod config;
mod error;
mod follow;
pub mod git;
pub mod logs;
mod pages;
pub mod pipelines;
mod runners;
pub mod store;
pub mod web;
pub mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{any, get, post, put};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ProjectConfig};
use pipelines::{Cached, now_ms};

use crate::blob::Blobs;
use crate::logs::Logs;
use crate::store::{Backend, Store};
use scheduler::Event;

/// Shared by every request and background task.
pub struct AppState {
    pub config: Config,
    pub store: Backend,
    /// Artifacts (and, through `logs`, logs): files in `data_dir` or a bucket.
    pub blobs: Blobs,
    pub logs: Logs,
    pipelines: tokio::sync::Mutex<HashMap<i64, Arc<tokio::sync::Mutex<Cached>>>>,
    log_locks: tokio::sync::Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Woken when a job's log grows or its job ends, for live followers (SSE).
    log_watch: Mutex<HashMap<i64, Arc<tokio::sync::Notify>>>,
    /// Woken whenever jobs are queued, so long-polling runners look again.
    pub queued: tokio::sync::Notify,
    pub metrics: Metrics,
    /// When each job this server queued became pending, for the dispatch latency.
    queued_at: Mutex<HashMap<i64, Instant>>,
}

impl AppState {
    pub fn new(config: Config, store: Backend, blobs: Blobs) -> AppState {
        AppState {
            logs: Logs::for_blobs(&config.data_dir, &blobs),
            blobs,
            config,
            store,
            pipelines: tokio::sync::Mutex::new(HashMap::new()),
            log_locks: tokio::sync::Mutex::new(HashMap::new()),
            log_watch: Mutex::new(HashMap::new()),
            queued: tokio::sync::Notify::new(),
            metrics: Metrics::default(),
            queued_at: Mutex::new(HashMap::new()),
        }
    }

    async fn pipeline_lock(&self, id: i64) -> Arc<tokio::sync::Mutex<Cached>> {
        self.pipelines.lock().await.entry(id).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Cached::empty()))).clone()
    }

    async fn log_lock(&self, job: i64) -> Arc<tokio::sync::Mutex<()>> {
        self.log_locks.lock().await.entry(job).or_default().clone()
    }

    fn log_appended(&self, job: i64) {
        self.metrics.log_chunks.fetch_add(1, Ordering::Relaxed);
        self.wake_followers(job);
    }

    /// The notifier followers of `job`'s log wait on.
    fn log_watcher(&self, job: i64) -> Arc<tokio::sync::Notify> {
        self.log_watch.lock().unwrap_or_else(|e| e.into_inner()).entry(job).or_default().clone()
    }

    fn wake_followers(&self, job: i64) {
        let w = self.log_watch.lock().unwrap_or_else(|e| e.into_inner()).get(&job).cloned();
        if let Some(w) = w {
            w.notify_waiters();
        }
    }

    pub fn mirror_dir(&self, project: &str) -> PathBuf {
        self.config.data_dir.join("mirrors").join(format!("{}.git", project.replace('/', "__")))
    }

    fn mirror(&self, project: &str) -> Result<crate::git::Mirror, String> {
        crate::git::Mirror::open_or_init(&self.mirror_dir(project)).map_err(|e| e.to_string())
    }

    pub fn public_url(&self) -> String {
        format!("http://{}", self.config.listen)
    }

    /// The secrets of the pipeline's project, masked again in stored logs.
    async fn project_secrets(&self, pipeline_id: i64) -> Result<Vec<String>, crate::store::StoreError> {
        let Some(p) = self.store.pipeline(pipeline_id).await? else { return Ok(Vec::new()) };
        Ok(self.config.project(&p.project).map(|c| c.secrets.values().filter(|v| !v.is_empty()).cloned().collect()).unwrap_or_default())
    }

    fn mark_queued(&self, commands: &[scheduler::Command], ids: &HashMap<String, i64>) {
        let mut q = self.queued_at.lock().unwrap_or_else(|e| e.into_inner());
        for c in commands {
            if let scheduler::Command::RunJob { job, .. } = c {
                if let Some(&id) = ids.get(job) {
                    q.insert(id, Instant::now());
                }
            }
        }
    }

    fn observe_dispatch(&self, job: i64) {
        let started = self.queued_at.lock().unwrap_or_else(|e| e.into_inner()).remove(&job);
        if let Some(t) = started {
            self.metrics.dispatch(t.elapsed());
        }
        self.metrics.dispatched.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters and a latency histogram for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    dispatched: AtomicU64,
    log_chunks: AtomicU64,
    webhooks: AtomicU64,
    /// Dispatch latency buckets (ms upper bounds below), plus the sum in µs.
    buckets: [AtomicU64; 8],
    sum_us: AtomicU64,
}

const BUCKETS_MS: [u64; 7] = [1, 5, 10, 50, 100, 500, 1000];

impl Metrics {
    fn dispatch(&self, d: Duration) {
        let ms = d.as_millis() as u64;
        let i = BUCKETS_MS.iter().position(|&b| ms <= b).unwrap_or(7);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn webhook_received(&self) {
        self.webhooks.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP piste_jobs_dispatched_total Jobs handed to runners.\n# TYPE piste_jobs_dispatched_total counter");
        let _ = writeln!(out, "piste_jobs_dispatched_total {}", self.dispatched.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP piste_webhooks_total Webhooks accepted.\n# TYPE piste_webhooks_total counter");
        let _ = writeln!(out, "piste_webhooks_total {}", self.webhooks.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP piste_log_chunks_total Log chunks received.\n# TYPE piste_log_chunks_total counter");
        let _ = writeln!(out, "piste_log_chunks_total {}", self.log_chunks.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP piste_dispatch_latency_seconds From queued to handed to a runner.\n# TYPE piste_dispatch_latency_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "piste_dispatch_latency_seconds_bucket{{le=\"{}\"}} {cumulative}", *b as f64 / 1000.0);
        }
        cumulative += self.buckets[7].load(Ordering::Relaxed);
        let _ = writeln!(out, "piste_dispatch_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "piste_dispatch_latency_seconds_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "piste_dispatch_latency_seconds_count {cumulative}");
    }
}

/// A new random 256-bit token, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    hex::encode(bytes)
}

/// How tokens are stored: SHA-256, hex. Tokens are 256-bit random values, so a plain hash is
/// enough (no password stretching needed).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time comparison of secrets.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    let (ha, hb) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    ha.ct_eq(&hb).into()
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/projects/{*name}", get(pages::project))
        .route("/pipelines/{id}", get(pages::pipeline))
        .route("/jobs/{id}", get(pages::job))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/pipelines", get(api::list_pipelines))
        .route("/api/v1/pipelines/{id}", get(api::get_pipeline))
        .route("/api/v1/pipelines/{id}/cancel", post(api::cancel_pipeline))
        .route("/api/v1/pipelines/{id}/retry", post(api::retry_pipeline))
        .route("/api/v1/jobs/{id}", get(api::get_job))
        .route("/api/v1/jobs/{id}/log", get(api::job_log).put(runners::append_log))
        .route("/api/v1/jobs/{id}/log/stream", get(follow::stream))
        .route("/api/v1/jobs/{id}/cancel", post(api::cancel_job))
        .route("/api/v1/jobs/{id}/retry", post(api::retry_job))
        .route("/api/v1/jobs/{id}/play", post(api::play_job))
        .route("/api/v1/webhooks/{project}", post(api::webhook))
        .route("/api/v1/runners", post(runners::register))
        .route("/api/v1/jobs/request", post(runners::request_job))
        .route("/api/v1/jobs/{id}/heartbeat", post(runners::heartbeat))
        .route("/api/v1/jobs/{id}/artifacts", put(runners::upload_artifacts).get(api::artifacts))
        .route("/api/v1/jobs/{id}/artifacts/{dep}", get(runners::download_artifacts))
        .route("/api/v1/jobs/{id}/finish", post(runners::finish))
        .route("/api/v1/jobs/{id}/git/{*rest}", any(api::git))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 30))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then stops accepting and lets requests finish.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken) -> std::io::Result<()> {
    // Logs and artifacts folders (local storage) are made when first written.
    std::fs::create_dir_all(state.config.data_dir.join("mirrors"))?;
    // Pipelines recorded before a crash but never planned.
    match state.store.pipelines_with_status(&["created"]).await {
        Ok(rows) => {
            for row in rows {
                tokio::spawn(pipelines::plan_and_start(state.clone(), row.id));
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list pipelines to resume"),
    }
    tokio::spawn(reap_leases(state.clone(), shutdown.clone()));
    tokio::spawn(tick_delayed(state.clone(), shutdown.clone()));
    let app = router(state);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

/// Jobs whose runner went silent: the engine decides (retry as a runner system failure, or fail).
async fn reap_leases(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let Ok(expired) = state.store.expired_leases(now).await else { continue };
        for job in expired {
            tracing::warn!(job = job.id, name = %job.name, "runner lease expired");
            let event = Event::LeaseExpired { job: job.name.clone(), attempt: job.attempt as u32, now: now as u64 };
            let update = crate::store::JobUpdate::Result {
                job_id: job.id,
                exit_code: None,
                failure_reason: Some("runner_system_failure: the runner stopped reporting (lease expired)".into()),
                at: now,
            };
            if let Err(e) = pipelines::process(&state, job.pipeline_id, vec![event], vec![update]).await {
                tracing::error!(job = job.id, error = %e, "cannot expire lease");
                continue;
            }
            // That attempt is over: its log becomes one blob (object storage), off this loop.
            let s = state.clone();
            tokio::spawn(async move {
                s.logs.seal(job.id, job.attempt).await.map_err(|e| tracing::warn!(job = job.id, error = %e, "log left in chunks"))
            });
        }
    }
}

/// Delayed jobs: tell engines the time, once a second, for pipelines still running here.
async fn tick_delayed(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(rows) = state.store.pipelines_with_status(&["running", "pending", "scheduled"]).await else { continue };
        for row in rows {
            let _ = pipelines::process(&state, row.id, vec![Event::Tick { now: now_ms() as u64 }], Vec::new()).await;
        }
    }
}
