//! `piste run`'s trigger jobs (GitLab's bridges): a trigger job runs no script; it creates a
//! downstream pipeline and runs it in this process with the same executor and slots.
//!
//! - `trigger:include` (a child pipeline): the configuration is loaded as `include: <entries>`
//!   by [`pipeline_spec::child::load_child`], local files read as the top pipeline's are, and
//!   `artifact:` + `job:` read from that job's archive in the local store (≤ 5 MB). The child is
//!   planned with `CI_PIPELINE_SOURCE=parent_pipeline` and the variables `forward` passes,
//!   which are its pipeline variables. GitLab's depth limit: a child may have children, those
//!   may not ([`pipeline_spec::child::MAX_CHILD_DEPTH`]).
//! - `trigger:project` (multi-project): run from `--project-dir PROJECT=DIR` (its own
//!   `.piste/`, `CI_PIPELINE_SOURCE=pipeline`, `CI_COMMIT_BRANCH` from `trigger:branch`), or
//!   reported as not run locally: the trigger job succeeds, with a note, whatever its
//!   `strategy` (there is no pipeline whose status it could take).
//! - Without `strategy`, the trigger job succeeds once the downstream pipeline is created, and
//!   that pipeline runs on beside the parent's later jobs; the run ends when both have. With
//!   `strategy: depend` (or `mirror`), the trigger job waits and takes its final status:
//!   success → success, failed or skipped → failed, canceled → canceled. A downstream pipeline
//!   left blocked by a manual job fails the trigger job here: GitLab keeps the job running
//!   until someone plays the manual job, and a local run cannot wait for a person.
//! - Anything that prevents creating the pipeline (an invalid or empty configuration, the
//!   depth limit, an unknown project) fails the trigger job with
//!   `downstream_pipeline_creation_failed`, the reason in its log (`file:line:col` for
//!   configuration errors).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pipeline_spec::child::{MAX_ARTIFACT_CONFIG_BYTES, WithArtifacts, check_depth, child_context, load_child};
use pipeline_spec::include::{IncludeResolver, ResolveError};
use pipeline_spec::load::{LoadOptions, Loaded};
use pipeline_spec::model::{Pipeline, Trigger};
use pipeline_spec::plan::{Plan, PlanContext, PlanError, plan};
use pipeline_spec::predefined::{Context, PipelineSource};
use scheduler::FailureReason;
use scheduler::job::job_spec;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::events::{DownstreamSummary, RunEvent, RunSummary};
use super::job::{Attempt, Shared, log_name};
use super::{RunConfig, RunError, logs, run_pipeline};
use crate::cas::Digest;
use crate::joblog::LogWriter;
use crate::local::LocalOptions;

/// A chain of downstream pipelines (child or multi-project) longer than this stops: piste's
/// guard against multi-project cycles (GitLab bounds a hierarchy at 1,000 pipelines instead).
pub const MAX_DOWNSTREAM_CHAIN: usize = 10;

/// What a run needs to create downstream pipelines.
#[derive(Clone)]
pub struct Downstream {
    /// Reads a child pipeline's includes: the resolver the top pipeline was loaded with.
    pub resolver: Arc<dyn IncludeResolver + Send + Sync>,
    /// Limits and `--max-needs`, as for the top pipeline.
    pub load: LoadOptions,
    /// Files changed by the push, for `rules:changes` in child pipelines.
    pub changed_files: Option<Vec<String>>,
    /// How the top pipeline was opened (`--project-dir`, templates, remote includes): a
    /// multi-project trigger opens its project the same way.
    pub local: LocalOptions,
    /// Child pipelines above this one (0: the top pipeline or a multi-project one).
    pub depth: usize,
    /// Trigger jobs from the top pipeline down to this pipeline.
    pub path: Vec<String>,
    /// The parent-child pipelines above this one (id and jobs' outputs), parent last: where
    /// `needs:pipeline:job` finds its jobs (`run::cross`). Empty for a multi-project pipeline,
    /// which starts a hierarchy of its own.
    pub ancestors: Vec<(u64, super::job::Outputs)>,
}

/// A downstream pipeline still running when its trigger job was done (no `strategy`).
pub(super) type ChildRun = tokio::task::JoinHandle<DownstreamSummary>;

/// The downstream pipelines of one run, in the order they were triggered.
#[derive(Default)]
pub(super) struct Children(Mutex<Vec<Child>>);

pub(super) enum Child {
    Done(DownstreamSummary),
    Running(ChildRun),
}

