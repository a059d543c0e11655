//! Every real pipeline in `fixtures/corpus/` loads and plans as GitLab would handle it: the valid
//! ones without a single error, for several triggers; the others with exactly the errors GitLab
//! (or an offline resolver) gives them, listed below with the reason.

use std::path::{Path, PathBuf};

#[path = "support/files.rs"]
mod files;

use pipeline_spec::include::{IncludeResolver, ResolveError};
use pipeline_spec::load::{LoadOptions, load};
use pipeline_spec::plan::{PlanContext, PlanError, plan};
use pipeline_spec::predefined::{Context, MergeRequest, PipelineSource};

const CATALOG: &str = "cloud-pi-native/gitlab-ci-catalog";

/// `(file stem, [(line, expected error text)])` for the pipelines that do not load cleanly.
/// Every error must be listed: an unexpected one fails the test, and so does a missing one.
const EXPECTED: &[(&str, &[(u32, &str)])] = &[
    // GitLab: "chosen stage test does not exist" — the job has no `stage:` and `stages` lacks `test`.
    ("cpin/ArnaudTA__autocicd-values", &[(7, "stage `test` is not declared in `stages`")]),
    // Local includes not published with the corpus (README: known gaps).
    (
        "cpin/ArnaudTa__dso-tuto-static-v3",
        &[
            (2, "cannot resolve include of local file `includes/java-mvn.yml`: file not found"),
            (5, "cannot resolve include of local file `includes/rules.yml`"),
        ],
    ),
    ("cpin/Lkisever__docker-minecraft-server", &[(2, "cannot resolve include of local file `includes/rules.yml`")]),
    ("cpin/cloud-pi-native__tuto-static-monorepo", &[(2, "cannot resolve include of local file `ci/includes/rules.yml`")]),
    ("cpin/dnum-mi__bibliotheque-numerique", &[(3, "cannot resolve include of local file `ci/includes/rules.yml`")]),
    ("cpin/hugodegeorgesTh__tuto-java", &[(7, "cannot resolve include of local file `includes/java-mvn.yml`")]),
    ("cpin/pengfeidong__demarches-simplifiees-docker-bn", &[(2, "cannot resolve include of local file `includes/rules.yml`")]),
    (
        "cpin/tbomp__crttb-tuto-java",
        &[
            (2, "cannot resolve include of local file `includes/java-mvn.yml`"),
            (4, "cannot resolve include of local file `includes/vault.yml`"),
            (5, "cannot resolve include of local file `includes/rules.yml`"),
            (39, "`extends` refers to `.vault:read_secret`, which is not defined"),
            (47, "`extends` refers to `.java:sonar`, which is not defined"),
            (57, "`extends` refers to `.java:build`, which is not defined"),
        ],
    ),
    // The catalog's kaniko-ci-mirror.yml is absent from the corpus (README: known gaps).
    (
        "cpin/dnum-mi__basegun",
        &[
            (6, "cannot resolve include of `kaniko-ci-mirror.yml` from project `cloud-pi-native/gitlab-ci-catalog`: file not found"),
            (33, "`extends` refers to `.kaniko-mirror:build-push`, which is not defined"),
            (43, "`extends` refers to `.kaniko-mirror:build-push`, which is not defined"),
        ],
    ),
    (
        "cpin/etiquet__post-write-2-s3",
        &[
            (6, "cannot resolve include of `kaniko-ci-mirror.yml`"),
            (37, "`extends` refers to `.kaniko-mirror:build-push`, which is not defined"),
        ],
    ),
    // Invalid as published (README): extends a template it never includes.
    ("cpin/SocialGouv__vao", &[(34, "`extends` refers to `.kaniko:build-push`, which is not defined")]),
    // GitLab: "chosen stage package-app does not exist".
    ("cpin/cloud-pi-native__front-test-krakend-base-image", &[(34, "stage `package-app` is not declared in `stages`")]),
    // Invalid as published (README): missing sonar-ci.yml include and an undeclared stage.
    (
        "cpin/cloud-pi-native__prototype-cpin-node",
        &[(32, "stage `sonar-app` is not declared in `stages`"), (34, "`extends` refers to `.sonar:sonar-scanner`, which is not defined")],
    ),
    // GitLab: "chosen stage docker-build does not exist" (no `stages:`, so only the defaults).
    ("cpin/manueldeval__pi", &[(13, "stage `docker-build` is not declared in `stages`")]),
    // Invalid as published (README): a rule written as a bare string; plus a missing local include.
    (
        "cpin/tbomp__repotutovidea",
        &[
            (2, "cannot resolve include of local file `.gitlab/template-ci/cloud-pi-native/kaniko-ci.yml`"),
            (20, "a rule must be a map such as `- if: $CI_COMMIT_BRANCH`, found a string"),
            (22, "`extends` refers to `.kaniko:build-push`, which is not defined"),
        ],
    ),
    // Includes of other GitLab projects, templates and remote URLs: not available offline.
    (
        "general/GNOME__libadwaita",
        &[
            (3, "cannot resolve include of `flatpak/flatpak_ci_initiative.yml` from project `gnome/citemplates`: project is unknown here"),
            (41, "`extends` refers to `.flatpak`, which is not defined"),
        ],
    ),
    ("general/LibrePlan__libreplan", &[(2, "`include:remote` `$LIBREPLAN_BUILDTOOLS_URL` expands to an empty URL")]),
    ("general/LibreWeb__LibreWeb-Browser", &[(14, "cannot resolve `include:template` `Security/SAST.gitlab-ci.yml`")]),
    ("general/wireshark__wireshark", &[(1145, "cannot resolve `include:template` `Security/SAST.gitlab-ci.yml`")]),
    (
        "general/PipeWire__pipewire",
        &[
            (30, "from project `freedesktop/ci-templates`: project is unknown here"),
            (33, "from project `freedesktop/ci-templates`: project is unknown here"),
            (36, "from project `freedesktop/ci-templates`: project is unknown here"),
            (39, "from project `freedesktop/ci-templates`: project is unknown here"),
            (278, "`extends` refers to `.fdo.container-build@ubuntu`"),
            (287, "`extends` refers to `.fdo.container-build@debian`"),
            (298, "`extends` refers to `.fdo.container-build@fedora`"),
            (306, "`extends` refers to `.fdo.container-build@alpine`"),
            (315, "`extends` refers to `.fdo.container-build@fedora`"),
            (324, "`extends` refers to `.fdo.distribution-image@ubuntu`"),
            (338, "`extends` refers to `.fdo.distribution-image@debian`"),
            (376, "`extends` refers to `.fdo.distribution-image@fedora`"),
            (510, "`extends` refers to `.fdo.distribution-image@alpine`"),
            (647, "`extends` refers to `.fdo.suffixed-image@fedora`"),
            (726, "`extends` refers to `.fdo.distribution-image@fedora`"),
        ],
    ),
    // Xen's test.yaml names build jobs its build.yaml no longer has (README): GitLab rejects
    // "dependency debian-stretch-gcc-debug is not defined in current or prior stages".
    (
        "general/xen-project__xen",
        &[
            (38, "`dependencies` refers to `debian-stretch-gcc-debug`, which is not defined"),
            (60, "`dependencies` refers to `debian-unstable-clang-debug`, which is not defined"),
            (82, "`dependencies` refers to `debian-stretch-gcc-debug`, which is not defined"),
            (104, "`dependencies` refers to `debian-unstable-clang-debug`, which is not defined"),
        ],
    ),
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/corpus")
}

