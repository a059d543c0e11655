//! Merge request pipelines on a real server: GitLab (ci/jobs/job_rules "rules:changes", merge
//! request pipelines) compares a merge request's `rules:changes` with the merge base of the
//! target branch and the source head, and sets `CI_MERGE_REQUEST_DIFF_BASE_SHA` to that base.

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, fixture, git, job_id};

/// A GitLab "Merge Request Hook" of this project: `source` into `target` at `sha`.
fn merge_request(source: &str, target: &str, sha: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(fixture("gitlab/merge_request.json")).unwrap()).unwrap();
    let a = &mut v["object_attributes"];
    a["iid"] = 5.into();
    a["action"] = "open".into();
    a["source_project_id"] = 14.into();
    a["target_project_id"] = 14.into();
    a["source_branch"] = source.into();
    a["target_branch"] = target.into();
    a["last_commit"]["id"] = sha.into();
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_request_changes_are_measured_from_the_merge_base_with_the_target_branch() {
    let yml = "docs:\n  rules:\n    - changes: [docs/**]\n  script: [echo docs]\n\
               app:\n  rules:\n    - changes: [src/**]\n  script: [echo app]\n\
               show:\n  rules:\n    - if: $CI_PIPELINE_SOURCE == \"merge_request_event\"\n  script: [echo \"base=$CI_MERGE_REQUEST_DIFF_BASE_SHA\"]\n";
    let forge = Forge::new(yml);
    let (_, branch_point) = forge.push("main", "base");
    // The branch changes src/; main moves on with docs/ after the branch point, so the diff
    // with main's head would hold docs/ too, and the merge base's does not.
    std::fs::create_dir_all(forge.work().join("src")).unwrap();
    std::fs::write(forge.work().join("src/main.rs"), "fn main() {}\n").unwrap();
    let (_, head) = forge.push("feature", "feature");
    git(&forge.work(), &["checkout", "-q", "main"]);
    std::fs::create_dir_all(forge.work().join("docs")).unwrap();
    std::fs::write(forge.work().join("docs/guide.md"), "guide\n").unwrap();
    forge.push("main", "docs on main");

    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http
        .client
        .post(format!("{}/api/v1/webhooks/app", http.base))
        .header("Content-Type", "application/json")
        .header("X-Gitlab-Event", "Merge Request Hook")
        .header("X-Gitlab-Event-UUID", "mr-1")
        .header("X-Gitlab-Token", SECRET)
        .body(merge_request("feature", "main", &head))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed"], 60).await;
    let names: Vec<&str> = p["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["app", "show"], "{p:#}");
    let log = http.log(job_id(&p, "show")).await;
    assert!(log.contains(&format!("base={branch_point}")), "{log}");
}
