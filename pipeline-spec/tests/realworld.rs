//! The 138 real public pipelines of `fixtures/corpus/realworld/`: GitLab accepts every one of
//! them, so piste must too. Each is loaded with its local includes (resolved inside its folder)
//! and planned as a push to its default branch (`BRANCHES.tsv`). Other projects and
//! components come from the small stand-in projects of `fixtures/includes/` (`PROJECTS.tsv`
//! says which project paths, branches and tags each one answers for). A pipeline whose includes
//! are all here must lint with zero errors; one that includes something not here (a project
//! or component without a stand-in, a template, a remote URL) may only report that, and errors
//! that follow from it (`diag::Kind`): `UNAVAILABLE` lists, per pipeline, exactly the includes
//! reported unavailable.

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

/// Local files come from the pipeline's folder, other projects from `fixtures/includes`;
/// templates and remote files are not available.
struct DirResolver {
    root: PathBuf,
    projects: Vec<Project>,
}

/// A stand-in project of `fixtures/includes/PROJECTS.tsv`: its files stand for every ref the
/// row lists (a ref it does not list is missing, as in a real repository).
struct Project {
    path: String,
    dir: PathBuf,
    refs: Vec<String>,
    tags: Vec<String>,
}

fn stand_ins() -> Vec<Project> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/includes");
    let tsv = std::fs::read_to_string(base.join("PROJECTS.tsv")).expect("fixtures/includes/PROJECTS.tsv");
    let list = |s: &str| s.split(',').filter(|x| !x.is_empty() && *x != "-").map(str::to_string).collect::<Vec<_>>();
    tsv.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let (branches, tags) = (list(f[2]), list(f[3]));
            Project { path: f[0].into(), dir: base.join(f[1]), refs: branches.iter().chain(&tags).cloned().collect(), tags }
        })
        .collect()
}

impl DirResolver {
    fn dir(&self, project: Option<&str>, git_ref: Option<&str>) -> Result<&Path, ResolveError> {
        let Some(name) = project else { return Ok(&self.root) };
        let p = self.projects.iter().find(|p| p.path.eq_ignore_ascii_case(name)).ok_or(ResolveError::UnknownProject)?;
        match git_ref.map(|r| r.trim_start_matches("refs/tags/").trim_start_matches("refs/heads/")) {
            Some(r) if !p.refs.iter().any(|x| x == r) => Err(ResolveError::Other(format!("ref `{r}` is not in {name}"))),
            _ => Ok(&p.dir),
        }
    }
}

impl IncludeResolver for DirResolver {
    fn read(&self, project: Option<&str>, path: &str, git_ref: Option<&str>) -> Result<String, ResolveError> {
        std::fs::read_to_string(self.dir(project, git_ref)?.join(path)).map_err(|_| ResolveError::NotFound)
    }

    fn glob(&self, project: Option<&str>, pattern: &str, git_ref: Option<&str>) -> Result<Vec<String>, ResolveError> {
        files::glob(self.dir(project, git_ref)?, pattern)
    }

    fn tags(&self, project: Option<&str>) -> Result<Vec<String>, ResolveError> {
        let name = project.ok_or(ResolveError::UnknownProject)?;
        self.projects.iter().find(|p| p.path.eq_ignore_ascii_case(name)).map(|p| p.tags.clone()).ok_or(ResolveError::UnknownProject)
    }

    /// As `piste lint` locally: every host names this instance, the projects say what exists.
    fn component_host(&self, _host: &str) -> bool {
        true
    }
}

/// An unavailable include as `UNAVAILABLE` names it: `project P`, `component ADDRESS` (without
/// its version), `template NAME`, `remote URL`.
fn missing_include(message: &str) -> Option<String> {
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    if let Some(rest) = message.strip_prefix("cannot resolve include of ") {
        let project = rest.split("from project `").nth(1)?.split('`').next()?;
        return Some(format!("project `{project}`"));
    }
    for kind in ["component", "template", "remote"] {
        if message.starts_with(&format!("cannot resolve `include:{kind}` ")) {
            let what = quoted.get(1)?;
            let what = if kind == "component" { what.split('@').next()? } else { what };
            return Some(format!("{kind} `{what}`"));
        }
    }
    None
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
        let resolver = DirResolver { root: root.clone(), projects: stand_ins() };
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
        // Exactly the includes listed are reported unavailable, each named.
        let mut reported: Vec<String> =
            loaded.unavailable().map(|d| missing_include(&d.message).unwrap_or_else(|| format!("unrecognised: {}", d.message))).collect();
        reported.sort();
        reported.dedup();
        let mut listed: Vec<String> =
            UNAVAILABLE.iter().find(|(d, _)| d == dir).map(|(_, why)| why.split(", ").map(str::to_string).collect()).unwrap_or_default();
        listed.sort();
        if reported != listed {
            failures.push(format!("{dir}: unavailable includes reported {reported:?}, listed {listed:?}"));
        }
    }
    for (dir, _) in UNAVAILABLE {
        assert!(all.iter().any(|(d, _, _)| d == dir), "UNAVAILABLE names `{dir}`, which is not in realworld/");
    }
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
}

