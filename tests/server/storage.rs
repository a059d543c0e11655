//! Object storage: two `piste serve` sharing only PostgreSQL and an S3 bucket (moto), one
//! killed mid-pipeline; every log and artifact ends in the bucket, none on either disk.

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::moto::Moto;
use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push, job_id};

const BUCKET: &str = "piste-e2e";

const PIPELINE: &str = r#"
stages: [build, test, report]
default:
  retry: 2
build:
  stage: build
  cache:
    key: deps
    paths: [deps/]
  script:
    - mkdir -p deps out
    - echo cached > deps/marker
    - echo "built on $CI_RUNNER_DESCRIPTION" > out/app.txt
    - head -c 12000000 /dev/urandom > out/big.bin
    - sha256sum out/big.bin > out/big.sha256
    - echo "token is $DEPLOY_TOKEN"
  artifacts:
    paths: [out/]
slow-1:
  stage: test
  needs: [build]
  script:
    - sha256sum -c out/big.sha256
    - for i in $(seq 1 25); do echo slow-1-line-$i; sleep 0.2; done
slow-2:
  stage: test
  needs: [build]
  script:
    - sha256sum -c out/big.sha256
    - for i in $(seq 1 25); do echo slow-2-line-$i; sleep 0.2; done
report:
  stage: report
  needs: [build, slow-1, slow-2]
  script:
    - cat out/app.txt
    - sha256sum -c out/big.sha256
"#;

/// Files under `dir`, relative.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

