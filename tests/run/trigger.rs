//! Trigger jobs under `piste run` (GitLab's downstream pipelines, docs.gitlab.com
//! `ci/pipelines/downstream_pipelines` and `ci/yaml/#trigger`): child pipelines from files of
//! the commit and from artifacts, `strategy: depend`, `forward`, the depth limit, and
//! multi-project triggers with and without `--project-dir`.

use serde_json::Value;

use crate::{Project, Run};

/// The events of downstream pipeline jobs carry `pipeline_id` and `trigger` (the path of
/// trigger jobs from the top pipeline).
fn downstream<'a>(r: &'a Run, event: &str, job: &str) -> Vec<&'a Value> {
    r.events.iter().filter(|e| e["event"] == event && e["job"] == job && e.get("pipeline_id").is_some()).collect()
}

fn started_pipelines(r: &Run) -> Vec<(u64, String)> {
    r.events
        .iter()
        .filter(|e| e["event"] == "pipeline_started")
        .map(|e| (e["pipeline_id"].as_u64().unwrap_or(0), e["source"].as_str().unwrap_or("").to_string()))
        .collect()
}

const CHILD: &str = r#"unit:
  script:
    - echo "child source=$CI_PIPELINE_SOURCE from_parent=$FROM_PARENT global=$GLOBAL cli=$CLI branch=$CI_COMMIT_BRANCH"
push-only:
  script: [echo never]
  rules:
    - if: $CI_PIPELINE_SOURCE == "push"
"#;

