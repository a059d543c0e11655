//! `fork_pipelines = "approval"`: a fork's merge-request pipeline is planned and shown, and
//! nothing of it runs (no job is ever pending, no secret is handed out) until a maintainer
//! approves it, from the API or from the pipeline's page. Anonymous callers, viewers and
//! developers cannot approve it, nor play, retry or run its jobs another way; once approved,
//! its jobs get what a merge request of an unprotected ref gets: the unprotected secrets only.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use crate::browser::{Page, chromium};
use crate::secrets::fork_merge_request_iid;
use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push, job_id};

/// A protected secret and an unprotected one.
const DEPLOY: &str = "tok-123456-secret";
const PUBLISH: &str = "pub-987654-token";
const PUBLISH_BASE64: &str = "cHViLTk4NzY1NC10b2tlbg==";

const PIPELINE: &str = r#"
show:
  rules: [{when: always}]
  script:
    - echo "deploy=[$DEPLOY_TOKEN] publish=[$PUBLISH_TOKEN]"
    - printf %s "$PUBLISH_TOKEN" | base64
"#;

const PROJECT: &str = "fork_pipelines = \"approval\"\n\
    secrets = { DEPLOY_TOKEN = \"tok-123456-secret\", PUBLISH_TOKEN = \"pub-987654-token\" }\n\
    unprotected_secrets = [\"PUBLISH_TOKEN\"]\n\
    members = { maint = \"maintainer\", dev = \"developer\", view = \"viewer\" }";

/// Pushes the work tree's head as merge request `iid` of a fork and sends its hook: the
/// pipeline's id.
async fn fork_pipeline(http: &Http, forge: &Forge, iid: u64) -> i64 {
    let sha = crate::support::git(&forge.work(), &["rev-parse", "HEAD"]);
    let push = Command::new("git")
        .args(["push", "-q", "origin", &format!("HEAD:refs/merge-requests/{iid}/head")])
        .current_dir(forge.work())
        .output()
        .unwrap();
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    let r = http
        .client
        .post(format!("{}/api/v1/webhooks/app", http.base))
        .header("Content-Type", "application/json")
        .header("X-Gitlab-Event", "Merge Request Hook")
        .header("X-Gitlab-Event-UUID", format!("fork-{iid}"))
        .header("X-Gitlab-Token", SECRET)
        .body(fork_merge_request_iid(&sha, iid))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap()
}

async fn get(http: &Http, path: &str) -> Value {
    http.client.get(format!("{}{path}", http.base)).send().await.unwrap().json().await.unwrap()
}

