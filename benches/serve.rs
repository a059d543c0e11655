//! Server benchmarks through the real HTTP protocol, against a real `piste serve` process:
//!   1. dispatch throughput: 4 protocol-speaking runners drain 1,000 trivial jobs
//!      (request → finish with the job's log), SQLite; as `piste runner` with one slot, each
//!      asks for its next job while its last finish report waits for the answer (one at most);
//!   2. webhook received → first job handed to a runner (p50, p99), the mirror already cloned;
//!   3. log ingestion: one job sends 1 GiB of log in 1 MiB chunks; the server's peak memory.
//!   4. log latency: a line a real runner's job prints → a live follower.
//!   5. memory: a fresh server's RSS after 100 and after 1,000 finished pipelines (3 jobs each):
//!      finished pipelines must leave memory.
//!   6. real runners (`-- runners` only): 4 `piste runner` processes (shell executor, 4 slots
//!      each) run a pipeline of 500 trivial jobs: jobs/s, and the CPU per job of the server and
//!      of the runners (their own processes; the jobs' shells apart).
//!   7. first script line (`-- first-line` only): one real `piste runner` (shell executor), 30
//!      pushes one after another, each a one-job pipeline whose script echoes a marker: webhook
//!      sent → the marker's line readable by a follower of the job's live log (p50, p99).
//!
//! Run with `cargo bench --bench serve` (or `make bench-server`); `cargo bench --bench serve --
//! rss` runs the memory measurement only, `-- dispatch` the dispatch throughput only, `-- webhook`
//! the webhook latency only, `-- runners` the real runners only, `-- first-line` the first script
//! line only. `PISTE_BENCH_RUNNERS=N` runs the dispatch part with N protocol runners (4). `PISTE_BENCH_DATABASE=postgres://…`
//! puts the queue in PostgreSQL and `PISTE_BENCH_STORAGE=s3://…` logs and artifacts in object storage;
//! `benches/pg-s3.sh` starts both (a durable PostgreSQL and moto) and runs this with them, with
//! `PISTE_BENCH_PG_PID` and `PISTE_BENCH_S3_PID`: the dispatch run then says how much CPU per job
//! the server, PostgreSQL, the S3 server and this bench used. `PISTE_BENCH_PERF=FILE` records
//! the server with `perf` (FILE.dispatch; FILE and FILE.runners in the real runners part).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use scheduler::protocol::{FinishLog, FinishRequest, JobPayload, JobRequestBody, Outcome, RegisterRequest, RegisterResponse};

const SECRET: &str = "bench-webhook-secret";
const REG: &str = "bench-registration";

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=b", "-c", "user.email=b@b", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait(port: u16) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("port {port} never opened");
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hook(branch: &str, before: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "object_kind": "push", "event_name": "push", "before": before, "after": after, "ref": format!("refs/heads/{branch}"),
        "checkout_sha": after, "user_name": "Bench", "user_username": "bench", "user_email": "bench@example.test",
        "project": {"id": 1, "name": "app", "path_with_namespace": "bench/app", "default_branch": "main"},
        "commits": [{"id": after, "message": "bench", "title": "bench", "timestamp": "2026-11-29T10:00:00+00:00",
                      "author": {"name": "Bench", "email": "bench@example.test"}, "added": [], "modified": [".gitlab-ci.yml"], "removed": []}],
        "total_commits_count": 1, "repository": {"name": "app", "url": "git://example.test/app.git"}
    }))
    .unwrap()
}

/// CPU time (user + system) a process has used so far, in milliseconds (`/proc/PID/stat`).
fn cpu_ms(pid: u32) -> f64 {
    stat_ms(pid, 14, 15)
}

/// The sum of two tick fields of `/proc/PID/stat` (1-based, as proc(5) numbers them), in ms.
fn stat_ms(pid: u32, a: usize, b: usize) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(a) + ticks(b)) * 1000.0 / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("getconf CLK_TCK prints a number")
    })
}

