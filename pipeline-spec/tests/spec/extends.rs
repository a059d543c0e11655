//! `extends`, `!reference`, `default`, `inherit` and YAML anchors.

use crate::{Trigger, assert_error, load_main, load_with, plan_for};

fn job(yml: &str, name: &str) -> pipeline_spec::model::Job {
    let loaded = load_main(yml);
    assert!(!loaded.has_errors(), "{}", crate::diagnostics(&loaded));
    loaded.pipeline.unwrap().jobs.get(name).cloned().expect("job")
}

#[test]
fn extends_deep_merges_maps_and_replaces_lists() {
    let yml = r#"
.base:
  image: alpine
  variables: {A: "1", B: "1"}
  script: [base]
  tags: [docker]
job:
  extends: .base
  variables: {B: "2", C: "3"}
  tags: [shell]
"#;
    let j = job(yml, "job");
    let vars: Vec<(String, String)> = j.variables.iter().map(|v| (v.name.clone(), v.value.clone())).collect();
    assert_eq!(vars, [("A".into(), "1".into()), ("B".into(), "2".into()), ("C".into(), "3".into())]);
    assert_eq!(j.tags, ["shell"]);
    assert_eq!(j.script, ["base"]);
    assert_eq!(j.image.unwrap().name, "alpine");
}

#[test]
fn later_extends_parent_wins_and_multi_level_works() {
    let yml = r#"
.a:
  script: [a]
  variables: {X: a}
.b:
  extends: .a
  script: [b]
.c:
  variables: {X: c}
job:
  extends: [.b, .c]
"#;
    let j = job(yml, "job");
    assert_eq!(j.script, ["b"]);
    assert_eq!(j.variables[0].value, "c");
}

#[test]
fn null_in_the_extending_job_removes_the_inherited_value() {
    let yml =
        ".base:\n  script: [x]\n  image: alpine\n  after_script: [cleanup]\njob:\n  extends: .base\n  image: null\n  after_script: ~\n";
    let j = job(yml, "job");
    assert!(j.image.is_none());
    assert!(j.after_script.is_empty());
}

#[test]
fn extends_cycles_and_unknown_parents_are_errors() {
    let loaded = load_main(".a:\n  extends: .b\n.b:\n  extends: .a\njob:\n  extends: .a\n  script: [x]\n");
    assert!(crate::diagnostics(&loaded).contains("circular dependency in `extends`: .a → .b → .a"), "{}", crate::diagnostics(&loaded));
    let loaded = load_main(".build-base:\n  script: [x]\njob:\n  extends: .build-bas\n");
    assert_error(&loaded, 4, 12, "`extends` refers to `.build-bas`, which is not defined; did you mean `.build-base`?");
}

#[test]
fn extends_depth_is_limited_like_gitlab() {
    let mut yml = String::from(".t0:\n  script: [x]\n");
    for i in 1..=12 {
        yml.push_str(&format!(".t{i}:\n  extends: .t{}\n", i - 1));
    }
    yml.push_str("job:\n  extends: .t12\n");
    let loaded = load_main(&yml);
    assert!(crate::diagnostics(&loaded).contains("nested more than 11 levels"), "{}", crate::diagnostics(&loaded));
}

#[test]
fn reference_tags_in_scripts_variables_and_rules() {
    let yml = r#"
.setup:
  before_script: [setup-a, setup-b]
  variables: {REGION: eu}
.rules:
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
job:
  before_script:
    - !reference [.setup, before_script]
    - extra
  script: [x]
  variables:
    WHERE: !reference [.setup, variables, REGION]
  rules:
    - !reference [.rules, rules]
    - if: $CI_COMMIT_TAG
"#;
    let j = job(yml, "job");
    assert_eq!(j.before_script, ["setup-a", "setup-b", "extra"]);
    assert_eq!(j.variables[0].value, "eu");
    assert_eq!(j.rules.as_ref().unwrap().len(), 2);
    assert_eq!(plan_for(yml, &[], &Trigger::default()).jobs.len(), 1);
    assert!(plan_for(yml, &[], &Trigger::branch("dev")).jobs.is_empty());
}

#[test]
fn references_see_extended_keys_and_cross_includes() {
    let main = "include: ci/templates.yml\n.local:\n  extends: .remote\njob:\n  script: !reference [.local, script]\n";
    let tpl = ".remote:\n  script: [from-include]\n";
    let loaded = load_with(main, &[("ci/templates.yml", tpl)], &[]);
    assert!(!loaded.has_errors(), "{}", crate::diagnostics(&loaded));
    assert_eq!(loaded.pipeline.unwrap().jobs["job"].script, ["from-include"]);
}

#[test]
fn unknown_references_are_errors_with_suggestions() {
    let loaded = load_main(".setup:\n  script: [x]\njob:\n  script: !reference [.setup, scirpt]\n");
    assert_error(&loaded, 4, 11, "`!reference`: `.setup` has no key `scirpt`; did you mean `script`?");
}

#[test]
fn anchors_stay_within_one_file() {
    let main = "include: other.yml\n.defs: &defs\n  script: [x]\n";
    let other = "job:\n  <<: *defs\n";
    let loaded = load_with(main, &[("other.yml", other)], &[]);
    let d = crate::diagnostics(&loaded);
    assert!(d.contains("other.yml:2:7: error: alias refers to an anchor that is not defined in this file"), "{d}");
    assert!(d.contains("anchors do not cross files"), "{d}");
}

#[test]
fn default_applies_unless_the_job_sets_the_key_or_opts_out() {
    let yml = r#"
default:
  image: ruby:3.3
  retry: 2
  before_script: [bundle install]
variables:
  GLOBAL: g
a:
  script: [x]
b:
  image: alpine
  script: [x]
c:
  inherit:
    default: [retry]
    variables: false
  script: [x]
"#;
    let loaded = load_main(yml);
    assert!(!loaded.has_errors(), "{}", crate::diagnostics(&loaded));
    let p = loaded.pipeline.unwrap();
    assert_eq!(p.jobs["a"].image.as_ref().unwrap().name, "ruby:3.3");
    assert_eq!(p.jobs["a"].before_script, ["bundle install"]);
    assert_eq!(p.jobs["b"].image.as_ref().unwrap().name, "alpine");
    assert!(p.jobs["c"].image.is_none());
    assert_eq!(p.jobs["c"].retry.max, 2);
    assert!(p.jobs["c"].before_script.is_empty());
    assert_eq!(p.jobs["c"].inherit_variables, Some(vec![]));
}

#[test]
fn deprecated_top_level_globals_act_as_defaults() {
    let j = job("image: node:20\nbefore_script: [npm ci]\ntest:\n  script: [npm test]\n", "test");
    assert_eq!(j.image.unwrap().name, "node:20");
    assert_eq!(j.before_script, ["npm ci"]);
}
