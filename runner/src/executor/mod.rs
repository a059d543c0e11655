//! Job execution: run one job's script in a container ([`DockerExecutor`]) or on the host
//! ([`ShellExecutor`]), streaming its output, as gitlab-runner does.
//!
//! # Contract shared by every executor
//!
//! - `before_script` + `script` ([`JobRequest::script`]) run as **one** POSIX shell script built
//!   by [`script::job_script`]: `set -e` (and `pipefail` where the shell has it), every command
//!   echoed as a green `$ command` line before it runs, the job failing on the first failing
//!   command with that command's exit code. Commands are passed verbatim; variables reach the
//!   script only through its environment, never spliced into its text.
//! - `after_script` runs afterwards in a **separate** shell with its own timeout
//!   ([`JobRequest::after_script_timeout`]), whatever happened to the script: success,
//!   failure, timeout or cancellation (as GitLab 17 does). It sees the same variables plus
//!   `CI_JOB_STATUS` (`success`, `failed` or `canceled`). Its result never changes the job's
//!   outcome; it is reported in [`JobReport::after_script_exit`].
//! - Output goes to the `out` channel as raw bytes (stdout and stderr merged, ANSI kept), in
//!   chunks as they arrive — at most [`CHUNK_SIZE`] bytes each, never whole-job buffers. The
//!   channel is bounded: a slow consumer slows the job down, it does not grow memory. The
//!   executor writes its own GitLab-style lines into the same stream: `section_start`/
//!   `section_end` markers around `prepare_executor`, `step_script` and `after_script`, and
//!   warnings/errors. The final "Job succeeded" / "Job failed" line is the caller's.
//! - The job timeout ([`JobRequest::timeout`]) counts from the start of [`Executor::run`]
//!   (image pulls and services included, as in GitLab) to the end of the script. Timeout and
//!   cancellation kill everything the job started (the process group, or the containers).
//! - Nothing is left behind: processes are killed as a group, containers and networks are
//!   removed, on every path — including when the future returned by [`Executor::run`] is
//!   dropped half-way (a guard kills or removes what was started).

mod docker;
mod ledger;
mod log;
pub mod script;
mod shell;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

pub use docker::{DockerExecutor, LeftoverFilter, cleanup_leftovers};
pub use ledger::{ProcessLedger, reap_process_groups};
pub use log::CHUNK_SIZE;
pub use shell::ShellExecutor;

/// Labels put on every container and network piste creates.
pub mod labels {
    /// `true` on everything piste manages; what [`super::cleanup_leftovers`] looks for.
    pub const MANAGED: &str = "piste.managed";
    /// The [`super::JobRequest::id`] of the attempt that created the object.
    pub const JOB: &str = "piste.job";
    /// Creation time, in seconds since the Unix epoch.
    pub const CREATED: &str = "piste.created";
}

/// Everything an executor needs to run one attempt of one job.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// Unique per attempt (e.g. `p12-j3-a1`); used in labels and, sanitised, in container names.
    pub id: String,
    /// The job's name, for messages.
    pub name: String,
    /// The job's `image`; the docker executor falls back to its default image without one.
    pub image: Option<ImageSpec>,
    /// The job's `services`, started before the script on a per-job network.
    pub services: Vec<ServiceSpec>,
    /// `before_script` lines followed by `script` lines, run as one shell script.
    pub script: Vec<String>,
    /// `after_script` lines, run in a separate shell afterwards (empty: nothing runs).
    pub after_script: Vec<String>,
    /// `Some`: the job's script already ran elsewhere (a job's `run:` steps) and ended so. The
    /// executor prepares as usual (image, services), skips `step_script` and runs only
    /// `after_script`, with `CI_JOB_STATUS` from this outcome, which it reports as its own.
    pub script_outcome: Option<Outcome>,
    /// Final variables (already expanded by the caller), exported to the script and services.
    pub env: Vec<(String, String)>,
    /// Host directory holding this job's checkout.
    pub workspace: PathBuf,
    /// The path the job sees its checkout at (e.g. `/builds/group/project`). Docker bind-mounts
    /// [`Self::workspace`] there and starts in it; the shell executor starts in `workspace`.
    pub project_dir: String,
    /// Job timeout, from the start of the run to the end of the script.
    pub timeout: Duration,
    /// Timeout of `after_script` (GitLab's default is 5 minutes).
    pub after_script_timeout: Duration,
    /// Where the executor records what it starts (process groups) until it has stopped it, so
    /// that a later life of a killed runner can stop what it left ([`reap_process_groups`]).
    pub ledger: Option<ProcessLedger>,
}

