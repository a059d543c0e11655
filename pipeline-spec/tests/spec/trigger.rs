//! `trigger:` jobs and the configuration of the child pipelines they create (GitLab's
//! `Entry::Trigger`, `Ci::Bridge`, docs.gitlab.com `ci/yaml/#trigger` and
//! `ci/pipelines/downstream_pipelines`).

use pipeline_spec::child::{MAX_CHILD_DEPTH, WithArtifacts, check_depth, child_context, load_child};
use pipeline_spec::include::ResolveError;
use pipeline_spec::load::LoadOptions;
use pipeline_spec::model::{Forward, Strategy, Trigger as Bridge, TriggerInclude};
use pipeline_spec::plan::{PlanContext, plan};
use pipeline_spec::predefined::PipelineSource;

use crate::{Trigger, assert_error, diagnostics, load_main, resolver};

fn bridge(yml: &str, job: &str) -> Bridge {
    let loaded = load_main(yml);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    loaded.pipeline.unwrap().jobs[job].trigger.clone().expect("a trigger job")
}

/// GitLab: `trigger: include:` takes a path, or a list of `local`, `artifact` + `job`,
/// `project` + `file` (+ `ref`), `template`, `remote` and `component` entries (corpus shape:
/// LLNL/Umpire mixes `local`, `project` and `artifact` under `strategy: depend`).
#[test]
fn trigger_include_reads_every_documented_form() {
    let yml = r#"
stages: [gen, child]
generate-job-lists:
  stage: gen
  script: [make jobs.yml]
  artifacts: {paths: [jobs.yml]}
one:
  stage: child
  trigger:
    include: .gitlab/child.yml
many:
  stage: child
  trigger:
    include:
      - local: '.gitlab/custom-jobs-and-variables.yml'
      - project: 'radiuss/radiuss-shared-ci'
        ref: 'v2024.07.0'
        file: 'pipelines/${CI_MACHINE}.yml'
      - artifact: '${CI_MACHINE}-jobs.yml'
        job: 'generate-job-lists'
      - template: Security/SAST.gitlab-ci.yml
    strategy: depend
"#;
    assert_eq!(bridge(yml, "one").include, [TriggerInclude::Local { path: ".gitlab/child.yml".into() }]);
    let many = bridge(yml, "many");
    assert!(many.strategy == Some(Strategy::Depend) && many.is_child());
    assert_eq!(
        many.include,
        [
            TriggerInclude::Local { path: ".gitlab/custom-jobs-and-variables.yml".into() },
            TriggerInclude::Project {
                project: "radiuss/radiuss-shared-ci".into(),
                files: vec!["pipelines/${CI_MACHINE}.yml".into()],
                git_ref: Some("v2024.07.0".into())
            },
            TriggerInclude::Artifact { path: "${CI_MACHINE}-jobs.yml".into(), job: "generate-job-lists".into() },
            TriggerInclude::Template { name: "Security/SAST.gitlab-ci.yml".into() },
        ]
    );
    assert_eq!(many.forward, Forward { yaml_variables: true, pipeline_variables: false }, "GitLab's `forward` defaults");
}

/// GitLab: `trigger: group/project` is a multi-project trigger; `project` + `branch`, and
/// `forward` with its two booleans.
#[test]
fn multi_project_trigger_with_branch_and_forward() {
    let yml = "a:\n  trigger: group/other\nb:\n  trigger:\n    project: baserow/baserow-saas\n    branch: $CI_COMMIT_BRANCH\n    forward: {yaml_variables: false, pipeline_variables: true}\n";
    let a = bridge(yml, "a");
    assert_eq!((a.project.as_deref(), a.is_child(), a.strategy), (Some("group/other"), false, None));
    let b = bridge(yml, "b");
    assert_eq!(b.branch.as_deref(), Some("$CI_COMMIT_BRANCH"));
    assert_eq!(b.forward, Forward { yaml_variables: false, pipeline_variables: true });
}

