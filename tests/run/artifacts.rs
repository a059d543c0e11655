//! Artifacts and caches between jobs and runs; checkouts are clean.

use crate::Project;

#[test]
fn artifacts_flow_to_later_stages_and_needs_but_not_elsewhere() {
    let p = Project::new(
        "stages: [build, test]\nbuild:\n  stage: build\n  script:\n    - mkdir -p dist && echo payload > dist/app.txt && echo junk > junk.txt\n  artifacts:\n    paths: [dist/]\ntest:\n  stage: test\n  script:\n    - cat dist/app.txt\n    - test ! -e junk.txt\nisolated:\n  stage: test\n  needs: []\n  script:\n    - test ! -e dist/app.txt\n",
    );
    let r = p.run(&["--executor", "shell", "--jobs", "1"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(r.log("test").contains(&"payload".to_string()), "{:?}", r.log("test"));
}

#[test]
fn every_job_starts_from_a_clean_checkout() {
    let p = Project::new(
        "stages: [a, b]\ndirty:\n  stage: a\n  script:\n    - echo garbage > untracked.txt\n    - echo changed > tracked.txt\nclean:\n  stage: b\n  script:\n    - test ! -e untracked.txt\n    - test \"$(cat tracked.txt)\" = original\n",
    );
    p.write("tracked.txt", "original\n");
    p.commit();
    let r = p.run(&["--executor", "shell", "--jobs", "1"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
}

#[test]
fn worktree_mode_includes_uncommitted_changes() {
    let p = Project::new("check:\n  script:\n    - cat note.txt\n");
    p.write("note.txt", "committed\n");
    p.commit();
    p.write("note.txt", "uncommitted\n");
    let r = p.run(&["--executor", "shell"]);
    assert!(r.log("check").contains(&"committed".to_string()), "{:?}", r.log("check"));
    let r = p.run(&["--executor", "shell", "--worktree"]);
    assert!(r.log("check").contains(&"uncommitted".to_string()), "{:?}", r.log("check"));
}

#[test]
fn cache_is_kept_between_runs() {
    let p = Project::new(
        "deps:\n  cache:\n    key: deps-$CI_COMMIT_REF_SLUG\n    paths: [vendor/]\n  script:\n    - if [ -f vendor/lib ]; then echo cache-hit; else echo cache-miss; mkdir -p vendor; echo x > vendor/lib; fi\n",
    );
    let first = p.run(&["--executor", "shell"]);
    assert!(first.log("deps").contains(&"cache-miss".to_string()), "{}", first.debug());
    let second = p.run(&["--executor", "shell"]);
    assert!(second.log("deps").contains(&"cache-hit".to_string()), "{}", second.debug());
}

#[test]
fn symlinks_out_of_the_workspace_are_not_collected() {
    let p = Project::new(
        "stages: [a, b]\nsneaky:\n  stage: a\n  script:\n    - mkdir -p out && ln -s /etc/passwd out/passwd && echo ok > out/ok.txt\n  artifacts:\n    paths: [out/]\nreader:\n  stage: b\n  script:\n    - cat out/ok.txt\n    - test ! -e out/passwd\n",
    );
    let r = p.run(&["--executor", "shell"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
}

/// GitLab: `needs: [{job: X, artifacts: false}]` downloads nothing from X (nor its dotenv);
/// `needs: []` with `dependencies:` starts at once and receives nothing (`Ci::BuildDependencies`:
/// with `needs`, only needed jobs with `artifacts: true` are candidates, and `dependencies`
/// filters those); a dotenv report is not a file of the archive unless `paths` lists it.
#[test]
fn needs_artifacts_false_and_empty_needs_with_dependencies_receive_nothing() {
    let p = Project::new(
        "stages: [build, test]\nbuild:\n  stage: build\n  script:\n    - mkdir -p out && echo payload > out/app.txt && echo V=1 > build.env\n  artifacts:\n    paths: [out/]\n    reports:\n      dotenv: build.env\nlisted:\n  stage: build\n  script:\n    - echo W=2 > listed.env\n  artifacts:\n    paths: [listed.env]\n    reports:\n      dotenv: listed.env\nstaged:\n  stage: test\n  script:\n    - echo \"SAW app=$(cat out/app.txt) v=$V w=$W env=$(test -f build.env && echo present || echo absent) listed=$(cat listed.env)\"\nno_artifacts:\n  stage: test\n  needs: [{job: build, artifacts: false}]\n  script:\n    - echo \"SAW app=$(test -f out/app.txt && echo present || echo absent) v=${V:-unset}\"\nempty_needs:\n  stage: test\n  needs: []\n  dependencies: [build]\n  script:\n    - echo \"SAW app=$(test -f out/app.txt && echo present || echo absent) v=${V:-unset}\"\n",
    );
    let r = p.run(&["--executor", "shell", "--jobs", "1"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    let saw = |job: &str| r.log(job).into_iter().filter_map(|l| l.strip_prefix("SAW ").map(str::to_owned)).collect::<Vec<_>>();
    assert_eq!(saw("staged"), ["app=payload v=1 w=2 env=absent listed=W=2"], "a report is a file only when `paths` lists it");
    assert_eq!(saw("no_artifacts"), ["app=absent v=unset"]);
    assert_eq!(saw("empty_needs"), ["app=absent v=unset"]);
}

/// The README's rule for the `artifacts:reports` piste does not read (`codequality`, `sast`,
/// `coverage_report`'s `path`, …): their files are archived with the job's artifacts, so later
/// jobs receive them as they receive `paths`, and nothing reads them.
#[test]
fn reports_piste_does_not_read_are_archived_with_the_artifacts() {
    let p = Project::new(
        "stages: [scan, use]\nscan:\n  stage: scan\n  script:\n    - echo '[]' > gl-code-quality-report.json\n    - echo no-vulnerabilities > gl-sast-report.json\n    - echo '<coverage/>' > coverage.xml\n    - echo left > not-a-report.txt\n  artifacts:\n    reports:\n      codequality: gl-code-quality-report.json\n      sast: [gl-sast-report.json]\n      coverage_report:\n        coverage_format: cobertura\n        path: coverage.xml\nuse:\n  stage: use\n  script:\n    - cat gl-code-quality-report.json gl-sast-report.json coverage.xml\n    - test ! -e not-a-report.txt\n",
    );
    let r = p.run(&["--executor", "shell", "--no-reuse"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    let log = r.log("use");
    for line in ["[]", "no-vulnerabilities", "<coverage/>"] {
        assert!(log.iter().any(|l| l == line), "{line}: {log:?}");
    }
}
