//! `rules`, `only`/`except`, `workflow:rules`: which jobs exist for which trigger.

use pipeline_spec::predefined::PipelineSource;

use crate::{Trigger, names, plan_for, table};

#[test]
fn jobs_without_rules_run_for_branches_and_tags_only() {
    let yml = "build:\n  script: [make]\n";
    assert_eq!(names(yml, &Trigger::default()), ["build"]);
    assert_eq!(names(yml, &Trigger::tag("v1.0")), ["build"]);
    assert!(names(yml, &Trigger::merge_request()).is_empty(), "no rules: not in merge request pipelines");
}

#[test]
fn first_matching_rule_decides() {
    let yml = r#"
deploy:
  script: [deploy]
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
      when: manual
    - if: $CI_COMMIT_TAG =~ /^v\d+/
    - when: never
"#;
    assert_eq!(table(yml, &Trigger::default()), "name    stage  when    allow_failure  needs\ndeploy  test   manual  false\n");
    assert_eq!(table(yml, &Trigger::tag("v2.1")), "name    stage  when        allow_failure  needs\ndeploy  test   on_success  false\n");
    assert!(names(yml, &Trigger::branch("feature")).is_empty());
}

#[test]
fn job_level_manual_allows_failure_but_rule_manual_does_not() {
    let yml = "a:\n  script: [x]\n  when: manual\nb:\n  script: [x]\n  rules:\n    - when: manual\nc:\n  script: [x]\n  when: manual\n  rules:\n    - if: $CI_COMMIT_BRANCH\n";
    let plan = plan_for(yml, &[], &Trigger::default());
    let af: Vec<(String, bool)> = plan.jobs.iter().map(|j| (j.name.clone(), j.allow_failure.any())).collect();
    assert_eq!(af, [("a".to_string(), true), ("b".to_string(), false), ("c".to_string(), true)]);
}

#[test]
fn rules_allow_failure_and_variables_apply() {
    let yml = "t:\n  script: [x]\n  rules:\n    - if: $CI_PIPELINE_SOURCE == \"push\"\n      allow_failure: true\n      variables:\n        MODE: fast\n";
    let plan = plan_for(yml, &[], &Trigger::default());
    assert!(plan.jobs[0].allow_failure.any());
    assert_eq!(plan.jobs[0].variables, [("MODE".to_string(), "fast".to_string())]);
}

#[test]
fn rules_see_job_and_global_variables_and_pipeline_variables_win() {
    let yml = "variables:\n  DEPLOY: \"no\"\njob:\n  variables:\n    KIND: api\n  script: [x]\n  rules:\n    - if: $KIND == \"api\" && $DEPLOY == \"yes\"\n";
    assert!(names(yml, &Trigger::default()).is_empty());
    let t = Trigger { vars: vec![("DEPLOY", "yes")], ..Trigger::default() };
    assert_eq!(names(yml, &t), ["job"]);
}

#[test]
fn rules_see_the_job_name() {
    let yml = "lint-docs:\n  script: [x]\n  rules:\n    - if: $CI_JOB_NAME =~ /^lint/\n";
    assert_eq!(names(yml, &Trigger::default()), ["lint-docs"]);
}

#[test]
fn changes_match_changed_files_and_are_true_without_push_information() {
    let yml = "docs:\n  script: [x]\n  rules:\n    - changes: [\"docs/**/*\", \"*.md\"]\n";
    assert_eq!(names(yml, &Trigger::default()), ["docs"], "unknown changes: true, as GitLab does");
    let t = Trigger { changed: Some(vec!["src/lib.rs"]), ..Trigger::default() };
    assert!(names(yml, &t).is_empty());
    let t = Trigger { changed: Some(vec!["docs/guide/intro.md"]), ..Trigger::default() };
    assert_eq!(names(yml, &t), ["docs"]);
    let t = Trigger { changed: Some(vec!["README.md"]), ..Trigger::default() };
    assert_eq!(names(yml, &t), ["docs"]);
}

#[test]
fn exists_checks_the_repository() {
    let yml = "container:\n  script: [x]\n  rules:\n    - exists: [Dockerfile]\nnone:\n  script: [x]\n  rules:\n    - exists: [pom.xml]\n";
    assert_eq!(names(yml, &Trigger::default()), ["container"]);
}

#[test]
fn workflow_rules_filter_pipelines_and_set_variables() {
    let yml = r#"
workflow:
  name: "Pipeline for $CI_COMMIT_REF_NAME ($ENVIRONMENT)"
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
      when: never
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
      variables:
        ENVIRONMENT: production
    - if: $CI_COMMIT_BRANCH
variables:
  ENVIRONMENT: staging
job:
  script: [x]
  rules:
    - if: $ENVIRONMENT == "production"
"#;
    let plan = plan_for(yml, &[], &Trigger::default());
    assert_eq!(plan.name.as_deref(), Some("Pipeline for main (production)"));
    assert_eq!(plan.jobs.len(), 1);
    assert!(plan_for(yml, &[], &Trigger::branch("feature")).jobs.is_empty(), "staging: job excluded");
    assert!(plan_for(yml, &[], &Trigger::merge_request()).stages.is_empty(), "no pipeline for merge requests");
}

