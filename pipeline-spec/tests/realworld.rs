//! The 138 real public pipelines of `fixtures/corpus/realworld/`: GitLab accepts every one of
//! them, so piste must too. Each is loaded with its local includes (resolved inside its folder)
//! and planned as a push to its default branch (`BRANCHES.tsv`). A pipeline whose includes are
//! all here must lint with zero errors; one that includes something not available offline
//! (another project, a template, a component, a remote URL) may only report that, and errors
//! that follow from it (`diag::Kind`), listed in `UNAVAILABLE` with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[path = "support/files.rs"]
mod files;

use pipeline_spec::include::{IncludeResolver, ResolveError};
use pipeline_spec::load::{LoadOptions, load};
use pipeline_spec::plan::{PlanContext, PlanError, plan};
use pipeline_spec::predefined::Context;

/// Instances that raise GitLab's `ci_max_needs` (50 by default): GitLab accepts these there.
const RAISED_NEEDS: &[(&str, usize)] = &[
    // Kitware's own instance (gitlab.kitware.com) runs VTK's `release-artifacts:upload` with
    // 126 needs; piste needs `--max-needs` (LoadOptions::max_needs) for it, like that instance.
    ("Kitware__VTK", 200),
];

fn realworld() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/corpus/realworld")
}

/// Local files come from the pipeline's folder; nothing else is available offline.
struct DirResolver {
    root: PathBuf,
}

impl IncludeResolver for DirResolver {
    fn read(&self, project: Option<&str>, path: &str, _git_ref: Option<&str>) -> Result<String, ResolveError> {
        if project.is_some() {
            return Err(ResolveError::UnknownProject);
        }
        std::fs::read_to_string(self.root.join(path)).map_err(|_| ResolveError::NotFound)
    }

    fn glob(&self, project: Option<&str>, pattern: &str, _git_ref: Option<&str>) -> Result<Vec<String>, ResolveError> {
        if project.is_some() {
            return Err(ResolveError::UnknownProject);
        }
        files::glob(&self.root, pattern)
    }
}

/// `(folder, main file, default branch)` for every pipeline: the main file is the first
/// `MANIFEST.tsv` row of its folder, the branch comes from `BRANCHES.tsv`.
fn pipelines() -> Vec<(String, String, String)> {
    let manifest = std::fs::read_to_string(realworld().join("MANIFEST.tsv")).expect("realworld/MANIFEST.tsv");
    let branches = std::fs::read_to_string(realworld().join("BRANCHES.tsv")).expect("realworld/BRANCHES.tsv");
    let branch: BTreeMap<&str, &str> = branches
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?, f.next()?))
        })
        .collect();
    let mut main: BTreeMap<String, String> = BTreeMap::new();
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if let [dir, _repo, path, ..] = f[..] {
            main.entry(dir.to_string()).or_insert_with(|| path.to_string());
        }
    }
    main.into_iter()
        .map(|(dir, path)| {
            let b = branch.get(dir.as_str()).unwrap_or_else(|| panic!("`{dir}` is not in BRANCHES.tsv")).to_string();
            (dir, path, b)
        })
        .collect()
}

