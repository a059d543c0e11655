//! Needs of other pipelines on the server, found when a runner takes the job (GitLab's
//! `Ci::BuildDependencies#cross_pipeline` and `#cross_project`, checked by
//! `Ci::RegisterJobService` before a runner gets the job):
//!
//! - `needs:pipeline:job`: the job of that name, passed, in the pipeline whose id `pipeline:`
//!   expands to — a pipeline of the same parent-child hierarchy (the root, its children and
//!   theirs: multi-project pipelines start hierarchies of their own), never the job's own;
//! - `needs:project` + `ref`: the newest job of that name that passed on that ref (a branch or
//!   tag name, or a full ref) among the last [`PROJECT_PIPELINES`] pipelines of that project of
//!   this server, if the project lets this one's jobs read it: its `job_token_allowlist` names
//!   the job's project, or it is `public` (the rule submodules follow, GitLab's CI/CD job token
//!   allowlist).
//!
//! Values are expanded with the job's variables (`JobSpec::cross_dependencies`); entries with
//! `artifacts: false` require nothing. Their artifacts come after the local dependencies', as
//! do their dotenv variables. One not found fails the job `missing_dependency_failure` before a
//! runner gets it ([`refuse`]), saying which and what to do; the runner takes the next job.

use scheduler::job::{JobSpec, MISSING_DEPENDENCY};
use scheduler::protocol::Dependency;
use scheduler::{FailureReason, JobStatus, Outcome};

use crate::AppState;
use crate::pipelines::JobTemplate;
use crate::store::{JobRow, PipelineRow, Store, StoreError};
use pipeline_spec::model::{CrossNeed, CrossSource};
use pipeline_spec::predefined::PipelineSource;

/// How many of a project's newest pipelines `needs:project` looks through.
pub const PROJECT_PIPELINES: i64 = 100;

/// Why a job cannot start: a job it needs from another pipeline is not there, in words for its
/// log (what is missing and what to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(String);

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a job receives from other pipelines.
#[derive(Debug, Default)]
pub struct Found {
    pub dependencies: Vec<Dependency>,
    pub dotenv: Vec<(String, String)>,
}

/// The jobs of other pipelines that job `spec` (of `pipeline`, with its secrets added) needs,
/// or why it cannot start.
pub async fn resolve(
    state: &AppState,
    pipeline: &PipelineRow,
    spec: &JobSpec,
    predefined: &[(String, String)],
) -> Result<Result<Found, Missing>, StoreError> {
    let mut found = Found::default();
    for need in spec.cross_dependencies(predefined) {
        let row = match find(state, pipeline, &need).await? {
            Ok(row) => row,
            Err(why) => return Ok(Err(Missing(format!("{MISSING_DEPENDENCY}: {why}")))),
        };
        let label = match &need.from {
            CrossSource::Pipeline { .. } => format!("{} (pipeline #{})", row.name, row.pipeline_id),
            CrossSource::Project { project, .. } => format!("{} ({project}, pipeline #{})", row.name, row.pipeline_id),
        };
        if row.artifacts.is_some() {
            found.dependencies.push(Dependency { job_id: row.id, name: label, digest: row.artifacts.clone() });
        }
        if let Some(d) = &row.dotenv {
            found.dotenv.extend(serde_json::from_str::<Vec<(String, String)>>(d).unwrap_or_default());
        }
    }
    Ok(Ok(found))
}

/// The job `need` (expanded) names, or why there is none.
async fn find(state: &AppState, pipeline: &PipelineRow, need: &CrossNeed) -> Result<Result<JobRow, String>, StoreError> {
    match &need.from {
        CrossSource::Pipeline { pipeline: id } => {
            let hint = "pass the parent's id to the child pipeline (`variables: {PARENT_PIPELINE_ID: $CI_PIPELINE_ID}` on the trigger job) and write `needs: [{pipeline: $PARENT_PIPELINE_ID, job: NAME}]`";
            let Ok(n) = id.trim().parse::<i64>() else {
                let what = if id.trim().is_empty() { "nothing".to_string() } else { format!("`{id}`") };
                return Ok(Err(format!("`needs:pipeline` expands to {what}, not a pipeline id; {hint}")));
            };
            if n == pipeline.id {
                return Ok(Err(format!(
                    "`needs:pipeline` is this pipeline (#{n}); GitLab does not accept it: name a job of this pipeline as `needs: [{}]`",
                    need.job
                )));
            }
            if !family(state, pipeline).await?.contains(&n) {
                return Ok(Err(format!("pipeline #{n} is not of this parent-child hierarchy; {hint}")));
            }
            let jobs = state.store.jobs(n).await?;
            Ok(match jobs.into_iter().find(|j| j.name == need.job) {
                Some(j) if j.status == JobStatus::Success => Ok(j),
                Some(j) => Err(format!("job `{}` of pipeline #{n} is {}; only a job that passed gives its artifacts", j.name, j.status)),
                None => Err(format!("pipeline #{n} has no job `{}`", need.job)),
            })
        }
        CrossSource::Project { project, git_ref } => {
            if let Err(why) = allowed(state, project, &pipeline.project) {
                return Ok(Err(why));
            }
            let refs = [git_ref.clone(), format!("refs/heads/{git_ref}"), format!("refs/tags/{git_ref}")];
            for p in state.store.pipelines(Some(project), PROJECT_PIPELINES).await? {
                if !refs.contains(&p.git_ref) {
                    continue;
                }
                let passed = state.store.jobs(p.id).await?.into_iter().find(|j| j.name == need.job && j.status == JobStatus::Success);
                if let Some(j) = passed {
                    return Ok(Ok(j));
                }
            }
            Ok(Err(format!(
                "no job `{}` passed on `{git_ref}` in the last {PROJECT_PIPELINES} pipelines of `{project}`: run a pipeline of `{project}` on `{git_ref}` first",
                need.job
            )))
        }
    }
}

