//! Scheduling semantics through the shell executor: needs, when, allow_failure, retry,
//! timeouts, subsets, exit codes, JSON events.

use crate::Project;

#[test]
fn a_passing_pipeline_exits_0_and_reports_json_events() {
    let p = Project::new(
        "stages: [build, test]\nbuild:\n  stage: build\n  script: [echo building]\ntest:\n  stage: test\n  script: [echo testing]\n",
    );
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(r.status("build"), "success");
    assert_eq!(r.status("test"), "success");
    assert!(r.position("job_finished", "build") < r.position("job_started", "test"), "stage order");
    assert!(r.log("build").iter().any(|l| l == "building"), "{:?}", r.log("build"));
    let fin = r.finished("test")[0];
    for key in ["job", "stage", "status", "allow_failure", "exit_code", "attempt", "duration_ms", "time"] {
        assert!(fin.get(key).is_some(), "job_finished lacks `{key}`: {fin}");
    }
    let last = r.events.last().unwrap();
    assert_eq!(last["event"], "pipeline_finished");
    assert_eq!(last["status"], "success");
    assert!(last["duration_ms"].is_u64());
}

#[test]
fn a_failure_skips_later_jobs_runs_on_failure_and_always_and_exits_1() {
    let p = Project::new(
        "stages: [a, b]\nfail:\n  stage: a\n  script: [exit 4]\nnext:\n  stage: b\n  script: [echo no]\ncleanup:\n  stage: b\n  script: [echo cleanup]\n  when: on_failure\nreport:\n  stage: b\n  script: [echo report]\n  when: always\n",
    );
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    assert_eq!(r.status("fail"), "failed");
    assert_eq!(r.finished("fail")[0]["exit_code"], 4);
    assert_eq!(r.status("next"), "skipped");
    assert_eq!(r.status("cleanup"), "success");
    assert_eq!(r.status("report"), "success");
    assert_eq!(r.pipeline_status(), "failed");
}

#[test]
fn allowed_failures_keep_the_pipeline_green() {
    let p = Project::new(
        "a:\n  script: [exit 3]\n  allow_failure: true\nb:\n  script: [exit 7]\n  allow_failure:\n    exit_codes: [7]\nc:\n  script: [exit 8]\n  allow_failure:\n    exit_codes: [7]\n",
    );
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.status("a"), "failed");
    assert_eq!(r.finished("a")[0]["allow_failure"], true);
    assert_eq!(r.finished("b")[0]["allow_failure"], true);
    assert_eq!(r.finished("c")[0]["allow_failure"], false, "exit code 8 is not in the list");
    assert_eq!(r.code, Some(1), "c fails the pipeline: {}", r.debug());
    let ok = Project::new("a:\n  script: [exit 3]\n  allow_failure: true\nb:\n  script: [\"true\"]\n");
    let r = ok.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(r.pipeline_status(), "success");
}