/// GitLab's `Entry::Trigger` validations: `strategy` is `depend`; a trigger is a project or
/// an include, not both; `branch` belongs to a project trigger; `artifact` needs `job`.
#[test]
fn trigger_errors_are_positioned() {
    let yml = "a:\n  trigger:\n    include: c.yml\n    strategy: wait\nb:\n  trigger:\n    project: g/p\n    include: c.yml\nc:\n  trigger:\n    include: c.yml\n    branch: main\nd:\n  trigger:\n    include:\n      - artifact: x.yml\ne:\n  trigger:\n    forward: {yaml_variables: maybe}\n    include: c.yml\n";
    let loaded = load_main(yml);
    assert_error(&loaded, 4, 15, "`trigger:strategy` is `depend` or `mirror`, found `wait`");
    assert_error(&loaded, 8, 5, "`trigger` has `project` or `include`, not both");
    assert_error(&loaded, 12, 5, "`trigger:branch` applies to `trigger:project`");
    assert_error(&loaded, 16, 9, "`trigger:include:artifact` needs `job:`");
    assert_error(&loaded, 19, 31, "expected `true` or `false`");
}

/// GitLab (`External::File::Artifact`): the artifact's job must exist and run before the
/// trigger job — in an earlier stage, or in its `needs`.
#[test]
fn trigger_include_artifact_job_must_run_before_the_trigger_job() {
    let later = "stages: [a, b]\nt:\n  stage: a\n  trigger:\n    include: [{artifact: c.yml, job: gen}]\ngen:\n  stage: b\n  script: [x]\n";
    let loaded = load_main(later);
    assert_error(&loaded, 2, 1, "`trigger:include:job` refers to `gen`, which does not run before this job");
    let missing = "t:\n  trigger:\n    include: [{artifact: c.yml, job: genn}]\ngen:\n  script: [x]\n";
    assert_error(&load_main(missing), 1, 1, "`trigger:include:job` refers to `genn`, which is not defined");
    let needed = "t:\n  needs: [gen]\n  trigger:\n    include: [{artifact: c.yml, job: gen}]\ngen:\n  script: [x]\n";
    assert!(!load_main(needed).has_errors(), "{}", diagnostics(&load_main(needed)));
}

/// GitLab: "Including configs from artifacts is only allowed when triggering child pipelines".
#[test]
fn include_artifact_outside_a_child_pipeline_is_an_error() {
    let loaded = load_main("include:\n  - artifact: x.yml\n    job: gen\njob:\n  script: [x]\n");
    assert_error(&loaded, 2, 5, "`include:artifact` is only allowed when triggering a child pipeline");
}

fn child_of(yml: &str, job: &str, files: &[(&str, &str)], artifacts: &[(&str, &str, &str)]) -> pipeline_spec::load::Loaded {
    let trigger = bridge(yml, job);
    let base = resolver(files);
    let res = WithArtifacts {
        base: &base,
        artifact: |job: &str, path: &str| {
            artifacts
                .iter()
                .find(|(j, p, _)| *j == job && *p == path)
                .map(|(.., t)| t.to_string())
                .ok_or(ResolveError::Other(format!("job `{job}` has no `{path}`")))
        },
    };
    load_child("`trigger:include` of job `t`", &trigger, &res, &LoadOptions::default())
}

/// GitLab builds a child pipeline's configuration as `include: <trigger:include>`: local files
/// of the same commit and a parent job's artifact are merged as includes are.
#[test]
fn child_configuration_is_its_includes_merged() {
    let yml = "stages: [gen, go]\ngen:\n  stage: gen\n  script: [x]\nt:\n  stage: go\n  trigger:\n    include:\n      - local: ci/child.yml\n      - artifact: dyn.yml\n        job: gen\n";
    let child = "stages: [test]\nunit:\n  script: [make test]\n";
    let generated = "lint:\n  script: [make lint]\n";
    let loaded = child_of(yml, "t", &[("ci/child.yml", child)], &[("gen", "dyn.yml", generated)]);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let p = loaded.pipeline.unwrap();
    assert_eq!(p.jobs.keys().collect::<Vec<_>>(), ["unit", "lint"]);
}

