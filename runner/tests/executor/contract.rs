//! The executor contract, checked against the shell and the docker executor alike.

use std::time::Duration;

use runner::executor::{CHUNK_SIZE, FailureReason, Outcome};

use crate::support::{Backend, process_gone};

/// Generates one `#[tokio::test]` per backend for each contract test.
macro_rules! for_each_executor {
    ($($test:ident),* $(,)?) => {
        mod shell {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(crate::support::Backend::shell()).await;
            })*
        }
        mod docker {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(crate::support::Backend::docker().await).await;
            })*
        }
    };
}

for_each_executor!(
    script_success_echoes_each_command,
    first_failure_stops_the_script_with_its_exit_code,
    pipefail_fails_a_pipeline_whose_first_command_fails,
    sections_fold_the_script_and_after_script,
    variables_are_data_never_code,
    job_runs_in_its_workspace,
    after_script_runs_after_a_failure_and_sees_the_variables,
    after_script_failure_leaves_the_outcome_alone,
    after_script_has_its_own_timeout,
    timeout_kills_the_whole_job,
    cancel_stops_the_job_then_runs_after_script,
    large_output_streams_in_bounded_chunks,
    long_scripts_go_through_a_file,
);

/// Short scripts travel inline (`-c`); one over the inline limit takes the file path.
async fn long_scripts_go_through_a_file(b: Backend) {
    let filler = format!("# {}", "x".repeat(80 * 1024));
    let job = b.job("long", &[filler.as_str(), "echo long-script-ran"]);
    let run = b.run(&job).await;
    assert_eq!(run.report.outcome, Outcome::Success, "{}", &run.output[run.output.len().saturating_sub(2000)..]);
    assert!(run.output.contains("long-script-ran\n"), "the command after the long line ran");
}

fn failed(code: i32) -> Outcome {
    Outcome::Failed { exit_code: Some(code), reason: FailureReason::ScriptFailure }
}

async fn script_success_echoes_each_command(b: Backend) {
    let job = b.job("success", &["echo hello", "X=1; echo \"x is $X\""]);
    let run = b.run(&job).await;
    assert_eq!(run.report.outcome, Outcome::Success, "{}", run.output);
    assert_eq!(run.report.after_script_exit, None);
    assert!(run.output.contains("\x1b[32;1m$ echo hello\x1b[0;m\nhello\n"), "{}", run.output);
    assert!(run.output.contains("\x1b[32;1m$ X=1; echo \"x is $X\"\x1b[0;m\nx is 1\n"), "{}", run.output);
}

async fn first_failure_stops_the_script_with_its_exit_code(b: Backend) {
    let job = b.job("failure", &["echo before", "exit 3", "echo after"]);
    let run = b.run(&job).await;
    assert_eq!(run.report.outcome, failed(3));
    assert!(run.output.contains("before\n"));
    assert!(!run.output.contains("after"), "a line after the failure ran or was echoed: {}", run.output);
}

async fn pipefail_fails_a_pipeline_whose_first_command_fails(b: Backend) {
    let job = b.job("pipefail", &["(exit 6) | cat", "echo unreachable"]);
    let run = b.run(&job).await;
    assert_eq!(run.report.outcome, failed(6), "{}", run.output);
    assert!(!run.output.contains("unreachable"));
}

async fn sections_fold_the_script_and_after_script(b: Backend) {
    let mut job = b.job("sections", &["echo in-script"]);
    job.req.after_script = vec!["echo in-after".into()];
    let run = b.run(&job).await;
    let out = &run.output;
    let at = |needle: &str| out.find(needle).unwrap_or_else(|| panic!("`{needle:?}` missing from {out:?}"));
    let order = [
        marker(out, "section_start", "step_script"),
        at("in-script\n"),
        marker(out, "section_end", "step_script"),
        marker(out, "section_start", "after_script"),
        at("in-after\n"),
        marker(out, "section_end", "after_script"),
    ];
    assert!(order.is_sorted(), "sections out of order ({order:?}) in {out:?}");
}

/// Position of `<kind>:<unix time>:<name>\r\e[0K`, which must start a line.
fn marker(out: &str, kind: &str, name: &str) -> usize {
    let found = out.match_indices(&format!("{kind}:")).map(|(i, _)| i).find(|&i| {
        let rest = &out[i + kind.len() + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with(&format!(":{name}\r\x1b[0K"))
    });
    let i = found.unwrap_or_else(|| panic!("no `{kind}` marker for `{name}` in {out:?}"));
    assert!(i == 0 || out.as_bytes()[i - 1] == b'\n', "marker not at the start of a line: {out:?}");
    i
}

async fn variables_are_data_never_code(b: Backend) {
    let hostile =
        "$(touch pwned-1) `touch pwned-2` \"dq\" 'sq' ; touch pwned-3 && touch pwned-4\nsecond line $HOME \\ ${X:-$(touch pwned-5)}";
    let mut job = b.job("hostile", &["printf '%s' \"$HOSTILE\" > got.txt", "echo \"$HOSTILE\"", "echo $HOSTILE", "echo $SIMPLE"]);
    job.req.env = vec![("HOSTILE".into(), hostile.into()), ("SIMPLE".into(), "plain value".into())];
    job.req.after_script = vec!["echo \"$HOSTILE\" >/dev/null".into()];
    let run = b.run(&job).await;
    assert_eq!(run.report.outcome, Outcome::Success, "{}", run.output);
    assert_eq!(job.file("got.txt").as_deref(), Some(hostile), "the variable did not arrive intact");
    assert!(run.output.contains("plain value\n"));
    let pwned: Vec<_> = std::fs::read_dir(job.workspace())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("pwned"))
        .collect();
    assert!(pwned.is_empty(), "a variable's value was executed: {pwned:?}");
}

