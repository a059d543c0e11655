//! The `piste` binary, end to end: exit codes, output formats, file discovery, includes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn piste(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_piste"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("PISTE_LOG")
        .output()
        .expect("run piste")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

#[test]
fn lint_valid_exits_0_and_says_what_it_planned() {
    let out = piste(&repo(), &["lint", "-f", "fixtures/demo/.gitlab-ci.yml", "--branch", "main"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok: `fixtures/demo/.gitlab-ci.yml` is valid: 5 jobs in 4 stages for branch `main` (push)\n");
}

#[test]
fn lint_invalid_exits_1_with_every_error_located() {
    let out = piste(&repo(), &["lint", "-f", "fixtures/lint/broken.gitlab-ci.yml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(
        lines,
        [
            "fixtures/lint/broken.gitlab-ci.yml:4:10: error: job `build`, key `stage`: stage `buld` is not declared in `stages`; did you mean `build`?",
            "fixtures/lint/broken.gitlab-ci.yml:5:3: error: job `build`, key `scirpt`: unknown key `scirpt`; did you mean `script`?",
            "fixtures/lint/broken.gitlab-ci.yml:9:11: error: job `test`, key `needs`: `needs` refers to `biuld`, which is not defined; did you mean `build`?",
        ]
    );
    assert!(err.ends_with("`fixtures/lint/broken.gitlab-ci.yml`: 3 errors\n"), "{err}");
    assert!(!err.contains('\x1b'), "no colour with NO_COLOR or off a terminal");
}

/// A Cloud Pi Native pipeline moved over to `fixtures/catalog/piste.yml` (its `extends:` line
/// changed) is valid and plans its image job as built-in steps; a job naming both kinds of
/// destinations is an error at its line.
#[test]
fn the_catalog_template_takes_the_kaniko_templates_variables() {
    let out = piste(&repo(), &["lint", "-f", "fixtures/catalog/moved.gitlab-ci-dso.yml", "--branch", "main"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = piste(&repo(), &["graph", "-f", "fixtures/catalog/moved.gitlab-ci-dso.yml", "--branch", "main", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["jobs"].as_array().unwrap().iter().filter_map(|j| j["name"].as_str()).collect();
    assert_eq!(names, ["inject_vars", "build_push"]);
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        ".gitlab-ci.yml",
        "build:\n  run:\n    - name: image\n      step: piste/image-build@v1\n      inputs:\n        names: web:1\n        destinations: [r/web:1]\n",
    );
    let out = piste(tmp.path(), &["lint", "--branch", "main"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(".gitlab-ci.yml:5:7: error: job `build`, key `run:image:inputs`: `piste/image-build@v1` takes exactly one of destinations, names: destinations and names are given"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn lint_checks_run_steps_against_the_built_in_catalogue() {
    let out = piste(&repo(), &["lint", "-f", "fixtures/lint/steps.gitlab-ci.yml", "--branch", "main"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(
        lines,
        [
            "fixtures/lint/steps.gitlab-ci.yml:5:13: error: job `deploy`, key `run:image:step`: unknown built-in step `piste/image-bild@v1`; did you mean `piste/image-build@v1`?",
            "fixtures/lint/steps.gitlab-ci.yml:8:7: error: job `deploy`, key `run:deploy:inputs`: `piste/gitops-bump@v1` needs the input `file`: the file to change, relative to the repository's root",
            "fixtures/lint/steps.gitlab-ci.yml:8:7: error: job `deploy`, key `run:deploy:inputs`: `piste/gitops-bump@v1` needs the input `value`: the new value (for kustomize and Flux, an image reference, a tag or a digest)",
            "fixtures/lint/steps.gitlab-ci.yml:11:9: error: job `deploy`, key `run:deploy:inputs`: `piste/gitops-bump@v1` has no input `valeu`; did you mean `value`?",
            "fixtures/lint/steps.gitlab-ci.yml:14:3: error: job `both`, key `run`: a job has `script` or `run`, not both",
        ],
        "{err}"
    );
    assert!(err.contains("built-in steps: piste/gitops-bump@v1"), "the known steps are listed: {err}");
    assert!(err.contains("its inputs: repo, branch, file, key"), "the known inputs are listed: {err}");
    let ok = piste(&repo(), &["lint", "-f", "fixtures/delivery/.gitlab-ci.yml", "--branch", "main"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
}

#[test]
fn usage_errors_and_missing_files_exit_2() {
    let out = piste(&repo(), &["lint", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let tmp = tempfile::tempdir().unwrap();
    let out = piste(tmp.path(), &["lint"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no pipeline file: looked for `.gitlab-ci.yml` and `.gitlab-ci-dso.yml`"), "{}", text(&out.stderr));
    let out = piste(tmp.path(), &["lint", "-f", "nope.yml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read"), "{}", text(&out.stderr));
    let out = piste(tmp.path(), &["lint", "--var", "NOEQUALS"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn default_file_falls_back_to_the_dso_file() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), ".gitlab-ci-dso.yml", "job:\n  script: [x]\n");
    let out = piste(tmp.path(), &["lint"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("`.gitlab-ci-dso.yml` is valid: 1 job in 1 stage"), "{}", text(&out.stdout));
}

#[test]
fn include_project_resolves_through_project_dir() {
    let corpus = repo().join("fixtures/corpus");
    let out = piste(
        &corpus.join("cpin"),
        &[
            "lint",
            "-f",
            "cloud-pi-native__tuto-java.gitlab-ci-dso.yml",
            "--var",
            "CATALOG_PATH=cloud-pi-native/gitlab-ci-catalog",
            "--project-dir",
            "cloud-pi-native/gitlab-ci-catalog=../cpin-catalog",
            "--source",
            "web",
            // The plan is for `main` whatever branch this checkout is on.
            "--branch",
            "main",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("is valid: 4 jobs in 3 stages for branch `main` (web), 4 files read"), "{}", text(&out.stdout));
    let out = piste(
        &corpus.join("cpin"),
        &["lint", "-f", "cloud-pi-native__tuto-java.gitlab-ci-dso.yml", "--var", "CATALOG_PATH=cloud-pi-native/gitlab-ci-catalog"],
    );
    // Without the catalog's directory the pipeline cannot be checked: exit 3, not "invalid".
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("map the project to a directory with `--project-dir cloud-pi-native/gitlab-ci-catalog=DIR`"),
        "{}",
        text(&out.stderr)
    );
}

/// Exit 3, "could not check": includes that cannot be read here are listed with their
/// position and what they are, and an error that may only come from them (a template the
/// missing file would define) is not counted as one.
#[test]
fn lint_unavailable_includes_exit_3_and_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        ".gitlab-ci.yml",
        "include:\n  - template: Jobs/SAST.gitlab-ci.yml\n  - remote: https://example.test/ci.yml\njob:\n  extends: .remote-template\n",
    );
    let out = piste(tmp.path(), &["lint", "--branch", "main"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let listed: Vec<&str> = err.lines().filter(|l| l.contains(": unavailable: ")).collect();
    assert_eq!(
        listed,
        [
            ".gitlab-ci.yml:2:5: unavailable: key `include:template`: cannot resolve `include:template` `Jobs/SAST.gitlab-ci.yml`: GitLab's templates are not available here: point `--templates-dir` at a folder of them",
            ".gitlab-ci.yml:3:5: unavailable: key `include:remote`: cannot resolve `include:remote` `https://example.test/ci.yml`: remote includes are fetched only with `--allow-remote`",
        ]
    );
    assert!(err.contains(".gitlab-ci.yml:5:12: unchecked: job `job`, key `extends`: "), "{err}");
    assert!(!err.contains(": error: "), "{err}");
    assert!(err.contains("`.gitlab-ci.yml`: could not check: 2 includes unavailable; 1 error above may only follow from them"), "{err}");

    let out = piste(tmp.path(), &["lint", "--branch", "main", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["valid"].clone(), v["checked"].clone(), v["errors"].clone(), v["unavailable"].clone()),
        (false.into(), false.into(), 0.into(), 2.into())
    );
    assert_eq!(v["diagnostics"][0]["kind"], "unavailable");
    assert_eq!(v["diagnostics"][2]["kind"], "follows_from_unavailable");
}

/// `graph` and `jobs` cannot show a plan that misses the jobs of unreadable includes: exit 3
/// with the same listing as `lint`, and nothing on stdout; an invalid file stays exit 1.
#[test]
fn graph_and_jobs_exit_3_when_includes_are_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), ".gitlab-ci.yml", "include:\n  - remote: https://example.test/ci.yml\njob:\n  script: [x]\n");
    for args in [&["graph", "--branch", "main"][..], &["graph", "--branch", "main", "--format", "json"], &["jobs", "--branch", "main"]] {
        let out = piste(tmp.path(), args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains(".gitlab-ci.yml:2:5: unavailable: key `include:remote`"), "{err}");
        assert!(err.contains("`.gitlab-ci.yml`: could not plan: 1 include unavailable here"), "{err}");
    }
    write(tmp.path(), ".gitlab-ci.yml", "include:\n  - remote: https://example.test/ci.yml\njob:\n  script: [x]\n  when: sometimes\n");
    let out = piste(tmp.path(), &["jobs", "--branch", "main"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

/// An invalid pipeline stays exit 1 even when some includes are also unavailable: a local file
/// missing from the project is an error (GitLab: "Local file `x` does not exist!").
#[test]
fn lint_invalid_wins_over_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), ".gitlab-ci.yml", "include:\n  - template: Jobs/SAST.gitlab-ci.yml\n  - local: missing.yml\njob:\n  script: [x]\n");
    let out = piste(tmp.path(), &["lint", "--branch", "main"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(".gitlab-ci.yml:3:5: error: key `include`: cannot resolve include of local file `missing.yml`: file not found"),
        "{err}"
    );
    assert!(err.contains("`.gitlab-ci.yml`: 1 error; 1 include unavailable"), "{err}");
}

#[test]
fn graph_json_has_the_documented_shape() {
    let out = piste(&repo(), &["graph", "-f", "fixtures/demo/.gitlab-ci.yml", "--branch", "main", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stages"], serde_json::json!(["build", "scan", "test", "package"]));
    assert_eq!(
        v["jobs"][0],
        serde_json::json!({"name": "build", "stage": "build", "needs": null, "when": "on_success", "allow_failure": false})
    );
    assert_eq!(
        v["jobs"][2],
        serde_json::json!({"name": "unit-tests", "stage": "test", "needs": ["build"], "when": "on_success", "allow_failure": false})
    );
    assert_eq!(v["jobs"][3]["allow_failure"], true);
    assert_eq!(v["jobs"][1]["needs"], serde_json::json!([]));
}

#[test]
fn graph_dot_and_mermaid_draw_needs_and_stage_edges() {
    let dot = text(&piste(&repo(), &["graph", "-f", "fixtures/demo/.gitlab-ci.yml", "--branch", "main", "--format", "dot"]).stdout);
    assert!(dot.starts_with("digraph pipeline {"), "{dot}");
    assert!(dot.contains("j0 -> j2;"), "needs edge build → unit-tests:\n{dot}");
    assert!(dot.contains("j2 -> j4;") && dot.contains("j3 -> j4;"), "stage edges into package:\n{dot}");
    let mm = text(&piste(&repo(), &["graph", "-f", "fixtures/demo/.gitlab-ci.yml", "--branch", "main", "--format", "mermaid"]).stdout);
    assert!(mm.starts_with("flowchart LR\n") && mm.contains("j0 --> j2"), "{mm}");
}

#[test]
fn jobs_table_depends_on_the_trigger() {
    let out = piste(&repo(), &["jobs", "-f", "fixtures/demo/.gitlab-ci.yml", "--branch", "feature"]);
    assert_eq!(
        text(&out.stdout),
        "name         stage  when        allow_failure  needs\n\
         build        build  on_success  false\n\
         secret-scan  scan   on_success  false          []\n\
         unit-tests   test   on_success  false          [build]\n\
         lint-docs    test   on_success  true           []\n"
    );
}

#[test]
fn lint_json_lists_diagnostics() {
    let out = piste(&repo(), &["lint", "-f", "fixtures/lint/broken.gitlab-ci.yml", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"], 3);
    assert_eq!(v["diagnostics"][1]["line"], 5);
    assert_eq!(v["diagnostics"][1]["suggestion"], "script");
    assert_eq!(v["diagnostics"][1]["job"], "build");
    assert_eq!(v["diagnostics"][1]["kind"], "invalid");
    assert_eq!(v["diagnostics"][1]["related"], serde_json::json!([]), "written in the job itself: no note");
}

/// An error in an anchor's text keeps its position and names, as a note, the job key using it.
#[test]
fn lint_notes_the_job_that_uses_an_anchor() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), ".gitlab-ci.yml", ".rules: &rules\n  - when: sometimes\njob:\n  script: [x]\n  rules: *rules\n");
    let out = piste(tmp.path(), &["lint", "--branch", "main"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(".gitlab-ci.yml:2:11: error: job `job`, key `rules:when`: unknown `when` value `sometimes`"), "{err}");
    assert!(err.contains("\n  note: .gitlab-ci.yml:5:3: job `job` uses it here, through an anchor or a `!reference`"), "{err}");
    let out = piste(tmp.path(), &["lint", "--branch", "main", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["diagnostics"][0]["related"][0]["line"], 5);
}

#[test]
fn workflow_rules_that_create_no_pipeline_are_not_errors() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), ".gitlab-ci.yml", "workflow:\n  rules:\n    - if: $CI_COMMIT_TAG\njob:\n  script: [x]\n");
    let out = piste(tmp.path(), &["lint", "--branch", "dev"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("`workflow:rules` create no pipeline for branch `dev` (push)"), "{}", text(&out.stdout));
}

/// `graph --format json` prints a JSON document even when `workflow:rules` create no pipeline.
#[test]
fn graph_json_is_a_document_when_nothing_runs() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), ".gitlab-ci.yml", "workflow:\n  rules:\n    - if: $CI_COMMIT_TAG\nbuild:\n  script: [make]\n");
    let out = piste(tmp.path(), &["graph", "--branch", "main", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON on stdout");
    assert_eq!(v, serde_json::json!({"stages": [], "jobs": []}));
}

/// GitLab's `ci_max_needs` instance limit (50) is a setting: `--max-needs` raises it.
#[test]
fn max_needs_is_a_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let mut yaml = String::new();
    let names: Vec<String> = (0..51).map(|i| format!("b{i}")).collect();
    for n in &names {
        yaml.push_str(&format!("{n}:\n  script: [make]\n"));
    }
    yaml.push_str(&format!("all:\n  needs: [{}]\n  script: [make]\n", names.join(", ")));
    write(tmp.path(), ".gitlab-ci.yml", &yaml);
    let out = piste(tmp.path(), &["lint", "--branch", "main"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--max-needs"), "the error says how to raise the limit: {}", text(&out.stderr));
    let out = piste(tmp.path(), &["lint", "--branch", "main", "--max-needs", "60"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.test", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// GitLab (ci/jobs/job_rules "rules:changes", merge request pipelines): a merge request
/// pipeline's changes are the diff from the merge base with the target branch to the source
/// head, not the pushed range nor the diff with the target's head; `compare_to` compares with
/// the merge base of the ref it names; `CI_MERGE_REQUEST_DIFF_BASE_SHA` is that merge base.
#[test]
fn target_branch_compares_changes_with_the_merge_base() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let yml = "docs:\n  rules:\n    - changes: [docs/**]\n  script: [echo docs]\n\
               app:\n  rules:\n    - changes: [src/**]\n  script: [echo app]\n\
               base:\n  rules:\n    - if: $CI_MERGE_REQUEST_DIFF_BASE_SHA == $BASE && $CI_PIPELINE_SOURCE == \"merge_request_event\"\n  script: [echo base]\n\
               since-main:\n  rules:\n    - changes:\n        paths: [src/**]\n        compare_to: main\n  script: [echo src]\n";
    write(d, ".gitlab-ci.yml", yml);
    write(d, "README", "x\n");
    git_in(d, &["init", "-q"]);
    git_in(d, &["add", "-A"]);
    git_in(d, &["commit", "-qm", "base"]);
    let branch_point = git_in(d, &["rev-parse", "HEAD"]);
    git_in(d, &["checkout", "-qb", "feature"]);
    write(d, "src/main.rs", "fn main() {}\n");
    git_in(d, &["add", "-A"]);
    git_in(d, &["commit", "-qm", "feature"]);
    git_in(d, &["checkout", "-q", "main"]);
    write(d, "docs/guide.md", "guide\n");
    git_in(d, &["add", "-A"]);
    git_in(d, &["commit", "-qm", "docs on main"]);
    git_in(d, &["checkout", "-q", "feature"]);

    let names = |args: &[&str]| -> Vec<String> {
        let out = piste(d, &[&["graph", "--format", "json"], args].concat());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap().to_owned()).collect()
    };
    let base = format!("BASE={branch_point}");
    // Against main's head the diff would hold docs/ (main moved after the branch point); against
    // the merge base it is src/ only.
    assert_eq!(names(&["--target-branch", "main", "--var", &base]), ["app", "base", "since-main"]);
    // `--changed` overrides the computed changes; `compare_to` computes its own.
    assert_eq!(names(&["--target-branch", "main", "--var", &base, "--changed", "docs/x.md"]), ["docs", "base", "since-main"]);
    // A branch pipeline: `compare_to: main` still compares with the merge base (src/ changed),
    // whatever the push changed.
    assert_eq!(names(&["--var", &base, "--changed", "README"]), ["since-main"]);
    // GitLab: "rules:changes:compare_to is not a valid ref" fails the pipeline.
    write(d, ".gitlab-ci.yml", &yml.replace("compare_to: main", "compare_to: nowhere"));
    let out = piste(d, &["lint"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("`rules:changes:compare_to` `nowhere` is not a valid ref"), "{all}");
    write(d, ".gitlab-ci.yml", yml);
    let out = piste(d, &["graph", "--target-branch", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("`--target-branch nope`: no branch"), "{}", text(&out.stderr));
}