/// Whether jobs of `from` may read the pipelines of `project`.
fn allowed(state: &AppState, project: &str, from: &str) -> Result<(), String> {
    let Some(target) = state.config.project(project) else {
        return Err(format!("`needs:project` names `{project}`, which is not a project of this server: add it to piste.toml"));
    };
    if !target.allows_job_of(from) {
        return Err(format!(
            "project `{project}` does not let jobs of `{from}` read its artifacts: add `job_token_allowlist = [\"{from}\"]` to its `[[project]]` in piste.toml (GitLab's CI/CD job token allowlist)"
        ));
    }
    Ok(())
}

/// The pipelines of `pipeline`'s parent-child hierarchy: its root (up through
/// `parent_pipeline` links) and every child below it (GitLab's `same_family_pipeline_ids`).
async fn family(state: &AppState, pipeline: &PipelineRow) -> Result<Vec<i64>, StoreError> {
    let child = PipelineSource::ParentPipeline.as_str();
    let mut root = pipeline.clone();
    // GitLab's depth limit keeps this short; the bound guards against a corrupt loop.
    for _ in 0..16 {
        let Some(up) = root.upstream.filter(|_| root.source == child) else { break };
        let Some(p) = state.store.pipeline(up.pipeline_id).await? else { break };
        root = p;
    }
    let mut out = vec![root.id];
    let mut queue = vec![root.id];
    while let Some(id) = queue.pop() {
        for c in state.store.downstream_pipelines(id).await? {
            if c.source == child && !out.contains(&c.id) && out.len() < 1000 {
                out.push(c.id);
                queue.push(c.id);
            }
        }
    }
    Ok(out)
}

/// Whether running job `job` may download the artifacts of `dep`, a job of another pipeline:
/// `dep` is what one of its cross needs names, by the same rules as [`resolve`] (a newer
/// job on a `needs:project` ref since the job started does not take the right away).
pub async fn may_download(state: &AppState, job: &JobRow, template: &JobTemplate, dep: &JobRow) -> Result<bool, StoreError> {
    if template.job.cross_needs.is_empty() || dep.status != JobStatus::Success {
        return Ok(false);
    }
    let Some(pipeline) = state.store.pipeline(job.pipeline_id).await? else { return Ok(false) };
    let Ok(ctx) = crate::pipelines::context_of(&pipeline) else { return Ok(false) };
    let mut spec = template.job.clone();
    if let Some(project) = state.config.project(&pipeline.project) {
        spec.add_outer(crate::pipelines::secret_vars(project, &pipeline, &ctx));
    }
    let predefined = spec.predefined(&ctx, u64::try_from(job.id).unwrap_or(0));
    for need in spec.cross_dependencies(&predefined).into_iter().filter(|n| n.job == dep.name) {
        let ok = match &need.from {
            CrossSource::Pipeline { pipeline: id } => {
                id.trim().parse::<i64>().ok() == Some(dep.pipeline_id)
                    && dep.pipeline_id != pipeline.id
                    && family(state, &pipeline).await?.contains(&dep.pipeline_id)
            }
            CrossSource::Project { project, git_ref } => {
                let Some(p) = state.store.pipeline(dep.pipeline_id).await? else { continue };
                let refs = [git_ref.clone(), format!("refs/heads/{git_ref}"), format!("refs/tags/{git_ref}")];
                &p.project == project && refs.contains(&p.git_ref) && allowed(state, project, &pipeline.project).is_ok()
            }
        };
        if ok {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Fails job `job`, just claimed by a runner, with `missing_dependency_failure` and `why` in
/// its log: it never reaches the runner (GitLab's runner queue drops such a job).
pub async fn refuse(state: &AppState, job: &JobRow, why: Missing) -> Result<(), StoreError> {
    tracing::info!(pipeline = job.pipeline_id, job = job.id, name = %job.name, reason = %why, "job refused: missing dependency");
    let attempt = job.attempt as u32;
    let started = scheduler::Event::JobStarted { job: job.name.clone(), attempt, now: state.now_ms() as u64 };
    crate::pipelines::process(state, job.pipeline_id, vec![started], Vec::new()).await?;
    let failed = Outcome::Failed { reason: FailureReason::MissingDependencyFailure, exit_code: None };
    crate::bridges::finish(state, job.pipeline_id, job.id, &job.name, attempt, failed, why.0).await
}
