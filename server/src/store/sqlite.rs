//! The embedded store: one SQLite file under the data directory.
//!
//! # Schema (`server/migrations/sqlite/`, the same shape on PostgreSQL)
//!
//! - `runners (id, name, tags, token_hash UNIQUE, created_at, last_seen_at, run_untagged,
//!   protected_only, projects)`: the last three are the runner's scope (migration 0003).
//! - `access_tokens (id, user_name, label, token_hash UNIQUE, created_at, expires_at,
//!   revoked_at)` and `sessions (token_hash PRIMARY KEY, user_name, groups, created_at,
//!   expires_at)`: people's credentials, hashes only.
//! - `pipelines (id, project, git_ref, sha, before_sha, source, trigger, status, error, version,
//!   created_at, updated_at)`: `version` is the number of rows in `pipeline_events`; `status` is
//!   `created` until planned. Indexed by `(project, id)` and `(status, id)`. `iid` (migration
//!   0012) is the pipeline's number in its project, from `pipeline_iids (project PRIMARY KEY,
//!   last_iid)`, unique per project.
//! - `deliveries ((project, delivery_id) PRIMARY KEY, pipeline_id)`: the de-duplication of
//!   webhook deliveries; a replayed delivery finds the pipeline it created.
//! - `pipeline_events ((pipeline_id, seq) PRIMARY KEY, event)`: the engine's events as JSON,
//!   `seq` counting from 1; replaying them rebuilds the engine.
//! - `jobs (id, pipeline_id, name, stage, stage_index, tags, spec, status, attempt, runner_id,
//!   token_hash, lease_expires_at, cancel_requested, started_at, finished_at, exit_code,
//!   failure_reason, artifacts, dotenv)`: every `JobRow` field, plus the current attempt's
//!   token hash. Indexed by `(pipeline_id, id)` and `(status, id)`, which is the queue (oldest
//!   pending first), the running jobs (lease expiry) and the counts.
//!
//! - `forge_statuses (pipeline_id PRIMARY KEY, state, posted, error, at)`: the last commit
//!   status tried on the forge, the last one it accepted, and why the last try failed.
//! - `job_reports (job_id PRIMARY KEY, pipeline_id, tests, coverage)`: a job's JUnit totals and
//!   failures (JSON) and its coverage value. Indexed by `pipeline_id`.
//! - `reuse_records (scope_key PRIMARY KEY, project, job_id, attempt, pipeline_id, job_name,
//!   artifacts, dotenv, coverage, created_at)`: reuse of job results (migration 0014): the attempt that passed
//!   under a scoped key, with `jobs.reuse_key`, `jobs.reused_from` and `jobs.run_anyway`.
//!
//! Tags, triggers, specs and events are JSON text, kept byte for byte. Times are milliseconds.
//!
//! # Concurrency
//!
//! SQLite has one writer at a time. Writes go through exactly one connection behind a mutex,
//! so they queue there instead of spinning in SQLite's busy handler; multi-statement writes
//! start with `BEGIN IMMEDIATE`, which takes the write lock up front (a deferred transaction
//! that reads then writes can fail with `SQLITE_BUSY` when another process wrote in between).
//! Reads use `query_only` connections kept idle between calls and, in WAL mode, never wait
//! for the writer. `synchronous=NORMAL` in WAL mode loses no committed transaction on a
//! process crash (only on power loss, the last ones), which is what a CI server needs.
//!
//! # Decisions
//!
//! - **Statements run on the calling thread** (rusqlite), each store call one synchronous
//!   closure. sqlx ran every SQLite connection on a thread of its own and sent it each
//!   statement, and each row back, through channels: a job's dozen statements cost a dozen
//!   thread hand-offs, which `perf` showed as 44 % of the server's CPU in the dispatch
//!   benchmark (plus the wake-ups on the other side). The statements here are indexed and
//!   take microseconds; a call holds its connection only while it runs and never across an
//!   `.await`, so the connections in use never outnumber the threads that call.
//! - **Migrations stay sqlx's** (one connection at open, closed after): the migration table
//!   and its checksums are the ones every existing database already has.
//! - **Checkpoints off the writer.** The writer's automatic checkpoint would copy the WAL
//!   back and sync the file inside a commit, on whichever thread committed: a thread of its
//!   own ([`checkpointer`]) does it in the background (`PASSIVE`: never blocks the writer or
//!   the readers) after writes, at most every [`CHECKPOINT_EVERY`].
//! - **Another process** (a `piste token` command beside a running server) can hold the
//!   write lock for a moment: the writer then waits in SQLite's busy handler, up to
//!   [`BUSY_TIMEOUT`], on the calling thread.
//! - Prepared statements are cached per connection ([`STATEMENT_CACHE`] of them).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::backend::{
    event_from_json, event_json, held, job_status, migrate_sqlite, pipeline_status, sqlite_migrator, status_counts, tags_from_json,
    tags_json, unposted,
};
use super::{
    AccessToken, Approval, AttemptRow, Claimed, Counts, ForgePost, JobReport, JobRow, JobUpdate, NewJob, NewPipeline, PipelineRow,
    Recorded, ResourceCandidate, Result, ReuseRecord, Runner, RunnerScope, Session, Store, StoreError, StoredKey, Transition, Unposted,
    Wakeup,
};
use scheduler::{Event, JobStatus, PipelineStatus};

/// Opens of a database that SQLite called busy at once, tried again before giving up.
const OPEN_TRIES: usize = 10;

/// SQLite's "busy" and "locked" answers (and their extended codes), from either library.
fn busy(e: &StoreError) -> bool {
    let StoreError::Database(e) = e else { return false };
    if let Some(e) = e.downcast_ref::<rusqlite::Error>() {
        return matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked));
    }
    let Some(db) = e.downcast_ref::<sqlx::Error>().and_then(|e| e.as_database_error()) else { return false };
    db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Each connection's page cache, in KiB (SQLite's `cache_size`; its default is 2,000).
///
/// The cache fills with the pages a connection reads and keeps them while the file grows: with
/// the default, the writer's and readers' caches grew by 3.7 MiB between the server's 100th and
/// 1,000th finished pipeline (`cargo bench --bench serve -- rss`, a heap profile), reaching
/// their bound only past 300. What a statement needs again and again is the B-trees' upper
/// levels and the newest rows, a few dozen pages; the rest are read again from the OS's file
/// cache (and in WAL mode a reader's cache is emptied whenever another connection wrote
/// anyway). 256 KiB per connection is full after the first pipelines.
const PAGE_CACHE_KIB: u32 = 256;

