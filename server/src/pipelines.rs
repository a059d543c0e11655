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
use pipeline_spec::model::OnNewCommit;
use pipeline_spec::plan::{Compared, Plan, PlanAutoCancel, PlanContext, PlanError, plan};
use pipeline_spec::predefined::Context;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::store::{JobUpdate, NewJob, PipelineRow, Store, StoreError, Transition};
use scheduler::job::{JobSpec, Layer, SpecVar, job_spec};
use scheduler::protocol::GitSource;
use scheduler::{AutoCancelMode, Command, Engine, EngineOptions, Event, JobNode, JobStatus, PipelineSpec, PipelineStatus, spec_from_plan};

/// What a job row's `spec` holds: the engine's node, the job's one specification (the value
/// `piste run` runs too) and where its commit comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobTemplate {
    pub node: JobNode,
    pub job: JobSpec,
    pub git: GitSource,
    /// The job's `coverage:` regex, applied to its log when it finishes (`reports`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<String>,
    /// The pipeline's `workflow:auto_cancel` (the same in every job row of a pipeline: the
    /// engine is rebuilt from the rows, and `on_job_failure` is part of its specification).
    #[serde(default)]
    pub auto_cancel: PlanAutoCancel,
    /// A trigger job's `trigger:`: it never reaches a runner ([`crate::bridges`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<pipeline_spec::model::Trigger>,
    /// A merge request pipeline's diff base, computed when planning (the trigger does not know
    /// it): `CI_MERGE_REQUEST_DIFF_BASE_SHA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_base_sha: Option<String>,
    /// `Some` when the job's result may be reused (no `environment`, not a trigger job:
    /// `scheduler::job::never_reused`), with its `rules:changes`/`only:changes` patterns as
    /// written; `None`: never (rows planned before reuse existed too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_changes: Option<Vec<String>>,
}

/// A plan, its pipeline and a merge request's diff base.
type Planned = (Plan, pipeline_spec::model::Pipeline, Option<String>);