/// A bad child configuration is reported with the child file's own `file:line:col`, as the
/// loader reports any pipeline (the trigger job's log shows it).
#[test]
fn a_bad_child_configuration_is_reported_at_its_file_line_col() {
    let yml = "gen:\n  stage: build\n  script: [x]\nt:\n  trigger:\n    include: [{artifact: dyn.yml, job: gen}]\n";
    let loaded = child_of(yml, "t", &[], &[("gen", "dyn.yml", "lint:\n  scrpt: [make lint]\n")]);
    assert_error(&loaded, 2, 3, "unknown key `scrpt`");
    assert!(diagnostics(&loaded).contains("dyn.yml:2:3"), "{}", diagnostics(&loaded));
    let missing = child_of("t:\n  trigger:\n    include: ci/absent.yml\n", "t", &[], &[]);
    assert!(diagnostics(&missing).contains("cannot resolve include of local file `ci/absent.yml`"), "{}", diagnostics(&missing));
}

/// GitLab: a child pipeline's `CI_PIPELINE_SOURCE` is `parent_pipeline`, and its `rules` see
/// that (the usual `if: $CI_PIPELINE_SOURCE == "parent_pipeline"` guard).
#[test]
fn child_rules_see_parent_pipeline_source() {
    let yml = "t:\n  trigger:\n    include: child.yml\n";
    let child = "only-child:\n  script: [x]\n  rules:\n    - if: $CI_PIPELINE_SOURCE == \"parent_pipeline\"\npush-only:\n  script: [x]\n  rules:\n    - if: $CI_PIPELINE_SOURCE == \"push\"\n";
    let loaded = child_of(yml, "t", &[("child.yml", child)], &[]);
    let ctx = child_context(&Trigger::default().context(), 42);
    assert_eq!(ctx.source, PipelineSource::ParentPipeline);
    assert_eq!(ctx.pipeline_id, 42);
    let planned =
        plan(loaded.pipeline.as_ref().unwrap(), &PlanContext { predefined: ctx.pipeline_variables(), ..PlanContext::default() }).unwrap();
    assert_eq!(planned.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["only-child"]);
}

/// GitLab's `MAX_DESCENDANTS_DEPTH` (2): a parent, a child, a grandchild; no third level.
#[test]
fn child_pipelines_nest_two_levels_deep() {
    assert_eq!(MAX_CHILD_DEPTH, 2);
    assert!(check_depth(0).is_ok() && check_depth(1).is_ok());
    let e = check_depth(2).unwrap_err().to_string();
    assert!(e.contains("reached the maximum depth of child pipelines (2)"), "{e}");
}

/// GitLab: `trigger:include` takes `project` + `file` (+ `ref`) and `template` entries as
/// `include:` does; they are read through the same resolver (another project's file at its
/// ref, a GitLab template), so whatever resolves for `include:` resolves for a child.
#[test]
fn child_configuration_reads_other_projects_and_templates_through_the_include_resolver() {
    let yml = "t:\n  trigger:\n    include:\n      - project: group/shared\n        ref: v1\n        file: ci/child.yml\n      - template: Child.gitlab-ci.yml\n";
    let trigger = bridge(yml, "t");
    let mut base = pipeline_spec::load::MemoryResolver::new();
    base.add_at(Some("group/shared"), "ci/child.yml", "v1", "shared-job:\n  script: [x]\n");
    base.add_template("Child.gitlab-ci.yml", "template-job:\n  script: [y]\n");
    let res = WithArtifacts { base: &base, artifact: |_: &str, _: &str| Err(ResolveError::NotFound) };
    let loaded = load_child("`trigger:include` of job `t`", &trigger, &res, &LoadOptions::default());
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    assert_eq!(loaded.pipeline.unwrap().jobs.keys().collect::<Vec<_>>(), ["shared-job", "template-job"]);
    // A project the resolver does not know is "unavailable", as for `include:`.
    let unknown = bridge("t:\n  trigger:\n    include:\n      - project: group/absent\n        file: c.yml\n", "t");
    let loaded = load_child("`trigger:include` of job `t`", &unknown, &res, &LoadOptions::default());
    assert!(loaded.unavailable().next().is_some(), "{}", diagnostics(&loaded));
}
