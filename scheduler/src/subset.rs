//! `piste run JOB...`: the named jobs and what they wait for.
//!
//! Source of truth: gitlab-ci-local's `--needs` (`Executor.getPastToWaitFor`): starting from
//! the named jobs, a job with `needs` pulls in its needs, a job without pulls in every job of
//! the earlier stages except manual jobs that were not named; a manual job reached through
//! `needs` must be named too (it would never run otherwise), or the selection is refused.
//!
//! The base name of a `parallel` job (`test` for `test 1/3`, `build` for `build: [linux, amd64]`)
//! names every instance, as `gitlab-ci-local` and GitLab's own `needs: [build]` do.

use std::collections::BTreeSet;

use crate::error::{SpecError, suggest};
use crate::graph::{Graph, normalize};
use crate::spec::{PipelineSpec, When};

impl PipelineSpec {
    /// The named jobs plus everything they transitively wait for, in YAML order, with stages
    /// and every other field unchanged. Pass the same names to
    /// [`crate::PlayManual::Jobs`] so that named manual jobs run.
    pub fn subset<S: AsRef<str>>(&self, names: &[S]) -> Result<PipelineSpec, SpecError> {
        if names.is_empty() {
            return Err(SpecError::EmptySelection);
        }
        let spec = normalize(self);
        Graph::build(&spec)?;
        let mut named = BTreeSet::new();
        for name in names {
            let name = name.as_ref();
            let matched: Vec<usize> = match spec.position(name) {
                Some(i) => vec![i],
                None => (0..spec.jobs.len()).filter(|&i| is_instance_of(&spec.jobs[i].name, name)).collect(),
            };
            named.extend(matched.iter().copied());
            if matched.is_empty() {
                return Err(SpecError::UnknownJob {
                    name: name.to_owned(),
                    suggestion: suggest(name, spec.jobs.iter().map(|job| job.name.as_str())),
                });
            }
        }
        let unnamed_manual = |i: usize| spec.jobs[i].when == When::Manual && !named.contains(&i);
        let mut selected = BTreeSet::new();
        let mut stack: Vec<usize> = named.iter().copied().collect();
        while let Some(i) = stack.pop() {
            if !selected.insert(i) {
                continue;
            }
            let job = &spec.jobs[i];
            match &job.needs {
                Some(needs) => {
                    for need in needs {
                        // Present: `normalize` dropped optional needs on absent jobs and
                        // `Graph::build` refused the others.
                        let Some(p) = spec.position(&need.job) else { continue };
                        if unnamed_manual(p) {
                            return Err(SpecError::ManualNeedNotSelected { job: need.job.clone(), needed_by: job.name.clone() });
                        }
                        stack.push(p);
                    }
                }
                None => stack.extend((0..spec.jobs.len()).filter(|&p| spec.jobs[p].stage_index < job.stage_index && !unnamed_manual(p))),
            }
        }
        let jobs = spec.jobs.iter().enumerate().filter(|(i, _)| selected.contains(i)).map(|(_, job)| job.clone()).collect();
        Ok(PipelineSpec { jobs, cancel_on_job_failure: self.cancel_on_job_failure })
    }
}

/// Whether `selector`, a name given to `piste run`, names the job called `job`: the job
/// itself, or one instance of the `parallel` job whose base name it is (GitLab names them
/// `base 2/3` and `base: [v1, v2]`).
pub(crate) fn selects(selector: &str, job: &str) -> bool {
    job == selector || is_instance_of(job, selector)
}

