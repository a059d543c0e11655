//! `workflow:auto_cancel` across pipelines of one branch, on a real server with real runners.
//! GitLab's rules (docs: "workflow:auto_cancel:on_new_commit", "interruptible",
//! "workflow:auto_cancel:on_job_failure"): a new pipeline on a branch cancels the older
//! pipelines of that branch, each as *its own* setting says — `conservative` (default): the
//! whole pipeline, unless an `interruptible: false` job has started; `interruptible`: only its
//! `interruptible: true` jobs; `none`: nothing. `on_job_failure: all` cancels the pipeline as
//! soon as a job fails.

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push};

/// Pushes `yml` on `main` and sends its webhook; the new pipeline's id.
async fn push(forge: &Forge, http: &Http, yml: &str, delivery: &str) -> i64 {
    std::fs::write(forge.work().join(".gitlab-ci.yml"), yml).unwrap();
    let (before, after) = forge.push("main", delivery);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, delivery), Some(SECRET), delivery).await;
    assert_eq!(r.status(), 201, "webhook accepted");
    r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap()
}

fn job<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).unwrap_or_else(|| panic!("no job {name}: {p:#}"))
}

const QUICK: &str = "quick:\n  script: [echo quick]\n";

/// `conservative` (the default) cancels a pipeline none of whose jobs has started, even
/// `interruptible: false` ones ("jobs that have not started are safe to cancel").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conservative_cancels_an_older_pipeline_that_has_not_started() {
    let forge = Forge::new(QUICK);
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    // No runner yet: the first pipeline's jobs stay pending.
    let first = push(&forge, &http, "build:\n  script: [echo build]\ntest:\n  stage: test\n  script: [echo test]\n", "c-1").await;
    http.wait_job_status(first, "build", &["pending"], 60).await;
    let second = push(&forge, &http, QUICK, "c-2").await;
    let p = http.wait_status(first, &["canceled"], 30).await;
    assert_eq!(job(&p, "build")["status"], "canceled", "{p:#}");
    assert_eq!(job(&p, "test")["status"], "canceled", "{p:#}");
    let _runner = RunnerProc::start(&server, "node", "shell");
    let p2 = http.wait_status(second, &["success", "failed", "canceled"], 60).await;
    assert_eq!(p2["status"], "success", "the newer pipeline runs: {p2:#}");
    assert!(server.log().contains("pipeline auto-canceled by a newer one"), "{}", server.log());
}

/// `conservative`: once an `interruptible: false` job has started, the older pipeline is left
/// alone and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conservative_leaves_a_pipeline_whose_uninterruptible_job_started() {
    let mark = tempfile::tempdir().unwrap();
    let gate = mark.path().join("go");
    let forge = Forge::new(QUICK);
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let yml = format!(
        "deploy:\n  script:\n    - echo started\n    - while [ ! -f {g} ]; do sleep 0.1; done\nafter:\n  stage: test\n  script: [echo after]\n",
        g = gate.display()
    );
    let first = push(&forge, &http, &yml, "k-1").await;
    http.wait_job_status(first, "deploy", &["running"], 60).await;
    let second = push(&forge, &http, QUICK, "k-2").await;
    // The newer pipeline starts after the older ones were dealt with.
    http.wait_status(second, &["pending", "running", "success"], 60).await;
    let p = http.wait_status(first, &["running", "canceled", "canceling"], 10).await;
    assert_eq!(p["status"], "running", "not canceled: {p:#}");
    std::fs::write(&gate, "").unwrap();
    let p = http.wait_status(first, &["success", "failed", "canceled"], 60).await;
    assert_eq!(p["status"], "success", "{p:#}");
    assert_eq!(job(&p, "after")["status"], "success", "{p:#}");
    assert_eq!(http.wait_status(second, &["success", "failed", "canceled"], 60).await["status"], "success");
}

/// `interruptible`: the running interruptible job is stopped; the other job goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interruptible_cancels_only_the_interruptible_jobs() {
    let forge = Forge::new(QUICK);
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    // One runner, one job at a time: `build` runs while `deploy` waits in the queue.
    let yml = "workflow:\n  auto_cancel:\n    on_new_commit: interruptible\n\
               build:\n  interruptible: true\n  script:\n    - echo started\n    - sleep 60\n\
               deploy:\n  script: [echo deployed]\n";
    let first = push(&forge, &http, yml, "i-1").await;
    http.wait_job_status(first, "build", &["running"], 60).await;
    http.wait_job_status(first, "deploy", &["pending"], 10).await;
    let second = push(&forge, &http, QUICK, "i-2").await;
    let p = http.wait_status(first, &["success", "failed", "canceled"], 60).await;
    assert_eq!(job(&p, "build")["status"], "canceled", "{p:#}");
    assert_eq!(job(&p, "deploy")["status"], "success", "not interruptible: it ran: {p:#}");
    assert_eq!(http.wait_status(second, &["success", "failed", "canceled"], 60).await["status"], "success");
}

/// `none`: a newer pipeline changes nothing in this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_keeps_the_older_pipeline() {
    let forge = Forge::new(QUICK);
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let yml = "workflow:\n  auto_cancel:\n    on_new_commit: none\nbuild:\n  interruptible: true\n  script: [echo build]\n";
    let first = push(&forge, &http, yml, "n-1").await;
    http.wait_job_status(first, "build", &["pending"], 60).await;
    let second = push(&forge, &http, QUICK, "n-2").await;
    http.wait_status(second, &["pending"], 60).await;
    assert_eq!(http.wait_status(first, &["pending", "canceled"], 10).await["status"], "pending");
    let _runner = RunnerProc::start(&server, "node", "shell");
    assert_eq!(http.wait_status(first, &["success", "failed", "canceled"], 60).await["status"], "success");
    assert_eq!(http.wait_status(second, &["success", "failed", "canceled"], 60).await["status"], "success");
}

/// `on_job_failure: all`: the first failure cancels what has not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_job_failure_all_cancels_the_rest_of_the_pipeline() {
    let forge = Forge::new(QUICK);
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let yml = "workflow:\n  auto_cancel:\n    on_job_failure: all\n\
               broken:\n  script: [exit 3]\nqueued:\n  script: [echo queued]\nlater:\n  stage: test\n  script: [echo later]\n";
    let id = push(&forge, &http, yml, "f-1").await;
    let p = http.wait_status(id, &["success", "failed", "canceled"], 60).await;
    assert_eq!(p["status"], "failed", "{p:#}");
    assert_eq!(job(&p, "broken")["status"], "failed", "{p:#}");
    assert_eq!(job(&p, "queued")["status"], "canceled", "{p:#}");
    assert_eq!(job(&p, "later")["status"], "canceled", "{p:#}");
}
