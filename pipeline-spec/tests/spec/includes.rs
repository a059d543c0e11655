//! `include`: local, project, nested, conditional, wildcard, unavailable kinds, cycles.

use crate::{assert_error, diagnostics, load_with};

#[test]
fn local_and_project_includes_merge_with_the_main_file_winning() {
    let main = r#"
include:
  - local: /ci/build.yml
  - project: $CATALOG
    ref: main
    file: [kaniko.yml]
variables:
  SHARED: main
"#;
    let build = "variables:\n  SHARED: build\n  ONLY_BUILD: b\nbuild:\n  extends: .kaniko\n";
    let kaniko = ".kaniko:\n  image: kaniko\n  script: [build-image]\n";
    let loaded = load_with(
        main,
        &[("ci/build.yml", build), ("cloud-pi-native/catalog:kaniko.yml", kaniko)],
        &[("CATALOG", "cloud-pi-native/catalog")],
    );
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let p = loaded.pipeline.unwrap();
    let vars: Vec<(&str, &str)> = p.variables.iter().map(|v| (v.name.as_str(), v.value.as_str())).collect();
    assert_eq!(vars, [("SHARED", "main"), ("ONLY_BUILD", "b")]);
    assert_eq!(p.jobs["build"].script, ["build-image"]);
    assert_eq!(loaded.sources.files().len(), 3);
}

#[test]
fn nested_local_includes_resolve_inside_the_included_project() {
    let main = "include:\n  - project: lib/catalog\n    file: main.yml\n";
    let cat_main = "include:\n  - local: jobs.yml\n";
    let cat_jobs = "lint:\n  script: [lint]\n";
    let loaded = load_with(main, &[("lib/catalog:main.yml", cat_main), ("lib/catalog:jobs.yml", cat_jobs)], &[]);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    assert!(loaded.pipeline.unwrap().jobs.contains_key("lint"));
}

#[test]
fn include_cycles_are_named() {
    let loaded = load_with("include: a.yml\n", &[("a.yml", "include: b.yml\n"), ("b.yml", "include: a.yml\njob:\n  script: [x]\n")], &[]);
    let d = diagnostics(&loaded);
    assert!(d.contains("include cycle: a.yml → b.yml → a.yml"), "{d}");
}

#[test]
fn unavailable_kinds_are_reported_as_such_not_as_typos() {
    let main = "include:\n  - remote: https://example.test/ci.yml\n  - template: Security/SAST.gitlab-ci.yml\njob:\n  script: [x]\n";
    let loaded = load_with(main, &[], &[]);
    assert_error(&loaded, 2, 5, "cannot resolve `include:remote` `https://example.test/ci.yml`: remote includes cannot be fetched offline");
    assert_error(
        &loaded,
        3,
        5,
        "cannot resolve `include:template` `Security/SAST.gitlab-ci.yml`: GitLab's templates are not available offline",
    );
}

#[test]
fn unknown_include_keys_and_missing_files() {
    let loaded = load_with("include:\n  - locl: a.yml\n  - local: missing.yml\njob:\n  script: [x]\n", &[], &[]);
    assert_error(&loaded, 2, 5, "unknown `include` key `locl`; did you mean `local`?");
    assert_error(&loaded, 3, 5, "cannot resolve include of local file `missing.yml`: file not found");
}

#[test]
fn undefined_project_variable_says_how_to_pass_it() {
    let loaded = load_with("include:\n  - project: $CATALOG_PATH\n    file: x.yml\n", &[], &[]);
    let d = diagnostics(&loaded);
    assert!(d.contains("`include:project` `$CATALOG_PATH` expands to an empty project path"), "{d}");
    assert!(d.contains("pass it with `--var CATALOG_PATH=group/project`"), "{d}");
}

