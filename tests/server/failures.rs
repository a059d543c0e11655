//! Nothing is lost: a runner killed mid-job, a server killed mid-pipeline, a cancel.

use std::time::Duration;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push, job_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_loses_its_job_which_is_retried_elsewhere_with_its_log_kept() {
    // The first attempt leaves a mark outside its workspace, so the retry knows it is second.
    let mark = tempfile::tempdir().unwrap();
    let marker = mark.path().join("first-attempt");
    let forge = Forge::new(&format!(
        "slow:\n  retry: 1\n  script:\n    - echo before-the-kill\n    - if [ -f {m} ]; then echo second-attempt; else touch {m}; sleep 30; fi\n",
        m = marker.display()
    ));
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 2000, "");
    let http = Http::new(&server);
    let mut first = RunnerProc::start(&server, "doomed", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "kill-1").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let job = http.wait_job_status(id, "slow", &["running"], 60).await;
    let job_id = job["id"].as_i64().unwrap();
    // Wait until the first line reached the server, then kill the runner without warning.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !http.log(job_id).await.contains("before-the-kill") {
        assert!(std::time::Instant::now() < deadline, "no log from the first attempt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill();
    let _second = RunnerProc::start(&server, "healthy", "shell");
    let p = http.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "success", "retried as a runner system failure: {p:#}");
    let j = p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "slow").unwrap().clone();
    assert_eq!(j["attempt"], 2, "{j}");
    let log = http.log(j["id"].as_i64().unwrap()).await;
    assert!(log.lines().any(|l| l == "second-attempt"), "the retry's log: {log}");
    let first_log =
        http.client.get(format!("{}/api/v1/jobs/{}/log?attempt=1", http.base, j["id"])).send().await.unwrap().text().await.unwrap();
    assert!(first_log.lines().any(|l| l == "before-the-kill"), "the killed attempt's log is kept: {first_log}");
    assert!(!first_log.lines().any(|l| l == "second-attempt"), "attempts have separate logs: {first_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_pipeline_finishes_it_after_restart_without_losing_log_lines() {
    let script = "stages: [a, b]\nlines:\n  stage: a\n  script:\n    - for i in $(seq 1 40); do echo line-$i; sleep 0.1; done\nafter:\n  stage: b\n  script: [echo done]\n";
    let forge = Forge::new(script);
    let (before, after) = forge.push("main", "first");
    let mut server = Server::start(&forge, 10_000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "restart-1").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_job_status(id, "lines", &["running"], 60).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.spawn();
    let p = http.wait_status(id, &["success", "failed"], 90).await;
    assert_eq!(p["status"], "success", "{p:#}\nserver log:\n{}", server.log());
    let log = http.log(job_id(&p, "lines")).await;
    let got: Vec<&str> = log.lines().filter(|l| l.starts_with("line-")).collect();
    let want: Vec<String> = (1..=40).map(|i| format!("line-{i}")).collect();
    assert_eq!(got, want, "every line exactly once, in order:\n{log}");
}