async fn post(http: &Http, path: &str) -> (StatusCode, String) {
    let r = http.client.post(format!("{}{path}", http.base)).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn page(http: &Http, path: &str) -> String {
    http.client.get(format!("{}{path}", http.base)).send().await.unwrap().text().await.unwrap()
}

/// Runs a same-repository pipeline to its end on the one runner: a pending job of the fork's
/// pipeline, older, would have been taken first. Returns its log.
async fn run_another(http: &Http, forge: &Forge, branch: &str) -> String {
    let (before, after) = forge.push(branch, branch);
    let r = http.gitlab_hook(gitlab_push(branch, &before, &after, branch), Some(SECRET), branch).await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "success", "{p:#}");
    http.log(job_id(&p, "show")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forks_pipeline_waits_for_a_maintainers_approval() {
    let forge = Forge::new(PIPELINE);
    forge.push("main", "first");
    let server = Server::start_full(&forge, 10_000, "[[user]]\nname = \"stranger\"\n", PROJECT, None, Vec::new());
    let _runner = RunnerProc::start(&server, "node", "shell");
    let admin = Http::new(&server);
    let user = |name: &str| Http::with_token(&server, Some(&server.create_token(name, &[])));
    let (maint, dev, view, stranger, anonymous) = (user("maint"), user("dev"), user("view"), user("stranger"), Http::anonymous(&server));

    // Planned and shown, waiting: `manual` (blocked), its job `created`.
    let id = fork_pipeline(&admin, &forge, 7).await;
    let p = admin.wait_status(id, &["manual", "failed"], 60).await;
    assert_eq!(p["status"], "manual", "{p:#}");
    assert_eq!(p["approval"], serde_json::json!({"waiting": true}), "{p:#}");
    let show = job_id(&p, "show");
    // A later pipeline of the project's own repository runs on the one runner meanwhile: the
    // fork's job was never pending (it would have been taken first), and is not now.
    let own = run_another(&admin, &forge, "feature").await;
    assert!(own.contains("deploy=[] publish=[[MASKED]]"), "{own}");
    let p = get(&admin, &format!("/api/v1/pipelines/{id}")).await;
    assert_eq!((p["status"].as_str(), p["jobs"][0]["status"].as_str()), (Some("manual"), Some("created")), "{p:#}");
    assert_eq!(admin.log(show).await, "", "no log: it never ran");

    // Who may approve: a maintainer. Anonymous 401, a stranger 404, viewer and developer 403.
    let approve = format!("/api/v1/pipelines/{id}/approve");
    for (who, http, want) in [
        ("anonymous", &anonymous, StatusCode::UNAUTHORIZED),
        ("stranger", &stranger, StatusCode::NOT_FOUND),
        ("viewer", &view, StatusCode::FORBIDDEN),
        ("developer", &dev, StatusCode::FORBIDDEN),
    ] {
        let (status, body) = post(http, &approve).await;
        assert_eq!(status, want, "{who}: {body}");
        assert!(!body.contains("show") && !body.contains("merge-requests"), "{who}: the refusal holds data: {body}");
    }
    // Nor can a developer start its jobs another way: play, retry, the pipeline's retry.
    for path in [format!("/api/v1/jobs/{show}/play"), format!("/api/v1/jobs/{show}/retry"), format!("/api/v1/pipelines/{id}/retry")] {
        let (status, body) = post(&dev, &path).await;
        assert_eq!(status, StatusCode::CONFLICT, "developer POST {path}: {body}");
    }
    // A maintainer's approval posted from another origin is refused.
    let cross = maint.client.post(format!("{}{approve}", maint.base)).header("Origin", "http://evil.example").send().await.unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    // The page offers the button to the maintainer only.
    assert!(page(&maint, &format!("/pipelines/{id}")).await.contains(&format!("action=\"{approve}\"")), "a maintainer's button");
    for (who, http) in [("viewer", &view), ("developer", &dev)] {
        let html = page(http, &format!("/pipelines/{id}")).await;
        assert!(html.contains("wait for a maintainer") && !html.contains("/approve"), "{who} sees the notice, no button: {html}");
    }
    let p = get(&admin, &format!("/api/v1/pipelines/{id}")).await;
    assert_eq!(p["jobs"][0]["status"], "created", "still waiting after every refusal: {p:#}");

    // The maintainer approves: the job runs with the unprotected secret only, masked.
    let (status, body) = post(&maint, &approve).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let p = admin.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "success", "{p:#}");
    assert_eq!(p["approval"]["approved_by"], "maint", "{p:#}");
    assert_eq!(p["approval"]["waiting"], false);
    let log = admin.log(show).await;
    assert!(log.contains("deploy=[] publish=[[MASKED]]"), "as an unprotected ref's merge request: {log}");
    assert!(!log.contains(DEPLOY) && !log.contains(PUBLISH) && !log.contains(PUBLISH_BASE64), "{log}");
    assert!(page(&view, &format!("/pipelines/{id}")).await.contains("approved by <strong>maint</strong>"));
    let (status, _) = post(&maint, &approve).await;
    assert_eq!(status, StatusCode::CONFLICT, "approved once");

    // Another fork's pipeline, canceled while it waited (a developer may cancel it): it can
    // then be neither approved nor retried.
    let other = fork_pipeline(&admin, &forge, 8).await;
    admin.wait_status(other, &["manual"], 60).await;
    let (status, body) = post(&dev, &format!("/api/v1/pipelines/{other}/cancel")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let p = admin.wait_status(other, &["canceled"], 30).await;
    let (status, _) = post(&maint, &format!("/api/v1/pipelines/{other}/approve")).await;
    assert_eq!(status, StatusCode::CONFLICT, "canceled before its approval");
    let (status, _) = post(&maint, &format!("/api/v1/pipelines/{other}/retry")).await;
    assert_eq!(status, StatusCode::CONFLICT, "never approved: never run");
    assert_eq!(admin.log(job_id(&p, "show")).await, "");

    // The operator's log says who approved what.
    let log = server.log();
    assert!(log.contains("pipeline waits for a maintainer's approval") && log.contains("pipeline approved"), "{log}");
    assert!(log.lines().any(|l| l.contains("pipeline approved") && l.contains("maint")), "{log}");
}

/// The pipeline page in a real browser: a viewer sees the notice and no approve button; a
/// maintainer's button approves it (a form post with the page's credentials) and the job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approve_button_is_a_maintainers_only() {
    let forge = Forge::new(PIPELINE);
    forge.push("main", "first");
    let server = Server::start_full(&forge, 10_000, "", PROJECT, None, Vec::new());
    let _runner = RunnerProc::start(&server, "node", "shell");
    let admin = Http::new(&server);
    let id = fork_pipeline(&admin, &forge, 9).await;
    admin.wait_status(id, &["manual"], 60).await;
    let url = format!("{}/pipelines/{id}", server.url);

    let browser = chromium();
    let mut page = Page::open(&browser).await;
    page.authorize(&server.create_token("view", &[])).await;
    page.goto(&url).await;
    let notice = page.eval("(document.getElementById('approval') || {}).textContent || ''").await;
    assert!(notice.as_str().unwrap_or_default().contains("wait for a maintainer's approval"), "{notice}");
    assert_eq!(page.eval("document.querySelectorAll('#approve, form[action$=\"/approve\"]').length").await, Value::from(0));
    assert_eq!(page.eval("document.querySelectorAll('form').length").await, Value::from(0), "no button at all for a viewer");

    // The same tab, as the maintainer.
    page.authorize(&server.create_token("maint", &[])).await;
    page.goto(&url).await;
    assert_eq!(page.eval("!!document.querySelector('#approve button')").await, Value::Bool(true), "the maintainer's button");
    page.eval("document.querySelector('#approve button').click()").await;
    let p = admin.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "success", "{p:#}");
    assert_eq!(p["approval"]["approved_by"], "maint");
}