impl Children {
    fn push(&self, c: Child) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }

    /// Waits for every downstream pipeline still running and returns them all.
    pub(super) async fn finish(&self) -> Vec<DownstreamSummary> {
        let all = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        let mut out = Vec::with_capacity(all.len());
        for c in all {
            match c {
                Child::Done(s) => out.push(s),
                Child::Running(h) => match h.await {
                    Ok(s) => out.push(s),
                    Err(e) => tracing::warn!(error = %e, "a downstream pipeline's task ended abnormally"),
                },
            }
        }
        out
    }
}

type BoxedRun = Pin<Box<dyn Future<Output = Result<RunSummary, RunError>> + Send>>;

/// `run_pipeline` behind a box: a pipeline runs trigger jobs, which run pipelines.
fn boxed_run(
    pipeline: Pipeline,
    plan: Plan,
    context: Context,
    config: RunConfig,
    events: mpsc::Sender<RunEvent>,
    cancel: CancellationToken,
) -> BoxedRun {
    Box::pin(run_pipeline(Arc::new(pipeline), Arc::new(plan), context, config, events, cancel))
}

/// [`run`] behind a box, for the same reason as [`boxed_run`].
pub(super) fn run_boxed(
    shared: Arc<Shared>,
    index: usize,
    attempt: u32,
    cancel: CancellationToken,
) -> Pin<Box<dyn Future<Output = Attempt> + Send>> {
    Box::pin(run(shared, index, attempt, cancel))
}

/// Runs attempt `attempt` of trigger job `index`.
async fn run(shared: Arc<Shared>, index: usize, attempt: u32, cancel: CancellationToken) -> Attempt {
    let started = Instant::now();
    let pj = shared.plan.jobs[index].clone();
    let Some(trigger) = shared.pipeline.jobs.get(&pj.base).and_then(|j| j.trigger.clone()) else {
        return failed(FailureReason::UnknownFailure, format!("job `{}` is not a trigger job", pj.name), started);
    };
    let log_path = shared.log_dir.join(format!("{}.log", log_name(&pj.name)));
    let (log, rx) = LogWriter::channel(16);
    let events = shared.stream_logs.then(|| shared.events.clone());
    let pump = tokio::spawn({
        let (name, path) = (pj.name.clone(), log_path.clone());
        let secrets = shared.secrets.iter().map(|(_, v)| v.clone()).collect();
        async move { logs::pump(name, rx, secrets, &path, events).await }
    });
    let outcome = bridge(&shared, index, &trigger, &log, &cancel).await;
    drop(log);
    if let Ok(Err(e)) = pump.await {
        tracing::warn!(job = %pj.name, error = %e, "the trigger job's log file could not be written");
    }
    let (attempt_outcome, reason) = outcome;
    tracing::debug!(job = %pj.name, attempt, "trigger job done");
    Attempt { outcome: attempt_outcome, exit_code: None, reason, duration: started.elapsed(), reused: None, coverage: None }
}

fn failed(reason: FailureReason, message: String, started: Instant) -> Attempt {
    Attempt {
        outcome: scheduler::Outcome::Failed { reason, exit_code: None },
        exit_code: None,
        reason: Some(message),
        duration: started.elapsed(),
        reused: None,
        coverage: None,
    }
}

fn creation_failed(message: String) -> (scheduler::Outcome, Option<String>) {
    (scheduler::Outcome::Failed { reason: FailureReason::DownstreamPipelineCreationFailed, exit_code: None }, Some(message))
}

/// What a pipeline to run needs, once loaded and planned.
struct Prepared {
    pipeline: Pipeline,
    plan: Plan,
    context: Context,
    config: RunConfig,
    kind: String,
}