/// Waits until the server has no finished log waiting to become one object (`/metrics`).
async fn wait_sealed(client: &reqwest::Client, base: &str) {
    loop {
        let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        let pending = text
            .lines()
            .find_map(|l| l.strip_prefix("piste_logs_to_seal "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("/metrics has piste_logs_to_seal");
        if pending == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn vm(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `git-daemon` itself, not `git daemon`: `git` runs the daemon as a child process, so killing
/// `git` would leave the daemon running after the test.
fn git_daemon_program() -> std::path::PathBuf {
    let out = std::process::Command::new("git").arg("--exec-path").output().expect("git (Debian's git package)");
    std::path::Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("git-daemon")
}

/// What a protocol runner does with a trivial job: one log line, then success — the line in
/// the finish report when the server offers it, as `piste runner` does with a short job's log.
async fn run_trivially(client: &reqwest::Client, base: &str, job: &JobPayload) {
    let line = format!("$ true\n{} done\n", job.job.name);
    let log = if job.log_in_finish {
        Some(FinishLog(line.clone().into_bytes()))
    } else {
        client
            .put(format!("{base}{}", scheduler::protocol::paths::log(job.job_id, 0)))
            .bearer_auth(&job.token)
            .body(line.clone())
            .send()
            .await
            .unwrap();
        None
    };
    let finish = FinishRequest {
        outcome: Outcome::Success,
        exit_code: Some(0),
        reason: None,
        log_bytes: line.len() as u64,
        log,
        dotenv: Vec::new(),
        coverage: None,
    };
    client
        .post(format!("{base}{}", scheduler::protocol::paths::finish(job.job_id)))
        .bearer_auth(&job.token)
        .json(&finish)
        .send()
        .await
        .unwrap();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let bare = root.join("repos/app.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare"]);
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    let mut yml = String::new();
    for i in 0..1000 {
        yml.push_str(&format!("j{i}:\n  script: [\"true\"]\n"));
    }
    std::fs::write(work.join(".gitlab-ci.yml"), &yml).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "bench"]);
    git(&work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
    let sha = git(&work, &["rev-parse", "HEAD"]);
    // A small pipeline on its own branch, for the memory measurement.
    git(&work, &["checkout", "-q", "-b", "small"]);
    std::fs::write(work.join(".gitlab-ci.yml"), "a:\n  script: [\"true\"]\nb:\n  script: [\"true\"]\nc:\n  script: [\"true\"]\n").unwrap();
    git(&work, &["commit", "-qam", "small"]);
    git(&work, &["push", "-q", "origin", "HEAD:refs/heads/small"]);
    let small = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["checkout", "-q", "main"]);

    let gport = port();
    let _daemon = Kill(
        Command::new(git_daemon_program())
            .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1", &format!("--port={gport}")])
            .arg(format!("--base-path={}", root.join("repos").display()))
            .arg(root.join("repos"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait(gport);
    let only = |part: &str| std::env::args().any(|a| a == part);
    if only("runners") {
        real_runners(root, &work, gport).await;
        return;
    }
    if only("first-line") {
        first_script_line(root, &work, gport).await;
        return;
    }
    if !only("dispatch") && !only("webhook") {
        rss_after_finished_pipelines(root, gport, &small).await;
    }
    if only("rss") {
        return;
    }
    let (server, base) = start_server(root, "piste", gport, 5000);
    let pid = server.0.id();
    let client = reqwest::Client::new();

    // Runners: 4, or `PISTE_BENCH_RUNNERS` (the dispatch part).
    let runners: usize = std::env::var("PISTE_BENCH_RUNNERS").ok().and_then(|n| n.parse().ok()).filter(|n| *n >= 2).unwrap_or(4);
    let mut tokens = Vec::new();
    for i in 0..runners {
        let r: RegisterResponse = client
            .post(format!("{base}{}", scheduler::protocol::paths::REGISTER))
            .json(&RegisterRequest { registration_token: REG.into(), name: format!("bench-{i}"), tags: vec![], ..Default::default() })
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(r.token);
    }

    if only("webhook") {
        webhook_latency(&client, &base, &tokens[0], &work, &sha).await;
        return;
    }

    // 1. Dispatch throughput.
    let send_hook = |body: Vec<u8>, delivery: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            client
                .post(format!("{base}/api/v1/webhooks/app"))
                .header("X-Gitlab-Event", "Push Hook")
                .header("X-Gitlab-Token", SECRET)
                .header("X-Gitlab-Event-UUID", delivery)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    // `PISTE_BENCH_S3_PID`: the S3 server's process (benches/pg-s3.sh sets it), whose CPU the
    // dispatch run also costs on this machine.
    let s3_pid: Option<u32> = std::env::var("PISTE_BENCH_S3_PID").ok().and_then(|p| p.parse().ok());
    // `PISTE_BENCH_PG_PID`: the PostgreSQL cluster's postmaster (benches/pg-s3.sh sets it).
    let pg_pid: Option<u32> = std::env::var("PISTE_BENCH_PG_PID").ok().and_then(|p| p.parse().ok());
    let cpu_now = move || Cpu::now(pid, s3_pid, pg_pid);
    let cpu_before = cpu_now();
    let commits_before = pg_commits();
    // `PISTE_BENCH_PERF=FILE`: `perf record` of the server during the dispatch run, to FILE.dispatch.
    let perf = std::env::var("PISTE_BENCH_PERF").ok().map(|out| {
        Command::new("perf")
            .args(["record", "-F", "4999", "-g", "-o", &format!("{out}.dispatch"), "-p", &pid.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    });
    assert!(send_hook(hook("main", &"0".repeat(40), &sha), "d-0".into()).await.status().is_success());
    let done = Arc::new(AtomicUsize::new(0));
    // When the first job was handed out, and the CPU used until then (the pipeline's creation).
    let first = Arc::new(std::sync::Mutex::new(None::<(Instant, Cpu)>));
    let last = Arc::new(std::sync::Mutex::new(None::<Instant>));
    // How long each runner waited for the server: a request that got a job, a finish.
    let waits = Arc::new(std::sync::Mutex::new((Vec::<f64>::new(), Vec::<f64>::new())));
    let mut tasks = Vec::new();
    for token in tokens.clone() {
        let (client, base, done, first, last, waits) =
            (client.clone(), base.clone(), done.clone(), first.clone(), last.clone(), waits.clone());
        tasks.push(tokio::spawn(async move {
            // As `piste runner` with one slot: the next job is asked for while the last one's
            // finish report waits for its answer, one report at most.
            let reporting = Arc::new(tokio::sync::Semaphore::new(1));
            while done.load(Ordering::Relaxed) < 1000 {
                let asked = Instant::now();
                let r = client
                    .post(format!("{base}{}", scheduler::protocol::paths::REQUEST_JOB))
                    .bearer_auth(&token)
                    .json(&JobRequestBody { free_slots: 1 })
                    .send()
                    .await
                    .unwrap();
                if r.status() != 200 {
                    continue;
                }
                first.lock().unwrap().get_or_insert_with(|| (Instant::now(), cpu_now()));
                let job: JobPayload = r.json().await.unwrap();
                waits.lock().unwrap().0.push(asked.elapsed().as_secs_f64() * 1000.0);
                let report = reporting.clone().acquire_owned().await.unwrap();
                let (client, base, done, last, waits) = (client.clone(), base.clone(), done.clone(), last.clone(), waits.clone());
                tokio::spawn(async move {
                    let sent = Instant::now();
                    run_trivially(&client, &base, &job).await;
                    waits.lock().unwrap().1.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if done.fetch_add(1, Ordering::Relaxed) + 1 == 1000 {
                        *last.lock().unwrap() = Some(Instant::now());
                    }
                    drop(report);
                });
            }
        }));
    }
    // The other runners are left long-polling for jobs that will not come: stop waiting for them.
    while last.lock().unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.abort();
    }
    let (start, cpu_first) = first.lock().unwrap().unwrap();
    let elapsed = last.lock().unwrap().unwrap().duration_since(start);
    // Background seals of those logs (object storage) are part of the cost: wait until no log
    // is left in chunks, then read the server's CPU.
    wait_sealed(&client, &base).await;
    let cpu_after = cpu_now();
    let server_cpu = cpu_after.server - cpu_before.server;
    if let Some(mut perf) = perf {
        let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
        let _ = perf.wait();
    }
    if let (Some(a), Some(b)) = (commits_before, pg_commits()) {
        println!("dispatch: {:.1} PostgreSQL write transactions per job", (b - a) as f64 / 1000.0);
    }
    println!(
        "dispatch: 1,000 jobs through {runners} runners (request, finish with the log) in {:.0} ms: {:.0} jobs/s (target >= 500); server CPU {:.2} ms per job (dispatch and seals){}",
        elapsed.as_secs_f64() * 1000.0,
        1000.0 / elapsed.as_secs_f64(),
        server_cpu / 1000.0,
        s3_pid.map(|_| format!("; the S3 server's CPU {:.2} ms per job", (cpu_after.s3 - cpu_before.s3) / 1000.0)).unwrap_or_default()
    );
    {
        let (mut request, mut finish) = std::mem::take(&mut *waits.lock().unwrap());
        let p50 = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        println!(
            "dispatch: a runner's wait, p50: request → job {:.2} ms, finish (with its log) {:.2} ms",
            p50(&mut request),
            p50(&mut finish),
        );
    }
    if pg_pid.is_some() {
        // Where the CPU of the measured part went (the pipeline's creation apart: webhook, plan,
        // 1,000 job rows). Two cores give 2,000 ms of CPU a second: 4 ms per job at 500 jobs/s.
        let d = cpu_after.minus(cpu_first);
        let total = d.server + d.s3 + d.pg + d.own;
        let created = cpu_first.minus(cpu_before);
        println!(
            "dispatch: CPU per job from the first job handed out to the last: server {:.2} ms,{} PostgreSQL {:.2} ms, the bench's runners {:.2} ms: {:.2} ms in all, at most {:.0} jobs/s on 2 cores (before it, the pipeline's creation: {:.2} ms per job)",
            d.server / 1000.0,
            s3_pid.map(|_| format!(" S3 server {:.2} ms,", d.s3 / 1000.0)).unwrap_or_default(),
            d.pg / 1000.0,
            d.own / 1000.0,
            total / 1000.0,
            2_000_000.0 / total,
            (created.server + created.s3 + created.pg + created.own) / 1000.0,
        );
    }

    if only("dispatch") {
        return;
    }

    // 2. Webhook → first job handed out.
    let before = webhook_latency(&client, &base, &tokens[0], &work, &sha).await;

    // 3. 1 GiB of log through one job.
    git(&work, &["commit", "-q", "--allow-empty", "-m", "log"]);
    git(&work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
    let after = git(&work, &["rev-parse", "HEAD"]);
    send_hook(hook("main", &before, &after), "log-1".into()).await;
    let job: JobPayload = loop {
        let r = client
            .post(format!("{base}{}", scheduler::protocol::paths::REQUEST_JOB))
            .bearer_auth(&tokens[1])
            .json(&JobRequestBody { free_slots: 1 })
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.json().await.unwrap();
        }
    };
    let rss_before = vm(pid, "VmRSS:");
    let lines = ("x".repeat(99) + "\n").repeat(10_486).into_bytes();
    let chunk = &lines[..1 << 20];
    let start = Instant::now();
    let mut offset = 0u64;
    while offset < 1 << 30 {
        let r = client
            .put(format!("{base}{}", scheduler::protocol::paths::log(job.job_id, offset)))
            .bearer_auth(&job.token)
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
        offset += chunk.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let hwm = vm(pid, "VmHWM:");
    println!(
        "log ingestion: 1 GiB in 1 MiB chunks at {:.0} MB/s; server RSS {} MiB before, peak {} MiB over the whole run",
        (1u64 << 30) as f64 / 1e6 / secs,
        rss_before / 1024,
        hwm / 1024
    );

    // 3b. The job page of that 1 GiB log: the tail renders first (time to the whole HTML).
    let mut page_ms = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let page = client.get(format!("{base}/jobs/{}", job.job_id)).send().await.unwrap().text().await.unwrap();
        page_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(page.contains("class=\"line\""), "the page shows log lines");
    }
    page_ms.sort_by(|a, b| a.total_cmp(b));
    println!("job page of a 1 GiB log (tail rendered first, line numbers counted): median {:.0} ms", page_ms[2]);
    // First screen in a real browser: headless chromium's screenshot of the job page, against
    // the same for a near-empty page (browser start-up cancels out).
    let shot = |url: String| {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let ok = Command::new("chromium")
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"])
            .arg(format!("--user-data-dir={}", dir.path().display()))
            .arg(format!("--screenshot={}", dir.path().join("s.png").display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| t.elapsed().as_secs_f64() * 1000.0)
    };
    let mut big = Vec::new();
    let mut small = Vec::new();
    for _ in 0..3 {
        small.extend(shot(format!("{base}/healthz")));
        big.extend(shot(format!("{base}/jobs/{}", job.job_id)));
    }
    big.sort_by(|a, b| a.total_cmp(b));
    small.sort_by(|a, b| a.total_cmp(b));
    if let (Some(b), Some(s)) = (big.get(big.len() / 2), small.get(small.len() / 2)) {
        println!("first screen of that job page in headless chromium: {:.0} ms, {:.0} ms more than an empty page", b, b - s);
    } else {
        println!("first screen in a browser: chromium not available");
    }

    // 4. A line printed by a job, through a real runner (its batching included), to a follower
    //    of the live stream: the job prints its clock, the follower compares with its own.
    let rdir = tempfile::tempdir().unwrap();
    let rconf = rdir.path().join("runner.toml");
    let reg = Command::new(env!("CARGO_BIN_EXE_piste"))
        .args(["runner", "register", "--url", &base, "--token", REG, "--name", "latency", "--config"])
        .arg(&rconf)
        .output()
        .unwrap();
    assert!(reg.status.success(), "{}", String::from_utf8_lossy(&reg.stderr));
    let _runner = Kill(
        Command::new(env!("CARGO_BIN_EXE_piste"))
            .args(["runner", "run", "--executor", "shell", "--config"])
            .arg(&rconf)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::fs::write(
        work.join(".gitlab-ci.yml"),
        "clock:\n  script:\n    - for i in $(seq 1 100); do echo \"at $(date +%s%N)\"; sleep 0.03; done\n",
    )
    .unwrap();
    git(&work, &["commit", "-q", "-am", "latency"]);
    git(&work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
    let before2 = after.clone();
    let after2 = git(&work, &["rev-parse", "HEAD"]);
    let r = send_hook(hook("main", &before2, &after2), "lat-log".into()).await;
    let pipeline: serde_json::Value = r.json().await.unwrap();
    let pid_ = pipeline["pipeline"].as_i64().unwrap();
    let job_id = first_job(&client, &base, pid_, Duration::from_millis(20)).await;
    let mut delays = Vec::new();
    follow_log(&client, &base, job_id, |text| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
        for line in text.lines() {
            if let Some(ns) = line.strip_prefix("at ").and_then(|t| t.trim().parse::<i128>().ok()) {
                delays.push(((now - ns) as f64 / 1e6).max(0.0));
            }
        }
        false
    })
    .await;
    delays.sort_by(|a, b| a.total_cmp(b));
    if delays.is_empty() {
        println!("log latency: no line received");
    } else {
        let q = |x: f64| delays[((delays.len() as f64 - 1.0) * x).round() as usize];
        println!(
            "log latency, job write → live follower (real runner, {} lines): p50 {:.0} ms, p99 {:.0} ms (target p99 < 250 ms)",
            delays.len(),
            q(0.5),
            q(0.99)
        );
    }
    drop(server);
}

/// The id of pipeline `pipeline`'s first job, once it has one (asked every `poll`).
async fn first_job(client: &reqwest::Client, base: &str, pipeline: i64, poll: Duration) -> i64 {
    loop {
        let p: serde_json::Value = client.get(format!("{base}/api/v1/pipelines/{pipeline}")).send().await.unwrap().json().await.unwrap();
        if let Some(id) = p["jobs"][0]["id"].as_i64() {
            return id;
        }
        tokio::time::sleep(poll).await;
    }
}

/// Follows job `job`'s live log (`/log/stream`, server-sent events): `each` is given the text
/// of every event as it arrives; it stops at the log's end, or when `each` returns `true`.
async fn follow_log(client: &reqwest::Client, base: &str, job: i64, mut each: impl FnMut(&str) -> bool) {
    let mut stream = client.get(format!("{base}/api/v1/jobs/{job}/log/stream")).send().await.unwrap().bytes_stream();
    let mut pending = String::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        pending.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            if block.contains("event: end") {
                return;
            }
            let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
            let text = serde_json::from_str::<serde_json::Value>(&data).ok().and_then(|v| v["text"].as_str().map(str::to_owned));
            if text.is_some_and(|t| each(&t)) {
                return;
            }
        }
    }
}

/// Sends a signed GitLab push hook.
/// Webhook → first job handed out (2.): the mirror is warm; each push is a new 1-job pipeline,
/// on a repository with hundreds of commits (the fetch's negotiation sees them all). Returns
/// the last commit pushed.
async fn webhook_latency(client: &reqwest::Client, base: &str, token: &str, work: &Path, sha: &str) -> String {
    std::fs::write(work.join(".gitlab-ci.yml"), "one:\n  script: [\"true\"]\n").unwrap();
    git(work, &["commit", "-qam", "history"]);
    for i in 0..300 {
        git(work, &["commit", "-q", "--allow-empty", "-m", &format!("history {i}")]);
    }
    git(work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
    let history = git(work, &["rev-parse", "HEAD"]);
    // The mirror fetches the history once, with a pipeline whose job is run here first.
    assert!(send_hook(client, base, hook("main", sha, &history), "history".into()).await.status().is_success());
    loop {
        let r = client
            .post(format!("{base}{}", scheduler::protocol::paths::REQUEST_JOB))
            .bearer_auth(token)
            .json(&JobRequestBody { free_slots: 1 })
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            run_trivially(client, base, &r.json::<JobPayload>().await.unwrap()).await;
            break;
        }
    }
    let mut latencies = Vec::new();
    let mut before = history.clone();
    for i in 0..30 {
        git(work, &["commit", "-q", "--allow-empty", "-am", &format!("push {i}")]);
        git(work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
        let after = git(work, &["rev-parse", "HEAD"]);
        let (client2, base2, token) = (client.clone(), base.to_string(), token.to_string());
        let poll = tokio::spawn(async move {
            loop {
                let r = client2
                    .post(format!("{base2}{}", scheduler::protocol::paths::REQUEST_JOB))
                    .bearer_auth(&token)
                    .json(&JobRequestBody { free_slots: 1 })
                    .send()
                    .await
                    .unwrap();
                if r.status() == 200 {
                    let at = Instant::now();
                    return (at, r.json::<JobPayload>().await.unwrap());
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = Instant::now();
        send_hook(client, base, hook("main", &before, &after), format!("lat-{i}")).await;
        let (got, job) = poll.await.unwrap();
        latencies.push(got.duration_since(sent));
        client
            .post(format!("{base}{}", scheduler::protocol::paths::finish(job.job_id)))
            .bearer_auth(&job.token)
            .json(&FinishRequest {
                outcome: Outcome::Success,
                exit_code: Some(0),
                reason: None,
                log_bytes: 0,
                log: None,
                dotenv: Vec::new(),
                coverage: None,
            })
            .send()
            .await
            .unwrap();
        before = after;
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "webhook → first job handed to a runner, 300+ commits of history: p50 {:.1} ms, p99 {:.1} ms (target p50 < 30 ms; includes the incremental fetch)",
        p(0.5),
        p(0.99)
    );

    before
}

async fn send_hook(client: &reqwest::Client, base: &str, body: Vec<u8>, delivery: String) -> reqwest::Response {
    client
        .post(format!("{base}/api/v1/webhooks/app"))
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", SECRET)
        .header("X-Gitlab-Event-UUID", delivery)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A `piste serve` of the project `app` at `git://127.0.0.1:<gport>/app.git`, with its config
/// `<root>/<name>.toml` and data under `<root>/<name>-data`; `PISTE_BENCH_STORAGE=s3://BUCKET/PREFIX`
/// (with the `AWS_*` environment) puts logs and artifacts in object storage. Answers the server
/// and its base URL once it listens.
fn start_server(root: &Path, name: &str, gport: u16, poll_ms: u64) -> (Kill, String) {
    let sport = port();
    let config = root.join(format!("{name}.toml"));
    let mut storage = std::env::var("PISTE_BENCH_STORAGE").map(|s| format!("storage = \"{s}\"\n")).unwrap_or_default();
    if let Ok(url) = std::env::var("PISTE_BENCH_DATABASE") {
        storage.push_str(&format!("database = \"{}\"\n", fresh_database(&url, name)));
    }
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{sport}\"\ndata_dir = \"{}\"\nrunner_registration_token = \"{REG}\"\npoll_ms = {poll_ms}\n{storage}[[project]]\nname = \"app\"\nrepo = \"git://127.0.0.1:{gport}/app.git\"\nwebhook_secret = \"{SECRET}\"\nvisibility = \"public\"\n",
            root.join(format!("{name}-data")).display()
        ),
    )
    .unwrap();
    // `PISTE_BENCH_VERBOSE=1` shows the server's log.
    let stderr = if std::env::var_os("PISTE_BENCH_VERBOSE").is_some() { Stdio::inherit() } else { Stdio::null() };
    let server = Kill(Command::new(env!("CARGO_BIN_EXE_piste")).args(["serve", "--config"]).arg(&config).stderr(stderr).spawn().unwrap());
    wait(sport);
    (server, format!("http://127.0.0.1:{sport}"))
}

/// `PISTE_BENCH_DATABASE=postgres://USER@HOST:PORT/DB`: each server gets a database of its own,
/// created empty (dropped first if a previous run left it), named after the server.
fn fresh_database(url: &str, name: &str) -> String {
    let db = format!("piste_bench_{name}");
    for sql in [format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"), format!("CREATE DATABASE {db}")] {
        let out = Command::new("psql")
            .arg(url)
            .args(["-v", "ON_ERROR_STOP=1", "-qAtc", &sql])
            .output()
            .expect("psql (Debian's postgresql-client)");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (base, rest) = url.rsplit_once('/').expect("PISTE_BENCH_DATABASE: postgres://USER@HOST:PORT/DB");
    let query = rest.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    format!("{base}/{db}{query}")
}

/// Write transactions so far in the cluster (PostgreSQL only): each takes a transaction id, and
/// each commit waits for its WAL flush. The bench's own query takes one too.
fn pg_commits() -> Option<i64> {
    let url = std::env::var("PISTE_BENCH_DATABASE").ok()?;
    let out = Command::new("psql").arg(&url).args(["-qAtc", "SELECT txid_current()"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Memory (5.): a fresh server runs 1,000 three-job pipelines (webhook, plan, 4 protocol
/// runners: request, a log chunk, finish); its RSS after the first 100 and after all 1,000.
async fn rss_after_finished_pipelines(root: &Path, gport: u16, sha: &str) {
    let (server, base) = start_server(root, "rss", gport, 1000);
    let pid = server.0.id();
    let client = reqwest::Client::new();
    let done = Arc::new(AtomicUsize::new(0));
    let mut runners = Vec::new();
    for i in 0..4 {
        let r: RegisterResponse = client
            .post(format!("{base}{}", scheduler::protocol::paths::REGISTER))
            .json(&RegisterRequest { registration_token: REG.into(), name: format!("rss-{i}"), tags: vec![], ..Default::default() })
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (client, base, done) = (client.clone(), base.clone(), done.clone());
        runners.push(tokio::spawn(async move {
            loop {
                let r = client
                    .post(format!("{base}{}", scheduler::protocol::paths::REQUEST_JOB))
                    .bearer_auth(&r.token)
                    .json(&JobRequestBody { free_slots: 1 })
                    .send()
                    .await
                    .unwrap();
                if r.status() != 200 {
                    continue;
                }
                let job: JobPayload = r.json().await.unwrap();
                run_trivially(&client, &base, &job).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut sent = 0;
    let mut rss = Vec::new();
    let start = Instant::now();
    // `PISTE_BENCH_RSS_POINTS=100,1000,3000` adds measurement points (to tell a cache that fills
    // from memory that grows with every pipeline).
    let points: Vec<usize> = std::env::var("PISTE_BENCH_RSS_POINTS")
        .ok()
        .map(|v| v.split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .filter(|p: &Vec<usize>| p.len() >= 2)
        .unwrap_or_else(|| vec![100, 1000]);
    for &target in &points {
        while sent < target {
            let batch = (sent..(sent + 10).min(target))
                .map(|i| send_hook(&client, &base, hook("small", &"0".repeat(40), sha), format!("rss-{i}")))
                .collect::<Vec<_>>();
            sent += batch.len();
            for r in futures_util::future::join_all(batch).await {
                assert_eq!(r.status(), 201, "a new pipeline per delivery");
            }
        }
        // Every job finished: the runner's finish is answered after the pipeline's transition
        // is stored, and the pipeline finishes with its last job.
        while done.load(Ordering::Relaxed) < target * 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rss.push(vm(pid, "VmRSS:"));
        if std::env::var_os("PISTE_BENCH_SMAPS").is_some() {
            let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
            let held: Vec<&str> = metrics.lines().filter(|l| l.starts_with("piste_in_memory{")).collect();
            eprintln!("  after {target} pipelines: RSS {} KiB, {} threads, {held:?}", vm(pid, "VmRSS:"), vm(pid, "Threads:"));
        }
        // Where the memory is (`PISTE_BENCH_SMAPS=PREFIX`): the process's mappings at each point,
        // to compare which ones grew (allocator arenas, SQLite's, the binary's).
        if let Ok(prefix) = std::env::var("PISTE_BENCH_SMAPS") {
            let _ = std::fs::copy(format!("/proc/{pid}/smaps"), format!("{prefix}.{target}"));
        }
    }
    for r in runners {
        r.abort();
    }
    let finished: Vec<serde_json::Value> =
        client.get(format!("{base}/api/v1/pipelines?limit=500")).send().await.unwrap().json().await.unwrap();
    assert!(finished.iter().all(|p| p["status"] == "success"), "every pipeline succeeded");
    println!(
        "memory: server RSS {:.1} MiB after {} finished pipelines, {:.1} MiB after {} ({:+.1}%, target within 10%); {} jobs in {:.1} s",
        rss[0] as f64 / 1024.0,
        points[0],
        rss[1] as f64 / 1024.0,
        points[1],
        (rss[1] as f64 / rss[0] as f64 - 1.0) * 100.0,
        points.last().unwrap_or(&0) * 3,
        start.elapsed().as_secs_f64()
    );
    for (p, r) in points.iter().zip(&rss).skip(2) {
        println!(
            "memory: server RSS {:.1} MiB after {p} finished pipelines ({:+.1}% from {})",
            *r as f64 / 1024.0,
            (*r as f64 / rss[0] as f64 - 1.0) * 100.0,
            points[0]
        );
    }
    drop(server);
}

/// CPU time (user + system) of the children a process has waited for, in milliseconds
/// (cutime 16, cstime 17).
fn children_cpu_ms(pid: u32) -> f64 {
    stat_ms(pid, 16, 17)
}

/// CPU used so far (ms) by the server, the S3 server, PostgreSQL (postmaster and backends) and
/// this bench process (its protocol runners).
#[derive(Clone, Copy)]
struct Cpu {
    server: f64,
    s3: f64,
    pg: f64,
    own: f64,
}

impl Cpu {
    fn now(server: u32, s3: Option<u32>, pg: Option<u32>) -> Cpu {
        Cpu { server: cpu_ms(server), s3: s3.map_or(0.0, cpu_ms), pg: pg.map_or(0.0, tree_cpu_ms), own: cpu_ms(std::process::id()) }
    }

    fn minus(self, before: Cpu) -> Cpu {
        Cpu { server: self.server - before.server, s3: self.s3 - before.s3, pg: self.pg - before.pg, own: self.own - before.own }
    }
}

/// CPU time of a process, of its live children and of the children it has waited for (a
/// PostgreSQL cluster: the postmaster and its backends, which come and go with connections).
fn tree_cpu_ms(pid: u32) -> f64 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    cpu_ms(pid) + children_cpu_ms(pid) + children.split_whitespace().filter_map(|c| c.parse().ok()).map(cpu_ms).sum::<f64>()
}

/// Real runners (6.): 4 `piste runner` processes, shell executor, 4 slots each, drain one
/// pipeline of 500 trivial jobs (checkout from the server over smart HTTP, the script, log,
/// finish). Throughput from the webhook to the pipeline's success; CPU per job of the server
/// and of the runner processes (the jobs' own shells are their children, counted apart).
async fn real_runners(root: &Path, work: &Path, gport: u16) {
    const JOBS: usize = 500;
    let mut yml = String::new();
    for i in 0..JOBS {
        yml.push_str(&format!("r{i}:\n  script: [\"true\"]\n"));
    }
    git(work, &["checkout", "-q", "-b", "runners"]);
    std::fs::write(work.join(".gitlab-ci.yml"), &yml).unwrap();
    git(work, &["commit", "-qam", "runners"]);
    git(work, &["push", "-q", "origin", "HEAD:refs/heads/runners"]);
    let sha = git(work, &["rev-parse", "HEAD"]);
    git(work, &["checkout", "-q", "main"]);

    let (server, base) = start_server(root, "runners", gport, 5000);
    let pid = server.0.id();
    let client = reqwest::Client::new();
    let mut runners = Vec::new();
    for i in 0..4 {
        let conf = root.join(format!("runner-{i}.toml"));
        let reg = Command::new(env!("CARGO_BIN_EXE_piste"))
            .args(["runner", "register", "--url", &base, "--token", REG, "--name", &format!("real-{i}"), "--config"])
            .arg(&conf)
            .output()
            .unwrap();
        assert!(reg.status.success(), "{}", String::from_utf8_lossy(&reg.stderr));
        runners.push(Kill(
            Command::new(env!("CARGO_BIN_EXE_piste"))
                .args(["runner", "run", "--executor", "shell", "--concurrency", "4", "--work-dir"])
                .arg(root.join(format!("runner-{i}-work")))
                .arg("--config")
                .arg(&conf)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
    }
    // Warm each runner's repository cache with one small pipeline first (its first checkout is
    // a clone), so the measured run sees the steady state.
    let warm = send_hook(&client, &base, hook("runners", &"0".repeat(40), &sha), "warm".into()).await;
    let warm_id = warm.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    wait_pipeline(&client, &base, warm_id).await;

    let runner_pids: Vec<u32> = runners.iter().map(|r| r.0.id()).collect();
    let cpu = |pids: &[u32]| pids.iter().map(|&p| cpu_ms(p)).sum::<f64>();
    let children = |pids: &[u32]| pids.iter().map(|&p| children_cpu_ms(p)).sum::<f64>();
    // `PISTE_BENCH_PERF=FILE`: `perf record` of the server during the measured run, to FILE,
    // and of the runners to FILE.runners.
    let runner_list = runner_pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let perf: Vec<_> = std::env::var("PISTE_BENCH_PERF")
        .ok()
        .map(|out| {
            [(out.clone(), pid.to_string()), (format!("{out}.runners"), runner_list.clone())]
                .into_iter()
                .map(|(file, pids)| {
                    Command::new("perf")
                        .args(["record", "-F", "4999", "-g", "-o", &file, "-p", &pids])
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect()
        })
        .unwrap_or_default();
    let (server_before, runners_before, jobs_before) = (cpu_ms(pid), cpu(&runner_pids), children(&runner_pids));
    let start = Instant::now();
    let r = send_hook(&client, &base, hook("runners", &"0".repeat(40), &sha), "measured".into()).await;
    let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    wait_pipeline(&client, &base, id).await;
    let elapsed = start.elapsed();
    wait_sealed(&client, &base).await;
    let server_cpu = cpu_ms(pid) - server_before;
    let runner_cpu = cpu(&runner_pids) - runners_before;
    let jobs_cpu = children(&runner_pids) - jobs_before;
    for mut perf in perf {
        let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
        let _ = perf.wait();
    }
    println!(
        "real runners: {JOBS} jobs through 4 `piste runner` × 4 slots (shell) in {} ms: {:.0} jobs/s (target >= 500); \
         CPU per job: server {:.2} ms (target <= 1.0), runners {:.2} ms (target <= 1.5), the jobs' shells {:.2} ms",
        elapsed.as_millis(),
        JOBS as f64 / elapsed.as_secs_f64(),
        server_cpu / JOBS as f64,
        runner_cpu / JOBS as f64,
        jobs_cpu / JOBS as f64,
    );
    drop(runners);
    drop(server);
}

/// Waits until pipeline `id` succeeds (panics if it ends otherwise).
async fn wait_pipeline(client: &reqwest::Client, base: &str, id: i64) {
    loop {
        let p: serde_json::Value = client.get(format!("{base}/api/v1/pipelines/{id}")).send().await.unwrap().json().await.unwrap();
        match p["status"].as_str() {
            Some("success") => return,
            Some("failed" | "canceled") => panic!("pipeline {id} ended {}: {p:#}", p["status"]),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// First script line (7.): one real `piste runner` (shell executor, one slot, its repository
/// cache warm), then `PUSHES` pushes one after another, each a new one-job pipeline whose script
/// echoes a marker; for each, the time from sending the webhook to the marker's line in the
/// job's live log (`/log/stream`, which wakes its followers as soon as a chunk is stored). Also
/// when the webhook was answered and when the job's id was first seen (the pipeline planned),
/// to tell where the time goes.
async fn first_script_line(root: &Path, work: &Path, gport: u16) {
    const PUSHES: usize = 30;
    git(work, &["checkout", "-q", "-b", "first-line"]);
    // The marker is computed by the shell, so the echoed command (`$ echo ...`) does not hold it.
    std::fs::write(work.join(".gitlab-ci.yml"), "line:\n  script: [\"echo first-line-$((40 + 2))\"]\n").unwrap();
    git(work, &["commit", "-qam", "first line"]);
    git(work, &["push", "-q", "origin", "HEAD:refs/heads/first-line"]);
    let mut before = git(work, &["rev-parse", "HEAD"]);

    let (server, base) = start_server(root, "first-line", gport, 5000);
    let client = reqwest::Client::new();
    let conf = root.join("first-line-runner.toml");
    let reg = Command::new(env!("CARGO_BIN_EXE_piste"))
        .args(["runner", "register", "--url", &base, "--token", REG, "--name", "first-line", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(reg.status.success(), "{}", String::from_utf8_lossy(&reg.stderr));
    let stderr = if std::env::var_os("PISTE_BENCH_VERBOSE").is_some() { Stdio::inherit() } else { Stdio::null() };
    let runner = Kill(
        Command::new(env!("CARGO_BIN_EXE_piste"))
            .args(["runner", "run", "--executor", "shell", "--concurrency", "1", "--work-dir"])
            .arg(root.join("first-line-work"))
            .arg("--config")
            .arg(&conf)
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    // The runner's first checkout is a clone: one pipeline first, not measured.
    let warm = send_hook(&client, &base, hook("first-line", &"0".repeat(40), &before), "first-warm".into()).await;
    let warm_id = warm.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().unwrap();
    wait_pipeline(&client, &base, warm_id).await;

    let (mut total, mut planned, mut hook_ms) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..PUSHES {
        git(work, &["commit", "-q", "--allow-empty", "-m", &format!("first line {i}")]);
        git(work, &["push", "-q", "origin", "HEAD:refs/heads/first-line"]);
        let after = git(work, &["rev-parse", "HEAD"]);
        let start = Instant::now();
        let r = send_hook(&client, &base, hook("first-line", &before, &after), format!("first-{i}")).await;
        hook_ms.push(start.elapsed());
        let id = r.json::<serde_json::Value>().await.unwrap()["pipeline"].as_i64().expect("a new pipeline");
        let job = first_job(&client, &base, id, Duration::from_millis(1)).await;
        planned.push(start.elapsed());
        let mut seen = None;
        follow_log(&client, &base, job, |text| {
            let found = text.lines().any(|l| l.trim_end() == "first-line-42");
            if found {
                seen = Some(start.elapsed());
            }
            found
        })
        .await;
        total.push(seen.unwrap_or_else(|| panic!("job {job}: the marker never reached the live log")));
        wait_pipeline(&client, &base, id).await;
        before = after;
    }
    let q = |v: &mut Vec<Duration>, x: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * x).round() as usize].as_secs_f64() * 1000.0
    };
    println!(
        "first script line: webhook sent → the marker in the job's live log, {PUSHES} one-job pipelines through one real runner: \
         p50 {:.0} ms, p99 {:.0} ms (target p50 < 150 ms); of which webhook answered p50 {:.1} ms, job visible p50 {:.1} ms",
        q(&mut total, 0.5),
        q(&mut total, 0.99),
        q(&mut hook_ms, 0.5),
        q(&mut planned, 0.5),
    );
    drop(runner);
    drop(server);
}
