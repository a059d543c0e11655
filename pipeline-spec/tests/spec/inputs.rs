//! `spec:inputs` and `$[[ inputs.NAME ]]` interpolation, each test naming the GitLab rule it
//! pins (CI YAML reference `spec:inputs`, the "CI/CD inputs" page).

use crate::{Trigger, assert_error, diagnostics, load_with, plan_for};

const TEMPLATE: &str = r#"spec:
  inputs:
    job:
    stage:
      default: test
    retries:
      type: number
      default: 1
    manual:
      type: boolean
      default: false
    targets:
      type: array
      default: [a, b]
    env:
      options: [dev, prod]
      default: dev
    version:
      regex: ^v\d+\.\d+$
      default: v1.0
---
"$[[ inputs.job ]]-build":
  stage: $[[ inputs.stage ]]
  retry: $[[ inputs.retries ]]
  allow_failure: $[[ inputs.manual ]]
  parallel:
    matrix:
      - TARGET: $[[ inputs.targets ]]
  script:
    - echo "$[[ inputs.env ]] $[[ inputs.version ]] $[[ inputs.targets ]]"
"#;

fn with_template(include: &str) -> pipeline_spec::load::Loaded {
    load_with(&format!("stages: [test, deploy]\ninclude:\n{include}"), &[("t.yml", TEMPLATE)], &[])
}

