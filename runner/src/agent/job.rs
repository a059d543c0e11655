//! The agent's side of one job: heartbeat, the log shipped to the server, the finish report,
//! and a [`JobHost`] that checks out from the server's git endpoint and moves artifacts over
//! HTTP. The attempt itself is the one job runner's ([`crate::job::run`]), the same as under
//! `piste run`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use scheduler::protocol::{FinishLog, FinishRequest, JobPayload};
use scheduler::{FailureReason, Outcome};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::api::{Api, Backoff, CallError, retrying};
use super::checkout::{CheckoutError, CheckoutRequest, Checkouts, Fetched, container_project_dir};
use super::logs::{self, LogEnd};
use crate::artifacts::{self, Limits};
use crate::cache::CacheStore;
use crate::cas::Digest;
use crate::executor::{Executor, ProcessLedger};
use crate::job::{self, AttemptEnv, Failure, GREEN, GitSettings, JobHost, RED, RESET, error_chain};
use crate::joblog::LogWriter;
use crate::mask::{MaskCache, Masker, SecretSet};
use crate::workspace::{GitStrategy, SubmoduleStrategy};

/// What every job of one agent shares.
pub(crate) struct Shared {
    pub api: Api,
    pub runner_name: String,
    pub runner_tags: Vec<String>,
    /// The runner token, masked in logs as well (it never belongs there).
    pub runner_token: String,
    pub executor: Arc<dyn Executor>,
    pub containers: bool,
    pub checkouts: Checkouts,
    pub cache: CacheStore,
    /// Where executors record the processes they start ([`crate::executor::reap_process_groups`]).
    pub ledger: ProcessLedger,
    /// In front of every executor job id (see `owner_tag`).
    pub owner: String,
    /// Archives in transit.
    pub tmp_dir: PathBuf,
    /// What built-in steps keep between jobs (cached deployment clones): `<work_dir>/steps`.
    pub steps_dir: PathBuf,
    /// The shutdown grace period is over: cancel scripts.
    pub force: CancellationToken,
    /// Give up on jobs at once, reporting nothing.
    pub abandon: CancellationToken,
    /// How long new output may wait before it is sent (`log_interval_ms`).
    pub log_interval: std::time::Duration,
    /// Compiled secret sets of recent jobs (the projects' secrets with the runner token).
    pub masks: MaskCache,
    /// Finish reports waiting for the server's acknowledgement after their job gave its slot
    /// back: as many as there are slots ([`run`]).
    pub reporting: Arc<Semaphore>,
}

/// How a job is being stopped.
#[derive(Clone)]
pub(crate) struct Signals {
    /// The job is not ours any more (or the runner abandons it): stop, report nothing.
    pub lost: CancellationToken,
    /// Stop the script (`after_script` still runs). Cancelled on a server cancel, a refused
    /// log, a lost job, and when the shutdown grace period ends.
    pub script: CancellationToken,
    /// The server asked for the cancel.
    pub server_cancel: CancellationToken,
}

impl Signals {
    pub(crate) fn mark_lost(&self) {
        self.lost.cancel();
        self.script.cancel();
    }
}