async fn job_runs_in_its_workspace(b: Backend) {
    let job = b.job("workdir", &["pwd", "echo from-the-job > made-by-job.txt", "cat checked-out.txt"]);
    std::fs::write(job.workspace().join("checked-out.txt"), "checkout content\n").unwrap();
    let run = b.run(&job).await;
    assert_eq!(run.report.outcome, Outcome::Success, "{}", run.output);
    assert!(run.output.contains(&format!("\n{}\n", b.job_dir(&job))), "{}", run.output);
    assert!(run.output.contains("checkout content\n"));
    assert_eq!(job.file("made-by-job.txt").as_deref(), Some("from-the-job\n"));
}

async fn after_script_runs_after_a_failure_and_sees_the_variables(b: Backend) {
    let mut job = b.job("after-failure", &["exit 4"]);
    job.req.env = vec![("MY_VAR".into(), "visible".into())];
    job.req.after_script = vec!["echo \"after: $CI_JOB_STATUS $MY_VAR\"".into(), "touch after-ran".into()];
    let run = b.run(&job).await;
    assert_eq!(run.report.outcome, failed(4));
    assert_eq!(run.report.after_script_exit, Some(0), "{}", run.output);
    assert!(run.output.contains("after: failed visible\n"), "{}", run.output);
    assert!(job.workspace().join("after-ran").exists());
}

async fn after_script_failure_leaves_the_outcome_alone(b: Backend) {
    let mut job = b.job("after-fails", &["true"]);
    job.req.after_script = vec!["echo \"status $CI_JOB_STATUS\"".into(), "exit 5".into(), "echo not-reached".into()];
    let run = b.run(&job).await;
    assert_eq!(run.report.outcome, Outcome::Success);
    assert_eq!(run.report.after_script_exit, Some(5));
    assert!(run.output.contains("status success\n"));
    assert!(!run.output.contains("not-reached"));
    assert!(run.output.contains("after_script failed, but job will continue unaffected: exit code 5"), "{}", run.output);
}

async fn after_script_has_its_own_timeout(b: Backend) {
    let mut job = b.job("after-timeout", &["echo main"]);
    job.req.after_script = vec!["sleep 1000".into()];
    job.req.after_script_timeout = Duration::from_secs(1);
    let run = b.run(&job).await;
    assert_eq!(run.report.outcome, Outcome::Success);
    assert_eq!(run.report.after_script_exit, None);
    assert!(run.output.contains("after_script timed out after 1s"), "{}", run.output);
}

async fn timeout_kills_the_whole_job(b: Backend) {
    let mut job = b.job("timeout", &["sleep 1000 & echo $! > bg.pid", "echo $$ > sh.pid", "sleep 1000"]);
    job.req.timeout = Duration::from_secs(1);
    job.req.after_script = vec!["echo \"after: $CI_JOB_STATUS\"".into()];
    let run = b.run(&job).await;
    assert_eq!(run.report.outcome, Outcome::Failed { exit_code: None, reason: FailureReason::JobTimeout }, "{}", run.output);
    assert!(run.output.contains("timed out after 1s"), "{}", run.output);
    assert!(run.output.contains("after: failed\n"), "after_script did not run: {}", run.output);
    // The cut-short step's section is still closed, before after_script's opens.
    assert!(marker(&run.output, "section_end", "step_script") < marker(&run.output, "section_start", "after_script"));
    if b.docker.is_none() {
        // On the host, the script's shell and its background grandchild are both gone.
        for file in ["bg.pid", "sh.pid"] {
            let pid: u32 = job.file(file).unwrap().trim().parse().unwrap();
            assert!(process_gone(pid), "process {pid} from {file} survived the timeout");
        }
    }
}

async fn cancel_stops_the_job_then_runs_after_script(b: Backend) {
    let mut job = b.job("cancel", &["sleep 1000 & echo $! > bg.pid", "echo \"ready-$((40 + 2))\"", "sleep 1000"]);
    job.req.timeout = Duration::from_secs(120);
    job.req.after_script = vec!["echo \"after: $CI_JOB_STATUS\"".into()];
    let run = b.run_until(&job, Some("ready-42\n")).await;
    assert_eq!(run.report.outcome, Outcome::Canceled, "{}", run.output);
    assert!(run.output.contains("after: canceled\n"), "{}", run.output);
    if b.docker.is_none() {
        let pid: u32 = job.file("bg.pid").unwrap().trim().parse().unwrap();
        assert!(process_gone(pid), "background process {pid} survived the cancellation");
    }
}

async fn large_output_streams_in_bounded_chunks(b: Backend) {
    const SIZE: usize = 50 << 20;
    let job = b.job("large", &[&format!("head -c {SIZE} /dev/zero | tr '\\0' x"), "echo done"]);
    let run = b.run(&job).await;
    assert_eq!(run.report.outcome, Outcome::Success, "{}", &run.output[..run.output.len().min(2000)]);
    assert!(run.bytes > SIZE, "only {} bytes arrived", run.bytes);
    assert!(run.chunks >= SIZE / CHUNK_SIZE, "{} chunks for {} bytes", run.chunks, run.bytes);
    assert!(run.largest_chunk <= CHUNK_SIZE);
    assert!(
        run.output.ends_with("done\n") || run.output.contains("xdone\n") || run.output.contains("\ndone\n"),
        "{}",
        &run.output[run.output.len().saturating_sub(500)..]
    );
}