/// The corpus layout: a pipeline's local includes live in a folder named like the file; the
/// catalog project is `cpin-catalog/`.
struct CorpusResolver {
    root: PathBuf,
    catalog: PathBuf,
}

impl IncludeResolver for CorpusResolver {
    fn read(&self, project: Option<&str>, path: &str, _git_ref: Option<&str>) -> Result<String, ResolveError> {
        let dir = match project {
            None => &self.root,
            Some(CATALOG) => &self.catalog,
            Some(_) => return Err(ResolveError::UnknownProject),
        };
        std::fs::read_to_string(dir.join(path)).map_err(|_| ResolveError::NotFound)
    }

    fn glob(&self, project: Option<&str>, pattern: &str, _git_ref: Option<&str>) -> Result<Vec<String>, ResolveError> {
        let dir = match project {
            None => &self.root,
            _ => &self.catalog,
        };
        files::glob(dir, pattern)
    }
}

fn pipelines() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for sub in ["cpin", "general"] {
        let dir = corpus().join(sub);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("the corpus must be at {}: {e}", dir.display()));
        for e in entries.flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".gitlab-ci-dso.yml").or_else(|| name.strip_suffix(".gitlab-ci.yml")) {
                out.push((format!("{sub}/{stem}"), p.clone()));
            }
        }
    }
    out.sort();
    out
}

