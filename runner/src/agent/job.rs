//! One job on this node, from its payload to its finish report: heartbeat, checkout,
//! dependencies' artifacts, the executor, the log, artifacts, finish.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pipeline_spec::expand::expand;
use scheduler::protocol::{FinishRequest, JobOutcome, JobPayload};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::api::{Api, Backoff, CallError, retrying};
use super::checkout::{CheckoutError, CheckoutRequest, Checkouts, Fetched, container_project_dir};
use super::logs::{self, LogEnd, LogWriter};
use crate::artifacts::{self, ArtifactSpec, Limits};
use crate::cas::Digest;
use crate::executor::{self, Executor, ImageSpec, JobRequest, PullPolicy, ServiceSpec};
use crate::workspace::GitStrategy;

/// GitLab's defaults.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
const AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

const RESET: &str = "\x1b[0;m";
const GREEN: &str = "\x1b[32;1m";
const YELLOW: &str = "\x1b[0;33m";
const RED: &str = "\x1b[31;1m";
const CYAN: &str = "\x1b[36;1m";

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
    /// Archives in transit.
    pub tmp_dir: PathBuf,
    /// The shutdown grace period is over: cancel scripts.
    pub force: CancellationToken,
    /// Give up on jobs at once, reporting nothing.
    pub abandon: CancellationToken,
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

/// How the attempt ended, for the finish report.
struct Attempt {
    outcome: JobOutcome,
    exit_code: Option<i32>,
    reason: Option<String>,
}

impl Attempt {
    fn system(reason: String) -> Attempt {
        Attempt { outcome: JobOutcome::RunnerSystemFailure, exit_code: None, reason: Some(reason) }
    }

    fn job_error(reason: String) -> Attempt {
        Attempt { outcome: JobOutcome::ScriptFailure, exit_code: None, reason: Some(reason) }
    }

    fn canceled() -> Attempt {
        Attempt { outcome: JobOutcome::Canceled, exit_code: None, reason: None }
    }
}

/// `Err(())`: the job was lost or abandoned; nothing more is reported.
type Step<T> = Result<T, ()>;

