//! Watching logs: live Server-Sent Events resumed by offset, byte ranges, `piste logs --follow`.

use std::process::Command;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piste_logs_follows_a_running_job_and_exits_with_its_status() {
    let forge = Forge::new(
        "talk:\n  script:\n    - for i in 1 2 3 4 5; do echo \"tick $i\"; sleep 0.2; done\n    - printf '\\033[31mred\\033[0m\\n'\n    - exit 3\n",
    );
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "logs-1").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let job = http.wait_job_status(id, "talk", &["running"], 60).await;
    let job_id = job["id"].as_i64().unwrap().to_string();
    let (url, token) = (http.base.clone(), server.token.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_piste"))
            .args(["logs", &job_id, "--follow", "--url", &url])
            .env("NO_COLOR", "1")
            .env("PISTE_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ticks: Vec<&str> = text.lines().filter(|l| l.starts_with("tick ")).collect();
    assert_eq!(ticks, ["tick 1", "tick 2", "tick 3", "tick 4", "tick 5"], "{text}");
    assert!(text.lines().any(|l| l == "red"), "colours stripped off a terminal: {text:?}");
    assert!(!text.contains('\x1b'), "{text:?}");
    assert_eq!(out.status.code(), Some(1), "the job failed, so does `piste logs`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_resumes_from_last_event_id_and_ranges_read_parts() {
    let forge = Forge::new("lines:\n  script:\n    - for i in $(seq 1 50); do echo \"line $i\"; done\n");
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "logs-2").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success"], 60).await;
    let job = p["jobs"][0]["id"].as_i64().unwrap();
    let full = http.log(job).await;
    let total = full.len();
    // Resume: everything after a given offset, then `end`.
    let cut = total / 2;
    let sse = http
        .client
        .get(format!("{}/api/v1/jobs/{job}/log/stream", http.base))
        .header("Last-Event-ID", cut.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut rebuilt = String::new();
    for block in sse.split("\n\n") {
        let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
        if block.lines().any(|l| l == "event: end") {
            assert!(data.contains("\"status\":\"success\""), "{data}");
            continue;
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) {
            rebuilt.push_str(v["text"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(rebuilt, full[cut..], "the stream from the resumed offset is the rest of the log");
    // Ranges: the tail, and a middle part.
    let tail = http.client.get(format!("{}/api/v1/jobs/{job}/log", http.base)).header("Range", "bytes=-20").send().await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.headers()["content-range"], format!("bytes {}-{}/{total}", total - 20, total - 1).as_str());
    assert_eq!(tail.text().await.unwrap(), full[total - 20..]);
    let bad =
        http.client.get(format!("{}/api/v1/jobs/{job}/log", http.base)).header("Range", format!("bytes={total}-")).send().await.unwrap();
    assert_eq!(bad.status(), 416);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_pipelines_jobs_and_a_safely_rendered_log() {
    let forge = Forge::new(
        "build:\n  script:\n    - echo '<script>alert(1)</script>'\n    - printf '\\033[32mgreen\\033[0m\\n'\n    - echo made > made.txt\n  artifacts:\n    paths: [made.txt]\ntest:\n  needs: [build]\n  script: [echo ok]\n",
    );
    let (before, after) = forge.push("main", "first");
    let server = Server::start(&forge, 5000, "");
    let http = Http::new(&server);
    let _runner = RunnerProc::start(&server, "node", "shell");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "pages-1").await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p = http.wait_status(id, &["success"], 60).await;
    let get = |path: String| {
        let c = http.client.clone();
        async move {
            let r = c.get(path).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let project = get(format!("{}/projects/app", http.base)).await;
    assert!(project.contains(&format!("/pipelines/{id}")), "{project}");
    let pipeline = get(format!("{}/pipelines/{id}", http.base)).await;
    assert!(pipeline.contains("build") && pipeline.contains("test"), "{pipeline}");
    let build = p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "build").unwrap()["id"].as_i64().unwrap();
    let job = get(format!("{}/jobs/{build}", http.base)).await;
    assert!(job.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the log is escaped: {job}");
    assert!(!job.contains("<script>alert(1)"), "{job}");
    assert!(job.contains("id=\"L1\""), "line anchors: {job}");
    assert!(job.contains(&format!("/api/v1/jobs/{build}/artifacts")), "an artifacts link: {job}");
    let archive = http.client.get(format!("{}/api/v1/jobs/{build}/artifacts", http.base)).send().await.unwrap();
    assert_eq!(archive.status(), 200);
    assert_eq!(archive.headers()["content-type"], "application/zstd");
    assert_eq!(archive.headers()["content-disposition"], "attachment; filename=\"build-artifacts.tar.zst\"");
    let bytes = archive.bytes().await.unwrap();
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd archive");
    // What people download opens with Debian's tar (and its zstd).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("build-artifacts.tar.zst"), &bytes).unwrap();
    let tar = std::process::Command::new("tar")
        .args(["--zstd", "-xf", "build-artifacts.tar.zst"])
        .current_dir(dir.path())
        .output()
        .expect("`tar` runs (scripts/deps.sh installs zstd)");
    assert!(tar.status.success(), "{}", String::from_utf8_lossy(&tar.stderr));
    assert_eq!(std::fs::read_to_string(dir.path().join("made.txt")).unwrap(), "made\n");
    // A page button is a form: it answers with a redirect back to the pipeline page.
    let form = http
        .client
        .post(format!("{}/api/v1/jobs/{build}/retry", http.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 303);
    assert_eq!(form.headers()["location"], format!("/pipelines/{id}").as_str());
    // The next pipeline (same tree) makes the same archive: its runner sends the digest only.
    http.wait_status(id, &["success"], 60).await;
    let (before, after) = forge.push("main", "second");
    let r = http.gitlab_hook(gitlab_push("main", &before, &after, "second"), Some(SECRET), "pages-2").await;
    let id2 = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    let p2 = http.wait_status(id2, &["success"], 60).await;
    let metrics = get(format!("{}/metrics", http.base)).await;
    assert!(metrics.contains("piste_artifacts_deduplicated_total 1"), "{metrics}");
    // Finished pipelines leave memory: the engines, the per-job maps and the leased
    // pipelines' rows /metrics shows return to zero once the last transition is stored (it
    // follows the status the API shows); the rows remembered for the runner protocol (runners,
    // pipelines' projects) are bounded caches, shown too.
    let in_memory = |text: &str| -> Vec<String> { text.lines().filter(|l| l.starts_with("piste_in_memory{")).map(str::to_owned).collect() };
    let bounded = |l: &String| l.contains("kind=\"runners\"") || l.contains("kind=\"projects_of_pipelines\"");
    let mut held = String::new();
    for _ in 0..600 {
        held = get(format!("{}/metrics", http.base)).await;
        if in_memory(&held).iter().filter(|l| !bounded(l)).all(|l| l.ends_with(" 0")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let kinds = in_memory(&held);
    assert_eq!(kinds.len(), 7, "engines, log locks, log watchers, queued jobs, leased pipelines, runners, projects: {held}");
    assert!(kinds.iter().filter(|l| !bounded(l)).all(|l| l.ends_with(" 0")), "nothing held once every pipeline finished: {kinds:?}");
    assert_eq!(kinds.iter().filter(|l| bounded(l)).count(), 2, "{kinds:?}");
    let build2 = p2["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "build").unwrap()["id"].as_i64().unwrap();
    let log = get(format!("{}/api/v1/jobs/{build2}/log", http.base)).await;
    assert!(log.contains("Artifacts already on the server: upload skipped"), "{log}");
    let again = http.client.get(format!("{}/api/v1/jobs/{build2}/artifacts", http.base)).send().await.unwrap();
    assert_eq!(again.bytes().await.unwrap(), bytes, "the second build's artifacts are the same archive");
    // The HTML live stream of a finished job: rendered lines, then `end`.
    let sse = get(format!("{}/api/v1/jobs/{build}/log/stream?format=html", http.base)).await;
    assert!(sse.contains("event: end") && sse.contains("green"), "{sse}");
    assert!(!sse.contains("<script>alert"), "{sse}");
}
