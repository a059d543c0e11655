//! `needs`, `dependencies`, stage ordering, `parallel` naming and the DAG.

use crate::{Trigger, assert_error, load_main, names, plan_errors, plan_for};

#[test]
fn parallel_and_matrix_names_match_gitlab() {
    let yml = r#"
rspec:
  script: [x]
  parallel: 3
deploy:
  script: [x]
  parallel:
    matrix:
      - PROVIDER: aws
        STACK: [monitoring, app]
      - PROVIDER: ovh
"#;
    assert_eq!(
        names(yml, &Trigger::default()),
        ["rspec 1/3", "rspec 2/3", "rspec 3/3", "deploy: [aws, monitoring]", "deploy: [aws, app]", "deploy: [ovh]"]
    );
    let plan = plan_for(yml, &[], &Trigger::default());
    assert_eq!(plan.jobs[4].variables, [("PROVIDER".to_string(), "aws".to_string()), ("STACK".to_string(), "app".to_string())]);
    assert_eq!(plan.jobs[4].node, Some((2, 3)));
}

#[test]
fn needs_on_a_parallel_job_means_all_instances_or_the_selected_ones() {
    let yml = r#"
stages: [build, test]
build:
  stage: build
  script: [x]
  parallel:
    matrix:
      - ARCH: [amd64, arm64]
all:
  stage: test
  script: [x]
  needs: [build]
one:
  stage: test
  script: [x]
  needs:
    - job: build
      parallel:
        matrix:
          - ARCH: arm64
"#;
    let plan = plan_for(yml, &[], &Trigger::default());
    let needs = |n: &str| plan.job(n).unwrap().needs.as_ref().unwrap().iter().map(|x| x.job.clone()).collect::<Vec<_>>();
    assert_eq!(needs("all"), ["build: [amd64]", "build: [arm64]"]);
    assert_eq!(needs("one"), ["build: [arm64]"]);
}

#[test]
fn empty_needs_starts_at_once_and_stage_jobs_have_no_needs() {
    let yml = "stages: [a, b]\nx:\n  stage: a\n  script: [x]\ny:\n  stage: b\n  script: [x]\n  needs: []\nz:\n  stage: b\n  script: [x]\n";
    let plan = plan_for(yml, &[], &Trigger::default());
    assert_eq!(plan.job("y").unwrap().needs, Some(vec![]));
    assert_eq!(plan.job("z").unwrap().needs, None);
    assert_eq!(plan.predecessors(2), [0]);
    assert!(plan.predecessors(1).is_empty());
}

#[test]
fn needs_on_a_later_stage_is_an_error() {
    let yml = "stages: [build, test]\nbuild:\n  stage: build\n  script: [x]\n  needs: [test]\ntest:\n  stage: test\n  script: [x]\n";
    let loaded = load_main(yml);
    assert_error(&loaded, 5, 11, "`needs` refers to `test` in the later stage `test`");
}

#[test]
fn unknown_needs_and_dependencies_suggest_the_closest_job() {
    let yml = "stages: [build, test]\ncompile:\n  stage: build\n  script: [x]\ntest:\n  stage: test\n  script: [x]\n  needs: [compil]\n  dependencies: [compile]\n";
    let loaded = load_main(yml);
    assert_error(&loaded, 8, 11, "`needs` refers to `compil`, which is not defined; did you mean `compile`?");
    assert_error(&loaded, 9, 18, "`dependencies` lists `compile`, which is not in `needs`");
}

#[test]
fn needs_on_a_job_excluded_by_rules_is_an_error_unless_optional() {
    let yml =
        "stages: [a, b]\nx:\n  stage: a\n  script: [x]\n  rules:\n    - if: $CI_COMMIT_TAG\ny:\n  stage: b\n  script: [x]\n  needs: [x]\n";
    let errs = plan_errors(yml, &Trigger::default());
    assert!(
        errs.contains(
            ".gitlab-ci.yml:10:11: error: job `y`, key `needs`: `needs` refers to `x`, which is not in the pipeline for this trigger"
        ),
        "{errs}"
    );
    let optional = yml.replace("needs: [x]", "needs:\n    - job: x\n      optional: true");
    let plan = plan_for(&optional, &[], &Trigger::default());
    assert_eq!(plan.job("y").unwrap().needs, Some(vec![]));
}

#[test]
fn needs_cycles_in_one_stage_are_named() {
    let yml = "a:\n  script: [x]\n  needs: [c]\nb:\n  script: [x]\n  needs: [a]\nc:\n  script: [x]\n  needs: [b]\n";
    let errs = plan_errors(yml, &Trigger::default());
    assert!(errs.contains("`needs` form a cycle: a → c → b → a"), "{errs}");
}

#[test]
fn critical_path_follows_needs_and_stages() {
    let yml = "stages: [build, test, deploy]\nb1:\n  stage: build\n  script: [x]\nb2:\n  stage: build\n  script: [x]\nt1:\n  stage: test\n  script: [x]\n  needs: [b2]\nt2:\n  stage: test\n  script: [x]\n  needs: [t1]\nd:\n  stage: deploy\n  script: [x]\n";
    let plan = plan_for(yml, &[], &Trigger::default());
    let (len, path) = plan.critical_path(|_| 1);
    let names: Vec<&str> = path.iter().map(|&i| plan.jobs[i].name.as_str()).collect();
    assert_eq!((len, names), (4, vec!["b2", "t1", "t2", "d"]));
}

