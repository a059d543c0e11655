//! Processes and repositories for the server tests. Everything listens on 127.0.0.1 and is
//! killed when its handle drops.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

pub const SECRET: &str = "webhook-secret-for-tests";
/// The user every test server makes an admin; [`Server::token`] is theirs.
pub const ADMIN: &str = "tester";
pub const REGISTRATION: &str = "registration-token-for-tests";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.test", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `git-daemon` itself, not `git daemon`: `git` runs the daemon as a child process, so killing
/// `git` would leave the daemon running after the test.
pub fn git_daemon_program() -> std::path::PathBuf {
    let out = std::process::Command::new("git").arg("--exec-path").output().expect("git (Debian's git package)");
    std::path::Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("git-daemon")
}

/// A forge: a bare repository served by `git daemon`, and a work tree that pushes to it.
pub struct Forge {
    pub dir: tempfile::TempDir,
    pub url: String,
    daemon: Child,
}

impl Forge {
    pub fn new(pipeline: &str) -> Forge {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("repos/app.git");
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare"]);
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        std::fs::write(work.join(".gitlab-ci.yml"), pipeline).unwrap();
        let port = free_port();
        let daemon = Command::new(git_daemon_program())
            .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1", &format!("--port={port}")])
            .arg(format!("--base-path={}", dir.path().join("repos").display()))
            .arg(dir.path().join("repos"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon (Debian's git package)");
        wait_port(port);
        Forge { dir, url: format!("git://127.0.0.1:{port}/app.git"), daemon }
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Commits everything and pushes `branch`; returns (before, after) shas.
    pub fn push(&self, branch: &str, message: &str) -> (String, String) {
        let w = self.work();
        let before = Command::new("git")
            .args(["rev-parse", "-q", "--verify", &format!("origin/{branch}")])
            .current_dir(&w)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(|| "0".repeat(40), |o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if git(&w, &["symbolic-ref", "--short", "HEAD"]) != branch {
            let _ = Command::new("git").args(["checkout", "-q", "-B", branch]).current_dir(&w).status();
        }
        git(&w, &["add", "-A"]);
        git(&w, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&w, &["push", "-q", "origin", &format!("HEAD:refs/heads/{branch}")]);
        git(&w, &["fetch", "-q", "origin"]);
        (before, git(&w, &["rev-parse", "HEAD"]))
    }
}

impl Drop for Forge {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// A `piste serve` process with its own data directory.
pub struct Server {
    pub port: u16,
    pub url: String,
    /// Its data directory.
    pub data: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
    /// A personal access token of [`ADMIN`] (an admin: maintainer of every project).
    pub token: String,
}

impl Server {
    pub fn start(forge: &Forge, lease_ms: u64, extra: &str) -> Server {
        Server::start_in(forge, lease_ms, extra, None)
    }

    /// A server whose data directory is `data` (shared by several servers) when given.
    pub fn start_in(forge: &Forge, lease_ms: u64, extra: &str, data: Option<&Path>) -> Server {
        Server::start_with_env(forge, lease_ms, extra, data, Vec::new())
    }

    /// A server with more environment (e.g. `AWS_*` for object storage).
    pub fn start_with_env(forge: &Forge, lease_ms: u64, extra: &str, data: Option<&Path>, env: Vec<(String, String)>) -> Server {
        Server::start_full(forge, lease_ms, extra, "", data, env)
    }

    /// A server whose project `app` has more keys (`project_extra`: `members`, `visibility`…).
    /// In `extra`, `{PORT}` is the server's port (for `external_url`).
    pub fn start_full(
        forge: &Forge,
        lease_ms: u64,
        extra: &str,
        project_extra: &str,
        data: Option<&Path>,
        env: Vec<(String, String)>,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let data = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        let config = dir.path().join("piste.toml");
        let extra = extra.replace("{PORT}", &port.to_string());
        // The project's secrets, unless `project_extra` names its own.
        let secrets = if project_extra.lines().any(|l| l.starts_with("secrets")) {
            ""
        } else {
            "secrets = { DEPLOY_TOKEN = \"tok-123456-secret\" }\n"
        };
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nrunner_registration_token = \"{REGISTRATION}\"\nlease_ms = {lease_ms}\npoll_ms = 2000\nadmins = [\"{ADMIN}\"]\n{extra}\n[[project]]\nname = \"app\"\nrepo = \"{}\"\nwebhook_secret = \"{SECRET}\"\n{secrets}{project_extra}\n",
                data.display(),
                forge.url
            ),
        )
        .unwrap();
        let mut s =
            Server { port, url: format!("http://127.0.0.1:{port}"), data, config, env, child: None, _dir: Some(dir), token: String::new() };
        s.spawn();
        s.token = s.create_token(ADMIN, &[]);
        s
    }

    /// `piste token create` for `user`, with more arguments (`--expires 1`); the token.
    pub fn create_token(&self, user: &str, more: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_piste"))
            .args(["token", "create", "--config"])
            .arg(&self.config)
            .args(["--user", user])
            .args(more)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(out.status.success(), "piste token create: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `piste token ARGS…` with this server's configuration: (success, stdout, stderr).
    pub fn token_command(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_piste"))
            .args(["token", args[0], "--config"])
            .arg(&self.config)
            .args(&args[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    pub fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_piste"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("PISTE_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(self.config.with_extension("log")).unwrap()))
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_port(self.port);
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A registered `piste runner run` process (shell executor by default).
pub struct RunnerProc {
    dir: tempfile::TempDir,
    executor: String,
    child: Option<Child>,
}

impl RunnerProc {
    pub fn start(server: &Server, name: &str, executor: &str) -> RunnerProc {
        RunnerProc::start_with(server, name, executor, &[])
    }

    /// A runner registered with more options (`--tags`, `--run-untagged`, `--protected`, `--projects`).
    pub fn start_with(server: &Server, name: &str, executor: &str, options: &[&str]) -> RunnerProc {
        RunnerProc::start_at(&server.url, name, executor, options)
    }

    /// A runner whose `runner.toml` gets `lines` appended after registration (settings such as
    /// `log_interval_ms = 60000`).
    pub fn start_configured(server: &Server, name: &str, executor: &str, lines: &str) -> RunnerProc {
        let mut r = RunnerProc::registered(&server.url, name, executor, &[]);
        let config = r.dir.path().join("runner.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(lines);
        std::fs::write(&config, text).unwrap();
        r.spawn();
        r
    }

    /// A runner of the server at `url` (e.g. behind a TLS proxy), registered with `options`.
    pub fn start_at(url: &str, name: &str, executor: &str, options: &[&str]) -> RunnerProc {
        let mut r = RunnerProc::registered(url, name, executor, options);
        r.spawn();
        r
    }

    /// Registered, not started.
    fn registered(url: &str, name: &str, executor: &str, options: &[&str]) -> RunnerProc {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("runner.toml");
        let out = Command::new(env!("CARGO_BIN_EXE_piste"))
            .args(["runner", "register", "--url", url, "--token", REGISTRATION, "--name", name])
            .args(options)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "register: {}", String::from_utf8_lossy(&out.stderr));
        RunnerProc { dir, executor: executor.to_owned(), child: None }
    }

    /// Starts (again) the runner process with the same configuration and work directory.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("runner.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_piste"))
            .args(["runner", "run", "--executor", &self.executor, "--config"])
            .arg(self.dir.path().join("runner.toml"))
            .env("PISTE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("runner.log")).unwrap_or_default()
    }

    /// SIGKILL: the runner gets no chance to stop its jobs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RunnerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A GitLab "Push Hook" body for `branch` going from `before` to `after`, shaped like GitLab's
/// documented example (fixtures/webhooks).
pub fn gitlab_push(branch: &str, before: &str, after: &str, message: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(fixture("gitlab/push.json")).unwrap()).unwrap();
    v["ref"] = Value::String(format!("refs/heads/{branch}"));
    v["before"] = Value::String(before.into());
    v["after"] = Value::String(after.into());
    v["checkout_sha"] = Value::String(after.into());
    if let Some(commits) = v["commits"].as_array_mut() {
        commits.truncate(1);
        if let Some(c) = commits.first_mut() {
            c["id"] = Value::String(after.into());
            c["message"] = Value::String(message.into());
            c["title"] = Value::String(message.into());
        }
    }
    serde_json::to_vec(&v).unwrap()
}

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/webhooks").join(rel)
}

/// A GitHub `push` body, shaped like GitHub's documented example.
pub fn github_push(branch: &str, before: &str, after: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(fixture("github/push.json")).unwrap()).unwrap();
    v["ref"] = Value::String(format!("refs/heads/{branch}"));
    v["before"] = Value::String(before.into());
    v["after"] = Value::String(after.into());
    if let Some(h) = v.get_mut("head_commit").filter(|h| h.is_object()) {
        h["id"] = Value::String(after.into());
    }
    serde_json::to_vec(&v).unwrap()
}

pub fn github_signature(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct Http {
    pub client: reqwest::Client,
    pub base: String,
}

impl Http {
    /// A client of the admin user (its token on every request).
    pub fn new(server: &Server) -> Http {
        Http::with_token(server, Some(&server.token))
    }

    /// A client sending no credentials.
    pub fn anonymous(server: &Server) -> Http {
        Http::with_token(server, None)
    }

    pub fn with_token(server: &Server, token: Option<&str>) -> Http {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .unwrap();
        Http { client, base: server.url.clone() }
    }

    pub async fn gitlab_hook(&self, body: Vec<u8>, token: Option<&str>, delivery: &str) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/api/v1/webhooks/app", self.base))
            .header("Content-Type", "application/json")
            .header("X-Gitlab-Event", "Push Hook")
            .header("X-Gitlab-Event-UUID", delivery);
        if let Some(t) = token {
            req = req.header("X-Gitlab-Token", t);
        }
        req.body(body).send().await.unwrap()
    }

    pub async fn pipelines(&self) -> Vec<Value> {
        self.client.get(format!("{}/api/v1/pipelines", self.base)).send().await.unwrap().json().await.unwrap()
    }

    pub async fn log(&self, job: i64) -> String {
        self.client.get(format!("{}/api/v1/jobs/{job}/log", self.base)).send().await.unwrap().text().await.unwrap()
    }

    /// Waits until the pipeline's status is one of `want` (or fails after `secs`).
    pub async fn wait_status(&self, id: i64, want: &[&str], secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(r) = self.client.get(format!("{}/api/v1/pipelines/{id}", self.base)).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if want.iter().any(|w| v["status"] == *w) {
                        return v;
                    }
                    last = v;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("pipeline {id} did not reach {want:?} in {secs}s; last: {last:#}");
    }

    pub async fn wait_job_status(&self, pipeline: i64, job: &str, want: &[&str], secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(r) = self.client.get(format!("{}/api/v1/pipelines/{pipeline}", self.base)).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if let Some(j) = v["jobs"].as_array().and_then(|js| js.iter().find(|j| j["name"] == job)) {
                        if want.iter().any(|w| j["status"] == *w) {
                            return j.clone();
                        }
                    }
                    last = v;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job {job} of pipeline {pipeline} did not reach {want:?} in {secs}s; last: {last:#}");
    }
}

pub fn job_id(pipeline: &Value, name: &str) -> i64 {
    pipeline["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).unwrap()["id"].as_i64().unwrap()
}

/// A fresh database on the test PostgreSQL cluster (the store tests' `pg-cluster.sh`), or on
/// `PISTE_TEST_POSTGRES_URL`. Fails loudly when PostgreSQL is not installed.
pub fn postgres_database() -> String {
    let base = match std::env::var("PISTE_TEST_POSTGRES_URL") {
        Ok(url) => url,
        Err(_) => {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("server/tests/store/pg-cluster.sh");
            let out = Command::new("sh").arg(script).arg("start").output().expect("sh");
            assert!(out.status.success(), "PostgreSQL for the tests: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or_default().to_string()
        }
    };
    let name = format!("e2e_{}_{}", std::process::id(), free_port());
    let out =
        Command::new("psql").args([&base, "-q", "-c", &format!("CREATE DATABASE {name}")]).output().expect("psql (postgresql-client)");
    assert!(out.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
    match base.rsplit_once('/') {
        Some((prefix, _)) => format!("{prefix}/{name}"),
        None => panic!("unexpected PostgreSQL URL {base}"),
    }
}
