//! `piste serve`: the HTTP server, the engine driven from the store, the queue and leases,
//! webhook intake, git mirrors, the store and the web pages.
//!
//! [`serve`] takes an already-bound listener and a shutdown future, so tests start it
//! in-process on `127.0.0.1:0`. Background tasks: the lease reaper (a runner that stops
//! heartbeating loses its job: `LeaseExpired`, retried or failed by the engine's `retry` rules),
//! the timer for delayed jobs, and at start-up the planning of pipelines recorded but not yet
//! planned (a crash between the webhook's answer and the plan loses nothing).

mod api;
pub mod artifacts;
pub mod auth;
pub mod blob;
pub mod bridges;
pub mod clock;
pub mod config;
mod cross_needs;
mod error;
mod follow;
pub mod forge;
pub mod git;
pub mod id_tokens;
pub mod includes;
pub mod limits;
pub mod live;
pub mod log_search;
pub mod logs;
pub mod oidc;
mod pages;
pub mod pipelines;
pub mod reports;
mod reuse;
mod runners;
pub mod store;
#[cfg(test)]
mod tests;
pub mod web;
pub mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get, post, put};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use clock::Clock;
pub use config::{Config, ProjectConfig};

use crate::blob::Blobs;
use crate::logs::Logs;
use crate::store::{Backend, Store};
use scheduler::{Event, PipelineStatus};

/// Most engines kept in memory; past it, the ones nobody is using are dropped (and rebuilt from
/// the store when needed again).
const MAX_ENGINES: usize = 1024;

/// Most pipelines whose project is remembered ([`AppState::project_of`]); past it, all are
/// forgotten (a read each brings them back).
const MAX_PROJECTS_REMEMBERED: usize = 4096;

/// Inserts into a map of values read from the store: a map that already holds `bound` other
/// keys starts over (what it held is read again when needed).
fn remember<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, bound: usize, key: K, value: V) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= bound && !map.contains_key(&key) {
        map.clear();
    }
    map.insert(key, value);
}

/// Runners remembered by [`AppState::runner`] before the map starts over.
const MAX_RUNNERS_REMEMBERED: usize = 1024;

/// How long a runner's row read by [`AppState::runner`] serves (the store writes its
/// `last_seen_at` at most this often).
const RUNNER_READ_EVERY_MS: i64 = 1000;

/// Most jobs whose queueing time is remembered for the dispatch latency (metrics only).
const MAX_QUEUED_AT: usize = 65_536;

/// Per-job values (log locks, log watchers) shared by whoever uses them right now.
type PerJob<T> = Arc<Mutex<HashMap<i64, Arc<T>>>>;

/// A trigger job the engine started: pipeline, job id, name, attempt.
type BridgeStart = (i64, i64, String, u32);

/// Shared by every request and background task.
pub struct AppState {
    pub config: Config,
    pub store: Backend,
    /// Artifacts (and, through `logs`, logs): files in `data_dir` or a bucket.
    pub blobs: Blobs,
    pub logs: Logs,
    /// The time, for everything the server decides or records.
    pub clock: Clock,
    /// Engines of the pipelines processed lately; a pipeline leaves when it finishes.
    pipelines: tokio::sync::Mutex<HashMap<i64, Arc<pipelines::Entry>>>,
    /// Serialises appends to a job's log; an entry lives while someone holds it.
    log_locks: PerJob<tokio::sync::Mutex<()>>,
    /// Woken when a job's log grows or its job ends, for live followers (SSE); an entry lives
    /// while a follower holds it.
    log_watch: PerJob<tokio::sync::Notify>,
    /// Woken whenever jobs are queued, so long-polling runners look again.
    pub queued: tokio::sync::Notify,
    pub metrics: Metrics,
    /// When each job this server queued became pending, for the dispatch latency.
    queued_at: Mutex<HashMap<i64, tokio::time::Instant>>,
    /// Each pipeline's project, which never changes: the runner protocol's calls need it
    /// (secrets to mask) without reading the pipeline row every time. Bounded.
    projects: Mutex<HashMap<i64, Arc<str>>>,
    /// Runners by token hash, as last read ([`AppState::runner`]). Bounded.
    runners: Mutex<HashMap<String, (store::Runner, i64)>>,
    /// The rows of pipelines whose jobs were leased lately ([`AppState::running_pipeline`]);
    /// a pipeline leaves with its engine. Bounded.
    leasing: Mutex<HashMap<i64, Arc<store::PipelineRow>>>,
    /// The deadline the delayed-job timer sleeps until (ms; `i64::MAX`: none), and its wake-up
    /// when an earlier one is stored.
    timer_deadline: AtomicI64,
    timer: tokio::sync::Notify,
    /// Seals of finished logs running at once (object storage: several requests each).
    sealing: Arc<tokio::sync::Semaphore>,
    /// The OpenID Connect provider's metadata and keys (web login), fetched when first needed.
    oidc: oidc::Oidc,
    /// The key that signs jobs' ID tokens, loaded from the store when first needed.
    pub id_tokens: id_tokens::Issuer,
    /// Commit statuses waiting to be posted to the forges.
    pub forge: forge::Poster,
    /// Pipelines that changed, for live pages.
    pub changes: live::Changes,
    /// Templates, remote files and component hosts for pipelines' `include:`.
    pub includes: includes::Includes,
    /// Trigger jobs the engine started, for the task `serve` runs ([`bridges::start`]). At most
    /// one message per trigger job attempt, so bounded by the pipelines' size.
    bridge_tx: tokio::sync::mpsc::UnboundedSender<BridgeStart>,
    bridge_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<BridgeStart>>>,
}