/// `(folder, why)`: pipelines that include something not available offline.
const UNAVAILABLE: &[(&str, &str)] = &[
    ("ChromiaProject__rell", "component `localhost/qodana/qodana/qodana-gitlab-ci`"),
    (
        "delta10__kees",
        "template `Container-Scanning.gitlab-ci.yml`, template `Dependency-Scanning.gitlab-ci.yml`, template `SAST.gitlab-ci.yml`, template `Security/License-Scanning.gitlab-ci.yml`",
    ),
    ("DoD-Platform-One__gitlab-runner", "template `Security/Dependency-Scanning.gitlab-ci.yml`"),
    (
        "gitlabhq__cli",
        "component `localhost/components/code-intelligence/golang-code-intel`, component `localhost/gitlab-org/components/danger-review/danger-review`, project `gitlab-com/gl-security/security-operations/infrastructure-security-public/oidc-modules`, template `Jobs/Dependency-Scanning.latest.gitlab-ci.yml`, template `Jobs/SAST.latest.gitlab-ci.yml`, template `Jobs/Secret-Detection.latest.gitlab-ci.yml`",
    ),
    (
        "gitlabhq__gitlab-shell",
        "component `localhost/components/code-intelligence/golang-code-intel`, component `localhost/gitlab-org/components/danger-review/danger-review`, template `Code-Quality.gitlab-ci.yml`, template `Security/Dependency-Scanning.gitlab-ci.yml`, template `Security/SAST.gitlab-ci.yml`, template `Security/Secret-Detection.gitlab-ci.yml`",
    ),
    (
        "gitlabhq__orbit-knowledge-graph",
        "component `localhost/gitlab-org/orbit/experiments/ai-review-bot/ai-review-bot`, project `gitlab-com/gl-security/security-operations/infrastructure-security-public/oidc-modules`, project `gitlab-org/orbit/experiments/ai-review-bot`, template `Jobs/SAST.gitlab-ci.yml`, template `Jobs/Secret-Detection.gitlab-ci.yml`",
    ),
    (
        "GNOME__at-spi2-core",
        "remote `https://gitlab.gnome.org/Infrastructure/freedesktop-ci-templates/-/raw/3cd5fdf6dcfbef9a75514256d210db5178bd9c2a/templates/fedora.yml`, remote `https://gitlab.gnome.org/Infrastructure/freedesktop-ci-templates/-/raw/3cd5fdf6dcfbef9a75514256d210db5178bd9c2a/templates/opensuse.yml`",
    ),
    ("GNOME__glade", "remote `https://gitlab.gnome.org/GNOME/citemplates/raw/master/flatpak/flatpak_ci_initiative.yml`"),
    (
        "GNOME__gnome-keyring",
        "remote `https://gitlab.gnome.org/Infrastructure/freedesktop-ci-templates/-/raw/145b1bc7ef1702d2bd71584010d7113c6786a506/templates/fedora.yml`",
    ),
    (
        "GNOME__orca",
        "remote `https://gitlab.gnome.org/Infrastructure/freedesktop-ci-templates/-/raw/3cd5fdf6dcfbef9a75514256d210db5178bd9c2a/templates/opensuse.yml`",
    ),
    (
        "GNOME__tinysparql",
        "remote `https://gitlab.gnome.org/Infrastructure/freedesktop-ci-templates/-/raw/b61a03cabbf308e81289f7aaaf0b5a80a34ffb99/templates/alpine.yml`, remote `https://gitlab.gnome.org/Infrastructure/freedesktop-ci-templates/-/raw/b61a03cabbf308e81289f7aaaf0b5a80a34ffb99/templates/ci-fairy.yml`, remote `https://gitlab.gnome.org/Infrastructure/freedesktop-ci-templates/-/raw/b61a03cabbf308e81289f7aaaf0b5a80a34ffb99/templates/debian.yml`, remote `https://gitlab.gnome.org/Infrastructure/freedesktop-ci-templates/-/raw/b61a03cabbf308e81289f7aaaf0b5a80a34ffb99/templates/fedora.yml`",
    ),
    ("GNOME__vte", "project `chpe/versuch-ci`"),
    ("gwpy__gwpy", "component `gitlab.com/components/dependency-scanning/main`, component `gitlab.com/components/sast/sast`"),
    ("isc-projects__bind9", "project `isc-projects/bind9-qa`"),
    ("isc-projects__kea", "template `Security/SAST.gitlab-ci.yml`"),
    ("LibraryOfCongress__coding-standards", "template `Security/Secret-Detection.gitlab-ci.yml`, project `DevOps/pre-commit-docker`"),
    ("LibreSign__libresign", "template `Security/SAST.gitlab-ci.yml`"),
    ("LLNL__RAJA", "project `lc-templates/id_tokens`, project `radiuss/radiuss-shared-ci`"),
    ("LLNL__Umpire", "project `lc-templates/id_tokens`"),
    ("lscsoft__lalsuite", "component `localhost/computing/gitlab/components/sast/sast`"),
    ("openhive-network__haf", "template `Workflows/Branch-Pipelines.gitlab-ci.yml`, project `hive/hive`"),
    ("openhive-network__hive", "template `Workflows/Branch-Pipelines.gitlab-ci.yml`, project `hive/common-ci-configuration`"),
    ("xiph__opus", "template `Workflows/Branch-Pipelines.gitlab-ci.yml`"),
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
        load(dir, ".gitlab-ci.yml", &text, &DirResolver { root, projects: stand_ins() }, &LoadOptions::default())
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