/// GitLab: an input without `default` is required; the others take their default. A scalar that
/// is exactly one block takes the input's type (number, boolean, array); text around a block
/// makes a string, where an array reads as Ruby writes it.
#[test]
fn values_and_defaults_keep_their_type() {
    let loaded = with_template("  - local: t.yml\n    inputs:\n      job: api\n");
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let p = loaded.pipeline.unwrap();
    let job = &p.jobs["api-build"];
    assert_eq!(job.stage, "test");
    assert_eq!(job.retry.max, 1);
    assert_eq!(job.script, [r#"echo "dev v1.0 ["a", "b"]""#]);
    let plan =
        plan_for("stages: [test]\ninclude:\n  - local: t.yml\n    inputs: {job: api}\n", &[("t.yml", TEMPLATE)], &Trigger::default());
    let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["api-build: [a]", "api-build: [b]"]);
}

/// GitLab: the same file included twice with different inputs gives two sets of jobs.
#[test]
fn one_file_included_twice_with_different_inputs() {
    let loaded = with_template(
        "  - local: t.yml\n    inputs: {job: api, stage: deploy, targets: [x]}\n  - local: t.yml\n    inputs: {job: web, env: prod}\n",
    );
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let p = loaded.pipeline.unwrap();
    assert_eq!(p.jobs.keys().collect::<Vec<_>>(), ["api-build", "web-build"]);
    assert_eq!(p.jobs["api-build"].stage, "deploy");
    assert_eq!(p.jobs["web-build"].script, [r#"echo "prod v1.0 ["a", "b"]""#]);
}

/// GitLab rejects, each at its place: an unknown input passed, a required input missing, a
/// value of the wrong type, a value outside `options`, a string not matching `regex`.
#[test]
fn every_input_error_is_positioned() {
    let loaded = with_template(
        "  - local: t.yml\n    inputs:\n      stag: x\n      retries: many\n      env: staging\n      version: '1.0'\n      manual: 'yes'\n",
    );
    assert_error(&loaded, 3, 5, "input `job` of `t.yml` is required and has no value");
    assert_error(&loaded, 5, 7, "unknown input `stag`: `t.yml` does not declare it in `spec:inputs`; did you mean `stage`?");
    assert_error(&loaded, 6, 16, "input `retries` is a `number`, found a string");
    assert_error(&loaded, 7, 12, "input `env`: `staging` is not one of the allowed options `dev`, `prod`");
    assert_error(&loaded, 8, 16, r"input `version`: `1.0` does not match the required pattern `^v\d+\.\d+$`");
    assert_error(&loaded, 9, 15, "input `manual` is a `boolean`, found a string");
    // GitLab does not read a file whose inputs are wrong: nothing else is reported from it.
    assert_eq!(loaded.errors().count(), 6, "{}", diagnostics(&loaded));
    assert!(loaded.pipeline.unwrap().jobs.is_empty());
}

/// GitLab: a bad default is an error of the header; a type outside the four is refused.
#[test]
fn header_errors_point_into_the_header() {
    let t = "spec:\n  inputs:\n    a:\n      type: number\n      default: one\n    b:\n      type: text\n---\nj:\n  script: [x]\n";
    let loaded = load_with("include:\n  - local: t.yml\n", &[("t.yml", t)], &[]);
    let d = diagnostics(&loaded);
    assert!(d.contains("t.yml:5:16: error: key `inputs:a`: input `a` is a `number`, found a string"), "{d}");
    assert!(d.contains("t.yml:7:13: error: key `spec:inputs:b:type`: input type must be"), "{d}");
    assert!(d.contains("help: pass a number without quotes"), "{d}");
}

/// GitLab: "Given inputs not defined in the `spec` section of the included configuration file",
/// and an interpolation key the header does not declare is an error where it is used.
#[test]
fn inputs_to_a_file_without_header_and_unknown_keys() {
    let loaded = load_with("include:\n  - local: t.yml\n    inputs: {a: 1}\n", &[("t.yml", "j:\n  script: [x]\n")], &[]);
    assert_error(&loaded, 3, 13, "`t.yml` takes no inputs: it has no `spec:inputs` header");
    let t = "spec:\n  inputs:\n    name:\n      default: x\n---\nj:\n  script: [\"$[[ inputs.nmae ]]\"]\n";
    let loaded = load_with("include: t.yml\n", &[("t.yml", t)], &[]);
    assert_error(&loaded, 7, 12, "unknown input `nmae` in `$[[ inputs.nmae ]]`");
}

/// GitLab's interpolation functions: `expand_vars` expands variables known when the pipeline
/// is created (unknown ones stay), `truncate(offset,length)`, `posix_escape`; at most three.
#[test]
fn interpolation_functions() {
    let t = r#"spec:
  inputs:
    name:
      default: "$CI_PROJECT_NAME-$NOT_SET"
    text:
      default: "a b'c"
---
"job-$[[ inputs.name | expand_vars | truncate(0,8) ]]":
  script:
    - echo $[[ inputs.text | posix_escape ]]
    - echo $[[ inputs.name | truncate(4, 100) ]]
    - echo $[[ inputs.name ]]
"#;
    let loaded = load_with("include: t.yml\n", &[("t.yml", t)], &[("CI_PROJECT_NAME", "piste")]);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let p = loaded.pipeline.unwrap();
    let job = &p.jobs["job-piste-$N"];
    assert_eq!(job.script, [r"echo a\ b\'c", "echo PROJECT_NAME-$NOT_SET", "echo $CI_PROJECT_NAME-$NOT_SET"]);
    let bad = "spec:\n  inputs:\n    n:\n      type: number\n      default: 1\n---\nj:\n  script: [\"$[[ inputs.n | truncate(0,1) ]]\", \"$[[ inputs.n | up ]]\"]\n";
    let loaded = load_with("include: t.yml\n", &[("t.yml", bad)], &[]);
    assert_error(&loaded, 8, 12, "`truncate` applies to string inputs, found an integer");
    assert_error(&loaded, 8, 47, "no function `up`");
}

/// GitLab: the pipeline's own file may declare inputs; without values they take defaults.
/// Inputs given in an `include` may themselves be interpolated from the including file's.
#[test]
fn entry_file_inputs_take_defaults_and_pass_through_includes() {
    let main = "spec:\n  inputs:\n    stage:\n      default: deploy\n---\nstages: [deploy]\ninclude:\n  - local: t.yml\n    inputs:\n      job: x\n      stage: $[[ inputs.stage ]]\n";
    let loaded = load_with(main, &[("t.yml", TEMPLATE)], &[]);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    assert_eq!(loaded.pipeline.unwrap().jobs["x-build"].stage, "deploy");
}

/// Untrusted inputs: a value copied many times is bounded like an alias bomb.
#[test]
fn interpolation_output_is_bounded() {
    let big = "x".repeat(600 * 1024);
    let t = format!(
        "spec:\n  inputs:\n    v:\n      default: \"{big}\"\n---\nj:\n  script:\n{}",
        "    - \"$[[ inputs.v ]]$[[ inputs.v ]]\"\n".repeat(40)
    );
    let loaded = load_with("include: t.yml\n", &[("t.yml", &t)], &[]);
    let d = diagnostics(&loaded);
    assert!(d.contains("interpolation makes a value longer than") || d.contains("interpolation adds more than"), "{d}");
}

/// GitLab: `$[[ matrix.KEY ]]` in `needs:parallel:matrix` is the needing instance's own value,
/// and a `needs:parallel:matrix` naming only some keys needs every instance with those values.
#[test]
fn needs_matrix_expressions_and_partial_keys() {
    let main = r#"
build:
  stage: build
  script: [b]
  parallel:
    matrix:
      - OS: [linux, mac]
        ARCH: [amd64, arm64]
test:
  stage: test
  script: [t]
  parallel:
    matrix:
      - OS: [linux, mac]
  needs:
    - job: build
      parallel:
        matrix:
          - OS: ['$[[ matrix.OS ]]']
"#;
    let plan = plan_for(main, &[], &Trigger::default());
    let needs = |name: &str| -> Vec<String> {
        plan.jobs.iter().find(|j| j.name == name).unwrap().needs.iter().flatten().map(|n| n.job.clone()).collect()
    };
    assert_eq!(needs("test: [linux]"), ["build: [linux, amd64]", "build: [linux, arm64]"]);
    assert_eq!(needs("test: [mac]"), ["build: [mac, amd64]", "build: [mac, arm64]"]);
    // GitLab's `MatrixInterpolator`: a variable the job's matrix lacks is an error.
    let bad = main.replace("matrix.OS", "matrix.ARCH");
    let loaded = crate::load_main(&bad);
    let pipeline = loaded.pipeline.expect("loads");
    let ctx = pipeline_spec::plan::PlanContext { predefined: Trigger::default().context().pipeline_variables(), ..Default::default() };
    match pipeline_spec::plan::plan(&pipeline, &ctx) {
        Err(pipeline_spec::plan::PlanError::Invalid(d)) => {
            assert!(
                d.iter().any(|d| d.message.contains("`$[[ matrix.ARCH ]]`: `ARCH` is not a variable of this job's `parallel:matrix`")),
                "{d:?}"
            )
        }
        other => panic!("expected a plan error, got {other:?}"),
    }
}

/// GitLab's default interpolation (`Interpolation::Template`) replaces parsed nodes, not text: a
/// string passed on whole stays a string even when it reads like a number (gwpy passes `"3.11"`
/// on to a `string` input this way), and a value is never read as YAML.
#[test]
fn a_string_passed_on_whole_stays_a_string() {
    let inner = "spec:\n  inputs:\n    version:\n      type: string\n---\n\"test-$[[ inputs.version ]]\":\n  script: [x]\n";
    let outer = "spec:\n  inputs:\n    version:\n      default: '3.11'\n    extra:\n      default: 'when: manual'\n---\ninclude:\n  - local: inner.yml\n    inputs:\n      version: $[[ inputs.version ]]\nouter:\n  script: [\"$[[ inputs.extra ]]\"]\n";
    let loaded = load_with("include: outer.yml\n", &[("outer.yml", outer), ("inner.yml", inner)], &[]);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let p = loaded.pipeline.unwrap();
    assert!(p.jobs.contains_key("test-3.11"));
    assert_eq!(p.jobs["outer"].script, ["when: manual"]);
    // Only `inputs` is known; `matrix` blocks are left for `needs:parallel:matrix`.
    let t = "spec:\n  inputs:\n---\nj:\n  script: [\"$[[ vars.X ]]\", \"$[[ matrix.OS ]]\"]\n";
    let loaded = load_with("include: t.yml\n", &[("t.yml", t)], &[]);
    assert_error(&loaded, 5, 12, "unknown interpolation key `vars.X`");
    assert_eq!(loaded.errors().count(), 1, "{}", diagnostics(&loaded));
}

/// GitLab: `default: null` makes an input optional without a value (it reads as nothing in a
/// string, `null` where it is the whole value); a value given as `null` counts as not given;
/// `description` documents an input and must be a string.
#[test]
fn null_defaults_null_values_and_descriptions() {
    let t = "spec:\n  inputs:\n    flags:\n      default: null\n      description: 'Extra flags'\n    count:\n      type: number\n      default: 2\n---\nj:\n  script: [\"run $[[ inputs.flags ]]x\"]\n  retry: $[[ inputs.count ]]\n";
    let loaded = load_with("include:\n  - local: t.yml\n    inputs: {count: null}\n", &[("t.yml", t)], &[]);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let p = loaded.pipeline.unwrap();
    assert_eq!(p.jobs["j"].script, ["run x"]);
    assert_eq!(p.jobs["j"].retry.max, 2);
    let t = "spec:\n  inputs:\n    a:\n      description: [not, text]\n---\nj:\n  script: [x]\n";
    let loaded = load_with("include:\n  - local: t.yml\n    inputs: {a: x}\n", &[("t.yml", t)], &[]);
    assert_error(&loaded, 4, 20, "`description` of input `a` must be a string, found a list");
}

/// GitLab: "The string inside an interpolation block must not exceed 1 KB".
#[test]
fn a_block_holds_at_most_one_kilobyte() {
    let long = format!("inputs.a{}", " | truncate(0,1)".repeat(70));
    let t = format!("spec:\n  inputs:\n    a:\n      default: x\n---\nj:\n  script: [\"$[[ {long} ]]\"]\n");
    let loaded = load_with("include: t.yml\n", &[("t.yml", &t)], &[]);
    assert_error(&loaded, 7, 12, "GitLab allows at most 1024");
}

/// GitLab's conditional inputs (`spec:inputs:NAME:rules`): the first rule whose `if` holds
/// for the other inputs' values gives `options` and `default`; `rules` excludes the input's own
/// `options` and `default`; a condition on an undeclared input, and a circle of inputs, are
/// errors.
#[test]
fn input_rules_choose_options_and_defaults() {
    let t = r#"spec:
  inputs:
    cloud:
      options: [aws, gcp]
      default: aws
    env:
      options: [dev, prod]
      default: dev
    size:
      rules:
        - if: $[[ inputs.cloud ]] == "aws" && $[[ inputs.env ]] == "dev"
          options: [t3.micro, t3.small]
          default: t3.micro
        - if: $[[ inputs.cloud ]] == "gcp"
          options: [e2-standard-4]
          default: e2-standard-4
        - default: large
---
"vm-$[[ inputs.size ]]":
  script: [x]
"#;
    let job = |inputs: &str| {
        let loaded = load_with(&format!("include:\n  - local: t.yml\n    inputs: {inputs}\n"), &[("t.yml", t)], &[]);
        assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
        loaded.pipeline.unwrap().jobs.keys().next().unwrap().clone()
    };
    assert_eq!(job("{}"), "vm-t3.micro");
    assert_eq!(job("{size: t3.small}"), "vm-t3.small");
    assert_eq!(job("{cloud: gcp}"), "vm-e2-standard-4");
    assert_eq!(job("{env: prod}"), "vm-large");
    let loaded = load_with("include:\n  - local: t.yml\n    inputs: {cloud: gcp, size: t3.micro}\n", &[("t.yml", t)], &[]);
    assert_error(&loaded, 3, 32, "input `size`: `t3.micro` is not one of the allowed options `e2-standard-4`");

    let both = "spec:\n  inputs:\n    a:\n      default: x\n      rules:\n        - default: y\n---\nj:\n  script: [x]\n";
    let loaded = load_with("include: t.yml\n", &[("t.yml", both)], &[]);
    assert_error(&loaded, 5, 7, "input `a` has both `rules` and `default`");
    let unknown =
        "spec:\n  inputs:\n    a:\n      rules:\n        - if: $[[ inputs.b ]] == 'x'\n          default: y\n---\nj:\n  script: [x]\n";
    let loaded = load_with("include: t.yml\n", &[("t.yml", unknown)], &[]);
    assert_error(&loaded, 5, 11, "a rule of input `a` reads `inputs.b`, which the header does not declare");
    let circle = "spec:\n  inputs:\n    a:\n      rules:\n        - if: $[[ inputs.b ]] == 'x'\n          default: y\n    b:\n      rules:\n        - if: $[[ inputs.a ]] == 'y'\n          default: x\n---\nj:\n  script: [x]\n";
    let loaded = load_with("include: t.yml\n", &[("t.yml", circle)], &[]);
    assert_error(&loaded, 3, 5, "the rules of input `a` depend on it through a circle of inputs: a, b");
}
