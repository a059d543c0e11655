//! Trigger jobs on the server (GitLab's bridges, docs.gitlab.com
//! `ci/pipelines/downstream_pipelines`). A trigger job never reaches a runner: when the engine
//! runs it (`pipelines::process_once` marks it `running`, not `pending`), [`start`] creates its
//! child pipeline — a pipeline row of the same project, commit and ref with
//! `source = parent_pipeline` and its `upstream` (pipeline and trigger job, migration 0013) —
//! and plans it like any pipeline, from the trigger's `include:` ([`DownstreamInputs`], kept
//! in the child's stored trigger so a restarted server re-plans it the same way). Then:
//!
//! - without `strategy`, the trigger job succeeds once the child exists;
//! - with `strategy: depend` (or `mirror`), it waits: [`downstream_finished`] gives it the
//!   child's final status (success → success, failed or skipped → failed, canceled →
//!   canceled). A child blocked by a manual job is not finished, so the trigger job keeps
//!   running, as GitLab's;
//! - canceling a pipeline cancels its child pipelines (GitLab's cascade), not multi-project
//!   ones: their trigger jobs are canceled and the downstream pipelines run on, as GitLab's
//!   `CancelPipelineService` does;
//! - a child that cannot be created (invalid configuration, GitLab's depth limit) fails the
//!   trigger job with `downstream_pipeline_creation_failed` and the loader's messages
//!   (`file:line:col`) in its log.
//!
//! Multi-project triggers (`trigger: project:`) start a pipeline of another project of this
//! server at the head of `trigger:branch` (fetched into its mirror), `source = pipeline`, if
//! that project lists the triggering one in `triggered_by`; an unknown or unwilling project
//! fails the trigger job with a message saying which and what to configure.

use std::sync::Arc;

use pipeline_spec::child::{MAX_ARTIFACT_CONFIG_BYTES, check_depth, child_context};
use pipeline_spec::model::Trigger;
use pipeline_spec::predefined::{Context, PipelineSource};
use scheduler::{Event, FailureReason, JobStatus, Outcome, PipelineStatus};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::pipelines::JobTemplate;
use crate::store::{JobUpdate, NewPipeline, Recorded, Store, StoreError, Upstream};

/// A pipeline's stored trigger: its predefined-variable context and, for a child pipeline,
/// what it is made of. Readers that want the context only decode [`Context`] from the same
/// JSON (the extra key is ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredTrigger {
    #[serde(flatten)]
    pub context: Context,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downstream: Option<DownstreamInputs>,
}

/// What a child pipeline is planned from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownstreamInputs {
    /// The trigger job's `trigger:` (its `include:` is the child's configuration).
    pub trigger: Trigger,
    /// Its variables (`forward`): the child's pipeline variables. Never secrets.
    pub variables: Vec<(String, String)>,
    /// Child pipelines above this one and this one (1: a child of a top pipeline).
    pub depth: usize,
    /// The upstream pipeline, whose jobs' artifacts `include:artifact` reads.
    pub upstream_pipeline: i64,
}

/// At start: trigger jobs left running by a server that stopped are started again (creating
/// their child is idempotent: one per job attempt; a child already planned is not planned
/// again, and one that ended already ends them).
pub async fn resume(state: &Arc<AppState>) {
    let rows = match state.store.pipelines_with_status(&[PipelineStatus::Running, PipelineStatus::Pending]).await {
        Ok(r) => r,
        Err(e) => return tracing::error!(error = %crate::error::chain(&e), "cannot list pipelines to resume their trigger jobs"),
    };
    for p in rows {
        let Ok(jobs) = state.store.jobs(p.id).await else { continue };
        for j in jobs.into_iter().filter(|j| j.status == JobStatus::Running && j.runner_id.is_none()) {
            let is_trigger = serde_json::from_str::<JobTemplate>(&j.spec).ok().is_some_and(|t| t.trigger.is_some());
            if is_trigger {
                tokio::spawn(start(state.clone(), p.id, j.id, j.name, j.attempt as u32));
            }
        }
    }
}

