//! The shell executor: jobs run as processes on this host.
//!
//! # Decisions
//!
//! - **Shell.** `bash` when it is on `PATH` (gitlab-runner's default shell, and what scripts
//!   written for it expect), else `/bin/sh`; [`ShellExecutor::with_shell`] picks another. bash
//!   runs with `--noprofile --norc`, so no user start-up file changes the job.
//! - **Script delivery.** The script is written to a private (0700) temporary directory and run
//!   as `shell FILE`: no argument-length limit, and the job's standard input stays `/dev/null`
//!   (a command reading stdin cannot eat the rest of the script).
//! - **Environment.** The job does not inherit piste's environment (which may hold tokens): it
//!   gets only `PATH` (or a default), `HOME`, `USER`, `LOGNAME`, `LANG`, `LC_ALL`, `LC_CTYPE`,
//!   `TZ` and `TMPDIR` when set, then the job's variables, which win.
//! - **Output.** stdout and stderr are the same pipe, so their order is exactly the order the
//!   job wrote them.
//! - **Process tree.** Each script runs in its own process group. When the script ends, what
//!   it left running in the background is killed (`SIGKILL` to the group); on timeout or
//!   cancellation the group gets `SIGTERM`, then `SIGKILL` after [`KILL_GRACE`]. A process that
//!   left the group on purpose (`setsid`) escapes, as it would in gitlab-runner.
//! - `image` and `services` cannot apply: a warning says so in the log.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::pipe::{PipeFlags, pipe_with};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use super::log::{CHUNK_SIZE, JobLog, human};
use super::{Executor, FailureReason, JobReport, JobRequest, Outcome, RunFuture, after_script_env, sanitize_id, script, validate_env};

/// Time between `SIGTERM` and `SIGKILL` when a job is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(3);

/// How long output is still read after the script's process group is gone, for processes
/// that escaped the group but keep the output pipe open.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Variables passed through from piste's own environment.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs jobs on this host. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct ShellExecutor {
    shell: PathBuf,
    is_bash: bool,
}

impl Default for ShellExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl ShellExecutor {
    /// Uses `bash` from `PATH` if there is one, else `/bin/sh`.
    pub fn new() -> Self {
        match find_in_path("bash") {
            Some(bash) => Self { shell: bash, is_bash: true },
            None => Self::with_shell("/bin/sh"),
        }
    }

    /// Uses the given POSIX shell.
    pub fn with_shell(shell: impl Into<PathBuf>) -> Self {
        let shell = shell.into();
        let is_bash = shell.file_name().is_some_and(|n| n == "bash");
        Self { shell, is_bash }
    }

    /// The shell jobs run in.
    pub fn shell(&self) -> &Path {
        &self.shell
    }

    async fn run_job(&self, req: JobRequest, out: Sender<Vec<u8>>, cancel: CancellationToken) -> JobReport {
        let started = Instant::now();
        let log = JobLog::new(out);
        if req.image.is_some() || !req.services.is_empty() {
            log.warning("the shell executor ignores `image` and `services`: the job runs directly on this host").await;
        }
        let report = |outcome, after_script_exit| JobReport { outcome, after_script_exit, duration: started.elapsed() };
        if let Err(msg) = validate_env(&req.env) {
            log.error(&msg).await;
            return report(system_failure(msg), None);
        }
        // Scripts go on the command line (`-c`); only very long ones need a file, and so a
        // private directory, created on first use.
        let mut dir: Option<ScriptDir> = None;

        let outcome = match &req.script_outcome {
            Some(outcome) => outcome.clone(),
            None => {
                log.section_start("step_script", "Executing \"step_script\" stage of the job script").await;
                let script = script::job_script(&req.script);
                let end = self.run_script(&mut dir, "step_script", &script, &req, &req.env, req.timeout, Some(&cancel), &log).await;
                log.section_end("step_script").await;
                match end {
                    ScriptEnd::Exited(0) => Outcome::Success,
                    ScriptEnd::Exited(code) => Outcome::Failed { exit_code: Some(code), reason: FailureReason::ScriptFailure },
                    ScriptEnd::TimedOut => Outcome::Failed { exit_code: None, reason: FailureReason::JobTimeout },
                    ScriptEnd::Canceled => Outcome::Canceled,
                    ScriptEnd::Failed(msg) => system_failure(msg),
                }
            }
        };

        let mut after_script_exit = None;
        if !req.after_script.is_empty() {
            log.section_start("after_script", "Running after_script").await;
            let env = after_script_env(&req.env, &outcome);
            let script = script::job_script(&req.after_script);
            let end = self.run_script(&mut dir, "after_script", &script, &req, &env, req.after_script_timeout, None, &log).await;
            after_script_exit = super::report_after_script(&log, end.into(), req.after_script_timeout).await;
            log.section_end("after_script").await;
        }
        report(outcome, after_script_exit)
    }