/// GitLab's `Ci::BuildDependencies#local`: candidates are the `needs` with `artifacts: true`
/// when the job has `needs` (even `needs: []`, a DAG job), else the jobs of earlier stages;
/// `dependencies` keeps only the candidates it names, and `dependencies: []` keeps none.
#[test]
fn artifact_sources_follow_gitlabs_needs_and_dependencies_rule() {
    let yml = r#"
stages: [build, test]
build:
  stage: build
  script: [x]
other:
  stage: build
  script: [x]
sibling:
  stage: test
  script: [x]
plain:
  stage: test
  script: [x]
picked:
  stage: test
  script: [x]
  dependencies: [build, sibling]
none:
  stage: test
  script: [x]
  dependencies: []
no_artifacts:
  stage: test
  script: [x]
  needs: [{job: build, artifacts: false}, other]
no_artifacts_even_listed:
  stage: test
  script: [x]
  needs: [{job: build, artifacts: false}]
  dependencies: [build]
empty_needs_with_dependencies:
  stage: test
  script: [x]
  needs: []
  dependencies: [build]
"#;
    let loaded = load_main(yml);
    assert!(!loaded.has_errors(), "GitLab accepts `needs: []` with `dependencies` (its subset check needs `needs` present)");
    let plan = plan_for(yml, &[], &Trigger::default());
    let sources = |n: &str| plan.artifact_sources(plan.jobs.iter().position(|j| j.name == n).unwrap());
    assert_eq!(sources("plain"), ["build", "other"]);
    assert_eq!(sources("picked"), ["build"], "a job of the same stage is never a source without `needs`");
    assert!(sources("none").is_empty());
    assert_eq!(sources("no_artifacts"), ["other"]);
    assert!(sources("no_artifacts_even_listed").is_empty());
    assert!(sources("empty_needs_with_dependencies").is_empty(), "starts at once, receives nothing");
    assert!(plan.job("empty_needs_with_dependencies").unwrap().needs.as_ref().unwrap().is_empty());
}

/// GitLab's `Entry::Need` strategies: `pipeline` + `job` is a cross-pipeline dependency
/// (`CrossPipelineDependency`: keys `pipeline`, `job`, `artifacts`), `project`/`ref` a
/// cross-project one (`CrossProjectDependency`: `project`, `ref`, `job` required). Both reach
/// the plan as the job's `cross_needs`, values as written (expanded when the job starts); the
/// job is a DAG job (`needs` given), so it has no local needs here.
#[test]
fn needs_pipeline_job_and_needs_project_reach_the_plan_as_cross_needs() {
    use pipeline_spec::model::{CrossNeed, CrossSource};
    let yml = r#"
test:
  script: [x]
  needs:
    - pipeline: $PARENT_PIPELINE_ID
      job: build
    - project: group/lib
      job: package
      ref: main
      artifacts: false
"#;
    let plan = plan_for(yml, &[], &Trigger::default());
    let test = plan.job("test").unwrap();
    assert_eq!(test.needs.as_deref().map(<[_]>::len), Some(0), "a DAG job without local needs");
    assert_eq!(
        test.cross_needs,
        [
            CrossNeed { job: "build".into(), from: CrossSource::Pipeline { pipeline: "$PARENT_PIPELINE_ID".into() }, artifacts: true },
            CrossNeed {
                job: "package".into(),
                from: CrossSource::Project { project: "group/lib".into(), git_ref: "main".into() },
                artifacts: false
            },
        ]
    );
    let loaded = load_main(yml);
    assert!(loaded.diagnostics.is_empty(), "no warning either:\n{}", crate::diagnostics(&loaded));
}

/// GitLab's entries validate presence and allowed keys: `needs:project` needs `ref` and `job`;
/// `needs:pipeline:job` takes no `optional` (not among its allowed keys); an empty `pipeline`
/// fails `presence`. Each error at its position.
#[test]
fn cross_needs_missing_or_unknown_keys_are_errors_at_their_position() {
    let yml = r#"
a:
  script: [x]
  needs:
    - project: group/lib
      job: package
b:
  script: [x]
  needs:
    - pipeline: $PARENT_PIPELINE_ID
      job: build
      optional: true
c:
  script: [x]
  needs:
    - pipeline: ''
      job: build
d:
  script: [x]
  needs:
    - project: group/lib
      ref: main
"#;
    let loaded = load_main(yml);
    assert_error(&loaded, 5, 7, "this `needs` entry needs `ref:`: the branch or tag");
    assert_error(&loaded, 12, 7, "unknown key `optional` in `needs`");
    assert_error(&loaded, 16, 17, "`pipeline` of a `needs` entry is empty: the id of the parent pipeline");
    assert_error(&loaded, 21, 7, "this `needs` entry needs `job:`");
}

/// `needs: [{pipeline: other/project}]` without `job` is GitLab's deprecated way for a trigger
/// job to mirror an upstream pipeline's status (`BridgeHash`): recognised, not run — a warning
/// that says which form fetches artifacts.
#[test]
fn needs_pipeline_without_job_is_a_warning_saying_what_runs() {
    let loaded = load_main("up:\n  script: [x]\n  needs:\n    - pipeline: group/upstream\n");
    assert!(!loaded.has_errors(), "{}", crate::diagnostics(&loaded));
    let all = crate::diagnostics(&loaded);
    assert!(
        all.contains(".gitlab-ci.yml:4:7: warning: job `up`, key `needs`: piste does not run `needs:pipeline` without `job:`"),
        "{all}"
    );
    assert!(all.contains("$PARENT_PIPELINE_ID"), "{all}");
}
