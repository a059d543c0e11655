//! Pipelines on the server: planning a recorded pipeline from its commit, and driving its
//! engine from the store.
//!
//! The engine is deterministic, so its state is the replay of the pipeline's events. Each
//! server keeps replayed engines in memory; every change goes through [`process`], which takes
//! the pipeline's lock, applies the events to a copy of the engine, and asks the store to append
//! them *if the version is still the one the copy was built from*. Another server appending first
//! makes that fail (`Conflict`): the engine is rebuilt from the store and the events re-applied.

use std::collections::HashMap;
use std::sync::Arc;

use pipeline_spec::load::{LoadOptions, load};
use pipeline_spec::plan::{Plan, PlanContext, PlanError, plan};
use pipeline_spec::predefined::Context;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::store::{JobUpdate, NewJob, PipelineRow, Store, StoreError, Transition};
use scheduler::job::{JobSpec, Layer, SpecVar, job_spec};
use scheduler::protocol::GitSource;
use scheduler::{Command, Engine, EngineOptions, Event, JobNode, JobStatus, PipelineSpec, spec_from_plan};

/// What a job row's `spec` holds: the engine's node, the job's one specification (the value
/// `piste run` runs too) and where its commit comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobTemplate {
    pub node: JobNode,
    pub job: JobSpec,
    pub git: GitSource,
}