/// A server down for several lease periods does not fail the healthy jobs its runners kept
/// running: after a restart, leases get one lease period to be renewed before they expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_longer_than_a_lease_resumes_its_running_jobs() {
    let forge = Forge::new("slow:\n  script:\n    - echo started\n    - sleep 6\n    - echo finished\n");
    let (before, after) = forge.push("main", "first");
    let mut server = Server::start(&forge, 1_000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "down-1").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let job = http.wait_job_status(id, "slow", &["running"], 60).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !http.log(job["id"].as_i64().unwrap()).await.contains("started") {
        assert!(std::time::Instant::now() < deadline, "the job did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.kill();
    // Three lease periods without a server: every lease in the store has expired.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    server.spawn();
    let p = http.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "success", "{p:#}\nserver log:\n{}", server.log());
    let j = p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "slow").unwrap();
    assert_eq!(j["attempt"], 1, "the running attempt went on; it was not expired and retried: {j}");
    assert!(http.log(j["id"].as_i64().unwrap()).await.contains("finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_the_api_stops_the_job() {
    // One runner, one job at a time: `long` runs while `queued` waits in the queue.
    let forge = Forge::new("long:\n  script:\n    - echo started\n    - sleep 60\nqueued:\n  script:\n    - sleep 60\n");
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "cancel-1").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let job = http.wait_job_status(id, "long", &["running"], 60).await;
    http.wait_job_status(id, "queued", &["pending"], 10).await;
    let started = std::time::Instant::now();
    let c = http.client.post(format!("{}/api/v1/pipelines/{id}/cancel", http.base)).send().await.unwrap();
    assert_eq!(c.status(), 202);
    let p = http.wait_status(id, &["canceled"], 30).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    let j = p["jobs"].as_array().unwrap().iter().find(|j| j["id"] == job["id"]).unwrap().clone();
    assert_eq!(j["status"], "canceled", "{p:#}");
    let q = p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "queued").unwrap().clone();
    assert_eq!(q["status"], "canceled", "a queued job is canceled without a runner: {p:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_share_the_queue_and_run_each_job_once() {
    let mut yml = String::new();
    for i in 0..16 {
        yml.push_str(&format!("j{i}:\n  script: [\"echo job-{i} on $CI_RUNNER_DESCRIPTION\"]\n"));
    }
    let forge = Forge::new(&yml);
    let (before, after) = forge.push("main", "first");
    let db = crate::support::postgres_database();
    let shared = tempfile::tempdir().unwrap();
    let extra = format!("database = \"{db}\"");
    let a = Server::start_in(&forge, 5000, &extra, Some(shared.path()));
    let b = Server::start_in(&forge, 5000, &extra, Some(shared.path()));
    let _ra = RunnerProc::start(&a, "runner-a", "shell");
    let _rb = RunnerProc::start(&b, "runner-b", "shell");
    let http = Http::new(&a);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "pg-1").await;
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = Http::new(&b).wait_status(id, &["success", "failed"], 90).await;
    assert_eq!(p["status"], "success", "{p:#}\nserver a:\n{}\nserver b:\n{}", a.log(), b.log());
    let jobs = p["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 16);
    assert!(jobs.iter().all(|j| j["attempt"] == 1), "no job ran twice: {p:#}");
    let mut by_runner = std::collections::HashMap::new();
    for j in jobs {
        let log = http.log(j["id"].as_i64().unwrap()).await;
        let runner = if log.contains("on runner-a") {
            "a"
        } else if log.contains("on runner-b") {
            "b"
        } else {
            "?"
        };
        *by_runner.entry(runner).or_insert(0) += 1;
    }
    assert!(!by_runner.contains_key("?"), "every job says where it ran: {by_runner:?}");
}

/// Processes of `pattern` (full command line), as `pgrep -f` sees them.
fn processes(pattern: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep").args(["-f", pattern]).output().expect("pgrep (procps)");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// A runner killed with SIGKILL leaves its job's processes running (nobody is left to stop
/// them); the same runner, started again, stops them before it takes a job, so an orphan cannot
/// write into the retried attempt's workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runner_stops_what_its_killed_life_left_running() {
    let tag = format!("{}", 7000 + std::process::id() % 1000);
    let pattern = format!("sleep {tag}.5");
    let forge = Forge::new(&format!("orphans:\n  script:\n    - sleep {tag}.5 &\n    - echo started\n    - sleep {tag}.5\n"));
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 60_000, "");
    let http = Http::new(&server);
    let mut runner = RunnerProc::start(&server, "killed", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "orphans-1").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let job = http.wait_job_status(id, "orphans", &["running"], 60).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !http.log(job["id"].as_i64().unwrap()).await.contains("started") || processes(&pattern).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the job's processes did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runner.kill();
    assert_eq!(processes(&pattern).len(), 2, "SIGKILL leaves the job's processes behind: this test must see them");
    runner.spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !processes(&pattern).is_empty() {
        if std::time::Instant::now() > deadline {
            let _ = std::process::Command::new("pkill").args(["-f", &pattern]).status();
            panic!("the restarted runner left the orphans running:\n{}", runner.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(runner.log().contains("left by a previous run of this runner"), "{}", runner.log());
}
