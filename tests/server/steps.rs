//! `run:` steps through a server runner: the built-in `piste/gitops-bump@v1` pushes to a
//! deployment repository served by `git daemon --enable=receive-pack`, its outputs reach the
//! next job as dotenv variables, and `GET /api/v1/jobs/{id}` shows the deploy commit.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, free_port, git, git_daemon_program, gitlab_push, job_id, wait_port};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// `fixtures/delivery/deploy` as a bare repository served with pushes enabled.
struct DeployRepo {
    dir: tempfile::TempDir,
    url: String,
    daemon: Child,
}

impl DeployRepo {
    fn new() -> DeployRepo {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("envs/prod")).unwrap();
        for f in ["values.yaml", "kustomization.yaml"] {
            std::fs::copy(fixture(&format!("delivery/deploy/envs/prod/{f}")), work.join("envs/prod").join(f)).unwrap();
        }
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "initial"]);
        std::fs::create_dir_all(dir.path().join("repos")).unwrap();
        git(dir.path(), &["clone", "-q", "--bare", "work", "repos/deploy.git"]);
        let port = free_port();
        let daemon = Command::new(git_daemon_program())
            .args(["--export-all", "--reuseaddr", "--enable=receive-pack", "--listen=127.0.0.1", &format!("--port={port}")])
            .arg(format!("--base-path={}", dir.path().join("repos").display()))
            .arg(dir.path().join("repos"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon (Debian's git package)");
        wait_port(port);
        DeployRepo { dir, url: format!("git://127.0.0.1:{port}/deploy.git"), daemon }
    }

    fn bare(&self) -> PathBuf {
        self.dir.path().join("repos/deploy.git")
    }
}

impl Drop for DeployRepo {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_pipeline_bumps_the_deploy_repo_through_a_server_runner_and_the_api_shows_the_commit() {
    let deploy = DeployRepo::new();
    let pipeline = std::fs::read_to_string(fixture("delivery/.gitlab-ci.yml")).unwrap();
    let forge = Forge::new(&format!("variables:\n  DEPLOY_REPO: {}\n{pipeline}", deploy.url));
    let server = Server::start(&forge, 10_000, "");
    let _runner = RunnerProc::start(&server, "node-shell", "shell");
    let http = Http::new(&server);

    let (before, after) = forge.push("main", "deliver");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "deliver"), Some(SECRET), "steps-1").await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed", "canceled"], 120).await;
    let deploy_job = job_id(&p, "deploy");
    let log = http.log(deploy_job).await;
    assert_eq!(p["status"], "success", "{p:#}\n{log}");

    let commit = git(&deploy.bare(), &["rev-parse", "main"]);
    assert_eq!(git(&deploy.bare(), &["diff", "--numstat", "main~1", "main"]), "1\t1\tenvs/prod/values.yaml");
    let message = git(&deploy.bare(), &["log", "-1", "--format=%B", "main"]);
    assert!(message.contains(&format!("Piste-Pipeline: {id}")) && message.contains("Piste-Project: app"), "{message}");
    assert!(log.contains(&format!("deployed in {commit} (changed=true)")), "{log}");
    assert!(log.contains(":step_deploy\r"), "a collapsible section per step: {log}");
    assert!(log.contains("after_script sees success"), "{log}");
    let verify = http.log(job_id(&p, "verify")).await;
    assert!(verify.contains(&format!("verify sees DEPLOY_COMMIT={commit}")), "{verify}");

    let job: Value = http.client.get(format!("{}/api/v1/jobs/{deploy_job}", http.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(job["deploy_commit"], commit.as_str(), "{job:#}");
    assert_eq!(job["deploys"], serde_json::json!([{"step": "deploy", "commit": commit, "changed": true}]));
    let page = http.client.get(format!("{}/jobs/{deploy_job}", http.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Deploy commit") && page.contains(&commit), "the job page shows the deploy commit");
    let build: Value =
        http.client.get(format!("{}/api/v1/jobs/{}", http.base, job_id(&p, "build"))).send().await.unwrap().json().await.unwrap();
    assert!(build.get("deploy_commit").is_none(), "{build:#}");
}
