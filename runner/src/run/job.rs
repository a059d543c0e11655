//! `piste run`'s side of one job attempt: the job's specification from the plan, its log file,
//! and a [`JobHost`] over slot workspaces and the local artifact store; the attempt itself is
//! the one job runner's ([`crate::job::run`]), the same as on server runners.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline_spec::model::Pipeline;
use pipeline_spec::plan::Plan;
use pipeline_spec::predefined::Context;
use scheduler::job::{Layer, SpecVar, job_spec};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::artifacts::{self, Limits};
use crate::cas::{Digest, Store};
use crate::executor::Executor;
use crate::job::{self, AttemptEnv, Failure, GitSettings, JobHost};
use crate::joblog::LogWriter;
use crate::run::events::RunEvent;
use crate::run::inputs;
use crate::run::logs;
use crate::run::reuse::{self, ReusedFrom};

/// What a finished job left for the jobs after it.
#[derive(Debug, Clone, Default)]
pub struct JobOutputs {
    pub artifacts: Option<Digest>,
    pub dotenv: Vec<(String, String)>,
    /// Its attempt passed: only such a job is a `needs:pipeline:job` dependency (GitLab's
    /// `Ci::BuildDependencies` takes `latest.success`).
    pub success: bool,
}

/// The jobs' outputs of one pipeline of this run, keyed by job name.
pub type Outputs = Arc<Mutex<HashMap<String, JobOutputs>>>;

/// Everything the job tasks of one run share.
pub struct Shared {
    pub executor: Arc<dyn Executor>,
    /// Jobs run in containers: `CI_PROJECT_DIR` is `/builds/<path>` inside them.
    pub containers: bool,
    pub inputs: inputs::Inputs,
    pub cas: Store,
    pub log_dir: PathBuf,
    pub context: Context,
    pub pipeline: Arc<Pipeline>,
    pub plan: Arc<Plan>,
    pub pipeline_vars: Vec<(String, String)>,
    pub secrets: Vec<(String, String)>,
    pub events: Sender<RunEvent>,
    /// Send log lines as events (off when nobody renders them).
    pub stream_logs: bool,
    pub outputs: Outputs,
    pub default_image: Option<String>,
    pub pipeline_id: u64,
    /// Short unique id of this run, in container names and labels.
    pub run_id: String,
    /// `--sign-key`: what `piste/image-build@v1` signs with.
    pub signing_key: Option<scheduler::protocol::SigningKey>,
    /// Reuse of earlier results: the run's switch and `.piste/reuse/`.
    pub reuse: reuse::Mode,
    pub records: reuse::Records,
    /// The repository the jobs check out from, and whether its work tree is overlaid.
    pub source_repo: PathBuf,
    pub worktree: bool,
    /// `<project>/.piste` and `-j`: what a downstream pipeline of this run needs too.
    pub data_dir: PathBuf,
    pub concurrency: usize,
    /// Workspace slots, shared with downstream pipelines (`-j` bounds the whole run).
    pub slots: Arc<super::SlotPool>,
    /// How trigger jobs create downstream pipelines, and those they created.
    pub downstream: Option<super::trigger::Downstream>,
    pub children: super::trigger::Children,
}

impl Shared {
    /// The configuration of a downstream pipeline of this run: same executor, slots, secrets
    /// and options; `vars` are its pipeline variables.
    pub(super) fn child_config(
        &self,
        vars: Vec<(String, String)>,
        data_dir: PathBuf,
        source_repo: PathBuf,
        downstream: Option<super::trigger::Downstream>,
    ) -> super::RunConfig {
        super::RunConfig {
            executor: self.executor.clone(),
            containers: self.containers,
            concurrency: self.concurrency,
            data_dir,
            source_repo,
            worktree: self.worktree,
            secrets: self.secrets.clone(),
            pipeline_vars: vars,
            only: Vec::new(),
            default_image: self.default_image.clone(),
            stream_logs: self.stream_logs,
            signing_key: self.signing_key.as_ref().map(|k| k.0.clone()),
            reuse: self.reuse,
            downstream,
            slots: Some(self.slots.clone()),
        }
    }
}

/// The result of one attempt, for the engine and the summary.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: scheduler::Outcome,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub duration: Duration,
    /// The earlier job whose result this one is.
    pub reused: Option<ReusedFrom>,
    /// The `coverage:` value found in its log.
    pub coverage: Option<f64>,
}

fn failed(reason: scheduler::FailureReason, message: String, started: Instant) -> Attempt {
    Attempt {
        outcome: scheduler::Outcome::Failed { reason, exit_code: None },
        exit_code: None,
        reason: Some(message),
        duration: started.elapsed(),
        reused: None,
        coverage: None,
    }
}

