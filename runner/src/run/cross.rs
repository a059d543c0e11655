//! `piste run`'s side of needs of other pipelines, found when a job starts.
//!
//! - `needs:pipeline:job`: the job named of a pipeline above this one in the run (the parent
//!   that triggered this child, or its parent), if that job passed — GitLab's
//!   `Ci::BuildDependencies#cross_pipeline`: the pipeline id expanded with the job's variables,
//!   never the job's own pipeline, within the same parent-child hierarchy, `latest.success`.
//!   Its artifacts are extracted and its dotenv variables given after the local dependencies'.
//!   A pipeline or job that cannot be found fails the job `missing_dependency_failure`
//!   before it runs, as GitLab's runner queue drops it.
//! - `needs:project`: `piste run` has no other project's pipelines (a `--project-dir` holds a
//!   clone, not its artifacts), so the job runs without them and its log says so.

use pipeline_spec::model::CrossSource;
use scheduler::job::{JobSpec, MISSING_DEPENDENCY};

use super::job::{JobOutputs, Shared};

/// What a job receives from other pipelines.
#[derive(Debug, Default)]
pub(super) struct Found {
    /// `(label, outputs)` in the order of its `needs`: `build (pipeline #3)`.
    pub found: Vec<(String, JobOutputs)>,
    /// Lines for the job's log: what was not fetched, and what to do.
    pub notes: Vec<String>,
}

/// The jobs of other pipelines job `spec` needs, or why it cannot start (the reason of its
/// `missing_dependency_failure`).
pub(super) fn outputs(shared: &Shared, spec: &JobSpec, predefined: &[(String, String)]) -> Result<Found, String> {
    let mut out = Found::default();
    let written = spec.cross_needs.iter().filter(|n| n.artifacts);
    for (as_written, need) in written.zip(spec.cross_dependencies(predefined)) {
        match &need.from {
            CrossSource::Project { project, git_ref } => out.notes.push(format!(
                "`needs:project` `{project}` (job `{}`, ref `{git_ref}`) is not fetched by `piste run`: it has no pipelines of other projects. Run this pipeline on a piste server that has `{project}`, or put the files the job expects in place before it runs",
                need.job
            )),
            CrossSource::Pipeline { pipeline } => {
                let CrossSource::Pipeline { pipeline: raw } = &as_written.from else { continue };
                let outputs = parent_job(shared, raw, pipeline, &need.job)?;
                out.found.push((format!("{} (pipeline #{pipeline})", need.job), outputs));
            }
        }
    }
    Ok(out)
}

/// Job `job` of pipeline `id` (`raw` as written), which must be above this one and have passed.
fn parent_job(shared: &Shared, raw: &str, id: &str, job: &str) -> Result<JobOutputs, String> {
    let fail = |why: String| Err(format!("{MISSING_DEPENDENCY}: {why}"));
    let ancestors = shared.downstream.as_ref().map(|d| d.ancestors.as_slice()).unwrap_or_default();
    let hint = "pass the parent's id to the child pipeline: `variables: {PARENT_PIPELINE_ID: $CI_PIPELINE_ID}` on the trigger job, then `needs: [{pipeline: $PARENT_PIPELINE_ID, job: NAME}]`";
    if id.trim().is_empty() {
        return fail(format!("`needs:pipeline` `{raw}` expands to nothing; {hint}"));
    }
    let Ok(n) = id.trim().parse::<u64>() else {
        return fail(format!("`needs:pipeline` `{raw}` expands to `{id}`, which is not a pipeline id; {hint}"));
    };
    if n == shared.context.pipeline_id {
        return fail(format!(
            "`needs:pipeline` `{raw}` is this pipeline (#{n}); GitLab does not accept it: name a job of this pipeline as `needs: [{job}]`"
        ));
    }
    let Some((_, outputs)) = ancestors.iter().find(|(p, _)| *p == n) else {
        let above = ancestors.iter().map(|(p, _)| format!("#{p}")).collect::<Vec<_>>();
        let above = if above.is_empty() { "none: this pipeline is not a child pipeline".to_string() } else { above.join(", ") };
        return fail(format!(
            "`needs:pipeline` `{raw}` is #{n}, not a pipeline of this parent-child hierarchy above this one (here: {above}); {hint}"
        ));
    };
    let outputs = outputs.lock().unwrap_or_else(|e| e.into_inner());
    match outputs.get(job) {
        Some(o) if o.success => Ok(o.clone()),
        Some(_) => fail(format!("job `{job}` of pipeline #{n} did not pass; only a job that passed gives its artifacts")),
        None => fail(format!("pipeline #{n} has no finished job `{job}` (a trigger job waits only for the jobs before it)")),
    }
}
