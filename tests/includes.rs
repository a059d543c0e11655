//! `piste lint` with includes from other places than the project: components and projects from
//! `--project-dir` git repositories, GitLab templates from `--templates-dir`, remote files over
//! https (nginx with a CA made here) with `--allow-remote`. Each test names the GitLab rule it
//! pins; exit codes: 0 valid, 1 invalid, 3 could not check.

#[path = "../server/tests/common/https.rs"]
mod https;
#[path = "../server/tests/common/tls.rs"]
mod tls_ca;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use git2::{Repository, Signature};

fn piste(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_piste"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("PISTE_LOG")
        .output()
        .expect("run piste")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// Commits every file of `dir` (a repository made on the first call) on `main`.
fn commit(repo: &Repository, message: &str) -> git2::Oid {
    let mut index = repo.index().unwrap();
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("t", "t@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents).unwrap()
}

/// The component project `my-org/components`: `lint` at each released version names its job
/// after the version; `deploy` is a directory component. Tags: `1.0.0`, `1.1.0`, `2.0.0-rc.1`.
fn component_project(dir: &Path) -> PathBuf {
    let repo = Repository::init(dir).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    for v in ["1.0.0", "1.1.0", "2.0.0-rc.1"] {
        write(
            dir,
            "templates/lint.yml",
            &format!(
                "spec:\n  inputs:\n    stage:\n      default: test\n---\n\"lint {v}\":\n  stage: $[[ inputs.stage ]]\n  script: [lint]\n"
            ),
        );
        write(dir, "templates/deploy/template.yml", &format!("\"deploy {v}\":\n  stage: deploy\n  script: [deploy]\n"));
        let id = commit(&repo, v);
        repo.tag_lightweight(v, &repo.find_object(id, None).unwrap(), false).unwrap();
    }
    write(dir, "templates/lint.yml", "\"lint main\":\n  script: [lint]\n");
    commit(&repo, "unreleased");
    dir.to_path_buf()
}

fn jobs(out: &Output) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    let mut names: Vec<String> = v["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

/// GitLab (CI/CD components): `~latest` is the latest release without pre-releases, `1` the
/// latest `1.x.y`, a branch its head; `templates/NAME.yml` or `templates/NAME/template.yml`;
/// the host is this instance's. Locally a component's project is a `--project-dir` git
/// repository; without it, or as a plain folder asked for `~latest`, the pipeline cannot be
/// checked (exit 3) and the message says what to do.
#[test]
fn components_resolve_from_git_project_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let comp = component_project(&tmp.path().join("components"));
    let app = tmp.path().join("app");
    write(
        &app,
        ".gitlab-ci.yml",
        "stages: [test, deploy]\ninclude:\n  - component: $CI_SERVER_FQDN/my-org/components/lint@~latest\n  - component: gitlab.example.com/My-Org/Components/deploy@1\n  - component: $CI_SERVER_FQDN/my-org/components/lint@main\n",
    );
    let map = format!("my-org/components={}", comp.display());
    let out = piste(&app, &["graph", "--format", "json", "--branch", "main", "--project-dir", &map]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(jobs(&out), ["deploy 1.1.0", "lint 1.1.0", "lint main"]);

    let out = piste(&app, &["lint", "--branch", "main"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("map the project to a directory with `--project-dir my-org/components=DIR`"),
        "{}",
        text(&out.stderr)
    );

    let plain = tmp.path().join("plain");
    write(&plain, "templates/lint.yml", "plain-lint:\n  script: [x]\n");
    write(&plain, "templates/deploy/template.yml", "plain-deploy:\n  stage: deploy\n  script: [x]\n");
    let out = piste(&app, &["lint", "--branch", "main", "--project-dir", &format!("my-org/components={}", plain.display())]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is not a git repository, so it has no tags to pick a version from"), "{}", text(&out.stderr));

    // A component that is not in the project at that version is an error of the pipeline.
    write(&app, ".gitlab-ci.yml", "include:\n  - component: $CI_SERVER_FQDN/my-org/components/nope@1.0.0\n");
    let out = piste(&app, &["lint", "--branch", "main", "--project-dir", &map]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("component `nope` not found in `my-org/components` at `1.0.0`"), "{}", text(&out.stderr));
}

/// `include:project` with `ref:` reads that ref of a git `--project-dir`; the pipeline's own
/// project named by `$CI_PROJECT_PATH` is the project being linted.
#[test]
fn project_refs_and_the_own_project() {
    let tmp = tempfile::tempdir().unwrap();
    let comp = component_project(&tmp.path().join("components"));
    let app = tmp.path().join("app");
    let repo = Repository::init(&app).unwrap();
    repo.remote("origin", "https://gitlab.example.com/group/app.git").unwrap();
    write(&app, "ci/own.yml", "own:\n  script: [x]\n");
    write(
        &app,
        ".gitlab-ci.yml",
        "include:\n  - project: my-org/components\n    ref: 1.0.0\n    file: templates/deploy/template.yml\n  - project: $CI_PROJECT_PATH\n    ref: main\n    file: ci/own.yml\n",
    );
    repo.set_head("refs/heads/main").unwrap();
    commit(&repo, "app");
    let map = format!("my-org/components={}", comp.display());
    let out = piste(&app, &["graph", "--format", "json", "--project-dir", &map]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(jobs(&out), ["deploy 1.0.0", "own"]);
}

/// `include:template` reads `--templates-dir` (laid out as GitLab's `lib/gitlab/ci/templates`);
/// a name that would leave it is refused (exit 1); a template it lacks is unavailable (exit 3).
#[test]
fn templates_come_from_the_templates_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let templates = tmp.path().join("templates");
    write(&templates, "Jobs/Build.gitlab-ci.yml", "build:\n  stage: build\n  script: [build]\n");
    let app = tmp.path().join("app");
    let dir = templates.to_str().unwrap();
    write(&app, ".gitlab-ci.yml", "include:\n  - template: Jobs/Build.gitlab-ci.yml\n");
    let out = piste(&app, &["lint", "--branch", "main", "--templates-dir", dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    write(&app, ".gitlab-ci.yml", "include:\n  - template: ../app/.gitlab-ci.yml\n");
    let out = piste(&app, &["lint", "--branch", "main", "--templates-dir", dir]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is refused: a template name is a relative path without `.` or `..` parts"),
        "{}",
        text(&out.stderr)
    );
    write(&app, ".gitlab-ci.yml", "include:\n  - template: Security/SAST.gitlab-ci.yml\n");
    let out = piste(&app, &["lint", "--branch", "main", "--templates-dir", dir]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("template `Security/SAST.gitlab-ci.yml` is not in the templates directory"),
        "{}",
        text(&out.stderr)
    );
}

/// `include:remote` over https: only with `--allow-remote` (else exit 3 naming it), trusting
/// `--ca-file`; GitLab's `integrity:` checked (exit 1 on a mismatch), an HTTP error is an
/// error, plain http and a redirect to it are refused, bodies over 2 MiB are refused, and `cache:`
/// keeps a body by URL (the file may vanish from the server and still be read).
#[test]
fn remote_includes_over_https() {
    let tmp = tempfile::tempdir().unwrap();
    let files = tmp.path().join("files");
    let body = "remote-job:\n  script: [x]\n";
    write(&files, "ci.yml", body);
    write(&files, "cached.yml", body);
    write(&files, "big.yml", &format!("# {}\nj:\n  script: [x]\n", "x".repeat(3 * 1024 * 1024)));
    let server = https::HttpsFiles::serve(&files, &tmp.path().join("nginx"));
    let ca = server.ca.cert.to_str().unwrap().to_string();
    let app = tmp.path().join("app");
    let lint = |include: &str, extra: &[&str]| {
        write(&app, ".gitlab-ci.yml", &format!("include:\n{include}"));
        let mut args = vec!["lint", "--branch", "main"];
        args.extend_from_slice(extra);
        let out = piste(&app, &args);
        (out.status.code(), text(&out.stderr))
    };
    let url = format!("{}/ci.yml", server.base);
    let plain = format!("  - remote: {url}\n");

    let (code, err) = lint(&plain, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("remote includes are fetched only with `--allow-remote`"), "{err}");
    let (code, err) = lint(&plain, &["--allow-remote"]);
    assert_eq!(code, Some(3), "an unknown authority: could not check\n{err}");
    assert!(err.contains("cannot fetch it"), "{err}");
    let allowed = ["--allow-remote", "--ca-file", ca.as_str()];
    let (code, err) = lint(&plain, &allowed);
    assert_eq!(code, Some(0), "{err}");

    let good = pipeline_spec::include::Integrity::of(body.as_bytes()).to_string();
    let (code, err) = lint(&format!("{plain}    integrity: {good}\n"), &allowed);
    assert_eq!(code, Some(0), "{err}");
    let bad = pipeline_spec::include::Integrity::of(b"another body").to_string();
    let (code, err) = lint(&format!("{plain}    integrity: {bad}\n"), &allowed);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("failed its integrity check: its content is `{good}`, `integrity` says `{bad}`")), "{err}");

    let (code, err) = lint(&format!("  - remote: {}/missing.yml\n", server.base), &allowed);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the server answered HTTP 404 Not Found"), "{err}");
    let (code, err) = lint(&format!("  - remote: {}\n", url.replacen("https://", "http://", 1)), &allowed);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("piste fetches `include:remote` over https only"), "{err}");
    let (code, err) = lint(&format!("  - remote: {}/to-http\n", server.base), &allowed);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("a redirect left https"), "{err}");
    let (code, err) = lint(&format!("  - remote: {}/moved\n", server.base), &allowed);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = lint(&format!("  - remote: {}/big.yml\n", server.base), &allowed);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the file is larger than the 2097152 bytes piste reads"), "{err}");

    let cached = format!("  - remote: {}/cached.yml\n    cache: 1h\n", server.base);
    let (code, err) = lint(&cached, &allowed);
    assert_eq!(code, Some(0), "{err}");
    std::fs::remove_file(files.join("cached.yml")).unwrap();
    let (code, err) = lint(&cached, &allowed);
    assert_eq!(code, Some(0), "read from the cache: {err}");
    let (code, err) = lint(&format!("  - remote: {}/cached.yml\n", server.base), &allowed);
    assert_eq!(code, Some(1), "without `cache:` it is fetched again: {err}");
}

/// The stand-in projects of `fixtures/includes` as git repositories: one commit of the
/// folder, with the branches (and commits named as refs) and tags `PROJECTS.tsv` lists.
/// Returns `--project-dir` arguments, one per project path.
fn stand_in_repos(dir: &Path) -> Vec<String> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/includes");
    let tsv = std::fs::read_to_string(base.join("PROJECTS.tsv")).unwrap();
    let mut args = Vec::new();
    for line in tsv.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let repo_dir = dir.join(f[1]);
        if !repo_dir.exists() {
            copy_dir(&base.join(f[1]), &repo_dir);
            let repo = Repository::init(&repo_dir).unwrap();
            let id = commit(&repo, "stand-in");
            let target = repo.find_commit(id).unwrap();
            let head = repo.head().unwrap().shorthand().unwrap().to_string();
            for b in f[2].split(',').filter(|b| !b.is_empty() && *b != "-" && *b != head) {
                repo.branch(b, &target, false).unwrap();
            }
            for t in f[3].split(',').filter(|t| !t.is_empty() && *t != "-") {
                repo.tag_lightweight(t, target.as_object(), true).unwrap();
            }
        }
        args.push("--project-dir".to_string());
        args.push(format!("{}={}", f[0], repo_dir.display()));
    }
    args
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Real pipelines (`fixtures/corpus/realworld`) with the stand-ins of the projects and
/// components they include, as git repositories mapped with `--project-dir`: those whose
/// includes are all there lint clean; the others exit 3 and name only what is missing.
#[test]
fn realworld_pipelines_resolve_their_projects_and_components() {
    let tmp = tempfile::tempdir().unwrap();
    let maps = stand_in_repos(tmp.path());
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus/realworld");
    let lint = |dir: &str, branch: &str| {
        let root = corpus.join(dir);
        let mut args: Vec<String> =
            ["lint", "--branch", branch, "--root", root.to_str().unwrap(), "-f", ".gitlab-ci.yml"].map(String::from).to_vec();
        args.extend(maps.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = piste(&root, &args);
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    // GNOME: `gnome/citemplates` files, the `release-service` component at `master`,
    // freedesktop's templates at a commit; mutter: a component at `25.5`; KDE: a dozen files.
    for (dir, branch) in [("GNOME__gjs", "master"), ("GNOME__mutter", "main"), ("GNOME__yelp", "master"), ("KDE__okular", "master")] {
        let (code, out, err) = lint(dir, branch);
        assert_eq!(code, Some(0), "{dir}: {out}{err}");
        assert!(out.contains("is valid"), "{dir}: {out}");
    }
    let (code, _, err) = lint("GNOME__tinysparql", "main");
    assert_eq!(code, Some(3), "{err}");
    let unavailable: Vec<&str> = err.lines().filter(|l| l.contains(": unavailable: ")).collect();
    assert_eq!(unavailable.len(), 4, "{err}");
    assert!(unavailable.iter().all(|l| l.contains("cannot resolve `include:remote`")), "{err}");
}