#[test]
fn include_rules_and_wildcards() {
    let main = "include:\n  - local: ci/*.yml\n  - local: extra.yml\n    rules:\n      - if: $WITH_EXTRA == \"1\"\n";
    let files = [("ci/a.yml", "a:\n  script: [x]\n"), ("ci/b.yml", "b:\n  script: [x]\n"), ("extra.yml", "extra:\n  script: [x]\n")];
    let without = load_with(main, &files, &[]);
    assert_eq!(without.pipeline.unwrap().jobs.keys().cloned().collect::<Vec<_>>(), ["a", "b"]);
    let with = load_with(main, &files, &[("WITH_EXTRA", "1")]);
    assert_eq!(with.pipeline.unwrap().jobs.keys().cloned().collect::<Vec<_>>(), ["a", "b", "extra"]);
}

#[test]
fn errors_point_into_the_included_file() {
    let loaded = load_with("include: ci/jobs.yml\n", &[("ci/jobs.yml", "job:\n  scirpt: [x]\n")], &[]);
    let d = diagnostics(&loaded);
    assert!(d.contains("ci/jobs.yml:2:3: error: job `job`, key `scirpt`: unknown key `scirpt`; did you mean `script`?"), "{d}");
}

/// GitLab's `include:local` wildcards (CI YAML reference, "include:local with wildcard file
/// paths"): `*` stays in its folder, `**.yml` reaches every subfolder, `**/*.yml` only them.
#[test]
fn local_wildcards_follow_gitlabs_three_documented_forms() {
    let files = [
        ("configs/top.yml", "top:\n  script: [x]\n"),
        ("configs/sub/mid.yml", "mid:\n  script: [x]\n"),
        ("configs/sub/deep/low.yml", "low:\n  script: [x]\n"),
        ("configs/skip.yaml", "skip:\n  script: [x]\n"),
    ];
    let jobs = |pattern: &str| {
        let loaded = load_with(&format!("include:\n  - local: '{pattern}'\n"), &files, &[]);
        assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
        loaded.pipeline.unwrap().jobs.keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(jobs("configs/*.yml"), ["top"]);
    assert_eq!(jobs("configs/**.yml"), ["low", "mid", "top"]);
    assert_eq!(jobs("configs/**/*.yml"), ["low", "mid"]);
}

/// An include that cannot be read here is "unavailable", not "invalid", and so is what only
/// follows from it; a local file missing from the project is invalid (GitLab: "Local file
/// `x` does not exist!"), and a name it would have defined stays an error too.
#[test]
fn unavailable_includes_are_typed_apart_from_invalid_ones() {
    use pipeline_spec::diag::Kind;
    let main =
        "include:\n  - template: Jobs/SAST.gitlab-ci.yml\n  - project: other/catalog\n    file: ci.yml\njob:\n  extends: .from-catalog\n";
    let loaded = load_with(main, &[], &[]);
    let kinds: Vec<(u32, Kind)> = loaded.errors().map(|d| (d.span.line, d.kind)).collect();
    assert_eq!(kinds, [(2, Kind::Unavailable), (4, Kind::Unavailable), (6, Kind::FollowsFromUnavailable)], "{}", diagnostics(&loaded));
    assert_eq!(loaded.invalid().count(), 0);
    assert_eq!(loaded.unavailable().count(), 2);

    let loaded = load_with("include:\n  - local: missing.yml\njob:\n  extends: .from-missing\n", &[], &[]);
    let kinds: Vec<(u32, Kind)> = loaded.errors().map(|d| (d.span.line, d.kind)).collect();
    assert_eq!(kinds, [(2, Kind::Invalid), (4, Kind::Invalid)], "{}", diagnostics(&loaded));
}

/// GitLab: a wildcard `include:local` that matches no file includes nothing (no error), and
/// `include:rules:exists` includes a file only when one of its paths exists in the project.
#[test]
fn empty_wildcards_and_rules_exists() {
    let files = [("ci/a.yml", "a:\n  script: [x]\n"), ("extra.yml", "extra:\n  script: [x]\n"), ("Dockerfile", "FROM scratch\n")];
    let main = "include:\n  - local: none/*.yml\n  - local: extra.yml\n    rules:\n      - exists: [Dockerfile]\n  - local: ci/a.yml\n    rules:\n      - exists: [missing/**]\njob:\n  script: [x]\n";
    let loaded = load_with(main, &files, &[]);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    assert_eq!(loaded.pipeline.unwrap().jobs.keys().cloned().collect::<Vec<_>>(), ["extra", "job"]);
}