/// The commit's pipeline file, loaded and planned. Blocking (git): call from `spawn_blocking`.
fn plan_commit(state: &AppState, row: &PipelineRow, ctx: &Context) -> Result<Option<(Plan, pipeline_spec::model::Pipeline)>, String> {
    let project = state.config.project(&row.project).ok_or_else(|| format!("project `{}` is no longer configured", row.project))?;
    let mirror = state.mirror(&row.project)?;
    if !mirror.has_commit(&row.sha) {
        mirror.fetch(&project.repo).map_err(|e| format!("fetching `{}`: {e}", row.project))?;
    }
    if !mirror.has_commit(&row.sha) {
        return Err(format!("commit {} is not in `{}`", row.sha, project.repo));
    }
    let candidates: Vec<String> = match &project.pipeline_file {
        Some(f) => vec![f.clone()],
        None => vec![".gitlab-ci.yml".into(), ".gitlab-ci-dso.yml".into()],
    };
    let mut found = None;
    for c in &candidates {
        if let Some(text) = mirror.read_file(&row.sha, c).map_err(|e| e.to_string())? {
            found = Some((c.clone(), text));
            break;
        }
    }
    let Some((file, text)) = found else {
        return Err(format!("no pipeline file at {} (looked for {})", &row.sha[..row.sha.len().min(12)], candidates.join(", ")));
    };
    let others: HashMap<String, crate::git::Mirror> = state
        .config
        .projects
        .iter()
        .filter(|p| p.name != row.project)
        .filter_map(|p| state.mirror(&p.name).ok().map(|m| (p.name.clone(), m)))
        .collect();
    // `include: project: <this project>` reads this mirror too.
    let resolver = mirror.resolver(&row.sha, &others).named(row.project.clone());
    // Keep the commit reachable for runners even if its branch is deleted or force-pushed.
    mirror.pin(row.id, &row.sha).map_err(|e| e.to_string())?;
    let mut variables = ctx.pipeline_variables();
    variables.extend(project.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    let loaded = load(&file, &file, &text, &resolver, &LoadOptions { variables: variables.clone(), ..LoadOptions::default() });
    if loaded.has_errors() {
        let errors: Vec<String> = loaded.errors().map(|d| d.display(&loaded.sources).to_string()).collect();
        return Err(errors.join("\n"));
    }
    let pipeline = loaded.pipeline.ok_or("the pipeline file could not be read")?;
    let changed = match &row.before_sha {
        Some(before) if mirror.has_commit(before) => mirror.changed_files(before, &row.sha).ok(),
        _ => None,
    };
    let exists = |g: &pipeline_spec::glob::Glob| {
        use pipeline_spec::include::IncludeResolver;
        resolver.glob(None, g.as_str(), None).is_ok_and(|m| !m.is_empty())
    };
    let pctx = PlanContext {
        predefined: ctx.pipeline_variables(),
        pipeline_vars: project.variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        changed_files: changed,
        exists: Some(&exists),
    };
    match plan(&pipeline, &pctx) {
        Ok(p) => Ok(Some((p, pipeline))),
        Err(PlanError::Filtered { .. }) => Ok(None),
        Err(PlanError::Invalid(d)) => Err(d.iter().map(|d| d.display(&loaded.sources).to_string()).collect::<Vec<_>>().join("\n")),
    }
}

/// Plans a recorded pipeline and starts it. Errors are stored on the pipeline.
pub async fn plan_and_start(state: Arc<AppState>, pipeline_id: i64) {
    if let Err(e) = try_plan_and_start(&state, pipeline_id).await {
        tracing::warn!(pipeline_id, error = %e, "pipeline not started");
        let _ = state.store.fail_pipeline(pipeline_id, &e, now_ms()).await;
    }
}

async fn try_plan_and_start(state: &Arc<AppState>, pipeline_id: i64) -> Result<(), String> {
    let row = state.store.pipeline(pipeline_id).await.map_err(|e| e.to_string())?.ok_or("the pipeline disappeared")?;
    if row.status != "created" {
        return Ok(());
    }
    let ctx: Context = serde_json::from_str(&row.trigger).map_err(|e| format!("stored trigger: {e}"))?;
    let planned = {
        let state = state.clone();
        let row = row.clone();
        let ctx = ctx.clone();
        tokio::task::spawn_blocking(move || plan_commit(&state, &row, &ctx)).await.map_err(|e| e.to_string())??
    };
    let Some((plan, pipeline)) = planned else {
        state.store.save_plan(pipeline_id, &[], "skipped", now_ms()).await.map_err(|e| e.to_string())?;
        return Ok(());
    };
    if plan.jobs.is_empty() {
        state.store.save_plan(pipeline_id, &[], "skipped", now_ms()).await.map_err(|e| e.to_string())?;
        return Ok(());
    }
    let project = state.config.project(&row.project).ok_or("project gone")?;
    let spec = spec_from_plan(&plan, &pipeline);
    // Project variables and secrets: the layer above the pipeline file (secrets masked, raw).
    let outer: Vec<SpecVar> = project
        .variables
        .iter()
        .map(|(k, v)| SpecVar { key: k.clone(), value: v.clone(), raw: false, masked: false, layer: Layer::Project })
        .chain(project.secrets.iter().map(|(k, v)| SpecVar {
            key: k.clone(),
            value: v.clone(),
            raw: true,
            masked: true,
            layer: Layer::Project,
        }))
        .collect();
    let mut jobs = Vec::with_capacity(plan.jobs.len());
    for (i, pj) in plan.jobs.iter().enumerate() {
        let job = &pipeline.jobs[&pj.base];
        let template = JobTemplate {
            node: spec.jobs[i].clone(),
            job: job_spec(&plan, &pipeline, i, &outer).ok_or_else(|| format!("job `{}` is not in the pipeline", pj.base))?,
            git: GitSource { path: String::new(), sha: row.sha.clone(), git_ref: row.git_ref.clone() },
        };
        let spec_json = serde_json::to_string(&template).map_err(|e| e.to_string())?;
        jobs.push(NewJob {
            name: pj.name.clone(),
            stage: pj.stage.clone(),
            stage_index: pj.stage_index as i64,
            tags: job.tags.clone(),
            spec: spec_json,
        });
    }
    state.store.save_plan(pipeline_id, &jobs, "pending", now_ms()).await.map_err(|e| e.to_string())?;
    process(state, pipeline_id, vec![Event::Start { now: now_ms() as u64 }], Vec::new()).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// A replayed engine and what maps its job names to rows.
pub struct Cached {
    engine: Option<Engine>,
    version: i64,
    ids: HashMap<String, i64>,
}

impl Cached {
    pub fn empty() -> Cached {
        Cached { engine: None, version: 0, ids: HashMap::new() }
    }
}

async fn rebuild(state: &AppState, pipeline_id: i64) -> Result<Cached, StoreError> {
    let rows = state.store.jobs(pipeline_id).await?;
    let mut nodes = Vec::with_capacity(rows.len());
    let mut ids = HashMap::new();
    for r in &rows {
        let t: JobTemplate = serde_json::from_str(&r.spec).map_err(|e| StoreError::Corrupt(format!("job {}: {e}", r.id)))?;
        ids.insert(r.name.clone(), r.id);
        nodes.push(t.node);
    }
    let mut engine = Engine::new(PipelineSpec::new(nodes), EngineOptions::default()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let events = state.store.events(pipeline_id).await?;
    let version = events.len() as i64;
    for ev in events {
        // Replay: the commands were applied when the events were first processed.
        let _ = engine.on(ev);
    }
    Ok(Cached { engine: Some(engine), version, ids })
}

/// Applies `events` to the pipeline's engine and stores the result, with `extra` job updates
/// in the same transaction. Returns the engine's commands.
///
/// A cancel of a job no runner holds (still queued) cannot be acknowledged by a runner: its end
/// is reported here at once, so the pipeline does not wait for it forever.
pub async fn process(state: &AppState, pipeline_id: i64, events: Vec<Event>, extra: Vec<JobUpdate>) -> Result<Vec<Command>, StoreError> {
    let mut all = process_once(state, pipeline_id, events, extra).await?;
    let mut pending = all.clone();
    for _round in 0..4 {
        let mut finished = Vec::new();
        let mut rows = None;
        for c in &pending {
            if let Command::CancelJob { job, attempt } = c {
                if rows.is_none() {
                    rows = Some(state.store.jobs(pipeline_id).await?);
                }
                if let Some(row) = rows.iter().flatten().find(|r| &r.name == job) {
                    if row.runner_id.is_none() {
                        finished.push(Event::JobFinished {
                            job: job.clone(),
                            attempt: *attempt,
                            outcome: scheduler::Outcome::Canceled,
                            now: now_ms() as u64,
                        });
                    }
                }
            }
        }
        if finished.is_empty() {
            break;
        }
        pending = process_once(state, pipeline_id, finished, Vec::new()).await?;
        all.extend(pending.iter().cloned());
    }
    Ok(all)
}

async fn process_once(state: &AppState, pipeline_id: i64, events: Vec<Event>, extra: Vec<JobUpdate>) -> Result<Vec<Command>, StoreError> {
    let lock = state.pipeline_lock(pipeline_id).await;
    let mut cached = lock.lock().await;
    for _attempt in 0..8 {
        if cached.engine.is_none() {
            *cached = rebuild(state, pipeline_id).await?;
        }
        // Events are applied to the cached engine in place (cloning a 1,000-job engine for every
        // event dominated dispatch); if storing them fails, the cache is dropped and rebuilt.
        let Some(engine) = cached.engine.as_mut() else { continue };
        let mut commands = Vec::new();
        let mut applied = Vec::new();
        for ev in &events {
            match engine.on(ev.clone()) {
                // A tick that changed nothing is not worth a row in the event log.
                Ok(c) if c.is_empty() && matches!(ev, Event::Tick { .. }) => {}
                Ok(c) => {
                    commands.extend(c);
                    applied.push(ev.clone());
                }
                // Late or repeated reports (a retried finish, an expired lease after the job
                // finished) are refused by the engine and dropped here.
                Err(e) => tracing::debug!(pipeline_id, error = %e, "event refused"),
            }
        }
        let now = now_ms();
        let mut jobs = extra.clone();
        let mut pipeline_status = None;
        let mut queued = false;
        for c in &commands {
            match c {
                Command::RunJob { job, attempt } => {
                    if let Some(&id) = cached.ids.get(job) {
                        jobs.push(JobUpdate::Status { job_id: id, status: JobStatus::Pending, attempt: *attempt, at: now });
                        queued = true;
                    }
                }
                Command::CancelJob { job, .. } => {
                    if let Some(&id) = cached.ids.get(job) {
                        jobs.push(JobUpdate::RequestCancel { job_id: id });
                    }
                }
                Command::JobStatusChanged { job, attempt, status } => {
                    if let Some(&id) = cached.ids.get(job) {
                        if *status != JobStatus::Pending {
                            jobs.push(JobUpdate::Status { job_id: id, status: *status, attempt: *attempt, at: now });
                        }
                    }
                }
                Command::PipelineStatusChanged { status } | Command::PipelineFinished { status, .. } => pipeline_status = Some(*status),
            }
        }
        if applied.is_empty() && jobs.is_empty() {
            return Ok(commands);
        }
        let transition = Transition { pipeline_id, expected_version: cached.version, events: applied, jobs, pipeline_status, at: now };
        match state.store.apply(&transition).await {
            Ok(version) => {
                cached.version = version;
                if queued {
                    state.mark_queued(&commands, &cached.ids);
                    state.queued.notify_waiters();
                }
                return Ok(commands);
            }
            Err(StoreError::Conflict { .. }) => {
                cached.engine = None;
            }
            Err(e) => {
                cached.engine = None;
                return Err(e);
            }
        }
    }
    Err(StoreError::Database(format!("pipeline {pipeline_id}: too many concurrent changes")))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a time in ms since the epoch (for pages).
pub fn iso_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", tod / 3600, tod % 3600 / 60, tod % 60)
}