impl Shared {
    /// Secrets and `--var` values, as job specifications take them (every job of the run, and
    /// the child pipelines' jobs, get the same).
    pub(crate) fn outer_vars(&self) -> Vec<SpecVar> {
        let secrets =
            self.secrets.iter().map(|(k, v)| SpecVar { key: k.clone(), value: v.clone(), raw: true, masked: true, layer: Layer::Project });
        let vars = self.pipeline_vars.iter().map(|(k, v)| SpecVar {
            key: k.clone(),
            value: v.clone(),
            raw: false,
            masked: false,
            layer: Layer::Pipeline,
        });
        secrets.chain(vars).collect()
    }
}

/// Runs attempt `attempt` of plan job `index` in workspace slot `slot`, through the one job
/// runner ([`crate::job::run`]).
pub async fn run(shared: Arc<Shared>, index: usize, attempt: u32, slot: usize, cancel: CancellationToken) -> Attempt {
    let started = Instant::now();
    let pj = shared.plan.jobs[index].clone();
    let outer = shared.outer_vars();
    let Some(spec) = job_spec(&shared.plan, &shared.pipeline, index, &outer) else {
        return failed(scheduler::FailureReason::UnknownFailure, format!("job `{}` is not in the pipeline", pj.base), started);
    };
    let job_id = shared.pipeline_id * 1000 + index as u64 + 1;
    let predefined = spec.predefined(&shared.context, job_id);
    let cross = match super::cross::outputs(&shared, &spec, &predefined) {
        Ok(c) => c,
        Err(m) => return failed(scheduler::FailureReason::MissingDependencyFailure, m, started),
    };
    let dotenv: Vec<(String, String)> = {
        let outputs = shared.outputs.lock().unwrap_or_else(|e| e.into_inner());
        let local = spec.dependencies.iter().filter_map(|d| outputs.get(d)).flat_map(|o| o.dotenv.clone());
        local.chain(cross.found.iter().flat_map(|(_, o)| o.dotenv.clone())).collect()
    };
    let log_path = shared.log_dir.join(format!("{}.log", log_name(&pj.name)));
    let key = reuse_key(&shared, &spec, &pj.base, &predefined, &dotenv).await;
    if let Some(key) = &key {
        let records = &shared.records;
        if let Some(record) = records.get(key, &shared.cas) {
            match replay(&shared, &pj.name, spec.coverage.as_deref(), key, record, &log_path, started).await {
                Ok(attempt) => return attempt,
                Err(e) => tracing::warn!(job = %pj.name, error = %e, "an earlier result could not be reused; running the job"),
            }
        }
    }
    let env = AttemptEnv {
        header: format!("Running with piste {} ({} executor)", env!("CARGO_PKG_VERSION"), shared.executor.name()),
        predefined,
        dotenv,
        runner_vars: Vec::new(),
        containers: shared.containers,
        container_project_dir: shared.context.project_dir(),
        default_image: shared.default_image.clone(),
        // Unique across processes and runs, and readable: `<run>-<job>-a<attempt>`.
        request_id: format!("{}-{}-a{attempt}", shared.run_id, log_name(&pj.name).to_ascii_lowercase()),
        cache: Some(&shared.inputs.cache),
        tmp_dir: shared.cas.root(),
        ledger: None,
        state_dir: &shared.inputs.steps_dir,
        signing_key: shared.signing_key.as_ref().map(|k| k.0.as_str()),
    };

    let (log, rx) = LogWriter::channel(64);
    // `--secret` values are masked variables of the spec: one list, with their encodings.
    let mut secret_values = spec.masked_values();
    secret_values.extend(shared.signing_key.iter().flat_map(|k| k.mask_values()));
    let events = shared.stream_logs.then(|| shared.events.clone());
    let pump = tokio::spawn({
        let (name, log_path) = (pj.name.clone(), log_path.clone());
        async move { logs::pump(name, rx, secret_values, &log_path, events).await }
    });
    let host = LocalHost { shared: &shared, slot, dependencies: &spec.dependencies, cross: &cross };
    let never = CancellationToken::new();
    let result = job::run(&spec, &env, &host, shared.executor.as_ref(), &log, &cancel, &never).await;
    drop(log);
    if let Ok(Err(e)) = pump.await {
        tracing::warn!(job = %pj.name, error = %e, "the job's log file could not be written");
    }
    let Some(result) = result else {
        return Attempt {
            outcome: scheduler::Outcome::Canceled,
            exit_code: None,
            reason: None,
            duration: started.elapsed(),
            reused: None,
            coverage: None,
        };
    };
    if result.outcome != scheduler::Outcome::Canceled {
        let success = result.outcome == scheduler::Outcome::Success;
        let outputs = JobOutputs { artifacts: result.artifacts, dotenv: result.dotenv.clone(), success };
        shared.outputs.lock().unwrap_or_else(|e| e.into_inner()).insert(pj.name.clone(), outputs);
    }
    // Only successes are kept: a reused result never hides a failure.
    if let (Some(key), scheduler::Outcome::Success) = (key, &result.outcome) {
        let from = ReusedFrom { pipeline: shared.pipeline_id, job_id, job: pj.name.clone() };
        let (shared2, artifacts, dotenv) = (shared.clone(), result.artifacts, result.dotenv.clone());
        let kept = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&log_path).map_err(|e| e.to_string())?;
            let log = shared2.cas.put(file).map_err(|e| e.to_string())?;
            let record = reuse::Record { from, artifacts: artifacts.map(|d| d.to_string()), dotenv, log: log.to_string() };
            shared2.records.put(&key, &record).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = kept {
            tracing::warn!(job = %pj.name, error = %e, "the job's result could not be kept for reuse");
        }
    }
    Attempt {
        outcome: result.outcome,
        exit_code: result.exit_code,
        reason: result.reason,
        duration: started.elapsed(),
        reused: None,
        coverage: result.coverage,
    }
}

