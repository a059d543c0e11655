//! The runner's git behaviour on a real server with a real runner. GitLab's rules (docs:
//! ci/runners/configure_runners "Git submodule strategy", "Shallow cloning";
//! ci/runners/git_submodules "Using relative URLs"): a relative submodule URL names another
//! project of the same server and is fetched with the job token; an absolute URL is fetched as
//! written; `GIT_DEPTH` gives a shallow checkout.

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, git, gitlab_push, job_id};

/// A bare repository `name` beside the forge's `app.git` (served by its daemon too), with one
/// file; returns its path and commit.
fn served_repo(forge: &Forge, name: &str, file: &str) -> (std::path::PathBuf, String) {
    let work = forge.dir.path().join(format!("work-{name}"));
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join(file), format!("{name}\n")).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", name]);
    let bare = forge.dir.path().join(format!("repos/{name}.git"));
    git(forge.dir.path(), &["clone", "-q", "--bare", work.to_str().unwrap(), bare.to_str().unwrap()]);
    (bare, git(&work, &["rev-parse", "HEAD"]))
}

/// Adds a submodule at `path` recording `sha` of `clone_from`, declared with `url`.
fn add_submodule(forge: &Forge, path: &str, url: &str, clone_from: &std::path::Path, sha: &str) {
    let w = forge.work();
    git(&w, &["clone", "-q", clone_from.to_str().unwrap(), path]);
    git(&w.join(path), &["checkout", "-q", sha]);
    let mut modules = std::fs::read_to_string(w.join(".gitmodules")).unwrap_or_default();
    modules.push_str(&format!("[submodule \"{path}\"]\n\tpath = {path}\n\turl = {url}\n"));
    std::fs::write(w.join(".gitmodules"), modules).unwrap();
}

async fn push(forge: &Forge, http: &Http, delivery: &str) -> i64 {
    let (before, after) = forge.push("main", delivery);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, delivery), Some(SECRET), delivery).await;
    assert_eq!(r.status(), 201, "webhook accepted");
    r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submodules_relative_to_the_server_and_absolute_with_a_shallow_checkout() {
    let yml = "variables:\n  GIT_SUBMODULE_STRATEGY: recursive\n  GIT_DEPTH: \"1\"\n\
               check:\n  variables:\n    GIT_SUBMODULE_PATHS: \":(exclude)secret\"\n  script:\n    - cat lib/lib.txt vendor/other/other.txt\n    - git rev-parse --is-shallow-repository\n    \
               - echo \"commits=$(git rev-list --count HEAD)\"\n    - cat .git/config lib/.git .git/modules/lib/config\n\
               denied:\n  variables:\n    GIT_SUBMODULE_PATHS: secret\n  script: [echo must-not-run]\n";
    let forge = Forge::new(yml);
    // The first commit, so that depth 1 has something to cut.
    forge.push("main", "first");
    let (lib, lib_sha) = served_repo(&forge, "lib", "lib.txt");
    let (other, other_sha) = served_repo(&forge, "other", "other.txt");
    let (secret, secret_sha) = served_repo(&forge, "secret", "secret.txt");
    add_submodule(&forge, "lib", "../lib.git", &lib, &lib_sha);
    let other_url = forge.url.replace("app.git", "other.git");
    add_submodule(&forge, "vendor/other", &other_url, &other, &other_sha);
    // Configured on the server, but its allowlist does not name `app`.
    add_submodule(&forge, "secret", "../secret.git", &secret, &secret_sha);

    let extra = format!(
        "[[project]]\nname = \"lib\"\nrepo = \"{}\"\nwebhook_secret = \"{SECRET}\"\njob_token_allowlist = [\"app\"]\n\
         [[project]]\nname = \"secret\"\nrepo = \"{}\"\nwebhook_secret = \"{SECRET}\"\n",
        lib.display(),
        secret.display()
    );
    let server = Server::start(&forge, 5000, &extra);
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let id = push(&forge, &http, "with-submodules").await;
    let p = http.wait_status(id, &["success", "failed"], 120).await;

    let log = http.log(job_id(&p, "check")).await;
    assert!(log.contains("Updating/initializing submodules recursively..."), "{log}");
    assert!(log.contains("lib\nother\n") || log.contains("lib\r\nother"), "both submodules checked out: {log}");
    // "Shallow cloning": GIT_DEPTH 1 leaves one commit, in a shallow repository.
    assert!(log.contains("\ntrue\n") && log.contains("commits=1"), "{log}");
    // The job token is in neither the job's `.git/config` nor the log; the submodule URL is the
    // server's, without credentials.
    assert!(log.contains("gitdir: ../.git/modules/lib"), "{log}");
    let origin = log.lines().find(|l| l.trim_start().starts_with("url = ")).unwrap_or_else(|| panic!("the submodule's origin: {log}"));
    assert!(origin.ends_with("/git/-/projects/lib.git") && !origin.contains('@'), "{origin}");
    assert!(!log.to_lowercase().contains("authorization") && !log.contains("piste-ci-token:"), "{log}");

    // A project that did not allow `app` is not served to its jobs: the job fails with git's
    // message, and its script never runs.
    let denied = http.log(job_id(&p, "denied")).await;
    assert!(denied.contains("git submodule update --init") && denied.contains("secret.git"), "{denied}");
    assert!(denied.contains("`job_token_allowlist`"), "says what to do: {denied}");
    assert!(!denied.contains("must-not-run\n"), "{denied}");
    assert_eq!(p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "denied").unwrap()["status"], "failed", "{p:#}");
    assert_eq!(p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "check").unwrap()["status"], "success", "{p:#}");
}
