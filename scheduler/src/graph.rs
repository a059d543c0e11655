//! The edges between jobs, derived from a validated spec.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use crate::error::{SpecError, suggest};
use crate::spec::PipelineSpec;

/// Who waits for whom. Indices are positions in `PipelineSpec::jobs`.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    /// The jobs a job is processed against: its needs (`dag`), or every job of earlier stages.
    pub(crate) preds: Vec<Vec<usize>>,
    /// The job uses `needs` (GitLab's `scheduling_type: dag`).
    pub(crate) dag: Vec<bool>,
    /// Jobs that list this one in their needs.
    pub(crate) dependents: Vec<Vec<usize>>,
    /// GitLab's processing order: by stage, then by `needs` inside a stage, then YAML order.
    pub(crate) order: Vec<usize>,
}

impl Graph {
    /// Validates `spec` and derives its edges. Optional needs on absent jobs must already be
    /// dropped (see [`normalize`]).
    pub(crate) fn build(spec: &PipelineSpec) -> Result<Graph, SpecError> {
        if spec.jobs.is_empty() {
            return Err(SpecError::Empty);
        }
        let mut index = HashMap::with_capacity(spec.jobs.len());
        for (i, job) in spec.jobs.iter().enumerate() {
            if index.insert(job.name.as_str(), i).is_some() {
                return Err(SpecError::DuplicateJob { name: job.name.clone() });
            }
        }
        let n = spec.jobs.len();
        let mut preds = vec![Vec::new(); n];
        let mut dag = vec![false; n];
        let mut dependents = vec![Vec::new(); n];
        for (i, job) in spec.jobs.iter().enumerate() {
            match &job.needs {
                Some(needs) => {
                    dag[i] = true;
                    for need in needs {
                        let Some(&p) = index.get(need.job.as_str()) else {
                            return Err(SpecError::UnknownNeed {
                                job: job.name.clone(),
                                need: need.job.clone(),
                                suggestion: suggest(&need.job, spec.jobs.iter().map(|j| j.name.as_str())),
                            });
                        };
                        if p == i {
                            return Err(SpecError::SelfNeed { job: job.name.clone() });
                        }
                        let needed = &spec.jobs[p];
                        if needed.stage_index > job.stage_index {
                            return Err(SpecError::NeedInLaterStage {
                                job: job.name.clone(),
                                stage: job.stage.clone(),
                                need: needed.name.clone(),
                                need_stage: needed.stage.clone(),
                            });
                        }
                        if !preds[i].contains(&p) {
                            preds[i].push(p);
                            dependents[p].push(i);
                        }
                    }
                }
                None => {
                    preds[i] = (0..n).filter(|&p| spec.jobs[p].stage_index < job.stage_index).collect();
                }
            }
        }
        let order = processing_order(spec, &preds, &dag)?;
        Ok(Graph { preds, dag, dependents, order })
    }

    /// Every job that transitively needs `job` (not `job` itself).
    pub(crate) fn need_descendants(&self, job: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![job];
        while let Some(current) = stack.pop() {
            for &dependent in &self.dependents[current] {
                if seen.insert(dependent) {
                    stack.push(dependent);
                }
            }
        }
        seen
    }
}

/// Drops optional needs on jobs absent from the pipeline (GitLab: `needs:optional` on a job
/// that is not in the pipeline is ignored).
pub(crate) fn normalize(spec: &PipelineSpec) -> PipelineSpec {
    let names: BTreeSet<&str> = spec.jobs.iter().map(|job| job.name.as_str()).collect();
    let mut spec = spec.clone();
    for job in &mut spec.jobs {
        if let Some(needs) = &mut job.needs {
            needs.retain(|need| !need.optional || names.contains(need.job.as_str()));
        }
    }
    spec
}

