//! Webhooks in, pipelines out: signatures, replays, the whole loop, hostile payload fields.

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, github_push, github_signature, gitlab_push, job_id};

const PIPELINE: &str = "stages: [build, test]\nbuild:\n  stage: build\n  script:\n    - echo \"building $CI_COMMIT_SHORT_SHA on $CI_COMMIT_BRANCH\"\n    - mkdir -p out && echo artifact > out/a.txt\n    - echo \"token is $DEPLOY_TOKEN\"\n  artifacts:\n    paths: [out/]\ntest:\n  stage: test\n  script:\n    - cat out/a.txt\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_missing_signatures_are_refused_before_anything_happens() {
    let forge = Forge::new(PIPELINE);
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let body = gitlab_push("main", &before, &after, "first");
    assert_eq!(http.gitlab_hook(body.clone(), None, "d-1").await.status(), 401);
    assert_eq!(http.gitlab_hook(body.clone(), Some("wrong-token"), "d-2").await.status(), 401);
    let gh = github_push("main", &before, &after);
    let forged = http
        .client
        .post(format!("{}/api/v1/webhooks/app", http.base))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "gh-1")
        .header("X-Hub-Signature-256", github_signature(&gh, "not-the-secret"))
        .body(gh.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let error: serde_json::Value = forged.json().await.unwrap();
    assert_eq!(error["code"], "unauthorized", "API errors carry a stable code");
    assert!(http.pipelines().await.is_empty(), "no pipeline from a refused delivery");
    let ok = http
        .client
        .post(format!("{}/api/v1/webhooks/app", http.base))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "gh-2")
        .header("X-Hub-Signature-256", github_signature(&gh, SECRET))
        .body(gh)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_runs_to_success_and_a_replayed_delivery_creates_nothing() {
    let forge = Forge::new(PIPELINE);
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 5000, "");
    let _runner = RunnerProc::start(&server, "node-1", "shell");
    let http = Http::new(&server);
    let body = gitlab_push("main", &before, &after, "first");
    let r = http.gitlab_hook(body.clone(), Some(SECRET), "delivery-1").await;
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let again = http.gitlab_hook(body, Some(SECRET), "delivery-1").await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<serde_json::Value>().await.unwrap()["duplicate"], true);
    let p = http.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "success", "{p:#}");
    assert_eq!(p["sha"], after.as_str());
    assert_eq!(http.pipelines().await.len(), 1, "the replay created no second pipeline");
    let build_log = http.log(job_id(&p, "build")).await;
    assert!(build_log.contains(&format!("building {} on main", &after[..8])), "{build_log}");
    assert!(!build_log.contains("tok-123456-secret"), "project secrets are masked: {build_log}");
    let test_log = http.log(job_id(&p, "test")).await;
    assert!(test_log.contains("artifact"), "artifacts reached the next stage: {test_log}");
    let metrics = http.client.get(format!("{}/metrics", http.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("piste_queue_depth 0") && metrics.contains("piste_jobs{status=\"success\"} 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_names_from_a_payload_are_data_never_shell() {
    let marker = std::env::temp_dir().join(format!("pwned-{}", std::process::id()));
    let branch = format!("$(touch {})", marker.display());
    let forge = Forge::new("show:\n  script:\n    - echo \"ref=$CI_COMMIT_REF_NAME\"\n");
    let (before, after) = forge.push("main", "x");
    let server = Server::start(&forge, 5000, "");
    let _runner = RunnerProc::start(&server, "node-1", "shell");
    let http = Http::new(&server);
    // The forge says the commit is on a branch with a hostile name (the ref itself is valid git).
    let body = gitlab_push(&branch.replace(' ', "-"), &before, &after, "$(touch /tmp/pwned-message)");
    let r = http.gitlab_hook(body, Some(SECRET), "hostile-1").await;
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    if status == 201 {
        let p = http.wait_status(v["pipeline"].as_i64().unwrap(), &["success", "failed", "error", "skipped"], 60).await;
        let log = http.log(job_id(&p, "show")).await;
        assert!(log.contains("ref=$(touch"), "the name arrives verbatim: {log}");
    } else {
        assert_eq!(status, 400, "refused as a malformed ref is acceptable too: {v}");
    }
    assert!(!marker.exists(), "a branch name was executed");
    assert!(!std::path::Path::new("/tmp/pwned-message").exists(), "a commit message was executed");
}