/// An `image:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub name: String,
    /// `None`: the image's own entrypoint. `Some([])` or `Some([""])`: no entrypoint at all.
    pub entrypoint: Option<Vec<String>>,
    /// Policies tried in order (GitLab semantics); empty means `[if-not-present]`.
    pub pull_policy: Vec<PullPolicy>,
}

impl ImageSpec {
    /// An image with its own entrypoint and the default pull policy.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), entrypoint: None, pull_policy: Vec::new() }
    }
}

/// When to pull an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always pull; fall to the next policy in the list if the pull fails.
    Always,
    /// Use the local image if present, else pull (the default).
    IfNotPresent,
    /// Only ever use a local image.
    Never,
}

impl PullPolicy {
    /// GitLab's `pull_policy` names (`always`, `if-not-present`, `never`); others are dropped
    /// (the YAML loader already reported them).
    pub fn parse_list<S: AsRef<str>>(names: &[S]) -> Vec<PullPolicy> {
        names
            .iter()
            .filter_map(|x| match x.as_ref() {
                "always" => Some(PullPolicy::Always),
                "if-not-present" => Some(PullPolicy::IfNotPresent),
                "never" => Some(PullPolicy::Never),
                _ => None,
            })
            .collect()
    }
}

/// A `services:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    /// `alias:`; several aliases may be separated by commas or spaces, as GitLab allows.
    pub alias: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    /// Service-level variables, added to (and overriding) the job's variables.
    pub variables: Vec<(String, String)>,
    pub pull_policy: Vec<PullPolicy>,
}

impl ServiceSpec {
    /// A service with the image's own entrypoint and command and no alias of its own.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), alias: None, entrypoint: None, command: None, variables: Vec::new(), pull_policy: Vec::new() }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed { exit_code: Option<i32>, reason: FailureReason },
    Canceled,
}

/// Why a job failed, in GitLab's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// A command of the script failed (`script_failure`).
    ScriptFailure,
    /// The job ran past its timeout (`job_execution_timeout`).
    JobTimeout,
    /// The executor could not run the job: Docker API error, image missing, spawn failure.
    RunnerSystemFailure(String),
}

/// What [`Executor::run`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    pub outcome: Outcome,
    /// Exit code of `after_script`; `None` when it did not run, timed out or could not start.
    pub after_script_exit: Option<i32>,
    pub duration: Duration,
}

/// The future returned by [`Executor::run`].
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = JobReport> + Send + 'a>>;

/// Runs jobs. See the [module documentation](self) for the contract.
pub trait Executor: Send + Sync {
    /// `docker` or `shell`.
    fn name(&self) -> &'static str;

    /// Runs one job to completion, writing its output to `out`. Cancelling `cancel` stops the
    /// script at once (then `after_script` runs, bounded by its timeout); dropping the future
    /// stops everything and cleans up in the background.
    fn run(&self, req: JobRequest, out: Sender<Vec<u8>>, cancel: CancellationToken) -> RunFuture<'_>;

    /// Removes what attempts whose [`JobRequest::id`] starts with `job_id_prefix` left behind
    /// when the process running them was killed (containers, networks); how many. Meant for
    /// start-up, before taking jobs. Process groups are reaped from the ledger instead.
    fn cleanup_leftovers<'a>(&'a self, _job_id_prefix: &'a str) -> Pin<Box<dyn Future<Output = Result<usize, Error>> + Send + 'a>> {
        Box::pin(async { Ok(0) })
    }
}

