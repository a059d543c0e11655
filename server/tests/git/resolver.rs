//! Includes read from mirrors: local files (and wildcards) at the pipeline's commit, other
//! projects' files at a ref or at their default branch.

use std::collections::HashMap;

use pipeline_spec::include::{IncludeResolver, RemoteRequest, ResolveError};
use pipeline_spec::load::{LoadOptions, load};

use crate::Source;

#[test]
fn local_includes_and_wildcards_read_the_pipelines_commit() {
    let src = Source::new();
    let one =
        src.commit(&[("ci/build.yml", Some("build: {script: [make]}\n")), ("ci/test.yml", Some("test: {script: [make test]}\n"))], "one");
    let two = src.commit(
        &[("ci/test.yml", None), ("ci/lint.yml", Some("lint: {script: [make lint]}\n")), ("ci/sub/deep.yml", Some("d: 1\n"))],
        "two",
    );
    let m = src.mirror("app");
    let at_one = m.resolver(&one, &HashMap::new());
    let at_two = m.resolver(&two, &HashMap::new());
    assert_eq!(at_one.read(None, "ci/test.yml", None).unwrap(), "test: {script: [make test]}\n");
    assert_eq!(at_two.read(None, "ci/test.yml", None), Err(ResolveError::NotFound));
    assert_eq!(at_one.glob(None, "ci/*.yml", None).unwrap(), ["ci/build.yml", "ci/test.yml"]);
    assert_eq!(at_two.glob(None, "ci/*.yml", None).unwrap(), ["ci/build.yml", "ci/lint.yml"]);
    assert_eq!(at_two.glob(None, "ci/**/*.yml", None).unwrap(), ["ci/build.yml", "ci/lint.yml", "ci/sub/deep.yml"]);
    assert_eq!(at_two.glob(None, "nothing/*.yml", None).unwrap(), Vec::<String>::new());
    assert!(matches!(at_two.read(None, "../../etc/passwd", None), Err(ResolveError::Other(_))));
    assert!(matches!(at_two.glob(None, "ci/[.yml", None), Err(ResolveError::Other(_))));
    let request = RemoteRequest { url: "https://example.com/ci.yml", integrity: None, cache_secs: None };
    assert!(matches!(at_two.remote(&request), Err(ResolveError::Unavailable(_))));
}

#[test]
fn include_project_reads_another_mirror_at_a_ref_or_its_default_branch() {
    let templates = Source::new();
    let v1 = templates.commit(&[("templates/build.yml", Some(".build: {script: [echo v1]}\n"))], "v1");
    templates.annotated_tag("v1", &v1, "v1");
    templates.commit(&[("templates/build.yml", Some(".build: {script: [echo v2]}\n"))], "v2");
    let tpl = templates.mirror("templates");

    let app = Source::new();
    let sha = app.commit(&[("x", Some("x"))], "app");
    let m = app.mirror("app");
    let others = HashMap::from([("group/templates".to_string(), tpl)]);
    let r = m.resolver(&sha, &others);
    assert_eq!(r.read(Some("group/templates"), "templates/build.yml", None).unwrap(), ".build: {script: [echo v2]}\n");
    assert_eq!(r.read(Some("group/templates"), "templates/build.yml", Some("v1")).unwrap(), ".build: {script: [echo v1]}\n");
    assert_eq!(r.read(Some("group/templates"), "templates/build.yml", Some(&v1)).unwrap(), ".build: {script: [echo v1]}\n");
    assert_eq!(r.read(Some("group/templates"), "templates/nope.yml", None), Err(ResolveError::NotFound));
    assert_eq!(r.read(Some("group/unknown"), "templates/build.yml", None), Err(ResolveError::UnknownProject));
    let err = r.read(Some("Group/Templates"), "templates/build.yml", Some("no-such-ref")).unwrap_err();
    assert!(matches!(&err, ResolveError::Other(m) if m.contains("no-such-ref")), "{err:?}");
    assert_eq!(r.glob(Some("group/templates"), "templates/*.yml", None).unwrap(), ["templates/build.yml"]);

    // Naming the pipeline's own project reads its own mirror.
    assert_eq!(r.read(Some("group/app"), "x", None), Err(ResolveError::UnknownProject));
    let named = m.resolver(&sha, &others).named("group/app");
    assert_eq!(named.read(Some("group/app"), "x", None).unwrap(), "x");
}