/// Kahn's algorithm over need edges, taking the smallest (stage, YAML position) first. Stage
/// edges always point to smaller stages, so they hold by construction.
fn processing_order(spec: &PipelineSpec, preds: &[Vec<usize>], dag: &[bool]) -> Result<Vec<usize>, SpecError> {
    let n = spec.jobs.len();
    let mut waiting: Vec<usize> = (0..n).map(|i| if dag[i] { preds[i].len() } else { 0 }).collect();
    let mut dependents = vec![Vec::new(); n];
    for i in (0..n).filter(|&i| dag[i]) {
        for &p in &preds[i] {
            dependents[p].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<(usize, usize)>> =
        (0..n).filter(|&i| waiting[i] == 0).map(|i| Reverse((spec.jobs[i].stage_index, i))).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse((_, i))) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(Reverse((spec.jobs[d].stage_index, d)));
            }
        }
    }
    if order.len() < n {
        let jobs = (0..n).filter(|&i| waiting[i] > 0).map(|i| spec.jobs[i].name.clone()).collect();
        return Err(SpecError::NeedsCycle { jobs });
    }
    Ok(order)
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

    #[test]
    fn stage_jobs_wait_for_every_earlier_stage() {
        let spec = PipelineSpec::new(vec![job("a", 0, None), job("b", 0, None), job("c", 1, None), job("d", 2, Some(&["a"]))]);
        let graph = Graph::build(&spec).unwrap();
        assert_eq!(graph.preds, vec![vec![], vec![], vec![0, 1], vec![0]]);
        assert_eq!(graph.dag, vec![false, false, false, true]);
        assert_eq!(graph.order, vec![0, 1, 2, 3]);
    }

    #[test]
    fn same_stage_needs_come_first_in_the_order() {
        let spec = PipelineSpec::new(vec![job("late", 0, Some(&["early"])), job("early", 0, None)]);
        let graph = Graph::build(&spec).unwrap();
        assert_eq!(graph.order, vec![1, 0]);
    }

    #[test]
    fn rejects_cycles_and_bad_needs() {
        let cycle = PipelineSpec::new(vec![job("a", 0, Some(&["b"])), job("b", 0, Some(&["a"]))]);
        assert_eq!(Graph::build(&cycle).unwrap_err(), SpecError::NeedsCycle { jobs: vec!["a".into(), "b".into()] });
        let unknown = PipelineSpec::new(vec![job("build", 0, None), job("test", 1, Some(&["biuld"]))]);
        assert_eq!(
            Graph::build(&unknown).unwrap_err(),
            SpecError::UnknownNeed { job: "test".into(), need: "biuld".into(), suggestion: Some("build".into()) }
        );
        let later = PipelineSpec::new(vec![job("a", 0, Some(&["b"])), job("b", 1, None)]);
        assert!(matches!(Graph::build(&later), Err(SpecError::NeedInLaterStage { .. })));
        let self_need = PipelineSpec::new(vec![job("a", 0, Some(&["a"]))]);
        assert!(matches!(Graph::build(&self_need), Err(SpecError::SelfNeed { .. })));
        let twice = PipelineSpec::new(vec![job("a", 0, None), job("a", 1, None)]);
        assert!(matches!(Graph::build(&twice), Err(SpecError::DuplicateJob { .. })));
        assert_eq!(Graph::build(&PipelineSpec::default()).unwrap_err(), SpecError::Empty);
    }

    #[test]
    fn optional_needs_on_absent_jobs_are_dropped() {
        let mut test = job("test", 1, Some(&["build"]));
        test.needs.as_mut().unwrap().push(Need { job: "gone".into(), optional: true, artifacts: true });
        let spec = normalize(&PipelineSpec::new(vec![job("build", 0, None), test]));
        assert_eq!(spec.jobs[1].needs, Some(vec![Need::on("build")]));
    }

    #[test]
    fn descendants_follow_needs_transitively() {
        let spec = PipelineSpec::new(vec![job("a", 0, None), job("b", 1, Some(&["a"])), job("c", 2, Some(&["b"])), job("d", 2, None)]);
        let graph = Graph::build(&spec).unwrap();
        assert_eq!(graph.need_descendants(0), BTreeSet::from([1, 2]));
    }
}