/// The trigger job's work: prepare the downstream pipeline, start it, and (with a strategy)
/// wait for it. Returns the attempt's outcome and its reason for people.
async fn bridge(
    shared: &Arc<Shared>,
    index: usize,
    trigger: &Trigger,
    log: &LogWriter,
    cancel: &CancellationToken,
) -> (scheduler::Outcome, Option<String>) {
    let pj = &shared.plan.jobs[index];
    let kind = trigger.project.clone().unwrap_or_else(|| "child".into());
    let note = |status: &str, note: String| DownstreamSummary {
        job: pj.name.clone(),
        kind: kind.clone(),
        status: status.into(),
        note: Some(note),
        summary: None,
    };
    let Some(env) = shared.downstream.clone() else {
        let m = "this run cannot create downstream pipelines".to_string();
        log.line(format!("\x1b[31;1mERROR:\x1b[0;m {m}")).await;
        shared.children.push(Child::Done(note("not_created", m.clone())));
        return creation_failed(m);
    };
    if env.path.len() >= MAX_DOWNSTREAM_CHAIN {
        let m = format!(
            "a chain of downstream pipelines is at most {MAX_DOWNSTREAM_CHAIN} long in piste (here: {}): is there a cycle of multi-project triggers?",
            env.path.join(" ▸ ")
        );
        log.line(format!("\x1b[31;1mERROR:\x1b[0;m {m}")).await;
        shared.children.push(Child::Done(note("not_created", m.clone())));
        return creation_failed(m);
    }
    // The variables the downstream pipeline gets (`forward`), computed as the job's would be.
    let outer = shared.outer_vars();
    let Some(spec) = job_spec(&shared.plan, &shared.pipeline, index, &outer) else {
        return creation_failed(format!("job `{}` is not in the pipeline", pj.base));
    };
    let job_id = shared.pipeline_id * 1000 + index as u64 + 1;
    let predefined = spec.predefined(&shared.context, job_id);
    let vars = spec.downstream_variables(&predefined, trigger.forward);
    let prepared = if trigger.is_child() {
        prepare_child(shared, &env, trigger, &pj.name, vars, log).await
    } else {
        let project = expand_with(trigger.project.as_deref().unwrap_or_default(), &predefined, &spec, &vars);
        match env.local.project_dirs.iter().find(|(name, _)| *name == project).map(|(_, d)| d.clone()) {
            None => {
                let m = format!(
                    "multi-project pipeline of `{project}` not run locally: pass `--project-dir {project}=DIR` to run it from a clone"
                );
                log.line(format!("\x1b[33;1m{m}\x1b[0;m")).await;
                shared.children.push(Child::Done(note("not_run_locally", m.clone())));
                return (scheduler::Outcome::Success, Some(m));
            }
            Some(dir) => {
                let branch = trigger.branch.as_deref().map(|b| expand_with(b, &predefined, &spec, &vars));
                prepare_project(shared, &env, &pj.name, Target { project: project.clone(), dir, branch }, vars, log).await
            }
        }
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(m) => {
            shared.children.push(Child::Done(note("not_created", m.clone())));
            return creation_failed(m);
        }
    };
    let jobs = prepared.plan.jobs.len();
    let (tx, rx) = mpsc::channel::<RunEvent>(256);
    let forward = tokio::spawn(forward_events(rx, pj.name.clone(), shared.events.clone()));
    let kind = prepared.kind.clone();
    let run = boxed_run(prepared.pipeline, prepared.plan, prepared.context, prepared.config, tx, cancel.child_token());
    let job = pj.name.clone();
    let downstream = async move {
        let result = run.await;
        let id = forward.await.unwrap_or(None);
        match result {
            Ok(summary) => DownstreamSummary { job, kind, status: summary.status.clone(), note: None, summary: Some(Box::new(summary)) },
            Err(e) => DownstreamSummary { job, kind, status: "failed".into(), note: Some(format!("pipeline {id:?}: {e}")), summary: None },
        }
    };
    log.line(format!("\x1b[32;1mCreated\x1b[0;m the downstream pipeline ({jobs} {})", if jobs == 1 { "job" } else { "jobs" })).await;
    if !trigger.waits() {
        // GitLab: without `strategy`, the trigger job succeeds once the pipeline is created.
        shared.children.push(Child::Running(tokio::spawn(downstream)));
        return (scheduler::Outcome::Success, None);
    }
    log.line("Waiting for the downstream pipeline (`strategy: depend`)").await;
    let result = downstream.await;
    let status = result.status.clone();
    let pipeline = result.summary.as_ref().map(|s| s.pipeline_id);
    shared.children.push(Child::Done(result));
    let which = pipeline.map_or_else(|| "the downstream pipeline".to_string(), |id| format!("downstream pipeline #{id}"));
    log.line(format!("{which} ended: {status}")).await;
    match status.as_str() {
        "success" => (scheduler::Outcome::Success, None),
        "canceled" => (scheduler::Outcome::Canceled, Some(format!("{which} was canceled"))),
        "manual" => (
            scheduler::Outcome::Failed { reason: FailureReason::UnknownFailure, exit_code: None },
            Some(format!(
                "{which} is blocked by a manual job: GitLab keeps this trigger job running until someone plays it; a local run cannot wait"
            )),
        ),
        other => (scheduler::Outcome::Failed { reason: FailureReason::UnknownFailure, exit_code: None }, Some(format!("{which} {other}"))),
    }
}

/// `trigger:project` and `trigger:branch` are expanded with the trigger job's variables.
fn expand_with(text: &str, predefined: &[(String, String)], spec: &scheduler::job::JobSpec, forwarded: &[(String, String)]) -> String {
    let vars: HashMap<String, String> =
        spec.variables(predefined, &[]).into_iter().map(|v| (v.key, v.value)).chain(forwarded.iter().cloned()).collect();
    pipeline_spec::expand::expand(text, &vars)
}

