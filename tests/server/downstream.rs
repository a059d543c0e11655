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
    let forge = Forge::new(
        "fails:\n  trigger:\n    include: ci/fail.yml\n    strategy: depend\nbad:\n  trigger:\n    include: ci/bad.yml\ndeep:\n  trigger:\n    include: ci/l1.yml\n    strategy: depend\n",
    );
    std::fs::create_dir_all(forge.work().join("ci")).unwrap();
    std::fs::write(forge.work().join("ci/l1.yml"), "level1:\n  trigger:\n    include: ci/l2.yml\n    strategy: depend\n").unwrap();
    std::fs::write(forge.work().join("ci/l2.yml"), "level2:\n  trigger:\n    include: ci/l3.yml\n    strategy: depend\n").unwrap();
    std::fs::write(forge.work().join("ci/l3.yml"), "never:\n  script: [echo three]\n").unwrap();
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

    // GitLab's `MAX_DESCENDANTS_DEPTH`: parent → level 1 → level 2; level 2's trigger job fails.
    let deep = p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "deep").unwrap_or_else(|| panic!("{p:#}")).clone();
    assert_eq!(deep["status"], "failed", "{p:#}");
    let down_of = |v: &Value, job: &Value| {
        v["downstream"].as_array().unwrap().iter().find(|d| d["job_id"] == job["id"]).unwrap()["id"].as_i64().unwrap()
    };
    let l1 = get(&http, &format!("/api/v1/pipelines/{}", down_of(&child, &deep))).await;
    let level1 = l1["jobs"][0].clone();
    let l2 = get(&http, &format!("/api/v1/pipelines/{}", down_of(&l1, &level1))).await;
    let level2 = l2["jobs"][0].clone();
    assert_eq!(level2["status"], "failed", "{l2:#}");
    assert!(level2["failure_reason"].as_str().unwrap_or("").contains("reached the maximum depth of child pipelines (2)"), "{level2:#}");
    assert!(l2.get("downstream").is_none(), "no third level: {l2:#}");
}

/// Multi-project triggers between projects of one server: the target runs at the head of
/// `trigger:branch` with `CI_PIPELINE_SOURCE=pipeline` and the trigger job's variables, and
/// `strategy: depend` takes its status — if the target lists the triggering project in
/// `triggered_by` (piste's rule: a downstream pipeline of a protected branch gets its
/// secrets, so the target opts in); an unknown project or one that did not opt in fails the
/// trigger job saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_project_triggers_run_the_target_at_its_branch_when_it_accepts_them() {
    let forge = Forge::new(
        "to-other:\n  variables:\n    FROM_UP: up\n  trigger:\n    project: group/other\n    branch: release\n    strategy: depend\nto-closed:\n  trigger: group/closed\nto-unknown:\n  trigger: group/nope\n",
    );
    let other = Forge::new(
        "other-job:\n  script:\n    - echo \"other source=$CI_PIPELINE_SOURCE branch=$CI_COMMIT_BRANCH up=$FROM_UP project=$CI_PROJECT_PATH\"\n",
    );
    other.push("release", "release");
    let extra = format!(
        "[[project]]\nname = \"group/other\"\nrepo = \"{}\"\nwebhook_secret = \"{SECRET}\"\ntriggered_by = [\"app\"]\n\n[[project]]\nname = \"group/closed\"\nrepo = \"{}\"\nwebhook_secret = \"{SECRET}\"\n",
        other.url, other.url
    );
    let server = Server::start(&forge, 5000, &extra);
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let parent = push(&forge, &http, "m-1").await;
    let p = http.wait_status(parent, &["success", "failed", "canceled"], 90).await;
    let job = |name: &str| p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).unwrap().clone();
    assert_eq!(job("to-other")["status"], "success", "{p:#}\n{}", server.log());
    let closed = job("to-closed");
    assert_eq!(closed["status"], "failed");
    assert!(closed["failure_reason"].as_str().unwrap_or("").contains("does not accept pipelines triggered by `app`"), "{closed:#}");
    let unknown = job("to-unknown");
    assert!(unknown["failure_reason"].as_str().unwrap_or("").contains("`group/nope` is not configured on this server"), "{unknown:#}");
    let down = p["downstream"].as_array().unwrap().clone();
    assert_eq!(down.len(), 1, "only the accepted trigger created a pipeline: {p:#}");
    assert_eq!((down[0]["project"].as_str(), down[0]["source"].as_str()), (Some("group/other"), Some("pipeline")));
    let target = http.wait_status(down[0]["id"].as_i64().unwrap(), &["success"], 30).await;
    assert_eq!(target["ref"], "refs/heads/release");
    let log = http.log(job_id(&target, "other-job")).await;
    assert!(log.contains("other source=pipeline branch=release up=up project=group/other"), "{log}");
}

