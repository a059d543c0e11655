//! Secrets only where they belong: a protected ref's pipeline gets them (masked, in every
//! encoding a script would print), an unprotected branch and a fork's merge request get none.

use std::process::Command;

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, fixture, gitlab_push, job_id};

const TOKEN: &str = "tok-123456-secret";
const TOKEN_BASE64: &str = "dG9rLTEyMzQ1Ni1zZWNyZXQ=";

const PIPELINE: &str = r#"
show:
  rules: [{when: always}]
  script:
    - echo "secret=[$DEPLOY_TOKEN] protected=$CI_COMMIT_REF_PROTECTED"
    - printf %s "$DEPLOY_TOKEN" | base64
"#;

async fn log_of(http: &Http, r: reqwest::Response) -> String {
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "success", "{p:#}");
    http.log(job_id(&p, "show")).await
}

/// A GitLab "Merge Request Hook" opened from another project (a fork) at `sha`, as merge
/// request `iid` (whose head the forge keeps at `refs/merge-requests/<iid>/head`).
pub(crate) fn fork_merge_request_iid(sha: &str, iid: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fork_merge_request(sha)).unwrap();
    v["object_attributes"]["iid"] = iid.into();
    serde_json::to_vec(&v).unwrap()
}

/// A GitLab "Merge Request Hook" opened from another project (a fork) at `sha`.
fn fork_merge_request(sha: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(fixture("gitlab/merge_request.json")).unwrap()).unwrap();
    let a = &mut v["object_attributes"];
    a["iid"] = 7.into();
    a["action"] = "open".into();
    a["source_project_id"] = 999.into();
    a["target_project_id"] = 1.into();
    a["source_branch"] = "main".into();
    a["target_branch"] = "main".into();
    a["source"]["path_with_namespace"] = "attacker/app".into();
    a["last_commit"]["id"] = sha.into();
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_protected_refs_only_and_never_a_fork() {
    let forge = Forge::new(PIPELINE);
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 10_000, "");
    let _runner = RunnerProc::start(&server, "node", "shell");
    let http = Http::new(&server);

    // The default branch is protected: the job has the secret, and the log never shows it.
    let main = log_of(&http, http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "s-1").await).await;
    assert!(main.contains("secret=[[MASKED]] protected=true"), "{main}");
    assert!(!main.contains(TOKEN) && !main.contains(TOKEN_BASE64), "masked in plain and in base64: {main}");

    // Another branch is not protected: no secret at all.
    let (b2, a2) = forge.push("feature", "on a branch");
    let feature = log_of(&http, http.gitlab_hook(gitlab_push("feature", &b2, &a2, "on a branch"), Some(SECRET), "s-2").await).await;
    assert!(feature.contains("secret=[] protected=false"), "{feature}");

    // A fork's merge request, even one claiming to come from `main`: no secret.
    let push =
        Command::new("git").args(["push", "-q", "origin", "HEAD:refs/merge-requests/7/head"]).current_dir(forge.work()).output().unwrap();
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    let r = http
        .client
        .post(format!("{}/api/v1/webhooks/app", http.base))
        .header("Content-Type", "application/json")
        .header("X-Gitlab-Event", "Merge Request Hook")
        .header("X-Gitlab-Event-UUID", "s-3")
        .header("X-Gitlab-Token", SECRET)
        .body(fork_merge_request(&a2))
        .send()
        .await
        .unwrap();
    let fork = log_of(&http, r).await;
    assert!(fork.contains("secret=[] protected=false"), "{fork}");
    assert!(!fork.contains(TOKEN) && !fork.contains(TOKEN_BASE64), "{fork}");

    // Secrets join a job's specification when it is leased: the database (and every other
    // file the server wrote) never holds one.
    let mut stack = vec![server.data.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()), "`{}` holds the secret", path.display());
            }
        }
    }
}