/// Runs trigger job `job_id` (`name`, attempt `attempt`) of pipeline `pipeline_id`.
pub async fn start(state: Arc<AppState>, pipeline_id: i64, job_id: i64, name: String, attempt: u32) {
    if let Err(e) = run(&state, pipeline_id, job_id, &name, attempt).await {
        tracing::error!(pipeline = pipeline_id, job = job_id, error = %crate::error::chain(&e), "trigger job failed to run");
        let failed = Outcome::Failed { reason: FailureReason::DownstreamPipelineCreationFailed, exit_code: None };
        let _ = finish(&state, pipeline_id, job_id, &name, attempt, failed, "internal error: see the server log".into()).await;
    }
}

async fn run(state: &Arc<AppState>, pipeline_id: i64, job_id: i64, name: &str, attempt: u32) -> Result<(), StoreError> {
    let now = state.now_ms() as u64;
    crate::pipelines::process(state, pipeline_id, vec![Event::JobStarted { job: name.to_string(), attempt, now }], Vec::new()).await?;
    if let Some((outcome, text)) = create(state, pipeline_id, job_id, attempt).await? {
        finish(state, pipeline_id, job_id, name, attempt, outcome, text).await?;
    }
    Ok(())
}

fn creation_failed(text: String) -> Option<(Outcome, String)> {
    Some((Outcome::Failed { reason: FailureReason::DownstreamPipelineCreationFailed, exit_code: None }, text))
}

/// Creates and plans the downstream pipeline. `None`: the trigger job waits for it.
async fn create(state: &Arc<AppState>, pipeline_id: i64, job_id: i64, attempt: u32) -> Result<Option<(Outcome, String)>, StoreError> {
    let parent = state.store.pipeline(pipeline_id).await?.ok_or(StoreError::NotFound { what: "pipeline", id: pipeline_id })?;
    let job = state.store.job(job_id).await?.ok_or(StoreError::NotFound { what: "job", id: job_id })?;
    let template: JobTemplate = serde_json::from_str(&job.spec).map_err(|e| StoreError::corrupt(format!("the spec of job {job_id}"), e))?;
    let Some(trigger) = template.trigger.clone() else {
        return Ok(creation_failed(format!("job `{}` is not a trigger job", job.name)));
    };
    let stored: StoredTrigger =
        serde_json::from_str(&parent.trigger).map_err(|e| StoreError::corrupt(format!("the trigger of pipeline {pipeline_id}"), e))?;
    let mut context = stored.context.clone();
    context.pipeline_id = pipeline_id as u64;
    let predefined = template.job.predefined(&context, job_id as u64);
    let variables = template.job.downstream_variables(&predefined, trigger.forward);
    if trigger.project.is_some() {
        // `trigger:project` and `trigger:branch` are expanded with the trigger job's variables.
        let lookup: std::collections::HashMap<String, String> =
            template.job.variables(&predefined, &[]).into_iter().map(|v| (v.key, v.value)).chain(variables.iter().cloned()).collect();
        return create_multi_project(state, &parent, job_id, attempt, &trigger, &lookup, variables).await;
    }
    let depth = stored.downstream.as_ref().map_or(0, |d| d.depth);
    if let Err(e) = check_depth(depth) {
        return Ok(creation_failed(e.to_string()));
    }
    let child = StoredTrigger {
        context: child_context(&stored.context, 0),
        downstream: Some(DownstreamInputs { trigger: trigger.clone(), variables, depth: depth + 1, upstream_pipeline: pipeline_id }),
    };
    let new = NewPipeline {
        project: parent.project.clone(),
        git_ref: parent.git_ref.clone(),
        sha: parent.sha.clone(),
        before_sha: parent.before_sha.clone(),
        source: PipelineSource::ParentPipeline.as_str().to_string(),
        trigger: serde_json::to_string(&child).map_err(|e| StoreError::corrupt("a child pipeline's trigger", e))?,
        created_at: state.now_ms(),
        needs_approval: false,
        upstream: Some(Upstream { pipeline_id, job_id }),
    };
    record_and_plan(state, &parent.project, new, job_id, attempt, &trigger).await
}