/// Runs one job in workspace slot `slot` and reports it, unless it is taken away.
pub(crate) async fn run(shared: Arc<Shared>, payload: JobPayload, slot: usize) {
    let job = payload.job_id;
    let started = std::time::Instant::now();
    tracing::info!(job, pipeline = payload.pipeline_id, project = %payload.project, name = %payload.name, attempt = payload.attempt, slot, "job received");
    let signals =
        Signals { lost: shared.abandon.child_token(), script: shared.force.child_token(), server_cancel: CancellationToken::new() };
    let reported = CancellationToken::new();
    let heartbeat =
        tokio::spawn(heartbeat(shared.api.clone(), job, payload.token.clone(), payload.lease_ms, signals.clone(), reported.clone()));

    let mut secrets: Vec<Vec<u8>> = payload.variables.iter().filter(|v| v.masked).map(|v| v.value.clone().into_bytes()).collect();
    secrets.push(payload.token.clone().into_bytes());
    secrets.push(shared.runner_token.clone().into_bytes());
    let (log, shipper) = logs::spawn(shared.api.clone(), job, payload.token.clone(), secrets, signals.clone());

    let attempt = match attempt(&shared, &payload, slot, &log, &signals).await {
        Ok(mut a) => {
            if a.outcome == JobOutcome::Canceled && !signals.server_cancel.is_cancelled() && shared.force.is_cancelled() {
                a = Attempt::system("the runner was shut down while the job ran".into());
            }
            log.line(final_line(&a, payload.timeout_s)).await;
            Some(a)
        }
        Err(()) => None,
    };
    drop(log);
    let shipped = shipper.await.unwrap_or_else(|e| logs::LogResult { bytes: 0, end: LogEnd::Failed(format!("the log task failed: {e}")) });
    let attempt = match (attempt, &shipped.end) {
        (None, _) | (_, LogEnd::Lost) => None,
        (Some(_), LogEnd::Failed(m)) => Some(Attempt::system(format!("the job's log could not be stored: {m}"))),
        (Some(a), LogEnd::Complete) => Some(a),
    };
    match attempt {
        None if shared.abandon.is_cancelled() => tracing::warn!(job, "job abandoned at shutdown; the server will expire its lease"),
        None => tracing::warn!(job, "job taken away by the server (its lease was given up); not reporting it"),
        Some(a) => {
            let req = FinishRequest { outcome: a.outcome, exit_code: a.exit_code, reason: a.reason, log_bytes: shipped.bytes };
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

/// Everything between the first log line and the last.
async fn attempt(shared: &Shared, payload: &JobPayload, slot: usize, log: &LogWriter, signals: &Signals) -> Step<Attempt> {
    log.line(format!(
        "{RESET}Running with piste-runner {} on {} ({} executor)",
        env!("CARGO_PKG_VERSION"),
        shared.runner_name,
        shared.executor.name()
    ))
    .await;

    // Checkout.
    let workspace = match checkout(shared, payload, slot, log, signals).await? {
        Ok(dir) => dir,
        Err(a) => return Ok(a),
    };
    if signals.script.is_cancelled() {
        return Ok(Attempt::canceled());
    }

    // Dependencies' artifacts.
    if let Err(a) = dependencies(shared, payload, &workspace, log, signals).await? {
        return Ok(a);
    }
    if signals.script.is_cancelled() {
        return Ok(Attempt::canceled());
    }

    // The script.
    let project_dir = if shared.containers { container_project_dir(&payload.project) } else { workspace.to_string_lossy().into_owned() };
    let env = environment(shared, payload, &project_dir);
    let request = job_request(payload, &workspace, project_dir, env.clone());
    let (tx, rx) = mpsc::channel(16);
    log.stream(rx).await;
    let report = tokio::select! {
        report = shared.executor.run(request, tx, signals.script.clone()) => report,
        // Dropping the run stops the job and cleans up (the executor's guard).
        () = signals.lost.cancelled() => return Err(()),
    };
    let attempt = match report.outcome {
        executor::Outcome::Success => Attempt { outcome: JobOutcome::Success, exit_code: Some(0), reason: None },
        executor::Outcome::Failed { exit_code, reason } => match reason {
            executor::FailureReason::ScriptFailure => Attempt { outcome: JobOutcome::ScriptFailure, exit_code, reason: None },
            executor::FailureReason::JobTimeout => {
                Attempt { outcome: JobOutcome::JobExecutionTimeout, exit_code, reason: Some("the job ran longer than its timeout".into()) }
            }
            executor::FailureReason::RunnerSystemFailure(m) => {
                Attempt { outcome: JobOutcome::RunnerSystemFailure, exit_code, reason: Some(m) }
            }
        },
        executor::Outcome::Canceled => Attempt::canceled(),
    };

    // Artifacts.
    upload_artifacts(shared, payload, &workspace, &env, attempt, log, signals).await
}

/// `Ok(Err(attempt))`: the job ends here with that result.
async fn checkout(
    shared: &Shared,
    payload: &JobPayload,
    slot: usize,
    log: &LogWriter,
    signals: &Signals,
) -> Step<Result<PathBuf, Attempt>> {
    section_start(log, "get_sources", "Getting source from Git repository").await;
    let strategy = match GitStrategy::parse(payload.git.strategy.as_deref().unwrap_or("")) {
        Ok(s) => s,
        Err(e) => {
            error(log, &e.to_string()).await;
            return Ok(Err(Attempt::job_error(e.to_string())));
        }
    };
    let checkout = variable(payload, "GIT_CHECKOUT").is_none_or(|v| v != "false");
    let short = payload.git.sha.get(..8).unwrap_or(&payload.git.sha);
    match strategy {
        GitStrategy::Fetch => log.line("Fetching changes...").await,
        GitStrategy::Clone => log.line("Cloning repository...").await,
        GitStrategy::None => log.line("Skipping Git repository setup").await,
        GitStrategy::Empty => log.line("Skipping Git repository setup and creating an empty build directory").await,
    }
    let req = CheckoutRequest {
        project: payload.project.clone(),
        url: format!("{}{}", shared.api.base(), payload.git.path),
        token: payload.token.clone(),
        sha: payload.git.sha.clone(),
        git_ref: payload.git.git_ref.clone(),
        strategy,
        clean_flags: payload.git.clean_flags.clone(),
        checkout,
        slot,
    };
    let result = shared.checkouts.prepare(req, signals.script.clone()).await;
    if signals.lost.is_cancelled() {
        return Err(());
    }
    let dir = match result {
        Ok((dir, fetched)) => {
            if matches!(strategy, GitStrategy::Fetch | GitStrategy::Clone) {
                if fetched == Fetched::Cached {
                    log.line(format!("Commit {short} already on this runner")).await;
                }
                if checkout {
                    log.line(format!("Checking out {short} as detached HEAD (ref {})...", payload.git.git_ref)).await;
                } else {
                    log.line("Skipping Git checkout").await;
                }
            }
            dir
        }
        Err(CheckoutError::Canceled) => return Ok(Err(Attempt::canceled())),
        Err(CheckoutError::Job(m)) => {
            error(log, &m).await;
            return Ok(Err(Attempt::job_error(m)));
        }
        Err(CheckoutError::System(m)) => {
            error(log, &m).await;
            return Ok(Err(Attempt::system(m)));
        }
    };
    section_end(log, "get_sources").await;
    Ok(Ok(dir))
}

async fn dependencies(
    shared: &Shared,
    payload: &JobPayload,
    workspace: &Path,
    log: &LogWriter,
    signals: &Signals,
) -> Step<Result<(), Attempt>> {
    if payload.dependencies.is_empty() {
        return Ok(Ok(()));
    }
    let (api, job, token) = (&shared.api, payload.job_id, payload.token.as_str());
    let limits = Limits::default();
    section_start(log, "download_artifacts", "Downloading artifacts").await;
    for dep in &payload.dependencies {
        log.line(format!("Downloading artifacts for {} ({})...", dep.name, dep.job_id)).await;
        let file = temp_path(&shared.tmp_dir, &format!("dep-{job}-{}", dep.job_id));
        let got = retrying(&signals.script, "artifact download", job, || {
            api.get_dependency(job, token, dep.job_id, &file, limits.max_total_bytes)
        })
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
                    Err(m) => Err(Attempt::system(format!("the artifacts of `{}` cannot be extracted: {m}", dep.name))),
                }
            }
            Err(CallError::Lost(_)) => {
                signals.mark_lost();
                Err(Attempt::canceled())
            }
            Err(CallError::Stopped) => Err(Attempt::canceled()),
            Err(e) => Err(Attempt::system(format!("downloading the artifacts of `{}` failed: {e}", dep.name))),
        };
        let _ = tokio::fs::remove_file(&file).await;
        if signals.lost.is_cancelled() {
            return Err(());
        }
        if let Err(a) = result {
            if let Some(r) = &a.reason {
                error(log, r).await;
            }
            return Ok(Err(a));
        }
    }
    section_end(log, "download_artifacts").await;
    Ok(Ok(()))
}

