//! `piste run`: the scheduling engine driven in-process, jobs handed to an executor.
//!
//! The loop owns the [`scheduler::Engine`]; every engine command becomes an action here
//! (`RunJob` → a task on a free workspace slot, `CancelJob` → that task's token) and every
//! task result becomes an engine event. Concurrency is bounded by the number of slots.

mod cross;
pub mod events;
mod inputs;
mod job;
pub mod logs;
pub mod reuse;
pub mod trigger;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline_spec::model::Pipeline;
use pipeline_spec::plan::Plan;
use pipeline_spec::predefined::Context;
use scheduler::{Command, Engine, EngineOptions, Event, JobStatus, PlayManual, spec_from_plan};
use tokio::sync::mpsc::Sender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use events::{DownstreamSummary, JobResult, JobSummary, RunEvent, RunSummary};
pub use job::log_name;

use crate::executor::Executor;

/// How to run a planned pipeline.
pub struct RunConfig {
    pub executor: Arc<dyn Executor>,
    /// Whether the executor runs jobs in containers (changes `CI_PROJECT_DIR`).
    pub containers: bool,
    /// Jobs running at once.
    pub concurrency: usize,
    /// `<project>/.piste`: workspaces, cache, artifacts, logs.
    pub data_dir: PathBuf,
    /// The git work tree jobs check out from.
    pub source_repo: PathBuf,
    /// Include uncommitted changes of the work tree in every checkout.
    pub worktree: bool,
    /// Masked variables: their values never reach a log or the terminal.
    pub secrets: Vec<(String, String)>,
    /// `--var` values: highest precedence.
    pub pipeline_vars: Vec<(String, String)>,
    /// Run only these jobs and what they need (empty: all).
    pub only: Vec<String>,
    /// Image for jobs without one (container executors).
    pub default_image: Option<String>,
    /// Send each log line as an event (the terminal and JSON outputs need them).
    pub stream_logs: bool,
    /// `--sign-key`: a PKCS#8 PEM ECDSA P-256 key `piste/image-build@v1` signs images with
    /// (never a variable of the jobs); `None`: images are unsigned, and their logs say so.
    pub signing_key: Option<String>,
    /// Reuse of earlier results (`--reuse`, `--no-reuse`, `.piste/config.toml`).
    pub reuse: reuse::Mode,
    /// How trigger jobs create downstream pipelines; `None`: they fail, saying so.
    pub downstream: Option<trigger::Downstream>,
    /// The workspace slots of the run this pipeline is part of (`None`: `concurrency` new ones).
    pub slots: Option<Arc<SlotPool>>,
}

/// Workspace slots: `-j` of them for a whole run, downstream pipelines included. A job holds a
/// [`SlotLease`] while it runs; trigger jobs hold none.
pub struct SlotPool {
    permits: Arc<tokio::sync::Semaphore>,
    free: Mutex<Vec<usize>>,
}

impl SlotPool {
    pub fn new(n: usize) -> Arc<SlotPool> {
        let n = n.max(1);
        Arc::new(SlotPool { permits: Arc::new(tokio::sync::Semaphore::new(n)), free: Mutex::new((0..n).rev().collect()) })
    }

    fn lease(self: &Arc<Self>, permit: tokio::sync::OwnedSemaphorePermit) -> SlotLease {
        let slot = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop().expect("a permit guarantees a free slot");
        SlotLease { pool: self.clone(), slot, _permit: permit }
    }

    fn try_lease(self: &Arc<Self>) -> Option<SlotLease> {
        self.permits.clone().try_acquire_owned().ok().map(|p| self.lease(p))
    }
}

/// One slot, given back when dropped (the slot first, then the permit).
struct SlotLease {
    pool: Arc<SlotPool>,
    slot: usize,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        self.pool.free.lock().unwrap_or_else(|e| e.into_inner()).push(self.slot);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Spec(#[from] scheduler::SpecError),
    #[error("cannot prepare `{}`: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Inputs(String),
    #[error(
        "the pipeline has no job to run for this trigger: `piste jobs` with the same `--branch`, `--tag` or `--source` shows what its rules keep"
    )]
    Empty,
}

fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Runs `plan` to completion (or until `cancel`), reporting progress on `events`.
pub async fn run_pipeline(
    pipeline: Arc<Pipeline>,
    plan: Arc<Plan>,
    context: Context,
    config: RunConfig,
    events: Sender<RunEvent>,
    cancel: CancellationToken,
) -> Result<RunSummary, RunError> {
    let start = Instant::now();
    let mut spec = spec_from_plan(&plan, &pipeline);
    if spec.jobs.is_empty() {
        return Err(RunError::Empty);
    }
    let play = if config.only.is_empty() {
        PlayManual::None
    } else {
        spec = spec.subset(&config.only)?;
        PlayManual::Jobs(config.only.clone())
    };
    let mut engine = Engine::new(spec, EngineOptions { play_manual: play })?;
    let mut context = context;

    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| RunError::Io { path, source }
    };
    std::fs::create_dir_all(&config.data_dir).map_err(io(&config.data_dir))?;
    let (pipeline_id, log_dir) = next_pipeline(&config.data_dir).map_err(io(&config.data_dir))?;
    // A local pipeline's number in the project (`CI_PIPELINE_IID`, children included, as in
    // GitLab) is also its id unless one was given.
    if context.pipeline_id == 0 {
        context.pipeline_id = pipeline_id;
    }
    context.pipeline_iid = pipeline_id;
    context.pipeline_created_at = events::now_rfc3339_seconds();
    let _ = events.send(RunEvent::PipelineStarted { pipeline_id, source: context.source.as_str().to_string() }).await;
    let cas_root = config.data_dir.join("artifacts");
    let cas = crate::cas::Store::open(&cas_root).map_err(io(&cas_root))?;
    let inputs =
        inputs::Inputs::new(&config.source_repo, &config.data_dir, &context.commit_sha, config.worktree).map_err(RunError::Inputs)?;

    let index: HashMap<String, usize> = plan.jobs.iter().enumerate().map(|(i, j)| (j.name.clone(), i)).collect();
    let shared = Arc::new(job::Shared {
        executor: config.executor.clone(),
        containers: config.containers,
        inputs,
        cas,
        log_dir: log_dir.clone(),
        context,
        pipeline: pipeline.clone(),
        plan: plan.clone(),
        pipeline_vars: config.pipeline_vars.clone(),
        secrets: config.secrets.clone(),
        events: events.clone(),
        stream_logs: config.stream_logs,
        outputs: Arc::new(Mutex::new(HashMap::new())),
        default_image: config.default_image.clone(),
        pipeline_id,
        run_id: run_id(pipeline_id),
        signing_key: config.signing_key.clone().map(scheduler::protocol::SigningKey),
        reuse: config.reuse,
        records: reuse::Records::new(&config.data_dir),
        source_repo: config.source_repo.clone(),
        worktree: config.worktree,
        data_dir: config.data_dir.clone(),
        concurrency: config.concurrency.max(1),
        slots: config.slots.clone().unwrap_or_else(|| SlotPool::new(config.concurrency)),
        downstream: config.downstream.clone(),
        children: trigger::Children::default(),
    });

    let slots = shared.slots.clone();
    // A slot acquired while waiting, not yet given to a job.
    let mut spare: Option<SlotLease> = None;
    let mut queue: VecDeque<(String, u32)> = VecDeque::new();
    let mut running: JoinSet<(String, u32, job::Attempt)> = JoinSet::new();
    let mut tokens: HashMap<String, CancellationToken> = HashMap::new();
    // Attempts whose end has been reported (`job_finished`), so none is reported twice.
    let mut reported: std::collections::HashSet<(String, u32)> = std::collections::HashSet::new();
    let mut summaries: HashMap<String, JobSummary> = HashMap::new();
    let mut finished: Option<(scheduler::PipelineStatus, bool)> = None;
    let mut canceled = false;
    // `resource_group`: who holds each group, and who waits for it (in the order they asked).
    let mut held: HashMap<String, String> = HashMap::new();
    let mut waiting: HashMap<String, VecDeque<(String, u32)>> = HashMap::new();

    let mut commands = engine.on(Event::Start { now: now_ms(start) }).unwrap_or_default();
    loop {
        // Apply the engine's commands.
        let mut grants = Vec::new();
        for cmd in commands.drain(..) {
            match cmd {
                Command::RunJob { job, attempt } => queue.push_back((job, attempt)),
                Command::WaitForResource { job, attempt, group } => match held.entry(group) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        waiting.entry(e.key().clone()).or_default().push_back((job, attempt));
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(job.clone());
                        grants.push(Event::ResourceGranted { job, attempt, now: now_ms(start) });
                    }
                },
                Command::ReleaseResource { job, group, .. } => {
                    if held.get(&group) == Some(&job) {
                        held.remove(&group);
                    } else if let Some(q) = waiting.get_mut(&group) {
                        q.retain(|(j, _)| *j != job);
                    }
                    // The next one still waiting (a canceled one no longer is).
                    while !held.contains_key(&group) {
                        let Some((next, attempt)) = waiting.get_mut(&group).and_then(VecDeque::pop_front) else { break };
                        if engine.job_status(&next) == Some(JobStatus::WaitingForResource) {
                            held.insert(group.clone(), next.clone());
                            grants.push(Event::ResourceGranted { job: next, attempt, now: now_ms(start) });
                        }
                    }
                }
                Command::CancelJob { job, .. } => {
                    if let Some(t) = tokens.get(&job) {
                        t.cancel();
                    }
                }
                Command::JobStatusChanged { job, attempt, status } => {
                    let Some(&i) = index.get(&job) else { continue };
                    let pj = &plan.jobs[i];
                    let result = match status {
                        JobStatus::Skipped => Some(JobResult::Skipped),
                        JobStatus::Manual => Some(JobResult::Manual),
                        // Once per attempt: one that ran was reported when it ended.
                        JobStatus::Canceled if !tokens.contains_key(&job) && !reported.contains(&(job.clone(), attempt)) => {
                            Some(JobResult::Canceled)
                        }
                        _ => None,
                    };
                    if let Some(result) = result {
                        let s = JobSummary {
                            job: job.clone(),
                            stage: pj.stage.clone(),
                            status: result,
                            allow_failure: pj.allow_failure.any(),
                            attempt,
                            duration_ms: None,
                            reused_from: None,
                            coverage: None,
                        };
                        summaries.insert(job.clone(), s);
                        let _ = events
                            .send(RunEvent::JobFinished {
                                job,
                                stage: pj.stage.clone(),
                                status: result,
                                allow_failure: pj.allow_failure.any(),
                                exit_code: None,
                                attempt,
                                duration_ms: 0,
                                time: events::now_rfc3339(),
                                reason: None,
                                reused_from: None,
                                coverage: None,
                            })
                            .await;
                    }
                }
                Command::PipelineStatusChanged { .. } => {}
                Command::PipelineFinished { status, has_warnings } => finished = Some((status, has_warnings)),
            }
        }
        for grant in grants {
            commands.extend(engine.on(grant).unwrap_or_default());
        }
        // Start what fits: trigger jobs need no slot; the others wait for one.
        let mut no_slot = VecDeque::new();
        while let Some((job, attempt)) = queue.pop_front() {
            let Some(&i) = index.get(&job) else { continue };
            let is_trigger = pipeline.jobs.get(&plan.jobs[i].base).is_some_and(|j| j.trigger.is_some());
            let lease = if is_trigger { None } else { spare.take().or_else(|| slots.try_lease()) };
            if !is_trigger && lease.is_none() {
                no_slot.push_back((job, attempt));
                continue;
            }
            let token = cancel.child_token();
            tokens.insert(job.clone(), token.clone());
            let _ = events
                .send(RunEvent::JobStarted { job: job.clone(), stage: plan.jobs[i].stage.clone(), attempt, time: events::now_rfc3339() })
                .await;
            commands.extend(engine.on(Event::JobStarted { job: job.clone(), attempt, now: now_ms(start) }).unwrap_or_default());
            let shared = shared.clone();
            match lease {
                Some(lease) => {
                    running.spawn(async move {
                        let result = job::run(shared, i, attempt, lease.slot, token).await;
                        drop(lease);
                        (job, attempt, result)
                    });
                }
                None => {
                    let bridge = trigger::run_boxed(shared, i, attempt, token);
                    running.spawn(async move { (job, attempt, bridge.await) });
                }
            }
        }
        queue = no_slot;
        if !commands.is_empty() {
            continue;
        }
        if finished.is_some() && running.is_empty() {
            break;
        }
        // Wait for a job, a delayed job's time, or Ctrl-C.
        let wake = engine.next_wakeup().map(|at| Duration::from_millis(at.saturating_sub(now_ms(start))));
        if running.is_empty() && queue.is_empty() && wake.is_none() {
            // Nothing running, waiting for a slot or scheduled, not finished: the engine waits
            // for a person (a blocking manual job). A local run stops here.
            break;
        }
        tokio::select! {
            Some(done) = running.join_next() => {
                let Ok((job, attempt, result)) = done else { continue };
                tokens.remove(&job);
                let i = index[&job];
                let pj = &plan.jobs[i];
                let status = match result.outcome {
                    scheduler::Outcome::Success => JobResult::Success,
                    scheduler::Outcome::Failed { .. } => JobResult::Failed,
                    scheduler::Outcome::Canceled => JobResult::Canceled,
                };
                // The engine has the last word: an attempt canceled while it was ending (a
                // failure elsewhere with `on_job_failure: all`) ends canceled whatever it reported.
                let after = engine.on(Event::JobFinished { job: job.clone(), attempt, outcome: result.outcome, now: now_ms(start) }).unwrap_or_default();
                let status = if engine.job_status(&job) == Some(JobStatus::Canceled) { JobResult::Canceled } else { status };
                reported.insert((job.clone(), attempt));
                let allowed = pj.allow_failure.allows(result.exit_code);
                let duration_ms = result.duration.as_millis() as u64;
                summaries.insert(job.clone(), JobSummary { job: job.clone(), stage: pj.stage.clone(), status, allow_failure: allowed, attempt, duration_ms: Some(duration_ms), reused_from: result.reused.clone(), coverage: result.coverage });
                let _ = events.send(RunEvent::JobFinished {
                    job: job.clone(), stage: pj.stage.clone(), status, allow_failure: allowed, exit_code: result.exit_code,
                    attempt, duration_ms, time: events::now_rfc3339(), reason: result.reason.clone(), reused_from: result.reused.clone(),
                    coverage: result.coverage,
                }).await;
                commands.extend(after);
            }
            // A slot another pipeline of this run gave back.
            Ok(permit) = slots.permits.clone().acquire_owned(), if !queue.is_empty() && spare.is_none() => {
                spare = Some(slots.lease(permit));
            }
            _ = cancel.cancelled(), if !canceled => {
                canceled = true;
                queue.clear();
                commands.extend(engine.on(Event::Cancel { now: now_ms(start) }).unwrap_or_default());
            }
            _ = tokio::time::sleep(wake.unwrap_or(Duration::from_secs(3600))), if wake.is_some() => {
                commands.extend(engine.on(Event::Tick { now: now_ms(start) }).unwrap_or_default());
            }
            else => break,
        }
    }

    drop(spare);
    // Downstream pipelines that run on after their trigger job (no `strategy`) end first.
    let downstream = shared.children.finish().await;
    let (status, has_warnings) = finished.unwrap_or((engine.status(), engine.has_warnings()));
    let duration_ms = now_ms(start);
    // GitLab's "blocked": a manual job that does not allow failure holds what comes after it.
    let blocked_by: Vec<String> = if status == scheduler::PipelineStatus::Manual && !canceled {
        engine.blocking_manual_jobs().into_iter().map(str::to_owned).collect()
    } else {
        Vec::new()
    };
    let _ = events
        .send(RunEvent::PipelineFinished {
            pipeline: pipeline_id,
            status: status.as_str().to_string(),
            duration_ms,
            blocked_by: blocked_by.clone(),
        })
        .await;
    let jobs = plan.jobs.iter().filter_map(|j| summaries.remove(&j.name)).collect();
    Ok(RunSummary {
        status: status.as_str().to_string(),
        // `skipped`: nothing ran but manual jobs that allow failure; nothing failed either.
        passed: matches!(status, scheduler::PipelineStatus::Success | scheduler::PipelineStatus::Skipped) && !canceled,
        blocked_by,
        has_warnings,
        duration_ms,
        jobs,
        critical_path: engine.critical_path(),
        log_dir,
        pipeline_id,
        downstream,
    })
}