/// Waits until the finished log of each `(job, attempt)` is one object under `prefix`: logs
/// are sealed in the background, by the server that took the finish or by a sweep.
async fn wait_sealed(moto: &Moto, prefix: &str, logs: &[(i64, i64)]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keys = moto.list(BUCKET, &format!("{prefix}logs/"));
        let missing: Vec<String> = logs
            .iter()
            .map(|(job, attempt)| format!("{prefix}logs/{job}.{attempt}.log"))
            .filter(|k| !keys.iter().any(|(key, _)| key == k))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "logs never sealed: {missing:?} (bucket: {keys:#?})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_log_line(http: &Http, job: i64, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http.log(job).await.lines().any(|l| l == line) {
        assert!(Instant::now() < deadline, "job {job} never logged {line:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_without_a_shared_disk_keep_logs_and_artifacts_in_s3_through_a_kill() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let forge = Forge::new(PIPELINE);
    let (before, after) = forge.push("main", "first");
    let db = crate::support::postgres_database();
    let extra = format!("database = \"{db}\"\nstorage = \"s3://{BUCKET}/piste\"");
    let mut a = Server::start_with_env(&forge, 3000, &extra, None, moto.env());
    let b = Server::start_with_env(&forge, 3000, &extra, None, moto.env());
    assert_ne!(a.data, b.data);
    let _ra = RunnerProc::start(&a, "runner-a", "shell");
    let _rb = RunnerProc::start(&b, "runner-b", "shell");
    let (ha, hb) = (Http::new(&a), Http::new(&b));
    let r = ha.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "s3-1").await;
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();

    // One runner per server, one job each: the two slow jobs run on different servers' runners.
    let s1 = hb.wait_job_status(id, "slow-1", &["running"], 120).await["id"].as_i64().unwrap();
    let s2 = hb.wait_job_status(id, "slow-2", &["running"], 120).await["id"].as_i64().unwrap();
    wait_log_line(&hb, s1, "slow-1-line-1").await;
    wait_log_line(&hb, s2, "slow-2-line-1").await;
    a.kill();

    let p = hb.wait_status(id, &["success", "failed"], 180).await;
    assert_eq!(p["status"], "success", "{p:#}\nserver a:\n{}\nserver b:\n{}\nmoto:\n{}", a.log(), b.log(), moto.log());
    let jobs = p["jobs"].as_array().unwrap();
    let retried: Vec<&str> = jobs.iter().filter(|j| j["attempt"] == 2).filter_map(|j| j["name"].as_str()).collect();
    assert_eq!(retried.len(), 1, "the job of the killed server's runner ran again on the other: {p:#}");
    assert!(retried[0].starts_with("slow-"), "{p:#}");

    // Every log of every attempt is one object in the bucket (sealed in the background: by
    // the server that took the finish, or by the survivor's sweep), and the API serves it.
    let attempts: Vec<(i64, i64)> =
        jobs.iter().flat_map(|j| (1..=j["attempt"].as_i64().unwrap()).map(|a| (j["id"].as_i64().unwrap(), a))).collect();
    wait_sealed(&moto, "piste/", &attempts).await;
    let keys = moto.list(BUCKET, "piste/");
    for j in jobs {
        let jid = j["id"].as_i64().unwrap();
        for attempt in 1..=j["attempt"].as_i64().unwrap() {
            let key = format!("piste/logs/{jid}.{attempt}.log");
            let stored = keys.iter().find(|(k, _)| *k == key).map(|(_, size)| *size);
            assert!(stored.is_some_and(|s| s > 0), "{key} in the bucket: {keys:#?}");
            let served =
                hb.client.get(format!("{}/api/v1/jobs/{jid}/log?attempt={attempt}", hb.base)).send().await.unwrap().text().await.unwrap();
            assert_eq!(Some(served.len() as u64), stored, "the API reads the bucket's log of job {jid} attempt {attempt}");
        }
    }
    let killed = job_id(&p, retried[0]);
    let first = hb.client.get(format!("{}/api/v1/jobs/{killed}/log?attempt=1", hb.base)).send().await.unwrap().text().await.unwrap();
    assert!(first.lines().any(|l| l == format!("{}-line-1", retried[0])), "the killed attempt's log survived: {first}");
    let build_log = hb.log(job_id(&p, "build")).await;
    assert!(build_log.contains("token is [MASKED]") && !build_log.contains("tok-123456-secret"), "{build_log}");

    // The artifacts: content-addressed in the bucket, served from it.
    let archive = hb.client.get(format!("{}/api/v1/jobs/{}/artifacts", hb.base, job_id(&p, "build"))).send().await.unwrap();
    assert_eq!(archive.status(), 200);
    let bytes = archive.bytes().await.unwrap();
    let digest = hex::encode(Sha256::digest(&bytes));
    let artifacts: Vec<_> = keys.iter().filter(|(k, _)| k.starts_with("piste/artifacts/")).collect();
    assert_eq!(artifacts, [&(format!("piste/artifacts/{digest}"), bytes.len() as u64)], "{keys:#?}");
    assert!(bytes.len() > 8 << 20, "big enough to be a multipart upload: {}", bytes.len());

    // Nothing but git mirrors (a cache any server rebuilds) on either server's disk.
    for dir in [&a.data, &b.data] {
        let found = files(dir);
        assert!(found.iter().any(|f| f.starts_with("mirrors/")), "{found:?}");
        let other: Vec<_> = found.iter().filter(|f| !f.starts_with("mirrors/")).collect();
        assert!(other.is_empty(), "only mirrors under {}: {other:?}", dir.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_on_one_server_sees_the_chunks_another_server_accepts() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let forge = Forge::new("talk:\n  script:\n    - for i in $(seq 1 20); do echo \"tick $i\"; sleep 0.1; done\n");
    let (before, after) = forge.push("main", "first");
    let db = crate::support::postgres_database();
    let extra = format!("database = \"{db}\"\nstorage = \"s3://{BUCKET}\"");
    let a = Server::start_with_env(&forge, 5000, &extra, None, moto.env());
    let b = Server::start_with_env(&forge, 5000, &extra, None, moto.env());
    // The only runner talks to `a`; the follower watches through `b`.
    let _runner = RunnerProc::start(&a, "runner-a", "shell");
    let (ha, hb) = (Http::new(&a), Http::new(&b));
    let r = ha.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "follow-1").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let job = hb.wait_job_status(id, "talk", &["running"], 60).await["id"].as_i64().unwrap();
    let sse = hb.client.get(format!("{}/api/v1/jobs/{job}/log/stream", hb.base)).send().await.unwrap().text().await.unwrap();
    let mut text = String::new();
    let mut ended = false;
    for block in sse.split("\n\n") {
        let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
        if block.lines().any(|l| l == "event: end") {
            assert!(data.contains("\"status\":\"success\""), "{data}");
            ended = true;
        } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) {
            text.push_str(v["text"].as_str().unwrap_or(""));
        }
    }
    assert!(ended, "the stream ends with the job: {sse}");
    let ticks: Vec<&str> = text.lines().filter(|l| l.starts_with("tick ")).collect();
    let want: Vec<String> = (1..=20).map(|i| format!("tick {i}")).collect();
    assert_eq!(ticks, want, "every line once, in order, through the other server:\n{text}");
    assert_eq!(text, ha.log(job).await, "both servers serve the same log");
    // The job page and byte ranges read the bucket too.
    let page = hb.client.get(format!("{}/jobs/{job}", hb.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("tick 20") && page.contains("id=\"L1\""), "{page}");
    let tail = hb.client.get(format!("{}/api/v1/jobs/{job}/log", hb.base)).header("Range", "bytes=-8").send().await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.text().await.unwrap(), text[text.len() - 8..]);
    wait_sealed(&moto, "", &[(job, 1)]).await;
    let keys = moto.list(BUCKET, "logs/");
    assert!(keys.iter().any(|(k, _)| *k == format!("logs/{job}.1.log")), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_log_continues_it_from_the_bucket_after_restart() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let forge = Forge::new("lines:\n  script:\n    - for i in $(seq 1 40); do echo line-$i; sleep 0.1; done\n");
    let (before, after) = forge.push("main", "first");
    let extra = format!("storage = \"s3://{BUCKET}/restart\"");
    let mut server = Server::start_with_env(&forge, 10_000, &extra, None, moto.env());
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "restart-s3").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let job = http.wait_job_status(id, "lines", &["running"], 60).await["id"].as_i64().unwrap();
    wait_log_line(&http, job, "line-5").await;
    server.kill();
    // While the server is down, the log so far is chunks in the store, not yet an object.
    assert!(moto.list(BUCKET, "restart/logs/").is_empty());
    server.spawn();
    let p = http.wait_status(id, &["success", "failed"], 90).await;
    assert_eq!(p["status"], "success", "{p:#}\nserver log:\n{}", server.log());
    let log = http.log(job).await;
    let got: Vec<&str> = log.lines().filter(|l| l.starts_with("line-")).collect();
    let want: Vec<String> = (1..=40).map(|i| format!("line-{i}")).collect();
    assert_eq!(got, want, "every line exactly once, in order:\n{log}");
    wait_sealed(&moto, "restart/", &[(job, 1)]).await;
    // Operators see the seals on /metrics: this server sealed the log, none waits.
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        let prefix = format!("{name} ");
        metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(-1.0)
    };
    assert!(value("piste_logs_sealed_total") >= 1.0, "{metrics}");
    assert_eq!(value("piste_logs_to_seal"), 0.0, "{metrics}");
    let keys = moto.list(BUCKET, "restart/logs/");
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], (format!("restart/logs/{job}.1.log"), log.len() as u64), "the log as one object once finished");
    assert_eq!(keys[1].0, format!("restart/logs/{job}.1.times"), "and when its chunks arrived");
    assert!(keys[1].1 > 0 && keys[1].1 % 16 == 0, "16 bytes a chunk: {keys:?}");
    let local: Vec<_> = files(&server.data).into_iter().filter(|f| f.starts_with("logs") || f.starts_with("artifacts")).collect();
    assert!(local.is_empty(), "{local:?}");
}

