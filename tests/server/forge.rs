//! Commit statuses on a forge: a local HTTP server (axum, written here) stands for GitHub,
//! GitLab and Gitea, and checks every request against the forge's documented format. A real
//! `piste serve` and `piste runner` run the pipelines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push};

const TOKEN: &str = "forge-token-that-must-not-leak-0123";

/// One request the fake forge received.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Value,
    accepted: bool,
}

/// A forge's status API on 127.0.0.1 that answers 500 to its first `refuse` requests.
struct FakeForge {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    /// How many requests are still answered 500.
    refuse: Arc<AtomicUsize>,
    /// Stops the server when sent or dropped.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeForge {
    async fn start(refuse: usize) -> FakeForge {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        let refuse = Arc::new(AtomicUsize::new(refuse));
        let refusing = refuse.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            let refusing = refusing.clone();
            async move {
                let mut log = log.lock().unwrap();
                let accepted = refusing.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err();
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.push(Received { method, path: uri.path().to_string(), headers, body, accepted });
                if accepted { (StatusCode::CREATED, "{}") } else { (StatusCode::INTERNAL_SERVER_ERROR, "{\"message\":\"try again\"}") }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        FakeForge { url, received, refuse, _stop: tx }
    }

    fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The accepted requests about `sha`, in order.
    fn accepted(&self, sha: &str) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.accepted && r.path.ends_with(&format!("/statuses/{sha}"))).collect()
    }

    /// Waits until `n` requests about `sha` were accepted.
    async fn wait_accepted(&self, sha: &str, n: usize, what: &str) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.accepted(sha);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {n} accepted statuses expected, got {:#?}",
                got.iter().map(|r| &r.body).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the last accepted state about `sha` is `state`.
    async fn wait_last(&self, sha: &str, state: &str) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.accepted(sha);
            if got.last().is_some_and(|r| r.body["state"] == state) {
                return got;
            }
            assert!(Instant::now() < deadline, "no final `{state}`: {:#?}", got.iter().map(|r| &r.body).collect::<Vec<_>>());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What each forge documents, checked on every request.
struct Format {
    kind: &'static str,
    repo: &'static str,
    /// The path's start before `/statuses/{sha}`.
    path: &'static str,
    states: &'static [&'static str],
    /// The body's name for the status's label.
    label: &'static str,
    /// The forge's names for piste's pending, running, success and failed.
    sequence: [&'static str; 4],
}

const GITHUB: Format = Format {
    kind: "github",
    repo: "octo/app",
    path: "/api/repos/octo/app",
    states: &["pending", "success", "failure", "error"],
    label: "context",
    sequence: ["pending", "pending", "success", "failure"],
};
const GITLAB: Format = Format {
    kind: "gitlab",
    repo: "group/app",
    path: "/api/projects/group%2Fapp",
    states: &["pending", "running", "success", "failed", "canceled", "skipped"],
    label: "name",
    sequence: ["pending", "running", "success", "failed"],
};
const GITEA: Format = Format {
    kind: "gitea",
    repo: "octo/app",
    path: "/api/repos/octo/app",
    states: &["pending", "success", "error", "failure", "warning"],
    label: "context",
    sequence: ["pending", "pending", "success", "failure"],
};

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("header `{name}` missing from {:?}", r.headers))
}