/// The job's reuse key, when its result may be reused and its inputs can be known.
async fn reuse_key(
    shared: &Arc<Shared>,
    spec: &scheduler::job::JobSpec,
    base: &str,
    predefined: &[(String, String)],
    dotenv: &[(String, String)],
) -> Option<Digest> {
    let vars: Vec<(String, String)> = spec.variables(predefined, dotenv).into_iter().map(|v| (v.key, v.value)).collect();
    let model = shared.pipeline.jobs.get(base);
    if let Some(why) = reuse::ineligible(spec, model, shared.reuse, &vars, shared.worktree) {
        tracing::debug!(job = %spec.name, why, "not reusable");
        return None;
    }
    let executor =
        crate::reuse::executor_input(spec, &vars, shared.containers, shared.executor.name(), shared.default_image.as_deref()).await?;
    let artifacts: Vec<(String, Option<Digest>)> = {
        let outputs = shared.outputs.lock().unwrap_or_else(|e| e.into_inner());
        spec.dependencies.iter().map(|d| (d.clone(), outputs.get(d).and_then(|o| o.artifacts))).collect()
    };
    let patterns = model.map(|m| reuse::change_patterns(m, &vars)).unwrap_or_default();
    let (repo, sha) = (shared.source_repo.clone(), shared.context.commit_sha.clone());
    let tree = tokio::task::spawn_blocking(move || reuse::tree_input(&repo, &sha, &patterns)).await.ok()?;
    let tree = match tree {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(job = %spec.name, error = %e, "the checkout's tree is unknown: not reusable");
            return None;
        }
    };
    reuse::key(&reuse::KeyInputs { spec, executor, variables: &vars, artifacts, tree }).ok()
}

/// Records job `name` as passed with `record`'s artifacts, dotenv and log, under a line saying
/// where they come from.
#[allow(clippy::too_many_arguments)]
async fn replay(
    shared: &Arc<Shared>,
    name: &str,
    coverage: Option<&str>,
    key: &Digest,
    record: reuse::Record,
    log_path: &Path,
    started: Instant,
) -> Result<Attempt, String> {
    let artifacts = record.artifacts.as_deref().map(str::parse::<Digest>).transpose().map_err(|e| e.to_string())?;
    let log_digest: Digest = record.log.parse().map_err(|e: crate::cas::ParseDigestError| e.to_string())?;
    let blob = shared.cas.open_blob(&log_digest).map_err(|e| e.to_string())?;
    // Through the log pump, as a job's output: streamed, lines capped, masked again.
    let (log, rx) = LogWriter::channel(8);
    // The earlier log gives the same `coverage:` value.
    if let Some(re) = coverage.and_then(|c| pipeline_spec::coverage::compile(c).ok()) {
        log.scan_coverage(pipeline_spec::coverage::Scanner::new(re));
    }
    let pump = tokio::spawn({
        let (job, path, events) = (name.to_string(), log_path.to_owned(), shared.stream_logs.then(|| shared.events.clone()));
        let secrets = shared.secrets.iter().map(|(_, v)| v.clone()).collect();
        async move { logs::pump(job, rx, secrets, &path, events).await }
    });
    log.line(format!(
        "\x1b[32;1m{}\x1b[0;m: nothing this job reads changed (key {key}); its artifacts, dotenv and log follow",
        record.from
    ))
    .await;
    let (tx, chunks) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut blob = blob;
        loop {
            let mut buf = vec![0; 64 * 1024];
            let n = std::io::Read::read(&mut blob, &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            if tx.blocking_send(buf).is_err() {
                return Ok(());
            }
        }
    });
    log.stream(chunks).await;
    let coverage = log.coverage().await;
    drop(log);
    let read = reader.await.map_err(|e| e.to_string())?;
    pump.await.map_err(|e| e.to_string())?.map_err(|e| format!("{}: {e}", log_path.display()))?;
    read.map_err(|e| format!("the earlier log {log_digest}: {e}"))?;
    let outputs = JobOutputs { artifacts, dotenv: record.dotenv, success: true };
    shared.outputs.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), outputs);
    Ok(Attempt {
        outcome: scheduler::Outcome::Success,
        exit_code: Some(0),
        reason: None,
        duration: started.elapsed(),
        reused: Some(record.from),
        coverage,
    })
}

