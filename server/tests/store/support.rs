//! The harness: every test body runs once on SQLite (a file in a temp dir) and once on
//! PostgreSQL (a database of its own, created for the test and dropped after it).
//!
//! PostgreSQL is the server at `PISTE_TEST_POSTGRES_URL` when set, else a throwaway cluster
//! that `pg-cluster.sh` starts once for every test process of the run (see that script). When
//! neither is available the PostgreSQL tests fail, naming the package to install.

use std::future::Future;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use scheduler::{Event, JobStatus, PipelineStatus};
use server::store::{Backend, JobUpdate, NewJob, NewPipeline, Recorded, Store, Transition};
use sqlx::{Connection, Executor, PgConnection};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A store for one test, and how to reach its database again.
pub struct Db {
    pub store: Backend,
    pub kind: Kind,
    /// What `Backend::open` was given.
    pub database: String,
    dir: PathBuf,
    created: Mutex<Vec<String>>,
}

impl Deref for Db {
    type Target = Backend;
    fn deref(&self) -> &Backend {
        &self.store
    }
}

impl Db {
    /// Another empty database on the same server (or file in the same directory), dropped
    /// with this one; for tests of opening and migrating.
    pub async fn fresh_database(&self) -> String {
        match self.kind {
            Kind::Sqlite => format!("sqlite://{}", self.dir.join(format!("{}.db", random_name())).display()),
            Kind::Postgres => {
                let name = random_name();
                create_database(&name).await;
                self.created.lock().unwrap().push(name.clone());
                database_url(&name)
            }
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

/// Runs `body` against a new store of `kind`, then drops the database, even when `body` panics.
pub async fn run<F, Fut>(kind: Kind, body: F)
where
    F: FnOnce(std::sync::Arc<Db>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let (database, name) = match kind {
        Kind::Sqlite => (String::new(), None),
        Kind::Postgres => {
            let name = random_name();
            create_database(&name).await;
            (database_url(&name), Some(name))
        }
    };
    let store = Backend::open(&database, dir.path()).await.unwrap_or_else(|e| panic!("opening `{database}`: {e}"));
    let db = std::sync::Arc::new(Db { store, kind, database, dir: dir.path().to_path_buf(), created: Mutex::new(Vec::new()) });
    let outcome = tokio::spawn(body(db.clone())).await;
    db.store.close().await;
    if kind == Kind::Postgres {
        let extra = std::mem::take(&mut *db.created.lock().unwrap());
        for name in name.into_iter().chain(extra) {
            drop_database(&name).await;
        }
    }
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test task: {e}"),
        }
    }
}

/// Defines, for each test body `name(db: Arc<Db>)` of the calling module, a module `name`
/// with the tests `sqlite` and `postgres`.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                $crate::support::run($crate::support::Kind::Sqlite, super::$name).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                $crate::support::run($crate::support::Kind::Postgres, super::$name).await
            }
        }
    )*};
}

// PostgreSQL.

/// The server's admin URL (its `postgres` database), started once per process.
fn server() -> &'static str {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    let server = SERVER.get_or_init(|| match std::env::var("PISTE_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(url.trim().to_string()),
        _ => start_cluster(),
    });
    match server {
        Ok(url) => url,
        Err(e) => panic!("no PostgreSQL for the store tests: {e}"),
    }
}