/// `fork_pipelines = "off"`: a fork's merge request makes no pipeline at all; a merge request
/// from the project's own repository still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pipeline_for_a_fork_when_off() {
    let forge = Forge::new(PIPELINE);
    forge.push("main", "first");
    let server = Server::start_full(&forge, 10_000, "", "fork_pipelines = \"off\"", None, Vec::new());
    let http = Http::new(&server);
    let sha = crate::support::git(&forge.work(), &["rev-parse", "HEAD"]);
    let r = http
        .client
        .post(format!("{}/api/v1/webhooks/app", http.base))
        .header("Content-Type", "application/json")
        .header("X-Gitlab-Event", "Merge Request Hook")
        .header("X-Gitlab-Event-UUID", "off-1")
        .header("X-Gitlab-Token", SECRET)
        .body(fork_merge_request_iid(&sha, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["ignored"], "fork_pipelines = \"off\"");
    assert!(http.pipelines().await.is_empty(), "no pipeline");
    // The same merge request from the project itself (same source and target project).
    let mut own: Value = serde_json::from_slice(&fork_merge_request_iid(&sha, 4)).unwrap();
    own["object_attributes"]["source_project_id"] = 1.into();
    own["object_attributes"]["source"]["path_with_namespace"] = "gitlabhq/gitlab-test".into();
    let r = http
        .client
        .post(format!("{}/api/v1/webhooks/app", http.base))
        .header("Content-Type", "application/json")
        .header("X-Gitlab-Event", "Merge Request Hook")
        .header("X-Gitlab-Event-UUID", "off-2")
        .header("X-Gitlab-Token", SECRET)
        .body(serde_json::to_vec(&own).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    assert_eq!(http.pipelines().await.len(), 1);
}