/// `piste run`'s side of a job: slot workspaces, artifacts in the local content-addressed store.
struct LocalHost<'a> {
    shared: &'a Arc<Shared>,
    slot: usize,
    dependencies: &'a [String],
    /// `needs:pipeline:job` dependencies found above this pipeline, and notes for the log.
    cross: &'a super::cross::Found,
}

impl JobHost for LocalHost<'_> {
    async fn checkout(&self, git: &GitSettings, log: &LogWriter, cancel: &CancellationToken) -> Result<PathBuf, Failure> {
        let (shared, slot, settings, stop) = (self.shared.clone(), self.slot, git.clone(), cancel.clone());
        match tokio::task::spawn_blocking(move || shared.inputs.checkout(slot, &settings, &stop)).await {
            Ok(Ok((dir, output))) => {
                match git.submodules().map(|s| s.strategy) {
                    Ok(crate::workspace::SubmoduleStrategy::Normal) => log.line("Updating/initializing submodules...").await,
                    Ok(crate::workspace::SubmoduleStrategy::Recursive) => log.line("Updating/initializing submodules recursively...").await,
                    _ => {}
                }
                for line in output.lines() {
                    log.line(line.to_owned()).await;
                }
                Ok(dir)
            }
            Ok(Err(_)) if cancel.is_cancelled() => Err(Failure::Canceled),
            Ok(Err((true, m))) => Err(Failure::Job(m)),
            Ok(Err((false, m))) => Err(Failure::System(format!("preparing the workspace failed: {m}"))),
            Err(e) => Err(Failure::System(format!("preparing the workspace panicked: {e}"))),
        }
    }

    fn has_dependencies(&self) -> bool {
        let outputs = self.shared.outputs.lock().unwrap_or_else(|e| e.into_inner());
        self.dependencies.iter().any(|d| outputs.get(d).is_some_and(|o| o.artifacts.is_some()))
            || self.cross.found.iter().any(|(_, o)| o.artifacts.is_some())
            || !self.cross.notes.is_empty()
    }

    async fn dependencies(&self, workspace: &Path, log: &LogWriter, _cancel: &CancellationToken) -> Result<(), Failure> {
        let digests: Vec<(String, Digest)> = {
            let outputs = self.shared.outputs.lock().unwrap_or_else(|e| e.into_inner());
            let local = self.dependencies.iter().filter_map(|d| outputs.get(d).and_then(|o| o.artifacts).map(|a| (d.clone(), a)));
            local.chain(self.cross.found.iter().filter_map(|(d, o)| o.artifacts.map(|a| (d.clone(), a)))).collect()
        };
        for note in &self.cross.notes {
            log.line(format!("\x1b[33;1mWARNING:\x1b[0;m {note}")).await;
        }
        for (dep, digest) in digests {
            let (shared, dest) = (self.shared.clone(), workspace.to_owned());
            let extracted = tokio::task::spawn_blocking(move || {
                let blob = shared.cas.open_blob(&digest).map_err(|e| e.to_string())?;
                artifacts::extract(blob, &dest, &Limits::default()).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match extracted {
                Ok(summary) => {
                    log.line(format!("\x1b[32;1mDownloaded artifacts for {dep}\x1b[0;m: {} files, {} bytes", summary.files, summary.bytes))
                        .await;
                }
                Err(m) => return Err(Failure::System(format!("the artifacts of `{dep}` cannot be extracted: {m}"))),
            }
        }
        Ok(())
    }

    async fn store_artifacts(&self, archive: &Path, digest: Digest, log: &LogWriter) -> Result<(), Failure> {
        let (shared, archive) = (self.shared.clone(), archive.to_owned());
        let stored = tokio::task::spawn_blocking(move || {
            // The archive was hashed while it was written, in the store's own tmp/: rename it in.
            shared.cas.adopt(&archive, &digest).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match stored {
            Ok(_) => {
                log.line("\x1b[32;1mUploaded artifacts\x1b[0;m").await;
                Ok(())
            }
            Err(m) => Err(Failure::System(format!("storing artifacts failed: {m}"))),
        }
    }
}

/// A file name for a job's log: job names hold spaces, `/`, `:` and brackets.
pub fn log_name(job: &str) -> String {
    let mut s: String = job.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect();
    if s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}