#[test]
fn the_loader_resolves_a_pipeline_through_mirrors() {
    let templates = Source::new();
    templates.commit(&[("jobs.yml", Some(".template:\n  script: [echo from templates]\n"))], "templates");
    let tpl = templates.mirror("templates");

    let app = Source::new();
    let sha = app.commit(
        &[
            (
                ".gitlab-ci.yml",
                Some(concat!(
                    "include:\n",
                    "  - local: ci/*.yml\n",
                    "  - project: group/templates\n",
                    "    file: jobs.yml\n",
                    "deploy:\n",
                    "  extends: .template\n"
                )),
            ),
            ("ci/build.yml", Some("build:\n  script: [make]\n")),
            ("ci/test.yml", Some("test:\n  script: [make test]\n")),
        ],
        "pipeline",
    );
    let m = app.mirror("app");
    let others = HashMap::from([("group/templates".to_string(), tpl)]);
    let text = m.read_file(&sha, ".gitlab-ci.yml").unwrap().unwrap();
    let loaded = load(".gitlab-ci.yml", ".gitlab-ci.yml", &text, &m.resolver(&sha, &others), &LoadOptions::default());
    let errors: Vec<String> = loaded.errors().map(|d| d.display(&loaded.sources).to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let pipeline = loaded.pipeline.unwrap();
    let mut jobs: Vec<&str> = pipeline.jobs.keys().map(String::as_str).collect();
    jobs.sort();
    assert_eq!(jobs, ["build", "deploy", "test"]);
}

/// Components read other mirrors' tags (GitLab: `~latest` and partial versions pick among
/// releases); a tag wins over a branch of the same name; a mirror that lacks a ref is fetched
/// once from its configured remote before the ref is called missing.
#[test]
fn components_read_tags_and_fetch_a_missing_ref_once() {
    let comp = Source::new();
    let one = comp.commit(&[("templates/lint.yml", Some("one: {script: [x]}\n"))], "one");
    comp.annotated_tag("1.0.0", &one, "1.0.0");
    comp.branch("same", &one);
    let two = comp.commit(&[("templates/lint.yml", Some("two: {script: [x]}\n"))], "two");
    comp.annotated_tag("same", &two, "same");
    let mirror = comp.mirror("components");
    let app = Source::new();
    let sha = app.commit(&[("x", Some("x"))], "app");
    let m = app.mirror("app");
    let others = HashMap::from([("my-org/components".to_string(), mirror.clone())]);
    let r = m.resolver(&sha, &others);
    let mut tags = r.tags(Some("My-Org/Components")).unwrap();
    tags.sort();
    assert_eq!(tags, ["1.0.0", "same"]);
    assert_eq!(r.read(Some("my-org/components"), "templates/lint.yml", Some("same")).unwrap(), "two: {script: [x]}\n");
    assert_eq!(r.commit(Some("my-org/components"), "1.0.0").unwrap(), one);
    assert_eq!(r.read(Some("my-org/components"), "templates/lint.yml", Some(&one[..10])).unwrap(), "one: {script: [x]}\n");

    // A release made after the mirror was fetched: found once the resolver may fetch.
    let three = comp.commit(&[("templates/lint.yml", Some("three: {script: [x]}\n"))], "three");
    comp.annotated_tag("1.1.0", &three, "1.1.0");
    assert!(r.read(Some("my-org/components"), "templates/lint.yml", Some("1.1.0")).is_err());
    let remotes = HashMap::from([("my-org/components".to_string(), server::git::Remote::new(&comp.url()))]);
    let fetching = m.resolver(&sha, &others).fetching(remotes);
    assert_eq!(fetching.read(Some("my-org/components"), "templates/lint.yml", Some("1.1.0")).unwrap(), "three: {script: [x]}\n");
}
