//! Includes on a real server: components and `include:project` from the mirrors of the
//! projects it is configured with (tags and `~latest` resolved as GitLab does), templates from
//! `[includes] templates_dir`, remote files only when `[includes] remote_allow` lists them,
//! over https (nginx with a CA made here, trusted through `ca_file`), within the time limit;
//! and the `needs` limit set in `piste.toml`.

use serde_json::Value;

use crate::https_forge::HttpsFiles;
use crate::support::{Forge, Http, SECRET, Server, git, gitlab_push};

/// A component project in a bare repository at `dir/components.git`: `lint` names its job
/// after each release (`1.0.0`, `1.1.0`, pre-release `2.0.0-rc.1`).
fn component_project(dir: &std::path::Path) -> std::path::PathBuf {
    let bare = dir.join("components.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare"]);
    let work = dir.join("components");
    std::fs::create_dir_all(work.join("templates")).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    for v in ["1.0.0", "1.1.0", "2.0.0-rc.1"] {
        std::fs::write(
            work.join("templates/lint.yml"),
            format!(
                "spec:\n  inputs:\n    stage:\n      default: test\n---\n\"lint {v}\":\n  stage: $[[ inputs.stage ]]\n  script: [lint]\n"
            ),
        )
        .unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", v]);
        git(&work, &["tag", v]);
    }
    git(&work, &["push", "-q", "--tags", bare.to_str().unwrap(), "main"]);
    bare
}

async fn plan(http: &Http, forge: &Forge, pipeline: &str, n: u32) -> Value {
    std::fs::write(forge.work().join(".gitlab-ci.yml"), pipeline).unwrap();
    let (before, after) = forge.push("main", &format!("push {n}"));
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "p"), Some(SECRET), &format!("includes-{n}")).await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_status(id, &["pending", "failed"], 60).await
}