/// Records the downstream pipeline (one per trigger job attempt, whoever — or however often —
/// asks), plans it, and says what the trigger job does now (`None`: it waits).
async fn record_and_plan(
    state: &Arc<AppState>,
    project: &str,
    new: NewPipeline,
    job_id: i64,
    attempt: u32,
    trigger: &Trigger,
) -> Result<Option<(Outcome, String)>, StoreError> {
    let upstream = new.upstream.map_or(0, |u| u.pipeline_id);
    let child_id = match state.store.record_pipeline(&format!("trigger:{job_id}:{attempt}"), &new).await? {
        Recorded::Created(id) | Recorded::Duplicate(id) => id,
    };
    tracing::info!(%project, pipeline = child_id, upstream, job = job_id, downstream = %new.project, "downstream pipeline created");
    state.pipeline_changed(child_id, &new.project, true);
    crate::pipelines::plan_and_start(state.clone(), child_id).await;
    let row = state.store.pipeline(child_id).await?.ok_or(StoreError::NotFound { what: "pipeline", id: child_id })?;
    if trigger.waits() && row.status.is_complete() && row.version > 0 {
        return Ok(Some(outcome_of(child_id, row.status)));
    }
    match row.status {
        PipelineStatus::Failed if row.version == 0 => {
            let error = row.error.unwrap_or_default();
            return Ok(creation_failed(format!("the downstream pipeline #{child_id} could not be created:\n{error}")));
        }
        PipelineStatus::Skipped if row.version == 0 => {
            return Ok(creation_failed(format!("the downstream pipeline #{child_id} has no job for this trigger: its `rules` keep none")));
        }
        _ => {}
    }
    if !trigger.waits() {
        return Ok(Some((Outcome::Success, format!("Created the downstream pipeline #{child_id}"))));
    }
    Ok(None)
}

/// A chain of downstream pipelines longer than this is refused: multi-project triggers could
/// loop (GitLab bounds a hierarchy at 1,000 pipelines instead).
pub const MAX_DOWNSTREAM_CHAIN: usize = 10;

