//! `include:component`, `include:template` and `include:remote`, each test naming the GitLab
//! rule it pins (CI/CD components page, CI YAML reference `include`).

use pipeline_spec::diag::Kind;
use pipeline_spec::include::{IncludeResolver, Integrity, RemoteRequest, ResolveError};
use pipeline_spec::load::{LoadOptions, Loaded, MemoryResolver, load};

use crate::{assert_error, diagnostics};

const FQDN: &str = "gitlab.example.com";

/// A component project `my-org/components` with tags `1.0.0`, `1.2.0`, `1.10.1`, `2.0.0-rc.1`
/// and `main`: each version's `templates/` differs so the test sees which one was read.
fn components() -> MemoryResolver {
    let mut r = MemoryResolver::new();
    let job = |v: &str| {
        format!("spec:\n  inputs:\n    stage:\n      default: test\n---\nlint-{v}:\n  stage: $[[ inputs.stage ]]\n  script: [lint]\n")
    };
    for v in ["1.0.0", "1.2.0", "1.10.1", "2.0.0-rc.1", "main"] {
        r.add_at(Some("my-org/components"), "templates/lint.yml", v, &job(&v.replace('.', "_")));
        if v != "main" {
            r.add_tag(Some("my-org/components"), v);
        }
    }
    // A directory component, at `main` only.
    r.add_at(Some("my-org/components"), "templates/deploy/template.yml", "main", "deploy:\n  stage: deploy\n  script: [deploy]\n");
    // A tag and a branch of the same name: the tag wins.
    r.add_tag(Some("my-org/components"), "same");
    r.add_at(Some("my-org/components"), "templates/lint.yml", "refs/tags/same", "from-tag:\n  script: [x]\n");
    r.add_at(Some("my-org/components"), "templates/lint.yml", "refs/heads/same", "from-branch:\n  script: [x]\n");
    r
}

struct WithCommits(MemoryResolver);

impl IncludeResolver for WithCommits {
    fn read(&self, project: Option<&str>, path: &str, git_ref: Option<&str>) -> Result<String, ResolveError> {
        self.0.read(project, path, git_ref)
    }
    fn tags(&self, project: Option<&str>) -> Result<Vec<String>, ResolveError> {
        self.0.tags(project)
    }
    fn commit(&self, _project: Option<&str>, git_ref: &str) -> Result<String, ResolveError> {
        Ok(format!("sha-of-{git_ref}"))
    }
}

fn load_from(main: &str, resolver: &dyn IncludeResolver) -> Loaded {
    let opts = LoadOptions { variables: vec![("CI_SERVER_FQDN".into(), FQDN.into())], ..LoadOptions::default() };
    load(".gitlab-ci.yml", ".gitlab-ci.yml", main, resolver, &opts)
}

fn jobs(main: &str) -> Vec<String> {
    let loaded = load_from(main, &components());
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    loaded.pipeline.unwrap().jobs.keys().cloned().collect()
}

fn component(version: &str) -> String {
    format!("stages: [test, deploy]\ninclude:\n  - component: $CI_SERVER_FQDN/my-org/components/lint@{version}\n")
}

/// GitLab: `~latest` is the latest released version, pre-releases left out; `1` is the latest
/// `1.x.y` and `1.2` the latest `1.2.y`; a full version is that tag; a branch works too.
#[test]
fn versions_resolve_as_gitlab_resolves_them() {
    assert_eq!(jobs(&component("~latest")), ["lint-1_10_1"]);
    assert_eq!(jobs(&component("1")), ["lint-1_10_1"]);
    assert_eq!(jobs(&component("1.2")), ["lint-1_2_0"]);
    assert_eq!(jobs(&component("1.0.0")), ["lint-1_0_0"]);
    assert_eq!(jobs(&component("2.0.0-rc.1")), ["lint-2_0_0-rc_1"], "a pre-release is used when named");
    assert_eq!(jobs(&component("main")), ["lint-main"]);
    // GitLab: "If a tag and branch exist with the same name, the tag takes precedence".
    assert_eq!(jobs(&component("same")), ["from-tag"]);
}

