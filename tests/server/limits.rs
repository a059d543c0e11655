//! Limits before work, against a real `piste serve`: oversized anonymous bodies are refused
//! without being buffered (the process's peak resident memory says so), a client that sends
//! its request head too slowly is cut off, the connection cap holds; and each attempt of a job
//! keeps its own, masked, failure reason.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Forge, Http, REGISTRATION, SECRET, Server, gitlab_push, job_id};

const TOKEN: &str = "tok-123456-secret";
const TOKEN_BASE64: &str = "dG9rLTEyMzQ1Ni1zZWNyZXQ=";

/// Peak resident set of a process (kB), from `/proc/<pid>/status`.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/<pid>/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A request body of `total` zero bytes made on the fly (never held whole), counting what was
/// taken from it.
fn zeros(total: u64, sent: Arc<AtomicU64>) -> reqwest::Body {
    const CHUNK: usize = 256 * 1024;
    let chunk = vec![0u8; CHUNK];
    let stream = futures_util::stream::unfold(0u64, move |done| {
        let (chunk, sent) = (chunk.clone(), sent.clone());
        async move {
            (done < total).then(|| {
                sent.fetch_add(CHUNK as u64, Ordering::Relaxed);
                (Ok::<_, std::io::Error>(chunk), done + CHUNK as u64)
            })
        }
    });
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_anonymous_bodies_leave_the_server_memory_flat() {
    const BIG: u64 = 500 << 20;
    let forge = Forge::new("job:\n  script: [true]\n");
    forge.push("main", "first");
    let server = Server::start(&forge, 10_000, "");
    let client = reqwest::Client::new();
    let base = server.url.clone();
    let hook = format!("{base}/api/v1/webhooks/app");
    let github = |req: reqwest::RequestBuilder| {
        req.header("X-GitHub-Event", "push").header("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64)))
    };
    let requests: Vec<(&str, reqwest::RequestBuilder, &[u16])> = vec![
        // GitLab's token is checked before the body is read.
        (
            "webhook, wrong GitLab token",
            client.post(&hook).header("X-Gitlab-Event", "Push Hook").header("X-Gitlab-Token", "wrong-token"),
            &[401],
        ),
        // A declared length over the limit is refused before reading.
        ("webhook, declared 500 MB", github(client.post(&hook)).header("Content-Length", BIG.to_string()), &[413]),
        // No length: read up to the limit only.
        ("webhook, chunked", github(client.post(&hook)), &[413]),
        // A runner route: the job token is checked before the body is read.
        ("artifacts without a token", client.put(format!("{base}/api/v1/jobs/1/artifacts")), &[401]),
        // A JSON route: refused at the JSON limit.
        ("runner registration", client.post(format!("{base}/api/v1/runners")).header("Content-Type", "application/json"), &[413]),
    ];
    let mut tasks = Vec::new();
    for (what, req, want) in requests {
        let sent = Arc::new(AtomicU64::new(0));
        let req = req.body(zeros(BIG, sent.clone()));
        tasks.push(tokio::spawn(async move {
            // The server may answer and close while the client still sends: either way the
            // request ends, and the client could not push the whole body.
            match req.send().await {
                Ok(r) => assert!(want.contains(&r.status().as_u16()), "{what}: {}", r.status()),
                Err(e) => eprintln!("{what}: the server closed the connection: {e}"),
            }
            let sent = sent.load(Ordering::Relaxed);
            assert!(sent < BIG / 2, "{what}: the client could send {sent} bytes: the server kept reading");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let peak_mb = peak_rss_kb(server.pid()) / 1024;
    eprintln!("peak resident memory of the server: {peak_mb} MB");
    assert!(peak_mb < 150, "the server's peak resident memory was {peak_mb} MB");
    // And it still serves.
    assert_eq!(client.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
}

/// Reads until the server closes the connection (or resets it); the read timeout is only a
/// safety net against a hang.
fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => return got,
            Err(e) => panic!("the server did not close the connection: {e} (got {:?})", String::from_utf8_lossy(&got)),
        }
    }
}

#[test]
fn slow_clients_are_cut_off() {
    let forge = Forge::new("job:\n  script: [true]\n");
    let server = Server::start(&forge, 10_000, "[limits]\nheader_timeout_ms = 300\nbody_timeout_ms = 300\n");

    // A request head that never ends.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: piste\r\nX-Slow: ").unwrap();
    let got = closed_by_server(&mut slow);
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "{:?}", String::from_utf8_lossy(&got));

    // An idle keep-alive connection: one request, then silence.
    let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: piste\r\n\r\n").unwrap();
    let got = String::from_utf8_lossy(&closed_by_server(&mut idle)).into_owned();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");

    // A body that stops arriving: the request fails and the connection closes.
    let mut stalled = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stalled
        .write_all(b"POST /api/v1/runners HTTP/1.1\r\nHost: piste\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"na")
        .unwrap();
    let got = String::from_utf8_lossy(&closed_by_server(&mut stalled)).into_owned();
    assert!(!got.contains("201"), "{got}");
}

/// One full request on a kept-alive connection, its whole answer read (head and
/// `Content-Length` bytes of body); the answer's status line.
fn request(stream: &mut TcpStream) -> String {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: piste\r\n\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return head.lines().next().unwrap_or_default().to_string();
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&got).lines().next().unwrap_or_default().to_string(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn the_connection_cap_holds() {
    let forge = Forge::new("job:\n  script: [true]\n");
    let server = Server::start(&forge, 10_000, "[limits]\nmax_connections = 2\n");
    let connect = || TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    // Served once the server has seen earlier connections close (its start-up probe's).
    let served = || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut s = connect();
            let status = request(&mut s);
            if status.starts_with("HTTP/1.1 200") {
                return s;
            }
            assert!(Instant::now() < deadline, "refused though under the cap: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (a, mut b) = (served(), served());
    // Both are open and kept alive: a third is turned away.
    let mut c = connect();
    let status = request(&mut c);
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    // One closes: a new connection is served again (once the server has seen it close).
    drop(a);
    drop(served());
    let status = request(&mut b);
    assert!(status.starts_with("HTTP/1.1 200"), "the kept connection still works: {status:?}");
}

/// Each attempt keeps its own failure reason, masked with the job's secrets in every form,
/// in the API and on the job page. The runner is this test speaking the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_keeps_its_own_masked_failure_reason() {
    let forge = Forge::new("job:\n  retry: 1\n  script: [exit 1]\n");
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 10_000, "");
    let http = Http::new(&server);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "a-1").await;
    assert_eq!(r.status(), 201);
    let pipeline = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let c = &http.client;
    let runner: Value = c
        .post(format!("{}/api/v1/runners", http.base))
        .json(&json!({"registration_token": REGISTRATION, "name": "test", "tags": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runner_token = runner["token"].as_str().unwrap().to_string();
    let reasons = [format!("the deploy printed {TOKEN} and then {TOKEN_BASE64}"), format!("second time: {TOKEN}")];
    let mut job = 0;
    for (i, why) in reasons.iter().enumerate() {
        let payload: Value = loop {
            let r = c
                .post(format!("{}/api/v1/jobs/request", http.base))
                .bearer_auth(&runner_token)
                .json(&json!({"free_slots": 1}))
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                break r.json().await.unwrap();
            }
        };
        assert_eq!(payload["attempt"], i + 1);
        assert!(payload.to_string().contains(TOKEN), "the job of a protected ref has the secret");
        job = payload["job_id"].as_i64().unwrap();
        let finish = json!({"outcome": {"outcome": "failed", "reason": "script_failure", "exit_code": 1}, "exit_code": 1, "reason": why, "log_bytes": 0});
        let r = c
            .post(format!("{}/api/v1/jobs/{job}/finish", http.base))
            .bearer_auth(payload["token"].as_str().unwrap())
            .json(&finish)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let p = http.wait_status(pipeline, &["failed"], 60).await;
    assert_eq!(job_id(&p, "job"), job);
    let detail: Value = c.get(format!("{}/api/v1/jobs/{job}", http.base)).send().await.unwrap().json().await.unwrap();
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{detail:#}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], i + 1);
        assert_eq!(a["status"], "failed", "{a}");
        assert_eq!(a["exit_code"], 1, "{a}");
        assert!(a["started_at"].is_i64() && a["finished_at"].is_i64(), "{a}");
    }
    assert_eq!(attempts[0]["failure_reason"], "script_failure: the deploy printed [MASKED] and then [MASKED]");
    assert_eq!(attempts[1]["failure_reason"], "script_failure: second time: [MASKED]");
    let page = c.get(format!("{}/jobs/{job}", http.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("the deploy printed [MASKED]") && page.contains("second time: [MASKED]"), "{page}");
    for text in [detail.to_string(), page, server.log()] {
        assert!(!text.contains(TOKEN) && !text.contains(TOKEN_BASE64), "a secret in: {text}");
    }
}
