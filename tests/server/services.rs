//! Services on a server's docker-executor runner: the same pipeline as `piste run`'s test
//! (tests/common/services.yml), through a webhook, a runner and the API.

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push, job_id};

/// GitLab (ci/yaml `services`, `services:entrypoint`, `services:pull_policy`): a service runs
/// next to the job under its alias with its own variables and entrypoint; a missing image
/// with `pull_policy: never` fails the job before its script, and the API says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_runs_beside_a_job_on_a_docker_runner_and_a_missing_one_fails_it_saying_why() {
    crate::both_ways::image();
    let forge = Forge::new(&include_str!("../common/services.yml").replace("{img}", "piste-demo/busybox:1"));
    let server = Server::start(&forge, 10_000, "");
    let http = Http::new(&server);
    let runner = RunnerProc::start(&server, "node-docker", "docker");
    let (before, after) = forge.push("main", "services");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "services"), Some(SECRET), "services-1").await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed", "canceled"], 120).await;
    let job = |name: &str| p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).unwrap().clone();
    let served = job("served");
    let log = http.log(job_id(&p, "served")).await;
    assert_eq!(served["status"], "success", "{p:#}\n{log}\n{}", runner.log());
    assert!(log.lines().any(|l| l.trim_end_matches('\r') == "SAW served by the-entrypoint"), "{log}");
    let missing = job("missing");
    assert_eq!(missing["status"], "failed", "{p:#}");
    let reason = missing["failure_reason"].as_str().unwrap_or("");
    assert!(reason.contains("service image `piste-test/not-here:1` is not present locally and the pull policy is `never`"), "{missing:#}");
    assert!(!http.log(job_id(&p, "missing")).await.lines().any(|l| l == "never-runs"));
}
