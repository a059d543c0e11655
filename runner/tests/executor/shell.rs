//! What only the shell executor does: host environment, process groups, spawn failures.

use std::time::Duration;

use runner::executor::{Executor, FailureReason, ImageSpec, Outcome, ServiceSpec};
use tokio_util::sync::CancellationToken;

use crate::support::{Job, eventually, process_gone, run, shell_executor};

#[tokio::test]
async fn merged_output_keeps_the_order_of_stdout_and_stderr() {
    let job = Job::new("order", &["echo out1; echo err1 >&2; echo out2; echo err2 >&2"]);
    let run = run(&shell_executor(), job.req.clone()).await;
    assert!(run.output.contains("\nout1\nerr1\nout2\nerr2\n"), "{}", run.output);
}

#[tokio::test]
async fn the_job_does_not_inherit_pistes_environment() {
    // Any variable of this test process outside the documented pass-through list.
    let passed = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];
    let (leak, _) = std::env::vars().find(|(k, _)| !passed.contains(&k.as_str())).expect("the test process has some variable to leak");
    let mut job = Job::new("env", &["env > env.txt"]);
    job.req.env = vec![("JOB_VAR".into(), "job value".into())];
    let run = run(&shell_executor(), job.req.clone()).await;
    assert_eq!(run.report.outcome, Outcome::Success, "{}", run.output);
    let env = job.file("env.txt").unwrap();
    assert!(env.lines().any(|l| l == "JOB_VAR=job value"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    assert!(!env.lines().any(|l| l.starts_with(&format!("{leak}="))), "`{leak}` leaked into the job: {env}");
}

#[tokio::test]
async fn image_and_services_are_ignored_with_a_warning() {
    let mut job = Job::new("image", &["echo ran"]);
    job.req.image = Some(ImageSpec::new("alpine:3"));
    job.req.services = vec![ServiceSpec::new("postgres:16")];
    let run = run(&shell_executor(), job.req.clone()).await;
    assert_eq!(run.report.outcome, Outcome::Success);
    assert!(run.output.contains("WARNING: the shell executor ignores `image` and `services`"), "{}", run.output);
}

#[tokio::test]
async fn background_processes_die_when_the_script_ends() {
    let job = Job::new("leftover", &["sleep 1000 & echo $! > bg.pid", "echo done"]);
    let run = run(&shell_executor(), job.req.clone()).await;
    assert_eq!(run.report.outcome, Outcome::Success, "{}", run.output);
    let pid: u32 = job.file("bg.pid").unwrap().trim().parse().unwrap();
    assert!(eventually(Duration::from_secs(5), async || process_gone(pid)).await, "background process {pid} outlived its job");
}

#[tokio::test]
async fn dropping_the_job_future_kills_its_processes() {
    let job = Job::new("dropped", &["sleep 1000 & echo $! > bg.pid", "echo $$ > sh.pid", "echo \"ready-$((1 + 1))\"", "sleep 1000"]);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let exec = shell_executor();
    let req = job.req.clone();
    let task = tokio::spawn(async move { exec.run(req, tx, CancellationToken::new()).await });
    let mut seen = String::new();
    while !seen.contains("ready-2\n") {
        let chunk = rx.recv().await.expect("the job ended before printing its marker");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    for file in ["bg.pid", "sh.pid"] {
        let pid: u32 = job.file(file).unwrap().trim().parse().unwrap();
        assert!(eventually(Duration::from_secs(5), async || process_gone(pid)).await, "process {pid} ({file}) outlived the dropped job");
    }
}

#[tokio::test]
async fn a_missing_workspace_is_a_runner_system_failure() {
    let mut job = Job::new("no-workspace", &["true"]);
    job.req.workspace = job.workspace().join("does-not-exist");
    let run = run(&shell_executor(), job.req.clone()).await;
    let Outcome::Failed { reason: FailureReason::RunnerSystemFailure(msg), exit_code: None } = &run.report.outcome else {
        panic!("unexpected outcome {:?}", run.report.outcome);
    };
    assert!(msg.contains("does-not-exist"), "{msg}");
}

#[tokio::test]
async fn an_invalid_variable_name_is_refused_before_running() {
    let mut job = Job::new("bad-env", &["touch ran"]);
    job.req.env = vec![("A=B".into(), "x".into())];
    let run = run(&shell_executor(), job.req.clone()).await;
    assert!(matches!(&run.report.outcome, Outcome::Failed { reason: FailureReason::RunnerSystemFailure(m), .. } if m.contains("`A=B`")));
    assert!(!job.workspace().join("ran").exists());
}

#[tokio::test]
async fn an_explicit_sh_runs_the_same_script() {
    let exec = runner::executor::ShellExecutor::with_shell("/bin/sh");
    assert_eq!(exec.shell(), std::path::Path::new("/bin/sh"));
    let job = Job::new("sh", &["(exit 9) | cat"]);
    let run = run(&exec, job.req.clone()).await;
    // /bin/sh may lack pipefail (dash); the prelude must not break it either way.
    assert!(matches!(run.report.outcome, Outcome::Success | Outcome::Failed { exit_code: Some(9), .. }), "{:?}", run.report.outcome);
    assert!(!run.output.contains("pipefail"), "{}", run.output);
}
