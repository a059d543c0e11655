//! Rules GitLab applies that real pipelines rely on, each pinned by a test named after it.

use pipeline_spec::load::{LoadOptions, load};

use crate::{Trigger, diagnostics, load_main, load_with, names, plan_for, resolver};

#[test]
fn boolean_variable_values_are_the_strings_true_and_false() {
    // GitLab (omnibus-gitlab's `FF_TIMESTAMPS: true`) accepts booleans as variable values.
    let yml = "variables:\n  FF_TIMESTAMPS: true\nj:\n  script: [x]\n  variables:\n    OFF: false\n";
    let plan = plan_for(yml, &[], &Trigger::default());
    let loaded = load_main(yml);
    let p = loaded.pipeline.expect("pipeline");
    assert_eq!(p.variables[0].value, "true");
    assert_eq!(p.jobs["j"].variables[0].value, "false");
    assert_eq!(plan.jobs.len(), 1);
}

const MATRIX: &str = r#"
stages: [build, test]
build:
  stage: build
  script: [x]
  parallel:
    matrix:
      - ARCH: [a, b]
"#;

#[test]
fn needs_and_dependencies_may_name_one_matrix_instance() {
    // GitLab names instances `build: [b]` and accepts that name in `needs` and `dependencies`.
    let yml = format!("{MATRIX}one:\n  stage: test\n  script: [x]\n  needs: ['build: [b]']\n  dependencies: ['build: [b]']\n");
    let plan = plan_for(&yml, &[], &Trigger::default());
    let one = plan.jobs.iter().find(|j| j.name == "one").expect("one");
    let needs: Vec<&str> = one.needs.as_ref().expect("needs").iter().map(|n| n.job.as_str()).collect();
    assert_eq!(needs, ["build: [b]"]);
    assert_eq!(one.dependencies.as_deref(), Some(&["build: [b]".to_string()][..]));
}

#[test]
fn a_matrix_instance_that_does_not_exist_is_not_defined() {
    let yml = format!("{MATRIX}one:\n  stage: test\n  script: [x]\n  needs: ['build: [c]']\n");
    let d = diagnostics(&load_main(&yml));
    assert!(d.contains(".gitlab-ci.yml:12:11: error: job `one`, key `needs`: `needs` refers to `build: [c]`, which is not defined"), "{d}");
}

#[test]
fn nested_lists_in_needs_cache_and_services_are_flattened_one_level() {
    // GitLab flattens one level: `- *list_anchor` and `- !reference [.x, needs]` splice lists.
    let yml = r#"
.base:
  needs: [a]
.caches: &caches
  - key: one
    paths: [x]
  - key: two
    paths: [y]
.svcs: &svcs [postgres, redis]
a:
  stage: build
  script: [x]
b:
  stage: build
  script: [x]
c:
  stage: test
  script: [x]
  needs:
    - !reference [.base, needs]
    - b
  cache:
    - *caches
  services:
    - *svcs
    - name: minio
"#;
    let loaded = load_main(yml);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let p = loaded.pipeline.expect("pipeline");
    let c = &p.jobs["c"];
    let needs: Vec<&str> = c.needs.as_ref().expect("needs").iter().map(|n| n.job.as_str()).collect();
    assert_eq!(needs, ["a", "b"]);
    assert_eq!(c.cache.len(), 2);
    let services: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(services, ["postgres", "redis", "minio"]);
}

#[test]
fn dependencies_may_name_a_job_of_the_same_stage() {
    // GitLab: "dependency X is not defined in current or prior stages" — current is fine.
    let yml = "a:\n  stage: test\n  script: [x]\nb:\n  stage: test\n  script: [x]\n  dependencies: [a]\n";
    assert_eq!(names(yml, &Trigger::default()), ["a", "b"]);
    let later = "a:\n  stage: deploy\n  script: [x]\nb:\n  stage: test\n  script: [x]\n  dependencies: [a]\n";
    let d = diagnostics(&load_main(later));
    assert!(
        d.contains(":7:18: error: job `b`, key `dependencies`: `dependencies` refers to `a`, which is in the later stage `deploy`"),
        "{d}"
    );
}