/// `trigger: project:` — a pipeline of another project of this server, at the head of
/// `trigger:branch` (default: its default branch), `CI_PIPELINE_SOURCE=pipeline`. The target
/// must list the triggering project in its `triggered_by`.
async fn create_multi_project(
    state: &Arc<AppState>,
    parent: &crate::store::PipelineRow,
    job_id: i64,
    attempt: u32,
    trigger: &Trigger,
    vars: &std::collections::HashMap<String, String>,
    variables: Vec<(String, String)>,
) -> Result<Option<(Outcome, String)>, StoreError> {
    let name = pipeline_spec::expand::expand(trigger.project.as_deref().unwrap_or_default(), vars);
    let Some(target) = state.config.project(&name) else {
        return Ok(creation_failed(format!(
            "project `{name}` is not configured on this server: a multi-project trigger starts a pipeline of a project listed in piste.toml"
        )));
    };
    if !target.triggered_by.contains(&parent.project) {
        return Ok(creation_failed(format!(
            "project `{name}` does not accept pipelines triggered by `{}`: add `triggered_by = [\"{}\"]` to its `[[project]]` in piste.toml",
            parent.project, parent.project
        )));
    }
    // Walk up: a loop of multi-project triggers ends here.
    let mut chain = 1;
    let mut up = parent.upstream;
    while let Some(u) = up {
        chain += 1;
        if chain > MAX_DOWNSTREAM_CHAIN {
            return Ok(creation_failed(format!(
                "a chain of downstream pipelines is at most {MAX_DOWNSTREAM_CHAIN} long: is there a loop of multi-project triggers?"
            )));
        }
        up = state.store.pipeline(u.pipeline_id).await?.and_then(|p| p.upstream);
    }
    let branch = match &trigger.branch {
        Some(b) => pipeline_spec::expand::expand(b, vars),
        None => target.default_branch.clone(),
    };
    let fetched = {
        let (remote, dir, branch) = (state.config.remote(target), state.mirror_dir(&name), branch.clone());
        tokio::task::spawn_blocking(move || -> Result<Option<crate::git::CommitInfo>, crate::git::GitError> {
            let mirror = crate::git::Mirror::open_or_init(&dir)?;
            mirror.fetch_from(&remote)?;
            match mirror.resolve_ref(&format!("refs/heads/{branch}"))? {
                Some(sha) => mirror.commit(&sha).map(Some),
                None => Ok(None),
            }
        })
        .await
    };
    let commit = match fetched {
        Ok(Ok(Some(c))) => c,
        Ok(Ok(None)) => return Ok(creation_failed(format!("project `{name}` has no branch `{branch}`"))),
        Ok(Err(e)) => return Ok(creation_failed(format!("project `{name}` could not be fetched: {}", crate::error::chain(&e)))),
        Err(e) => return Ok(creation_failed(format!("fetching project `{name}` failed: {e}"))),
    };
    let context = Context {
        server_url: state.external_url(),
        project_path: target.name.clone(),
        default_branch: target.default_branch.clone(),
        config_path: target.pipeline_file.clone().unwrap_or_else(|| ".gitlab-ci.yml".into()),
        commit_sha: commit.id.clone(),
        branch: Some(branch.clone()),
        ref_protected: target.is_protected(Some(&branch), None),
        commit_message: commit.message.clone(),
        commit_author_name: commit.author_name.clone(),
        commit_author_email: commit.author_email.clone(),
        commit_timestamp: commit.timestamp.clone(),
        source: PipelineSource::Pipeline,
        pages: pipeline_spec::predefined::Pages::Piste,
        ..Context::default()
    };
    let stored = StoredTrigger {
        context,
        downstream: Some(DownstreamInputs { trigger: trigger.clone(), variables, depth: 0, upstream_pipeline: parent.id }),
    };
    let new = NewPipeline {
        project: target.name.clone(),
        git_ref: format!("refs/heads/{branch}"),
        sha: commit.id,
        before_sha: None,
        source: PipelineSource::Pipeline.as_str().to_string(),
        trigger: serde_json::to_string(&stored).map_err(|e| StoreError::corrupt("a downstream pipeline's trigger", e))?,
        created_at: state.now_ms(),
        needs_approval: false,
        upstream: Some(Upstream { pipeline_id: parent.id, job_id }),
    };
    record_and_plan(state, &parent.project, new, job_id, attempt, trigger).await
}

/// The trigger job's outcome for a downstream pipeline that ended with `status`.
fn outcome_of(child: i64, status: PipelineStatus) -> (Outcome, String) {
    match status {
        PipelineStatus::Success => (Outcome::Success, format!("The downstream pipeline #{child} passed")),
        PipelineStatus::Canceled => (Outcome::Canceled, format!("The downstream pipeline #{child} was canceled")),
        other => (
            Outcome::Failed { reason: FailureReason::UnknownFailure, exit_code: None },
            format!("The downstream pipeline #{child} ended {other}"),
        ),
    }
}

/// A pipeline ended: if a trigger job with `strategy` waits for it, it takes its status. Boxed:
/// processing a pipeline may end one, which processes its upstream.
pub fn downstream_finished(
    state: &AppState,
    pipeline_id: i64,
    status: PipelineStatus,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + '_>> {
    Box::pin(async move {
        // GitLab: canceling a pipeline cancels its child pipelines (not multi-project ones).
        if status == PipelineStatus::Canceled {
            for child in state.store.downstream_pipelines(pipeline_id).await? {
                if child.source == PipelineSource::ParentPipeline.as_str() && !child.status.is_complete() && child.version > 0 {
                    tracing::info!(project = %child.project, pipeline = child.id, upstream = pipeline_id, "child pipeline canceled with its parent");
                    crate::pipelines::process(state, child.id, vec![Event::Cancel { now: state.now_ms() as u64 }], Vec::new()).await?;
                }
            }
        }
        let Some(row) = state.store.pipeline(pipeline_id).await? else { return Ok(()) };
        let Some(up) = row.upstream else { return Ok(()) };
        let Some(job) = state.store.job(up.job_id).await? else { return Ok(()) };
        if job.status != JobStatus::Running {
            return Ok(());
        }
        let waits = serde_json::from_str::<JobTemplate>(&job.spec).ok().and_then(|t| t.trigger).is_some_and(|t| t.waits());
        if !waits {
            return Ok(());
        }
        let (outcome, text) = outcome_of(pipeline_id, status);
        finish(state, up.pipeline_id, job.id, &job.name, job.attempt as u32, outcome, text).await
    })
}

