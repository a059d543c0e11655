//! Automatic retry of a failed attempt.
//!
//! Source of truth: `Gitlab::Ci::Build::AutoRetry` (lib/gitlab/ci/build/auto_retry.rb). The
//! number of allowed retries is, first match wins:
//! 1. 0 for failures that are never retried (`RETRY_OVERRIDES`: here `missing_dependency_failure`);
//! 2. `retry:max` when `retry:when` contains `always` or the failure's class, **or** the exit code
//!    is in `retry:exit_codes` (either condition is enough; see [`crate::Retry::from_yaml`] for
//!    the default of `when`);
//! 3. 2 for `scheduler_failure` (`DEFAULT_RETRIES`);
//! 4. 0.
//!
//! An attempt is retried while the retries so far (attempt - 1, user retries included, as
//! GitLab counts every retried build of the job) are fewer than that number. Only failures
//! are retried: a canceled attempt never is.

use crate::spec::{FailureReason, Retry, RetryWhen};

pub(crate) fn should_retry(retry: &Retry, attempt: u32, reason: FailureReason, exit_code: Option<i32>) -> bool {
    allowed_retries(retry, reason, exit_code) > attempt.saturating_sub(1)
}

fn allowed_retries(retry: &Retry, reason: FailureReason, exit_code: Option<i32>) -> u32 {
    if matches!(reason, FailureReason::MissingDependencyFailure | FailureReason::DownstreamPipelineCreationFailed) {
        return 0;
    }
    let on_reason = retry.when.contains(&RetryWhen::Always) || reason.retry_when().is_some_and(|class| retry.when.contains(&class));
    let on_exit_code = exit_code.is_some_and(|code| retry.exit_codes.contains(&code));
    if on_reason || on_exit_code {
        u32::from(retry.max)
    } else if reason == FailureReason::SchedulerFailure {
        2
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureReason::*;

    #[test]
    fn max_alone_retries_any_failure() {
        let retry = Retry::from_yaml(2, None, None);
        assert!(should_retry(&retry, 1, ScriptFailure, Some(1)));
        assert!(should_retry(&retry, 2, RunnerSystemFailure, None));
        assert!(!should_retry(&retry, 3, ScriptFailure, Some(1)));
    }

    #[test]
    fn when_restricts_the_failure_classes() {
        let retry = Retry::from_yaml(1, Some(vec![RetryWhen::RunnerSystemFailure]), None);
        assert!(should_retry(&retry, 1, RunnerSystemFailure, None));
        assert!(!should_retry(&retry, 1, ScriptFailure, Some(1)));
    }

    #[test]
    fn exit_codes_alone_retry_only_those_codes() {
        let retry = Retry::from_yaml(2, None, Some(vec![137]));
        assert!(should_retry(&retry, 1, ScriptFailure, Some(137)));
        assert!(!should_retry(&retry, 1, ScriptFailure, Some(1)));
        assert!(!should_retry(&retry, 1, RunnerSystemFailure, None));
    }

    #[test]
    fn when_or_exit_code_is_enough() {
        let retry = Retry::from_yaml(1, Some(vec![RetryWhen::RunnerSystemFailure]), Some(vec![137]));
        assert!(should_retry(&retry, 1, RunnerSystemFailure, None));
        assert!(should_retry(&retry, 1, ScriptFailure, Some(137)));
        assert!(!should_retry(&retry, 1, ScriptFailure, Some(2)));
    }

    #[test]
    fn overrides_and_defaults() {
        assert!(!should_retry(&Retry::max(2), 1, MissingDependencyFailure, None));
        assert!(!should_retry(&Retry::default(), 1, ScriptFailure, Some(1)));
        assert!(should_retry(&Retry::default(), 2, SchedulerFailure, None));
        assert!(!should_retry(&Retry::default(), 3, SchedulerFailure, None));
        assert!(!should_retry(&Retry::max(0), 1, ScriptFailure, Some(1)));
    }
}
