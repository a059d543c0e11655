//! One attempt of one job: checkout, inputs (artifacts, dotenv, cache), variables, the executor,
//! then outputs (artifacts, dotenv report, cache). Blocking work goes through `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline_spec::expand::{Var, expand, expand_all_report};
use pipeline_spec::model::{ArtifactsWhen, CachePolicy, Job, Pipeline};
use pipeline_spec::plan::{Plan, PlannedJob};
use pipeline_spec::predefined::{Context, JobContext};
use tokio::sync::mpsc::{self, Sender};
use tokio_util::sync::CancellationToken;

use crate::artifacts::{self, ArtifactSpec};
use crate::cas::{Digest, Store};
use crate::executor::{self, Executor, ImageSpec, JobRequest, PullPolicy, ServiceSpec};
use crate::run::events::RunEvent;
use crate::run::inputs;
use crate::run::logs;

/// GitLab's defaults: a job may run an hour, its `after_script` five minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
pub const AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a finished job left for the jobs after it.
#[derive(Debug, Clone, Default)]
pub struct JobOutputs {
    pub artifacts: Option<Digest>,
    pub dotenv: Vec<(String, String)>,
}

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
    pub outputs: Mutex<HashMap<String, JobOutputs>>,
    pub default_image: Option<String>,
    pub pipeline_id: u64,
    /// Short unique id of this run, in container names and labels.
    pub run_id: String,
}

/// The result of one attempt, for the engine and the summary.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: scheduler::Outcome,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub duration: Duration,
}

fn failed(reason: scheduler::FailureReason, message: String, started: Instant) -> Attempt {
    Attempt {
        outcome: scheduler::Outcome::Failed { reason, exit_code: None },
        exit_code: None,
        reason: Some(message),
        duration: started.elapsed(),
    }
}

/// Runs attempt `attempt` of plan job `index` in workspace slot `slot`.
pub async fn run(shared: Arc<Shared>, index: usize, attempt: u32, slot: usize, cancel: CancellationToken) -> Attempt {
    let started = Instant::now();
    let pj = shared.plan.jobs[index].clone();
    let Some(job) = shared.pipeline.jobs.get(&pj.base).cloned() else {
        return failed(scheduler::FailureReason::UnknownFailure, format!("job `{}` is not in the pipeline", pj.base), started);
    };
    let job_id = shared.pipeline_id * 1000 + index as u64 + 1;

    // 1. Variables, low to high precedence (GitLab): predefined < global < workflow < job <
    //    instance (matrix, rules) < dotenv of dependencies < secrets < pipeline variables.
    let deps = shared.plan.artifact_sources(index);
    let dotenv: Vec<(String, String)> = {
        let outputs = shared.outputs.lock().unwrap_or_else(|e| e.into_inner());
        deps.iter().filter_map(|d| outputs.get(d)).flat_map(|o| o.dotenv.clone()).collect()
    };
    // GIT_* settings come from the variables; CI_PROJECT_DIR is only known after the checkout,
    // so the set is expanded again once the workspace exists.
    let first = variables(&shared, &pj, &job, job_id, "", &dotenv);
    let git = inputs::GitSettings::from_vars(&first);

    // 2. Checkout, artifacts of dependencies, cache.
    let prepared = {
        let shared = shared.clone();
        let deps = deps.clone();
        let job = job.clone();
        tokio::task::spawn_blocking(move || shared.inputs.prepare(slot, &git, &deps, &shared.outputs, &shared.cas, &job, &first)).await
    };
    let prepared = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            return failed(scheduler::FailureReason::RunnerSystemFailure, format!("preparing the workspace failed: {e}"), started);
        }
        Err(e) => return failed(scheduler::FailureReason::RunnerSystemFailure, format!("preparing the workspace panicked: {e}"), started),
    };
    let project_dir = if shared.containers { shared.context.project_dir() } else { prepared.workspace.to_string_lossy().into_owned() };
    let vars = variables(&shared, &pj, &job, job_id, &project_dir, &dotenv);
    let lookup: Vec<(String, String)> = vars.clone();

    // 3. The executor, with the log pump alongside.
    let request = request(&shared, &pj, &job, attempt, &prepared.workspace, project_dir, &vars);
    let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
    let log_path = shared.log_dir.join(format!("{}.log", log_name(&pj.name)));
    let secret_values: Vec<String> = shared.secrets.iter().map(|(_, v)| v.clone()).filter(|v| !v.is_empty()).collect();
    let events = shared.stream_logs.then(|| shared.events.clone());
    let pump = tokio::spawn({
        let name = pj.name.clone();
        let log_path = log_path.clone();
        async move { logs::pump(name, rx, secret_values, &log_path, events).await }
    });
    for note in &prepared.notes {
        let _ = tx.send(format!("{note}\n").into_bytes()).await;
    }
    let report = shared.executor.run(request, tx, cancel).await;
    let _ = pump.await;

    let (outcome, exit_code, reason) = match &report.outcome {
        executor::Outcome::Success => (scheduler::Outcome::Success, Some(0), None),
        executor::Outcome::Failed { exit_code, reason } => {
            let (r, text) = match reason {
                executor::FailureReason::ScriptFailure => (scheduler::FailureReason::ScriptFailure, None),
                executor::FailureReason::JobTimeout => {
                    (scheduler::FailureReason::JobExecutionTimeout, Some("the job ran longer than its timeout".to_string()))
                }
                executor::FailureReason::RunnerSystemFailure(m) => (scheduler::FailureReason::RunnerSystemFailure, Some(m.clone())),
            };
            (scheduler::Outcome::Failed { reason: r, exit_code: *exit_code }, *exit_code, text)
        }
        executor::Outcome::Canceled => (scheduler::Outcome::Canceled, None, None),
    };
    let succeeded = matches!(outcome, scheduler::Outcome::Success);

    // 4. Outputs: artifacts (per `artifacts:when`), the dotenv report, the cache.
    if !matches!(outcome, scheduler::Outcome::Canceled) {
        let shared2 = shared.clone();
        let workspace = prepared.workspace.clone();
        let name = pj.name.clone();
        let job2 = job.clone();
        let lookup2 = lookup.clone();
        let keys = prepared.cache_keys.clone();
        let saved = tokio::task::spawn_blocking(move || save_outputs(&shared2, &name, &job2, &workspace, &keys, succeeded, &lookup2)).await;
        if let Ok(Err(e)) = saved {
            let _ = shared.events.send(RunEvent::Log { job: pj.name.clone(), lines: vec![format!("WARNING: {e}")] }).await;
        }
    }
    Attempt { outcome, exit_code, reason, duration: started.elapsed() }
}