/// `last_seen_at` is written at most this often per runner (every poll would be a write).
const SEEN_EVERY_MS: i64 = 1000;

/// How often the background checkpoint runs while there are writes.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// Idle read connections kept between calls (more are opened when more threads read at
/// once, and closed after).
const IDLE_READERS: usize = 8;

// The row decoders below (`runner_row`, `token_row`, `pipeline_row`, `job_row`) read these
// columns by position, in this order: rusqlite finds a column by name with a linear search
// of the statement's column names (`perf`: ≈ 8 % of the server's CPU for `job_row`'s 21).
macro_rules! runner_columns {
    () => {
        "id, name, tags, run_untagged, protected_only, projects, created_at, last_seen_at"
    };
}
macro_rules! token_columns {
    () => {
        "id, user_name, label, created_at, expires_at, revoked_at"
    };
}
macro_rules! pipeline_columns {
    () => {
        "id, project, git_ref, sha, before_sha, source, trigger, status, error, version, created_at, updated_at, needs_approval, \
         approved_by, approved_at, upstream_pipeline_id, upstream_job_id, iid"
    };
}
macro_rules! job_columns {
    () => {
        "id, pipeline_id, name, stage, stage_index, tags, spec, status, attempt, runner_id, lease_expires_at, cancel_requested, \
         started_at, finished_at, exit_code, failure_reason, artifacts, dotenv, reused_from, reuse_key, run_anyway"
    };
}

/// The SQLite store. Clones share the connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` once closed.
    writer: Mutex<Option<Connection>>,
    readers: Mutex<Vec<Connection>>,
    closed: AtomicBool,
    /// Write calls so far: the checkpointer runs when it moved.
    writes: AtomicU64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::InvalidColumnName(_)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(_) => StoreError::corrupt("a column does not decode", e),
            e => StoreError::Database(Box::new(e)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the database file at `path` and brings
    /// its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        }
        // Servers starting together on a new file: while one turns it to WAL or recovers it,
        // SQLite may answer another "busy" at once, without waiting through the busy timeout
        // (it does so where waiting could deadlock). Such an open is tried again, briefly.
        let mut wait = Duration::from_millis(20);
        for _ in 0..OPEN_TRIES {
            match Self::open_once(path).await {
                Err(e) if busy(&e) => {
                    tracing::debug!(path = %path.display(), error = %crate::error::chain(&e), "database busy while opening; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
        Self::open_once(path).await
    }

    async fn open_once(path: &Path) -> Result<SqliteStore> {
        // The schema, by sqlx's migrator, on a connection of its own. The whole migration holds
        // the write lock: two processes opening a new file at once do not both create the tables.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
        let migrator = sqlite_migrator().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        migrate_sqlite(&migrator, &mut tx).await?;
        tx.commit().await?;
        conn.close().await?;

        let writer = connect(path, false)?;
        // Checkpoints are the checkpointer's (see the module documentation).
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, IDLE_READERS);
        let readers = (0..readers).map(|_| connect(path, true)).collect::<Result<Vec<_>>>()?;
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            writer: Mutex::new(Some(writer)),
            readers: Mutex::new(readers),
            closed: AtomicBool::new(false),
            writes: AtomicU64::new(0),
        });
        let checkpoints = connect(path, false)?;
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpointer(&weak, &checkpoints))
            .map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
        Ok(SqliteStore { inner })
    }

    /// Closes every connection (waits for the ones in use); calls after it fail with
    /// [`StoreError::Closed`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        drop(lock(&self.inner.writer).take());
        lock(&self.inner.readers).clear();
    }

    /// Runs `f` with the one write connection.
    fn write<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut writer = lock(&self.inner.writer);
        let conn = writer.as_mut().ok_or(StoreError::Closed)?;
        let out = f(conn);
        self.inner.writes.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// Runs `f` with a read-only connection (an idle one, or a new one when every idle one is
    /// in use on another thread).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let idle = lock(&self.inner.readers).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => connect(&self.inner.path, true)?,
        };
        let out = f(&conn);
        let mut readers = lock(&self.inner.readers);
        if readers.len() < IDLE_READERS && !self.inner.closed.load(Ordering::SeqCst) {
            readers.push(conn);
        }
        out
    }
}

/// A connection to the database at `path` with the store's settings.
fn connect(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -i64::from(PAGE_CACHE_KIB))?;
    if read_only {
        conn.pragma_update(None, "query_only", "ON")?;
    }
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The background checkpoint (see the module documentation): while the store lives, every
/// [`CHECKPOINT_EVERY`] after writes, a `PASSIVE` checkpoint on a connection of its own.
fn checkpointer(store: &Weak<Inner>, conn: &Connection) {
    let mut seen = 0;
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        let Some(inner) = store.upgrade() else { return };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let writes = inner.writes.load(Ordering::Relaxed);
        drop(inner);
        if writes == seen {
            continue;
        }
        seen = writes;
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "SQLite checkpoint failed; trying again later");
        }
    }
}

impl Store for SqliteStore {
    async fn register_runner(&self, name: &str, tags: &[String], scope: &RunnerScope, token_hash: &str, now: i64) -> Result<Runner> {
        let projects = scope.projects.as_deref().map(tags_json).transpose()?;
        let tags_json = tags_json(tags)?;
        let id: i64 = self.write(|c| {
            Ok(c.prepare_cached(
                "INSERT INTO runners (name, tags, token_hash, created_at, last_seen_at, run_untagged, protected_only, projects) \
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7) RETURNING id",
            )?
            .query_row(params![name, tags_json, token_hash, now, scope.run_untagged, scope.protected_only, projects], |r| r.get(0))?)
        })?;
        Ok(Runner { id, name: name.to_string(), tags: tags.to_vec(), scope: scope.clone(), created_at: now, last_seen_at: now })
    }

    async fn runners(&self, limit: i64) -> Result<Vec<Runner>> {
        self.read(|c| {
            rows(c, concat!("SELECT ", runner_columns!(), " FROM runners ORDER BY id LIMIT ?1"), params![limit.max(0)], runner_row)
        })
    }

