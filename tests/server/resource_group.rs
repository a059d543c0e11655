//! `resource_group` on a real server with real runners. GitLab's rules (docs "Resource group"):
//! jobs of one group (the key after variable expansion) never run at the same time, within a
//! pipeline and across the project's pipelines; a job waiting for its group is
//! `waiting_for_resource`; when the group is free, the process mode picks the next job:
//! `unordered` (default) any job ready to run, `oldest_first` "the first job from the list of
//! upcoming jobs (created, scheduled, or waiting_for_resource) sorted by pipeline ID in
//! ascending order", `newest_first` the same "in descending order". The mode comes from
//! `piste.toml` (`[project.resource_groups]`), as GitLab sets it through its API.

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push};

/// Each job appends `start <pipeline> <job>` and `end <pipeline> <job>` to `trace`, and waits
/// for `gate` in between.
fn pipeline(trace: &std::path::Path, gate: &std::path::Path, jobs: &[&str]) -> String {
    let mut yml = String::from("workflow:\n  auto_cancel:\n    on_new_commit: none\n");
    for job in jobs {
        yml.push_str(&format!(
            "{job}:\n  resource_group: prod-$CI_COMMIT_BRANCH\n  script:\n    - echo \"start $CI_PIPELINE_ID {job}\" >> {t}\n    - while [ ! -f {g} ]; do sleep 0.1; done\n    - echo \"end $CI_PIPELINE_ID {job}\" >> {t}\n",
            t = trace.display(),
            g = gate.display()
        ));
    }
    yml
}

async fn push(forge: &Forge, http: &Http, delivery: &str) -> i64 {
    let (before, after) = forge.push("main", delivery);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, delivery), Some(SECRET), delivery).await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap()
}

/// The trace as (event, pipeline, job), checking that no two jobs overlap.
fn serial(trace: &std::path::Path) -> Vec<(i64, String)> {
    let text = std::fs::read_to_string(trace).unwrap();
    let mut order = Vec::new();
    let mut open: Option<String> = None;
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let key = format!("{} {}", parts[1], parts[2]);
        match parts[0] {
            "start" => {
                assert!(open.is_none(), "`{key}` started while `{}` ran:\n{text}", open.unwrap());
                open = Some(key);
                order.push((parts[1].parse().unwrap(), parts[2].to_string()));
            }
            _ => {
                assert_eq!(open.as_deref(), Some(key.as_str()), "{text}");
                open = None;
            }
        }
    }
    order
}

/// Two jobs of one pipeline and a job of the next pipeline share `prod-main` (expanded from
/// `prod-$CI_COMMIT_BRANCH`): with two runners free, they still run one at a time, and the
/// ones waiting show `waiting_for_resource` in the API and on the pipeline page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_one_group_never_run_at_once_within_and_across_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let (trace, gate) = (dir.path().join("trace"), dir.path().join("gate"));
    let forge = Forge::new(&pipeline(&trace, &gate, &["one", "two"]));
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _a = RunnerProc::start(&server, "a", "shell");
    let _b = RunnerProc::start(&server, "b", "shell");
    let first = push(&forge, &http, "r-1").await;
    let waiting = ["waiting_for_resource"];
    // One of the two runs; the other waits although a runner is free.
    let mut statuses = Vec::new();
    for job in ["one", "two"] {
        statuses.push(http.wait_job_status(first, job, &["running", "waiting_for_resource"], 60).await["status"].clone());
    }
    assert!(statuses.contains(&Value::from("running")) && statuses.contains(&Value::from("waiting_for_resource")), "{statuses:?}");
    std::fs::write(forge.work().join(".gitlab-ci.yml"), pipeline(&trace, &gate, &["three"])).unwrap();
    let second = push(&forge, &http, "r-2").await;
    http.wait_job_status(second, "three", &waiting, 60).await;
    let p2 = http.wait_status(second, &waiting, 10).await;
    assert_eq!(p2["status"], "waiting_for_resource", "{p2:#}");
    let page = http.client.get(format!("{}/pipelines/{second}", http.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("waiting_for_resource"), "the pipeline page shows the status");
    std::fs::write(&gate, "").unwrap();
    for id in [first, second] {
        assert_eq!(http.wait_status(id, &["success", "failed", "canceled"], 60).await["status"], "success");
    }
    let order = serial(&trace);
    assert_eq!(order.len(), 3, "{order:?}");
    assert_eq!(order[2], (second, "three".to_string()), "unordered: the waiting jobs of the first pipeline asked first: {order:?}");
}