    /// Runs one script to its end, streaming its output.
    #[allow(clippy::too_many_arguments)]
    async fn run_script(
        &self,
        dir: &mut Option<ScriptDir>,
        name: &str,
        script: &str,
        req: &JobRequest,
        env: &[(String, String)],
        timeout: Duration,
        cancel: Option<&CancellationToken>,
        log: &JobLog,
    ) -> ScriptEnd {
        let source = if script.len() <= INLINE_SCRIPT_MAX {
            ScriptSource::Inline(script)
        } else {
            if dir.is_none() {
                match ScriptDir::create(&req.id) {
                    Ok(d) => *dir = Some(d),
                    Err(e) => return ScriptEnd::Failed(format!("cannot create the job's script directory: {e}")),
                }
            }
            match dir.as_ref().map(|d| d.write(name, script)) {
                Some(Ok(path)) => ScriptSource::File(path),
                Some(Err(e)) => return ScriptEnd::Failed(format!("cannot write the {name} script: {e}")),
                None => return ScriptEnd::Failed(format!("no directory for the {name} script")),
            }
        };
        let (mut child, reader, group) = match self.spawn(&source, req, env) {
            Ok(spawned) => spawned,
            Err(e) => return ScriptEnd::Failed(format!("cannot start `{}` in `{}`: {e}", self.shell.display(), req.workspace.display())),
        };
        let mut reader = Some(reader);
        let end = tokio::select! {
            biased;
            status = pump_until_exit(&mut child, &mut reader, &group, log) => ScriptEnd::Exited(exit_code(status)),
            () = tokio::time::sleep(timeout) => ScriptEnd::TimedOut,
            () = cancelled(cancel) => ScriptEnd::Canceled,
        };
        if matches!(end, ScriptEnd::TimedOut | ScriptEnd::Canceled) {
            let what = if matches!(end, ScriptEnd::TimedOut) { format!("timed out after {}", human(timeout)) } else { "canceled".into() };
            log.warning(&format!("{name} {what}: stopping its processes")).await;
            group.signal(Signal::TERM);
            if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
                group.signal(Signal::KILL);
                let _ = child.wait().await;
            }
            group.signal(Signal::KILL);
            // A `SIGKILL` is delivered when its target next runs: on a busy machine a killed
            // background process can outlive `kill` by milliseconds. The job ends once none
            // is left, so nothing of it touches the workspace after it is reported.
            group.wait_gone(KILL_GRACE).await;
        }
        group.disarm();
        end
    }

    fn spawn(
        &self,
        script: &ScriptSource<'_>,
        req: &JobRequest,
        env: &[(String, String)],
    ) -> std::io::Result<(Child, pipe::Receiver, GroupGuard)> {
        let (read_end, write_end) = pipe_with(PipeFlags::CLOEXEC)?;
        let stderr = write_end.try_clone()?;
        let mut cmd = Command::new(&self.shell);
        if self.is_bash {
            cmd.args(["--noprofile", "--norc"]);
        }
        match script {
            ScriptSource::Inline(text) => cmd.arg("-c").arg(text),
            ScriptSource::File(path) => cmd.arg(path),
        };
        cmd.current_dir(&req.workspace)
            .env_clear()
            .envs(base_env())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::from(stderr))
            .process_group(0);
        let child = cmd.spawn()?;
        // The command holds the pipe's write end until dropped: drop it now, or the output
        // never reaches end-of-file.
        drop(cmd);
        let pid = child.id().and_then(|id| Pid::from_raw(id as i32));
        let record = match (&req.ledger, pid) {
            (Some(ledger), Some(pid)) => ledger.record(pid),
            _ => None,
        };
        let group = GroupGuard { pgid: pid, armed: true, record };
        let reader = pipe::Receiver::from_owned_fd(read_end)?;
        Ok((child, reader, group))
    }
}

impl Executor for ShellExecutor {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn run(&self, req: JobRequest, out: Sender<Vec<u8>>, cancel: CancellationToken) -> RunFuture<'_> {
        Box::pin(self.run_job(req, out, cancel))
    }
}