    async fn runner_by_token(&self, token_hash: &str, now: i64) -> Result<Option<Runner>> {
        let found = self.read(|c| {
            row(c, concat!("SELECT ", runner_columns!(), " FROM runners WHERE token_hash = ?1"), params![token_hash], runner_row)
        })?;
        let Some(mut runner) = found else { return Ok(None) };
        if runner.last_seen_at + SEEN_EVERY_MS <= now {
            self.write(|c| {
                c.prepare_cached("UPDATE runners SET last_seen_at = ?2 WHERE id = ?1 AND last_seen_at < ?2")?
                    .execute(params![runner.id, now])?;
                Ok(())
            })?;
            runner.last_seen_at = now;
        }
        Ok(Some(runner))
    }

    async fn record_pipeline(&self, delivery_id: &str, p: &NewPipeline) -> Result<Recorded> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let seen: Option<i64> = tx
                .prepare_cached("SELECT pipeline_id FROM deliveries WHERE project = ?1 AND delivery_id = ?2")?
                .query_row(params![p.project, delivery_id], |r| r.get(0))
                .optional()?;
            if let Some(id) = seen {
                return Ok(Recorded::Duplicate(id));
            }
            // `CI_PIPELINE_IID`: the project's next number, taken in this transaction (a row lock
            // on PostgreSQL, the one writer on SQLite), so no two pipelines of a project share one.
            let iid: i64 = tx
                .prepare_cached(
                    "INSERT INTO pipeline_iids (project, last_iid) VALUES (?1, 1) \
                     ON CONFLICT (project) DO UPDATE SET last_iid = pipeline_iids.last_iid + 1 RETURNING last_iid",
                )?
                .query_row(params![p.project], |r| r.get(0))?;
            let id: i64 = tx
                .prepare_cached(
                    "INSERT INTO pipelines (project, git_ref, sha, before_sha, source, trigger, status, version, created_at, updated_at, \
                     needs_approval, upstream_pipeline_id, upstream_job_id, iid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8, 0, ?7, ?7, ?9, ?10, ?11, ?12) RETURNING id",
                )?
                .query_row(
                    params![
                        p.project,
                        p.git_ref,
                        p.sha,
                        p.before_sha,
                        p.source,
                        p.trigger,
                        p.created_at,
                        PipelineStatus::Created.as_str(),
                        p.needs_approval,
                        p.upstream.map(|u| u.pipeline_id),
                        p.upstream.map(|u| u.job_id),
                        iid
                    ],
                    |r| r.get(0),
                )?;
            tx.prepare_cached("INSERT INTO deliveries (project, delivery_id, pipeline_id) VALUES (?1, ?2, ?3)")?
                .execute(params![p.project, delivery_id, id])?;
            tx.commit()?;
            Ok(Recorded::Created(id))
        })
    }

    async fn pipeline(&self, id: i64) -> Result<Option<PipelineRow>> {
        self.read(|c| row(c, concat!("SELECT ", pipeline_columns!(), " FROM pipelines WHERE id = ?1"), params![id], pipeline_row))
    }

    async fn downstream_pipelines(&self, pipeline_id: i64) -> Result<Vec<PipelineRow>> {
        self.read(|c| {
            rows(
                c,
                concat!("SELECT ", pipeline_columns!(), " FROM pipelines WHERE upstream_pipeline_id = ?1 ORDER BY id"),
                params![pipeline_id],
                pipeline_row,
            )
        })
    }

    async fn pipelines(&self, project: Option<&str>, limit: i64) -> Result<Vec<PipelineRow>> {
        let limit = limit.max(0);
        self.read(|c| match project {
            Some(project) => rows(
                c,
                concat!("SELECT ", pipeline_columns!(), " FROM pipelines WHERE project = ?1 ORDER BY id DESC LIMIT ?2"),
                params![project, limit],
                pipeline_row,
            ),
            None => {
                rows(c, concat!("SELECT ", pipeline_columns!(), " FROM pipelines ORDER BY id DESC LIMIT ?1"), params![limit], pipeline_row)
            }
        })
    }

    async fn pipelines_with_status(&self, statuses: &[PipelineStatus]) -> Result<Vec<PipelineRow>> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let statuses = serde_json::to_string(&statuses).map_err(|source| StoreError::Encode { what: "statuses", source })?;
        self.read(|c| {
            rows(
                c,
                concat!("SELECT ", pipeline_columns!(), " FROM pipelines WHERE status IN (SELECT value FROM json_each(?1)) ORDER BY id"),
                params![statuses],
                pipeline_row,
            )
        })
    }

    async fn save_plan(&self, pipeline_id: i64, jobs: &[NewJob], status: PipelineStatus, now: i64) -> Result<Vec<i64>> {
        let tags = jobs.iter().map(|j| tags_json(&j.tags)).collect::<Result<Vec<_>>>()?;
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let planned = tx
                .prepare_cached("UPDATE pipelines SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status = ?4")?
                .execute(params![pipeline_id, status.as_str(), now, PipelineStatus::Created.as_str()])?;
            if planned == 0 {
                return Err(conflict(&tx, pipeline_id, 0));
            }
            let mut ids = Vec::with_capacity(jobs.len());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO jobs (pipeline_id, name, stage, stage_index, tags, spec, status, attempt, resource_group) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8) RETURNING id",
                )?;
                for (job, tags) in jobs.iter().zip(&tags) {
                    let id: i64 = insert.query_row(
                        params![
                            pipeline_id,
                            job.name,
                            job.stage,
                            job.stage_index,
                            tags,
                            job.spec,
                            JobStatus::Created.as_str(),
                            job.resource_group
                        ],
                        |r| r.get(0),
                    )?;
                    ids.push(id);
                }
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    async fn fail_pipeline(&self, pipeline_id: i64, error: &str, now: i64) -> Result<()> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let failed = tx
                .prepare_cached("UPDATE pipelines SET status = ?4, error = ?2, updated_at = ?3 WHERE id = ?1 AND status = ?5")?
                .execute(params![pipeline_id, error, now, PipelineStatus::Failed.as_str(), PipelineStatus::Created.as_str()])?;
            if failed == 0 {
                return Err(conflict(&tx, pipeline_id, 0));
            }
            tx.commit()?;
            Ok(())
        })
    }

    async fn approve_pipeline(&self, pipeline_id: i64, by: &str, now: i64) -> Result<bool> {
        self.write(|c| {
            let approved = c
                .prepare_cached(
                    "UPDATE pipelines SET approved_by = ?2, approved_at = ?3, updated_at = ?3 \
                     WHERE id = ?1 AND needs_approval = 1 AND approved_by IS NULL AND version = 0 AND status = ?4",
                )?
                .execute(params![pipeline_id, by, now, PipelineStatus::Manual.as_str()])?;
            Ok(approved == 1)
        })
    }

    async fn events(&self, pipeline_id: i64) -> Result<Vec<Event>> {
        self.read(|c| {
            rows(c, "SELECT seq, event FROM pipeline_events WHERE pipeline_id = ?1 ORDER BY seq", params![pipeline_id], |r| {
                let seq: i64 = r.get("seq")?;
                let event: String = r.get("event")?;
                event_from_json(pipeline_id, seq, &event)
            })
        })
    }

    async fn apply(&self, t: &Transition) -> Result<i64> {
        let events = t.events.iter().map(event_json).collect::<Result<Vec<_>>>()?;
        let added = events.len() as i64;
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let appended = tx
                .prepare_cached(
                    "UPDATE pipelines SET version = version + ?3, status = COALESCE(?4, status), updated_at = ?5, wake_at = ?6 \
                     WHERE id = ?1 AND version = ?2",
                )?
                .execute(params![t.pipeline_id, t.expected_version, added, t.pipeline_status.map(|s| s.as_str()), t.at, t.wake_at])?;
            if appended == 0 {
                return Err(conflict(&tx, t.pipeline_id, t.expected_version));
            }
            {
                let mut insert = tx.prepare_cached("INSERT INTO pipeline_events (pipeline_id, seq, event) VALUES (?1, ?2, ?3)")?;
                for (seq, event) in (t.expected_version + 1..).zip(&events) {
                    insert.execute(params![t.pipeline_id, seq, event])?;
                }
            }
            for update in &t.jobs {
                update_job(&tx, t.pipeline_id, update)?;
            }
            tx.commit()?;
            Ok(t.expected_version + added)
        })
    }

    async fn job(&self, id: i64) -> Result<Option<JobRow>> {
        self.read(|c| row(c, concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1"), params![id], job_row))
    }

    async fn jobs(&self, pipeline_id: i64) -> Result<Vec<JobRow>> {
        self.read(|c| {
            rows(c, concat!("SELECT ", job_columns!(), " FROM jobs WHERE pipeline_id = ?1 ORDER BY id"), params![pipeline_id], job_row)
        })
    }

    async fn resource_holder(&self, project: &str, group: &str) -> Result<Option<(i64, i64)>> {
        self.write(|c| {
            row(
                c,
                "SELECT holder_job, holder_attempt FROM resource_groups WHERE project = ?1 AND name = ?2 AND holder_job IS NOT NULL",
                params![project, group],
                |r| Ok((r.get("holder_job")?, r.get("holder_attempt")?)),
            )
        })
    }

    async fn grant_resource(&self, project: &str, group: &str, job: i64, attempt: i64) -> Result<bool> {
        self.write(|c| {
            let done = c
                .prepare_cached(
                    "INSERT INTO resource_groups (project, name, holder_job, holder_attempt) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (project, name) DO UPDATE SET holder_job = excluded.holder_job, holder_attempt = excluded.holder_attempt \
                     WHERE resource_groups.holder_job IS NULL",
                )?
                .execute(params![project, group, job, attempt])?;
            Ok(done == 1)
        })
    }

    async fn release_resource(&self, project: &str, group: &str, job: i64, attempt: i64) -> Result<bool> {
        self.write(|c| {
            let done = c
                .prepare_cached(
                    "UPDATE resource_groups SET holder_job = NULL, holder_attempt = NULL \
                     WHERE project = ?1 AND name = ?2 AND holder_job = ?3 AND holder_attempt = ?4",
                )?
                .execute(params![project, group, job, attempt])?;
            Ok(done == 1)
        })
    }

    async fn resource_groups_in_use(&self) -> Result<Vec<(String, String)>> {
        self.write(|c| {
            rows(
                c,
                "SELECT project, name FROM resource_groups WHERE holder_job IS NOT NULL \
                 UNION SELECT p.project, j.resource_group FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id \
                 WHERE j.resource_group IS NOT NULL AND j.status = ?1 ORDER BY 1, 2",
                params![JobStatus::WaitingForResource.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    async fn resource_queue(&self, project: &str, group: &str) -> Result<Vec<ResourceCandidate>> {
        self.write(|c| {
            rows(
                c,
                "SELECT j.id, j.pipeline_id, j.name, j.status, j.attempt FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id \
                 WHERE p.project = ?1 AND j.resource_group = ?2 AND p.version > 0 AND j.status IN (?3, ?4, ?5) \
                 ORDER BY j.pipeline_id, j.id",
                params![project, group, JobStatus::Created.as_str(), JobStatus::Scheduled.as_str(), JobStatus::WaitingForResource.as_str()],
                |r| {
                    let job_id: i64 = r.get("id")?;
                    let status: String = r.get("status")?;
                    Ok(ResourceCandidate {
                        job_id,
                        pipeline_id: r.get("pipeline_id")?,
                        name: r.get("name")?,
                        status: job_status(job_id, &status)?,
                        attempt: r.get("attempt")?,
                    })
                },
            )
        })
    }

    async fn past_attempts(&self, job_id: i64) -> Result<Vec<AttemptRow>> {
        let columns: Vec<super::backend::AttemptColumns> = self.read(|c| {
            rows(
                c,
                "SELECT attempt, status, exit_code, failure_reason, started_at, finished_at FROM job_attempts WHERE job_id = ?1 ORDER BY attempt",
                params![job_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
        })?;
        columns.into_iter().map(|r| super::backend::attempt_row(job_id, r)).collect()
    }

    async fn claim_job(&self, runner: &Runner, token_hash: &str, now: i64, lease_until: i64) -> Result<Option<Claimed>> {
        // One statement, so one atomic write: the oldest pending job none of whose tags is
        // missing from the runner's (jobs without tags, stored as `[]`, only for runners that
        // take untagged jobs), of a protected ref for a protected runner (the trigger's
        // `ref_protected`, which also decides the secrets), of one of its projects if it has a
        // list.
        let tags = tags_json(&runner.tags)?;
        let projects = runner.scope.projects.as_deref().map(tags_json).transpose()?;
        let job = self.write(|c| {
            row(
                c,
                concat!(
                    "UPDATE jobs SET status = ?6, runner_id = ?1, token_hash = ?2, started_at = ?3, lease_expires_at = ?4 \
                     WHERE id = (SELECT j.id FROM jobs AS j JOIN pipelines AS p ON p.id = j.pipeline_id WHERE j.status = ?7 \
                       AND CASE WHEN j.tags = '[]' THEN ?8 ELSE NOT EXISTS ( \
                         SELECT 1 FROM json_each(j.tags) AS t WHERE t.value NOT IN (SELECT value FROM json_each(?5))) END \
                       AND (?9 = 0 OR json_extract(p.trigger, '$.ref_protected') = 1) \
                       AND (?10 IS NULL OR p.project IN (SELECT value FROM json_each(?10))) \
                       ORDER BY j.id LIMIT 1) \
                     RETURNING ",
                    job_columns!()
                ),
                params![
                    runner.id,
                    token_hash,
                    now,
                    lease_until,
                    tags,
                    JobStatus::Running.as_str(),
                    JobStatus::Pending.as_str(),
                    runner.tags.is_empty() || runner.scope.run_untagged,
                    runner.scope.protected_only,
                    projects
                ],
                job_row,
            )
        })?;
        Ok(job.map(|job| Claimed { job, lease_expires_at: lease_until }))
    }

    async fn job_by_token(&self, id: i64, token_hash: &str) -> Result<Option<JobRow>> {
        self.read(|c| {
            row(
                c,
                concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1 AND token_hash = ?2 AND status IN (?3, ?4)"),
                params![id, token_hash, held()[0], held()[1]],
                job_row,
            )
        })
    }

    async fn extend_lease(&self, id: i64, until: i64) -> Result<bool> {
        let cancel: Option<bool> = self.write(|c| {
            row(
                c,
                "UPDATE jobs SET lease_expires_at = ?2 WHERE id = ?1 AND status IN (?3, ?4) RETURNING cancel_requested",
                params![id, until, held()[0], held()[1]],
                |r| Ok(r.get(0)?),
            )
        })?;
        cancel.ok_or(StoreError::NotFound { what: "running job", id })
    }

    async fn expired_leases(&self, now: i64) -> Result<Vec<JobRow>> {
        self.read(|c| {
            rows(
                c,
                concat!("SELECT ", job_columns!(), " FROM jobs WHERE status IN (?2, ?3) AND lease_expires_at < ?1 ORDER BY id"),
                params![now, held()[0], held()[1]],
                job_row,
            )
        })
    }

    async fn project_has_artifacts(&self, project: &str, digest: &str) -> Result<bool> {
        let found: Option<i64> = self.read(|c| {
            row(
                c,
                "SELECT 1 FROM jobs JOIN pipelines ON pipelines.id = jobs.pipeline_id \
                 WHERE pipelines.project = ?1 AND jobs.artifacts = ?2 LIMIT 1",
                params![project, digest],
                |r| Ok(r.get(0)?),
            )
        })?;
        Ok(found.is_some())
    }

    async fn set_artifacts(&self, id: i64, digest: &str) -> Result<()> {
        let done = self.write(|c| Ok(c.prepare_cached("UPDATE jobs SET artifacts = ?2 WHERE id = ?1")?.execute(params![id, digest])?))?;
        if done == 0 {
            return Err(StoreError::NotFound { what: "job", id });
        }
        Ok(())
    }

    async fn set_dotenv(&self, id: i64, dotenv_json: &str) -> Result<()> {
        let done =
            self.write(|c| Ok(c.prepare_cached("UPDATE jobs SET dotenv = ?2 WHERE id = ?1")?.execute(params![id, dotenv_json])?))?;
        if done == 0 {
            return Err(StoreError::NotFound { what: "job", id });
        }
        Ok(())
    }

    async fn set_reuse_key(&self, id: i64, attempt: i64, scope_key: &str) -> Result<bool> {
        let done = self.write(|c| {
            Ok(c.prepare_cached("UPDATE jobs SET reuse_key = ?5 WHERE id = ?1 AND attempt = ?2 AND status IN (?3, ?4)")?
                .execute(params![id, attempt, held()[0], held()[1], scope_key])?)
        })?;
        Ok(done > 0)
    }

    async fn set_reused_from(&self, id: i64, attempt: i64, reused_from: &str) -> Result<()> {
        let done = self.write(|c| {
            Ok(c.prepare_cached("UPDATE jobs SET reused_from = ?3 WHERE id = ?1 AND attempt = ?2")?.execute(params![
                id,
                attempt,
                reused_from
            ])?)
        })?;
        if done == 0 {
            return Err(StoreError::NotFound { what: "job", id });
        }
        Ok(())
    }

    async fn reuse_record(&self, scope_key: &str, project: &str) -> Result<Option<ReuseRecord>> {
        self.read(|c| {
            row(
                c,
                "SELECT job_id, attempt, pipeline_id, job_name, artifacts, dotenv, coverage FROM reuse_records WHERE scope_key = ?1 AND project = ?2",
                params![scope_key, project],
                |r| {
                    Ok(ReuseRecord {
                        job_id: r.get(0)?,
                        attempt: r.get(1)?,
                        pipeline_id: r.get(2)?,
                        job_name: r.get(3)?,
                        artifacts: r.get(4)?,
                        dotenv: r.get(5)?,
                        coverage: r.get(6)?,
                    })
                },
            )
        })
    }

    async fn record_reuse(&self, scope_key: &str, project: &str, r: &ReuseRecord, at: i64) -> Result<()> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO reuse_records (scope_key, project, job_id, attempt, pipeline_id, job_name, artifacts, dotenv, coverage, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, ?10, ?8) \
                 ON CONFLICT (scope_key) DO UPDATE SET project = excluded.project, job_id = excluded.job_id, attempt = excluded.attempt, \
                 pipeline_id = excluded.pipeline_id, job_name = excluded.job_name, artifacts = excluded.artifacts, dotenv = excluded.dotenv, coverage = excluded.coverage, \
                 created_at = excluded.created_at",
            )?
            .execute(params![scope_key, project, r.job_id, r.attempt, r.pipeline_id, r.job_name, r.artifacts, at, r.dotenv, r.coverage])?;
            Ok(())
        })
    }

    async fn forget_reuse(&self, scope_key: &str) -> Result<()> {
        self.write(|c| {
            c.prepare_cached("DELETE FROM reuse_records WHERE scope_key = ?1")?.execute(params![scope_key])?;
            Ok(())
        })
    }

    async fn id_token_key(&self, name: &str, candidate: &StoredKey, now: i64) -> Result<StoredKey> {
        // Insert if absent, then read: whoever inserted first, every server reads that row.
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO id_token_keys (name, alg, pkcs8, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![name, candidate.alg, candidate.pkcs8, now])?;
            Ok(c.prepare_cached("SELECT alg, pkcs8 FROM id_token_keys WHERE name = ?1")?
                .query_row(params![name], |r| Ok(StoredKey { alg: r.get(0)?, pkcs8: r.get(1)? }))?)
        })
    }

    async fn log_chunks(&self, job: i64, attempt: i64, from: u64) -> Result<Vec<(u64, u64)>> {
        self.read(|c| {
            rows(
                c,
                r#"SELECT "offset", length(data) FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND "offset" >= ?3 ORDER BY "offset""#,
                params![job, attempt, from as i64],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
        })
    }

    async fn log_chunk(&self, job: i64, attempt: i64, offset: u64) -> Result<Option<Vec<u8>>> {
        self.read(|c| {
            row(
                c,
                r#"SELECT data FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND "offset" = ?3"#,
                params![job, attempt, offset as i64],
                |r| Ok(r.get(0)?),
            )
        })
    }

    async fn put_log_chunk(&self, job: i64, attempt: i64, offset: u64, data: &[u8], at_ms: Option<i64>) -> Result<()> {
        self.write(|c| {
            c.prepare_cached(
                r#"INSERT INTO log_chunks (job_id, attempt, "offset", data, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (job_id, attempt, "offset") DO UPDATE SET data = excluded.data, at_ms = COALESCE(excluded.at_ms, log_chunks.at_ms)"#,
            )?
            .execute(params![job, attempt, offset as i64, data, at_ms])?;
            Ok(())
        })
    }

    async fn log_chunk_times(&self, job: i64, attempt: i64, range: std::ops::Range<u64>) -> Result<Vec<(u64, i64)>> {
        self.read(|c| {
            rows(
                c,
                r#"SELECT "offset", at_ms FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND at_ms IS NOT NULL AND "offset" < ?4
                 AND "offset" >= COALESCE((SELECT MAX("offset") FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND at_ms IS NOT NULL AND "offset" <= ?3), 0)
                 ORDER BY "offset""#,
                params![job, attempt, range.start.min(i64::MAX as u64) as i64, range.end.min(i64::MAX as u64) as i64],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
        })
    }

    async fn delete_log_chunks(&self, job: i64, attempt: i64) -> Result<()> {
        self.write(|c| {
            c.prepare_cached("DELETE FROM log_chunks WHERE job_id = ?1 AND attempt = ?2")?.execute(params![job, attempt])?;
            Ok(())
        })
    }

    async fn open_logs(&self) -> Result<Vec<(i64, i64)>> {
        self.read(|c| {
            rows(c, "SELECT DISTINCT job_id, attempt FROM log_chunks ORDER BY job_id, attempt", [], |r| Ok((r.get(0)?, r.get(1)?)))
        })
    }

    async fn queue_depth(&self) -> Result<i64> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT COUNT(*) FROM jobs WHERE status = ?1")?
                .query_row(params![JobStatus::Pending.as_str()], |r| r.get(0))?)
        })
    }

    async fn counts(&self) -> Result<Counts> {
        // One read transaction: the three counts come from one snapshot.
        let (jobs_by_status, pipelines_by_status, runners) = self.read(|c| {
            c.execute_batch("BEGIN")?;
            let read = (|| -> Result<_> {
                let jobs: Vec<(String, i64)> =
                    rows(c, "SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let pipelines: Vec<(String, i64)> =
                    rows(c, "SELECT status, COUNT(*) FROM pipelines GROUP BY status ORDER BY status", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let runners: i64 = c.prepare_cached("SELECT COUNT(*) FROM runners")?.query_row([], |r| r.get(0))?;
                Ok((jobs, pipelines, runners))
            })();
            c.execute_batch("COMMIT")?;
            read
        })?;
        Ok(Counts {
            jobs_by_status: status_counts(jobs_by_status, JobStatus::parse)?,
            pipelines_by_status: status_counts(pipelines_by_status, PipelineStatus::parse)?,
            runners,
        })
    }

    async fn wakeups(&self, limit: i64) -> Result<Vec<Wakeup>> {
        self.read(|c| {
            rows(
                c,
                "SELECT id, wake_at FROM pipelines WHERE wake_at IS NOT NULL ORDER BY wake_at, id LIMIT ?1",
                params![limit.max(0)],
                |r| Ok(Wakeup { pipeline_id: r.get(0)?, at: r.get(1)? }),
            )
        })
    }

    async fn record_forge_post(&self, pipeline_id: i64, state: &str, error: Option<&str>, at: i64) -> Result<()> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO forge_statuses (pipeline_id, state, posted, error, at) \
                 VALUES (?1, ?2, CASE WHEN ?3 IS NULL THEN ?2 END, ?3, ?4) \
                 ON CONFLICT (pipeline_id) DO UPDATE SET state = excluded.state, error = excluded.error, at = excluded.at, \
                 posted = CASE WHEN excluded.error IS NULL THEN excluded.state ELSE forge_statuses.posted END",
            )?
            .execute(params![pipeline_id, state, error, at])?;
            Ok(())
        })
    }

    async fn forge_post(&self, pipeline_id: i64) -> Result<Option<ForgePost>> {
        self.read(|c| {
            row(c, "SELECT state, posted, error, at FROM forge_statuses WHERE pipeline_id = ?1", params![pipeline_id], |r| {
                Ok(ForgePost { pipeline_id, state: r.get(0)?, posted: r.get(1)?, error: r.get(2)?, at: r.get(3)? })
            })
        })
    }

    async fn forge_unposted(&self, projects: &[String], limit: i64) -> Result<Vec<Unposted>> {
        let projects = serde_json::to_string(projects).map_err(|source| StoreError::Encode { what: "projects", source })?;
        let found: Vec<(i64, String, Option<String>)> = self.read(|c| {
            rows(
                c,
                "SELECT p.id, p.status, f.posted FROM pipelines p LEFT JOIN forge_statuses f ON f.pipeline_id = p.id \
                 WHERE p.project IN (SELECT value FROM json_each(?1)) AND (f.posted IS NULL OR f.posted <> p.status) ORDER BY p.id DESC LIMIT ?2",
                params![projects, limit.max(0)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })?;
        unposted(found)
    }

    async fn set_test_report(&self, job_id: i64, pipeline_id: i64, tests: Option<&str>) -> Result<()> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO job_reports (job_id, pipeline_id, tests) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (job_id) DO UPDATE SET tests = excluded.tests",
            )?
            .execute(params![job_id, pipeline_id, tests])?;
            Ok(())
        })
    }

    async fn set_coverage(&self, job_id: i64, pipeline_id: i64, coverage: Option<f64>) -> Result<()> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO job_reports (job_id, pipeline_id, coverage) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (job_id) DO UPDATE SET coverage = excluded.coverage",
            )?
            .execute(params![job_id, pipeline_id, coverage])?;
            Ok(())
        })
    }

    async fn job_reports(&self, pipeline_id: i64) -> Result<Vec<JobReport>> {
        self.read(|c| {
            rows(c, "SELECT job_id, tests, coverage FROM job_reports WHERE pipeline_id = ?1 ORDER BY job_id", params![pipeline_id], |r| {
                Ok(JobReport { job_id: r.get(0)?, tests: r.get(1)?, coverage: r.get(2)? })
            })
        })
    }

    async fn create_access_token(
        &self,
        user: &str,
        label: &str,
        token_hash: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<AccessToken> {
        let id: i64 = self.write(|c| {
            Ok(c.prepare_cached(
                "INSERT INTO access_tokens (user_name, label, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            )?
            .query_row(params![user, label, token_hash, now, expires_at], |r| r.get(0))?)
        })?;
        Ok(AccessToken { id, user: user.into(), label: label.into(), created_at: now, expires_at, revoked_at: None })
    }

    async fn access_token(&self, token_hash: &str, now: i64) -> Result<Option<AccessToken>> {
        self.read(|c| {
            row(
                c,
                concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM access_tokens WHERE token_hash = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)"
                ),
                params![token_hash, now],
                token_row,
            )
        })
    }

    async fn access_tokens(&self, user: Option<&str>) -> Result<Vec<AccessToken>> {
        self.read(|c| {
            rows(
                c,
                concat!("SELECT ", token_columns!(), " FROM access_tokens WHERE ?1 IS NULL OR user_name = ?1 ORDER BY id"),
                params![user],
                token_row,
            )
        })
    }

    async fn revoke_access_token(&self, id: i64, now: i64) -> Result<bool> {
        let done = self.write(|c| {
            Ok(c.prepare_cached("UPDATE access_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
                .execute(params![id, now])?)
        })?;
        Ok(done == 1)
    }

    async fn create_session(&self, token_hash: &str, session: &Session) -> Result<()> {
        let groups = tags_json(&session.groups)?;
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")?.execute(params![session.created_at])?;
            tx.prepare_cached("INSERT INTO sessions (token_hash, user_name, groups, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![token_hash, session.user, groups, session.created_at, session.expires_at])?;
            tx.commit()?;
            Ok(())
        })
    }

    async fn session(&self, token_hash: &str, now: i64) -> Result<Option<Session>> {
        let found: Option<(String, String, i64, i64)> = self.read(|c| {
            row(
                c,
                "SELECT user_name, groups, created_at, expires_at FROM sessions WHERE token_hash = ?1 AND expires_at > ?2",
                params![token_hash, now],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
        })?;
        let Some((user, groups, created_at, expires_at)) = found else { return Ok(None) };
        let groups = tags_from_json("session groups of", 0, &groups)?;
        Ok(Some(Session { user, groups, created_at, expires_at }))
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        self.write(|c| {
            c.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?.execute(params![token_hash])?;
            Ok(())
        })
    }
}