/// A per-job value; the map's entry goes with its last holder.
pub struct Held<T> {
    map: PerJob<T>,
    job: i64,
    value: Arc<T>,
}

impl<T> std::ops::Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are only made under this lock: two references are the map's and ours.
        if map.get(&self.job).is_some_and(|v| Arc::ptr_eq(v, &self.value) && Arc::strong_count(v) == 2) {
            map.remove(&self.job);
        }
    }
}

fn hold<T: Default>(map: &PerJob<T>, job: i64) -> Held<T> {
    let value = map.lock().unwrap_or_else(|e| e.into_inner()).entry(job).or_default().clone();
    Held { map: map.clone(), job, value }
}

impl AppState {
    pub fn new(config: Config, store: Backend, blobs: Blobs) -> AppState {
        // Checked when the file was loaded; a file changed since is said here.
        let roots = config.tls_roots().unwrap_or_else(|e| {
            tracing::error!(error = %e, "`ca_file` not trusted by the OpenID and forge clients");
            Vec::new()
        });
        let includes = includes::Includes::new(&config);
        let (bridge_tx, bridge_rx) = tokio::sync::mpsc::unbounded_channel();
        AppState {
            bridge_tx,
            bridge_rx: Mutex::new(Some(bridge_rx)),
            logs: Logs::for_blobs(&config.data_dir, &blobs, &store),
            blobs,
            config,
            store,
            clock: Clock::system(),
            pipelines: tokio::sync::Mutex::new(HashMap::new()),
            log_locks: PerJob::default(),
            log_watch: PerJob::default(),
            queued: tokio::sync::Notify::new(),
            metrics: Metrics::default(),
            queued_at: Mutex::new(HashMap::new()),
            projects: Mutex::new(HashMap::new()),
            runners: Mutex::new(HashMap::new()),
            leasing: Mutex::new(HashMap::new()),
            timer_deadline: AtomicI64::new(i64::MAX),
            timer: tokio::sync::Notify::new(),
            sealing: Arc::new(tokio::sync::Semaphore::new(SEALS_AT_ONCE)),
            oidc: oidc::Oidc::new(&roots),
            id_tokens: id_tokens::Issuer::default(),
            forge: forge::Poster::new(&roots),
            changes: live::Changes::default(),
            includes,
        }
    }