/// Runs one job in workspace slot `slot` and reports it, unless it is taken away. The slot
/// goes back once the job is over, before its finish report is acknowledged: the next job
/// starts while the server stores this one's result (its log, with object storage). At most
/// one report per slot waits so; past that, the slot waits for its report.
pub(crate) async fn run(shared: Arc<Shared>, payload: JobPayload, slot: super::Slot) {
    let job = payload.job_id;
    let started = std::time::Instant::now();
    tracing::info!(job, pipeline = payload.pipeline_id, project = %payload.project, name = %payload.job.name, attempt = payload.attempt, slot = slot.index, "job received");
    let signals =
        Signals { lost: shared.abandon.child_token(), script: shared.force.child_token(), server_cancel: CancellationToken::new() };
    let reported = CancellationToken::new();
    let heartbeat =
        tokio::spawn(heartbeat(shared.api.clone(), job, payload.token.clone(), payload.lease_ms, signals.clone(), reported.clone()));

    let runner_vars = vec![
        ("CI_RUNNER_DESCRIPTION".to_string(), shared.runner_name.clone()),
        ("CI_RUNNER_TAGS".to_string(), serde_json::to_string(&shared.runner_tags).unwrap_or_default()),
    ];
    // Before anything is logged: a reused job's log is the server's (the earlier job's).
    match super::reuse::check(&shared, &payload, &runner_vars, &signals).await {
        super::reuse::Check::Run => {}
        super::reuse::Check::Reused(from) => {
            tracing::info!(job, elapsed_ms = started.elapsed().as_millis() as u64, "job finished: {from}");
            reported.cancel();
            let _ = heartbeat.await;
            return;
        }
        super::reuse::Check::Lost => {
            tracing::warn!(job, "job taken away by the server before it started; not reporting it");
            reported.cancel();
            let _ = heartbeat.await;
            return;
        }
    }

    // What the project's jobs share (its secrets, the runner token, the signing key) is
    // compiled once and kept; the job token is this job's alone.
    let mut secrets: Vec<Vec<u8>> = payload.job.masked_values().into_iter().map(String::into_bytes).collect();
    secrets.push(shared.runner_token.clone().into_bytes());
    if let Some(key) = &payload.signing_key {
        secrets.extend(key.mask_values().into_iter().map(String::into_bytes));
    }
    let masker = Masker::of_sets([shared.masks.get(secrets), SecretSet::for_one_log([payload.token.as_bytes()])]);
    let shipping = logs::Shipping { interval: shared.log_interval, whole_in_finish: payload.log_in_finish };
    let (log, shipper) = logs::spawn(shared.api.clone(), job, payload.token.clone(), masker, signals.clone(), shipping);

    let env = AttemptEnv {
        header: format!(
            "Running with piste-runner {} on {} ({} executor)",
            env!("CARGO_PKG_VERSION"),
            shared.runner_name,
            shared.executor.name()
        ),
        predefined: payload.predefined.clone(),
        dotenv: payload.dotenv.clone(),
        runner_vars,
        containers: shared.containers,
        container_project_dir: container_project_dir(&payload.project),
        default_image: None,
        // Unique even when two runners on one Docker host get jobs with the same id from two
        // servers.
        request_id: format!("{}j{}-a{}-{:08x}", shared.owner, payload.job_id, payload.attempt, getrandom::u32().unwrap_or_default()),
        cache: Some(&shared.cache),
        tmp_dir: &shared.tmp_dir,
        ledger: Some(&shared.ledger),
        state_dir: &shared.steps_dir,
        signing_key: payload.signing_key.as_ref().map(|k| k.0.as_str()),
    };
    let host = AgentHost { shared: &shared, payload: &payload, slot: slot.index, signals: &signals };
    let attempt = job::run(&payload.job, &env, &host, shared.executor.as_ref(), &log, &signals.script, &signals.lost).await;
    let attempt = match attempt {
        Some(a) if a.outcome == Outcome::Canceled && !signals.server_cancel.is_cancelled() && shared.force.is_cancelled() => {
            let m = "the runner was shut down while the job ran".to_string();
            job::error(&log, &m).await;
            Some(system(m))
        }
        other => other,
    };
    drop(log);
    let shipped = shipper.await.unwrap_or_else(|e| logs::LogResult {
        bytes: 0,
        end: LogEnd::Failed(format!("the log task failed: {e}")),
        whole: None,
    });
    let attempt = match (attempt, &shipped.end) {
        (None, _) | (_, LogEnd::Lost) => None,
        (Some(_), LogEnd::Failed(m)) => Some(system(format!("the job's log could not be stored: {m}"))),
        (Some(a), LogEnd::Complete) => Some(a),
    };
    match attempt {
        None if shared.abandon.is_cancelled() => tracing::warn!(job, "job abandoned at shutdown; the server will expire its lease"),
        None => tracing::warn!(job, "job taken away by the server (its lease was given up); not reporting it"),
        Some(a) => {
            // Nothing of the job touches its workspace any more (artifacts are up, dotenv read).
            let _report = shared.reporting.clone().acquire_owned().await;
            drop(slot);
            let log_bytes = shipped.bytes + shipped.whole.as_ref().map_or(0, |w| w.len() as u64);
            let log = shipped.whole.map(FinishLog);
            let req = FinishRequest {
                outcome: a.outcome,
                exit_code: a.exit_code,
                reason: a.reason,
                log_bytes,
                log,
                dotenv: a.dotenv,
                coverage: a.coverage,
            };
            let (api, token) = (&shared.api, payload.token.as_str());
            match retrying(&signals.lost, "finish report", job, || api.finish(job, token, &req)).await {
                Ok(()) => {
                    tracing::info!(job, outcome = ?req.outcome, exit_code = ?req.exit_code, log_bytes = req.log_bytes, elapsed_ms = started.elapsed().as_millis() as u64, "job finished");
                }
                Err(CallError::Lost(_) | CallError::Stopped) => {
                    tracing::warn!(job, "job taken away before its finish report was acknowledged")
                }
                Err(e) => tracing::error!(job, error = %e, "the server refused the job's finish report"),
            }
        }
    }
    reported.cancel();
    let _ = heartbeat.await;
}

fn system(reason: String) -> job::Attempt {
    job::Attempt {
        outcome: Outcome::Failed { reason: FailureReason::RunnerSystemFailure, exit_code: None },
        exit_code: None,
        reason: Some(reason),
        artifacts: None,
        dotenv: Vec::new(),
        coverage: None,
    }
}