#[test]
fn only_and_except_common_forms() {
    let yml = r#"
web-only:
  script: [x]
  only: [web]
main-only:
  script: [x]
  only: [main]
release:
  script: [x]
  only: [/^release-.*$/]
not-tags:
  script: [x]
  except: [tags]
vars:
  script: [x]
  only:
    variables: [$DEPLOY == "1"]
mrs:
  script: [x]
  only: [merge_requests]
"#;
    assert_eq!(names(yml, &Trigger::default()), ["main-only", "not-tags"]);
    assert_eq!(names(yml, &Trigger::branch("release-2")), ["release", "not-tags"]);
    assert!(names(yml, &Trigger::tag("v1")).is_empty());
    assert_eq!(names(yml, &Trigger { source: Some(PipelineSource::Web), ..Trigger::default() }), ["web-only", "main-only", "not-tags"]);
    assert_eq!(names(yml, &Trigger { vars: vec![("DEPLOY", "1")], ..Trigger::default() }), ["main-only", "not-tags", "vars"]);
    assert_eq!(names(yml, &Trigger::merge_request()), ["mrs"]);
}

#[test]
fn delayed_and_never() {
    // `when: never` belongs in rules (GitLab rejects it at job level, see gitlab_rules).
    let yml = "later:\n  script: [x]\n  when: delayed\n  start_in: 30 minutes\nnever:\n  script: [x]\n  rules: [{when: never}]\n";
    let plan = plan_for(yml, &[], &Trigger::default());
    assert_eq!(plan.jobs.len(), 1);
    assert_eq!(plan.jobs[0].start_in, Some(1800));
}

/// GitLab's `workflow:auto_cancel` (16.8+): defaults `on_new_commit: conservative`,
/// `on_job_failure: none`; the matching `workflow:rules` entry's `auto_cancel` overrides each
/// key it sets ("`workflow:rules:auto_cancel`").
#[test]
fn workflow_auto_cancel_defaults_and_rule_overrides() {
    use pipeline_spec::model::{OnJobFailure, OnNewCommit};
    let plain = plan_for("build:\n  script: [make]\n", &[], &Trigger::default());
    assert_eq!(plain.auto_cancel.on_new_commit, OnNewCommit::Conservative);
    assert_eq!(plain.auto_cancel.on_job_failure, OnJobFailure::None);
    let yml = "workflow:\n  auto_cancel:\n    on_new_commit: interruptible\n    on_job_failure: all\n  rules:\n    - if: $CI_COMMIT_TAG\n      auto_cancel:\n        on_new_commit: none\n    - when: always\nbuild:\n  script: [make]\n";
    let branch = plan_for(yml, &[], &Trigger::default());
    assert_eq!(branch.auto_cancel.on_new_commit, OnNewCommit::Interruptible);
    assert_eq!(branch.auto_cancel.on_job_failure, OnJobFailure::All);
    let tag = plan_for(yml, &[], &Trigger::tag("v1"));
    assert_eq!(tag.auto_cancel.on_new_commit, OnNewCommit::None, "the rule's value wins");
    assert_eq!(tag.auto_cancel.on_job_failure, OnJobFailure::All, "keys the rule does not set are kept");
}

#[test]
fn workflow_auto_cancel_values_are_checked() {
    let loaded = crate::load_main(
        "workflow:\n  auto_cancel:\n    on_new_commit: disabled\n    on_job_failure: some\n    when: x\nbuild:\n  script: [make]\n",
    );
    let d = crate::diagnostics(&loaded);
    assert!(d.contains("3:20") && d.contains("`disabled` is not one of conservative, interruptible, none"), "{d}");
    assert!(d.contains("`some` is not one of all, none"), "{d}");
    assert!(d.contains("when"), "unknown key reported: {d}");
}

/// GitLab expands `resource_group` with the job's variables (`Ci::Processable#resource_group_key`
/// goes through `ExpandVariables`): one group per environment, per matrix value.
#[test]
fn resource_group_is_expanded_with_the_jobs_variables() {
    let yml = "variables:\n  ENV: prod\ndeploy:\n  script: [make]\n  resource_group: deploy-$ENV-$REGION\n  parallel:\n    matrix:\n      - REGION: [eu, us]\n";
    let p = plan_for(yml, &[], &Trigger::default());
    let groups: Vec<_> = p.jobs.iter().map(|j| j.resource_group.clone().unwrap()).collect();
    assert_eq!(groups, ["deploy-prod-eu", "deploy-prod-us"]);
}

/// GitLab's `Variables::Builder#predefined_variables(job, environment)`: a job's `rules` see
/// `CI_ENVIRONMENT_NAME` (expanded), `_ACTION`, `_TIER` and `_URL` of its `environment:`.
#[test]
fn rules_see_the_jobs_environment() {
    let yml = "variables: {TARGET: production}\ndeploy:\n  script: [x]\n  environment:\n    name: $TARGET\n  rules:\n    - if: $CI_ENVIRONMENT_NAME == \"production\" && $CI_ENVIRONMENT_TIER == \"production\" && $CI_ENVIRONMENT_ACTION == \"start\"\nreview:\n  script: [x]\n  environment: {name: review/$CI_COMMIT_REF_NAME, action: prepare}\n  rules:\n    - if: $CI_ENVIRONMENT_TIER == \"development\" && $CI_ENVIRONMENT_ACTION == \"prepare\"\nplain:\n  script: [x]\n  rules:\n    - if: $CI_ENVIRONMENT_NAME\n";
    assert_eq!(names(yml, &Trigger::default()), ["deploy", "review"]);
}