fn triggers() -> Vec<(&'static str, Context)> {
    let base =
        Context { project_path: "group/app".into(), commit_sha: "0123456789abcdef0123456789abcdef01234567".into(), ..Context::default() };
    let push = Context { branch: Some("main".into()), ..base.clone() };
    let feature = Context { branch: Some("feature/x".into()), ..base.clone() };
    let web = Context { branch: Some("main".into()), source: PipelineSource::Web, ..base.clone() };
    let tag = Context { tag: Some("v1.2.3".into()), ..base.clone() };
    let mr = Context {
        source: PipelineSource::MergeRequestEvent,
        merge_request: Some(MergeRequest {
            iid: 3,
            source_branch: "feature/x".into(),
            target_branch: "main".into(),
            ..MergeRequest::default()
        }),
        ..base.clone()
    };
    let schedule = Context { branch: Some("main".into()), source: PipelineSource::Schedule, ..base };
    vec![("push main", push), ("push feature", feature), ("web", web), ("tag", tag), ("merge request", mr), ("schedule", schedule)]
}

#[test]
fn every_corpus_pipeline_loads_and_plans_as_gitlab_would() {
    let mut failures = Vec::new();
    let all = pipelines();
    assert!(all.len() >= 80, "expected the whole corpus, found {} pipelines", all.len());
    for (id, path) in &all {
        let stem = path.file_name().unwrap().to_string_lossy().replace(".gitlab-ci-dso.yml", "").replace(".gitlab-ci.yml", "");
        let resolver = CorpusResolver { root: path.parent().unwrap().join(stem), catalog: corpus().join("cpin-catalog") };
        let text = std::fs::read_to_string(path).unwrap();
        let opts = LoadOptions { variables: vec![("CATALOG_PATH".into(), CATALOG.into())], ..LoadOptions::default() };
        let loaded = load(&path.file_name().unwrap().to_string_lossy(), ".gitlab-ci.yml", &text, &resolver, &opts);
        let expected: &[(u32, &str)] = EXPECTED.iter().find(|(f, _)| f == id).map_or(&[], |(_, e)| e);
        let errors: Vec<_> = loaded.errors().collect();
        for err in &errors {
            let text = err.display(&loaded.sources).to_string();
            if !expected.iter().any(|(line, needle)| err.span.line == *line && text.contains(needle)) {
                failures.push(format!("{id}: unexpected error: {text}"));
            }
        }
        for (line, needle) in expected {
            if !errors.iter().any(|e| e.span.line == *line && e.display(&loaded.sources).to_string().contains(needle)) {
                failures.push(format!("{id}: missing expected error at line {line}: {needle}"));
            }
        }
        if !errors.is_empty() {
            continue;
        }
        let pipeline = loaded.pipeline.as_ref().expect("a pipeline without errors");
        for (name, ctx) in triggers() {
            let pctx = PlanContext { predefined: ctx.pipeline_variables(), ..PlanContext::default() };
            match plan(pipeline, &pctx) {
                Ok(p) => {
                    for j in &p.jobs {
                        assert!(p.stages.contains(&j.stage), "{id}: job {} in an unknown stage", j.name);
                    }
                }
                Err(PlanError::Filtered { .. }) => {}
                Err(PlanError::Invalid(d)) => {
                    for e in d {
                        failures.push(format!("{id} ({name}): plan error: {}", e.display(&loaded.sources)));
                    }
                }
            }
        }
    }
    for (id, _) in EXPECTED {
        assert!(all.iter().any(|(f, _)| f == id), "EXPECTED names `{id}`, which is not in the corpus");
    }
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_catalog_templates_load_on_their_own() {
    for e in std::fs::read_dir(corpus().join("cpin-catalog")).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let resolver = CorpusResolver { root: corpus().join("cpin-catalog"), catalog: corpus().join("cpin-catalog") };
        let opts = LoadOptions { variables: vec![("CATALOG_PATH".into(), CATALOG.into())], ..LoadOptions::default() };
        let loaded = load(&p.file_name().unwrap().to_string_lossy(), "x.yml", &text, &resolver, &opts);
        // Template files hold only hidden jobs, so "no jobs" is their one expected error; the
        // example pipeline must be fully valid.
        let is_example = p.file_name().is_some_and(|n| n.to_string_lossy().contains("example"));
        for err in loaded.errors() {
            assert!(!is_example && err.message.contains("defines no jobs"), "{}: {}", p.display(), err.display(&loaded.sources));
        }
    }
}