/// Loads and plans a child pipeline of `trigger`.
async fn prepare_child(
    shared: &Arc<Shared>,
    env: &Downstream,
    trigger: &Trigger,
    job: &str,
    vars: Vec<(String, String)>,
    log: &LogWriter,
) -> Result<Prepared, String> {
    if let Err(e) = check_depth(env.depth) {
        let m = e.to_string();
        log.line(format!("\x1b[31;1mERROR:\x1b[0;m {m}")).await;
        return Err(m);
    }
    let context = child_context(&shared.context, 0);
    // The artifacts the configuration may read: those of the jobs this one follows.
    let archives: HashMap<String, Option<Digest>> = {
        let outputs = shared.outputs.lock().unwrap_or_else(|e| e.into_inner());
        trigger.artifact_jobs().map(|j| (j.to_string(), outputs.get(j).and_then(|o| o.artifacts))).collect()
    };
    let mut load = env.load.clone();
    load.variables = context.pipeline_variables();
    load.variables.extend(vars.iter().cloned());
    let (resolver, store, trigger2, display) =
        (env.resolver.clone(), shared.clone(), trigger.clone(), format!("`trigger:include` of job `{job}`"));
    let loaded = tokio::task::spawn_blocking(move || {
        let artifact = |job: &str, path: &str| -> Result<String, ResolveError> {
            let Some(Some(digest)) = archives.get(job) else {
                return Err(ResolveError::Other(format!("job `{job}` left no artifacts in this pipeline")));
            };
            let blob = store.cas.open_blob(digest).map_err(|e| ResolveError::Other(e.to_string()))?;
            match crate::artifacts::read_file(blob, path, MAX_ARTIFACT_CONFIG_BYTES) {
                Ok(crate::artifacts::FileInArchive::Found(bytes)) => {
                    String::from_utf8(bytes).map_err(|_| ResolveError::Other(format!("`{path}` is not UTF-8 text")))
                }
                Ok(crate::artifacts::FileInArchive::Missing) => Err(ResolveError::NotFound),
                Ok(crate::artifacts::FileInArchive::TooLarge(n)) => {
                    Err(ResolveError::Other(format!("`{path}` is {n} bytes; a child configuration is at most 5 MB (GitLab's limit)")))
                }
                Err(e) => Err(ResolveError::Other(format!("the archive cannot be read: {e}"))),
            }
        };
        let res = WithArtifacts { base: resolver.as_ref(), artifact };
        load_child(&display, &trigger2, &res, &load)
    })
    .await
    .map_err(|e| format!("loading the child configuration panicked: {e}"))?;
    let pipeline = checked(loaded, log).await?;
    let result = {
        // Dropped before the next `.await`: the future stays `Send` (the closure is higher-ranked).
        let exists_resolver = env.resolver.clone();
        let exists = move |g: &pipeline_spec::glob::Glob| exists_resolver.glob(None, g.as_str(), None).is_ok_and(|m| !m.is_empty());
        let ctx = PlanContext {
            predefined: context.pipeline_variables(),
            pipeline_vars: vars.clone(),
            changed_files: env.changed_files.clone(),
            exists: Some(&exists),
            // A child's `rules:changes:compare_to` is not computed locally: its changes are
            // unknown, which GitLab treats as changed.
            compare: None,
        };
        plan(&pipeline, &ctx)
    };
    let plan = planned(result, log).await?;
    let mut down = env.clone();
    down.depth += 1;
    down.path.push(job.to_string());
    down.ancestors.push((shared.context.pipeline_id, shared.outputs.clone()));
    let config = shared.child_config(vars, shared.data_dir.clone(), shared.source_repo.clone(), Some(down));
    Ok(Prepared { pipeline, plan, context, config, kind: "child".into() })
}

/// A multi-project trigger's project, the clone it runs from, and `trigger:branch`.
struct Target {
    project: String,
    dir: PathBuf,
    branch: Option<String>,
}

