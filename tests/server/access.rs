//! Who may see and do what, tried as an attacker would: anonymous and wrong-role calls to every
//! people's route (pages, API reads, logs, their search and download, the live stream, artifacts
//! and their files, and every action) are
//! refused with no data in the answer; tokens that are revoked or expired do nothing; a public
//! project is readable but not actionable; cross-site posts are refused; every answer has the
//! security headers; runners get only the jobs their registration allows.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Forge, Http, REGISTRATION, RunnerProc, SECRET, Server, gitlab_push, job_id};

/// A job whose log line is the thing that must not leak, a manual job, and artifacts.
const PIPELINE: &str = "build:\n  script:\n    - echo LEAK-CANARY-$CI_COMMIT_REF_NAME > out.txt\n    - cat out.txt\n  artifacts:\n    paths: [out.txt]\ndeploy:\n  when: manual\n  script: [echo deploying]\n";

/// The project `app` is private with a viewer and a developer; `stranger` is a known user who
/// is no member.
const MEMBERS: &str = "members = { view = \"viewer\", dev = \"developer\" }";
const USERS: &str = "[[user]]\nname = \"stranger\"\n";

/// The data routes of one pipeline and its `build` job.
fn reads(pipeline: i64, job: i64) -> Vec<String> {
    vec![
        "/api/v1/pipelines".into(),
        "/api/v1/pipelines?project=app".into(),
        format!("/api/v1/pipelines/{pipeline}"),
        format!("/api/v1/jobs/{job}"),
        format!("/api/v1/jobs/{job}/log"),
        format!("/api/v1/jobs/{job}/log?attempt=1"),
        format!("/api/v1/jobs/{job}/log/stream"),
        format!("/api/v1/jobs/{job}/log/stream?format=html"),
        format!("/api/v1/jobs/{job}/artifacts"),
        format!("/api/v1/jobs/{job}/log?download=1"),
        format!("/api/v1/jobs/{job}/log/search?q=LEAK"),
        format!("/api/v1/jobs/{job}/artifacts/files"),
        format!("/api/v1/jobs/{job}/artifacts/file?path=out.txt"),
    ]
}

fn pages(pipeline: i64, job: i64) -> Vec<String> {
    vec![
        "/projects/app".into(),
        format!("/pipelines/{pipeline}"),
        format!("/jobs/{job}"),
        format!("/jobs/{job}?before=10"),
        format!("/jobs/{job}/artifacts"),
        format!("/jobs/{job}/artifacts/out.txt"),
    ]
}

fn actions(pipeline: i64, build: i64, deploy: i64) -> Vec<String> {
    vec![
        format!("/api/v1/pipelines/{pipeline}/retry"),
        format!("/api/v1/pipelines/{pipeline}/cancel"),
        format!("/api/v1/pipelines/{pipeline}/approve"),
        format!("/api/v1/jobs/{build}/retry"),
        format!("/api/v1/jobs/{build}/cancel"),
        format!("/api/v1/jobs/{deploy}/play"),
    ]
}