/// Collects and uploads artifacts as `artifacts:when` asks; a failed upload fails a job that
/// had succeeded.
async fn upload_artifacts(
    shared: &Shared,
    payload: &JobPayload,
    workspace: &Path,
    env: &[(String, String)],
    attempt: Attempt,
    log: &LogWriter,
    signals: &Signals,
) -> Step<Attempt> {
    let Some(spec) = &payload.artifacts else { return Ok(attempt) };
    let success = attempt.outcome == JobOutcome::Success;
    let wanted = match spec.when.as_str() {
        "always" => attempt.outcome != JobOutcome::Canceled,
        "on_failure" => !success && attempt.outcome != JobOutcome::Canceled,
        _ => success,
    };
    if !wanted {
        return Ok(attempt);
    }
    let section = if success { "upload_artifacts_on_success" } else { "upload_artifacts_on_failure" };
    section_start(log, section, if success { "Uploading artifacts for successful job" } else { "Uploading artifacts for failed job" })
        .await;
    let mut paths: Vec<String> = spec.paths.iter().map(|p| expand(p, &env)).collect();
    paths.extend(spec.dotenv.iter().map(|p| expand(p, &env)));
    let (exclude, untracked) = (spec.exclude.iter().map(|p| expand(p, &env)).collect::<Vec<_>>(), spec.untracked);
    let archive = temp_path(&shared.tmp_dir, &format!("artifacts-{}", payload.job_id));
    let (dir, archive2) = (workspace.to_owned(), archive.clone());
    let built = tokio::task::spawn_blocking(move || build_archive(&dir, paths, exclude, untracked, &archive2))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let result = match built {
        Err(m) => Err(format!("collecting artifacts failed: {m}")),
        Ok((warnings, None)) => {
            warn_all(log, &warnings).await;
            log.line(format!("{YELLOW}WARNING: No files to upload{RESET}")).await;
            Ok(())
        }
        Ok((warnings, Some((digest, files, bytes)))) => {
            warn_all(log, &warnings).await;
            log.line(format!("Uploading artifacts: {files} files, {bytes} bytes ({digest})...")).await;
            let (api, job, token) = (&shared.api, payload.job_id, payload.token.as_str());
            match retrying(&signals.lost, "artifact upload", job, || api.put_artifacts(job, token, &archive, &digest)).await {
                Ok(()) => {
                    log.line(format!("{GREEN}Uploaded artifacts{RESET}")).await;
                    Ok(())
                }
                Err(CallError::Lost(_)) => {
                    signals.mark_lost();
                    Ok(())
                }
                Err(CallError::Stopped) => Ok(()),
                Err(e) => Err(format!("uploading artifacts failed: {e}")),
            }
        }
    };
    let _ = tokio::fs::remove_file(&archive).await;
    if signals.lost.is_cancelled() {
        return Err(());
    }
    match result {
        Ok(()) => {
            section_end(log, section).await;
            Ok(attempt)
        }
        Err(m) => {
            error(log, &m).await;
            Ok(if success { Attempt::system(m) } else { attempt })
        }
    }
}

