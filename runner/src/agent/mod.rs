//! `piste runner`: registration and the job loop on a build node.
//!
//! The agent speaks [`scheduler::protocol`] to the server, outward only (it needs no inbound
//! port). [`register`] trades a registration token for a runner token kept in `runner.toml`
//! ([`RunnerConfig`]); [`Agent::run`] long-polls for jobs and runs up to `concurrency` of them
//! at once, each in its own workspace slot:
//!
//! 1. heartbeat every lease/3 from the moment the job arrives (a `cancel` answer stops the
//!    script, `after_script` still runs; 401/404/410 mean the job was taken away: it is
//!    stopped at once and not reported);
//! 2. checkout with the job token from the server's git endpoint into a per-project cache,
//!    then a slot (`checkout.rs`: no network at all when the commit is already cached);
//! 3. dependencies' artifacts downloaded and extracted into the workspace (404: none);
//! 4. the executor, its output masked and shipped by offset (`logs.rs`: batched, retried,
//!    bounded);
//! 5. artifacts per `artifacts:when`, archived to a temporary file and streamed with their
//!    sha256;
//! 6. the finish report, retried until acknowledged. The slot is free once the job is over:
//!    the next job starts while the server stores this one's result (at most one report per
//!    slot waits so, `job::run`).
//!
//! # Decisions
//!
//! - **Robustness:** every call that may fail transiently (network error, timeout, 5xx, 408,
//!   429) is retried with backoff (100 ms doubling to 5 s, jittered) for as long as the job is
//!   ours; the heartbeat keeps running meanwhile, so a server that stays away long enough to
//!   expire the lease ends the job through its 404/410. Job requests are retried forever
//!   (backoff capped at 3 s): a server restart costs the agent nothing. A refused job
//!   request (401/403: the runner token is not valid) stops [`Agent::run`] with an error.
//! - **Shutdown:** when the `shutdown` token is cancelled, the agent stops asking for jobs
//!   (a job request in flight is dropped) and lets running jobs finish for the grace period
//!   ([`DEFAULT_SHUTDOWN_GRACE`], see [`Agent::with_shutdown_grace`]). Jobs still running
//!   then are cancelled (their `after_script` runs, their logs and artifacts are shipped) and
//!   reported as `runner_system_failure` ("the runner was shut down"), so that `retry` rules
//!   may run them again. After a second grace period, what remains is abandoned: executors
//!   are dropped (which kills and removes what they started) and nothing is reported; the
//!   server expires those leases. So `run` returns within 2 × grace + 5 s.
//! - **Secrets:** tokens travel only in headers and never appear in tracing fields or errors
//!   (`RunnerConfig`'s `Debug` hides its token); the job token, the runner token and every
//!   masked variable are masked in the log before it leaves the node.
//! - **Runner variables:** the agent sets `CI_PROJECT_DIR` (the checkout, or
//!   `/builds/<project>` in containers), `CI_BUILDS_DIR`, `CI_RUNNER_DESCRIPTION` and
//!   `CI_RUNNER_TAGS`, over whatever the payload says. `GIT_CHECKOUT` is read from the
//!   payload's variables; the other `GIT_*` settings from `payload.git`.
//!
//! # Layout of the work directory
//!
//! ```text
//! <work_dir>/repos/…    per-project cache repositories (see `checkout.rs`)
//! <work_dir>/builds/…   workspaces: builds/<project key>/<slot>/<project name>
//! <work_dir>/tmp/       archives in transit, emptied when the agent starts
//! <work_dir>/ledger/    the jobs' process groups until stopped (`executor::ProcessLedger`)
//! ```
//!
//! One agent per work directory: two would share slots.
//!
//! # Limits
//!
//! Checkouts from an `http://` server go through libgit2 (in-process, built here without a TLS
//! backend); from an `https://` server through the `git` program (its own TLS, trusting
//! `ca_file`; see `checkout.rs`), so a runner needs `git` installed only for the latter.
//! libgit2 speaks git protocol v0/v1, so fetching a commit by id needs
//! `uploadpack.allowReachableSHA1InWant` on the server.

mod api;
mod checkout;
mod config;
mod job;
mod logs;
mod reuse;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scheduler::protocol::JobPayload;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(crate) use api::read_ca_file;
pub use config::{RunnerConfig, register};

use crate::executor::{Executor, ProcessLedger, reap_process_groups};
use api::{Api, Backoff, CallError};
use job::Shared;

/// How long running jobs may go on after a shutdown request before they are cancelled.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// A job request that ends without a job sooner than this waits out the rest before the next
/// one, so that a server answering 204 at once is not polled in a tight loop.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Compiled secret sets kept between jobs: one per project (and signing key) a runner serves,
/// for the busiest few.
const MASK_SETS_KEPT: usize = 32;
/// Longest wait between job requests while the server is unreachable.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(3);