/// `(status, body)` of a GET.
async fn get(http: &Http, path: &str) -> (StatusCode, String) {
    let r = http.client.get(format!("{}{path}", http.base)).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// `(status, body)` of a POST, as a page form would send it (`form`) or as a script would.
async fn post(http: &Http, path: &str, form: bool) -> (StatusCode, String) {
    let mut r = http.client.post(format!("{}{path}", http.base));
    if form {
        r = r.header("Content-Type", "application/x-www-form-urlencoded").body("csrf=");
    }
    let r = r.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// Nothing of the project's pipelines is in a refusal.
fn no_data(body: &str, what: &str) {
    for leak in ["LEAK-CANARY", "deploy", "refs/heads", "build"] {
        assert!(!body.contains(leak), "{what}: the refusal holds `{leak}`: {body}");
    }
}

async fn push_and_wait(http: &Http, forge: &Forge, branch: &str, delivery: &str) -> Value {
    let (before, after) = forge.push(branch, delivery);
    let r = http.gitlab_hook(gitlab_push(branch, &before, &after, delivery), Some(SECRET), delivery).await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_job_status(id, "build", &["success"], 90).await;
    http.wait_job_status(id, "deploy", &["manual"], 30).await;
    http.client.get(format!("{}/api/v1/pipelines/{id}", http.base)).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_wrong_role_callers_get_nothing_and_do_nothing() {
    let forge = Forge::new(PIPELINE);
    forge.push("main", "first");
    let server = Server::start_full(&forge, 10_000, USERS, MEMBERS, None, Vec::new());
    let _runner = RunnerProc::start(&server, "node", "shell");
    let admin = Http::new(&server);
    let feature = push_and_wait(&admin, &forge, "feature", "f-1").await;
    let main = push_and_wait(&admin, &forge, "main", "m-1").await;
    let (fid, fbuild, fdeploy) = (feature["id"].as_i64().unwrap(), job_id(&feature, "build"), job_id(&feature, "deploy"));
    let (mid, mbuild, mdeploy) = (main["id"].as_i64().unwrap(), job_id(&main, "build"), job_id(&main, "deploy"));

    // Anonymous: 401 on every read and action, no data; pages too (no login configured here).
    let anonymous = Http::anonymous(&server);
    for path in reads(fid, fbuild).iter().chain(&pages(fid, fbuild)) {
        let (status, body) = get(&anonymous, path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "anonymous GET {path}: {body}");
        no_data(&body, path);
    }
    for path in actions(fid, fbuild, fdeploy) {
        for form in [false, true] {
            let (status, body) = post(&anonymous, &path, form).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "anonymous POST {path} (form: {form}): {body}");
            no_data(&body, &path);
        }
    }
    let (status, home) = get(&anonymous, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!home.contains("/projects/app"), "a private project is not listed to anonymous visitors: {home}");

    // A known user who is no member: the project's data is hidden (404), the list is empty.
    let stranger = Http::with_token(&server, Some(&server.create_token("stranger", &[])));
    for path in reads(fid, fbuild).iter().skip(1).chain(&pages(fid, fbuild)) {
        let (status, body) = get(&stranger, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "stranger GET {path}: {body}");
        no_data(&body, path);
    }
    let (status, list) = get(&stranger, "/api/v1/pipelines").await;
    assert_eq!((status, list.as_str()), (StatusCode::OK, "[]"), "the list holds only readable projects");
    for path in actions(fid, fbuild, fdeploy) {
        let (status, body) = post(&stranger, &path, false).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "stranger POST {path}: {body}");
    }

    // A viewer reads everything, and may do nothing (403), and is offered no button.
    let viewer = Http::with_token(&server, Some(&server.create_token("view", &[])));
    for path in reads(fid, fbuild).iter().chain(&pages(fid, fbuild)) {
        let (status, body) = get(&viewer, path).await;
        assert_eq!(status, StatusCode::OK, "viewer GET {path}: {body}");
    }
    assert!(get(&viewer, &format!("/api/v1/jobs/{fbuild}/log")).await.1.contains("LEAK-CANARY-feature"), "the viewer reads the log");
    assert!(get(&viewer, &format!("/api/v1/jobs/{fbuild}/log/search?q=leak")).await.1.contains("LEAK-CANARY-feature"), "and searches it");
    let (_, file) = get(&viewer, &format!("/api/v1/jobs/{fbuild}/artifacts/file?path=out.txt")).await;
    assert_eq!(file, "LEAK-CANARY-feature\n", "and reads the artifacts' files");
    assert!(!get(&viewer, &format!("/pipelines/{fid}")).await.1.contains("<form"), "no button for a viewer");
    for path in actions(fid, fbuild, fdeploy) {
        for form in [false, true] {
            let (status, body) = post(&viewer, &path, form).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "viewer POST {path} (form: {form}): {body}");
        }
    }
    admin.wait_job_status(fid, "deploy", &["manual"], 5).await;

    // A developer acts on an unprotected ref, not on a protected one (main, the default branch).
    let dev = Http::with_token(&server, Some(&server.create_token("dev", &[])));
    assert!(get(&dev, &format!("/pipelines/{fid}")).await.1.contains(&format!("/api/v1/jobs/{fdeploy}/play")), "a play button");
    assert!(!get(&dev, &format!("/pipelines/{mid}")).await.1.contains("<form"), "no button on a protected ref");
    for path in actions(mid, mbuild, mdeploy) {
        let (status, body) = post(&dev, &path, false).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "developer POST {path} on main: {body}");
    }
    // A cross-site request is refused even with the right role; then the same, same-site, plays.
    let cross =
        dev.client.post(format!("{}/api/v1/jobs/{fdeploy}/play", dev.base)).header("Origin", "http://evil.example").send().await.unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let cross =
        dev.client.post(format!("{}/api/v1/jobs/{fdeploy}/play", dev.base)).header("Sec-Fetch-Site", "cross-site").send().await.unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    admin.wait_job_status(fid, "deploy", &["manual"], 5).await;
    let (status, _) = post(&dev, &format!("/api/v1/jobs/{fdeploy}/play"), false).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    admin.wait_job_status(fid, "deploy", &["success"], 60).await;
    // The admin (maintainer everywhere) plays the protected one.
    let (status, _) = post(&admin, &format!("/api/v1/jobs/{mdeploy}/play"), false).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    admin.wait_job_status(mid, "deploy", &["success"], 60).await;

    // Tokens: a revoked one and an expired one are refused (401), not taken for anonymous.
    let doomed = server.create_token("view", &["--label", "doomed"]);
    assert_eq!(get(&Http::with_token(&server, Some(&doomed)), &format!("/api/v1/pipelines/{fid}")).await.0, StatusCode::OK);
    let (ok, list, _) = server.token_command(&["list", "--user", "view"]);
    assert!(ok, "{list}");
    let id = list.lines().find(|l| l.contains("doomed")).and_then(|l| l.split_whitespace().next()).expect("the token is listed");
    let (ok, _, err) = server.token_command(&["revoke", id]);
    assert!(ok, "{err}");
    let (status, body) = get(&Http::with_token(&server, Some(&doomed)), &format!("/api/v1/pipelines/{fid}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked: {body}");
    no_data(&body, "revoked");
    assert!(server.token_command(&["list", "--user", "view"]).1.lines().any(|l| l.contains("doomed") && l.ends_with("revoked")));
    let expired = server.create_token("view", &["--expires", "0"]);
    let (status, body) = get(&Http::with_token(&server, Some(&expired)), &format!("/api/v1/jobs/{fbuild}/log")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired: {body}");
    no_data(&body, "expired");
    let (status, _) = get(&Http::with_token(&server, Some("piste_pat_0000")), "/api/v1/pipelines").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an unknown token");
    // Tokens are only made for users the configuration knows, and stored hashed.
    let (ok, _, err) = server.token_command(&["create", "--user", "nobody"]);
    assert!(!ok && err.contains("`nobody` is not a user"), "{err}");
    let db = std::fs::read(server.data.join("piste.db")).unwrap();
    assert!(!db.windows(doomed.len()).any(|w| w == doomed.as_bytes()), "the database holds no token");

    // Every answer carries the security headers.
    for path in ["/", &format!("/pipelines/{fid}"), "/api/v1/pipelines", "/healthz"] {
        let r = viewer.client.get(format!("{}{path}", viewer.base)).send().await.unwrap();
        let h = r.headers();
        let csp = h.get("content-security-policy").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"), "{path}: {csp}");
        assert_eq!(h.get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{path}");
        assert!(h.get("referrer-policy").is_some() && h.get("x-frame-options").is_some(), "{path}");
    }
    // Runner routes keep their own tokens: a user's token is no runner's or job's.
    let r = dev.client.post(format!("{}/api/v1/jobs/request", dev.base)).json(&serde_json::json!({"free_slots": 1})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = admin.client.put(format!("{}/api/v1/jobs/{fbuild}/log?offset=0", admin.base)).body("forged").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_project_is_readable_by_anyone_and_actionable_by_members_only() {
    let forge = Forge::new(PIPELINE);
    forge.push("main", "first");
    let server = Server::start_full(&forge, 10_000, "", "visibility = \"public\"\nmembers = { dev = \"developer\" }", None, Vec::new());
    let _runner = RunnerProc::start(&server, "node", "shell");
    let admin = Http::new(&server);
    let p = push_and_wait(&admin, &forge, "feature", "p-1").await;
    let (id, build, deploy) = (p["id"].as_i64().unwrap(), job_id(&p, "build"), job_id(&p, "deploy"));
    let anonymous = Http::anonymous(&server);
    for path in reads(id, build).iter().chain(&pages(id, build)) {
        let (status, body) = get(&anonymous, path).await;
        assert_eq!(status, StatusCode::OK, "anonymous GET {path}: {body}");
    }
    assert!(get(&anonymous, &format!("/api/v1/jobs/{build}/log")).await.1.contains("LEAK-CANARY-feature"));
    assert!(get(&anonymous, "/").await.1.contains("/projects/app"), "listed on the home page");
    assert!(!get(&anonymous, &format!("/pipelines/{id}")).await.1.contains("<form"), "no button for anonymous visitors");
    for path in actions(id, build, deploy) {
        let (status, body) = post(&anonymous, &path, true).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "anonymous POST {path}: {body}");
    }
    admin.wait_job_status(id, "deploy", &["manual"], 5).await;
    let dev = Http::with_token(&server, Some(&server.create_token("dev", &[])));
    let (status, _) = post(&dev, &format!("/api/v1/jobs/{deploy}/play"), false).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    admin.wait_job_status(id, "deploy", &["success"], 60).await;
}

/// Registers a runner through the protocol: its token.
async fn register(http: &Http, name: &str, body: Value) -> String {
    let mut body = body;
    body["registration_token"] = REGISTRATION.into();
    body["name"] = name.into();
    let r = http.client.post(format!("{}/api/v1/runners", http.base)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

/// One long poll: the job's name, or `None` when the server answered 204 after `poll_ms`.
async fn request(http: &Http, token: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs/request", http.base))
        .bearer_auth(token)
        .json(&serde_json::json!({"free_slots": 1}))
        .send()
        .await
        .unwrap();
    match r.status() {
        StatusCode::NO_CONTENT => None,
        StatusCode::OK => Some(r.json::<Value>().await.unwrap()["job"]["name"].as_str().unwrap().to_string()),
        s => panic!("job request: {s}: {}", r.text().await.unwrap()),
    }
}

/// Runner scoping through the protocol: while an untagged job of an unprotected ref waits, a
/// tagged runner without `run_untagged`, a protected runner and another project's runner each
/// get `204` at the end of their long poll, and the job is still pending; a runner allowed to
/// take it gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_get_only_the_jobs_their_registration_allows() {
    let forge = Forge::new("plain:\n  script: [echo plain]\n");
    forge.push("main", "first");
    let other = format!("[[project]]\nname = \"other\"\nrepo = \"{}\"\nwebhook_secret = \"{SECRET}\"\n", forge.url);
    let server = Server::start(&forge, 10_000, &other);
    let http = Http::new(&server);
    let tagged = register(&http, "tagged", serde_json::json!({"tags": ["docker"]})).await;
    let protected = register(&http, "protected", serde_json::json!({"protected": true})).await;
    let elsewhere = register(&http, "elsewhere", serde_json::json!({"projects": ["other"]})).await;
    let (before, after) = forge.push("feature", "unprotected");
    let r = http.gitlab_hook(gitlab_push("feature", &before, &after, "x"), Some(SECRET), "r-1").await;
    let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_job_status(id, "plain", &["pending"], 30).await;
    assert_eq!(request(&http, &tagged).await, None, "a tagged runner without --run-untagged");
    assert_eq!(request(&http, &protected).await, None, "a protected runner, an unprotected ref");
    assert_eq!(request(&http, &elsewhere).await, None, "a runner of another project");
    http.wait_job_status(id, "plain", &["pending"], 5).await;
    let untagged_too = register(&http, "untagged-too", serde_json::json!({"tags": ["docker"], "run_untagged": true})).await;
    assert_eq!(request(&http, &untagged_too).await.as_deref(), Some("plain"));
    // `--projects` names only projects this server serves.
    let r = http
        .client
        .post(format!("{}/api/v1/runners", http.base))
        .json(&serde_json::json!({"registration_token": REGISTRATION, "name": "x", "projects": ["nope"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// The same through `piste runner register`'s options: a protected runner of project `app`
/// runs the default branch's pipeline; a feature branch's job waits for another runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_and_project_runners_from_the_command_line() {
    let forge = Forge::new("plain:\n  script: [echo plain]\n");
    let (b0, a0) = forge.push("main", "first");
    let server = Server::start(&forge, 10_000, "");
    let http = Http::new(&server);
    let _runner =
        RunnerProc::start_with(&server, "release", "shell", &["--protected", "--projects", "app", "--tags", "x", "--run-untagged"]);
    let r = http.gitlab_hook(gitlab_push("main", &b0, &a0, "main"), Some(SECRET), "c-1").await;
    let main = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_status(main, &["success"], 60).await;
    let (b1, a1) = forge.push("feature", "feature");
    let r = http.gitlab_hook(gitlab_push("feature", &b1, &a1, "feature"), Some(SECRET), "c-2").await;
    let feature = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_job_status(feature, "plain", &["pending"], 30).await;
    // An open runner takes it: the protected one never did, though it polled all along.
    let _other = RunnerProc::start(&server, "any", "shell");
    let p = http.wait_status(feature, &["success"], 60).await;
    let page = http.client.get(format!("{}/jobs/{}", http.base, job_id(&p, "plain"))).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("runner #2"), "the second runner ran it: {page}");
}