/// Runs three pipelines whose `deploy` shares a group, the first holding it until the other two
/// wait; the order in which the pipelines deployed.
async fn deploy_order(mode: &str) -> Vec<i64> {
    let dir = tempfile::tempdir().unwrap();
    let (trace, gate) = (dir.path().join("trace"), dir.path().join("gate"));
    let forge = Forge::new(&pipeline(&trace, &gate, &["deploy"]));
    let extra = format!("[project.resource_groups]\nprod-main = \"{mode}\"\n");
    let server = Server::start_full(&forge, 5000, "", &extra, None, Vec::new());
    let http = Http::new(&server);
    let _a = RunnerProc::start(&server, "a", "shell");
    let _b = RunnerProc::start(&server, "b", "shell");
    let first = push(&forge, &http, "o-1").await;
    http.wait_job_status(first, "deploy", &["running"], 60).await;
    let second = push(&forge, &http, "o-2").await;
    http.wait_job_status(second, "deploy", &["waiting_for_resource"], 60).await;
    let third = push(&forge, &http, "o-3").await;
    http.wait_job_status(third, "deploy", &["waiting_for_resource"], 60).await;
    std::fs::write(&gate, "").unwrap();
    for id in [first, second, third] {
        assert_eq!(http.wait_status(id, &["success", "failed", "canceled"], 60).await["status"], "success");
    }
    assert!(server.log().contains("resource group granted"));
    serial(&trace).into_iter().map(|(p, _)| p).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_first_runs_the_waiting_jobs_by_ascending_pipeline_id() {
    let order = deploy_order("oldest_first").await;
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted, "{order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_first_runs_the_newest_waiting_job_next_and_the_older_one_after() {
    let order = deploy_order("newest_first").await;
    assert_eq!(order.len(), 3);
    assert!(order[0] < order[2] && order[2] < order[1], "first, then the newest, then the older one: {order:?}");
}

/// A job whose runner dies while it holds the group: when its lease runs out it fails (no
/// `retry`), the group is released and the job waiting for it runs (GitLab: a resource is
/// released when its job finishes, whatever the outcome).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_releases_the_group_to_the_next_job() {
    let dir = tempfile::tempdir().unwrap();
    let (trace, gate) = (dir.path().join("trace"), dir.path().join("gate"));
    let forge = Forge::new(&pipeline(&trace, &gate, &["one", "two"]));
    let server = Server::start(&forge, 2000, "");
    let http = Http::new(&server);
    let mut doomed = RunnerProc::start(&server, "doomed", "shell");
    let id = push(&forge, &http, "l-1").await;
    let mut holder = None;
    for job in ["one", "two"] {
        let j = http.wait_job_status(id, job, &["running", "waiting_for_resource"], 60).await;
        if j["status"] == "running" {
            holder = Some(job);
        }
    }
    let holder = holder.expect("one job holds the group");
    let waiter = if holder == "one" { "two" } else { "one" };
    doomed.kill();
    let _healthy = RunnerProc::start(&server, "healthy", "shell");
    std::fs::write(&gate, "").unwrap();
    let p = http.wait_status(id, &["success", "failed", "canceled"], 90).await;
    let status = |name: &str| p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).unwrap()["status"].clone();
    assert_eq!(status(holder), "failed", "{p:#}");
    assert_eq!(status(waiter), "success", "the waiting job got the group: {p:#}");
    assert_eq!(server.log().matches("resource group granted").count(), 2, "{}", server.log());
}
