//! Includes read from mirrors: local files (and wildcards) at the pipeline's commit, other
//! projects' files at a ref or at their default branch.

use std::collections::HashMap;

use pipeline_spec::include::{IncludeResolver, ResolveError};
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
    assert!(matches!(at_two.remote("https://example.com/ci.yml"), Err(ResolveError::Unavailable(_))));
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
    let err = r.read(Some("group/templates"), "templates/build.yml", Some("no-such-ref")).unwrap_err();
    assert!(matches!(&err, ResolveError::Other(m) if m.contains("no-such-ref")), "{err:?}");
    assert_eq!(r.glob(Some("group/templates"), "templates/*.yml", None).unwrap(), ["templates/build.yml"]);

    // Naming the pipeline's own project reads its own mirror.
    assert_eq!(r.read(Some("group/app"), "x", None), Err(ResolveError::UnknownProject));
    let named = r.clone().named("group/app");
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