#[test]
fn needs_empty_starts_before_earlier_stages_finish() {
    let p = Project::new(
        "stages: [slow, fast]\nslow:\n  stage: slow\n  script: [sleep 1]\nearly:\n  stage: fast\n  needs: []\n  script: [echo early]\nlate:\n  stage: fast\n  script: [echo late]\n",
    );
    let r = p.run(&["--executor", "shell", "--jobs", "4"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(r.position("job_finished", "early") < r.position("job_finished", "slow"), "needs: [] does not wait for the slow stage");
    assert!(r.position("job_finished", "slow") < r.position("job_started", "late"));
}

#[test]
fn retry_runs_again_until_success_within_max() {
    let counter = tempfile::NamedTempFile::new().unwrap();
    let path = counter.path().to_string_lossy().into_owned();
    let yml = "flaky:\n  script:\n    - n=$(cat \"$COUNTER\" 2>/dev/null || echo 0); echo $((n+1)) > \"$COUNTER\"\n    - test \"$(cat \"$COUNTER\")\" -ge 3\n  retry: 2\n";
    let p = Project::new(yml);
    let var = format!("COUNTER={path}");
    let r = p.run(&["--executor", "shell", "--var", &var]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    let attempts: Vec<i64> = r.finished("flaky").iter().map(|e| e["attempt"].as_i64().unwrap()).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(r.status("flaky"), "success");
}

#[test]
fn retry_when_does_not_retry_other_failures() {
    let p = Project::new("j:\n  script: [exit 1]\n  retry:\n    max: 2\n    when: [runner_system_failure]\n");
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.finished("j").len(), 1, "a script failure is not a runner system failure");
    assert_eq!(r.code, Some(1));
}

#[test]
fn a_timeout_kills_the_whole_process_tree() {
    let marker = format!("piste-timeout-{}", std::process::id());
    let yml = format!("slow:\n  script:\n    - (exec -a {marker} sleep 300) &\n    - sleep 300\n  timeout: 2 seconds\n");
    let p = Project::new(&yml);
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.status("slow"), "failed", "{}", r.debug());
    assert!(r.finished("slow")[0]["reason"].as_str().unwrap_or("").contains("timeout"), "{}", r.debug());
    let ps = std::process::Command::new("pgrep").args(["-f", &marker]).output().unwrap();
    assert!(ps.stdout.is_empty(), "a background process survived the timeout: {}", String::from_utf8_lossy(&ps.stdout));
}

#[test]
fn running_named_jobs_runs_what_they_need_and_plays_manual_ones() {
    let p = Project::new(
        "stages: [build, test, deploy]\nbuild:\n  stage: build\n  script: [echo b]\nlint:\n  stage: test\n  script: [echo l]\ntest:\n  stage: test\n  needs: [build]\n  script: [echo t]\ndeploy:\n  stage: deploy\n  needs: [test]\n  when: manual\n  script: [echo d]\n",
    );
    let r = p.run(&["--executor", "shell", "test"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(r.status("build"), "success");
    assert_eq!(r.status("test"), "success");
    assert_eq!(r.status("lint"), "absent", "not needed by `test`");
    assert_eq!(r.status("deploy"), "absent");
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.status("deploy"), "manual", "a manual job waits unless named");
    let r = p.run(&["--executor", "shell", "deploy"]);
    assert_eq!(r.status("deploy"), "success", "{}", r.debug());
    let r = p.run(&["--executor", "shell", "deplyo"]);
    assert_eq!(r.code, Some(2), "{}", r.debug());
    assert!(r.stderr.contains("deploy"), "suggests the closest job: {}", r.stderr);
}

/// `piste run NAME` with the base name of a `parallel: N` or `parallel:matrix` job runs every
/// instance, manual ones played, as GitLab's `needs: [NAME]` means every instance.
#[test]
fn a_parallel_base_name_runs_every_instance() {
    let p = Project::new(
        "shard:\n  parallel: 2\n  script: [echo $CI_NODE_INDEX]\ndeploy:\n  when: manual\n  parallel:\n    matrix:\n      - REGION: [eu, us]\n  script: [echo $REGION]\nother:\n  script: [echo o]\n",
    );
    let r = p.run(&["--executor", "shell", "shard", "deploy"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    for job in ["shard 1/2", "shard 2/2", "deploy: [eu]", "deploy: [us]"] {
        assert_eq!(r.status(job), "success", "{job}: {}", r.debug());
    }
    assert_eq!(r.status("other"), "absent");
    assert!(r.log("deploy: [us]").iter().any(|l| l == "us"), "the instance sees its matrix value: {}", r.debug());
}

#[test]
fn invalid_pipelines_exit_2_and_run_nothing() {
    let p = Project::new("job:\n  scirpt: [echo]\n");
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(2), "{}", r.debug());
    assert!(r.stderr.contains(".gitlab-ci.yml:2:3: error:"), "{}", r.stderr);
    assert!(r.events.is_empty());
}

#[test]
fn matrix_jobs_run_with_their_variables() {
    let p = Project::new(
        "build:\n  parallel:\n    matrix:\n      - ARCH: [amd64, arm64]\n  script: [echo \"arch=$ARCH node=$CI_NODE_INDEX/$CI_NODE_TOTAL\"]\n",
    );
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(r.log("build: [amd64]").contains(&"arch=amd64 node=1/2".to_string()), "{:?}", r.log("build: [amd64]"));
    assert!(r.log("build: [arm64]").contains(&"arch=arm64 node=2/2".to_string()));
}

#[test]
fn text_output_has_prefixes_and_a_final_table() {
    let p = Project::new("hello:\n  script: [echo hi there]\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_piste"))
        .args(["run", "--executor", "shell"])
        .current_dir(p.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("hello │ hi there"), "{stdout}");
    assert!(stdout.contains("pipeline success"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("hello") && l.contains("success") && l.contains("1")), "{stdout}");
    assert!(!stdout.contains('\x1b'), "no colour of ours with NO_COLOR: {stdout:?}");
}

/// GitLab's `resource_group` (the key after variable expansion): jobs of one group never run
/// at the same time, even with free slots; a job of another group is not held.
#[test]
fn jobs_of_one_resource_group_run_one_at_a_time() {
    let yml = "variables:\n  TARGET: db\n\
               a:\n  resource_group: lock-$TARGET\n  script: [sleep 0.3]\n\
               b:\n  resource_group: lock-db\n  script: [sleep 0.3]\n\
               c:\n  resource_group: other\n  script: [sleep 0.3]\n";
    let p = Project::new(yml);
    let r = p.run(&["--executor", "shell", "--jobs", "4"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    let (a, b) = (("a", "b"), ("b", "a"));
    let first = if r.position("job_started", "a") < r.position("job_started", "b") { a } else { b };
    assert!(r.position("job_finished", first.0) < r.position("job_started", first.1), "one at a time: {}", r.debug());
    assert!(r.position("job_started", "c") < r.position("job_finished", first.0), "another group runs alongside: {}", r.debug());
}

/// GitLab's `workflow:auto_cancel:on_job_failure: all`: the first failure cancels the rest.
#[test]
fn on_job_failure_all_cancels_the_rest_locally() {
    let yml =
        "workflow:\n  auto_cancel:\n    on_job_failure: all\nbroken:\n  script: [exit 1]\nlater:\n  stage: test\n  script: [sleep 30]\n";
    let p = Project::new(yml);
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    assert_eq!(r.pipeline_status(), "failed");
    // `later` runs alongside and is stopped: one end reported, canceled.
    assert_eq!(r.finished("later").len(), 1, "{}", r.debug());
    assert_eq!(r.finished("later")[0]["status"], "canceled", "{}", r.debug());
}

/// GitLab: `when: manual` from `rules:` defaults `allow_failure` to false, so the manual job
/// blocks what comes after it and the pipeline is `manual` ("blocked"); `piste run` returns
/// with exit code 4 instead of waiting for a person. Job-level `when: manual` allows failure by
/// default: it does not block, and the pipeline passes without it.
#[test]
fn a_blocking_manual_job_returns_blocked_and_a_non_blocking_one_does_not() {
    let p = Project::new(
        "stages: [build, deploy, verify]\nbuild:\n  stage: build\n  script: [echo b]\ndeploy:\n  stage: deploy\n  script: [echo d]\n  rules:\n    - when: manual\nverify:\n  stage: verify\n  script: [echo v]\n",
    );
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(4), "{}", r.debug());
    assert_eq!(r.status("build"), "success");
    assert_eq!(r.status("deploy"), "manual");
    assert_eq!(r.status("verify"), "absent", "held by the blocking manual job: {}", r.debug());
    assert_eq!(r.pipeline_status(), "manual");
    let finished = r.events.iter().find(|e| e["event"] == "pipeline_finished").expect("pipeline_finished");
    assert_eq!(finished["blocked_by"], serde_json::json!(["deploy"]));
    // The text summary says what to do.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_piste"))
        .args(["run", "--executor", "shell"])
        .current_dir(p.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pipeline manual (blocked)") && text.contains("`piste run deploy`"), "{text}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_piste")).args(["run", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("4 blocked"), "the exit code is documented in `piste run --help`");

    let p = Project::new(
        "stages: [build, deploy, verify]\nbuild:\n  stage: build\n  script: [echo b]\ndeploy:\n  stage: deploy\n  script: [echo d]\n  when: manual\nverify:\n  stage: verify\n  script: [echo v]\n",
    );
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(r.status("deploy"), "manual");
    assert_eq!(r.status("verify"), "success", "a manual job that allows failure blocks nothing");
    assert_eq!(r.pipeline_status(), "success");
}

/// GitLab's `coverage:`: the last line of the log that matches gives the value (the first
/// number of its last capture); `piste run` reports it in `job_finished` and the summary.
#[test]
fn coverage_is_read_from_the_log_and_reported() {
    let p = Project::new(
        "unit:\n  coverage: '/^TOTAL.+ (\\d+(?:\\.\\d+)?%)$/'\n  script:\n    - echo 'TOTAL  120  12  42%'\n    - printf 'TOTAL  200  10  \\033[32m87.5%%\\033[0m\\n'\n    - echo 'noise 99%'\nplain:\n  script: [echo 'TOTAL 1 1 50%']\n",
    );
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(r.finished("unit")[0]["coverage"], 87.5, "the last matching line, colours removed");
    assert!(r.finished("plain")[0].get("coverage").is_none(), "no `coverage:`, no value");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_piste"))
        .args(["run", "--executor", "shell"])
        .current_dir(p.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("coverage 87.5%"), "{text}");
}