    /// The same state reading `clock` (tests hand a [`Clock::tokio`] and pause time).
    pub fn with_clock(self, clock: Clock) -> AppState {
        AppState { clock, ..self }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    async fn pipeline_lock(&self, id: i64) -> Arc<pipelines::Entry> {
        let mut map = self.pipelines.lock().await;
        if map.len() >= MAX_ENGINES && !map.contains_key(&id) {
            // Keep the engines someone is using; the others are rebuilt when needed.
            map.retain(|_, e| Arc::strong_count(e) > 1);
        }
        map.entry(id).or_insert_with(|| Arc::new(pipelines::Entry::empty())).clone()
    }

    /// Drops the pipeline's engine (it finished).
    async fn forget_pipeline(&self, id: i64) {
        self.pipelines.lock().await.remove(&id);
        self.leasing.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// The runner whose token hashes to `token_hash`. A runner polls for jobs many times a
    /// second: its row is read again (and its `last_seen_at` written) once it is
    /// [`RUNNER_READ_EVERY_MS`] old, which is as often as the store records it anyway. Runners
    /// are never changed or removed once registered, so a remembered row is the stored one.
    pub async fn runner(&self, token_hash: &str) -> Result<Option<store::Runner>, store::StoreError> {
        let now = self.now_ms();
        if let Some((runner, read_at)) = self.runners.lock().unwrap_or_else(|e| e.into_inner()).get(token_hash) {
            if (0..RUNNER_READ_EVERY_MS).contains(&(now - read_at)) {
                return Ok(Some(runner.clone()));
            }
        }
        let Some(runner) = self.store.runner_by_token(token_hash, now).await? else { return Ok(None) };
        remember(&self.runners, MAX_RUNNERS_REMEMBERED, token_hash.to_string(), (runner.clone(), now));
        Ok(Some(runner))
    }

    /// The row of a pipeline whose job is being leased. What a lease reads of it (project,
    /// trigger, number, creation time, approval) does not change once its jobs run, so it is
    /// read once per pipeline while the pipeline runs, not once per job.
    pub async fn running_pipeline(&self, id: i64) -> Result<Option<Arc<store::PipelineRow>>, store::StoreError> {
        if let Some(row) = self.leasing.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(Some(row.clone()));
        }
        let Some(row) = self.store.pipeline(id).await? else { return Ok(None) };
        let row = Arc::new(row);
        remember(&self.leasing, MAX_ENGINES, id, row.clone());
        Ok(Some(row))
    }

    /// What this server holds in memory, map by map (`/metrics`: `piste_in_memory`).
    pub async fn in_memory(&self) -> InMemory {
        let engines = self.pipelines.lock().await.len();
        fn len<K, V>(m: &Mutex<HashMap<K, V>>) -> usize {
            m.lock().unwrap_or_else(|e| e.into_inner()).len()
        }
        InMemory {
            engines,
            log_locks: self.log_locks.lock().unwrap_or_else(|e| e.into_inner()).len(),
            log_watchers: self.log_watch.lock().unwrap_or_else(|e| e.into_inner()).len(),
            queued_jobs: len(&self.queued_at),
            leased_pipelines: len(&self.leasing),
            projects_of_pipelines: len(&self.projects),
            runners: len(&self.runners),
        }
    }

    /// Hands a trigger job the engine started to the bridge task.
    fn start_bridge(&self, pipeline: i64, job: i64, name: String, attempt: u32) {
        if self.bridge_tx.send((pipeline, job, name, attempt)).is_err() {
            tracing::error!(pipeline, job, "the trigger-job task is gone: the job stays running until the server restarts");
        }
    }

    async fn log_lock(&self, job: i64) -> Held<tokio::sync::Mutex<()>> {
        hold(&self.log_locks, job)
    }

    fn log_appended(&self, job: i64) {
        self.metrics.log_chunks.inc();
        self.wake_followers(job);
    }

    /// The notifier followers of `job`'s log wait on.
    fn log_watcher(&self, job: i64) -> Held<tokio::sync::Notify> {
        hold(&self.log_watch, job)
    }

    fn wake_followers(&self, job: i64) {
        // Under the lock: no clone outlives it, so a follower's drop can tell it is the last.
        if let Some(w) = self.log_watch.lock().unwrap_or_else(|e| e.into_inner()).get(&job) {
            w.notify_waiters();
        }
    }

    /// A job ended (finished, failed, canceled): followers learn it, its queueing time goes.
    fn job_ended(&self, job: i64) {
        self.queued_at.lock().unwrap_or_else(|e| e.into_inner()).remove(&job);
        self.wake_followers(job);
    }

    pub fn mirror_dir(&self, project: &str) -> PathBuf {
        self.config.data_dir.join("mirrors").join(format!("{}.git", project.replace('/', "__")))
    }

    fn mirror(&self, project: &str) -> Result<crate::git::Mirror, crate::git::GitError> {
        crate::git::Mirror::open_or_init(&self.mirror_dir(project))
    }

    pub fn public_url(&self) -> String {
        format!("http://{}", self.config.listen)
    }

    /// The server's address as people reach it (links leaving the server): `external_url`,
    /// else [`Self::public_url`]; without a trailing slash.
    pub fn external_url(&self) -> String {
        match &self.config.external_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => self.public_url(),
        }
    }

