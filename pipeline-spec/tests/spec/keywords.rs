//! Each job keyword's accepted forms and its errors.

use pipeline_spec::model::{AllowFailure, ArtifactsWhen, CacheKey, CachePolicy, Parallel, When};

use crate::{assert_error, diagnostics, load_main};

fn job(yml: &str) -> pipeline_spec::model::Job {
    let loaded = load_main(yml);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    loaded.pipeline.unwrap().jobs.into_values().next().expect("a job")
}

#[test]
fn image_services_and_entrypoints() {
    let j = job(
        "j:\n  image:\n    name: gcr.io/kaniko-project/executor:debug\n    entrypoint: [\"\"]\n    pull_policy: [if-not-present]\n  services:\n    - postgres:16\n    - name: redis:7\n      alias: cache\n  script: [x]\n",
    );
    let img = j.image.unwrap();
    assert_eq!(img.entrypoint, Some(vec![String::new()]));
    assert_eq!(img.pull_policy, ["if-not-present"]);
    assert_eq!(j.services[1].alias.as_deref(), Some("cache"));
}

#[test]
fn variables_plain_and_described() {
    let j = job(
        "j:\n  script: [x]\n  variables:\n    PLAIN: a\n    NUM: 42\n    DESCRIBED:\n      value: blue\n      description: colour\n      options: [blue, red]\n    RAW:\n      value: $NOT_EXPANDED\n      expand: false\n",
    );
    let v: Vec<(&str, &str, bool)> = j.variables.iter().map(|v| (v.name.as_str(), v.value.as_str(), v.expand)).collect();
    assert_eq!(v, [("PLAIN", "a", true), ("NUM", "42", true), ("DESCRIBED", "blue", true), ("RAW", "$NOT_EXPANDED", false)]);
}

#[test]
fn yaml_1_1_numbers_in_variables_warn_and_booleans_become_strings() {
    let loaded = load_main("variables:\n  VERSION: 1.10\n  MODE: 0755\n  FLAG: yes\nj:\n  script: [x]\n");
    let d = diagnostics(&loaded);
    assert!(d.contains(".gitlab-ci.yml:2:12: warning: key `variables`: variable `VERSION` is read as the number `1.1`, not `1.10`"), "{d}");
    assert!(d.contains("variable `MODE` is read as the number `493`, not `0755`"), "{d}");
    // GitLab accepts boolean values and stores Ruby's `to_s`: `yes` (YAML 1.1) is "true".
    assert!(!loaded.has_errors(), "{d}");
    let vars = &loaded.pipeline.as_ref().expect("pipeline").variables;
    assert_eq!(vars.iter().find(|v| v.name == "FLAG").map(|v| v.value.as_str()), Some("true"));
}

#[test]
fn allow_failure_retry_timeout_forms() {
    let j = job(
        "j:\n  script: [x]\n  allow_failure:\n    exit_codes: [137, 255]\n  retry:\n    max: 2\n    when: [runner_system_failure, stuck_or_timeout_failure]\n  timeout: 1h 30m\n",
    );
    assert_eq!(j.allow_failure, Some(AllowFailure::ExitCodes(vec![137, 255])));
    assert_eq!(j.retry.max, 2);
    assert_eq!(j.retry.when, ["runner_system_failure", "stuck_or_timeout_failure"]);
    assert_eq!(j.timeout, Some(5400));
    let j = job("j:\n  script: [x]\n  allow_failure:\n    exit_codes: 1\n  retry: 1\n");
    assert_eq!(j.allow_failure, Some(AllowFailure::ExitCodes(vec![1])));
    assert_eq!(j.retry.max, 1);
}

#[test]
fn bad_retry_and_timeout_values() {
    let loaded = load_main("j:\n  script: [x]\n  retry: 5\n  timeout: soon\n  when: on_sucess\n");
    assert_error(&loaded, 3, 10, "`retry` is 5; GitLab allows 0, 1 or 2 retries");
    assert_error(&loaded, 4, 12, "`soon` is not a duration");
    assert_error(
        &loaded,
        5,
        9,
        "unknown `when` value `on_sucess`; expected one of on_success, on_failure, always, manual, delayed, never; did you mean `on_success`?",
    );
}