#[test]
fn every_realworld_pipeline_lints_clean_on_its_default_branch() {
    let all = pipelines();
    assert_eq!(all.len(), 138, "expected the 138 realworld pipelines");
    let mut failures = Vec::new();
    for (dir, path, branch) in &all {
        let root = realworld().join(dir);
        let text = std::fs::read_to_string(root.join(path)).unwrap();
        let resolver = DirResolver { root: root.clone() };
        let ctx = Context {
            project_path: dir.replacen("__", "/", 1),
            commit_sha: "0123456789abcdef0123456789abcdef01234567".into(),
            branch: Some(branch.clone()),
            default_branch: branch.clone(),
            config_path: path.clone(),
            ..Context::default()
        };
        let max_needs = RAISED_NEEDS.iter().find(|(d, _)| d == dir).map_or(LoadOptions::default().max_needs, |(_, n)| *n);
        let opts = LoadOptions { variables: ctx.pipeline_variables(), max_needs, ..LoadOptions::default() };
        let loaded = load(&format!("{dir}/{path}"), path, &text, &resolver, &opts);
        // Invalid errors are never acceptable; "unavailable" ones (and what only follows from
        // them, `Kind::FollowsFromUnavailable`) only where UNAVAILABLE says so.
        let mut errors: Vec<String> = loaded.invalid().map(|e| e.display(&loaded.sources).to_string()).collect();
        if !loaded.has_errors() {
            let pipeline = loaded.pipeline.as_ref().expect("a pipeline without errors");
            let pctx = PlanContext { predefined: ctx.pipeline_variables(), ..PlanContext::default() };
            match plan(pipeline, &pctx) {
                Ok(_) | Err(PlanError::Filtered { .. }) => {}
                Err(PlanError::Invalid(d)) => errors.extend(d.iter().map(|e| format!("plan: {}", e.display(&loaded.sources)))),
            }
        }
        failures.extend(errors.iter().map(|e| format!("{dir}: {e}")));
        let unavailable = loaded.unavailable().count();
        match (UNAVAILABLE.iter().any(|(d, _)| d == dir), unavailable) {
            (true, 0) => failures.push(format!("{dir}: listed in UNAVAILABLE but reports no unavailable include")),
            (false, n) if n > 0 => failures.push(format!("{dir}: {n} unavailable include(s) but not listed in UNAVAILABLE")),
            _ => {}
        }
    }
    for (dir, _) in UNAVAILABLE {
        assert!(all.iter().any(|(d, _, _)| d == dir), "UNAVAILABLE names `{dir}`, which is not in realworld/");
    }
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
}