/// GitLab: a component is `templates/NAME.yml` or `templates/NAME/template.yml`; the host is
/// `$CI_SERVER_FQDN` (written out or as the variable); the component's inputs go through its
/// `spec:inputs`, and the same component twice with different inputs gives distinct jobs when
/// its job names use them.
#[test]
fn files_hosts_and_inputs() {
    assert_eq!(jobs(&format!("stages: [deploy]\ninclude:\n  - component: {FQDN}/my-org/components/deploy@main\n")), ["deploy"]);
    let main =
        "stages: [test, deploy]\ninclude:\n  - component: $CI_SERVER_FQDN/my-org/components/lint@1.2\n    inputs:\n      stage: deploy\n";
    let loaded = load_from(main, &components());
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    assert_eq!(loaded.pipeline.unwrap().jobs["lint-1_2_0"].stage, "deploy");
    let main = "stages: [test, deploy]\ninclude:\n  - component: $CI_SERVER_FQDN/my-org/components/lint@main\n    inputs: {stages: x}\n";
    let loaded = load_from(main, &components());
    assert_error(&loaded, 4, 14, "unknown input `stages`");
    assert!(diagnostics(&loaded).contains("my-org/components:templates/lint.yml@main"), "{}", diagnostics(&loaded));

    let mut r = MemoryResolver::new();
    r.add_at(
        Some("g/p"),
        "templates/build.yml",
        "main",
        "spec:\n  inputs:\n    name:\n---\n\"build-$[[ inputs.name ]]\":\n  script: [\"make $[[ inputs.name ]]\"]\n",
    );
    let twice = "include:\n  - component: $CI_SERVER_FQDN/g/p/build@main\n    inputs: {name: api}\n  - component: $CI_SERVER_FQDN/g/p/build@main\n    inputs: {name: web}\n";
    let loaded = load_from(twice, &r);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    let p = loaded.pipeline.unwrap();
    assert_eq!(p.jobs.keys().collect::<Vec<_>>(), ["build-api", "build-web"]);
    assert_eq!(p.jobs["build-web"].script, ["make web"]);
}

/// What cannot be read here is "unavailable" (another instance's host, a project this
/// resolver does not know), what is wrong is "invalid" (no such component, a malformed
/// address, `~latest` without any release).
#[test]
fn component_errors_are_typed() {
    let kind = |main: &str| {
        let loaded = load_from(main, &components());
        let e: Vec<(Kind, String)> = loaded.errors().map(|d| (d.kind, d.message.clone())).collect();
        assert_eq!(e.len(), 1, "{}", diagnostics(&loaded));
        e.into_iter().next().unwrap()
    };
    let (k, m) = kind("include:\n  - component: gitlab.com/components/sast/sast@~latest\n");
    assert_eq!(k, Kind::Unavailable);
    assert!(m.contains("`gitlab.com` is not this instance (`$CI_SERVER_FQDN` is `gitlab.example.com`)"), "{m}");
    let (k, m) = kind("include:\n  - component: $CI_SERVER_FQDN/other/project/x@1\n");
    assert_eq!(k, Kind::Unavailable, "{m}");
    let (k, m) = kind("include:\n  - component: $CI_SERVER_FQDN/my-org/components/nope@main\n");
    assert_eq!(k, Kind::Invalid);
    assert!(m.contains("component `nope` not found in `my-org/components` at `main` (looked for `templates/nope.yml` and `templates/nope/template.yml`)"), "{m}");
    let (k, m) = kind("include:\n  - component: $CI_SERVER_FQDN/my-org/components/lint\n");
    assert_eq!(k, Kind::Invalid);
    assert!(m.contains("is not a component address: it has no `@VERSION`"), "{m}");
    let mut r = MemoryResolver::new();
    r.add_at(Some("g/p"), "templates/x.yml", "main", "x:\n  script: [x]\n");
    r.add_tag(Some("g/p"), "v1.0.0");
    let loaded = load_from("include:\n  - component: $CI_SERVER_FQDN/g/p/x@~latest\n", &r);
    assert_error(&loaded, 2, 16, "`g/p` has no released version for `~latest`");
}

/// GitLab's `spec:component` context: `$[[ component.name ]]`, `.reference` (as written),
/// `.version` (the release it resolved to) and `.sha`, for the keys the header lists.
#[test]
fn component_context_interpolation() {
    let mut r = MemoryResolver::new();
    r.add_tag(Some("g/p"), "1.4.2");
    r.add_at(
        Some("g/p"),
        "templates/info.yml",
        "1.4.2",
        "spec:\n  component: [name, reference, version, sha]\n---\n\"$[[ component.name ]]\":\n  script:\n    - echo $[[ component.reference ]] $[[ component.version ]] $[[ component.sha ]]\n",
    );
    let loaded = load_from("include:\n  - component: $CI_SERVER_FQDN/g/p/info@1\n", &WithCommits(r.clone()));
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    assert_eq!(loaded.pipeline.unwrap().jobs["info"].script, ["echo 1 1.4.2 sha-of-refs/tags/1.4.2"]);
    // A key the header does not list, and `spec:component` outside a component.
    let mut r2 = MemoryResolver::new();
    r2.add_at(Some("g/p"), "templates/x.yml", "main", "spec:\n  component: [name]\n---\nx:\n  script: [\"$[[ component.sha ]]\"]\n");
    let loaded = load_from("include:\n  - component: $CI_SERVER_FQDN/g/p/x@main\n", &r2);
    assert!(diagnostics(&loaded).contains("does not list `sha` in `spec:component`"), "{}", diagnostics(&loaded));
    let mut r3 = MemoryResolver::new();
    r3.add(None, "t.yml", "spec:\n  component: [name]\n---\nx:\n  script: [x]\n");
    let loaded = load_from("include: t.yml\n", &r3);
    assert_error(&loaded, 2, 3, "`spec:component` is for components: `t.yml` is not included with `include:component`");
}

