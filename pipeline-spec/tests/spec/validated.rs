//! Keywords piste checks and then does not act on ("validated, ignored" in the README's table),
//! the errors of keywords that are only checked, and planned forms with no run-time test of
//! their own (`types`, `rules:interruptible`, `rules:start_in`).

use pipeline_spec::model::When;

use crate::{Trigger, assert_error, diagnostics, load_main, plan_for};

/// GitLab's `types` is the deprecated name of `stages` (ci/yaml "Deprecated keywords"): the
/// same list, the same checks.
#[test]
fn types_is_the_deprecated_name_of_stages() {
    let p = load_main("types: [lint, ship]\nship:\n  stage: ship\n  script: [x]\nlint:\n  stage: lint\n  script: [x]\n").pipeline.unwrap();
    assert_eq!(p.stages, [".pre", "lint", "ship", ".post"]);
    let plan = plan_for(
        "types: [lint, ship]\nship:\n  stage: ship\n  script: [x]\nlint:\n  stage: lint\n  script: [x]\n",
        &[],
        &Trigger::default(),
    );
    let stages: Vec<(&str, &str)> = plan.jobs.iter().map(|j| (j.name.as_str(), j.stage.as_str())).collect();
    assert_eq!(stages, [("ship", "ship"), ("lint", "lint")]);
    assert_eq!(plan.stages, ["lint", "ship"], "stage order comes from `types`");
    let loaded = load_main("types: [build]\nj:\n  stage: test\n  script: [x]\n");
    assert_error(&loaded, 3, 10, "stage `test` is not declared in `stages`");
}

/// GitLab (ci/yaml `variables:options`): "the `value` must be one of the `options`"; a
/// default outside the list makes the configuration invalid.
#[test]
fn a_variable_value_outside_its_options_is_an_error() {
    let loaded = load_main(
        "variables:\n  DEPLOY_TO:\n    value: moon\n    description: where\n    options: [staging, production]\nj:\n  script: [x]\n",
    );
    assert_error(&loaded, 5, 14, "variable `DEPLOY_TO`: the value `moon` is not one of its `options`");
    let ok = load_main("variables:\n  DEPLOY_TO:\n    value: staging\n    options: [staging, production]\nj:\n  script: [x]\n");
    assert!(!ok.has_errors(), "{}", diagnostics(&ok));
}

/// GitLab's `Entry::Job` refuses an `on_stop` naming a job that is not defined ("on_stop job
/// x is not defined"); piste says so where `on_stop` is written and suggests the closest job.
#[test]
fn environment_on_stop_naming_an_unknown_job_is_an_error() {
    let loaded = load_main(
        "deploy:\n  script: [x]\n  environment:\n    name: review\n    on_stop: stop_reveiw\nstop_review:\n  script: [x]\n  when: manual\n  environment:\n    name: review\n    action: stop\n",
    );
    assert_error(&loaded, 5, 14, "`environment:on_stop` refers to `stop_reveiw`, which is not defined");
    assert!(diagnostics(&loaded).contains("did you mean `stop_review`?"), "{}", diagnostics(&loaded));
}

/// GitLab (ci/yaml `rules:interruptible`, `rules:start_in`): the matching rule's values replace
/// the job's; a rule without them leaves the job's own.
#[test]
fn rules_interruptible_and_start_in_replace_the_jobs_when_the_rule_matches() {
    let yml = r#"
deploy:
  script: [x]
  interruptible: true
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
      interruptible: false
      when: delayed
      start_in: 10 minutes
    - when: on_success
"#;
    let on_main = plan_for(yml, &[], &Trigger::default());
    let j = &on_main.jobs[0];
    assert_eq!((j.interruptible, j.when, j.start_in), (false, When::Delayed, Some(600)));
    let elsewhere = plan_for(yml, &[], &Trigger::branch("feature"));
    let j = &elsewhere.jobs[0];
    assert_eq!((j.interruptible, j.when, j.start_in), (true, When::OnSuccess, None), "the job's own `interruptible`");
}