/// Errors of [`register`] and [`Agent::run`].
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// [`register`] found a configuration file with content.
    #[error("`{}` already exists; remove it to register this runner again", path.display())]
    ConfigExists { path: PathBuf },
    /// The configuration file is invalid.
    #[error("invalid runner configuration `{}`: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// The server URL is not usable.
    #[error("invalid server URL `{url}`: {message}")]
    InvalidUrl { url: String, message: String },
    /// The server did not answer.
    #[error("cannot reach the server at `{url}`: {message}")]
    Unreachable { url: String, message: String },
    /// The server refused a call that cannot succeed by retrying.
    #[error("the server refused the {what} (HTTP {status}): {message}")]
    Refused { what: &'static str, status: u16, message: String },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// A filesystem operation failed.
    #[error("cannot {op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The job loop of one runner. See the [module documentation](self).
pub struct Agent {
    config: RunnerConfig,
    executor: Arc<dyn Executor>,
    containers: bool,
    concurrency: usize,
    work_dir: PathBuf,
    grace: Duration,
}

impl Agent {
    /// An agent running jobs with `executor` (`containers`: it runs them in containers, so
    /// they see their checkout at `/builds/<project>`), at most `concurrency` at once (at
    /// least one), with its workspaces and caches under `work_dir`.
    pub fn new(config: RunnerConfig, executor: Arc<dyn Executor>, containers: bool, concurrency: usize, work_dir: PathBuf) -> Self {
        Agent { config, executor, containers, concurrency: concurrency.max(1), work_dir, grace: DEFAULT_SHUTDOWN_GRACE }
    }

    /// Sets how long running jobs may go on after a shutdown request (see the module
    /// documentation).
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Long-polls for jobs and runs up to `concurrency` at once until `shutdown` is cancelled
    /// (then stops asking, lets running jobs finish within the grace period, cancels the rest;
    /// see the module documentation). Returns an error at once for an unusable configuration
    /// or work directory, and after the shutdown of running jobs when the server refuses the
    /// runner token.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let url = self.config.url.trim_end_matches('/');
        config::check_url(url).map_err(|message| AgentError::InvalidUrl { url: url.to_owned(), message })?;
        let api = Api::new(url, self.config.ca_file.as_deref()).map_err(AgentError::Client)?;
        let tmp_dir = self.prepare_work_dir()?;
        // What a previous life of this runner left running when it was killed (SIGKILL, a
        // crash, a reboot of the service only): stopped before any new job can meet it.
        let ledger = self.work_dir.join("ledger");
        let owner = owner_tag(&self.work_dir);
        match reap_process_groups(&ledger) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(groups = n, "stopped job processes left by a previous run of this runner"),
            Err(e) => tracing::error!(ledger = %ledger.display(), error = %e, "cannot read the process ledger"),
        }
        match self.executor.cleanup_leftovers(&owner).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(objects = n, "removed containers and networks left by a previous run of this runner"),
            Err(e) => tracing::error!(error = %e, "cannot remove containers left by a previous run of this runner"),
        }
        let shared = Arc::new(Shared {
            api: api.clone(),
            runner_name: self.config.name.clone(),
            runner_tags: self.config.tags.clone(),
            runner_token: self.config.token.clone(),
            executor: self.executor.clone(),
            containers: self.containers,
            checkouts: checkout::Checkouts::new(&self.work_dir, self.config.ca_file.clone()),
            // `cache:` lives on the node, as GitLab Runner's local cache does.
            cache: crate::cache::CacheStore::new(self.work_dir.join("cache"))
                .map_err(|e| AgentError::Client(format!("cannot open the cache folder: {e}")))?,
            tmp_dir,
            steps_dir: self.work_dir.join("steps"),
            ledger: ProcessLedger::new(ledger),
            owner,
            force: CancellationToken::new(),
            abandon: CancellationToken::new(),
            log_interval: self.config.log_interval_ms.map_or(logs::FLUSH_AFTER, std::time::Duration::from_millis),
            masks: crate::mask::MaskCache::new(MASK_SETS_KEPT),
            reporting: Arc::new(Semaphore::new(self.concurrency)),
        });
        tracing::info!(url, name = %self.config.name, executor = self.executor.name(), concurrency = self.concurrency, "runner started");
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let slots = Arc::new(Mutex::new((0..self.concurrency).rev().collect::<Vec<usize>>()));
        let mut jobs = JoinSet::new();
        let mut backoff = Backoff::new(MAX_POLL_BACKOFF);
        let mut failures = 0u32;
        let result = loop {
            reap(&mut jobs);
            let permit = tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break Ok(()),
                },
            };
            let free = u32::try_from(permits.available_permits() + 1).unwrap_or(u32::MAX);
            let asked = Instant::now();
            let reply = tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                r = api.request_job(&self.config.token, free) => r,
            };
            let wait = match reply {
                Ok(found) => {
                    if failures > 0 {
                        tracing::info!(failures, "the server answers again");
                    }
                    failures = 0;
                    backoff.reset();
                    match found {
                        Some(bytes) => {
                            let slot = Slot::take(&slots, permit);
                            self.start(&shared, &mut jobs, &bytes, slot);
                            Duration::ZERO
                        }
                        None => MIN_POLL_INTERVAL.saturating_sub(asked.elapsed()),
                    }
                }
                Err(CallError::Rejected { status, message }) => {
                    tracing::error!(status, error = %message, "the server refuses this runner's job requests; stopping");
                    break Err(AgentError::Refused { what: "job request", status, message });
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, "job request failed; retrying until the server answers");
                    } else {
                        tracing::debug!(failures, error = %e, "job request failed again");
                    }
                    backoff.next_delay()
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        };
        self.drain(&mut jobs, &shared).await;
        tracing::info!("runner stopped");
        result
    }

    /// Creates the work directory and empties its `tmp/`.
    fn prepare_work_dir(&self) -> Result<PathBuf, AgentError> {
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| AgentError::Io { op, path, source }
        };
        let tmp = self.work_dir.join("tmp");
        match std::fs::remove_dir_all(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("empty", &tmp)(e)),
            _ => {}
        }
        std::fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
        Ok(tmp)
    }

    /// Starts a job task for a payload.
    fn start(&self, shared: &Arc<Shared>, jobs: &mut JoinSet<()>, bytes: &[u8], slot: Slot) {
        match serde_json::from_slice::<JobPayload>(bytes) {
            Ok(payload) => {
                let shared = shared.clone();
                jobs.spawn(job::run(shared, payload, slot));
            }
            Err(e) => {
                // serde's message may quote a value of the payload (a secret): only its position.
                let message = format!(
                    "the runner cannot read the job payload ({:?} error at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                );
                let value: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
                let id = value.as_ref().and_then(|v| v.get("job_id")).and_then(serde_json::Value::as_i64);
                let token = value.as_ref().and_then(|v| v.get("token")).and_then(serde_json::Value::as_str).map(str::to_owned);
                match (id, token) {
                    (Some(job), Some(token)) => {
                        let shared = shared.clone();
                        jobs.spawn(async move {
                            job::report_unreadable(&shared.api, job, &token, message, &shared.abandon).await;
                            drop(slot);
                        });
                    }
                    _ => {
                        tracing::error!(error = %message, "the server sent a job this runner cannot read or report; its lease will expire")
                    }
                }
            }
        }
    }

    /// Lets running jobs end: grace, then cancel, then abandon.
    async fn drain(&self, jobs: &mut JoinSet<()>, shared: &Shared) {
        if jobs.is_empty() {
            return;
        }
        tracing::info!(running = jobs.len(), grace_s = self.grace.as_secs(), "stopping: letting running jobs finish");
        if wait_all(jobs, self.grace).await {
            return;
        }
        tracing::warn!(running = jobs.len(), "shutdown grace period over: canceling running jobs");
        shared.force.cancel();
        if wait_all(jobs, self.grace).await {
            return;
        }
        tracing::error!(
            running = jobs.len(),
            "jobs still running after their cancel: abandoning them (the server will expire their leases)"
        );
        shared.abandon.cancel();
        if !wait_all(jobs, Duration::from_secs(5)).await {
            jobs.abort_all();
            while jobs.join_next().await.is_some() {}
        }
    }
}