/// How one script ended.
enum ScriptEnd {
    Exited(i32),
    TimedOut,
    Canceled,
    Failed(String),
}

impl From<ScriptEnd> for super::AfterScriptEnd {
    fn from(end: ScriptEnd) -> Self {
        match end {
            ScriptEnd::Exited(code) => Self::Exited(code),
            ScriptEnd::TimedOut | ScriptEnd::Canceled => Self::TimedOut,
            ScriptEnd::Failed(msg) => Self::Failed(msg),
        }
    }
}

fn system_failure(msg: String) -> Outcome {
    Outcome::Failed { exit_code: None, reason: FailureReason::RunnerSystemFailure(msg) }
}

/// Streams the script's output until it exits and its output pipe is closed; then kills what
/// it left running in its group.
async fn pump_until_exit(child: &mut Child, reader: &mut Option<pipe::Receiver>, group: &GroupGuard, log: &JobLog) -> ExitStatus {
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut status = None;
    let drain = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain);
    loop {
        if let (Some(status), None) = (status, &reader) {
            return status;
        }
        tokio::select! {
            s = child.wait(), if status.is_none() => {
                // An error here means the child was already reaped: treat it as killed.
                status = Some(s.unwrap_or_else(|_| ExitStatus::from_raw(Signal::KILL.as_raw())));
                group.signal(Signal::KILL);
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_GRACE);
            }
            n = async { reader.as_mut().expect("guarded by the select condition").read(&mut buf).await }, if reader.is_some() => match n {
                Ok(0) | Err(_) => *reader = None,
                Ok(n) => log.output(&buf[..n]).await,
            },
            () = &mut drain, if reader.is_some() => {
                log.warning("a process that left the job's process group still holds its output open: its output is not collected").await;
                *reader = None;
            }
        }
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}

async fn cancelled(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Kills the job's process group with `SIGKILL` when dropped while still armed, so a dropped
/// job future leaves no process behind.
struct GroupGuard {
    pgid: Option<Pid>,
    armed: bool,
    /// The group's record in the ledger, cleared once the group is gone.
    record: Option<super::ledger::Entry>,
}

impl GroupGuard {
    fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH: the group is already empty.
            let _ = kill_process_group(pgid, signal);
        }
    }

    /// Waits, at most `limit`, until no live process is left in the group (zombies waiting
    /// for whoever reaps them do not count: they run nothing).
    async fn wait_gone(&self, limit: Duration) {
        let Some(pgid) = self.pgid else { return };
        let deadline = Instant::now() + limit;
        while live_in_group(pgid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Called once the group has been killed: from then on its id may be reused.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::KILL);
        }
        // Cleared by its own drop.
        self.record.take();
    }
}

/// Whether a process of group `pgid` is alive (not a zombie): `/proc/*/stat`, field 5.
fn live_in_group(pgid: Pid) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else { return false };
    let want = pgid.as_raw_nonzero().get().to_string();
    dir.flatten().filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))).any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { return false };
        let Some((_, rest)) = stat.rsplit_once(')') else { return false };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let pgrp = f.nth(1).unwrap_or("");
        pgrp == want && !matches!(state, "Z" | "X")
    })
}

/// A private directory holding a job's script files, removed when dropped.
/// Scripts up to this size are passed with `-c`: Linux caps one argument at 128 KiB, and a
/// file costs a directory, a file and their removal for every job (several ms on ext4).
const INLINE_SCRIPT_MAX: usize = 64 * 1024;

/// How a script reaches the shell. Either way stdin stays `/dev/null`, so no command can
/// swallow the rest of the script.
enum ScriptSource<'a> {
    Inline(&'a str),
    File(PathBuf),
}

struct ScriptDir(PathBuf);

impl ScriptDir {
    fn create(job_id: &str) -> std::io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!("piste-{}-{}-{}", sanitize_id(job_id), std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }

    fn write(&self, name: &str, script: &str) -> std::io::Result<PathBuf> {
        use std::io::Write;
        let path = self.0.join(name);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        file.write_all(script.as_bytes())?;
        Ok(path)
    }
}

impl Drop for ScriptDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn base_env() -> Vec<(&'static str, OsString)> {
    let mut env: Vec<_> = INHERITED_ENV.iter().filter_map(|&k| std::env::var_os(k).map(|v| (k, v))).collect();
    if !env.iter().any(|(k, _)| *k == "PATH") {
        env.push(("PATH", DEFAULT_PATH.into()));
    }
    env
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}