fn start_cluster() -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/store/pg-cluster.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .arg("start")
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("`{} start` failed: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Tells the cluster's watchdog that tests still use it.
fn mark_used() {
    if std::env::var_os("PISTE_TEST_POSTGRES_URL").is_some() {
        return;
    }
    let dir = std::env::var("PISTE_TEST_PG_DIR").unwrap_or_else(|_| "/tmp/piste-test-pg".into());
    if let Ok(f) = std::fs::File::options().write(true).open(Path::new(&dir).join("last-use")) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// The server's URL with its database replaced by `name`.
fn database_url(name: &str) -> String {
    let admin = server();
    let (base, query) = admin.split_once('?').map_or((admin, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

async fn admin() -> PgConnection {
    let url = tokio::task::spawn_blocking(|| server().to_string()).await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    mark_used();
    let mut connected = PgConnection::connect(&url).await;
    if connected.is_err() && std::env::var_os("PISTE_TEST_POSTGRES_URL").is_none() {
        // The cluster's watchdog may have stopped it while this process was idle: start again.
        if let Ok(Err(e)) = tokio::task::spawn_blocking(start_cluster).await {
            panic!("no PostgreSQL for the store tests: {e}");
        }
        connected = PgConnection::connect(&url).await;
    }
    connected.unwrap_or_else(|e| panic!("connecting to the test PostgreSQL at `{url}`: {e}"))
}

async fn create_database(name: &str) {
    let mut admin = admin().await;
    admin.execute(format!("CREATE DATABASE \"{name}\"").as_str()).await.unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let _ = admin.close().await;
}

async fn drop_database(name: &str) {
    let mut admin = admin().await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await
        .unwrap_or_else(|e| panic!("DROP DATABASE {name}: {e}"));
    let _ = admin.close().await;
}

pub fn random_name() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("random bytes");
    format!("test_{}", hex::encode(bytes))
}

// Data builders shared by the topic modules.

pub fn new_pipeline(project: &str, at: i64) -> NewPipeline {
    NewPipeline {
        project: project.to_string(),
        git_ref: "refs/heads/main".into(),
        sha: "0123456789abcdef0123456789abcdef01234567".into(),
        before_sha: Some("89abcdef0123456789abcdef0123456789abcdef".into()),
        source: "push".into(),
        trigger: r#"{"branch":"main","message":"fix: $(touch /tmp/pwned)"}"#.into(),
        created_at: at,
        needs_approval: false,
        upstream: None,
    }
}

/// A recorded pipeline of project `demo`, not planned.
pub async fn recorded(s: &Backend, delivery: &str) -> i64 {
    match s.record_pipeline(delivery, &new_pipeline("demo", 1_000)).await.unwrap() {
        Recorded::Created(id) => id,
        Recorded::Duplicate(id) => panic!("delivery {delivery} already recorded pipeline {id}"),
    }
}

pub fn new_job(name: &str, tags: &[&str]) -> NewJob {
    NewJob {
        name: name.to_string(),
        stage: "test".into(),
        stage_index: 1,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        spec: format!(r#"{{"script":["echo {name}"]}}"#),
        resource_group: None,
    }
}

/// A planned pipeline with one job per `(name, tags)`; returns the pipeline and job ids.
pub async fn planned(s: &Backend, jobs: &[(&str, &[&str])]) -> (i64, Vec<i64>) {
    let delivery = random_name();
    let pipeline = recorded(s, &delivery).await;
    let jobs: Vec<NewJob> = jobs.iter().map(|(name, tags)| new_job(name, tags)).collect();
    let ids = s.save_plan(pipeline, &jobs, PipelineStatus::Pending, 2_000).await.unwrap();
    (pipeline, ids)
}

/// Puts jobs in the queue the way the server does: an engine event and `Pending` updates.
/// Returns the pipeline's new version.
pub async fn enqueue(s: &Backend, pipeline: i64, jobs: &[i64], attempt: u32) -> i64 {
    let version = s.pipeline(pipeline).await.unwrap().expect("pipeline").version;
    let updates = jobs.iter().map(|&job_id| JobUpdate::Status { job_id, status: JobStatus::Pending, attempt, at: 3_000 }).collect();
    let transition = Transition {
        pipeline_id: pipeline,
        expected_version: version,
        events: vec![Event::Tick { now: 3_000 }],
        jobs: updates,
        pipeline_status: None,
        wake_at: None,
        at: 3_000,
    };
    s.apply(&transition).await.unwrap()
}

pub fn tags(tags: &[&str]) -> Vec<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

/// A registered runner's id (jobs refer to their runner).
pub async fn runner(s: &Backend, name: &str) -> i64 {
    s.register_runner(name, &[], &Default::default(), &format!("runner-token-hash-{name}"), 1).await.unwrap().id
}

/// Runner `id` as a claimer with these tags, taking untagged jobs too (its scope otherwise
/// open: every project, every ref).
pub fn claimer(id: i64, tags: &[String]) -> server::store::Runner {
    server::store::Runner {
        id,
        name: format!("runner {id}"),
        tags: tags.to_vec(),
        scope: server::store::RunnerScope { run_untagged: true, ..Default::default() },
        created_at: 1,
        last_seen_at: 1,
    }
}