/// Keys GitLab acts on and piste only checks: valid forms load without a word (they change
/// nothing in a piste pipeline, so there is nothing to warn about), bad ones are errors at
/// their position — GitLab's `Entry::Artifacts`, `Entry::Image`, `Entry::Service`.
#[test]
fn keys_piste_checks_and_ignores_load_silently_and_bad_values_are_errors() {
    let yml = r#"
deploy:
  image:
    name: alpine:3
    docker:
      platform: arm64/v8
      user: dave
    kubernetes:
      user: "1000"
  services:
    - name: postgres:16
      pull_policy: [if-not-present, always]
      docker:
        platform: amd64
      kubernetes:
        user: "1001"
  script: [x]
  artifacts:
    name: "$CI_JOB_NAME-$CI_COMMIT_REF_SLUG"
    expose_as: Build output
    access: developer
    expire_in: 2 days
    paths: [dist/]
  cache:
    key: k
    paths: [vendor/]
    unprotect: true
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    auto_stop_in: $REVIEW_TTL
    kubernetes:
      namespace: review
never_expires:
  script: [x]
  artifacts:
    public: false
    expire_in: never
    paths: [out/]
"#;
    let loaded = load_main(yml);
    assert!(loaded.diagnostics.is_empty(), "no error, no warning:\n{}", diagnostics(&loaded));
    let p = loaded.pipeline.unwrap();
    let deploy = &p.jobs["deploy"];
    assert_eq!(deploy.services[0].pull_policy, ["if-not-present", "always"], "carried to the docker executor");
    let a = deploy.artifacts.as_ref().unwrap();
    assert_eq!((a.expire_in.as_deref(), a.expose_as.as_deref()), (Some("2 days"), Some("Build output")));
    assert!(deploy.cache[0].unprotect);
    assert_eq!(deploy.environment.as_ref().unwrap().auto_stop_in.as_deref(), Some("$REVIEW_TTL"), "variables are GitLab's");

    let bad = load_main(
        "j:\n  script: [x]\n  services:\n    - name: db\n      pull_policy: sometimes\n  artifacts:\n    public: maybe\n    access: everyone\n    expire_in: soonish\n    paths: [a]\n  cache:\n    unprotect: yes please\n",
    );
    assert_error(&bad, 5, 20, "unknown `pull_policy` `sometimes`");
    assert_error(&bad, 7, 13, "expected `true` or `false`");
    assert_error(&bad, 8, 13, "unknown `artifacts:access` `everyone`; expected one of all, developer, maintainer, none");
    assert_error(&bad, 8, 5, "`artifacts:public` and `artifacts:access` cannot be used together");
    assert_error(&bad, 9, 16, "`soonish` is not a duration");
    assert_error(&bad, 12, 16, "expected `true` or `false`");
}

/// GitLab reads `rules:exists` with `project`/`ref` in that project at that ref; piste has the
/// pipeline's own commit only: it checks there and says so where the rule is written.
#[test]
fn rules_exists_with_project_or_ref_checks_this_repository_and_warns() {
    let yml = "container:\n  script: [x]\n  rules:\n    - exists:\n        paths: [Dockerfile]\n        project: group/other\n        ref: main\nmaven:\n  script: [x]\n  rules:\n    - exists:\n        paths: [pom.xml]\n        ref: v1\n";
    let loaded = load_main(yml);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let d = diagnostics(&loaded);
    for line in [6, 13] {
        let at = format!(".gitlab-ci.yml:{line}:9: warning: ");
        assert!(
            d.lines().any(|l| l.starts_with(&at) && l.contains("piste checks `rules:exists` in the pipeline's own repository")),
            "line {line}:\n{d}"
        );
    }
    // The test repository has a Dockerfile and no pom.xml (`plan_for`'s `exists`).
    let names: Vec<String> = plan_for(yml, &[], &Trigger::default()).jobs.into_iter().map(|j| j.name).collect();
    assert_eq!(names, ["container"]);
}
