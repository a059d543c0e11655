//! Keywords the README marked "runs" under `piste run` without a run-time test, each pinned
//! end to end through the shell executor against the rule docs.gitlab.com (ci/yaml) states.

use crate::{Project, Run};

/// The lines `SAW …` a job printed, without the prefix.
fn saw(r: &Run, job: &str) -> Vec<String> {
    r.log(job).into_iter().filter_map(|l| l.strip_prefix("SAW ").map(str::to_owned)).collect()
}

/// GitLab: "Use `before_script` to define an array of commands that should run before each
/// job's `script` commands […] Scripts you specify in `before_script` are concatenated with any
/// scripts you specify in the main `script`. The combined scripts execute together in a single
/// shell." A failing `before_script` command therefore fails the job before `script` starts.
#[test]
fn before_script_runs_in_the_same_shell_before_script_and_its_failure_stops_the_job() {
    let p = Project::new(
        "exported:\n  before_script:\n    - export FROM_BEFORE=set-in-before\n    - cd sub\n  script:\n    - echo \"SAW var=$FROM_BEFORE dir=$(basename \"$PWD\")\"\nfailing:\n  before_script:\n    - echo BEFORE-RAN\n    - exit 3\n  script:\n    - echo SCRIPT-RAN\n",
    );
    p.write("sub/keep.txt", "x\n");
    p.commit();
    let r = p.run(&["--executor", "shell", "--no-reuse"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    assert_eq!(r.status("exported"), "success", "{}", r.debug());
    assert_eq!(saw(&r, "exported"), ["var=set-in-before dir=sub"], "same shell: exports and cwd carry over");
    assert_eq!(r.status("failing"), "failed");
    assert_eq!(r.finished("failing")[0]["exit_code"], 3);
    let log = r.log("failing");
    assert!(log.iter().any(|l| l == "BEFORE-RAN"), "{log:?}");
    assert!(!log.iter().any(|l| l == "SCRIPT-RAN"), "script ran after a failing before_script: {log:?}");
}

const HIT_OR_MISS: &str = "if [ -f vendor/lib ]; then echo SAW hit; else echo SAW miss; fi";

/// GitLab `cache:policy`: "`pull`: … only download the cache when the job starts, but never
/// upload changes when the job finishes. `push`: … only upload a cache when the job finishes,
/// but never download the cache when the job starts."
#[test]
fn cache_policy_pull_restores_without_saving_and_push_saves_without_restoring() {
    let p = Project::new(&format!(
        "pull_only:\n  cache:\n    key: pulled\n    paths: [vendor/]\n    policy: pull\n  script:\n    - {HIT_OR_MISS}\n    - mkdir -p vendor && echo x > vendor/lib\npush_only:\n  cache:\n    key: shared\n    paths: [vendor/]\n    policy: push\n  script:\n    - {HIT_OR_MISS}\n    - mkdir -p vendor && echo x > vendor/lib\npull_shared:\n  cache:\n    key: shared\n    paths: [vendor/]\n    policy: pull\n  script:\n    - {HIT_OR_MISS}\n"
    ));
    let run = |job: &str| {
        let r = p.run(&["--executor", "shell", "--no-reuse", job]);
        assert_eq!(r.code, Some(0), "{}", r.debug());
        saw(&r, job)
    };
    assert_eq!(run("pull_only"), ["miss"]);
    assert_eq!(run("pull_only"), ["miss"], "`policy: pull` saved its cache");
    assert_eq!(run("push_only"), ["miss"]);
    assert_eq!(run("push_only"), ["miss"], "`policy: push` restored a cache");
    assert_eq!(run("pull_shared"), ["hit"], "`policy: push` did not save, or `policy: pull` did not restore");
}

/// GitLab `cache:when`: "`on_success` (default): Save the cache only when the job succeeds.
/// `on_failure`: Save the cache only when the job fails. `always`: Always save the cache."
#[test]
fn cache_when_on_failure_saves_only_on_failure_always_on_both_and_on_success_by_default() {
    let mut yml = String::new();
    for (job, when, code) in [
        ("onfail_fails", Some("on_failure"), 1),
        ("onfail_passes", Some("on_failure"), 0),
        ("always_fails", Some("always"), 1),
        ("always_passes", Some("always"), 0),
        ("default_fails", None, 1),
        ("default_passes", None, 0),
    ] {
        let when = when.map(|w| format!("    when: {w}\n")).unwrap_or_default();
        yml.push_str(&format!(
            "{job}:\n  cache:\n    key: {job}\n    paths: [vendor/]\n{when}  script:\n    - {HIT_OR_MISS}\n    - mkdir -p vendor && echo x > vendor/lib\n    - exit {code}\n"
        ));
    }
    let p = Project::new(&yml);
    let first = p.run(&["--executor", "shell", "--no-reuse"]);
    assert_eq!(first.code, Some(1), "{}", first.debug());
    let second = p.run(&["--executor", "shell", "--no-reuse"]);
    for (job, saved) in [
        ("onfail_fails", true),
        ("onfail_passes", false),
        ("always_fails", true),
        ("always_passes", true),
        ("default_fails", false),
        ("default_passes", true),
    ] {
        assert_eq!(saw(&first, job), ["miss"], "{job}: {}", first.debug());
        assert_eq!(saw(&second, job), [if saved { "hit" } else { "miss" }], "{job}: {}", second.debug());
    }
}

/// GitLab `inherit:variables`: "`true` (default) or `false` to enable or disable the
/// inheritance of all default variables", or "a list of specific default variables to inherit".
#[test]
fn inherit_variables_false_drops_globals_and_a_list_keeps_only_those() {
    let p = Project::new(
        "variables:\n  A: global-a\n  B: global-b\nnone:\n  inherit:\n    variables: false\n  script:\n    - echo \"SAW a=${A:-unset} b=${B:-unset}\"\nsome:\n  inherit:\n    variables: [A]\n  script:\n    - echo \"SAW a=${A:-unset} b=${B:-unset}\"\nall:\n  script:\n    - echo \"SAW a=${A:-unset} b=${B:-unset}\"\n",
    );
    let r = p.run(&["--executor", "shell", "--no-reuse"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(saw(&r, "none"), ["a=unset b=unset"]);
    assert_eq!(saw(&r, "some"), ["a=global-a b=unset"]);
    assert_eq!(saw(&r, "all"), ["a=global-a b=global-b"]);
}

/// GitLab `rules:needs`: "Use `needs` in rules to update a job's `needs` for specific
/// conditions. When a condition matches a rule, the job's `needs` configuration is completely
/// replaced with the `needs` in the rule." Seen through artifacts: a job downloads the
/// artifacts of the jobs it needs only.
#[test]
fn rules_needs_replaces_the_jobs_needs_when_the_rule_matches() {
    let p = Project::new(
        "variables:\n  FLAG: \"yes\"\nstages: [build, test]\nfirst:\n  stage: build\n  script: [echo a > a.txt]\n  artifacts:\n    paths: [a.txt]\nsecond:\n  stage: build\n  script: [echo b > b.txt]\n  artifacts:\n    paths: [b.txt]\nmatched:\n  stage: test\n  needs: [first]\n  rules:\n    - if: $FLAG == \"yes\"\n      needs: [second]\n  script:\n    - echo \"SAW a=$(test -f a.txt && echo present || echo absent) b=$(test -f b.txt && echo present || echo absent)\"\nunmatched:\n  stage: test\n  needs: [first]\n  rules:\n    - if: $FLAG == \"no\"\n      needs: [second]\n    - when: on_success\n  script:\n    - echo \"SAW a=$(test -f a.txt && echo present || echo absent) b=$(test -f b.txt && echo present || echo absent)\"\n",
    );
    let r = p.run(&["--executor", "shell", "--no-reuse", "--jobs", "1"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(saw(&r, "matched"), ["a=absent b=present"], "the rule's needs replace the job's");
    assert_eq!(saw(&r, "unmatched"), ["a=present b=absent"], "without a matching rule the job's needs stay");
}

/// GitLab `when: delayed` / `start_in`: "Use `start_in` to specify the wait time before
/// starting the job. … the job starts after the time specified." Lower bound only: the job's
/// own clock reading is at least `start_in` after piste was started.
#[test]
fn when_delayed_start_in_waits_before_the_job_starts() {
    let p = Project::new("later:\n  when: delayed\n  start_in: 1 second\n  script:\n    - echo \"SAW $(date +%s%N)\"\n");
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let r = p.run(&["--executor", "shell", "--no-reuse"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(r.status("later"), "success");
    let at: u128 = saw(&r, "later").first().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no time: {}", r.debug()));
    assert!(at >= before + 1_000_000_000, "the delayed job started {} ms after piste", (at.saturating_sub(before)) / 1_000_000);
}

/// GitLab `workflow:rules`: "If no rules match, the pipeline is not created." Not an error:
/// `piste run` says nothing runs and exits 0, and no job starts.
#[test]
fn workflow_rules_that_create_no_pipeline_run_nothing_and_exit_0() {
    let p = Project::new("workflow:\n  rules:\n    - if: $NEVER == \"1\"\njob:\n  script:\n    - touch ran.txt\n");
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(r.stderr.contains("`workflow:rules` create no pipeline for this trigger: nothing to run"), "{}", r.debug());
    assert!(!r.events.iter().any(|e| e["event"] == "job_started" || e["event"] == "pipeline_started"), "{}", r.debug());
    assert!(!p.path().join("ran.txt").exists());
    let r = p.run(&["--executor", "shell", "--var", "NEVER=1"]);
    assert_eq!(r.status("job"), "success", "the same pipeline runs when a rule matches: {}", r.debug());
}

/// GitLab `retry:exit_codes`: "Use `retry:exit_codes` with `retry:max` to retry jobs for only
/// specific failure cases", "an array of exit codes of failed jobs".
#[test]
fn retry_exit_codes_retries_only_the_listed_codes() {
    let runs = tempfile::tempdir().unwrap();
    let p = Project::new(
        "killed:\n  script:\n    - echo ran >> \"$RUNS/$CI_JOB_NAME\"\n    - exit 137\n  retry:\n    max: 1\n    exit_codes: [137]\nplain:\n  script:\n    - echo ran >> \"$RUNS/$CI_JOB_NAME\"\n    - exit 1\n  retry:\n    max: 1\n    exit_codes: [137]\n",
    );
    let var = format!("RUNS={}", runs.path().display());
    let r = p.run(&["--executor", "shell", "--no-reuse", "--var", &var]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    let count = |job: &str| std::fs::read_to_string(runs.path().join(job)).map_or(0, |s| s.lines().count());
    let attempts =
        |job: &str| r.finished(job).iter().map(|e| (e["attempt"].as_i64().unwrap(), e["exit_code"].as_i64().unwrap())).collect::<Vec<_>>();
    assert_eq!(attempts("killed"), [(1, 137), (2, 137)], "{}", r.debug());
    assert_eq!(count("killed"), 2);
    assert_eq!(attempts("plain"), [(1, 1)], "exit code 1 is not listed: {}", r.debug());
    assert_eq!(count("plain"), 1);
}

/// GitLab `artifacts:when`: "`on_success` (default): Upload artifacts only when the job
/// succeeds. `on_failure`: Upload artifacts only when the job fails. `always`: Always upload
/// artifacts." Seen from later `when: on_failure` and `when: always` jobs.
#[test]
fn artifacts_when_decides_whether_a_jobs_artifacts_reach_later_jobs() {
    let mut yml = String::from("stages: [build, after]\n");
    let names = [
        ("default_fails", None, 1),
        ("onfail_fails", Some("on_failure"), 1),
        ("always_fails", Some("always"), 1),
        ("onfail_passes", Some("on_failure"), 0),
        ("always_passes", Some("always"), 0),
        ("default_passes", None, 0),
    ];
    for (job, when, code) in names {
        let when = when.map(|w| format!("    when: {w}\n")).unwrap_or_default();
        yml.push_str(&format!(
            "{job}:\n  stage: build\n  script:\n    - mkdir -p out && echo x > out/{job}.txt\n    - exit {code}\n  artifacts:\n    paths: [out/{job}.txt]\n{when}"
        ));
    }
    let check = names.iter().map(|(job, _, _)| format!("{job}=$(test -f out/{job}.txt && echo y || echo n)")).collect::<Vec<_>>().join(" ");
    for (job, when) in [("after_failure", "on_failure"), ("after_always", "always")] {
        yml.push_str(&format!("{job}:\n  stage: after\n  when: {when}\n  script:\n    - echo \"SAW {check}\"\n"));
    }
    let p = Project::new(&yml);
    let r = p.run(&["--executor", "shell", "--no-reuse", "--jobs", "2"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    let expected = "default_fails=n onfail_fails=y always_fails=y onfail_passes=n always_passes=y default_passes=y";
    for job in ["after_failure", "after_always"] {
        assert_eq!(r.status(job), "success", "{}", r.debug());
        assert_eq!(saw(&r, job), [expected], "{job}: {}", r.debug());
    }
}