fn job_names(p: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        p["jobs"].as_array().unwrap_or(&Vec::new()).iter().map(|j| j["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_templates_and_allowed_remote_files_resolve_on_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let components = component_project(tmp.path());
    let templates = tmp.path().join("templates/Jobs");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(templates.join("Build.gitlab-ci.yml"), "template-build:\n  stage: build\n  script: [build]\n").unwrap();
    let files = tmp.path().join("files");
    std::fs::create_dir_all(files.join("slow")).unwrap();
    std::fs::write(files.join("ci.yml"), "remote-job:\n  script: [x]\n").unwrap();
    std::fs::write(files.join("slow/ci.yml"), format!("# {}\nslow:\n  script: [x]\n", "x".repeat(4096))).unwrap();
    std::fs::write(files.join("big.yml"), format!("# {}\nbig:\n  script: [x]\n", "x".repeat(3 << 20))).unwrap();
    let https = HttpsFiles::serve(&files, &tmp.path().join("nginx"));

    let forge = Forge::new("placeholder:\n  script: [x]\n");
    let extra = format!(
        "ca_file = \"{ca}\"\nmax_needs = 60\n[includes]\ntemplates_dir = \"{tpl}\"\nremote_allow = [\"{base}/ci.yml\", \"{base}/big.yml\", \"{base}/slow/*\"]\nremote_timeout_ms = 1000\ncomponent_hosts = [\"gitlab.example.com\"]\n\n[[project]]\nname = \"My-Org/Components\"\nrepo = \"{repo}\"\nwebhook_secret = \"{SECRET}\"\n",
        ca = https.ca.cert.display(),
        tpl = tmp.path().join("templates").display(),
        base = https.base,
        repo = components.display(),
    );
    let server = Server::start(&forge, 5000, &extra);
    let http = Http::new(&server);

    // GitLab: `~latest` is the latest release (pre-releases left out), `1.0` the latest 1.0.x;
    // the component's inputs go through its `spec:inputs`; a host listed in
    // `component_hosts` names this server; project names match whatever their case.
    let pipeline = format!(
        "stages: [build, test, deploy]\ninclude:\n  - component: $CI_SERVER_FQDN/my-org/components/lint@~latest\n  - component: gitlab.example.com/my-org/components/lint@1.0\n    inputs:\n      stage: deploy\n  - project: my-org/components\n    ref: 1.0.0\n    file: templates/lint.yml\n    inputs:\n      stage: build\n  - template: Jobs/Build.gitlab-ci.yml\n  - remote: {}/ci.yml\n    cache: true\n",
        https.base
    );
    let p = plan(&http, &forge, &pipeline, 1).await;
    assert_eq!(p["status"], "pending", "{p:#}");
    assert_eq!(job_names(&p), ["lint 1.0.0", "lint 1.1.0", "remote-job", "template-build"], "{p:#}");
    let stage_of = |name: &str| p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).map(|j| j["stage"].clone());
    assert_eq!(stage_of("lint 1.1.0"), Some("test".into()));

    // Not in `remote_allow`: the pipeline does not start, and says why.
    let p = plan(&http, &forge, &format!("include:\n  - remote: {}/other.yml\nj:\n  script: [x]\n", https.base), 2).await;
    assert_eq!(p["status"], "failed", "{p:#}");
    assert!(p["error"].as_str().unwrap().contains("fetches only the URLs its `[includes] remote_allow` lists"), "{p:#}");

    // Allowed but too slow for `remote_timeout_ms`.
    let p = plan(&http, &forge, &format!("include:\n  - remote: {}/slow/ci.yml\n", https.base), 3).await;
    assert_eq!(p["status"], "failed", "{p:#}");
    assert!(p["error"].as_str().unwrap().contains("did not answer within `[includes] remote_timeout_ms`"), "{p:#}");

    // Larger than `remote_max_bytes` (2 MiB by default).
    let p = plan(&http, &forge, &format!("include:\n  - remote: {}/big.yml\n", https.base), 6).await;
    assert_eq!(p["status"], "failed", "{p:#}");
    assert!(p["error"].as_str().unwrap().contains("larger than `[includes] remote_max_bytes` (2097152)"), "{p:#}");

    // A component of another instance is not read from anywhere.
    let p = plan(&http, &forge, "include:\n  - component: gitlab.com/components/sast/sast@~latest\n", 4).await;
    assert_eq!(p["status"], "failed", "{p:#}");
    assert!(p["error"].as_str().unwrap().contains("`gitlab.com` is not this instance"), "{p:#}");

    // `max_needs` in piste.toml raises GitLab's `ci_max_needs` (50) for this server.
    let mut many = String::new();
    for i in 0..55 {
        many.push_str(&format!("j{i}:\n  stage: build\n  script: [x]\n"));
    }
    let needs: Vec<String> = (0..55).map(|i| format!("j{i}")).collect();
    many.push_str(&format!("last:\n  stage: test\n  script: [x]\n  needs: [{}]\n", needs.join(", ")));
    let p = plan(&http, &forge, &many, 5).await;
    assert_eq!(p["status"], "pending", "{p:#}");
}

/// A stand-in project of `fixtures/includes` as a bare repository under `dir`: one commit of
/// its folder on `master`, with the tags `PROJECTS.tsv` lists.
fn stand_in(dir: &std::path::Path, folder: &str, tags: &[&str]) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/includes").join(folder);
    let work = dir.join(folder);
    let out = std::process::Command::new("cp").arg("-r").arg(&src).arg(&work).status().unwrap();
    assert!(out.success());
    git(&work, &["init", "-q", "-b", "master"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "stand-in"]);
    for t in tags {
        git(&work, &["tag", t]);
    }
    let bare = dir.join(format!("{folder}.git"));
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare"]);
    git(&work, &["push", "-q", "--tags", bare.to_str().unwrap(), "master"]);
    bare
}

/// A real pipeline (GNOME's `yelp`, from `fixtures/corpus/realworld`) on a server configured
/// with the stand-in of `GNOME/citemplates`: its `include:project` file and its two components
/// (on `gitlab.gnome.org`, which `component_hosts` names) resolve, and the component inputs
/// make the jobs GitLab would make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realworld_pipeline_resolves_with_the_projects_it_includes() {
    let tmp = tempfile::tempdir().unwrap();
    let citemplates = stand_in(tmp.path(), "GNOME__citemplates", &["25.5"]);
    let yelp = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus/realworld/GNOME__yelp/.gitlab-ci.yml"),
    )
    .unwrap();
    let forge = Forge::new(&yelp);
    let extra = format!(
        "[includes]\ncomponent_hosts = [\"gitlab.gnome.org\"]\n\n[[project]]\nname = \"GNOME/citemplates\"\nrepo = \"{}\"\nwebhook_secret = \"{SECRET}\"\ndefault_branch = \"master\"\n",
        citemplates.display()
    );
    let server = Server::start(&forge, 5000, &extra);
    let http = Http::new(&server);
    let (before, after) = forge.push("main", "yelp");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "p"), Some(SECRET), "yelp-1").await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["pending", "failed"], 60).await;
    assert_eq!(p["status"], "pending", "{p:#}");
    let names = job_names(&p);
    assert!(names.contains(&"build-gnomeos".to_string()), "{names:?}");
    let build = p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "build-gnomeos").unwrap();
    assert_eq!(build["stage"], "build", "{p:#}");
}