/// A workspace slot held by a job, with its concurrency permit; both return on drop.
pub(crate) struct Slot {
    index: usize,
    pool: Arc<Mutex<Vec<usize>>>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    /// Takes a free slot; there is one for every permit.
    fn take(pool: &Arc<Mutex<Vec<usize>>>, permit: OwnedSemaphorePermit) -> Slot {
        let index = pool.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        Slot { index, pool: pool.clone(), _permit: permit }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(self.index);
    }
}

/// Collects the job tasks that ended.
fn reap(jobs: &mut JoinSet<()>) {
    while let Some(result) = jobs.try_join_next() {
        if let Err(e) = result {
            tracing::error!(error = %e, "a job task failed");
        }
    }
}

/// Waits for every job task, at most `limit`; whether all ended.
async fn wait_all(jobs: &mut JoinSet<()>, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        while let Some(result) = jobs.join_next().await {
            if let Err(e) = result {
                tracing::error!(error = %e, "a job task failed");
            }
        }
    })
    .await
    .is_ok()
}

/// A short tag naming this runner's work directory, in front of every executor job id it
/// makes: what it finds with that tag at start-up is its own leftovers, never another runner's
/// on the same Docker Engine.
fn owner_tag(work_dir: &Path) -> String {
    use sha2::{Digest as _, Sha256};
    let dir = std::fs::canonicalize(work_dir).unwrap_or_else(|_| work_dir.to_owned());
    let digest = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    format!("r{}-", hex::encode(&digest[..4]))
}
