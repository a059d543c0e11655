//! Read-only views of the engine: the snapshot and the critical path.

use serde::{Deserialize, Serialize};

use crate::status::{JobStatus, PipelineStatus};

use super::{Engine, Failure};

/// Everything a UI or the final table shows, in YAML order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub status: PipelineStatus,
    pub has_warnings: bool,
    pub finished: bool,
    /// The engine's time: the latest `now` it was given.
    pub now: u64,
    pub jobs: Vec<JobSnapshot>,
}

/// One job in a [`Snapshot`]. Timestamps are those of the current attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSnapshot {
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    pub attempt: u32,
    /// Effective `allow_failure`: a failed job with this set counts as a warning.
    pub allow_failure: bool,
    pub failure: Option<Failure>,
    /// When a scheduled (delayed) job becomes pending.
    pub scheduled_at: Option<u64>,
    pub queued_at: Option<u64>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// `finished_at - started_at` of the current attempt.
    pub duration_ms: Option<u64>,
}

impl Engine {
    pub fn snapshot(&self) -> Snapshot {
        let jobs = self
            .d
            .spec
            .jobs
            .iter()
            .zip(&self.d.jobs)
            .enumerate()
            .map(|(i, (node, job))| JobSnapshot {
                name: node.name.clone(),
                stage: node.stage.clone(),
                status: job.status,
                attempt: job.attempt,
                allow_failure: self.allows_failure(i),
                failure: job.failure,
                scheduled_at: job.scheduled_at,
                queued_at: job.queued_at,
                started_at: job.started_at,
                finished_at: job.finished_at,
                duration_ms: job.started_at.zip(job.finished_at).map(|(s, f)| f.saturating_sub(s)),
            })
            .collect();
        Snapshot { status: self.d.status, has_warnings: self.d.has_warnings, finished: self.d.finished, now: self.d.now, jobs }
    }

    /// The chain of finished jobs with the largest total wall time, following the edges the
    /// pipeline ran with (needs, or every earlier stage for stage-ordered jobs), first job
    /// first. A job's wall time runs from its first attempt's start to its last attempt's end.
    /// Jobs that never ran are not part of any chain. Ties go to the earlier job in YAML order.
    pub fn critical_path(&self) -> Vec<String> {
        let n = self.d.jobs.len();
        let wall: Vec<Option<u64>> = self
            .d
            .jobs
            .iter()
            .map(|job| match (job.status.is_complete(), job.first_started_at, job.finished_at) {
                (true, Some(start), Some(end)) => Some(end.saturating_sub(start)),
                _ => None,
            })
            .collect();
        // best[i]: (total wall time of the best chain ending at i, previous job of that chain)
        let mut best: Vec<Option<(u64, Option<usize>)>> = vec![None; n];
        for &i in &self.graph.order {
            let Some(own) = wall[i] else { continue };
            let mut chosen: Option<(u64, usize)> = None;
            for &p in &self.graph.preds[i] {
                if let Some((total, _)) = best[p] {
                    let better = match chosen {
                        None => true,
                        Some((t, q)) => total > t || (total == t && p < q),
                    };
                    if better {
                        chosen = Some((total, p));
                    }
                }
            }
            let base = chosen.map_or(0, |(t, _)| t);
            best[i] = Some((base + own, chosen.map(|(_, p)| p)));
        }
        let mut end: Option<(u64, usize)> = None;
        for (i, entry) in best.iter().enumerate() {
            if let Some((total, _)) = entry
                && end.is_none_or(|(t, _)| *total > t)
            {
                end = Some((*total, i));
            }
        }
        let mut path = Vec::new();
        let mut cursor = end.map(|(_, i)| i);
        while let Some(i) = cursor {
            path.push(self.d.spec.jobs[i].name.clone());
            cursor = best[i].and_then(|(_, previous)| previous);
        }
        path.reverse();
        path
    }
}
