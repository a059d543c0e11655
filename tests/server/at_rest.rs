//! Secrets at rest: the server keeps none. Secrets live in piste.toml (or its environment) and
//! join a job's specification when it is leased; logs and failure reasons are masked before
//! they are stored. After a pipeline that prints a secret, plain and in base64, neither form
//! is anywhere in the data directory (SQLite's database, WAL and logs) nor in a dump of the
//! PostgreSQL database.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{Forge, Http, RunnerProc, SECRET, Server, gitlab_push, postgres_database};

const TOKEN: &str = "tok-123456-secret";
const TOKEN_BASE64: &str = "dG9rLTEyMzQ1Ni1zZWNyZXQ=";

const PIPELINE: &str = r#"
show:
  script:
    - echo "secret=[$DEPLOY_TOKEN]"
    - printf %s "$DEPLOY_TOKEN" | base64
fail:
  script:
    - echo "about to fail with $DEPLOY_TOKEN"
    - exit 3
"#;

/// Every file under `dir`, as (path, bytes).
fn files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
}

fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_servers_disk_or_database() {
    let forge = Forge::new(PIPELINE);
    let (before, after) = forge.push("main", "first");
    let db = postgres_database();
    for database in [None, Some(db)] {
        let extra = database.as_ref().map(|d| format!("database = \"{d}\"")).unwrap_or_default();
        let mut server = Server::start(&forge, 10_000, &extra);
        let runner = RunnerProc::start(&server, "node", "shell");
        let http = Http::new(&server);
        let r = http.gitlab_hook(gitlab_push("main", &before, &after, "first"), Some(SECRET), "rest-1").await;
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.unwrap()["pipeline"].as_i64().unwrap();
        let p = http.wait_status(id, &["failed"], 60).await;
        let show = p["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "show").unwrap().clone();
        assert_eq!(show["status"], "success", "{p:#}");
        let log = http.log(show["id"].as_i64().unwrap()).await;
        assert!(log.contains("secret=[[MASKED]]"), "the job had the secret: {log}");
        drop(runner);
        server.kill();

        let mut all = Vec::new();
        files(&server.data, &mut all);
        assert!(all.iter().any(|(p, _)| p.ends_with(".log")), "the logs are on disk: {:?}", all.iter().map(|(p, _)| p).collect::<Vec<_>>());
        for (path, bytes) in &all {
            assert!(!holds(bytes, TOKEN) && !holds(bytes, TOKEN_BASE64), "a secret in `{path}`");
        }
        if let Some(url) = &database {
            let dump = Command::new("pg_dump").arg(url).output().expect("pg_dump (postgresql-client)");
            assert!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
            let text = String::from_utf8_lossy(&dump.stdout);
            assert!(text.contains("CREATE TABLE public.jobs"), "a dump of the store");
            assert!(!text.contains(TOKEN) && !text.contains(TOKEN_BASE64), "a secret in the PostgreSQL dump");
        } else {
            assert!(all.iter().any(|(p, _)| p.ends_with("piste.db")), "the SQLite store is in the data directory");
        }
    }
}