    /// The secrets of the pipeline's project, masked again in stored logs.
    async fn project_secrets(&self, pipeline_id: i64) -> Result<Vec<String>, crate::store::StoreError> {
        let Some(project) = self.project_of(pipeline_id).await? else { return Ok(Vec::new()) };
        Ok(self.config.project(&project).map(|c| c.secrets.values().filter(|v| !v.is_empty()).cloned().collect()).unwrap_or_default())
    }

    /// The pipeline's project (remembered: it never changes); `None` for no such pipeline.
    async fn project_of(&self, pipeline_id: i64) -> Result<Option<Arc<str>>, crate::store::StoreError> {
        if let Some(p) = self.projects.lock().unwrap_or_else(|e| e.into_inner()).get(&pipeline_id) {
            return Ok(Some(p.clone()));
        }
        let Some(row) = self.store.pipeline(pipeline_id).await? else { return Ok(None) };
        let project: Arc<str> = row.project.into();
        remember(&self.projects, MAX_PROJECTS_REMEMBERED, pipeline_id, project.clone());
        Ok(Some(project))
    }

    fn mark_queued(&self, commands: &[scheduler::Command], ids: &HashMap<String, i64>) {
        let mut q = self.queued_at.lock().unwrap_or_else(|e| e.into_inner());
        for c in commands {
            if let scheduler::Command::RunJob { job, .. } = c {
                if let Some(&id) = ids.get(job) {
                    if q.len() < MAX_QUEUED_AT {
                        q.insert(id, tokio::time::Instant::now());
                    }
                }
            }
        }
    }

    fn observe_dispatch(&self, job: i64) {
        let started = self.queued_at.lock().unwrap_or_else(|e| e.into_inner()).remove(&job);
        if let Some(t) = started {
            self.metrics.dispatch(t.elapsed());
        }
        self.metrics.dispatched.inc();
    }

    /// A pipeline's status (or one of its jobs') changed: live pages and the forge learn it.
    pub fn pipeline_changed(&self, pipeline_id: i64, project: &str, status_changed: bool) {
        self.changes.send(pipeline_id, project);
        if status_changed {
            self.forge.changed(pipeline_id);
        }
    }

    /// A pipeline's next deadline was stored: wake the timer if it sleeps past it.
    fn deadline_stored(&self, at: i64) {
        if at < self.timer_deadline.load(Ordering::Acquire) {
            self.timer.notify_one();
        }
    }
}

/// This server's counters and dispatch-latency histogram for `/metrics` (prometheus-client;
/// clones share the values).
#[derive(Clone)]
pub struct Metrics {
    dispatched: Counter,
    log_chunks: Counter,
    webhooks: Counter,
    /// Artifact archives a runner did not have to send: the project already had them.
    pub(crate) artifacts_deduplicated: Counter,
    /// Jobs recorded as passed with an earlier job's result instead of running.
    pub(crate) jobs_reused: Counter,
    dispatch_latency: Histogram,
    /// Finished logs made one object, and those waiting for it (a growing backlog: object
    /// storage is slow or failing).
    logs_sealed: Counter,
    logs_to_seal: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            dispatched: Counter::default(),
            log_chunks: Counter::default(),
            webhooks: Counter::default(),
            artifacts_deduplicated: Counter::default(),
            jobs_reused: Counter::default(),
            dispatch_latency: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
            logs_sealed: Counter::default(),
            logs_to_seal: Gauge::default(),
        }
    }
}

impl Metrics {
    fn dispatch(&self, d: Duration) {
        self.dispatch_latency.observe(d.as_secs_f64());
    }

    fn webhook_received(&self) {
        self.webhooks.inc();
    }

