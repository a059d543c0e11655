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

/// Asserts that `yml` fails to load with `needle` at `line:col`, and with nothing else.
#[track_caller]
fn rejected(yml: &str, line: u32, col: u32, needle: &str) {
    let loaded = load_main(yml);
    let errors: Vec<String> = loaded.errors().map(|d| d.display(&loaded.sources).to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with(&format!(".gitlab-ci.yml:{line}:{col}: error: ")) && errors[0].contains(needle), "{errors:?}");
}

#[test]
fn gitlab_rejects_a_blank_script() {
    // GitLab: "jobs:j script can't be blank".
    rejected("j:\n  script: []\n", 2, 11, "`script` is empty");
    rejected("j:\n  script: ''\n", 2, 11, "`script` is empty");
    rejected("j:\n  script: [[], []]\n", 2, 11, "`script` is empty");
}

#[test]
fn gitlab_rejects_when_never_outside_rules() {
    // GitLab's job entry: "when should be one of: on_success, on_failure, always, manual, delayed".
    rejected("j:\n  script: [x]\n  when: never\n", 3, 9, "`when: never` is only valid inside `rules`");
}

#[test]
fn gitlab_wants_lists_for_cache_paths_and_stages() {
    // `array_of_strings` validators: "cache:paths config should be an array of strings".
    rejected("j:\n  script: [x]\n  cache:\n    paths: vendor\n", 4, 12, "expected a list of strings, found a string");
    rejected("stages: build\nj:\n  stage: build\n  script: [x]\n", 1, 9, "write it as a list: `[build]`");
}

#[test]
fn gitlab_limits_script_nesting_to_ten_levels() {
    // `nested_array_of_strings(max_level: 10)`.
    let ok = format!("j:\n  script: {}x{}\n", "[".repeat(10), "]".repeat(10));
    assert!(!load_main(&ok).has_errors(), "{}", diagnostics(&load_main(&ok)));
    let deep = format!("j:\n  script: {}x{}\n", "[".repeat(12), "]".repeat(12));
    rejected(&deep, 2, 22, "script lists are nested more than 10 levels deep");
}

#[test]
fn gitlab_wants_strings_in_reports() {
    // `array_of_strings_or_string` for `artifacts:reports:junit`.
    rejected("j:\n  script: [x]\n  artifacts:\n    reports:\n      junit: 3\n", 5, 14, "expected a path (a string), found an integer `3`");
    rejected("j:\n  script: [x]\n  artifacts:\n    reports:\n      junit: [{a: 1}]\n", 5, 15, "expected a path (a string), found a map");
    rejected(
        "j:\n  script: [x]\n  artifacts:\n    reports:\n      junit: {path: a.xml}\n",
        5,
        14,
        "expected a path (a string), found a map",
    );
    // Only `coverage_report` is a map (`path` and `coverage_format`).
    let ok =
        "j:\n  script: [x]\n  artifacts:\n    reports:\n      coverage_report:\n        coverage_format: cobertura\n        path: c.xml\n";
    assert!(!load_main(ok).has_errors(), "{}", diagnostics(&load_main(ok)));
}

#[test]
fn gitlab_rejects_an_empty_rules_list() {
    // `Entry::Rules` validates presence: "rules config can't be blank".
    rejected("j:\n  script: [x]\n  rules: []\n", 3, 10, "`rules` is empty");
}