/// `(folder, why)`: pipelines that include something not available offline.
const UNAVAILABLE: &[(&str, &str)] = &[
    ("ChromiaProject__rell", "component `$CI_SERVER_FQDN/qodana/qodana/qodana-gitlab-ci`"),
    (
        "delta10__kees",
        "template `Container-Scanning.gitlab-ci.yml`, template `Dependency-Scanning.gitlab-ci.yml`, template `SAST.gitlab-ci.yml`, template `Security/License-Scanning.gitlab-ci.yml`",
    ),
    ("DoD-Platform-One__gitlab-runner", "template `Security/Dependency-Scanning.gitlab-ci.yml`"),
    (
        "gitlabhq__cli",
        "template `Jobs/SAST.latest.gitlab-ci.yml`, template `Jobs/Dependency-Scanning.latest.gitlab-ci.yml`, template `Jobs/Secret-Detection.latest.gitlab-ci.yml`, component `${CI_SERVER_FQDN}/gitlab-org/components/danger-review/danger-review`, component `${CI_SERVER_FQDN}/components/code-intelligence/golang-code-intel`, project `gitlab-com/gl-security/security-operations/infrastructure-security-public/oidc-modules`",
    ),
    (
        "gitlabhq__gitlab-shell",
        "template `Code-Quality.gitlab-ci.yml`, template `Security/SAST.gitlab-ci.yml`, template `Security/Dependency-Scanning.gitlab-ci.yml`, template `Security/Secret-Detection.gitlab-ci.yml`, component `${CI_SERVER_FQDN}/gitlab-org/components/danger-review/danger-review`, component `${CI_SERVER_FQDN}/components/code-intelligence/golang-code-intel`",
    ),
    (
        "gitlabhq__orbit-knowledge-graph",
        "template `Jobs/SAST.gitlab-ci.yml`, template `Jobs/Secret-Detection.gitlab-ci.yml`, project `gitlab-com/gl-security/security-operations/infrastructure-security-public/oidc-modules`, project `gitlab-org/orbit/experiments/ai-review-bot`, component `${CI_SERVER_FQDN}/gitlab-org/orbit/experiments/ai-review-bot/ai-review-bot`",
    ),
    ("GNOME__at-spi2-core", "component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__balsa", "project `GNOME/citemplates`, project `Infrastructure/freedesktop-ci-templates`"),
    ("GNOME__dconf-editor", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__devhelp", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__eog", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    (
        "GNOME__epiphany",
        "project `GNOME/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`, project `Infrastructure/freedesktop-ci-templates`",
    ),
    ("GNOME__evince", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__evolution-data-server", "component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__folks", "component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    (
        "GNOME__foundry",
        "project `GNOME/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/gnomeos-basic-ci`, component `gitlab.gnome.org/GNOME/citemplates/release-service`, component `gitlab.gnome.org/GNOME/citemplates/basic-deploy-docs`",
    ),
    (
        "GNOME__gdm",
        "project `GNOME/citemplates`, project `Infrastructure/freedesktop-ci-templates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`, component `gitlab.gnome.org/GNOME/citemplates/gnomeos-basic-ci`",
    ),
    (
        "GNOME__geary",
        "project `Infrastructure/freedesktop-ci-templates`, project `GNOME/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`",
    ),
    ("GNOME__gegl", "project `Infrastructure/freedesktop-ci-templates`"),
    ("GNOME__gitg", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    (
        "GNOME__gjs",
        "project `gnome/citemplates`, project `Infrastructure/freedesktop-ci-templates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`",
    ),
    ("GNOME__gnome-boxes", "project `GNOME/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    (
        "GNOME__gnome-build-meta",
        "component `gitlab.gnome.org/GNOME/citemplates/release-service`, component `gitlab.gnome.org/GNOME/citemplates/markdown-lint`",
    ),
    ("GNOME__gnome-builder", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__gnome-calculator", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    (
        "GNOME__gnome-calendar",
        "project `GNOME/citemplates`, project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`, component `gitlab.gnome.org/gnome/citemplates/gnomeos-basic-ci`",
    ),
    (
        "GNOME__gnome-control-center",
        "project `Infrastructure/freedesktop-ci-templates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`, project `GNOME/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/gnomeos-basic-ci`",
    ),
    (
        "GNOME__gnome-disk-utility",
        "project `Infrastructure/freedesktop-ci-templates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`, project `GNOME/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/gnomeos-basic-ci`, project `gnome/citemplates`",
    ),
    ("GNOME__gnome-keyring", "component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__gnome-maps", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__gnome-music", "project `GNOME/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    (
        "GNOME__gnome-remote-desktop",
        "project `Infrastructure/freedesktop-ci-templates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`",
    ),
    (
        "GNOME__gnome-shell",
        "project `GNOME/citemplates`, project `Infrastructure/freedesktop-ci-templates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`, component `gitlab.gnome.org/GNOME/citemplates/gnomeos-build-sysext`",
    ),
    ("GNOME__gnome-software", "project `GNOME/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    (
        "GNOME__gnome-system-monitor",
        "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/gnomeos-basic-ci`, component `gitlab.gnome.org/GNOME/citemplates/release-service`",
    ),
    ("GNOME__gnumeric", "component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__gobject-introspection", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__gthumb", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__gtkmm", "component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    (
        "GNOME__gtksourceview",
        "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`, component `gitlab.gnome.org/GNOME/citemplates/gnomeos-basic-ci`",
    ),
    ("GNOME__gvfs", "component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__libsoup", "component `gitlab.gnome.org/GNOME/citemplates/release-service`, project `Infrastructure/freedesktop-ci-templates`"),
    ("GNOME__meld", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    (
        "GNOME__mutter",
        "project `Infrastructure/freedesktop-ci-templates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`, component `gitlab.gnome.org/GNOME/citemplates/gnomeos-build-sysext`",
    ),
    (
        "GNOME__nautilus",
        "project `GNOME/citemplates`, project `Infrastructure/freedesktop-ci-templates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`",
    ),
    ("GNOME__orca", "component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__pango", "component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__pygobject", "component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__rhythmbox", "component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__seahorse", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__shotwell", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    (
        "GNOME__sysprof",
        "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/gnomeos-basic-ci`, component `gitlab.gnome.org/GNOME/citemplates/release-service`",
    ),
    ("GNOME__tinysparql", "component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__totem", "project `gnome/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/release-service`"),
    ("GNOME__vala", "project `gnome/citemplates`"),
    ("GNOME__vte", "project `chpe/versuch-ci`"),
    (
        "GNOME__yelp",
        "project `GNOME/citemplates`, component `gitlab.gnome.org/GNOME/citemplates/gnomeos-basic-ci`, component `gitlab.gnome.org/GNOME/citemplates/release-service`",
    ),
    ("gwpy__gwpy", "component `gitlab.com/components/dependency-scanning/main`, component `gitlab.com/components/sast/sast`"),
    ("isc-projects__bind9", "project `isc-projects/bind9-qa`"),
    ("isc-projects__kea", "template `Security/SAST.gitlab-ci.yml`"),
    ("KDE__craft", "project `sysadmin/ci-utilities`"),
    ("KDE__kate", "project `sysadmin/ci-utilities`"),
    ("KDE__okular", "project `sysadmin/ci-utilities`"),
    ("LibraryOfCongress__coding-standards", "template `Security/Secret-Detection.gitlab-ci.yml`, project `DevOps/pre-commit-docker`"),
    ("LibreSign__libresign", "template `Security/SAST.gitlab-ci.yml`"),
    ("LLNL__RAJA", "project `lc-templates/id_tokens`, project `radiuss/radiuss-shared-ci`"),
    ("LLNL__Umpire", "project `lc-templates/id_tokens`"),
    ("lscsoft__lalsuite", "component `${CI_SERVER_FQDN}/computing/gitlab/components/sast/sast`"),
    ("openhive-network__haf", "template `Workflows/Branch-Pipelines.gitlab-ci.yml`, project `hive/hive`"),
    ("openhive-network__hive", "template `Workflows/Branch-Pipelines.gitlab-ci.yml`, project `hive/common-ci-configuration`"),
    ("PipeWire__wireplumber", "project `freedesktop/ci-templates`"),
    ("xiph__opus", "template `Workflows/Branch-Pipelines.gitlab-ci.yml`"),
    ("GNOME__glade", "remote `https://gitlab.gnome.org/GNOME/citemplates/raw/master/flatpak/flatpak_ci_initiative.yml`"),
];

/// The two realworld pipelines built on `spec:inputs` get the jobs GitLab builds from them:
/// gwpy includes `publish-job.yml` three times with different inputs (three jobs, each with
/// the array inputs `dependencies` and `rules` inserted as lists); pygobject's own header
/// gives `build-image` a matrix from an array default.
#[test]
fn inputs_pipelines_build_their_jobs() {
    let load_dir = |dir: &str| {
        let root = realworld().join(dir);
        let text = std::fs::read_to_string(root.join(".gitlab-ci.yml")).unwrap();
        load(dir, ".gitlab-ci.yml", &text, &DirResolver { root }, &LoadOptions::default())
    };
    let gwpy = load_dir("gwpy__gwpy");
    let p = gwpy.pipeline.as_ref().unwrap();
    for name in ["publish", "publish_testpypi", "publish_mr"] {
        let job = &p.jobs[name];
        assert_eq!(job.stage, "deploy", "{name}");
        assert_eq!(job.dependencies.as_ref().map(|d| d.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()), Some(vec!["build"]));
        assert!(job.rules.as_ref().is_some_and(|r| !r.is_empty()), "{name} has its rules input");
    }
    let pygobject = load_dir("GNOME__pygobject");
    let image = &pygobject.pipeline.as_ref().unwrap().jobs["build-image"];
    assert_eq!(pipeline_spec::plan::expand_parallel(image).len(), 6);
    assert_eq!(image.image.as_ref().map(|i| i.name.as_str()), Some("quay.io/buildah/stable:latest"));
}