/// The first row `sql` returns, decoded by `decode`, or `None`.
fn row<T>(c: &Connection, sql: &str, params: impl rusqlite::Params, decode: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<Option<T>> {
    let mut stmt = c.prepare_cached(sql)?;
    let mut found = stmt.query(params)?;
    match found.next()? {
        Some(r) => decode(r).map(Some),
        None => Ok(None),
    }
}

/// Every row `sql` returns, decoded by `decode`.
fn rows<T>(c: &Connection, sql: &str, params: impl rusqlite::Params, mut decode: impl FnMut(&Row<'_>) -> Result<T>) -> Result<Vec<T>> {
    let mut stmt = c.prepare_cached(sql)?;
    let mut found = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = found.next()? {
        out.push(decode(r)?);
    }
    Ok(out)
}

fn token_row(r: &Row<'_>) -> Result<AccessToken> {
    Ok(AccessToken {
        id: r.get(0)?,
        user: r.get(1)?,
        label: r.get(2)?,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

/// Why a guarded pipeline update changed no row: the pipeline is missing, or its version is
/// not the expected one (the caller rolls back by dropping the transaction).
fn conflict(tx: &Connection, pipeline: i64, expected: i64) -> StoreError {
    match tx
        .prepare_cached("SELECT version FROM pipelines WHERE id = ?1")
        .and_then(|mut s| s.query_row(params![pipeline], |r| r.get(0)).optional())
    {
        Ok(Some(found)) => StoreError::Conflict { pipeline, expected, found },
        Ok(None) => StoreError::NotFound { what: "pipeline", id: pipeline },
        Err(e) => e.into(),
    }
}

fn update_job(tx: &Connection, pipeline_id: i64, update: &JobUpdate) -> Result<()> {
    let (done, job_id) = match update {
        // A new attempt: nothing of the previous one's claim or result survives.
        JobUpdate::Status { job_id, status: JobStatus::Pending, attempt, at: _ } => {
            // The attempt this one replaces keeps its result (a retry must not erase why the
            // first attempt failed). An attempt still `running` here ended with a result: failed.
            tx.prepare_cached(
                "INSERT INTO job_attempts (job_id, attempt, status, exit_code, failure_reason, started_at, finished_at) \
                 SELECT id, attempt, CASE WHEN status = ?4 AND failure_reason IS NOT NULL THEN ?5 ELSE status END, \
                 exit_code, failure_reason, started_at, finished_at \
                 FROM jobs WHERE id = ?1 AND pipeline_id = ?2 AND attempt < ?3 \
                 ON CONFLICT (job_id, attempt) DO NOTHING",
            )?
            .execute(params![
                job_id,
                pipeline_id,
                i64::from(*attempt),
                JobStatus::Running.as_str(),
                JobStatus::Failed.as_str()
            ])?;
            let done = tx
                .prepare_cached(
                    "UPDATE jobs SET status = ?4, attempt = ?3, runner_id = NULL, token_hash = NULL, lease_expires_at = NULL, \
                     cancel_requested = 0, started_at = NULL, finished_at = NULL, exit_code = NULL, failure_reason = NULL, \
                     artifacts = NULL, dotenv = NULL, reused_from = NULL, reuse_key = NULL \
                     WHERE id = ?1 AND pipeline_id = ?2",
                )?
                .execute(params![job_id, pipeline_id, i64::from(*attempt), JobStatus::Pending.as_str()])?;
            (done, *job_id)
        }
        JobUpdate::Status { job_id, status, attempt, at } => {
            let done = tx
                .prepare_cached(
                    "UPDATE jobs SET status = ?3, attempt = ?4, \
                     started_at = CASE WHEN ?7 THEN COALESCE(started_at, ?5) ELSE started_at END, \
                     finished_at = CASE WHEN ?6 THEN COALESCE(finished_at, ?5) ELSE finished_at END \
                     WHERE id = ?1 AND pipeline_id = ?2",
                )?
                .execute(params![
                    job_id,
                    pipeline_id,
                    status.as_str(),
                    i64::from(*attempt),
                    at,
                    status.is_complete(),
                    *status == JobStatus::Running
                ])?;
            (done, *job_id)
        }
        JobUpdate::Result { job_id, exit_code, failure_reason, at } => {
            let done = tx
                .prepare_cached("UPDATE jobs SET exit_code = ?3, failure_reason = ?4, finished_at = ?5 WHERE id = ?1 AND pipeline_id = ?2")?
                .execute(params![job_id, pipeline_id, exit_code.map(i64::from), failure_reason, at])?;
            (done, *job_id)
        }
        JobUpdate::RunAnyway { job_id, attempt } => {
            let done = tx.prepare_cached("UPDATE jobs SET run_anyway = ?3 WHERE id = ?1 AND pipeline_id = ?2")?.execute(params![
                job_id,
                pipeline_id,
                i64::from(*attempt)
            ])?;
            (done, *job_id)
        }
        JobUpdate::RequestCancel { job_id } => {
            let done = tx
                .prepare_cached("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND pipeline_id = ?2")?
                .execute(params![job_id, pipeline_id])?;
            (done, *job_id)
        }
    };
    if done == 0 {
        return Err(StoreError::NotFound { what: "job", id: job_id });
    }
    Ok(())
}

fn runner_row(r: &Row<'_>) -> Result<Runner> {
    let id = r.get(0)?;
    let projects: Option<String> = r.get(5)?;
    let tags: String = r.get(2)?;
    Ok(Runner {
        id,
        name: r.get(1)?,
        tags: tags_from_json("runner", id, &tags)?,
        scope: RunnerScope {
            run_untagged: r.get(3)?,
            protected_only: r.get(4)?,
            projects: projects.as_deref().map(|p| tags_from_json("runner projects", id, p)).transpose()?,
        },
        created_at: r.get(6)?,
        last_seen_at: r.get(7)?,
    })
}

fn pipeline_row(r: &Row<'_>) -> Result<PipelineRow> {
    let id = r.get(0)?;
    let status: String = r.get(7)?;
    Ok(PipelineRow {
        id,
        project: r.get(1)?,
        git_ref: r.get(2)?,
        sha: r.get(3)?,
        before_sha: r.get(4)?,
        source: r.get(5)?,
        trigger: r.get(6)?,
        status: pipeline_status(id, &status)?,
        error: r.get(8)?,
        version: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        iid: r.get(17)?,
        approval: r.get::<_, bool>(12)?.then(|| -> Result<Approval> { Ok(Approval { by: r.get(13)?, at: r.get(14)? }) }).transpose()?,
        upstream: match (r.get::<_, Option<i64>>(15)?, r.get::<_, Option<i64>>(16)?) {
            (Some(pipeline_id), Some(job_id)) => Some(super::Upstream { pipeline_id, job_id }),
            _ => None,
        },
    })
}

fn job_row(r: &Row<'_>) -> Result<JobRow> {
    let id = r.get(0)?;
    let tags: String = r.get(5)?;
    let status: String = r.get(7)?;
    Ok(JobRow {
        id,
        pipeline_id: r.get(1)?,
        name: r.get(2)?,
        stage: r.get(3)?,
        stage_index: r.get(4)?,
        tags: tags_from_json("job", id, &tags)?,
        spec: r.get(6)?,
        status: job_status(id, &status)?,
        attempt: r.get(8)?,
        runner_id: r.get(9)?,
        lease_expires_at: r.get(10)?,
        cancel_requested: r.get(11)?,
        started_at: r.get(12)?,
        finished_at: r.get(13)?,
        exit_code: r.get(14)?,
        failure_reason: r.get(15)?,
        artifacts: r.get(16)?,
        dotenv: r.get(17)?,
        reused_from: r.get(18)?,
        reuse_key: r.get(19)?,
        run_anyway: r.get(20)?,
    })
}

#[cfg(test)]
mod open_tests {
    use super::*;

    #[tokio::test]
    async fn every_connection_has_the_bounded_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("piste.db")).await.unwrap();
        let expected = -i64::from(PAGE_CACHE_KIB);
        let size = |c: &Connection| -> Result<i64> { Ok(c.query_row("PRAGMA cache_size", [], |r| r.get(0))?) };
        assert_eq!(store.write(|c| size(c)).unwrap(), expected);
        let idle = lock(&store.inner.readers).len();
        assert!(idle >= 2, "{idle} idle readers");
        for conn in lock(&store.inner.readers).iter() {
            assert_eq!(size(conn).unwrap(), expected);
        }
        // A reader opened when every idle one is in use on another thread has it too.
        assert_eq!(connect(&store.inner.path, true).and_then(|c| size(&c)).unwrap(), expected);
        store.close().await;
    }
}
