//! Trigger jobs on the server (GitLab's downstream pipelines): a child pipeline from a file of
//! the commit and from an earlier job's artifact, `CI_PIPELINE_SOURCE=parent_pipeline`,
//! variables passed by `forward`, `strategy: depend`, the link shown in the API and on the
//! pipeline page, and a bad child configuration failing its trigger job with `file:line:col`.

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push, job_id};

async fn push(forge: &Forge, http: &Http, delivery: &str) -> i64 {
    let (before, after) = forge.push("main", delivery);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, delivery), Some(SECRET), delivery).await;
    assert_eq!(r.status(), 201, "webhook accepted");
    r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap()
}

async fn get(http: &Http, path: &str) -> Value {
    http.client.get(format!("{}{path}", http.base)).send().await.unwrap().json().await.unwrap()
}

const PARENT: &str = r#"
stages: [gen, child]
variables:
  GLOBAL: g
generate:
  stage: gen
  script:
    - |
      cat > dyn.yml <<'EOF'
      gen-job:
        script: [echo from-artifact source=$CI_PIPELINE_SOURCE]
      EOF
  artifacts:
    paths: [dyn.yml]
local-child:
  stage: child
  variables:
    FROM_PARENT: "p-$CI_COMMIT_BRANCH"
  trigger:
    include: ci/child.yml
    strategy: depend
dynamic-child:
  stage: child
  needs: [generate]
  trigger:
    include:
      - artifact: dyn.yml
        job: generate
"#;

const CHILD: &str = r#"
unit:
  script:
    - echo "child source=$CI_PIPELINE_SOURCE from_parent=$FROM_PARENT global=$GLOBAL"
push-only:
  script: [echo never]
  rules:
    - if: $CI_PIPELINE_SOURCE == "push"
"#;

/// GitLab: `trigger:include` creates a child pipeline of the same commit and ref, with
/// `CI_PIPELINE_SOURCE=parent_pipeline`, the trigger job's YAML variables, its own id and a
/// link both ways; `strategy: depend` makes the trigger job wait and take the child's status;
/// `trigger:include:artifact` reads the YAML an earlier job left in its artifacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_pipelines_from_a_file_and_an_artifact_run_and_link_to_their_parent() {
    let forge = Forge::new(PARENT);
    std::fs::create_dir_all(forge.work().join("ci")).unwrap();
    std::fs::write(forge.work().join("ci/child.yml"), CHILD).unwrap();
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let parent = push(&forge, &http, "d-1").await;
    let p = http.wait_status(parent, &["success", "failed", "canceled"], 90).await;
    assert_eq!(p["status"], "success", "{p:#}\n{}", server.log());
    let downstream = p["downstream"].as_array().cloned().unwrap_or_default();
    assert_eq!(downstream.len(), 2, "{p:#}");
    let by_job = |name: &str| {
        let id = job_id(&p, name);
        downstream.iter().find(|d| d["job_id"] == id).unwrap_or_else(|| panic!("no child of {name}: {p:#}"))["id"].as_i64().unwrap()
    };
    let local = by_job("local-child");
    let child = http.wait_status(local, &["success", "failed", "canceled"], 60).await;
    assert_eq!(child["status"], "success", "{child:#}");
    assert_eq!(child["source"], "parent_pipeline");
    assert_eq!(child["sha"], p["sha"]);
    assert_eq!(child["upstream"]["pipeline_id"], parent);
    let names: Vec<&str> = child["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["unit"], "the child's rules see `parent_pipeline`");
    let log = http.log(job_id(&child, "unit")).await;
    assert!(log.contains("child source=parent_pipeline from_parent=p-main global=g"), "{log}");

    let dynamic = http.wait_status(by_job("dynamic-child"), &["success", "failed", "canceled"], 60).await;
    assert_eq!(dynamic["status"], "success", "{dynamic:#}");
    let log = http.log(job_id(&dynamic, "gen-job")).await;
    assert!(log.contains("from-artifact source=parent_pipeline"), "{log}");

    let page = http.client.get(format!("{}/pipelines/{parent}", http.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Downstream pipelines") && page.contains(&format!("/pipelines/{local}")), "{page}");
    let page = http.client.get(format!("{}/pipelines/{local}", http.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Child pipeline of") && page.contains("local-child"), "{page}");
}

/// GitLab: with `strategy: depend` a failed child fails its trigger job (and so the parent);
/// a child whose configuration is invalid is not created, and the trigger job fails
/// (`downstream_pipeline_creation_failed`) with the loader's `file:line:col` in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_invalid_child_fails_its_trigger_job() {
    let forge =
        Forge::new("fails:\n  trigger:\n    include: ci/fail.yml\n    strategy: depend\nbad:\n  trigger:\n    include: ci/bad.yml\n");
    std::fs::create_dir_all(forge.work().join("ci")).unwrap();
    std::fs::write(forge.work().join("ci/fail.yml"), "boom:\n  script: [exit 4]\n").unwrap();
    std::fs::write(forge.work().join("ci/bad.yml"), "oops:\n  scrpt: [echo]\n").unwrap();
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let parent = push(&forge, &http, "d-2").await;
    let p = http.wait_status(parent, &["success", "failed", "canceled"], 90).await;
    assert_eq!(p["status"], "failed", "{p:#}");
    let fails = p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "fails").unwrap().clone();
    assert_eq!(fails["status"], "failed", "{p:#}");
    let bad = p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "bad").unwrap().clone();
    assert_eq!(bad["status"], "failed", "{p:#}");
    assert!(bad["failure_reason"].as_str().unwrap_or("").starts_with("downstream_pipeline_creation_failed"), "{bad:#}");
    let log = http.log(bad["id"].as_i64().unwrap()).await;
    assert!(log.contains("ci/bad.yml:2:3") && log.contains("unknown key `scrpt`"), "{log}");
    let child = get(&http, &format!("/api/v1/pipelines/{parent}")).await;
    let failed_child = child["downstream"].as_array().unwrap().iter().find(|d| d["job_id"] == fails["id"]).unwrap().clone();
    assert_eq!(failed_child["status"], "failed");
}