/// GitLab: canceling a parent pipeline cancels its running child pipelines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_the_parent_cancels_its_child() {
    let forge = Forge::new("t:\n  trigger:\n    include: ci/child.yml\n    strategy: depend\n");
    std::fs::create_dir_all(forge.work().join("ci")).unwrap();
    std::fs::write(forge.work().join("ci/child.yml"), "slow:\n  script: [sleep 30]\n").unwrap();
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let parent = push(&forge, &http, "c-1").await;
    let p = http.wait_status(parent, &["running"], 60).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let child = loop {
        let v = get(&http, &format!("/api/v1/pipelines/{parent}")).await;
        if let Some(id) = v["downstream"].as_array().and_then(|d| d.first()).and_then(|d| d["id"].as_i64()) {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "no child pipeline in 60 s: {v:#}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    http.wait_job_status(child, "slow", &["running"], 60).await;
    let r = http.client.post(format!("{}/api/v1/pipelines/{parent}/cancel", http.base)).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let c = http.wait_status(child, &["canceled"], 60).await;
    assert_eq!(c["jobs"][0]["status"], "canceled", "{c:#}");
    let p2 = http.wait_status(parent, &["canceled"], 60).await;
    assert_eq!(p2["jobs"][0]["status"], "canceled", "{p:#}\n{p2:#}");
}

/// GitLab (ci/yaml `trigger:include`): a child configuration may come from another project's
/// file (`project`, `file`, `ref`) or a template, read as `include:` reads them — here from the
/// mirror of a project the server is configured with and from `[includes] templates_dir`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_pipelines_from_another_projects_file_and_from_a_template_run() {
    let forge = Forge::new(
        "from-project:\n  trigger:\n    include:\n      - project: group/lib\n        file: /ci/child.yml\n        ref: stable\n    strategy: depend\nfrom-template:\n  trigger:\n    include:\n      - template: Jobs/Child.gitlab-ci.yml\n    strategy: depend\n",
    );
    let lib = Forge::new("lib-own:\n  script: [echo lib]\n");
    std::fs::create_dir_all(lib.work().join("ci")).unwrap();
    std::fs::write(
        lib.work().join("ci/child.yml"),
        "lib-child:\n  script: ['echo \"lib child of $CI_PROJECT_PATH source=$CI_PIPELINE_SOURCE\"']\n",
    )
    .unwrap();
    lib.push("stable", "stable");
    std::fs::write(lib.work().join("ci/child.yml"), "wrong-ref:\n  script: [exit 1]\n").unwrap();
    lib.push("main", "main moved on");
    let templates = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(templates.path().join("Jobs")).unwrap();
    std::fs::write(
        templates.path().join("Jobs/Child.gitlab-ci.yml"),
        "template-child:\n  script: ['echo \"template child source=$CI_PIPELINE_SOURCE\"']\n",
    )
    .unwrap();
    let extra = format!(
        "[includes]\ntemplates_dir = \"{}\"\n\n[[project]]\nname = \"group/lib\"\nrepo = \"{}\"\nwebhook_secret = \"{SECRET}\"\n",
        templates.path().display(),
        lib.url
    );
    let server = Server::start(&forge, 5000, &extra);
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let parent = push(&forge, &http, "t-1").await;
    let p = http.wait_status(parent, &["success", "failed", "canceled"], 90).await;
    assert_eq!(p["status"], "success", "{p:#}\n{}", server.log());
    let child_of = |job: &str| {
        let id = job_id(&p, job);
        p["downstream"].as_array().unwrap().iter().find(|d| d["job_id"] == id).unwrap_or_else(|| panic!("{job}: {p:#}"))["id"]
            .as_i64()
            .unwrap()
    };
    let from_project = http.wait_status(child_of("from-project"), &["success"], 30).await;
    assert_eq!(from_project["project"], "app", "a child pipeline belongs to its parent's project: {from_project:#}");
    let log = http.log(job_id(&from_project, "lib-child")).await;
    assert!(log.contains("lib child of app source=parent_pipeline"), "the file at `ref: stable`: {log}");
    let from_template = http.wait_status(child_of("from-template"), &["success"], 30).await;
    let log = http.log(job_id(&from_template, "template-child")).await;
    assert!(log.contains("template child source=parent_pipeline"), "{log}");
}

/// GitLab's `Ci::CancelPipelineService` cascades to child pipelines only (its comment: "for
/// parent child-pipelines only (not multi-project)"): canceling the upstream cancels its
/// trigger job, `strategy: depend` or not, and the multi-project pipeline it started runs on to
/// its own end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_the_upstream_cancels_its_trigger_job_but_not_a_multi_project_downstream() {
    let gate = tempfile::tempdir().unwrap();
    let open = gate.path().join("open");
    let forge = Forge::new("to-other:\n  trigger:\n    project: group/other\n    strategy: depend\n");
    let other =
        Forge::new(&format!("gated:\n  script:\n    - while [ ! -f {} ]; do sleep 0.1; done\n    - echo gate-opened\n", open.display()));
    other.push("main", "main");
    let extra =
        format!("[[project]]\nname = \"group/other\"\nrepo = \"{}\"\nwebhook_secret = \"{SECRET}\"\ntriggered_by = [\"app\"]\n", other.url);
    let server = Server::start(&forge, 5000, &extra);
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let parent = push(&forge, &http, "mc-1").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let downstream = loop {
        let v = get(&http, &format!("/api/v1/pipelines/{parent}")).await;
        if let Some(id) = v["downstream"].as_array().and_then(|d| d.first()).and_then(|d| d["id"].as_i64()) {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "no downstream pipeline in 60 s: {v:#}\n{}", server.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    http.wait_job_status(downstream, "gated", &["running"], 60).await;
    let r = http.client.post(format!("{}/api/v1/pipelines/{parent}/cancel", http.base)).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let p = http.wait_status(parent, &["canceled"], 60).await;
    assert_eq!(p["jobs"][0]["status"], "canceled", "{p:#}");
    let d = get(&http, &format!("/api/v1/pipelines/{downstream}")).await;
    assert_eq!((d["status"].as_str(), d["jobs"][0]["status"].as_str()), (Some("running"), Some("running")), "{d:#}");
    std::fs::write(&open, "").unwrap();
    let d = http.wait_status(downstream, &["success", "failed", "canceled"], 60).await;
    assert_eq!(d["status"], "success", "the downstream ran to its end: {d:#}");
    assert_eq!(http.wait_status(parent, &["canceled"], 10).await["jobs"][0]["status"], "canceled", "and the trigger job stays canceled");
}