    /// Adds this server's metrics to `registry` (names get the registry's `piste` prefix).
    fn register(&self, registry: &mut Registry) {
        registry.register("jobs_dispatched", "Jobs handed to runners", self.dispatched.clone());
        registry.register("webhooks", "Webhooks accepted", self.webhooks.clone());
        registry.register("log_chunks", "Log chunks received", self.log_chunks.clone());
        registry.register(
            "artifacts_deduplicated",
            "Artifact archives recorded without an upload: the project already had them",
            self.artifacts_deduplicated.clone(),
        );
        registry.register(
            "jobs_reused",
            "Jobs recorded as passed with an earlier job's result instead of running",
            self.jobs_reused.clone(),
        );
        registry.register("logs_sealed", "Finished logs written to storage as one object", self.logs_sealed.clone());
        registry.register("logs_to_seal", "Finished logs waiting to be written as one object", self.logs_to_seal.clone());
        registry.register_with_unit("dispatch_latency", "From queued to handed to a runner", Unit::Seconds, self.dispatch_latency.clone());
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

/// Every route. People's routes (pages, `/api/v1` reads and actions) check the caller's role
/// in the project (`auth`); runner routes check runner or job tokens, webhooks their
/// signature; `/healthz` and `/metrics` are open (no project data). Every response carries the
/// security headers (`auth::security_headers`).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(oidc::login))
        .route("/auth/callback", get(oidc::callback))
        .route("/logout", post(oidc::logout))
        .route("/projects/{*name}", get(pages::project))
        .route("/pipelines/{id}", get(pages::pipeline))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/artifacts", get(artifacts::browse))
        .route("/jobs/{id}/artifacts/{*path}", get(artifacts::view))
        .route("/runners", get(pages::runners))
        .route("/.well-known/openid-configuration", get(id_tokens::discovery))
        .route(id_tokens::JWKS_PATH, get(id_tokens::jwks))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/pipelines", get(api::list_pipelines))
        .route("/api/v1/pipelines/{id}", get(api::get_pipeline))
        .route("/api/v1/pipelines/{id}/events", get(live::pipeline_events))
        .route("/api/v1/events", get(live::list_events))
        .route("/api/v1/pipelines/{id}/cancel", post(api::cancel_pipeline))
        .route("/api/v1/pipelines/{id}/retry", post(api::retry_pipeline))
        .route("/api/v1/pipelines/{id}/approve", post(api::approve_pipeline))
        .route("/api/v1/jobs/{id}", get(api::get_job))
        .route("/api/v1/jobs/{id}/log", get(api::job_log).put(runners::append_log))
        .route("/api/v1/jobs/{id}/log/stream", get(follow::stream))
        .route("/api/v1/jobs/{id}/log/search", get(log_search::search))
        .route("/api/v1/jobs/{id}/cancel", post(api::cancel_job))
        .route("/api/v1/jobs/{id}/retry", post(api::retry_job))
        .route("/api/v1/jobs/{id}/play", post(api::play_job))
        .route("/api/v1/webhooks/{project}", post(api::webhook))
        .route("/api/v1/runners", post(runners::register))
        .route("/api/v1/jobs/request", post(runners::request_job))
        .route("/api/v1/jobs/{id}/heartbeat", post(runners::heartbeat))
        .route("/api/v1/jobs/{id}/artifacts", put(runners::upload_artifacts).post(runners::link_artifacts).get(api::artifacts))
        .route("/api/v1/jobs/{id}/artifacts/files", get(artifacts::files))
        .route("/api/v1/jobs/{id}/artifacts/file", get(artifacts::file))
        .route("/api/v1/jobs/{id}/artifacts/{dep}", get(runners::download_artifacts))
        .route("/api/v1/jobs/{id}/finish", post(runners::finish))
        .route("/api/v1/jobs/{id}/reuse", post(reuse::reuse_job))
        .route("/api/v1/jobs/{id}/git/{*rest}", any(api::git))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.limits.json_bytes as usize))
        .layer(axum::middleware::map_response(auth::security_headers))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then stops accepting and lets requests finish.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken) -> std::io::Result<()> {
    // Logs and artifacts folders (local storage) are made when first written.
    std::fs::create_dir_all(state.config.data_dir.join("mirrors"))?;
    // Pipelines recorded before a crash but never planned.
    match state.store.pipelines_with_status(&[PipelineStatus::Created]).await {
        Ok(rows) => {
            for row in rows {
                tokio::spawn(pipelines::plan_and_start(state.clone(), row.id));
            }
        }
        Err(e) => tracing::error!(error = %error::chain(&e), "cannot list pipelines to resume"),
    }
    if let Err(e) = pipelines::resume_approved(&state).await {
        tracing::error!(error = %error::chain(&e), "cannot start the pipelines approved before a restart");
    }
    if let Some(mut rx) = state.bridge_rx.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let state = state.clone();
        tokio::spawn(async move {
            while let Some((pipeline, job, name, attempt)) = rx.recv().await {
                tokio::spawn(bridges::start(state.clone(), pipeline, job, name, attempt));
            }
        });
    }
    bridges::resume(&state).await;
    if let Err(e) = pipelines::resume_resource_groups(&state).await {
        tracing::error!(error = %error::chain(&e), "cannot hand on the resource groups left by a stop");
    }
    tokio::spawn(forge::run(state.clone(), shutdown.clone()));
    forge::resume(&state).await;
    tokio::spawn(reap_leases(state.clone(), shutdown.clone()));
    if state.logs.seals() {
        tokio::spawn(seal_open_logs(state.clone(), shutdown.clone()));
    }
    tokio::spawn(wake_delayed(state.clone(), shutdown.clone()));
    let limits = state.config.limits.clone();
    limits::serve_connections(listener, router(state), &limits, shutdown).await
}