/// Errors setting an executor up (running a job never errors: it reports an [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Docker Engine does not answer: {0}")]
    DockerUnavailable(#[source] bollard::errors::Error),
    #[error("the Docker Engine did not answer within {0:?}")]
    DockerTimeout(Duration),
    #[error("Docker Engine API call failed: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("cleanup of leftover containers failed: {0}")]
    Cleanup(String),
}

/// Checks variable names and values before they reach a process environment: a name must be
/// non-empty and hold no `=` or NUL, a value no NUL.
fn validate_env(env: &[(String, String)]) -> Result<(), String> {
    for (name, value) in env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(format!("invalid variable name `{}`: it must be non-empty and contain no `=` or NUL", name.escape_debug()));
        }
        if value.contains('\0') {
            return Err(format!("variable `{name}` contains a NUL byte, which no process environment can hold"));
        }
    }
    Ok(())
}

/// `CI_JOB_STATUS` as GitLab sets it for `after_script`.
fn job_status(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Failed { .. } => "failed",
        Outcome::Canceled => "canceled",
    }
}

/// The environment of `after_script`: the job's plus `CI_JOB_STATUS`.
fn after_script_env(env: &[(String, String)], outcome: &Outcome) -> Vec<(String, String)> {
    let mut env: Vec<_> = env.iter().filter(|(k, _)| k != "CI_JOB_STATUS").cloned().collect();
    env.push(("CI_JOB_STATUS".to_owned(), job_status(outcome).to_owned()));
    env
}

/// How an `after_script` ended, for [`report_after_script`].
enum AfterScriptEnd {
    Exited(i32),
    TimedOut,
    Failed(String),
}

/// Logs how `after_script` ended, as GitLab words it; returns its exit code.
async fn report_after_script(log: &log::JobLog, end: AfterScriptEnd, timeout: Duration) -> Option<i32> {
    match end {
        AfterScriptEnd::Exited(0) => Some(0),
        AfterScriptEnd::Exited(code) => {
            log.warning(&format!("after_script failed, but job will continue unaffected: exit code {code}")).await;
            Some(code)
        }
        AfterScriptEnd::TimedOut => {
            log.warning(&format!("after_script timed out after {}, but job will continue unaffected", log::human(timeout))).await;
            None
        }
        AfterScriptEnd::Failed(msg) => {
            log.warning(&format!("after_script could not run: {msg}")).await;
            None
        }
    }
}

/// Turns a job id into something Docker accepts in a name: `[a-zA-Z0-9_.-]`, starting with an
/// alphanumeric character, at most 64 bytes.
fn sanitize_id(id: &str) -> String {
    let mut s: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect();
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        s.insert(0, 'j');
    }
    s.truncate(64);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitized_ids_are_docker_names() {
        assert_eq!(sanitize_id("p12-j3-a1"), "p12-j3-a1");
        assert_eq!(sanitize_id("build job/1"), "build-job-1");
        assert_eq!(sanitize_id("-x"), "j-x");
        assert_eq!(sanitize_id(""), "j");
        assert_eq!(sanitize_id(&"é".repeat(100)).len(), 64);
    }

    #[test]
    fn env_validation_names_the_variable() {
        assert!(validate_env(&[("A".into(), "$(x)\n`y`".into())]).is_ok());
        assert!(validate_env(&[("A=B".into(), String::new())]).unwrap_err().contains("`A=B`"));
        assert!(validate_env(&[(String::new(), String::new())]).is_err());
        assert!(validate_env(&[("A".into(), "a\0b".into())]).unwrap_err().contains("`A`"));
    }

    #[test]
    fn after_script_sees_the_job_status() {
        let env = vec![("CI_JOB_STATUS".into(), "bogus".into()), ("X".into(), "1".into())];
        let got = after_script_env(&env, &Outcome::Canceled);
        assert_eq!(got, vec![("X".into(), "1".into()), ("CI_JOB_STATUS".into(), "canceled".into())]);
        let failed = Outcome::Failed { exit_code: Some(1), reason: FailureReason::ScriptFailure };
        assert_eq!(job_status(&failed), "failed");
        assert_eq!(job_status(&Outcome::Success), "success");
    }
}
