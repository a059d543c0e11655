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