/// Ends the trigger job's attempt: its log (one line, or the loader's messages), then the
/// engine's `JobFinished` with the reason on the row. Also ends a job refused before it ran
/// (`cross_needs::refuse`).
pub(crate) async fn finish(
    state: &AppState,
    pipeline_id: i64,
    job_id: i64,
    name: &str,
    attempt: u32,
    outcome: Outcome,
    text: String,
) -> Result<(), StoreError> {
    let now = state.now_ms();
    {
        let _held = state.log_lock(job_id).await;
        let mut log = text.replace('\n', "\r\n");
        log.push_str("\r\n");
        if let Err(e) = state.logs.append(job_id, i64::from(attempt), 0, log.into_bytes().into(), Vec::new(), now).await {
            tracing::warn!(pipeline = pipeline_id, job = job_id, error = %e, "the trigger job's log could not be written");
        }
    }
    let reason = match outcome {
        Outcome::Success => None,
        Outcome::Canceled => Some("canceled".to_string()),
        Outcome::Failed { reason, .. } => {
            let code = serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            Some(format!("{code}: {}", text.lines().take(6).collect::<Vec<_>>().join(" · ").chars().take(500).collect::<String>()))
        }
    };
    let event = Event::JobFinished { job: name.to_string(), attempt, outcome, now: now as u64 };
    let update = JobUpdate::Result { job_id, exit_code: None, failure_reason: reason, at: now };
    crate::pipelines::process(state, pipeline_id, vec![event], vec![update]).await?;
    state.wake_followers(job_id);
    Ok(())
}

/// Reads `path` from the artifacts of job `job` of pipeline `pipeline_id` (at most 5 MB), for a
/// child's `include:artifact`. Blocking: called from planning's `spawn_blocking`.
pub fn read_artifact(
    state: &AppState,
    handle: &tokio::runtime::Handle,
    pipeline_id: i64,
    job: &str,
    path: &str,
) -> Result<String, pipeline_spec::include::ResolveError> {
    use pipeline_spec::include::ResolveError;
    let other = |m: String| ResolveError::Other(m);
    let jobs = handle.block_on(state.store.jobs(pipeline_id)).map_err(|e| other(e.to_string()))?;
    let Some(row) = jobs.iter().find(|j| j.name == job) else {
        return Err(other(format!("job `{job}` is not in the parent pipeline")));
    };
    let Some(digest) = row.artifacts.as_deref().and_then(|d| d.strip_prefix("sha256:")).map(str::to_string) else {
        return Err(other(format!("job `{job}` has no artifacts")));
    };
    let Some(wanted) = crate::artifacts::clean_entry_path(path) else {
        return Err(other(format!("`{path}` is not a path inside the artifacts")));
    };
    let (_, archive) = handle
        .block_on(crate::artifacts::archive_reader(state, &digest))
        .map_err(|e| other(format!("the artifacts of `{job}` cannot be opened: {e}")))?;
    let mut bytes = Vec::new();
    let mut found = false;
    crate::artifacts::read_file(
        archive,
        &wanted,
        MAX_ARTIFACT_CONFIG_BYTES + 1,
        |f| found = matches!(f, crate::artifacts::Found::File(_)),
        |b| {
            bytes.extend_from_slice(&b);
            true
        },
    )
    .map_err(|e| other(format!("the artifacts of `{job}` cannot be read: {e}")))?;
    if !found {
        return Err(ResolveError::NotFound);
    }
    if bytes.len() as u64 > MAX_ARTIFACT_CONFIG_BYTES {
        return Err(other(format!("`{path}` is larger than 5 MB, GitLab's limit for a child configuration")));
    }
    String::from_utf8(bytes).map_err(|_| other(format!("`{path}` is not UTF-8 text")))
}
