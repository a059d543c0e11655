//! The shape of diagnostics: every error found, in order, each `FILE:LINE:COL: error: ...`.

use crate::{diagnostics, load_main};

#[test]
fn every_error_is_reported_with_its_position() {
    let yml = r#"stages: [build, test]
variables:
  ENABLED: true
.template:
  image: alpine
build:
  stage: buld
  extends: .templat
  script: [make]
  artefacts:
    paths: [out/]
test:
  stage: test
  needs: [biuld]
  script:
    - run tests: all
  retry: 3
  when: sometimes
"#;
    insta::assert_snapshot!(diagnostics(&load_main(yml)));
}

#[test]
fn a_valid_file_has_no_diagnostics() {
    let loaded = load_main("build:\n  script: [make]\n");
    assert!(loaded.diagnostics.is_empty(), "{}", diagnostics(&loaded));
}

/// GitLab reports an error in copied text against the job that copies it; piste keeps the
/// position of the wrong text and adds the using job's key as a note, for an anchor merged
/// with `<<`, an alias used as a value and a `!reference`.
#[test]
fn errors_in_copied_text_name_the_job_that_uses_it() {
    let main = r#".defaults: &defaults
  when: sometimes
.retry: &retry
  max: many
job:
  <<: *defaults
  script: [x]
  retry: *retry
ref:
  script: [x]
  rules: !reference [.rules, rules]
.rules:
  rules:
    - when: sometimes
"#;
    let loaded = crate::load_main(main);
    let d = diagnostics(&loaded);
    let has = |needle: &str| assert!(d.contains(needle), "missing {needle:?} in:\n{d}");
    has(".gitlab-ci.yml:2:9: error: job `job`, key `when`:");
    has("note: .gitlab-ci.yml:5:1: job `job` uses it here, through an anchor or a `!reference`");
    has(".gitlab-ci.yml:4:8: error: job `job`, key `retry");
    has("note: .gitlab-ci.yml:8:3: job `job` uses it here");
    has(".gitlab-ci.yml:14:13: error: job `ref`, key `rules:when`:");
    has("note: .gitlab-ci.yml:11:3: job `ref` uses it here");
    // An error written in the job itself has no note.
    let loaded = crate::load_main("job:\n  script: [x]\n  when: sometimes\n");
    assert!(loaded.errors().all(|e| e.related.is_empty()), "{}", diagnostics(&loaded));
}