#[test]
fn artifacts_with_reports() {
    let j = job(
        "j:\n  script: [x]\n  artifacts:\n    name: \"$CI_JOB_NAME\"\n    paths: [dist/, \"*.log\"]\n    exclude: [dist/**/*.map]\n    when: always\n    expire_in: 1 week\n    untracked: false\n    reports:\n      dotenv: build.env\n      junit: [report.xml]\n      coverage_report:\n        coverage_format: cobertura\n        path: coverage.xml\n",
    );
    let a = j.artifacts.unwrap();
    assert_eq!(a.paths, ["dist/", "*.log"]);
    assert_eq!(a.when, ArtifactsWhen::Always);
    assert_eq!(a.reports.dotenv, ["build.env"]);
    assert_eq!(a.reports.junit, ["report.xml"]);
}

#[test]
fn caches_single_list_and_files_keys() {
    let j = job(
        "j:\n  script: [x]\n  cache:\n    - key:\n        files: [Cargo.lock]\n        prefix: rust\n      paths: [target/]\n      policy: pull\n      fallback_keys: [main]\n    - paths: [.npm/]\n",
    );
    assert_eq!(j.cache.len(), 2);
    assert_eq!(j.cache[0].key, CacheKey::Files { files: vec!["Cargo.lock".into()], prefix: Some("rust".into()) });
    assert_eq!(j.cache[0].policy, CachePolicy::Pull);
    assert_eq!(j.cache[1].key, CacheKey::Literal("default".into()));
    let loaded = load_main("j:\n  script: [x]\n  cache:\n    key: a/b\n    policy: pul\n");
    assert_error(&loaded, 4, 10, "cache key `a/b` cannot contain `/`");
    assert_error(&loaded, 5, 13, "unknown cache policy `pul`");
}

#[test]
fn environment_trigger_and_the_rest_are_recognised() {
    let yml = r#"
stages: [deploy]
deploy:
  stage: deploy
  script: [x]
  environment:
    name: production
    url: https://app.example.test
    on_stop: stop
  resource_group: prod
  interruptible: false
  coverage: '/Total: \d+%/'
  tags: [docker, fr]
  id_tokens:
    VAULT_ID_TOKEN:
      aud: https://vault.example.test
  secrets:
    DB:
      vault: db/password@ops
stop:
  stage: deploy
  script: [x]
  when: manual
  environment:
    name: production
    action: stop
child:
  stage: deploy
  trigger:
    include: child.yml
    strategy: depend
"#;
    let loaded = load_main(yml);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let p = loaded.pipeline.unwrap();
    assert_eq!(p.jobs["deploy"].environment.as_ref().unwrap().on_stop.as_deref(), Some("stop"));
    let trigger = p.jobs["child"].trigger.as_ref().unwrap();
    assert_eq!(trigger.include, [pipeline_spec::model::TriggerInclude::Local { path: "child.yml".into() }]);
    assert_eq!(trigger.strategy, Some(pipeline_spec::model::Strategy::Depend));
    assert_eq!(p.jobs["stop"].when, When::Manual);
}

#[test]
fn unknown_keys_get_the_closest_keyword() {
    let loaded = load_main("j:\n  scirpt: [x]\n  artefacts:\n    paths: [a]\n  before-script: [b]\n");
    assert_error(&loaded, 2, 3, "job `j`, key `scirpt`: unknown key `scirpt`; did you mean `script`?");
    assert_error(&loaded, 3, 3, "unknown key `artefacts`; did you mean `artifacts`?");
    assert_error(&loaded, 5, 3, "unknown key `before-script`; did you mean `before_script`?");
    assert!(!diagnostics(&loaded).contains("a job needs a `script:`"), "the typo already explains it");
}

