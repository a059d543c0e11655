//! A real `piste serve` whose project lives behind HTTPS (nginx + `git http-backend`, a CA
//! made by the test, Basic authentication): with `ca_file` and the token the pipeline is
//! fetched, planned and run; without the CA the pipeline fails to plan with an error naming
//! the URL, and the token appears nowhere.

use serde_json::Value;

use crate::https_forge::{HttpsForge, PASSWORD, USER};
use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push, job_id};

async fn push_to(http: &Http, project: &str, body: Vec<u8>) -> i64 {
    let r = http
        .client
        .post(format!("{}/api/v1/webhooks/{project}", http.base))
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", SECRET)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_behind_https_with_a_private_ca() {
    let forge = Forge::new("build:\n  script: [echo fetched-over-https]\n");
    let (before, after) = forge.push("main", "first");
    let nginx_dir = tempfile::tempdir().unwrap();
    let https = HttpsForge::serve(&forge.dir.path().join("repos"), nginx_dir.path());
    let url = format!("{}app.git", https.base);
    let project = |name: &str| {
        format!(
            "[[project]]\nname = \"{name}\"\nrepo = \"{url}\"\nwebhook_secret = \"{SECRET}\"\nrepo_username = \"{USER}\"\nrepo_token = \"{PASSWORD}\"\n"
        )
    };

    let trusted = format!("ca_file = \"{}\"\n{}", https.ca.cert.display(), project("secure"));
    let server = Server::start(&forge, 10_000, &trusted);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let http = Http::new(&server);
    let id = push_to(&http, "secure", gitlab_push("main", &before, &after, "first")).await;
    let p = http.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "success", "{p:#}");
    assert!(http.log(job_id(&p, "build")).await.contains("fetched-over-https"));

    // Without the CA: the pipeline fails to plan, saying which URL and why.
    let untrusted = Server::start(&forge, 10_000, &project("secure"));
    let http = Http::new(&untrusted);
    let id = push_to(&http, "secure", gitlab_push("main", &before, &after, "first")).await;
    let p = http.wait_status(id, &["failed"], 60).await;
    let error = p["error"].as_str().unwrap_or_default();
    assert!(error.contains(&url) && error.to_lowercase().contains("certificate"), "{p:#}");
    for text in [p.to_string(), untrusted.log(), server.log()] {
        assert!(!text.contains(PASSWORD), "the token in: {text}");
    }
}