#[test]
fn empty_except_excludes_nothing_and_empty_only_keeps_the_job_out() {
    // GitLab's `Refs` policy with no pattern is never satisfied: `except: []` never excludes
    // (knot's `build:archive`), `only: []` never includes.
    let yml = "a:\n  script: [x]\n  only: [main, tags]\n  except: []\nb:\n  script: [x]\n  only: []\n";
    assert_eq!(names(yml, &Trigger::default()), ["a"]);
}

#[test]
fn except_excludes_when_any_of_its_keys_matches() {
    // GitLab's `none_of_except?`: each key is its own condition (baserow's coverage job).
    let yml = "a:\n  script: [x]\n  except:\n    refs: [tags]\n    variables: [$CI_COMMIT_BRANCH == \"main\"]\nb:\n  script: [x]\n";
    assert_eq!(names(yml, &Trigger::default()), ["b"]);
    assert_eq!(names(yml, &Trigger::branch("dev")), ["a", "b"]);
    assert_eq!(names(yml, &Trigger::tag("v1")), ["b"]);
}

#[test]
fn the_needs_limit_is_an_option() {
    let mut yml = String::new();
    for i in 0..60 {
        yml.push_str(&format!("j{i}:\n  stage: build\n  script: [x]\n"));
    }
    let needs: Vec<String> = (0..60).map(|i| format!("j{i}")).collect();
    yml.push_str(&format!("last:\n  stage: test\n  script: [x]\n  needs: [{}]\n", needs.join(", ")));
    let opts = LoadOptions { max_needs: 60, ..LoadOptions::default() };
    let loaded = load(".gitlab-ci.yml", ".gitlab-ci.yml", &yml, &resolver(&[]), &opts);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
}

#[test]
fn errors_that_follow_from_an_unresolved_include_say_so() {
    let yml = r#"
include:
  - project: other/templates
    file: jobs.yml
j:
  stage: test
  script:
    - !reference [.setup, script]
    - make
  needs: [prepare]
"#;
    let loaded = load_with(yml, &[], &[]);
    let d = diagnostics(&loaded);
    let help = "help: an `include` above could not be resolved; it may define what is missing here";
    assert!(d.contains(&format!(":8:7: error: job `j`: `!reference` points at `.setup`, which is not defined\n  {help}")), "{d}");
    assert!(d.contains(&format!("`needs` refers to `prepare`, which is not defined\n  {help}")), "{d}");
    // The failed reference leaves no null behind: no "expected a string" for the same cause.
    assert!(!d.contains("found null"), "{d}");
}

#[test]
fn retry_when_accepts_every_gitlab_failure_reason() {
    for reason in pipeline_spec::parse::RETRY_WHEN {
        let yml = format!("j:\n  script: [x]\n  retry:\n    max: 2\n    when: [{reason}]\n");
        let loaded = load_main(&yml);
        assert!(!loaded.has_errors(), "{reason}: {}", diagnostics(&loaded));
        assert_eq!(loaded.pipeline.expect("pipeline").jobs["j"].retry.when, [reason.to_string()]);
    }
    let d = diagnostics(&load_main("j:\n  script: [x]\n  retry:\n    when: [runner_interupted]\n"));
    assert!(d.contains("unknown `retry:when` reason `runner_interupted`; did you mean `runner_interrupted`?"), "{d}");
}

#[test]
fn graph_json_is_valid_json_when_nothing_runs() {
    let yml = "workflow:\n  rules:\n    - if: $CI_COMMIT_TAG\nj:\n  script: [x]\n";
    let plan = plan_for(yml, &[], &Trigger::default());
    for text in [pipeline_spec::render::json(&plan), pipeline_spec::render::json_empty()] {
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v, serde_json::json!({"stages": [], "jobs": []}));
    }
}