/// The commit's pipeline file, loaded and planned. Blocking (git): call from `spawn_blocking`.
/// Also returns a merge request's diff base (`CI_MERGE_REQUEST_DIFF_BASE_SHA`).
fn plan_commit(
    state: &AppState,
    row: &PipelineRow,
    ctx: &Context,
    downstream: Option<&crate::bridges::DownstreamInputs>,
) -> Result<Option<Planned>, StartError> {
    let project = state.config.project(&row.project).ok_or_else(|| StartError::ProjectGone(row.project.clone()))?;
    let mirror = state.mirror(&row.project)?;
    if !mirror.has_commit(&row.sha) {
        mirror.fetch_from(&state.config.remote(project))?;
    }
    if !mirror.has_commit(&row.sha) {
        return Err(StartError::Invalid(format!("commit {} is not in `{}`", row.sha, crate::git::remote::redact(&project.repo))));
    }
    let candidates: Vec<String> = match &project.pipeline_file {
        Some(f) => vec![f.clone()],
        None => vec![".gitlab-ci.yml".into(), ".gitlab-ci-dso.yml".into()],
    };
    let mut found = None;
    // A child pipeline's configuration is its trigger's `include:`, not a file of the commit
    // (a multi-project one's is its project's file).
    let child = downstream.filter(|d| d.trigger.is_child());
    if child.is_none() {
        for c in &candidates {
            if let Some(text) = mirror.read_file(&row.sha, c)? {
                found = Some((c.clone(), text));
                break;
            }
        }
        if found.is_none() {
            let at = &row.sha[..row.sha.len().min(12)];
            return Err(StartError::Invalid(format!("no pipeline file at {at} (looked for {})", candidates.join(", "))));
        }
    }
    let others: HashMap<String, crate::git::Mirror> = state
        .config
        .projects
        .iter()
        .filter(|p| p.name != row.project)
        .filter_map(|p| state.mirror(&p.name).ok().map(|m| (p.name.clone(), m)))
        .collect();
    let remotes =
        state.config.projects.iter().filter(|p| others.contains_key(&p.name)).map(|p| (p.name.clone(), state.config.remote(p))).collect();
    // `include: project: <this project>` reads this mirror too.
    let tree = mirror.resolver(&row.sha, &others).named(row.project.clone()).fetching(remotes);
    let resolver = state.includes.resolver(&tree, state.now_ms(), tokio::runtime::Handle::try_current().ok());
    // Keep the commit reachable for runners even if its branch is deleted or force-pushed.
    mirror.pin(row.id, &row.sha)?;
    let mut variables = ctx.pipeline_variables();
    variables.extend(project.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    variables.extend(downstream.iter().flat_map(|d| d.variables.iter().cloned()));
    // This server issues `id_tokens` (`id_tokens.rs`): no warning that they stay unset.
    let options =
        LoadOptions { variables: variables.clone(), max_needs: state.config.max_needs, id_tokens_issued: true, ..LoadOptions::default() };
    let loaded = match (child, found) {
        (Some(d), _) => {
            let handle = tokio::runtime::Handle::current();
            let artifact = |job: &str, path: &str| crate::bridges::read_artifact(state, &handle, d.upstream_pipeline, job, path);
            let with = pipeline_spec::child::WithArtifacts { base: &resolver, artifact };
            pipeline_spec::child::load_child("`trigger:include`", &d.trigger, &with, &options)
        }
        (None, Some((file, text))) => load(&file, &file, &text, &resolver, &options),
        (None, None) => return Err(StartError::Invalid("no pipeline file".into())),
    };
    if loaded.has_errors() {
        let errors: Vec<String> = loaded.errors().map(|d| d.display(&loaded.sources).to_string()).collect();
        return Err(StartError::Invalid(errors.join("\n")));
    }
    let pipeline = loaded.pipeline.ok_or_else(|| StartError::Invalid("the pipeline file could not be read".into()))?;
    // A merge request's changes are those of its branch: from the merge base with the target
    // branch (fetched now: it may have moved since the branch point) to its head, as GitLab
    // computes them for merge request pipelines; a push's are the pushed range.
    let mut ctx = ctx.clone();
    let changed = match &mut ctx.merge_request {
        Some(mr) => {
            let target = format!("refs/heads/{}", mr.target_branch);
            let refspec = format!("+{target}:{target}");
            if let Err(e) = mirror.fetch_refspecs_from(&state.config.remote(project), &[refspec.as_str()]) {
                tracing::warn!(project = %row.project, target = %mr.target_branch, error = %crate::error::chain(&e), "cannot fetch a merge request's target branch");
            }
            let base = mirror.resolve_ref(&target).ok().flatten().and_then(|t| mirror.merge_base(&t, &row.sha).ok().flatten());
            mr.diff_base_sha = base.clone();
            base.and_then(|b| mirror.changed_files(&b, &row.sha).ok())
        }
        None => match &row.before_sha {
            Some(before) if mirror.has_commit(before) => mirror.changed_files(before, &row.sha).ok(),
            _ => None,
        },
    };
    let exists = |g: &pipeline_spec::glob::Glob| {
        use pipeline_spec::include::IncludeResolver;
        resolver.glob(None, g.as_str(), None).is_ok_and(|m| !m.is_empty())
    };
    // `rules:changes:compare_to`: from the merge base of that ref and the commit.
    let compare = |to: &str| {
        let Some(base) = mirror.resolve_ref(to).ok().flatten() else { return Compared::NotARef };
        match mirror.merge_base(&base, &row.sha).ok().flatten().and_then(|b| mirror.changed_files(&b, &row.sha).ok()) {
            Some(files) => Compared::Changes(files),
            None => Compared::Unknown,
        }
    };
    let pctx = PlanContext {
        predefined: ctx.pipeline_variables(),
        pipeline_vars: project
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(downstream.iter().flat_map(|d| d.variables.iter().cloned()))
            .collect(),
        changed_files: changed,
        exists: Some(&exists),
        compare: Some(&compare),
    };
    let diff_base = ctx.merge_request.as_ref().and_then(|mr| mr.diff_base_sha.clone());
    match plan(&pipeline, &pctx) {
        Ok(p) => Ok(Some((p, pipeline, diff_base))),
        Err(PlanError::Filtered { .. }) => Ok(None),
        Err(PlanError::Invalid(d)) => {
            Err(StartError::Invalid(d.iter().map(|d| d.display(&loaded.sources).to_string()).collect::<Vec<_>>().join("\n")))
        }
    }
}

/// Why a recorded pipeline did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The pipeline file (or the commit) is wrong: the message is for the pipeline's author.
    #[error("{0}")]
    Invalid(String),
    #[error("the project `{0}` is no longer configured")]
    ProjectGone(String),
    #[error("the pipeline disappeared")]
    Gone,
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    #[error("storing the plan")]
    Store(#[from] StoreError),
    #[error("the stored trigger does not decode")]
    Trigger(#[source] serde_json::Error),
    #[error("encoding a job")]
    Encode(#[source] serde_json::Error),
    #[error("the planning task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl StartError {
    /// What the pipeline's `error` says: the author's and the operator's problems in full,
    /// the server's own failures only as a pointer to its log.
    fn stored_message(&self) -> String {
        match self {
            StartError::Invalid(_) | StartError::ProjectGone(_) | StartError::Git(_) => crate::error::chain(self),
            _ => "internal error: see the server log".into(),
        }
    }
}

/// Plans a recorded pipeline and starts it. Errors are stored on the pipeline.
pub async fn plan_and_start(state: Arc<AppState>, pipeline_id: i64) {
    if let Err(e) = try_plan_and_start(&state, pipeline_id).await {
        let project = state.store.pipeline(pipeline_id).await.ok().flatten().map(|p| p.project).unwrap_or_default();
        let chain = crate::error::chain(&e);
        let first = chain.lines().next().unwrap_or_default();
        tracing::warn!(%project, pipeline = pipeline_id, error = ?first, "pipeline failed to plan");
        if let Err(e) = state.store.fail_pipeline(pipeline_id, &e.stored_message(), state.now_ms()).await {
            tracing::warn!(%project, pipeline = pipeline_id, error = %crate::error::chain(&e), "cannot record the planning failure");
        }
        state.pipeline_changed(pipeline_id, &project, true);
    }
}

async fn try_plan_and_start(state: &Arc<AppState>, pipeline_id: i64) -> Result<(), StartError> {
    let row = state.store.pipeline(pipeline_id).await?.ok_or(StartError::Gone)?;
    if row.status != PipelineStatus::Created {
        return Ok(());
    }
    let stored: crate::bridges::StoredTrigger = serde_json::from_str(&row.trigger).map_err(StartError::Trigger)?;
    let ctx = with_row(stored.context.clone(), &row);
    let planned = {
        let state = state.clone();
        let row = row.clone();
        let ctx = ctx.clone();
        let downstream = stored.downstream.clone();
        tokio::task::spawn_blocking(move || plan_commit(&state, &row, &ctx, downstream.as_ref())).await??
    };
    let skipped = match &planned {
        None => true,
        Some((plan, _, _)) => plan.jobs.is_empty(),
    };
    let Some((plan, pipeline, diff_base)) = planned.filter(|_| !skipped) else {
        state.store.save_plan(pipeline_id, &[], PipelineStatus::Skipped, state.now_ms()).await?;
        state.pipeline_changed(pipeline_id, &row.project, true);
        tracing::info!(project = %row.project, pipeline = pipeline_id, "pipeline skipped: no job to run");
        return Ok(());
    };
    let project = state.config.project(&row.project).ok_or_else(|| StartError::ProjectGone(row.project.clone()))?;
    let spec = spec_from_plan(&plan, &pipeline);
    // Project variables and secrets: the layer above the pipeline file (secrets masked, raw).
    // Project variables: the layer above the pipeline file. Secrets are not stored in job rows:
    // they join the specification when the job is leased (`secret_vars`).
    // A child pipeline's variables from its trigger job (`forward`) are its pipeline variables.
    let outer: Vec<SpecVar> = project
        .variables
        .iter()
        .map(|(k, v)| SpecVar { key: k.clone(), value: v.clone(), raw: false, masked: false, layer: Layer::Project })
        .chain(stored.downstream.iter().flat_map(|d| d.variables.iter()).map(|(k, v)| SpecVar {
            key: k.clone(),
            value: v.clone(),
            raw: true,
            masked: false,
            layer: Layer::Pipeline,
        }))
        .collect();
    let mut jobs = Vec::with_capacity(plan.jobs.len());
    for (i, pj) in plan.jobs.iter().enumerate() {
        let job = &pipeline.jobs[&pj.base];
        let template = JobTemplate {
            node: spec.jobs[i].clone(),
            job: job_spec(&plan, &pipeline, i, &outer)
                .ok_or_else(|| StartError::Invalid(format!("job `{}` is not in the pipeline", pj.base)))?,
            git: GitSource { path: String::new(), sha: row.sha.clone(), git_ref: row.git_ref.clone() },
            coverage: job.coverage.clone(),
            auto_cancel: plan.auto_cancel,
            trigger: job.trigger.clone(),
            diff_base_sha: diff_base.clone(),
            reuse_changes: scheduler::job::never_reused(job).is_none().then(|| scheduler::job::change_patterns(job)),
        };
        let spec_json = serde_json::to_string(&template).map_err(StartError::Encode)?;
        jobs.push(NewJob {
            name: pj.name.clone(),
            stage: pj.stage.clone(),
            stage_index: pj.stage_index as i64,
            tags: job.tags.clone(),
            spec: spec_json,
            resource_group: pj.resource_group.clone(),
        });
    }
    let count = jobs.len();
    if row.awaiting_approval() {
        // A fork's merge request under `fork_pipelines = "approval"`: its jobs are shown, and
        // nothing starts (no `Start` event, so no job is ever pending) until a maintainer
        // approves it (`approve`). `manual` is GitLab's "blocked": waiting for a person.
        state.store.save_plan(pipeline_id, &jobs, PipelineStatus::Manual, state.now_ms()).await?;
        state.pipeline_changed(pipeline_id, &row.project, true);
        tracing::info!(project = %row.project, pipeline = pipeline_id, git_ref = %row.git_ref, jobs = count, "pipeline waits for a maintainer's approval");
        return Ok(());
    }
    state.store.save_plan(pipeline_id, &jobs, PipelineStatus::Pending, state.now_ms()).await?;
    state.pipeline_changed(pipeline_id, &row.project, true);
    tracing::info!(project = %row.project, pipeline = pipeline_id, git_ref = %row.git_ref, jobs = count, "pipeline created");
    // Older pipelines of the branch first, so that whoever sees this one started knows they
    // were dealt with.
    if ctx.tag.is_none() {
        auto_cancel_older(state, &row).await?;
    }
    process(state, pipeline_id, vec![Event::Start { now: state.now_ms() as u64 }], Vec::new()).await?;
    Ok(())
}

/// GitLab's "auto-cancel redundant pipelines" (`Ci::PipelineCreation::CancelRedundantPipelinesService`):
/// a new pipeline on a branch (or a merge request's ref) cancels the older pipelines of that ref
/// built for another commit, each as its own `workflow:auto_cancel:on_new_commit` says
/// (`conservative`: all of it unless an `interruptible: false` job has started;
/// `interruptible`: its interruptible jobs; `none`: nothing).
async fn auto_cancel_older(state: &AppState, new: &PipelineRow) -> Result<(), StoreError> {
    let older: Vec<PipelineRow> = state
        .store
        .pipelines(Some(&new.project), 200)
        .await?
        .into_iter()
        .filter(|p| p.id < new.id && p.git_ref == new.git_ref && p.sha != new.sha)
        .filter(|p| p.version > 0 && !p.status.is_complete())
        .collect();
    for p in older {
        let Some(first) = state.store.jobs(p.id).await?.into_iter().next() else { continue };
        let template: JobTemplate =
            serde_json::from_str(&first.spec).map_err(|e| StoreError::corrupt(format!("the spec of job {}", first.id), e))?;
        let mode = match template.auto_cancel.on_new_commit {
            OnNewCommit::Conservative => AutoCancelMode::Conservative,
            OnNewCommit::Interruptible => AutoCancelMode::Interruptible,
            OnNewCommit::None => continue,
        };
        tracing::info!(project = %p.project, pipeline = p.id, by = new.id, mode = ?mode, "pipeline auto-canceled by a newer one");
        process(state, p.id, vec![Event::AutoCancel { mode, now: state.now_ms() as u64 }], Vec::new()).await?;
    }
    Ok(())
}

/// Why an approval was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    #[error("this pipeline does not wait for an approval (it needs none, was approved already, or was canceled)")]
    NotWaiting,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A maintainer (`by`) approves a pipeline that waits for it: recorded, then started. A server
/// that stops between the two starts it when it starts again (`resume_approved`).
pub async fn approve(state: &AppState, pipeline_id: i64, by: &str) -> Result<(), ApproveError> {
    if !state.store.approve_pipeline(pipeline_id, by, state.now_ms()).await? {
        return Err(ApproveError::NotWaiting);
    }
    let project = state.store.pipeline(pipeline_id).await?.map(|p| p.project).unwrap_or_default();
    tracing::info!(%project, pipeline = pipeline_id, user = %by, "pipeline approved");
    process(state, pipeline_id, vec![Event::Start { now: state.now_ms() as u64 }], Vec::new()).await?;
    Ok(())
}

/// Starts the pipelines approved but not started (the server stopped in between).
pub async fn resume_approved(state: &AppState) -> Result<(), StoreError> {
    for row in state.store.pipelines_with_status(&[PipelineStatus::Manual]).await? {
        if row.version == 0 && row.approval.as_ref().is_some_and(|a| a.by.is_some()) {
            process(state, row.id, vec![Event::Start { now: state.now_ms() as u64 }], Vec::new()).await?;
        }
    }
    Ok(())
}

/// A replayed engine and what maps its job names to rows.
pub struct Cached {
    engine: Option<Engine>,
    version: i64,
    ids: HashMap<String, i64>,
    project: String,
    /// The `wake_at` last stored for the pipeline; `None` until this server stored one (so the
    /// first change after a rebuild stores it).
    wake_at: Option<Option<i64>>,
    /// Events the engine has applied that the pipeline's log does not hold yet: job starts
    /// that changed nothing else ([`job_started`]). They are stored with the next transition.
    deferred: Vec<Event>,
    /// Trigger jobs: run by the server ([`crate::bridges`]), never queued for runners.
    bridges: std::collections::HashSet<String>,
}

impl Cached {
    pub fn empty() -> Cached {
        Cached {
            engine: None,
            version: 0,
            ids: HashMap::new(),
            project: String::new(),
            wake_at: None,
            deferred: Vec::new(),
            bridges: Default::default(),
        }
    }
}

async fn rebuild(state: &AppState, pipeline_id: i64) -> Result<Cached, StoreError> {
    let project = state.store.pipeline(pipeline_id).await?.ok_or(StoreError::NotFound { what: "pipeline", id: pipeline_id })?.project;
    let rows = state.store.jobs(pipeline_id).await?;
    let mut nodes = Vec::with_capacity(rows.len());
    let mut ids = HashMap::new();
    let mut auto_cancel = PlanAutoCancel::default();
    let mut bridges = std::collections::HashSet::new();
    for r in &rows {
        let t: JobTemplate = serde_json::from_str(&r.spec).map_err(|e| StoreError::corrupt(format!("the spec of job {}", r.id), e))?;
        ids.insert(r.name.clone(), r.id);
        if t.trigger.is_some() {
            bridges.insert(r.name.clone());
        }
        nodes.push(t.node);
        auto_cancel = t.auto_cancel;
    }
    let mut spec = PipelineSpec::new(nodes);
    spec.cancel_on_job_failure = auto_cancel.on_job_failure == pipeline_spec::model::OnJobFailure::All;
    let mut engine =
        Engine::new(spec, EngineOptions::default()).map_err(|e| StoreError::corrupt(format!("the jobs of pipeline {pipeline_id}"), e))?;
    let events = state.store.events(pipeline_id).await?;
    let version = events.len() as i64;
    for ev in events {
        // Replay: the commands were applied when the events were first processed.
        let _ = engine.on(ev);
    }
    Ok(Cached { engine: Some(engine), version, ids, project, wake_at: None, deferred: Vec::new(), bridges })
}

/// A runner took a job. The claim stored it as running in its row already; the engine learns
/// it here. When that changes nothing else the store keeps — the pipeline's status, its
/// wake-up time — the event waits in memory and joins the pipeline's log with its next
/// transition (usually the job's finish): a write transaction fewer per job. Losing it (a
/// crash, an engine dropped from memory) loses nothing the engine needs: a pending job may
/// finish, be canceled or lose its lease without having started; only its start time is
/// missing from the engine's timeline (the job row keeps it).
pub async fn job_started(state: &AppState, pipeline_id: i64, event: Event) -> Result<(), StoreError> {
    process_once(state, pipeline_id, vec![event], Vec::new(), Defer::IfNothingElse).await.map(drop)
}

/// [`job_started`] for the lease: the event joins the pipeline's queue at once, so that
/// whatever is processed for the pipeline after the runner has its job (the job's finish
/// first of all) comes after it; it is applied in the background, so the runner does not
/// wait for the pipeline's lock, which a finish of another of its jobs may hold across a
/// commit. A start that cannot be stored is logged: the job's row keeps it.
pub async fn job_started_later(state: Arc<AppState>, pipeline_id: i64, event: Event) {
    let entry = state.pipeline_lock(pipeline_id).await;
    let queued = enqueue(&entry, vec![event], Vec::new(), Defer::IfNothingElse);
    tokio::spawn(async move {
        if let Err(e) = settle(&state, pipeline_id, &entry, queued).await {
            tracing::warn!(pipeline = pipeline_id, error = %crate::error::chain(&e), "a job's start was not stored (its row keeps it)");
        }
    });
}

/// Whether [`process_once`] may keep its events in memory instead of storing them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Defer {
    Never,
    /// When they only mark jobs running (which their rows say already).
    IfNothingElse,
}

/// Applies `events` to the pipeline's engine and stores the result, with `extra` job updates
/// in the same transaction. Returns the engine's commands.
///
/// A cancel of a job no runner holds (still queued) cannot be acknowledged by a runner: its end
/// is reported here at once, so the pipeline does not wait for it forever.
pub async fn process(state: &AppState, pipeline_id: i64, events: Vec<Event>, extra: Vec<JobUpdate>) -> Result<Vec<Command>, StoreError> {
    let all = process_cancels(state, pipeline_id, events, extra).await?;
    let mut groups: Vec<&str> = all
        .iter()
        .filter_map(|c| match c {
            Command::WaitForResource { group, .. } | Command::ReleaseResource { group, .. } => Some(group.as_str()),
            _ => None,
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    if !groups.is_empty() {
        let project = state.store.pipeline(pipeline_id).await?.map(|p| p.project).unwrap_or_default();
        for group in groups {
            assign_resource(state, &project, group).await?;
        }
    }
    Ok(all)
}

/// At start-up: every resource group with a holder or a waiting job gets [`assign_resource`]'s
/// repair — a holder that finished while the server was down (its runner's `finish` arrived
/// at another server, or the lease ran out) is released and the next job granted, a grant the
/// stop interrupted is told again.
pub async fn resume_resource_groups(state: &AppState) -> Result<(), StoreError> {
    for (project, group) in state.store.resource_groups_in_use().await? {
        assign_resource(state, &project, &group).await?;
    }
    Ok(())
}

/// Gives a free resource group of `project` to its next job, as the group's process mode
/// says (GitLab's `AssignResourceFromResourceGroupService`), and repairs what a crash or a
/// lost lease left: a holder that is no longer pending or running is released; a holder
/// still waiting (granted, but the server stopped before telling its pipeline) is told again.
fn assign_resource<'a>(
    state: &'a AppState,
    project: &'a str,
    group: &'a str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'a>> {
    Box::pin(async move {
        use crate::config::ProcessMode;
        let mode = state.config.project(project).and_then(|p| p.resource_groups.get(group).copied()).unwrap_or(ProcessMode::Unordered);
        for _ in 0..8 {
            if let Some((job, attempt)) = state.store.resource_holder(project, group).await? {
                match state.store.job(job).await? {
                    Some(row) if row.attempt == attempt && row.status.is_active() => return Ok(()),
                    Some(row) if row.attempt == attempt && row.status == JobStatus::WaitingForResource => {
                        let granted = Event::ResourceGranted { job: row.name, attempt: attempt as u32, now: state.now_ms() as u64 };
                        process(state, row.pipeline_id, vec![granted], Vec::new()).await?;
                        return Ok(());
                    }
                    _ => {
                        state.store.release_resource(project, group, job, attempt).await?;
                        continue;
                    }
                }
            }
            let queue = state.store.resource_queue(project, group).await?;
            let first = match mode {
                ProcessMode::Unordered => queue.iter().find(|c| c.status == JobStatus::WaitingForResource),
                ProcessMode::OldestFirst => queue.first(),
                ProcessMode::NewestFirst => {
                    let newest = queue.iter().map(|c| c.pipeline_id).max();
                    queue.iter().find(|c| Some(c.pipeline_id) == newest)
                }
            };
            // Oldest/newest first: the upcoming job comes first even if it is not ready yet.
            let Some(next) = first.filter(|c| c.status == JobStatus::WaitingForResource) else { return Ok(()) };
            if state.store.grant_resource(project, group, next.job_id, next.attempt).await? {
                tracing::info!(%project, pipeline = next.pipeline_id, job = next.job_id, group = ?group, "resource group granted");
                let granted = Event::ResourceGranted { job: next.name.clone(), attempt: next.attempt as u32, now: state.now_ms() as u64 };
                process(state, next.pipeline_id, vec![granted], Vec::new()).await?;
                return Ok(());
            }
        }
        Ok(())
    })
}

/// [`process`], and the end of canceled jobs no runner holds.
pub(crate) async fn process_cancels(
    state: &AppState,
    pipeline_id: i64,
    events: Vec<Event>,
    extra: Vec<JobUpdate>,
) -> Result<Vec<Command>, StoreError> {
    let mut all = process_once(state, pipeline_id, events, extra, Defer::Never).await?;
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
                            now: state.now_ms() as u64,
                        });
                    }
                }
            }
        }
        if finished.is_empty() {
            break;
        }
        pending = process_once(state, pipeline_id, finished, Vec::new(), Defer::Never).await?;
        all.extend(pending.iter().cloned());
    }
    Ok(all)
}