type Built = (Vec<String>, Option<(Digest, usize, u64)>);

/// Collects the artifacts and writes their archive to `out`; `None` when nothing matched.
fn build_archive(workspace: &Path, paths: Vec<String>, exclude: Vec<String>, untracked: bool, out: &Path) -> Result<Built, String> {
    let untracked = if untracked { untracked_files(workspace) } else { Vec::new() };
    let spec = ArtifactSpec { paths, exclude, untracked };
    let collected = artifacts::collect(workspace, &spec).map_err(|e| error_chain(&e))?;
    let mut warnings = collected.warnings;
    if collected.files.is_empty() {
        return Ok((warnings, None));
    }
    let file = std::fs::File::create(out).map_err(|e| format!("cannot create `{}`: {e}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let summary = artifacts::write_archive(workspace, &collected.files, &mut writer).map_err(|e| error_chain(&e))?;
    let file = writer.into_inner().map_err(|e| format!("cannot write `{}`: {}", out.display(), e.error()))?;
    file.sync_all().map_err(|e| format!("cannot write `{}`: {e}", out.display()))?;
    warnings.extend(summary.warnings);
    Ok((warnings, Some((summary.sha256, collected.files.len(), summary.bytes))))
}

/// Files git does not track and does not ignore (`artifacts:untracked`).
fn untracked_files(workspace: &Path) -> Vec<PathBuf> {
    let Ok(repo) = git2::Repository::open(workspace) else { return Vec::new() };
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false);
    let Ok(statuses) = repo.statuses(Some(&mut opts)) else { return Vec::new() };
    statuses.iter().filter(|s| s.status().is_wt_new()).filter_map(|s| s.path().ok().map(PathBuf::from)).collect()
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

/// The job's variables (later wins, duplicates removed) and the runner's own.
fn environment(shared: &Shared, payload: &JobPayload, project_dir: &str) -> Vec<(String, String)> {
    let builds_dir = if shared.containers {
        "/builds".to_owned()
    } else {
        Path::new(project_dir).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
    };
    let tags = serde_json::to_string(&shared.runner_tags).unwrap_or_default();
    let ours = [
        ("CI_PROJECT_DIR", project_dir.to_owned()),
        ("CI_BUILDS_DIR", builds_dir),
        ("CI_RUNNER_DESCRIPTION", shared.runner_name.clone()),
        ("CI_RUNNER_TAGS", tags),
    ];
    let mut env: Vec<(String, String)> = Vec::with_capacity(payload.variables.len() + ours.len());
    let all = payload.variables.iter().map(|v| (v.key.as_str(), v.value.clone())).chain(ours.iter().map(|(k, v)| (*k, v.clone())));
    for (key, value) in all {
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), value));
    }
    env
}

fn variable<'a>(payload: &'a JobPayload, key: &str) -> Option<&'a str> {
    payload.variables.iter().rev().find(|v| v.key == key).map(|v| v.value.as_str())
}