fn variables(
    shared: &Shared,
    pj: &PlannedJob,
    job: &Job,
    job_id: u64,
    project_dir: &str,
    dotenv: &[(String, String)],
) -> Vec<(String, String)> {
    let manual = matches!(pj.when, pipeline_spec::model::When::Manual);
    let image = job.image.as_ref().map(|i| i.name.as_str()).or(shared.default_image.as_deref());
    let jctx = JobContext {
        name: &pj.name,
        stage: &pj.stage,
        job_id,
        node_index: pj.node.map(|(i, _)| i),
        node_total: pj.node.map_or(0, |(_, t)| t),
        manual,
        environment: None,
        image,
        timeout_secs: Some(job.timeout.unwrap_or(DEFAULT_TIMEOUT.as_secs())),
        started_at: None,
    };
    let mut list: Vec<Var> = shared.context.job_variables(&jctx).into_iter().map(|(k, v)| Var::new(k, v)).collect();
    if !project_dir.is_empty() {
        list.push(Var::new("CI_PROJECT_DIR", project_dir));
    }
    let globals = shared.pipeline.variables.iter().filter(|v| job.inherit_variables.as_ref().is_none_or(|only| only.contains(&v.name)));
    list.extend(globals.map(|v| if v.expand { Var::new(&v.name, &v.value) } else { Var::raw(&v.name, &v.value) }));
    list.extend(shared.plan.variables.iter().map(|(k, v)| Var::new(k, v)));
    list.extend(job.variables.iter().map(|v| if v.expand { Var::new(&v.name, &v.value) } else { Var::raw(&v.name, &v.value) }));
    list.extend(pj.variables.iter().map(|(k, v)| Var::new(k, v)));
    list.extend(dotenv.iter().map(|(k, v)| Var::raw(k, v)));
    list.extend(shared.secrets.iter().map(|(k, v)| Var::raw(k, v)));
    list.extend(shared.pipeline_vars.iter().map(|(k, v)| Var::new(k, v)));
    let report = expand_all_report(&list);
    report.values.into_iter().collect()
}