/// A pipeline's cached engine and the callers waiting to change it.
pub struct Entry {
    pub(crate) cached: tokio::sync::Mutex<Cached>,
    waiting: std::sync::Mutex<Vec<Waiting>>,
}

impl Entry {
    pub fn empty() -> Entry {
        Entry { cached: tokio::sync::Mutex::new(Cached::empty()), waiting: std::sync::Mutex::new(Vec::new()) }
    }

    /// How many callers wait for the lock with their events.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One caller's events, queued for whoever holds the pipeline's lock next.
struct Waiting {
    events: Vec<Event>,
    extra: Vec<JobUpdate>,
    defer: Defer,
    answer: tokio::sync::oneshot::Sender<Answer>,
}

enum Answer {
    /// Applied (or refused) with the others of its batch: the engine's commands for its events.
    Done(Result<Vec<Command>, StoreError>),
    /// Its batch failed (not a conflict): the caller applies its events (given back) alone,
    /// so that one caller's failure is not the others'.
    Alone(Vec<Event>, Vec<JobUpdate>),
}

/// Applies `events` to the pipeline's engine and stores the result, with `extra` job updates
/// in the same transaction. Returns the engine's commands for these events.
///
/// Group commit: the callers that arrive while the pipeline's transition is being stored
/// queue their events; the next one to hold the lock applies every queued caller's events in
/// arrival order and stores them in one transition (one database commit, with PostgreSQL one
/// statement when they only end jobs), then answers each caller. A pipeline of many jobs
/// finishing at once otherwise waits for one commit per job, its lock held across each.
async fn process_once(
    state: &AppState,
    pipeline_id: i64,
    events: Vec<Event>,
    extra: Vec<JobUpdate>,
    defer: Defer,
) -> Result<Vec<Command>, StoreError> {
    let entry = state.pipeline_lock(pipeline_id).await;
    let queued = enqueue(&entry, events, extra, defer);
    settle(state, pipeline_id, &entry, queued).await
}

/// A caller's events in the pipeline's queue: its answer to come.
struct Queued {
    answered: tokio::sync::oneshot::Receiver<Answer>,
    defer: Defer,
}

/// Puts a caller's events in the pipeline's queue, in arrival order.
fn enqueue(entry: &Entry, events: Vec<Event>, extra: Vec<JobUpdate>, defer: Defer) -> Queued {
    let (answer, answered) = tokio::sync::oneshot::channel();
    entry.waiting.lock().unwrap_or_else(|e| e.into_inner()).push(Waiting { events, extra, defer, answer });
    Queued { answered, defer }
}

/// Waits for the pipeline's lock and the answer to `queued`: the holder before us may have
/// applied it with its own events (it answers before it lets the lock go); otherwise it is
/// still queued and we apply it, with whatever else waits.
async fn settle(state: &AppState, pipeline_id: i64, entry: &Entry, mut queued: Queued) -> Result<Vec<Command>, StoreError> {
    let cached = entry.cached.lock().await;
    let answer = match queued.answered.try_recv() {
        Ok(answer) => {
            drop(cached);
            answer
        }
        Err(_) => {
            let batch = std::mem::take(&mut *entry.waiting.lock().unwrap_or_else(|e| e.into_inner()));
            apply_batch(state, pipeline_id, cached, batch).await;
            queued.answered.await.unwrap_or(Answer::Done(Err(StoreError::Contended(pipeline_id))))
        }
    };
    match answer {
        Answer::Done(result) => result,
        Answer::Alone(events, extra) => {
            let (answer, answered) = tokio::sync::oneshot::channel();
            let cached = entry.cached.lock().await;
            let alone = Waiting { events, extra, defer: queued.defer, answer };
            apply_batch(state, pipeline_id, cached, vec![alone]).await;
            match answered.await {
                Ok(Answer::Done(result)) => result,
                _ => Err(StoreError::Contended(pipeline_id)),
            }
        }
    }
}

/// [`process_once`] for the callers of `batch`, with the pipeline's lock held (`cached`);
/// answers each of them.
async fn apply_batch(state: &AppState, pipeline_id: i64, mut cached: tokio::sync::MutexGuard<'_, Cached>, batch: Vec<Waiting>) {
    let answer_all = |batch: Vec<Waiting>, answers: &mut dyn FnMut(usize) -> Answer| {
        for (i, w) in batch.into_iter().enumerate() {
            let _ = w.answer.send(answers(i));
        }
    };
    for _attempt in 0..8 {
        if cached.engine.is_none() {
            // Deferred starts are offered to the rebuilt engine again (one that another server
            // stored meanwhile is refused as a repeat).
            let deferred = std::mem::take(&mut cached.deferred);
            match rebuild(state, pipeline_id).await {
                Ok(rebuilt) => *cached = rebuilt,
                Err(e) => return answer_alone_or(batch, e),
            }
            if let Some(engine) = cached.engine.as_mut() {
                cached.deferred = deferred.into_iter().filter(|ev| engine.on(ev.clone()).is_ok()).collect();
            }
        }
        // Events are applied to the cached engine in place (cloning a 1,000-job engine for every
        // event dominated dispatch); if storing them fails, the cache is dropped and rebuilt.
        let Some(engine) = cached.engine.as_mut() else { continue };
        // Each caller's commands, then all of them in order.
        let mut per_caller: Vec<Vec<Command>> = Vec::with_capacity(batch.len());
        let mut applied = Vec::new();
        for w in &batch {
            let mut commands = Vec::new();
            for ev in &w.events {
                match engine.on(ev.clone()) {
                    // A tick that changed nothing is not worth a row in the event log.
                    Ok(c) if c.is_empty() && matches!(ev, Event::Tick { .. }) => {}
                    Ok(c) => {
                        commands.extend(c);
                        applied.push(ev.clone());
                    }
                    // Late or repeated reports (a retried finish, an expired lease after the job
                    // finished) are refused by the engine and dropped here.
                    Err(e) => tracing::debug!(pipeline = pipeline_id, error = %e, "event refused"),
                }
            }
            per_caller.push(commands);
        }
        let commands: Vec<Command> = per_caller.iter().flatten().cloned().collect();
        let wake_at = engine.next_wakeup().map(|t| i64::try_from(t).unwrap_or(i64::MAX));
        let now = state.now_ms();
        // "Run anyway" holds only for the attempt these events queue (a refused retry queues none).
        let mut jobs: Vec<JobUpdate> = batch
            .iter()
            .flat_map(|w| &w.extra)
            .filter(|u| match u {
                JobUpdate::RunAnyway { job_id, attempt } => commands.iter().any(|c| match c {
                    Command::RunJob { job, attempt: a } | Command::JobStatusChanged { job, attempt: a, .. } => {
                        a == attempt && cached.ids.get(job) == Some(job_id)
                    }
                    _ => false,
                }),
                _ => true,
            })
            .cloned()
            .collect();
        // A job start is in its row since the claim: a caller that only started jobs needs
        // its events stored, not the rows written again (which would also take the
        // transition off PostgreSQL's one-statement path).
        let starts_only: Vec<bool> = batch
            .iter()
            .zip(&per_caller)
            .map(|(w, c)| w.defer == Defer::IfNothingElse && w.extra.is_empty() && c.iter().all(is_start))
            .collect();
        let mut pipeline_status = None;
        let mut queued = false;
        let mut ended = Vec::new();
        let mut bridges = Vec::new();
        let kept: Vec<bool> = per_caller.iter().zip(&starts_only).flat_map(|(c, only)| std::iter::repeat_n(!*only, c.len())).collect();
        for c in commands.iter().zip(&kept).filter(|(_, kept)| **kept).map(|(c, _)| c) {
            match c {
                // A trigger job is the server's: `running` at once, so no runner claims it.
                Command::RunJob { job, attempt } if cached.bridges.contains(job) => {
                    if let Some(&id) = cached.ids.get(job) {
                        jobs.push(JobUpdate::Status { job_id: id, status: JobStatus::Pending, attempt: *attempt, at: now });
                        jobs.push(JobUpdate::Status { job_id: id, status: JobStatus::Running, attempt: *attempt, at: now });
                        bridges.push((id, job.clone(), *attempt));
                    }
                }
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
                        if status.is_complete() {
                            ended.push((id, job.as_str(), *attempt, *status));
                        }
                    }
                }
                Command::PipelineStatusChanged { status } | Command::PipelineFinished { status, .. } => pipeline_status = Some(*status),
                Command::WaitForResource { .. } | Command::ReleaseResource { .. } => {}
            }
        }
        let mut per_caller = per_caller.into_iter();
        let mut done = |_: usize| Answer::Done(Ok(per_caller.next().unwrap_or_default()));
        if applied.is_empty() && jobs.is_empty() && cached.wake_at == Some(wake_at) {
            return answer_all(batch, &mut done);
        }
        if starts_only.iter().all(|s| *s) && pipeline_status.is_none() && cached.wake_at == Some(wake_at) {
            cached.deferred.extend(applied);
            return answer_all(batch, &mut done);
        }
        let deferred = cached.deferred.len();
        let events = cached.deferred.iter().cloned().chain(applied).collect();
        let transition = Transition { pipeline_id, expected_version: cached.version, events, jobs, pipeline_status, wake_at, at: now };
        match state.store.apply(&transition).await {
            Ok(version) => {
                cached.deferred.drain(..deferred);
                cached.version = version;
                cached.wake_at = Some(wake_at);
                log_ended(&cached.project, pipeline_id, &ended, &transition.jobs);
                state.pipeline_changed(pipeline_id, &cached.project, pipeline_status.is_some());
                for (id, ..) in &ended {
                    state.job_ended(*id);
                }
                if queued {
                    state.mark_queued(&commands, &cached.ids);
                    state.queued.notify_waiters();
                }
                if let Some(at) = wake_at {
                    state.deadline_stored(at);
                }
                for (id, job, attempt) in bridges {
                    state.start_bridge(pipeline_id, id, job, attempt);
                }
                // Every caller has its answer before the lock goes.
                answer_all(batch, &mut done);
                if let Some(status) = pipeline_status.filter(|s| s.is_complete()) {
                    tracing::info!(project = %cached.project, pipeline = pipeline_id, %status, "pipeline finished");
                    // A finished pipeline leaves memory; a later retry rebuilds it from the store.
                    drop(cached);
                    state.forget_pipeline(pipeline_id).await;
                    // A trigger job with `strategy: depend` waiting for this pipeline takes its status.
                    if let Err(e) = crate::bridges::downstream_finished(state, pipeline_id, status).await {
                        tracing::warn!(pipeline = pipeline_id, error = %crate::error::chain(&e), "the upstream trigger job could not be told");
                    }
                }
                return;
            }
            Err(StoreError::Conflict { .. }) => {
                cached.engine = None;
            }
            Err(e) => {
                cached.engine = None;
                return answer_alone_or(batch, e);
            }
        }
    }
    answer_all(batch, &mut |_| Answer::Done(Err(StoreError::Contended(pipeline_id))));
}