fn job_request(payload: &JobPayload, workspace: &Path, project_dir: String, env: Vec<(String, String)>) -> JobRequest {
    let pull = PullPolicy::parse_list::<String>;
    let image = payload.image.as_ref().map(|i| ImageSpec {
        name: i.name.clone(),
        entrypoint: i.entrypoint.clone(),
        pull_policy: pull(&i.pull_policy),
    });
    let services = payload
        .services
        .iter()
        .map(|s| ServiceSpec {
            name: s.name.clone(),
            alias: s.alias.clone(),
            entrypoint: s.entrypoint.clone(),
            command: s.command.clone(),
            variables: s.variables.clone(),
            pull_policy: Vec::new(),
        })
        .collect();
    let nonce = getrandom::u32().unwrap_or_default();
    JobRequest {
        // Unique even when two runners on one Docker host get jobs with the same id from two
        // servers.
        id: format!("j{}-a{}-{nonce:08x}", payload.job_id, payload.attempt),
        name: payload.name.clone(),
        image,
        services,
        script: payload.script.clone(),
        after_script: payload.after_script.clone(),
        env,
        workspace: workspace.to_owned(),
        project_dir,
        timeout: if payload.timeout_s == 0 { DEFAULT_TIMEOUT } else { Duration::from_secs(payload.timeout_s) },
        after_script_timeout: AFTER_SCRIPT_TIMEOUT,
    }
}

fn final_line(a: &Attempt, timeout_s: u64) -> String {
    match a.outcome {
        JobOutcome::Success => format!("{GREEN}Job succeeded{RESET}"),
        JobOutcome::ScriptFailure => match a.exit_code {
            Some(code) => format!("{RED}ERROR: Job failed: exit code {code}{RESET}"),
            None => format!("{RED}ERROR: Job failed: {}{RESET}", a.reason.as_deref().unwrap_or("script failure")),
        },
        JobOutcome::JobExecutionTimeout => {
            let t = if timeout_s == 0 { DEFAULT_TIMEOUT.as_secs() } else { timeout_s };
            format!("{RED}ERROR: Job failed: execution took longer than {t} seconds{RESET}")
        }
        JobOutcome::RunnerSystemFailure => {
            format!("{RED}ERROR: Job failed (system failure): {}{RESET}", a.reason.as_deref().unwrap_or("unknown"))
        }
        JobOutcome::Canceled => format!("{RED}ERROR: Job failed: canceled{RESET}"),
    }
}

async fn section_start(log: &LogWriter, name: &str, header: &str) {
    log.line(format!("section_start:{}:{name}\r\x1b[0K{CYAN}{header}{RESET}", unix_now())).await;
}

async fn section_end(log: &LogWriter, name: &str) {
    log.line(format!("section_end:{}:{name}\r\x1b[0K", unix_now())).await;
}

async fn error(log: &LogWriter, message: &str) {
    log.line(format!("{RED}ERROR: {message}{RESET}")).await;
}

async fn warn_all(log: &LogWriter, warnings: &[String]) {
    for w in warnings {
        log.line(format!("{YELLOW}WARNING: {w}{RESET}")).await;
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh name in `dir`.
fn temp_path(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!("{what}-{:016x}.tar.gz", getrandom::u64().unwrap_or_default()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Reports a job whose payload this runner cannot read as a system failure, with one log line.
pub(crate) async fn report_unreadable(api: &Api, job: i64, token: &str, message: String, stop: &CancellationToken) {
    let line = format!("{RED}ERROR: Job failed (system failure): {message}{RESET}\n").into_bytes();
    let len = line.len() as u64;
    let _ = retrying(stop, "log upload", job, || api.put_log(job, token, 0, line.clone())).await;
    let req = FinishRequest { outcome: JobOutcome::RunnerSystemFailure, exit_code: None, reason: Some(message.clone()), log_bytes: len };
    match retrying(stop, "finish report", job, || api.finish(job, token, &req)).await {
        Ok(()) => tracing::warn!(job, error = %message, "reported an unreadable job as a system failure"),
        Err(e) => tracing::error!(job, error = %e, "could not report an unreadable job"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_lines_read_like_gitlab() {
        let failed = Attempt { outcome: JobOutcome::ScriptFailure, exit_code: Some(3), reason: None };
        assert!(final_line(&failed, 0).contains("ERROR: Job failed: exit code 3"));
        assert!(final_line(&Attempt::canceled(), 0).contains("canceled"));
        let timeout = Attempt { outcome: JobOutcome::JobExecutionTimeout, exit_code: None, reason: None };
        assert!(final_line(&timeout, 0).contains("longer than 3600 seconds"));
        assert!(final_line(&Attempt::system("disk full".into()), 0).contains("(system failure): disk full"));
    }
}
