//! From the planner's [`Plan`] to the engine's [`PipelineSpec`]: the one place where the YAML
//! model meets the state machine.

use pipeline_spec::model::{self, Pipeline};
use pipeline_spec::plan::Plan;

use crate::spec::{AllowFailure, JobNode, Need, PipelineSpec, Retry, RetryWhen, When};

fn retry_when(s: &str) -> Option<RetryWhen> {
    use RetryWhen as R;
    Some(match s {
        "always" => R::Always,
        "unknown_failure" => R::UnknownFailure,
        "script_failure" => R::ScriptFailure,
        "api_failure" => R::ApiFailure,
        "stuck_or_timeout_failure" => R::StuckOrTimeoutFailure,
        "runner_system_failure" => R::RunnerSystemFailure,
        "runner_unsupported" => R::RunnerUnsupported,
        "stale_schedule" => R::StaleSchedule,
        "job_execution_timeout" => R::JobExecutionTimeout,
        "archived_failure" => R::ArchivedFailure,
        "unmet_prerequisites" => R::UnmetPrerequisites,
        "scheduler_failure" => R::SchedulerFailure,
        "data_integrity_failure" => R::DataIntegrityFailure,
        "runner_interrupted" => R::RunnerInterrupted,
        _ => return None,
    })
}

/// Converts a plan. `pipeline` supplies what the plan does not carry per instance (`retry`,
/// `timeout`), looked up by each instance's base job.
pub fn spec_from_plan(plan: &Plan, pipeline: &Pipeline) -> PipelineSpec {
    let jobs = plan
        .jobs
        .iter()
        .map(|pj| {
            let job = pipeline.jobs.get(&pj.base);
            let when = match pj.when {
                model::When::OnSuccess | model::When::Never => When::OnSuccess,
                model::When::OnFailure => When::OnFailure,
                model::When::Always => When::Always,
                model::When::Manual => When::Manual,
                model::When::Delayed => When::Delayed { start_in_ms: pj.start_in.unwrap_or(0).saturating_mul(1000) },
            };
            let allow_failure = match &pj.allow_failure {
                model::AllowFailure::Bool(true) => AllowFailure::Yes,
                model::AllowFailure::Bool(false) => AllowFailure::No,
                model::AllowFailure::ExitCodes(c) => AllowFailure::ExitCodes(c.clone()),
            };
            let retry = job.map_or_else(Retry::default, |j| {
                let when = (!j.retry.when.is_empty()).then(|| j.retry.when.iter().filter_map(|w| retry_when(w)).collect());
                let codes = (!j.retry.exit_codes.is_empty()).then(|| j.retry.exit_codes.clone());
                Retry::from_yaml(j.retry.max, when, codes)
            });
            JobNode {
                name: pj.name.clone(),
                stage: pj.stage.clone(),
                stage_index: pj.stage_index,
                needs: pj
                    .needs
                    .as_ref()
                    .map(|n| n.iter().map(|x| Need { job: x.job.clone(), optional: x.optional, artifacts: x.artifacts }).collect()),
                when,
                allow_failure,
                retry,
                interruptible: pj.interruptible,
                timeout_ms: job.and_then(|j| j.timeout).map(|s| s.saturating_mul(1000)),
                resource_group: pj.resource_group.clone(),
            }
        })
        .collect();
    let mut spec = PipelineSpec::new(jobs);
    spec.cancel_on_job_failure = plan.auto_cancel.on_job_failure == model::OnJobFailure::All;
    spec
}

#[cfg(test)]
mod tests {
    use pipeline_spec::load::{LoadOptions, MemoryResolver, load};
    use pipeline_spec::plan::{PlanContext, plan};

    use super::*;
    use crate::{Engine, EngineOptions};

    /// pipeline-spec's `RETRY_WHEN` is the one table of names GitLab accepts; every name in it
    /// must reach the engine (a name dropped here would silently never retry).
    #[test]
    fn every_retry_when_name_the_loader_accepts_maps_to_the_engine() {
        for name in pipeline_spec::parse::RETRY_WHEN {
            assert!(retry_when(name).is_some(), "`retry:when: {name}` is accepted by the loader but unknown to the engine");
        }
    }

    #[test]
    fn a_planned_pipeline_converts_and_the_engine_accepts_it() {
        let yml = "stages: [a, b]\nx:\n  stage: a\n  script: [x]\n  retry:\n    max: 2\n    when: [script_failure]\n  timeout: 10 minutes\ny:\n  stage: b\n  script: [y]\n  needs: [x]\n  when: manual\nz:\n  stage: b\n  script: [z]\n  when: delayed\n  start_in: 1 minute\n  allow_failure:\n    exit_codes: [3]\n";
        let loaded = load(".gitlab-ci.yml", ".gitlab-ci.yml", yml, &MemoryResolver::new(), &LoadOptions::default());
        let pipeline = loaded.pipeline.unwrap();
        let ctx = PlanContext { predefined: vec![("CI_COMMIT_BRANCH".into(), "main".into())], ..PlanContext::default() };
        let p = plan(&pipeline, &ctx).unwrap();
        let spec = spec_from_plan(&p, &pipeline);
        assert_eq!(spec.jobs[0].retry, Retry { max: 2, when: vec![RetryWhen::ScriptFailure], exit_codes: vec![] });
        assert_eq!(spec.jobs[0].timeout_ms, Some(600_000));
        assert_eq!(spec.jobs[1].when, When::Manual);
        assert_eq!(spec.jobs[1].allow_failure, AllowFailure::Yes, "job-level manual allows failure");
        assert_eq!(spec.jobs[1].needs, Some(vec![Need::on("x")]));
        assert_eq!(spec.jobs[2].when, When::Delayed { start_in_ms: 60_000 });
        assert_eq!(spec.jobs[2].allow_failure, AllowFailure::ExitCodes(vec![3]));
        assert!(Engine::new(spec, EngineOptions::default()).is_ok());
    }
}