/// The agent's side of a job: checkouts from the server, artifacts over HTTP.
struct AgentHost<'a> {
    shared: &'a Shared,
    payload: &'a JobPayload,
    slot: usize,
    signals: &'a Signals,
}

impl AgentHost<'_> {
    /// A call's failure as the job sees it; a lost job marks the signals.
    fn failure(&self, e: CallError, what: String) -> Failure {
        match e {
            CallError::Lost(_) => {
                self.signals.mark_lost();
                Failure::Lost
            }
            CallError::Stopped if self.signals.lost.is_cancelled() => Failure::Lost,
            CallError::Stopped => Failure::Canceled,
            e => Failure::System(format!("{what} failed: {e}")),
        }
    }
}

impl JobHost for AgentHost<'_> {
    async fn checkout(&self, git: &GitSettings, log: &LogWriter, cancel: &CancellationToken) -> Result<PathBuf, Failure> {
        let payload = self.payload;
        let strategy = GitStrategy::parse(git.strategy.as_deref().unwrap_or("")).map_err(|e| Failure::Job(e.to_string()))?;
        let depth = git.depth().map_err(Failure::Job)?;
        let submodules = git.submodules().map_err(Failure::Job)?;
        let submodule_strategy = submodules.strategy;
        let short = payload.git.sha.get(..8).unwrap_or(&payload.git.sha);
        match strategy {
            GitStrategy::Fetch => log.line("Fetching changes...").await,
            GitStrategy::Clone => log.line("Cloning repository...").await,
            GitStrategy::None => log.line("Skipping Git repository setup").await,
            GitStrategy::Empty => log.line("Skipping Git repository setup and creating an empty build directory").await,
        }
        let req = CheckoutRequest {
            project: payload.project.clone(),
            url: format!("{}{}", self.shared.api.base(), payload.git.path),
            token: payload.token.clone(),
            sha: payload.git.sha.clone(),
            git_ref: payload.git.git_ref.clone(),
            strategy,
            clean_flags: git.clean_flags.clone(),
            checkout: git.checkout,
            depth,
            submodules,
            slot: self.slot,
        };
        let result = self.shared.checkouts.prepare(req, cancel.clone()).await;
        if self.signals.lost.is_cancelled() {
            return Err(Failure::Lost);
        }
        match result {
            Ok((dir, fetched, output)) => {
                if matches!(strategy, GitStrategy::Fetch | GitStrategy::Clone) {
                    if fetched == Fetched::Cached {
                        log.line(format!("Commit {short} already on this runner")).await;
                    }
                    if git.checkout {
                        log.line(format!("Checking out {short} as detached HEAD (ref {})...", payload.git.git_ref)).await;
                        match submodule_strategy {
                            SubmoduleStrategy::Normal => log.line("Updating/initializing submodules...").await,
                            SubmoduleStrategy::Recursive => log.line("Updating/initializing submodules recursively...").await,
                            SubmoduleStrategy::None => {}
                        }
                        for line in output.lines() {
                            log.line(line.to_owned()).await;
                        }
                    } else {
                        log.line("Skipping Git checkout").await;
                    }
                }
                Ok(dir)
            }
            Err(CheckoutError::Canceled) => Err(Failure::Canceled),
            Err(CheckoutError::Job(m)) => Err(Failure::Job(m)),
            Err(CheckoutError::System(m)) => Err(Failure::System(m)),
        }
    }

    fn has_dependencies(&self) -> bool {
        !self.payload.dependencies.is_empty()
    }

    async fn dependencies(&self, workspace: &Path, log: &LogWriter, cancel: &CancellationToken) -> Result<(), Failure> {
        let (api, job, token) = (&self.shared.api, self.payload.job_id, self.payload.token.as_str());
        let limits = Limits::default();
        for dep in &self.payload.dependencies {
            log.line(format!("Downloading artifacts for {} ({})...", dep.name, dep.job_id)).await;
            let file = temp_path(&self.shared.tmp_dir, &format!("dep-{job}-{}", dep.job_id));
            let got =
                retrying(cancel, "artifact download", job, || api.get_dependency(job, token, dep.job_id, &file, limits.max_total_bytes))
                    .await;
            let result = match got {
                Ok(false) => {
                    log.line(format!("{} ({}) has no artifacts", dep.name, dep.job_id)).await;
                    Ok(())
                }
                Ok(true) => {
                    let (file2, dest) = (file.clone(), workspace.to_owned());
                    let extracted = tokio::task::spawn_blocking(move || {
                        let f = std::fs::File::open(&file2).map_err(|e| e.to_string())?;
                        artifacts::extract(std::io::BufReader::new(f), &dest, &limits).map_err(|e| error_chain(&e))
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                    match extracted {
                        Ok(summary) => {
                            log.line(format!(
                                "{GREEN}Downloaded artifacts for {}{RESET}: {} files, {} bytes",
                                dep.name, summary.files, summary.bytes
                            ))
                            .await;
                            Ok(())
                        }
                        Err(m) => Err(Failure::System(format!("the artifacts of `{}` cannot be extracted: {m}", dep.name))),
                    }
                }
                Err(e) => Err(self.failure(e, format!("downloading the artifacts of `{}`", dep.name))),
            };
            let _ = tokio::fs::remove_file(&file).await;
            if self.signals.lost.is_cancelled() {
                return Err(Failure::Lost);
            }
            result?;
        }
        Ok(())
    }

    async fn store_artifacts(&self, archive: &Path, digest: Digest, log: &LogWriter) -> Result<(), Failure> {
        let (api, job, token) = (&self.shared.api, self.payload.job_id, self.payload.token.as_str());
        // Same archive as one the project already uploaded (a retry, a rebuilt tree): send its
        // digest only. Anything but a clear answer falls through to the upload, which retries.
        match api.link_artifacts(job, token, &digest).await {
            Ok(true) => {
                log.line(format!("{GREEN}Artifacts already on the server: upload skipped{RESET}")).await;
                return Ok(());
            }
            Err(e @ CallError::Lost(_)) => return Err(self.failure(e, "uploading artifacts".into())),
            Ok(false) | Err(_) => {}
        }
        match retrying(&self.signals.lost, "artifact upload", job, || api.put_artifacts(job, token, archive, &digest)).await {
            Ok(()) => {
                log.line(format!("{GREEN}Uploaded artifacts{RESET}")).await;
                Ok(())
            }
            Err(e) => Err(self.failure(e, "uploading artifacts".into())),
        }
    }
}

/// Extends the lease every lease/3; sets the cancel and lost signals from the answers. Ends
/// when `done` is cancelled (the job was reported) or the job is lost.
async fn heartbeat(api: Api, job: i64, token: String, lease_ms: u64, signals: Signals, done: CancellationToken) {
    let mut lease = Duration::from_millis(lease_ms.max(300));
    let mut wait = lease / 3;
    let mut backoff = Backoff::new(lease / 6);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            biased;
            () = done.cancelled() => return,
            () = signals.lost.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let timeout = (lease / 3).clamp(Duration::from_secs(1), Duration::from_secs(10));
        let answer = tokio::select! {
            biased;
            () = done.cancelled() => return,
            a = api.heartbeat(job, &token, timeout) => a,
        };
        match answer {
            Ok(hb) => {
                if failures > 0 {
                    tracing::info!(job, failures, "heartbeat succeeded after retrying");
                }
                failures = 0;
                backoff.reset();
                if hb.cancel && !signals.server_cancel.is_cancelled() {
                    tracing::info!(job, "job canceled on the server; stopping its script");
                    signals.server_cancel.cancel();
                    signals.script.cancel();
                }
                if hb.lease_ms > 0 {
                    lease = Duration::from_millis(hb.lease_ms.max(300));
                }
                wait = lease / 3;
            }
            Err(CallError::Lost(status)) => {
                tracing::warn!(job, status, "heartbeat refused: the job was taken away; stopping it");
                signals.mark_lost();
                return;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(job, error = %e, "heartbeat failed; retrying");
                }
                // Sooner than the usual period: the lease is running out.
                wait = backoff.next_delay().min(lease / 3);
            }
        }
    }
}

/// A fresh name in `dir`.
fn temp_path(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!("{what}-{:016x}.tar.zst", getrandom::u64().unwrap_or_default()))
}

/// Reports a job whose payload this runner cannot read as a system failure, with one log line.
pub(crate) async fn report_unreadable(api: &Api, job: i64, token: &str, message: String, stop: &CancellationToken) {
    let line = format!("{RED}ERROR: Job failed (system failure): {message}{RESET}\n").into_bytes();
    let len = line.len() as u64;
    let _ = retrying(stop, "log upload", job, || api.put_log(job, token, 0, line.clone())).await;
    let req = FinishRequest {
        outcome: Outcome::Failed { reason: FailureReason::RunnerSystemFailure, exit_code: None },
        exit_code: None,
        reason: Some(message.clone()),
        log_bytes: len,
        dotenv: Vec::new(),
        coverage: None,
        log: None,
    };
    match retrying(stop, "finish report", job, || api.finish(job, token, &req)).await {
        Ok(()) => tracing::warn!(job, error = %message, "reported an unreadable job as a system failure"),
        Err(e) => tracing::error!(job, error = %e, "could not report an unreadable job"),
    }
}