/// GitLab (`External::File::Template`): names end with `.gitlab-ci.yml` and are read from the
/// templates; piste refuses names that would leave the templates directory.
#[test]
fn templates_by_name() {
    let mut r = MemoryResolver::new();
    r.add_template("Jobs/Build.gitlab-ci.yml", "build:\n  script: [build]\n");
    let loaded = load_from("include:\n  - template: Jobs/Build.gitlab-ci.yml\n", &r);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    assert!(loaded.pipeline.unwrap().jobs.contains_key("build"));
    let loaded = load_from("include:\n  - template: Jobs/Build.yml\n", &r);
    assert_error(&loaded, 2, 5, "template `Jobs/Build.yml` is not a valid location: template names end with `.gitlab-ci.yml`");
    for bad in ["../secrets/x.gitlab-ci.yml", "/etc/x.gitlab-ci.yml", "Jobs/./x.gitlab-ci.yml", "Jobs//x.gitlab-ci.yml"] {
        let loaded = load_from(&format!("include:\n  - template: '{bad}'\n"), &r);
        assert_error(&loaded, 2, 5, "is refused: a template name is a relative path without `.` or `..` parts");
    }
    let loaded = load_from("include:\n  - template: Security/SAST.gitlab-ci.yml\n", &r);
    assert_eq!(loaded.unavailable().count(), 1, "{}", diagnostics(&loaded));
}

/// What the loader asked for: URL, integrity, cache time.
type Asked = (String, Option<String>, Option<u64>);

/// A resolver that records what the loader asks for a remote file.
struct Recorder(MemoryResolver, std::cell::RefCell<Vec<Asked>>);

impl IncludeResolver for Recorder {
    fn read(&self, project: Option<&str>, path: &str, git_ref: Option<&str>) -> Result<String, ResolveError> {
        self.0.read(project, path, git_ref)
    }
    fn remote(&self, request: &RemoteRequest<'_>) -> Result<String, ResolveError> {
        self.1.borrow_mut().push((request.url.into(), request.integrity.map(ToString::to_string), request.cache_secs));
        self.0.remote(request)
    }
}

/// GitLab: `integrity: sha256-<base64>` must match the body ("failed integrity check"), may
/// only be given for `remote`, and must be `sha256-` + base64; `cache: true` keeps the body an
/// hour, `cache: <duration>` that long.
#[test]
fn remote_integrity_and_cache() {
    let body = "remote-job:\n  script: [x]\n";
    let good = Integrity::of(body.as_bytes()).to_string();
    let mut m = MemoryResolver::new();
    m.add_remote("https://example.test/ci.yml", body);
    let r = Recorder(m, Default::default());
    let main = format!(
        "include:\n  - remote: https://example.test/ci.yml\n    integrity: {good}\n    cache: true\n  - remote: https://example.test/ci.yml\n    cache: 30m\n"
    );
    let loaded = load_from(&main, &r);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    assert_eq!(
        r.1.borrow().as_slice(),
        [
            ("https://example.test/ci.yml".to_string(), Some(good.clone()), Some(3600)),
            ("https://example.test/ci.yml".to_string(), None, Some(1800))
        ]
    );
    let bad = Integrity::of(b"something else").to_string();
    let loaded = load_from(&format!("include:\n  - remote: https://example.test/ci.yml\n    integrity: {bad}\n"), &r);
    assert_error(&loaded, 2, 5, "failed its integrity check");
    assert_eq!(loaded.invalid().count(), 1);
    let loaded = load_from("include:\n  - remote: https://example.test/ci.yml\n    integrity: md5-abc\n", &r);
    assert_error(&loaded, 3, 16, "`integrity` must be `sha256-` followed by the base64");
    let loaded = load_from(&format!("include:\n  - local: a.yml\n    integrity: {good}\n"), &r);
    assert_error(&loaded, 3, 5, "`integrity` can only be given for `include:remote`");
    let loaded = load_from("include:\n  - remote: https://example.test/ci.yml\n    cache: soon\n", &r);
    assert_error(&loaded, 3, 12, "`cache` must be `true` or a duration such as `30m`");
    let mut local = MemoryResolver::new();
    local.add(None, "a.yml", "a:\n  script: [x]\n");
    let loaded = load_from("include:\n  - local: a.yml\n    cache: true\n", &local);
    assert!(!loaded.has_errors(), "{}", diagnostics(&loaded));
    assert!(
        diagnostics(&loaded).contains("3:5: warning: key `include:cache`: `cache` applies to `include:remote` only"),
        "{}",
        diagnostics(&loaded)
    );
}
