//! Errors: a spec the engine cannot run, and events it refuses.

use thiserror::Error;

use crate::status::{JobStatus, PipelineStatus};

/// Why a [`crate::PipelineSpec`] (or a selection of its jobs) cannot be scheduled.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("the pipeline has no jobs")]
    Empty,
    #[error("job `{name}` is defined twice")]
    DuplicateJob { name: String },
    #[error("job `{job}` needs `{need}`, which is not in the pipeline{}", hint(suggestion))]
    UnknownNeed { job: String, need: String, suggestion: Option<String> },
    #[error("job `{job}` needs itself")]
    SelfNeed { job: String },
    #[error("job `{job}` (stage `{stage}`) needs `{need}`, which is in a later stage `{need_stage}`")]
    NeedInLaterStage { job: String, stage: String, need: String, need_stage: String },
    #[error("`needs` form a cycle through {}", names(jobs))]
    NeedsCycle { jobs: Vec<String> },
    #[error("there is no job `{name}`{}", hint(suggestion))]
    UnknownJob { name: String, suggestion: Option<String> },
    #[error(
        "job `{needed_by}` needs manual job `{job}`; name `{job}` too so that it is played, \
         or drop it from `needs`"
    )]
    ManualNeedNotSelected { job: String, needed_by: String },
    #[error("no job was selected")]
    EmptySelection,
}

/// Why [`crate::Engine::on`] refused an event. The engine's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    #[error("the pipeline has not started")]
    NotStarted,
    #[error("the pipeline has already started")]
    AlreadyStarted,
    #[error("there is no job `{job}`")]
    UnknownJob { job: String },
    #[error("the pipeline is already {status}")]
    PipelineComplete { status: PipelineStatus },
    /// A report about an attempt that is not the job's current one (a late or duplicated
    /// message from an executor). Safe to log and drop.
    #[error("job `{job}`: attempt {attempt} is not the current attempt ({current})")]
    StaleAttempt { job: String, attempt: u32, current: u32 },
    #[error("job `{job}` is {status}: cannot {action} it")]
    InvalidTransition { job: String, status: JobStatus, action: &'static str },
}

fn hint(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(name) => format!("; did you mean `{name}`?"),
        None => String::new(),
    }
}

fn names(jobs: &[String]) -> String {
    let quoted: Vec<String> = jobs.iter().map(|job| format!("`{job}`")).collect();
    quoted.join(", ")
}

/// The candidate closest to `name` by edit distance, when it is close enough to be a typo.
pub(crate) fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.to_owned())
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("build", "build"), 0);
        assert_eq!(edit_distance("biuld", "build"), 2);
        assert_eq!(edit_distance("buld", "build"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("test:unit", "test:unti"), 2);
    }

    #[test]
    fn suggests_the_closest_name_only_when_close() {
        let names = ["build", "test-unit", "deploy"];
        assert_eq!(suggest("buidl", names), Some("build".into()));
        assert_eq!(suggest("test_unit", names), Some("test-unit".into()));
        assert_eq!(suggest("lint", names), None);
    }

    #[test]
    fn messages_name_the_job_and_the_hint() {
        let err = SpecError::UnknownJob { name: "biuld".into(), suggestion: Some("build".into()) };
        assert_eq!(err.to_string(), "there is no job `biuld`; did you mean `build`?");
        let err = SpecError::NeedsCycle { jobs: vec!["a".into(), "b".into()] };
        assert_eq!(err.to_string(), "`needs` form a cycle through `a`, `b`");
    }
}
