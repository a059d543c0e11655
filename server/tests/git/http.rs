//! Smart HTTP through `git::http::serve` behind a minimal axum app on 127.0.0.1: the git CLI
//! and git2 both clone and fetch; pushing, the dumb protocol and unknown paths are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::any;
use server::git::Mirror;
use server::git::http::{self, GitHttpRequest, MAX_REQUEST_BODY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Source, git, read_at};

/// `/<repo>/<rest>` → the bare repository `<root>/<repo>`, as the server routes runners.
async fn handler(
    State(root): State<Arc<PathBuf>>,
    UrlPath((repo, rest)): UrlPath<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut req = GitHttpRequest::new(method.as_str(), &format!("/{rest}"), uri.query().unwrap_or(""), &headers, body.to_vec());
    req.remote_user = Some("job-1".into());
    match http::serve(&root.join(repo), req).await {
        Ok(resp) => {
            let mut out = Response::builder().status(resp.status);
            for (k, v) in resp.headers {
                out = out.header(k, v);
            }
            out.body(Body::from(resp.body)).unwrap()
        }
        Err(e) => Response::builder().status(500).body(Body::from(e.to_string())).unwrap(),
    }
}

/// Serves the repositories under `root` on a free port of 127.0.0.1.
async fn start(root: &Path) -> SocketAddr {
    let app = Router::new()
        .route("/{repo}/{*rest}", any(handler))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(Arc::new(root.to_path_buf()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A project with a few commits, mirrored under `<tmp>/mirrors/app.git`.
fn project() -> (Source, Mirror, String) {
    let src = Source::new();
    src.commit(&[(".gitlab-ci.yml", Some("build: {script: [make]}\n"))], "one");
    // Something big enough that the pack travels in many chunks.
    let mut noise = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    src.commit_bytes(&[("assets/noise.bin", Some(&noise[..]))], "noise");
    // Many refs on distinct commits: the clone's list of wants is large enough for git to
    // gzip its request body.
    for i in 0..40 {
        let sha = src.commit(&[("counter", Some(&i.to_string()))], &format!("step {i}"));
        src.repo.reference(&format!("refs/tags/step-{i}"), git2::Oid::from_str(&sha).unwrap(), true, "test").unwrap();
    }
    let head = src.commit(&[("README", Some("hello\n"))], "two");
    let mirror = src.mirror("app");
    (src, mirror, head)
}

async fn run(mut cmd: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_git_cli_clones_and_fetches_over_smart_http() {
    let (src, mirror, head) = project();
    let addr = start(mirror.dir().parent().unwrap()).await;
    let url = format!("http://{addr}/app.git");
    let dest = src.tmp.path().join("cli-clone");
    for protocol in ["version=2", "version=0"] {
        let _ = std::fs::remove_dir_all(&dest);
        let mut cmd = git(src.tmp.path());
        cmd.args(["-c", &format!("protocol.{protocol}"), "clone", "--quiet", &url]).arg(&dest);
        let out = run(cmd).await;
        assert!(out.status.success(), "{protocol}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(read_at(&dest, "HEAD", "README"), "hello\n");
        assert_eq!(std::fs::metadata(dest.join("assets/noise.bin")).unwrap().len(), 3 << 20);
        let cloned = git2::Repository::open(&dest).unwrap();
        assert_eq!(cloned.head().unwrap().peel_to_commit().unwrap().id().to_string(), head);
    }

    // A new commit upstream arrives with `git fetch` (a negotiation with haves).
    let next = src.commit(&[("README", Some("hello again\n"))], "three");
    mirror.fetch(&src.url()).unwrap();
    let mut cmd = git(src.tmp.path());
    cmd.arg("-C").arg(&dest).args(["fetch", "--quiet", "origin"]);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_at(&dest, "origin/main", "README"), "hello again\n");
    assert_eq!(git2::Repository::open(&dest).unwrap().revparse_single("origin/main").unwrap().id().to_string(), next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git2_clones_and_a_mirror_fetches_over_smart_http() {
    let (src, mirror, head) = project();
    let addr = start(mirror.dir().parent().unwrap()).await;
    let url = format!("http://{addr}/app.git");

    let dest = src.tmp.path().join("git2-clone");
    let (u, d) = (url.clone(), dest.clone());
    let cloned =
        tokio::task::spawn_blocking(move || git2::build::RepoBuilder::new().clone(&u, &d).map(|r| r.path().to_path_buf())).await.unwrap();
    cloned.unwrap();
    assert_eq!(read_at(&dest, "HEAD", "README"), "hello\n");
    assert_eq!(git2::Repository::open(&dest).unwrap().head().unwrap().peel_to_commit().unwrap().id().to_string(), head);

    // A mirror of the mirror, through http-backend: `Mirror::fetch` speaks http:// too.
    let second = Mirror::open_or_init(&src.tmp.path().join("second/app.git")).unwrap();
    let (m, u) = (second.clone(), url.clone());
    tokio::task::spawn_blocking(move || m.fetch(&u)).await.unwrap().unwrap();
    assert!(second.has_commit(&head));
    assert_eq!(second.read_file(&head, ".gitlab-ci.yml").unwrap().as_deref(), Some("build: {script: [make]}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushing_is_refused() {
    let (src, mirror, head) = project();
    let addr = start(mirror.dir().parent().unwrap()).await;
    let url = format!("http://{addr}/app.git");
    let dest = src.tmp.path().join("pusher");
    let mut cmd = git(src.tmp.path());
    cmd.args(["clone", "--quiet", &url]).arg(&dest);
    assert!(run(cmd).await.status.success());
    std::fs::write(dest.join("README"), "pushed\n").unwrap();
    let mut cmd = git(src.tmp.path());
    cmd.arg("-C").arg(&dest).args(["commit", "--quiet", "-am", "push attempt"]);
    assert!(run(cmd).await.status.success());
    let mut cmd = git(src.tmp.path());
    cmd.arg("-C").arg(&dest).args(["push", "origin", "HEAD:main"]);
    let out = run(cmd).await;
    assert!(!out.status.success(), "the push went through");
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mirror.resolve_ref("main").unwrap(), Some(head), "the mirror is unchanged");

    for (method, path, status) in [
        ("GET", "/app.git/info/refs?service=git-receive-pack", 403),
        ("POST", "/app.git/git-receive-pack", 403),
        ("GET", "/app.git/info/refs", 403),
        ("GET", "/app.git/HEAD", 404),
        ("GET", "/app.git/objects/info/packs", 404),
        ("GET", "/app.git/config", 404),
        ("GET", "/nope.git/info/refs?service=git-upload-pack", 404),
        ("DELETE", "/app.git/git-upload-pack", 405),
        ("GET", "/app.git/info/refs?service=git-upload-pack", 200),
    ] {
        assert_eq!(raw_status(addr, method, path).await, status, "{method} {path}");
    }
}

#[tokio::test]
async fn serve_answers_refusals_without_running_the_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let mirror = Mirror::open_or_init(&tmp.path().join("app.git")).unwrap();
    let req = |method: &str, path: &str, query: &str| GitHttpRequest {
        method: method.into(),
        path_info: path.into(),
        query: query.into(),
        ..GitHttpRequest::default()
    };
    let resp = http::serve(mirror.dir(), req("GET", "/info/refs", "service=git-receive-pack")).await.unwrap();
    assert_eq!(resp.status, 403);
    let text = String::from_utf8(resp.body.collect(1024).await.unwrap()).unwrap();
    assert!(text.contains("read-only"), "{text}");

    let mut big = req("POST", "/git-upload-pack", "");
    big.body = vec![b'0'; MAX_REQUEST_BODY + 1];
    assert_eq!(http::serve(mirror.dir(), big).await.unwrap().status, 413);
    let mut deflate = req("POST", "/git-upload-pack", "");
    deflate.content_encoding = Some("deflate".into());
    assert_eq!(http::serve(mirror.dir(), deflate).await.unwrap().status, 415);

    // An empty mirror still advertises (no refs), with git's content type.
    let resp = http::serve(mirror.dir(), req("GET", "/info/refs", "service=git-upload-pack")).await.unwrap();
    assert_eq!(resp.status, 200);
    let ct = resp.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.clone());
    assert_eq!(ct.as_deref(), Some("application/x-git-upload-pack-advertisement"));
    let body = resp.body.collect(1 << 20).await.unwrap();
    assert!(body.starts_with(b"001e# service=git-upload-pack\n"), "{}", String::from_utf8_lossy(&body));

    // The client's `Git-Protocol` header reaches the backend: protocol v2 answers with its
    // capability advertisement.
    let mut v2 = req("GET", "/info/refs", "service=git-upload-pack");
    v2.git_protocol = Some("version=2".into());
    let body = http::serve(mirror.dir(), v2).await.unwrap().body.collect(1 << 20).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("version 2"), "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn a_request_the_backend_rejects_is_its_answer_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let mirror = Mirror::open_or_init(&tmp.path().join("app.git")).unwrap();
    let req = GitHttpRequest {
        method: "POST".into(),
        path_info: "/git-upload-pack".into(),
        content_type: Some("text/plain".into()),
        body: b"not a pkt-line".to_vec(),
        ..GitHttpRequest::default()
    };
    let resp = http::serve(mirror.dir(), req).await.unwrap();
    assert!(resp.status >= 400, "{}", resp.status);
}

/// Sends one raw HTTP/1.1 request and returns the status code.
async fn raw_status(addr: SocketAddr, method: &str, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// Live (non-zombie) processes whose environment holds `marker`.
fn processes_with(marker: &str) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let zombie =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'));
        if env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) && zombie.is_ok_and(|z| !z) {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_response_stops_the_backend() {
    use futures_util::StreamExt;
    let (_src, mirror, head) = project();
    let user = format!("drop-test-{}", std::process::id());
    let marker = format!("REMOTE_USER={user}");
    // A protocol v0 request for everything, without side-band: the raw pack follows.
    let want = format!("want {head}\n");
    let body = format!("{:04x}{want}00000009done\n", want.len() + 4).into_bytes();
    let req = GitHttpRequest {
        method: "POST".into(),
        path_info: "/git-upload-pack".into(),
        content_type: Some("application/x-git-upload-pack-request".into()),
        remote_user: Some(user.clone()),
        body,
        ..GitHttpRequest::default()
    };
    let resp = http::serve(mirror.dir(), req).await.unwrap();
    assert_eq!(resp.status, 200);
    let mut stream = resp.body;
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert!(processes_with(&marker) > 0, "the backend should still be sending a 3 MiB pack");
    drop(stream);
    let start = std::time::Instant::now();
    while processes_with(&marker) > 0 {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "the backend outlived its client");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