/// The request is what the forge's API documentation describes.
fn check_format(f: &Format, r: &Received, pipeline_of: &dyn Fn(&str) -> i64) {
    assert_eq!(r.method, Method::POST, "{r:?}");
    let sha = r.path.strip_prefix(&format!("{}/statuses/", f.path)).unwrap_or_else(|| panic!("{}: path {}", f.kind, r.path));
    assert!(sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()), "{}: sha {sha}", f.kind);
    assert!(header(r, "content-type").starts_with("application/json"), "{r:?}");
    match f.kind {
        "github" => {
            assert_eq!(header(r, "authorization"), format!("Bearer {TOKEN}"));
            assert_eq!(header(r, "accept"), "application/vnd.github+json");
            assert_eq!(header(r, "x-github-api-version"), "2022-11-28");
        }
        "gitlab" => {
            assert_eq!(header(r, "private-token"), TOKEN);
            assert!(r.headers.get("authorization").is_none());
            assert_eq!(r.body["ref"], "main", "GitLab gets the branch");
        }
        "gitea" => assert_eq!(header(r, "authorization"), format!("token {TOKEN}")),
        other => panic!("{other}"),
    }
    let body = r.body.as_object().unwrap_or_else(|| panic!("a JSON object: {:?}", r.body));
    let allowed: &[&str] = match f.kind {
        "gitlab" => &["state", "ref", "name", "target_url", "description"],
        _ => &["state", "target_url", "description", "context"],
    };
    for key in body.keys() {
        assert!(allowed.contains(&key.as_str()), "{}: unexpected field `{key}`", f.kind);
    }
    let state = body["state"].as_str().unwrap();
    assert!(f.states.contains(&state), "{}: state `{state}` is not one of {:?}", f.kind, f.states);
    assert_eq!(body[f.label], "piste/app", "{}: the status's label", f.kind);
    assert!(body["description"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(body["target_url"], format!("https://ci.example/pipelines/{}", pipeline_of(sha)), "{}: the pipeline link", f.kind);
}

async fn statuses_follow_the_pipelines(f: Format, refuse: usize) {
    let fake = FakeForge::start(refuse).await;
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    // The job waits for the test (no timing): running is seen before success.
    let forge = Forge::new(&format!(
        "build:\n  script:\n    - for i in $(seq 1 1200); do if [ -e '{}' ]; then exit 0; fi; sleep 0.05; done; exit 1\n",
        go.display()
    ));
    let (before, after) = forge.push("main", "first");
    let project = format!(
        "[project.forge]\nkind = \"{}\"\napi_url = \"{}/api/\"\nrepo = \"{}\"\ntoken_env = \"PISTE_TEST_FORGE_TOKEN\"\n",
        f.kind, fake.url, f.repo
    );
    let server = Server::start_full(
        &forge,
        5000,
        "external_url = \"https://ci.example/\"",
        &project,
        None,
        vec![("PISTE_TEST_FORGE_TOKEN".into(), TOKEN.into())],
    );
    let http = Http::new(&server);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), &format!("{}-1", f.kind)).await;
    let first: i64 = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    // No runner yet: the pipeline waits, and the forge hears `pending`.
    fake.wait_accepted(&after, 1, "pending").await;
    let mut runner = RunnerProc::start(&server, "node", "shell");
    fake.wait_accepted(&after, 2, "running").await;
    std::fs::write(&go, "").unwrap();
    let got = fake.wait_accepted(&after, 3, "success").await;
    http.wait_status(first, &["success"], 60).await;
    let states: Vec<&str> = got.iter().map(|r| r.body["state"].as_str().unwrap()).collect();
    assert_eq!(states, f.sequence[..3], "{}: pending, running, success", f.kind);
    assert!(got[1].body["description"].as_str().unwrap().contains("running"), "{:?}", got[1].body);

    // A failing pipeline ends `failed` on the forge, never followed by an older state.
    std::fs::write(forge.work().join(".gitlab-ci.yml"), "broken:\n  script: [exit 3]\n").unwrap();
    let (before2, after2) = forge.push("main", "second");
    let r = http.gitlab_hook(gitlab_push("main", &before2, &after2, "second"), Some(SECRET), &format!("{}-2", f.kind)).await;
    let second: i64 = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_status(second, &["failed"], 60).await;
    let got = fake.wait_last(&after2, f.sequence[3]).await;
    let states: Vec<&str> = got.iter().map(|r| r.body["state"].as_str().unwrap()).collect();
    let mut order = f.sequence.iter().enumerate().filter(|(i, _)| *i != 2);
    for s in &states {
        assert!(order.any(|(_, want)| want == s), "{}: {states:?} is not in the order pending, running, failed", f.kind);
    }
    let sha_of = |sha: &str| if sha == after { first } else { second };
    for r in fake.all() {
        check_format(&f, &r, &sha_of);
    }
    // The API and the page show the last post.
    let v = http.wait_status(second, &["failed"], 10).await;
    assert_eq!(v["forge_status"]["ok"], true, "{v:#}");
    assert_eq!(v["forge_status"]["state"], "failed", "{v:#}");
    let page = http.client.get(format!("{}/pipelines/{second}", http.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"forge-status\"") && page.contains("posted"), "{page}");

    let rejected = fake.all().iter().filter(|r| !r.accepted).count();
    assert_eq!(rejected, refuse);
    let log = server.log();
    assert_eq!(log.matches("commit status not posted").count(), refuse, "one line per failure:\n{log}");
    runner.kill();
    for (what, text) in [("server", log), ("runner", runner.log())] {
        assert!(!text.contains(TOKEN), "the token is in the {what} log:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_statuses_follow_pending_running_success_and_failure() {
    statuses_follow_the_pipelines(GITHUB, 0).await;
}

/// GitLab answers 500 twice: the post is retried and the pipeline finishes all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_statuses_are_retried_after_errors_and_follow_the_pipeline() {
    statuses_follow_the_pipelines(GITLAB, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitea_statuses_follow_pending_running_success_and_failure() {
    statuses_follow_the_pipelines(GITEA, 0).await;
}

/// The forge refuses everything while a pipeline runs to its end and the server is killed:
/// the restarted server posts the pipeline's last state (only that one) from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_state_is_posted_after_a_restart() {
    let fake = FakeForge::start(usize::MAX).await;
    let forge = Forge::new("quick:\n  script: [echo hi]\n");
    let (before, after) = forge.push("main", "first");
    let project = format!("[project.forge]\nkind = \"gitea\"\napi_url = \"{}/api\"\nrepo = \"octo/app\"\ntoken = \"{TOKEN}\"\n", fake.url);
    let mut server = Server::start_full(&forge, 5000, "external_url = \"https://ci.example\"", &project, None, Vec::new());
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "restart-1").await;
    let id: i64 = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_status(id, &["success"], 60).await;
    // The failure is on the pipeline page and in the API.
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let v = http.wait_status(id, &["success"], 10).await;
        if v["forge_status"]["state"] == "success" {
            break v;
        }
        assert!(Instant::now() < deadline, "no try to post success: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(v["forge_status"]["ok"], false, "{v:#}");
    assert!(v["forge_status"]["error"].as_str().unwrap().contains("500"), "{v:#}");
    let page = http.client.get(format!("{}/pipelines/{id}", http.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("not posted") && page.contains("500"), "{page}");
    server.kill();
    assert!(fake.accepted(&after).is_empty());
    fake.refuse.store(0, Ordering::SeqCst);
    server.spawn();
    let got = fake.wait_accepted(&after, 1, "success after the restart").await;
    assert_eq!(got[0].body["state"], "success");
    assert_eq!(got[0].body["target_url"], format!("https://ci.example/pipelines/{id}"));
    let v = http.wait_status(id, &["success"], 10).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut v = v;
    while v["forge_status"]["ok"] != true {
        assert!(Instant::now() < deadline, "{v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        v = http.wait_status(id, &["success"], 10).await;
    }
    assert!(!server.log().contains(TOKEN), "the token from piste.toml is in the log");
}

/// A forge behind HTTPS with a private CA (nginx in front of the fake forge): the top-level
/// `ca_file` makes the statuses go through; without it every post fails on the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_reach_a_forge_behind_a_private_ca() {
    let fake = FakeForge::start(0).await;
    let upstream: u16 = fake.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = crate::tls_proxy::TlsProxy::serve(crate::support::free_port(), upstream, dir.path());
    let forge = Forge::new("quick:\n  script: [echo hi]\n");
    let (before, after) = forge.push("main", "first");
    let project = format!("[project.forge]\nkind = \"gitea\"\napi_url = \"{}/api\"\nrepo = \"octo/app\"\ntoken = \"{TOKEN}\"\n", proxy.url);
    let trusted = format!("ca_file = \"{}\"\nexternal_url = \"https://ci.example\"", proxy.ca.cert.display());
    let server = Server::start_full(&forge, 5000, &trusted, &project, None, Vec::new());
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "tls-1").await;
    let id: i64 = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    http.wait_status(id, &["success"], 60).await;
    let got = fake.wait_last(&after, "success").await;
    assert_eq!(got.last().unwrap().body["target_url"], format!("https://ci.example/pipelines/{id}"));

    // The same server without the CA: the forge's certificate is refused, nothing arrives.
    let before_count = fake.all().len();
    let untrusting = Server::start_full(&forge, 5000, "external_url = \"https://ci.example\"", &project, None, Vec::new());
    let http = Http::new(&untrusting);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "tls-2").await;
    let id: i64 = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let v = http.wait_status(id, &["pending", "running", "success"], 10).await;
        if v["forge_status"].is_object() {
            break v;
        }
        assert!(Instant::now() < deadline, "no try to post: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(v["forge_status"]["ok"], false, "{v:#}");
    assert_eq!(fake.all().len(), before_count, "nothing reached the forge");
}