#[test]
fn stages_default_and_undeclared_stage() {
    let p = load_main("build:\n  stage: build\n  script: [x]\n").pipeline.unwrap();
    assert_eq!(p.stages, [".pre", "build", "test", "deploy", ".post"]);
    let loaded = load_main("stages: [build, test]\nj:\n  stage: tests\n  script: [x]\n");
    assert_error(&loaded, 3, 10, "stage `tests` is not declared in `stages`; did you mean `test`?");
}

#[test]
fn script_lines_that_yaml_reads_as_maps_get_a_hint() {
    let loaded = load_main("j:\n  script:\n    - echo key: value\n");
    let d = diagnostics(&loaded);
    assert!(d.contains("expected a script line (a string), found a map"), "{d}");
    assert!(d.contains("quote the whole line"), "{d}");
}

#[test]
fn parallel_bounds() {
    assert_eq!(job("j:\n  script: [x]\n  parallel: 5\n").parallel, Some(Parallel::Count(5)));
    let loaded = load_main("j:\n  script: [x]\n  parallel: 201\n");
    assert_error(&loaded, 3, 13, "`parallel` is 201; it must be between 1 and 200");
}

#[test]
fn rules_with_only_or_start_in_are_errors() {
    let loaded = load_main("j:\n  script: [x]\n  only: [main]\n  rules:\n    - when: always\n");
    assert_error(&loaded, 3, 3, "`only` cannot be used with `rules`");
}

#[test]
fn bare_string_rule_is_an_error_with_the_fix() {
    let loaded = load_main("j:\n  script: [x]\n  rules:\n    - $CI_COMMIT_BRANCH == \"main\"\n");
    let d = diagnostics(&loaded);
    assert!(d.contains(".gitlab-ci.yml:4:7: error: job `j`, key `rules`: a rule must be a map"), "{d}");
    assert!(d.contains("write `- if: '$CI_COMMIT_BRANCH == \"main\"'`"), "{d}");
}

#[test]
fn invalid_if_expressions_point_inside_the_expression() {
    let loaded = load_main("j:\n  script: [x]\n  rules:\n    - if: $A == \"x\" and $B\n");
    let d = diagnostics(&loaded);
    assert!(d.contains("error: job `j`, key `rules:if`: invalid expression"), "{d}");
}

#[test]
fn run_steps_are_read_in_order_with_their_inputs() {
    use pipeline_spec::model::{StepAction, StepInput};
    let j = job(
        "j:\n  run:\n    - name: check\n      script: echo hi\n    - name: deploy\n      step: piste/gitops-bump@v1\n      inputs:\n        repo: $REPO\n        file: values.yaml\n        key: image.tag\n        value: 1.2\n  after_script: [echo done]\n",
    );
    assert!(j.script.is_empty());
    assert_eq!(j.steps.len(), 2);
    assert_eq!(j.steps[0].action, StepAction::Script("echo hi".into()));
    let StepAction::Builtin { step, inputs } = &j.steps[1].action else { panic!("a built-in step") };
    assert_eq!(step, "piste/gitops-bump@v1");
    assert_eq!(inputs[3], ("value".to_string(), StepInput::Text("1.2".into())), "numbers as written");
    assert_eq!((j.steps[1].span.line, j.steps[1].span.col), (5, 7));
}

#[test]
fn run_steps_errors_are_positioned() {
    let steps = |s: &str| load_main(&format!("j:\n  run:\n{s}"));
    assert_error(&steps("    - name: a\n      script: x\n    - name: a\n      script: y\n"), 5, 7, "two steps are called `a`");
    assert_error(&steps("    - name: 1st\n      script: x\n"), 3, 13, "invalid step name `1st`");
    assert_error(&steps("    - name: a\n"), 3, 7, "needs `step:` (a built-in step) or `script:`");
    assert_error(&steps("    - name: a\n      script: x\n      step: piste/gitops-bump@v1\n"), 4, 7, "`step:` or `script:`, not both");
    let both = "    - name: d\n      step: piste/gitops-bump@v1\n      inputs: {repo: r, file: f, key: k, imagepolicy: p, value: v}\n";
    assert_error(&steps(both), 5, 7, "takes exactly one of key, kustomize_image, imagepolicy: key and imagepolicy are given");
    assert_error(&load_main("j:\n  run: echo hi\n"), 2, 8, "expected a list of steps");
    assert_error(
        &load_main("j:\n  before_script: [x]\n  run:\n    - {name: a, script: b}\n"),
        2,
        3,
        "`before_script` cannot be used with `run`",
    );
}