fn is_instance_of(job: &str, base: &str) -> bool {
    let Some(rest) = job.strip_prefix(base) else { return false };
    if let Some(values) = rest.strip_prefix(": [") {
        return values.ends_with(']');
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    rest.strip_prefix(' ').and_then(|r| r.split_once('/')).is_some_and(|(i, n)| digits(i) && digits(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{JobNode, Need};

    fn job(name: &str, stage: usize, needs: Option<&[&str]>) -> JobNode {
        let mut job = JobNode::new(name, format!("s{stage}"), stage);
        job.needs = needs.map(|needs| needs.iter().map(|&n| Need::on(n)).collect());
        job
    }

    fn names(spec: &PipelineSpec) -> Vec<&str> {
        spec.jobs.iter().map(|job| job.name.as_str()).collect()
    }

    fn pipeline() -> PipelineSpec {
        let mut approve = job("approve", 1, None);
        approve.when = When::Manual;
        PipelineSpec::new(vec![
            job("lint", 0, None),
            job("build", 0, None),
            job("unit", 1, Some(&["build"])),
            approve,
            job("e2e", 2, None),
            job("docs", 2, Some(&[])),
        ])
    }

    #[test]
    fn needs_closure_only_for_dag_jobs() {
        assert_eq!(names(&pipeline().subset(&["unit"]).unwrap()), ["build", "unit"]);
        assert_eq!(names(&pipeline().subset(&["docs"]).unwrap()), ["docs"]);
    }

    #[test]
    fn stage_jobs_pull_earlier_stages_without_unnamed_manual_jobs() {
        assert_eq!(names(&pipeline().subset(&["e2e"]).unwrap()), ["lint", "build", "unit", "e2e"]);
        assert_eq!(names(&pipeline().subset(&["e2e", "approve"]).unwrap()), ["lint", "build", "unit", "approve", "e2e"]);
    }

    #[test]
    fn unknown_names_get_a_suggestion() {
        assert_eq!(
            pipeline().subset(&["buidl"]).unwrap_err(),
            SpecError::UnknownJob { name: "buidl".into(), suggestion: Some("build".into()) }
        );
        assert_eq!(pipeline().subset::<&str>(&[]).unwrap_err(), SpecError::EmptySelection);
    }

    /// `piste run NAME` with the base name of a `parallel: N` or `parallel:matrix` job runs
    /// every instance; an instance's own name runs that one only.
    #[test]
    fn a_parallel_base_name_selects_every_instance() {
        let mut spec = pipeline();
        let mut deploy = job("deploy: [eu, amd64]", 2, Some(&[]));
        deploy.when = When::Manual;
        spec.jobs.extend([
            job("shard 1/2", 1, Some(&["build"])),
            job("shard 2/2", 1, Some(&["build"])),
            deploy,
            job("deploy: [us, amd64]", 2, Some(&[])),
            job("shard-other", 1, Some(&[])),
        ]);
        assert_eq!(names(&spec.subset(&["shard"]).unwrap()), ["build", "shard 1/2", "shard 2/2"]);
        assert_eq!(names(&spec.subset(&["shard 2/2"]).unwrap()), ["build", "shard 2/2"]);
        assert_eq!(names(&spec.subset(&["deploy"]).unwrap()), ["deploy: [eu, amd64]", "deploy: [us, amd64]"]);
        assert!(selects("deploy", "deploy: [eu, amd64]") && selects("shard", "shard 1/2"));
        assert!(!selects("shard", "shard-other") && !selects("dep", "deploy: [eu, amd64]"));
        // The engine plays a manual instance named through its base name.
        let engine = crate::Engine::new(
            spec.subset(&["deploy"]).unwrap(),
            crate::EngineOptions { play_manual: crate::PlayManual::Jobs(vec!["deploy".into()]) },
        );
        assert!(engine.is_ok(), "{engine:?}");
    }

    #[test]
    fn a_manual_need_must_be_named() {
        let mut spec = pipeline();
        spec.jobs.push(job("deploy", 2, Some(&["approve"])));
        assert_eq!(
            spec.subset(&["deploy"]).unwrap_err(),
            SpecError::ManualNeedNotSelected { job: "approve".into(), needed_by: "deploy".into() }
        );
        assert_eq!(names(&spec.subset(&["deploy", "approve"]).unwrap()), ["lint", "build", "approve", "deploy"]);
    }
}