/// A short job's log comes whole with its finish report and is written as its final object
/// at once: nothing to seal (no chunk rows went through the store), the object is there when
/// the job is, and a secret is masked in it as in any log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_jobs_log_is_its_final_object_as_soon_as_the_job_finishes() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let forge = Forge::new("quick:\n  script:\n    - echo \"quick job, token $DEPLOY_TOKEN\"\n");
    let (before, after) = forge.push("main", "first");
    let extra = format!("storage = \"s3://{BUCKET}/whole\"");
    let server = Server::start_with_env(&forge, 10_000, &extra, None, moto.env());
    let http = Http::new(&server);
    // A minute between sends: however slow the machine, the job ends before its log is sent.
    let _runner = RunnerProc::start_configured(&server, "node", "shell", "log_interval_ms = 60000\n");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "whole-log").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed"], 90).await;
    assert_eq!(p["status"], "success", "{p:#}\nserver log:\n{}", server.log());
    let job = job_id(&p, "quick");
    // No waiting: the finish report wrote it.
    let keys = moto.list(BUCKET, "whole/logs/");
    let log = http.log(job).await;
    assert_eq!(keys, [(format!("whole/logs/{job}.1.log"), log.len() as u64)], "one object, no time marks");
    assert!(log.contains("quick job, token [MASKED]") && !log.contains("tok-123456-secret"), "{log}");
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        let prefix = format!("{name} ");
        metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(-1.0)
    };
    assert_eq!(value("piste_logs_sealed_total"), 0.0, "nothing was sealed: {metrics}");
    assert_eq!(value("piste_logs_to_seal"), 0.0, "{metrics}");
}

/// The bucket behind HTTPS with a private CA (nginx in front of moto): with the top-level
/// `ca_file`, the job's log and artifacts reach the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_storage_behind_a_private_ca() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let proxy = crate::tls_proxy::TlsProxy::serve(crate::support::free_port(), moto.port, dir.path());
    let forge = Forge::new("build:\n  script: [echo built-over-tls > out.txt, cat out.txt]\n  artifacts:\n    paths: [out.txt]\n");
    let (before, after) = forge.push("main", "first");
    let mut env = moto.env();
    env[0].1 = proxy.url.clone();
    let extra = format!("storage = \"s3://{BUCKET}/tls\"\nca_file = \"{}\"", proxy.ca.cert.display());
    let server = Server::start_with_env(&forge, 10_000, &extra, None, env);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let http = Http::new(&server);
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "tls-s3").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success", "failed"], 60).await;
    assert_eq!(p["status"], "success", "{p:#}\n{}", server.log());
    let job = job_id(&p, "build");
    wait_log_line(&http, job, "built-over-tls").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys: Vec<String> = moto.list(BUCKET, "tls/").into_iter().map(|(k, _)| k).collect();
        if keys.iter().any(|k| k.starts_with("tls/artifacts/")) && keys.iter().any(|k| k.starts_with("tls/logs/")) {
            break;
        }
        assert!(Instant::now() < deadline, "the bucket through the proxy holds {keys:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