/// GitLab: a child pipeline from `trigger:include` (string and list forms) runs the files of
/// the same commit with `CI_PIPELINE_SOURCE=parent_pipeline` and its own pipeline id; its
/// `rules` see that source; by default the trigger job's YAML variables (global ones too) pass
/// down and the pipeline's own variables (`--var`) do not; `forward:pipeline_variables: true`
/// passes them.
#[test]
fn child_pipeline_from_local_file_runs_with_parent_pipeline_source_and_forwarded_variables() {
    let p = Project::new(
        r#"variables:
  GLOBAL: g
stages: [build, deploy]
build:
  stage: build
  script: [echo built]
child-default:
  stage: deploy
  variables:
    FROM_PARENT: "p-$CI_COMMIT_BRANCH"
  trigger:
    include: ci/child.yml
child-forward:
  stage: deploy
  variables:
    FROM_PARENT: forwarded
  trigger:
    include:
      - local: ci/child2.yml
    forward:
      pipeline_variables: true
"#,
    );
    p.write("ci/child.yml", CHILD);
    p.write("ci/child2.yml", &CHILD.replace("unit:", "unit2:").replace("push-only:", "push-only2:"));
    p.commit();
    let r = p.run(&["--executor", "shell", "--var", "CLI=yes"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(r.status("child-default"), "success");
    let pipelines = started_pipelines(&r);
    assert_eq!(pipelines.len(), 3, "{pipelines:?}");
    assert_eq!(pipelines[0].1, "push");
    let ids: std::collections::HashSet<u64> = pipelines.iter().map(|p| p.0).collect();
    assert_eq!(ids.len(), 3, "each pipeline has its own id: {pipelines:?}");
    assert!(pipelines[1..].iter().all(|p| p.1 == "parent_pipeline"), "{pipelines:?}");
    let unit = downstream(&r, "log", "unit");
    assert!(unit.iter().any(|e| e["line"] == "child source=parent_pipeline from_parent=p-main global=g cli= branch=main"), "{}", r.debug());
    assert_eq!(unit[0]["trigger"], serde_json::json!(["child-default"]));
    assert!(
        downstream(&r, "log", "unit2")
            .iter()
            .any(|e| e["line"] == "child source=parent_pipeline from_parent=forwarded global=g cli=yes branch=main"),
        "{}",
        r.debug()
    );
    assert!(r.finished("push-only").is_empty(), "the child's rules see `parent_pipeline`: {}", r.debug());
    let child_id = downstream(&r, "job_finished", "unit")[0]["pipeline_id"].as_u64().unwrap();
    assert!(ids.contains(&child_id) && child_id != pipelines[0].0);
    // The text output shows the child's jobs under the trigger job and its summary.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_piste"))
        .args(["run", "--executor", "shell"])
        .current_dir(p.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("child-default ▸ unit"), "{text}");
    assert!(text.contains("↳ child pipeline #") && text.contains("of trigger job `child-default`: success"), "{text}");
}

/// GitLab (dynamic child pipelines): `trigger:include:artifact` + `job` reads the YAML an
/// earlier job produced as an artifact; a bad one fails the trigger job
/// (`downstream_pipeline_creation_failed`) with the loader's `file:line:col` in its log.
#[test]
fn dynamic_child_pipeline_from_an_artifact_and_a_bad_one_fails_the_trigger_job() {
    let pipeline = |generated: &str| {
        let body: String = generated.lines().map(|l| format!("      {l}\n")).collect();
        format!(
            "stages: [gen, run]\ngenerate:\n  stage: gen\n  script:\n    - |\n      cat > generated.yml <<'EOF'\n{body}      EOF\n  artifacts:\n    paths: [generated.yml]\nrun-generated:\n  stage: run\n  needs: [generate]\n  trigger:\n    include:\n      - artifact: generated.yml\n        job: generate\n"
        )
    };
    let good = Project::new(&pipeline("dyn-job:\n  script: [echo from-artifact]\n"));
    let r = good.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(downstream(&r, "log", "dyn-job").iter().any(|e| e["line"] == "from-artifact"), "{}", r.debug());

    let bad = Project::new(&pipeline("dyn-job:\n  scrpt: [echo x]\n"));
    let r = bad.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    assert_eq!(r.status("run-generated"), "failed");
    let log = r.log("run-generated").join("\n");
    assert!(log.contains("generated.yml:2:3") && log.contains("unknown key `scrpt`"), "{log}");
    let reason = r.finished("run-generated")[0]["reason"].as_str().unwrap_or("").to_string();
    assert!(reason.contains("invalid child configuration"), "{reason}");
}

/// GitLab: with `strategy: depend` the trigger job takes the downstream pipeline's status;
/// without it, it succeeds once the pipeline is created and the parent's status does not
/// depend on the child's.
#[test]
fn strategy_depend_takes_the_child_status_and_without_it_the_trigger_job_succeeds() {
    let child = "fails:\n  script: [exit 3]\n";
    let depend = Project::new("t:\n  trigger:\n    include: child.yml\n    strategy: depend\n");
    depend.write("child.yml", child);
    depend.commit();
    let r = depend.run(&["--executor", "shell"]);
    assert_eq!((r.code, r.status("t"), r.pipeline_status()), (Some(1), "failed".into(), "failed".into()), "{}", r.debug());
    assert_eq!(downstream(&r, "job_finished", "fails")[0]["status"], "failed");

    let plain = Project::new("t:\n  trigger:\n    include: child.yml\nafter:\n  stage: deploy\n  script: [echo after]\n");
    plain.write("child.yml", child);
    plain.commit();
    let r = plain.run(&["--executor", "shell"]);
    assert_eq!((r.code, r.status("t"), r.status("after")), (Some(0), "success".into(), "success".into()), "{}", r.debug());
    assert_eq!(downstream(&r, "job_finished", "fails")[0]["status"], "failed", "the child still ran to its end");
}

/// GitLab's `MAX_DESCENDANTS_DEPTH`: a child may trigger a child of its own; a third level
/// fails its trigger job with "reached the maximum depth of child pipelines".
#[test]
fn child_pipelines_nest_two_levels_and_the_third_fails_clearly() {
    let p = Project::new("level0:\n  trigger:\n    include: l1.yml\n    strategy: depend\n");
    p.write("l1.yml", "level1:\n  trigger:\n    include: l2.yml\n    strategy: depend\n");
    p.write("l2.yml", "level2:\n  trigger:\n    include: l3.yml\n    strategy: depend\nran-at-2:\n  script: [echo two]\n");
    p.write("l3.yml", "never:\n  script: [echo three]\n");
    p.commit();
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    let at2 = downstream(&r, "log", "ran-at-2");
    assert!(at2.iter().any(|e| e["line"] == "two"), "{}", r.debug());
    assert_eq!(at2[0]["trigger"], serde_json::json!(["level0", "level1"]));
    let level2 = downstream(&r, "job_finished", "level2");
    assert_eq!(level2[0]["status"], "failed");
    assert!(level2[0]["reason"].as_str().unwrap_or("").contains("reached the maximum depth of child pipelines (2)"), "{}", r.debug());
    assert!(r.finished("never").is_empty());
}

/// A multi-project trigger is not run locally unless `--project-dir` names the project (then
/// it runs from that clone with `CI_PIPELINE_SOURCE=pipeline` and `trigger:branch`); the
/// trigger job succeeds either way without a downstream status to take.
#[test]
fn multi_project_trigger_runs_from_project_dir_or_is_reported_not_run_locally() {
    let yml = "deploy:\n  variables:\n    FROM_UP: up\n  trigger:\n    project: group/other\n    branch: release\n    strategy: depend\n";
    let p = Project::new(yml);
    let r = p.run(&["--executor", "shell"]);
    assert_eq!((r.code, r.status("deploy")), (Some(0), "success".into()), "{}", r.debug());
    assert!(r.log("deploy").iter().any(|l| l.contains("not run locally") && l.contains("--project-dir group/other=DIR")), "{}", r.debug());

    let other =
        Project::new("other-job:\n  script:\n    - echo \"other source=$CI_PIPELINE_SOURCE branch=$CI_COMMIT_BRANCH up=$FROM_UP\"\n");
    let dir = format!("group/other={}", other.path().display());
    let r = p.run(&["--executor", "shell", "--project-dir", &dir]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(downstream(&r, "log", "other-job").iter().any(|e| e["line"] == "other source=pipeline branch=release up=up"), "{}", r.debug());
    assert!(other.path().join(".piste/pipelines").is_dir(), "the other project's run is kept in its own `.piste/`");
}

/// GitLab's `needs:pipeline:job` (docs: "Use `needs:pipeline:job` to fetch artifacts from an
/// upstream pipeline"; `Ci::BuildDependencies#cross_pipeline`): a child job receives the
/// artifacts and dotenv variables of a job of its parent, the pipeline id passed down as
/// `PARENT_PIPELINE_ID: $CI_PIPELINE_ID`. The current pipeline's id, or an id that is not
/// above it, gives no dependency, and the job fails `missing_dependency_failure` without
/// running ("could not retrieve the needed artifacts").
#[test]
fn needs_pipeline_job_fetches_the_parent_jobs_artifacts_and_dotenv_in_a_child() {
    let parent = |child_need: &str| {
        format!(
            r#"stages: [build, child]
build:
  stage: build
  script:
    - mkdir -p out && echo from-parent > out/file.txt
    - echo BUILD_VERSION=1.2.3 > build.env
  artifacts:
    paths: [out/]
    reports:
      dotenv: build.env
child:
  stage: child
  variables:
    PARENT_PIPELINE_ID: $CI_PIPELINE_ID
  trigger:
    include: child.yml
    strategy: depend
# {child_need}
"#
        )
    };
    let child = |pipeline: &str| {
        format!(
            "use:\n  needs:\n    - pipeline: {pipeline}\n      job: build\n  script:\n    - echo \"got=$(cat out/file.txt) version=$BUILD_VERSION\"\n"
        )
    };
    let good = Project::new(&parent("good"));
    good.write("child.yml", &child("$PARENT_PIPELINE_ID"));
    good.commit();
    let r = good.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(downstream(&r, "log", "use").iter().any(|e| e["line"] == "got=from-parent version=1.2.3"), "{}", r.debug());

    let own = Project::new(&parent("own id"));
    own.write("child.yml", &child("$CI_PIPELINE_ID"));
    own.commit();
    let r = own.run(&["--executor", "shell"]);
    assert_eq!((r.code, r.status("child")), (Some(1), "failed".into()), "{}", r.debug());
    let used = downstream(&r, "job_finished", "use");
    let reason = used[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("could not retrieve the needed artifacts") && reason.contains("is this pipeline"), "{}", r.debug());
    assert!(downstream(&r, "log", "use").is_empty(), "the script never ran: {}", r.debug());

    // A top pipeline has no parent: `$PARENT_PIPELINE_ID` is unset.
    let top = Project::new("use:\n  needs:\n    - pipeline: $PARENT_PIPELINE_ID\n      job: build\n  script: [echo never]\n");
    let r = top.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    let reason = r.finished("use")[0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("expands to nothing") && reason.contains("PARENT_PIPELINE_ID: $CI_PIPELINE_ID"), "{reason}");
}

/// `needs:project` fetches from another project's pipelines, which `piste run` does not have:
/// the job runs without those artifacts and its log says so and what to do.
#[test]
fn needs_project_is_reported_in_the_job_log_under_piste_run() {
    let p = Project::new("use:\n  needs:\n    - project: group/lib\n      job: package\n      ref: main\n  script: [echo ran]\n");
    let r = p.run(&["--executor", "shell"]);
    assert_eq!((r.code, r.status("use")), (Some(0), "success".into()), "{}", r.debug());
    let log = r.log("use").join("\n");
    assert!(log.contains("`needs:project` `group/lib` (job `package`, ref `main`) is not fetched by `piste run`"), "{log}");
    assert!(log.contains("piste server"), "{log}");
}