fn is_start(c: &Command) -> bool {
    matches!(c, Command::JobStatusChanged { status: JobStatus::Running, .. })
}

/// A batch that failed with `e`: a caller alone gets the error; callers batched together each
/// apply their events alone (so that one caller's failure is not the others').
fn answer_alone_or(batch: Vec<Waiting>, e: StoreError) {
    if let [_] = batch.as_slice() {
        let w = batch.into_iter().next().expect("one caller");
        let _ = w.answer.send(Answer::Done(Err(e)));
        return;
    }
    for w in batch {
        let _ = w.answer.send(Answer::Alone(w.events, w.extra));
    }
}

/// The engine's view of a pipeline for its timeline: each job's queued, started and finished
/// times, and the critical path (job names). `None` for a pipeline without jobs. Uses the
/// cached engine when there is one; otherwise replays the events without caching the result.
pub async fn timeline(state: &AppState, pipeline_id: i64) -> Result<Option<(scheduler::Snapshot, Vec<String>)>, StoreError> {
    let cached = state.pipelines.lock().await.get(&pipeline_id).cloned();
    if let Some(entry) = cached {
        let c = entry.cached.lock().await;
        if let Some(engine) = &c.engine {
            return Ok(Some((engine.snapshot(), engine.critical_path())));
        }
    }
    if state.store.jobs(pipeline_id).await?.is_empty() {
        return Ok(None);
    }
    let rebuilt = rebuild(state, pipeline_id).await?;
    Ok(rebuilt.engine.map(|e| (e.snapshot(), e.critical_path())))
}