/// Opens the target project from its `--project-dir` for a multi-project trigger.
async fn prepare_project(
    shared: &Arc<Shared>,
    env: &Downstream,
    job: &str,
    target: Target,
    vars: Vec<(String, String)>,
    log: &LogWriter,
) -> Result<Prepared, String> {
    let Target { project, dir, branch } = target;
    let project = project.as_str();
    let opts = LocalOptions {
        dir: dir.clone(),
        file: None,
        root: None,
        vars: vars.clone(),
        branch: branch.clone(),
        tag: None,
        source: Some(PipelineSource::Pipeline),
        changed_files: None,
        ..env.local.clone()
    };
    log.line(format!("Opening `{project}` from `{}`", dir.display())).await;
    let opened =
        tokio::task::spawn_blocking(move || crate::local::open(&opts)).await.map_err(|e| format!("opening the project panicked: {e}"))?;
    let mut local = match opened {
        Ok(l) => l,
        Err(e) => {
            let m = format!("cannot open `{project}` from `{}`: {e}", dir.display());
            log.line(format!("\x1b[31;1mERROR:\x1b[0;m {m}")).await;
            return Err(m);
        }
    };
    if !local.is_git {
        let m = format!("`{}` (project `{project}`) is not a git repository: a downstream pipeline needs a commit", dir.display());
        log.line(format!("\x1b[31;1mERROR:\x1b[0;m {m}")).await;
        return Err(m);
    }
    local.context.project_path = project.to_string();
    let errors: Vec<String> = local.loaded.errors().map(|d| d.display(&local.loaded.sources).to_string()).collect();
    if !errors.is_empty() {
        for e in errors {
            log.line(e).await;
        }
        return Err(format!("the configuration of `{project}` is invalid (see the trigger job's log)"));
    }
    let pipeline = local.loaded.pipeline.take().ok_or_else(|| format!("`{project}` has no pipeline"))?;
    let plan = match local.plan.take() {
        Some(p) => planned(p, log).await?,
        None => return Err(format!("`{project}` could not be planned")),
    };
    let mut down = env.clone();
    down.depth = 0;
    down.path.push(job.to_string());
    down.ancestors.clear();
    down.resolver = local.shared_resolver();
    let config = shared.child_config(vars, local.root.join(".piste"), local.root.clone(), Some(down));
    Ok(Prepared { pipeline, plan, context: local.context, config, kind: project.to_string() })
}

/// The loaded configuration, or its errors written to the log (`file:line:col: …`).
async fn checked(loaded: Loaded, log: &LogWriter) -> Result<Pipeline, String> {
    let errors: Vec<String> = loaded.errors().map(|d| d.display(&loaded.sources).to_string()).collect();
    if let Some(first) = errors.first() {
        log.line("\x1b[31;1mThe child pipeline's configuration is invalid:\x1b[0;m").await;
        for e in &errors {
            log.line(e.clone()).await;
        }
        let first_line = first.lines().next().unwrap_or_default().to_string();
        return Err(format!("invalid child configuration: {first_line}"));
    }
    loaded.pipeline.ok_or_else(|| "the child configuration is empty".to_string())
}

/// The plan, or why there is no pipeline (GitLab fails the trigger job then too).
async fn planned(result: Result<Plan, PlanError>, log: &LogWriter) -> Result<Plan, String> {
    let m = match result {
        Ok(p) if !p.jobs.is_empty() => return Ok(p),
        Ok(_) => "the downstream pipeline has no job for this trigger: its `rules` keep none".to_string(),
        Err(PlanError::Filtered { .. }) => "`workflow:rules` create no downstream pipeline for this trigger".to_string(),
        Err(PlanError::Invalid(d)) => {
            for x in &d {
                log.line(x.text()).await;
            }
            "the downstream pipeline cannot be planned (see the trigger job's log)".to_string()
        }
    };
    log.line(format!("\x1b[31;1mERROR:\x1b[0;m {m}")).await;
    Err(m)
}

/// Wraps a downstream pipeline's events for the parent's stream; returns its pipeline id.
async fn forward_events(mut rx: mpsc::Receiver<RunEvent>, trigger: String, up: mpsc::Sender<RunEvent>) -> Option<u64> {
    let mut id = None;
    while let Some(ev) = rx.recv().await {
        let wrapped = match ev {
            RunEvent::PipelineStarted { pipeline_id, .. } => {
                id = Some(pipeline_id);
                RunEvent::Downstream { pipeline_id, trigger: vec![trigger.clone()], inner: Box::new(ev) }
            }
            // A grandchild's event: this trigger job goes first on its path.
            RunEvent::Downstream { pipeline_id, trigger: mut path, inner } => {
                path.insert(0, trigger.clone());
                RunEvent::Downstream { pipeline_id, trigger: path, inner }
            }
            other => RunEvent::Downstream { pipeline_id: id.unwrap_or(0), trigger: vec![trigger.clone()], inner: Box::new(other) },
        };
        if up.send(wrapped).await.is_err() {
            // Nobody renders events any more: keep draining so the pipeline is not blocked.
            continue;
        }
    }
    id
}