/// `<pid><time>` in base 36: distinct for concurrent and successive runs on one machine.
fn run_id(pipeline_id: u64) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let mut n = (u64::from(std::process::id()) << 32) ^ t ^ pipeline_id;
    let mut s = String::new();
    while n > 0 && s.len() < 10 {
        s.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
    }
    format!("r{s}")
}

/// The next pipeline number of the project (`CI_PIPELINE_IID`) and its log folder
/// `.piste/pipelines/<n>/`. The last number is kept in `.piste/pipeline-iid`, read and replaced
/// under an exclusive lock of `.piste/pipeline-iid.lock` (written to a temporary file, then
/// renamed), so concurrent `piste run`s of one project never share a number, and numbers keep
/// counting when old logs are deleted; a parent and its children each take one. The folder is
/// created with `create_dir`, which fails if it exists: a number whose folder is taken (logs
/// kept from before the counter) is skipped.
fn next_pipeline(data_dir: &std::path::Path) -> std::io::Result<(u64, PathBuf)> {
    let pipelines = data_dir.join("pipelines");
    std::fs::create_dir_all(&pipelines)?;
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(data_dir.join("pipeline-iid.lock"))?;
    // Released when `lock` is closed, whatever happens below.
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let counter = data_dir.join("pipeline-iid");
    let mut last = match std::fs::read_to_string(&counter) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    if last == 0 {
        // Before the counter existed, the folders were the numbering.
        last =
            std::fs::read_dir(&pipelines)?.flatten().filter_map(|e| e.file_name().to_string_lossy().parse::<u64>().ok()).max().unwrap_or(0);
    }
    let (n, dir) = loop {
        last += 1;
        let dir = pipelines.join(last.to_string());
        match std::fs::create_dir(&dir) {
            Ok(()) => break (last, dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let tmp = data_dir.join(format!("pipeline-iid.{}.tmp", std::process::id()));
    std::fs::write(&tmp, format!("{n}\n"))?;
    std::fs::rename(&tmp, &counter)?;
    drop(lock);
    Ok((n, dir))
}

/// `--executor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Docker when the Engine answers, else shell.
    Auto,
    Docker,
    Shell,
}

/// The executor to use, whether it runs containers, and a sentence saying why it was chosen.
pub async fn choose_executor(kind: ExecutorKind) -> Result<(Arc<dyn Executor>, bool, String), crate::executor::Error> {
    use crate::executor::{DockerExecutor, ShellExecutor};
    match kind {
        ExecutorKind::Shell => Ok((Arc::new(ShellExecutor::new()), false, "shell (as asked)".into())),
        ExecutorKind::Docker => Ok((Arc::new(DockerExecutor::connect().await?), true, "docker (as asked)".into())),
        ExecutorKind::Auto => match DockerExecutor::connect().await {
            Ok(d) => Ok((Arc::new(d), true, "docker: the Docker Engine answers".into())),
            Err(e) => Ok((Arc::new(ShellExecutor::new()), false, format!("shell: {e}"))),
        },
    }
}