/// Seals of finished logs that run at once; more wait their turn.
const SEALS_AT_ONCE: usize = 4;

/// Attempts at a seal before the log is left in chunks until the next sweep.
const SEAL_TRIES: u32 = 4;

impl AppState {
    /// Makes a finished attempt's log one blob, in the background: a finish does not wait for
    /// the several object-storage requests a seal takes (readers read the chunks meanwhile).
    /// Retried with backoff; a log whose seal keeps failing stays in chunks, readable, until
    /// the next sweep ([`seal_open_logs`]).
    pub fn seal_later(self: &Arc<Self>, job: i64, attempt: i64) {
        if !self.logs.seals() {
            return;
        }
        let state = self.clone();
        state.metrics.logs_to_seal.inc();
        tokio::spawn(async move {
            // Counted down however this task ends (sealed, given up, or the runtime stopping).
            let _pending = GaugeDown(state.metrics.logs_to_seal.clone());
            let Ok(_permit) = state.sealing.clone().acquire_owned().await else { return };
            let mut wait = Duration::from_millis(200);
            for tries in 1..=SEAL_TRIES {
                match state.logs.seal(job, attempt).await {
                    Ok(()) => {
                        state.metrics.logs_sealed.inc();
                        return;
                    }
                    Err(e) if tries == SEAL_TRIES => {
                        tracing::warn!(job, attempt, error = %e, "log left in chunks (still readable; sealed at the next sweep)")
                    }
                    Err(_) => {
                        tokio::time::sleep(wait).await;
                        wait *= 4;
                    }
                }
            }
        });
    }
}

/// Sizes of [`AppState`]'s maps. Each goes back to zero, or stays bounded, when nothing runs:
/// a count that only grows is a leak an operator can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InMemory {
    /// Cached engines of running pipelines.
    pub engines: usize,
    /// Per-job log locks held.
    pub log_locks: usize,
    /// Per-job log watchers held (live followers).
    pub log_watchers: usize,
    /// Queueing times of jobs waiting for a runner.
    pub queued_jobs: usize,
    /// Pipeline rows of pipelines whose jobs were leased lately (they leave with the engine).
    pub leased_pipelines: usize,
    /// Pipelines' projects remembered for the runner protocol (bounded).
    pub projects_of_pipelines: usize,
    /// Runner rows read lately (bounded).
    pub runners: usize,
}