/// One line per job that ended: INFO when it succeeded or was canceled, WARN with the reason
/// when it failed. (Skipped jobs never ran: nothing to say.)
fn log_ended(project: &str, pipeline: i64, ended: &[(i64, &str, u32, JobStatus)], updates: &[JobUpdate]) {
    for &(job, name, attempt, status) in ended {
        let reason = updates.iter().find_map(|u| match u {
            JobUpdate::Result { job_id, failure_reason, .. } if *job_id == job => failure_reason.as_deref(),
            _ => None,
        });
        match status {
            JobStatus::Failed => {
                let reason = reason.unwrap_or("its dependencies or the pipeline failed");
                // Debug-quoted: the runner's text must not forge log lines.
                tracing::warn!(%project, pipeline, job, %name, attempt, reason = ?reason, "job failed");
            }
            JobStatus::Skipped => {}
            _ => tracing::info!(%project, pipeline, job, %name, attempt, %status, "job finished"),
        }
    }
}

/// The secrets a job of pipeline `row`, triggered as `ctx`, receives (protected refs only;
/// never a fork's merge request that no maintainer approved; see
/// `ProjectConfig::secrets_for`), as masked raw variables.
pub fn secret_vars(project: &crate::config::ProjectConfig, row: &PipelineRow, ctx: &Context) -> Vec<SpecVar> {
    project
        .secrets_for(ctx.ref_protected, trust(row, ctx))
        .map(|(k, v)| SpecVar { key: k.clone(), value: v.clone(), raw: true, masked: true, layer: Layer::Project })
        .collect()
}