#[allow(clippy::too_many_arguments)]
fn request(
    shared: &Shared,
    pj: &PlannedJob,
    job: &Job,
    attempt: u32,
    workspace: &Path,
    project_dir: String,
    vars: &[(String, String)],
) -> JobRequest {
    let lookup: Vec<(String, String)> = vars.to_vec();
    let pull = PullPolicy::parse_list::<String>;
    let image = match &job.image {
        Some(i) => Some(ImageSpec { name: expand(&i.name, &lookup), entrypoint: i.entrypoint.clone(), pull_policy: pull(&i.pull_policy) }),
        None => shared.default_image.as_ref().map(|n| ImageSpec::new(n.clone())),
    };
    let services = job
        .services
        .iter()
        .map(|s| ServiceSpec {
            name: expand(&s.name, &lookup),
            alias: s.alias.clone(),
            entrypoint: s.entrypoint.clone(),
            command: s.command.clone(),
            variables: s.variables.clone(),
            pull_policy: Vec::new(),
        })
        .collect();
    let mut script = job.before_script.clone();
    script.extend(job.script.iter().cloned());
    JobRequest {
        // Unique across processes and runs, and readable: `<run>-<job>-a<attempt>`.
        id: format!("{}-{}-a{attempt}", shared.run_id, log_name(&pj.name).to_ascii_lowercase()),
        name: pj.name.clone(),
        image,
        services,
        script,
        after_script: job.after_script.clone(),
        env: vars.to_vec(),
        workspace: workspace.to_path_buf(),
        project_dir,
        timeout: job.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs),
        after_script_timeout: AFTER_SCRIPT_TIMEOUT,
    }
}

/// Collects artifacts into the content-addressed store, reads the dotenv report, saves caches.
fn save_outputs(
    shared: &Shared,
    name: &str,
    job: &Job,
    workspace: &Path,
    cache_keys: &[Option<String>],
    succeeded: bool,
    vars: &[(String, String)],
) -> Result<(), String> {
    let mut out = JobOutputs::default();
    if let Some(a) = &job.artifacts {
        let wanted = match a.when {
            ArtifactsWhen::OnSuccess => succeeded,
            ArtifactsWhen::OnFailure => !succeeded,
            ArtifactsWhen::Always => true,
        };
        if wanted {
            let mut paths: Vec<String> = a.paths.iter().map(|p| expand(p, &vars)).collect();
            paths.extend(a.reports.dotenv.iter().cloned());
            paths.extend(a.reports.junit.iter().cloned());
            let untracked = if a.untracked { inputs::untracked_files(workspace) } else { Vec::new() };
            let spec = ArtifactSpec { paths, exclude: a.exclude.clone(), untracked };
            let collected = artifacts::collect(workspace, &spec).map_err(|e| format!("collecting artifacts: {e}"))?;
            if !collected.files.is_empty() {
                let tmp = shared.cas.root().join(format!("tmp-{name}-{}.tar.gz", std::process::id()).replace(['/', ' ', ':'], "_"));
                let file = std::fs::File::create(&tmp).map_err(|e| format!("writing artifacts: {e}"))?;
                artifacts::write_archive(workspace, &collected.files, std::io::BufWriter::new(file))
                    .map_err(|e| format!("archiving artifacts: {e}"))?;
                let digest =
                    shared.cas.put(std::fs::File::open(&tmp).map_err(|e| e.to_string())?).map_err(|e| format!("storing artifacts: {e}"))?;
                let _ = std::fs::remove_file(&tmp);
                out.artifacts = Some(digest);
            }
            for report in &a.reports.dotenv {
                if let Ok(text) = std::fs::read_to_string(workspace.join(report)) {
                    out.dotenv.extend(crate::dotenv::parse(&text).map_err(|e| format!("dotenv report `{report}`: {e}"))?);
                }
            }
        }
    }
    shared.outputs.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), out);
    for (cache, key) in job.cache.iter().zip(cache_keys) {
        let wanted = match cache.when {
            ArtifactsWhen::OnSuccess => succeeded,
            ArtifactsWhen::OnFailure => !succeeded,
            ArtifactsWhen::Always => true,
        };
        if let (true, Some(key)) = (wanted && cache.policy != CachePolicy::Pull, key) {
            shared.inputs.save_cache(workspace, cache, key, vars).map_err(|e| format!("saving cache: {e}"))?;
        }
    }
    Ok(())
}

/// A file name for a job's log: job names hold spaces, `/`, `:` and brackets.
pub fn log_name(job: &str) -> String {
    let mut s: String = job.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect();
    if s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}