impl InMemory {
    /// `(kind, count)` for each map, as `/metrics` labels them.
    pub fn kinds(&self) -> [(&'static str, usize); 7] {
        [
            ("engines", self.engines),
            ("log_locks", self.log_locks),
            ("log_watchers", self.log_watchers),
            ("queued_jobs", self.queued_jobs),
            ("leased_pipelines", self.leased_pipelines),
            ("projects_of_pipelines", self.projects_of_pipelines),
            ("runners", self.runners),
        ]
    }
}

/// Decrements a gauge when dropped.
struct GaugeDown(Gauge);

impl Drop for GaugeDown {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// At start and then every lease period: seals the logs left in chunks whose attempt is over
/// (this server, or another sharing the store, stopped or failed before sealing them). One
/// query of `log_chunks`, which holds running logs only.
async fn seal_open_logs(state: Arc<AppState>, shutdown: CancellationToken) {
    loop {
        match state.logs.open_logs().await {
            Ok(open) => {
                for (job, attempt) in open {
                    let over = match state.store.job(job).await {
                        Ok(Some(row)) => row.attempt > attempt || row.finished_at.is_some(),
                        Ok(None) => true,
                        Err(_) => false,
                    };
                    if over {
                        state.seal_later(job, attempt);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the logs left in chunks"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(state.config.lease_ms.max(1000))) => {}
        }
    }
}

/// Jobs whose runner went silent: the engine decides (retry as a runner system failure, or fail).
async fn reap_leases(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // A server that was down longer than a lease finds every running job's lease expired,
    // though their runners were healthy and only could not reach it: they get one full lease
    // period from this start to heartbeat again before anything expires.
    let grace_until = state.now_ms() + state.config.lease_ms as i64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = state.now_ms();
        if now < grace_until {
            continue;
        }
        let Ok(expired) = state.store.expired_leases(now).await else { continue };
        for job in expired {
            let project = state.store.pipeline(job.pipeline_id).await.ok().flatten().map(|p| p.project).unwrap_or_default();
            tracing::warn!(%project, pipeline = job.pipeline_id, job = job.id, name = %job.name, runner = job.runner_id, "job lost its lease: the runner stopped reporting");
            let event = Event::LeaseExpired { job: job.name.clone(), attempt: job.attempt as u32, now: now as u64 };
            let update = crate::store::JobUpdate::Result {
                job_id: job.id,
                exit_code: None,
                failure_reason: Some("runner_system_failure: the runner stopped reporting (lease expired)".into()),
                at: now,
            };
            if let Err(e) = pipelines::process(&state, job.pipeline_id, vec![event], vec![update]).await {
                tracing::error!(%project, pipeline = job.pipeline_id, job = job.id, error = %error::chain(&e), "cannot expire lease");
                continue;
            }
            // That attempt is over: its log becomes one blob (object storage), off this loop.
            state.seal_later(job.id, job.attempt);
        }
    }
}

/// Deadlines read from the store at once (the earliest first).
const WAKEUPS_PER_PASS: i64 = 64;

/// How often the timer looks at the store even without a local deadline: deadlines stored by
/// other servers sharing the database (which wake their own pipelines unless they stopped).
const RESCAN: Duration = Duration::from_secs(10);

/// Delayed jobs: each pipeline's engine is told the time when its next deadline comes
/// (`wake_at`, stored with the pipeline by whichever server processed it last). Sleeps until
/// the earliest deadline, a new earlier one stored here, or the periodic rescan.
async fn wake_delayed(state: Arc<AppState>, shutdown: CancellationToken) {
    loop {
        let at = wake_due(&state).await;
        state.timer_deadline.store(at, Ordering::Release);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(state.clock.instant_at(at)) => {}
            _ = state.timer.notified() => {}
        }
    }
}

/// Tells the engines whose deadline has come the time; returns when to look again (ms).
async fn wake_due(state: &AppState) -> i64 {
    let now = state.now_ms();
    let (mut next, mut processed, mut failed) = (None, 0, false);
    match state.store.wakeups(WAKEUPS_PER_PASS).await {
        Ok(due) => {
            for w in due {
                if w.at > now {
                    next = Some(w.at);
                    break;
                }
                processed += 1;
                let tick = Event::Tick { now: now as u64 };
                if let Err(e) = pipelines::process(state, w.pipeline_id, vec![tick], Vec::new()).await {
                    tracing::warn!(pipeline = w.pipeline_id, error = %error::chain(&e), "cannot wake a delayed job");
                    failed = true;
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %error::chain(&e), "cannot read the delayed jobs' deadlines");
            failed = true;
        }
    }
    let now = state.now_ms();
    if failed {
        // Try again in a second, not in a tight loop.
        next.unwrap_or(i64::MAX).min(now + 1000)
    } else if next.is_none() && processed == WAKEUPS_PER_PASS {
        now // a full pass: more may be due
    } else {
        next.unwrap_or(i64::MAX).min(now.saturating_add(RESCAN.as_millis() as i64))
    }
}