/// Whose code pipeline `row` runs: the project's, a fork's, or a fork's a maintainer approved.
/// Secrets and ID tokens follow it.
pub fn trust(row: &PipelineRow, ctx: &Context) -> crate::config::Source {
    use crate::config::Source;
    let approved = row.approval.as_ref().is_some_and(|a| a.by.is_some());
    match (ctx.from_fork(), approved) {
        (false, _) => Source::Project,
        (true, false) => Source::Fork,
        (true, true) => Source::ApprovedFork,
    }
}

/// The predefined-variable context of a recorded pipeline: its trigger (from the webhook,
/// `GITLAB_USER_*` included, kept as data) with what only the store knows: `CI_PIPELINE_ID`,
/// `CI_PIPELINE_IID` (the project's number, migration `0012`) and `CI_PIPELINE_CREATED_AT`.
pub fn context_of(row: &PipelineRow) -> Result<Context, serde_json::Error> {
    Ok(with_row(serde_json::from_str(&row.trigger)?, row))
}

/// [`context_of`] for a trigger already decoded.
fn with_row(mut ctx: Context, row: &PipelineRow) -> Context {
    ctx.pipeline_id = u64::try_from(row.id).unwrap_or(0);
    ctx.pipeline_iid = row.iid.and_then(|i| u64::try_from(i).ok()).unwrap_or(ctx.pipeline_id);
    ctx.pipeline_created_at = rfc3339_utc(row.created_at);
    ctx
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as GitLab's `Time#iso8601` of a UTC time (`CI_PIPELINE_CREATED_AT`).
pub fn rfc3339_utc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a time in ms since the epoch (for pages).
pub fn iso_time(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => format!("{ms} ms after the epoch"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_times() {
        assert_eq!(super::iso_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::iso_time(1_643_647_675_123), "2022-01-31 16:47:55 UTC");
        assert_eq!(super::rfc3339_utc(1_643_647_675_123), "2022-01-31T16:47:55Z");
        assert_eq!(super::iso_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::iso_time(-1), "1969-12-31 23:59:59 UTC");
    }
}