/// GitLab's `Entry::Coverage` validates `coverage:` as a regular expression written `/…/`;
/// a bad one is an error at its position.
#[test]
fn coverage_must_be_a_valid_regular_expression_between_slashes() {
    let ok = job("a:\n  script: [x]\n  coverage: '/^TOTAL.+?(\\d+\\%)$/'\n");
    assert_eq!(ok.coverage.as_deref(), Some("/^TOTAL.+?(\\d+\\%)$/"));
    let loaded = load_main("a:\n  script: [x]\n  coverage: 'Coverage: (\\d+)'\nb:\n  script: [x]\n  coverage: '/(unclosed/'\n");
    assert_error(&loaded, 3, 13, "`coverage` must be a regular expression between slashes");
    assert_error(&loaded, 6, 13, "`coverage` is not a valid regular expression");
    let d = diagnostics(&loaded);
    assert!(d.contains(".gitlab-ci.yml:6:13: error"), "file:line:col: {d}");
    assert!(job("a:\n  script: [x]\n  coverage: null\n").coverage.is_none(), "null is unset");
}

/// GitLab runs these keywords; piste recognises them (the pipeline stays valid, as on GitLab)
/// but does not run them, and says so where each is used, with what the job will lack. The
/// catalogue of the target users reads a Vault token from `id_tokens`, which only a piste
/// server issues.
#[test]
fn keywords_piste_does_not_run_are_warnings_where_they_are_used() {
    let yml = r#"
gen:
  script: [x]
deploy:
  script: [x]
  id_tokens:
    VAULT_ID_TOKEN:
      aud: https://vault.example.test
  secrets:
    DB:
      vault: db/password@ops
  release:
    tag_name: v1
    description: first
  hooks:
    pre_get_sources_script: [echo hi]
  identity: google_cloud
  manual_confirmation: sure?
  dast_configuration:
    site_profile: x
pages:
  script: [x]
  pages: true
  publish: public
child-needs:
  script: [x]
  needs:
    - pipeline: $PARENT_PIPELINE_ID
      job: gen
"#;
    let loaded = load_main(yml);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let all = diagnostics(&loaded);
    for (line, key, lacks) in [
        (9, "secrets", "no secret is fetched from an external provider"),
        (12, "release", "no release is created"),
        (15, "hooks", "`pre_get_sources_script` does not run"),
        (17, "identity", "no cloud identity is federated"),
        (18, "manual_confirmation", "without a confirmation message"),
        (19, "dast_configuration", "no DAST profile is applied"),
        (23, "pages", "nothing is published as GitLab Pages"),
        (24, "publish", "nothing is published as GitLab Pages"),
    ] {
        let expected = format!(".gitlab-ci.yml:{line}:3: warning: ");
        let found = all.lines().find(|l| l.starts_with(&expected) && l.contains(&format!("piste does not run `{key}`: ")));
        assert!(found.is_some_and(|l| l.contains(lacks)), "{key} at line {line}:\n{all}");
    }
    // `id_tokens` is issued by a piste server; here (`piste lint`, `piste run`) it is not.
    assert!(
        all.lines().any(|l| l.starts_with(".gitlab-ci.yml:6:3: warning: ")
            && l.ends_with("no ID token is issued here, so `$VAULT_ID_TOKEN` stays unset")),
        "{all}"
    );
    assert!(all.contains("`piste run --secret VAULT_ID_TOKEN=…`"), "id_tokens says what to do instead:\n{all}");
    // `needs:pipeline:job` runs now (spec/needs.rs): no warning.
    assert!(!all.contains(".gitlab-ci.yml:28:7: warning: "), "{all}");
}
