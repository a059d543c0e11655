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
//! SQLite has one writer at a time. Writes go through a pool of exactly one connection, so they
//! queue in the pool instead of spinning in SQLite's busy handler; multi-statement writes start
//! with `BEGIN IMMEDIATE`, which takes the write lock up front (a deferred transaction that
//! reads then writes can fail with `SQLITE_BUSY` when another process wrote in between).
//! Reads go through a pool of `query_only` connections and, in WAL mode, never wait for the
//! writer. `synchronous=NORMAL` in WAL mode loses no committed transaction on a process crash
//! (only on power loss, the last ones), which is what a CI server needs.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqliteConnection};

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

/// SQLite's "busy" and "locked" answers (and their extended codes).
fn busy(e: &StoreError) -> bool {
    let StoreError::Database(e) = e else { return false };
    let Some(db) = e.as_database_error() else { return false };
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
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
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
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("cache_size", format!("-{PAGE_CACHE_KIB}"));
        let writer = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        // The whole migration holds the write lock: two processes opening a new file at once
        // do not both create the tables.
        let migrator = sqlite_migrator().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        migrate_sqlite(&migrator, &mut tx).await?;
        tx.commit().await?;
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8) as u32;
        let readers = SqlitePoolOptions::new().max_connections(readers).connect_with(options.pragma("query_only", "ON")).await?;
        Ok(SqliteStore { writer, readers })
    }

    /// Closes every connection (waits for the ones in use).
    pub async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }
}

impl Store for SqliteStore {
    async fn register_runner(&self, name: &str, tags: &[String], scope: &RunnerScope, token_hash: &str, now: i64) -> Result<Runner> {
        let projects = scope.projects.as_deref().map(tags_json).transpose()?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runners (name, tags, token_hash, created_at, last_seen_at, run_untagged, protected_only, projects) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7) RETURNING id",
        )
        .bind(name)
        .bind(tags_json(tags)?)
        .bind(token_hash)
        .bind(now)
        .bind(scope.run_untagged)
        .bind(scope.protected_only)
        .bind(projects)
        .fetch_one(&self.writer)
        .await?;
        Ok(Runner { id, name: name.to_string(), tags: tags.to_vec(), scope: scope.clone(), created_at: now, last_seen_at: now })
    }

    async fn runners(&self, limit: i64) -> Result<Vec<Runner>> {
        let rows = sqlx::query(concat!("SELECT ", runner_columns!(), " FROM runners ORDER BY id LIMIT ?1"))
            .bind(limit.max(0))
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(runner_row).collect()
    }

    async fn runner_by_token(&self, token_hash: &str, now: i64) -> Result<Option<Runner>> {
        let row = sqlx::query(concat!("SELECT ", runner_columns!(), " FROM runners WHERE token_hash = ?1"))
            .bind(token_hash)
            .fetch_optional(&self.readers)
            .await?;
        let Some(mut runner) = row.as_ref().map(runner_row).transpose()? else { return Ok(None) };
        if runner.last_seen_at + SEEN_EVERY_MS <= now {
            sqlx::query("UPDATE runners SET last_seen_at = ?2 WHERE id = ?1 AND last_seen_at < ?2")
                .bind(runner.id)
                .bind(now)
                .execute(&self.writer)
                .await?;
            runner.last_seen_at = now;
        }
        Ok(Some(runner))
    }

    async fn record_pipeline(&self, delivery_id: &str, p: &NewPipeline) -> Result<Recorded> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let seen: Option<i64> = sqlx::query_scalar("SELECT pipeline_id FROM deliveries WHERE project = ?1 AND delivery_id = ?2")
            .bind(&p.project)
            .bind(delivery_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(id) = seen {
            return Ok(Recorded::Duplicate(id));
        }
        // `CI_PIPELINE_IID`: the project's next number, taken in this transaction (a row lock on
        // PostgreSQL, the one writer on SQLite), so no two pipelines of a project share one.
        let iid: i64 = sqlx::query_scalar(
            "INSERT INTO pipeline_iids (project, last_iid) VALUES (?1, 1) \
             ON CONFLICT (project) DO UPDATE SET last_iid = pipeline_iids.last_iid + 1 RETURNING last_iid",
        )
        .bind(&p.project)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO pipelines (project, git_ref, sha, before_sha, source, trigger, status, version, created_at, updated_at, \
             needs_approval, upstream_pipeline_id, upstream_job_id, iid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8, 0, ?7, ?7, ?9, ?10, ?11, ?12) RETURNING id",
        )
        .bind(&p.project)
        .bind(&p.git_ref)
        .bind(&p.sha)
        .bind(&p.before_sha)
        .bind(&p.source)
        .bind(&p.trigger)
        .bind(p.created_at)
        .bind(PipelineStatus::Created.as_str())
        .bind(p.needs_approval)
        .bind(p.upstream.map(|u| u.pipeline_id))
        .bind(p.upstream.map(|u| u.job_id))
        .bind(iid)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO deliveries (project, delivery_id, pipeline_id) VALUES (?1, ?2, ?3)")
            .bind(&p.project)
            .bind(delivery_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Recorded::Created(id))
    }

    async fn pipeline(&self, id: i64) -> Result<Option<PipelineRow>> {
        let row = sqlx::query(concat!("SELECT ", pipeline_columns!(), " FROM pipelines WHERE id = ?1"))
            .bind(id)
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(pipeline_row).transpose()
    }

    async fn downstream_pipelines(&self, pipeline_id: i64) -> Result<Vec<PipelineRow>> {
        let rows = sqlx::query(concat!("SELECT ", pipeline_columns!(), " FROM pipelines WHERE upstream_pipeline_id = ?1 ORDER BY id"))
            .bind(pipeline_id)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(pipeline_row).collect()
    }

    async fn pipelines(&self, project: Option<&str>, limit: i64) -> Result<Vec<PipelineRow>> {
        let limit = limit.max(0);
        let rows = match project {
            Some(project) => {
                sqlx::query(concat!("SELECT ", pipeline_columns!(), " FROM pipelines WHERE project = ?1 ORDER BY id DESC LIMIT ?2"))
                    .bind(project)
                    .bind(limit)
                    .fetch_all(&self.readers)
                    .await?
            }
            None => {
                sqlx::query(concat!("SELECT ", pipeline_columns!(), " FROM pipelines ORDER BY id DESC LIMIT ?1"))
                    .bind(limit)
                    .fetch_all(&self.readers)
                    .await?
            }
        };
        rows.iter().map(pipeline_row).collect()
    }

    async fn pipelines_with_status(&self, statuses: &[PipelineStatus]) -> Result<Vec<PipelineRow>> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let statuses = serde_json::to_string(&statuses).map_err(|source| StoreError::Encode { what: "statuses", source })?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            pipeline_columns!(),
            " FROM pipelines WHERE status IN (SELECT value FROM json_each(?1)) ORDER BY id"
        ))
        .bind(statuses)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(pipeline_row).collect()
    }

    async fn save_plan(&self, pipeline_id: i64, jobs: &[NewJob], status: PipelineStatus, now: i64) -> Result<Vec<i64>> {
        let tags = jobs.iter().map(|j| tags_json(&j.tags)).collect::<Result<Vec<_>>>()?;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let planned = sqlx::query("UPDATE pipelines SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status = ?4")
            .bind(pipeline_id)
            .bind(status.as_str())
            .bind(now)
            .bind(PipelineStatus::Created.as_str())
            .execute(&mut *tx)
            .await?;
        if planned.rows_affected() == 0 {
            return Err(conflict(&mut tx, pipeline_id, 0).await);
        }
        let mut ids = Vec::with_capacity(jobs.len());
        for (job, tags) in jobs.iter().zip(&tags) {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO jobs (pipeline_id, name, stage, stage_index, tags, spec, status, attempt, resource_group) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8) RETURNING id",
            )
            .bind(pipeline_id)
            .bind(&job.name)
            .bind(&job.stage)
            .bind(job.stage_index)
            .bind(tags)
            .bind(&job.spec)
            .bind(JobStatus::Created.as_str())
            .bind(&job.resource_group)
            .fetch_one(&mut *tx)
            .await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn fail_pipeline(&self, pipeline_id: i64, error: &str, now: i64) -> Result<()> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let failed = sqlx::query("UPDATE pipelines SET status = ?4, error = ?2, updated_at = ?3 WHERE id = ?1 AND status = ?5")
            .bind(pipeline_id)
            .bind(error)
            .bind(now)
            .bind(PipelineStatus::Failed.as_str())
            .bind(PipelineStatus::Created.as_str())
            .execute(&mut *tx)
            .await?;
        if failed.rows_affected() == 0 {
            return Err(conflict(&mut tx, pipeline_id, 0).await);
        }
        tx.commit().await?;
        Ok(())
    }

    async fn approve_pipeline(&self, pipeline_id: i64, by: &str, now: i64) -> Result<bool> {
        let approved = sqlx::query(
            "UPDATE pipelines SET approved_by = ?2, approved_at = ?3, updated_at = ?3 \
             WHERE id = ?1 AND needs_approval = 1 AND approved_by IS NULL AND version = 0 AND status = ?4",
        )
        .bind(pipeline_id)
        .bind(by)
        .bind(now)
        .bind(PipelineStatus::Manual.as_str())
        .execute(&self.writer)
        .await?;
        Ok(approved.rows_affected() == 1)
    }

    async fn events(&self, pipeline_id: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query("SELECT seq, event FROM pipeline_events WHERE pipeline_id = ?1 ORDER BY seq")
            .bind(pipeline_id)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(|r| event_from_json(pipeline_id, r.try_get("seq")?, r.try_get("event")?)).collect()
    }

    async fn apply(&self, t: &Transition) -> Result<i64> {
        let events = t.events.iter().map(event_json).collect::<Result<Vec<_>>>()?;
        let added = events.len() as i64;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let appended = sqlx::query(
            "UPDATE pipelines SET version = version + ?3, status = COALESCE(?4, status), updated_at = ?5, wake_at = ?6 \
             WHERE id = ?1 AND version = ?2",
        )
        .bind(t.pipeline_id)
        .bind(t.expected_version)
        .bind(added)
        .bind(t.pipeline_status.map(|s| s.as_str()))
        .bind(t.at)
        .bind(t.wake_at)
        .execute(&mut *tx)
        .await?;
        if appended.rows_affected() == 0 {
            return Err(conflict(&mut tx, t.pipeline_id, t.expected_version).await);
        }
        for (seq, event) in (t.expected_version + 1..).zip(&events) {
            sqlx::query("INSERT INTO pipeline_events (pipeline_id, seq, event) VALUES (?1, ?2, ?3)")
                .bind(t.pipeline_id)
                .bind(seq)
                .bind(event)
                .execute(&mut *tx)
                .await?;
        }
        for update in &t.jobs {
            update_job(&mut tx, t.pipeline_id, update).await?;
        }
        tx.commit().await?;
        Ok(t.expected_version + added)
    }

    async fn job(&self, id: i64) -> Result<Option<JobRow>> {
        let row =
            sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1")).bind(id).fetch_optional(&self.readers).await?;
        row.as_ref().map(job_row).transpose()
    }

    async fn jobs(&self, pipeline_id: i64) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE pipeline_id = ?1 ORDER BY id"))
            .bind(pipeline_id)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(job_row).collect()
    }

    async fn resource_holder(&self, project: &str, group: &str) -> Result<Option<(i64, i64)>> {
        let row = sqlx::query(
            "SELECT holder_job, holder_attempt FROM resource_groups WHERE project = ?1 AND name = ?2 AND holder_job IS NOT NULL",
        )
        .bind(project)
        .bind(group)
        .fetch_optional(&self.writer)
        .await?;
        Ok(match row {
            Some(r) => Some((r.try_get::<i64, _>("holder_job")?, r.try_get::<i64, _>("holder_attempt")?)),
            None => None,
        })
    }

    async fn grant_resource(&self, project: &str, group: &str, job: i64, attempt: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO resource_groups (project, name, holder_job, holder_attempt) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (project, name) DO UPDATE SET holder_job = excluded.holder_job, holder_attempt = excluded.holder_attempt \
             WHERE resource_groups.holder_job IS NULL",
        )
        .bind(project)
        .bind(group)
        .bind(job)
        .bind(attempt)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_resource(&self, project: &str, group: &str, job: i64, attempt: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE resource_groups SET holder_job = NULL, holder_attempt = NULL \
             WHERE project = ?1 AND name = ?2 AND holder_job = ?3 AND holder_attempt = ?4",
        )
        .bind(project)
        .bind(group)
        .bind(job)
        .bind(attempt)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn resource_groups_in_use(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT project, name FROM resource_groups WHERE holder_job IS NOT NULL \
             UNION SELECT p.project, j.resource_group FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id \
             WHERE j.resource_group IS NOT NULL AND j.status = ?1 ORDER BY 1, 2",
        )
        .bind(JobStatus::WaitingForResource.as_str())
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?))).collect()
    }

    async fn resource_queue(&self, project: &str, group: &str) -> Result<Vec<ResourceCandidate>> {
        let rows = sqlx::query(
            "SELECT j.id, j.pipeline_id, j.name, j.status, j.attempt FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id \
             WHERE p.project = ?1 AND j.resource_group = ?2 AND p.version > 0 AND j.status IN (?3, ?4, ?5) \
             ORDER BY j.pipeline_id, j.id",
        )
        .bind(project)
        .bind(group)
        .bind(JobStatus::Created.as_str())
        .bind(JobStatus::Scheduled.as_str())
        .bind(JobStatus::WaitingForResource.as_str())
        .fetch_all(&self.writer)
        .await?;
        rows.iter()
            .map(|r| {
                let job_id: i64 = r.try_get("id")?;
                Ok(ResourceCandidate {
                    job_id,
                    pipeline_id: r.try_get("pipeline_id")?,
                    name: r.try_get("name")?,
                    status: job_status(job_id, &r.try_get::<String, _>("status")?)?,
                    attempt: r.try_get("attempt")?,
                })
            })
            .collect()
    }

    async fn past_attempts(&self, job_id: i64) -> Result<Vec<AttemptRow>> {
        let rows: Vec<super::backend::AttemptColumns> = sqlx::query_as(
            "SELECT attempt, status, exit_code, failure_reason, started_at, finished_at FROM job_attempts WHERE job_id = ?1 ORDER BY attempt",
        )
        .bind(job_id)
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(|r| super::backend::attempt_row(job_id, r)).collect()
    }

    async fn claim_job(&self, runner: &Runner, token_hash: &str, now: i64, lease_until: i64) -> Result<Option<Claimed>> {
        // One statement, so one atomic write: the oldest pending job none of whose tags is
        // missing from the runner's (jobs without tags, stored as `[]`, only for runners that
        // take untagged jobs), of a protected ref for a protected runner (the trigger's
        // `ref_protected`, which also decides the secrets), of one of its projects if it has a
        // list.
        let row = sqlx::query(concat!(
            "UPDATE jobs SET status = ?6, runner_id = ?1, token_hash = ?2, started_at = ?3, lease_expires_at = ?4 \
             WHERE id = (SELECT j.id FROM jobs AS j JOIN pipelines AS p ON p.id = j.pipeline_id WHERE j.status = ?7 \
               AND CASE WHEN j.tags = '[]' THEN ?8 ELSE NOT EXISTS ( \
                 SELECT 1 FROM json_each(j.tags) AS t WHERE t.value NOT IN (SELECT value FROM json_each(?5))) END \
               AND (?9 = 0 OR json_extract(p.trigger, '$.ref_protected') = 1) \
               AND (?10 IS NULL OR p.project IN (SELECT value FROM json_each(?10))) \
               ORDER BY j.id LIMIT 1) \
             RETURNING ",
            job_columns!()
        ))
        .bind(runner.id)
        .bind(token_hash)
        .bind(now)
        .bind(lease_until)
        .bind(tags_json(&runner.tags)?)
        .bind(JobStatus::Running.as_str())
        .bind(JobStatus::Pending.as_str())
        .bind(runner.tags.is_empty() || runner.scope.run_untagged)
        .bind(runner.scope.protected_only)
        .bind(runner.scope.projects.as_deref().map(tags_json).transpose()?)
        .fetch_optional(&self.writer)
        .await?;
        let Some(job) = row.as_ref().map(job_row).transpose()? else { return Ok(None) };
        Ok(Some(Claimed { job, lease_expires_at: lease_until }))
    }

    async fn job_by_token(&self, id: i64, token_hash: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1 AND token_hash = ?2 AND status IN (?3, ?4)"))
            .bind(id)
            .bind(token_hash)
            .bind(held()[0])
            .bind(held()[1])
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(job_row).transpose()
    }

    async fn extend_lease(&self, id: i64, until: i64) -> Result<bool> {
        let cancel: Option<bool> =
            sqlx::query_scalar("UPDATE jobs SET lease_expires_at = ?2 WHERE id = ?1 AND status IN (?3, ?4) RETURNING cancel_requested")
                .bind(id)
                .bind(until)
                .bind(held()[0])
                .bind(held()[1])
                .fetch_optional(&self.writer)
                .await?;
        cancel.ok_or(StoreError::NotFound { what: "running job", id })
    }

    async fn expired_leases(&self, now: i64) -> Result<Vec<JobRow>> {
        let rows =
            sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE status IN (?2, ?3) AND lease_expires_at < ?1 ORDER BY id"))
                .bind(now)
                .bind(held()[0])
                .bind(held()[1])
                .fetch_all(&self.readers)
                .await?;
        rows.iter().map(job_row).collect()
    }

    async fn project_has_artifacts(&self, project: &str, digest: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM jobs JOIN pipelines ON pipelines.id = jobs.pipeline_id \
             WHERE pipelines.project = ?1 AND jobs.artifacts = ?2 LIMIT 1",
        )
        .bind(project)
        .bind(digest)
        .fetch_optional(&self.readers)
        .await?;
        Ok(found.is_some())
    }

    async fn set_artifacts(&self, id: i64, digest: &str) -> Result<()> {
        let done = sqlx::query("UPDATE jobs SET artifacts = ?2 WHERE id = ?1").bind(id).bind(digest).execute(&self.writer).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "job", id });
        }
        Ok(())
    }

    async fn set_dotenv(&self, id: i64, dotenv_json: &str) -> Result<()> {
        let done = sqlx::query("UPDATE jobs SET dotenv = ?2 WHERE id = ?1").bind(id).bind(dotenv_json).execute(&self.writer).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "job", id });
        }
        Ok(())
    }

    async fn set_reuse_key(&self, id: i64, attempt: i64, scope_key: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE jobs SET reuse_key = ?5 WHERE id = ?1 AND attempt = ?2 AND status IN (?3, ?4)")
            .bind(id)
            .bind(attempt)
            .bind(held()[0])
            .bind(held()[1])
            .bind(scope_key)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_reused_from(&self, id: i64, attempt: i64, reused_from: &str) -> Result<()> {
        let done = sqlx::query("UPDATE jobs SET reused_from = ?3 WHERE id = ?1 AND attempt = ?2")
            .bind(id)
            .bind(attempt)
            .bind(reused_from)
            .execute(&self.writer)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "job", id });
        }
        Ok(())
    }

    async fn reuse_record(&self, scope_key: &str, project: &str) -> Result<Option<ReuseRecord>> {
        let row: Option<super::backend::ReuseColumns> = sqlx::query_as(
            "SELECT job_id, attempt, pipeline_id, job_name, artifacts, dotenv, coverage FROM reuse_records WHERE scope_key = ?1 AND project = ?2",
        )
        .bind(scope_key)
        .bind(project)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(|(job_id, attempt, pipeline_id, job_name, artifacts, dotenv, coverage)| ReuseRecord {
            job_id,
            attempt,
            pipeline_id,
            job_name,
            artifacts,
            dotenv,
            coverage,
        }))
    }

    async fn record_reuse(&self, scope_key: &str, project: &str, r: &ReuseRecord, at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO reuse_records (scope_key, project, job_id, attempt, pipeline_id, job_name, artifacts, dotenv, coverage, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, ?10, ?8) \
             ON CONFLICT (scope_key) DO UPDATE SET project = excluded.project, job_id = excluded.job_id, attempt = excluded.attempt, \
             pipeline_id = excluded.pipeline_id, job_name = excluded.job_name, artifacts = excluded.artifacts, dotenv = excluded.dotenv, coverage = excluded.coverage, \
             created_at = excluded.created_at",
        )
        .bind(scope_key)
        .bind(project)
        .bind(r.job_id)
        .bind(r.attempt)
        .bind(r.pipeline_id)
        .bind(&r.job_name)
        .bind(&r.artifacts)
        .bind(at)
        .bind(&r.dotenv)
        .bind(r.coverage)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn forget_reuse(&self, scope_key: &str) -> Result<()> {
        sqlx::query("DELETE FROM reuse_records WHERE scope_key = ?1").bind(scope_key).execute(&self.writer).await?;
        Ok(())
    }

    async fn id_token_key(&self, name: &str, candidate: &StoredKey, now: i64) -> Result<StoredKey> {
        // Insert if absent, then read: whoever inserted first, every server reads that row.
        sqlx::query("INSERT INTO id_token_keys (name, alg, pkcs8, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&candidate.alg)
            .bind(&candidate.pkcs8)
            .bind(now)
            .execute(&self.writer)
            .await?;
        let (alg, pkcs8): (String, Vec<u8>) =
            sqlx::query_as("SELECT alg, pkcs8 FROM id_token_keys WHERE name = ?1").bind(name).fetch_one(&self.writer).await?;
        Ok(StoredKey { alg, pkcs8 })
    }

    async fn log_chunks(&self, job: i64, attempt: i64, from: u64) -> Result<Vec<(u64, u64)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            r#"SELECT "offset", length(data) FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND "offset" >= ?3 ORDER BY "offset""#,
        )
        .bind(job)
        .bind(attempt)
        .bind(from as i64)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(|(o, l)| (o as u64, l as u64)).collect())
    }

    async fn log_chunk(&self, job: i64, attempt: i64, offset: u64) -> Result<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as(r#"SELECT data FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND "offset" = ?3"#)
            .bind(job)
            .bind(attempt)
            .bind(offset as i64)
            .fetch_optional(&self.readers)
            .await?;
        Ok(row.map(|(d,)| d))
    }

    async fn put_log_chunk(&self, job: i64, attempt: i64, offset: u64, data: &[u8], at_ms: Option<i64>) -> Result<()> {
        sqlx::query(
            r#"INSERT INTO log_chunks (job_id, attempt, "offset", data, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (job_id, attempt, "offset") DO UPDATE SET data = excluded.data, at_ms = COALESCE(excluded.at_ms, log_chunks.at_ms)"#,
        )
        .bind(job)
        .bind(attempt)
        .bind(offset as i64)
        .bind(data)
        .bind(at_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn log_chunk_times(&self, job: i64, attempt: i64, range: std::ops::Range<u64>) -> Result<Vec<(u64, i64)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            r#"SELECT "offset", at_ms FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND at_ms IS NOT NULL AND "offset" < ?4
             AND "offset" >= COALESCE((SELECT MAX("offset") FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND at_ms IS NOT NULL AND "offset" <= ?3), 0)
             ORDER BY "offset""#,
        )
        .bind(job)
        .bind(attempt)
        .bind(range.start.min(i64::MAX as u64) as i64)
        .bind(range.end.min(i64::MAX as u64) as i64)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(|(o, t)| (o as u64, t)).collect())
    }

    async fn delete_log_chunks(&self, job: i64, attempt: i64) -> Result<()> {
        sqlx::query("DELETE FROM log_chunks WHERE job_id = ?1 AND attempt = ?2").bind(job).bind(attempt).execute(&self.writer).await?;
        Ok(())
    }

    async fn open_logs(&self) -> Result<Vec<(i64, i64)>> {
        Ok(sqlx::query_as("SELECT DISTINCT job_id, attempt FROM log_chunks ORDER BY job_id, attempt").fetch_all(&self.readers).await?)
    }

    async fn queue_depth(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = ?1")
            .bind(JobStatus::Pending.as_str())
            .fetch_one(&self.readers)
            .await?)
    }

    async fn counts(&self) -> Result<Counts> {
        // One read transaction: the three counts come from one snapshot.
        let mut tx = self.readers.begin().await?;
        let jobs_by_status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status").fetch_all(&mut *tx).await?;
        let pipelines_by_status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM pipelines GROUP BY status ORDER BY status").fetch_all(&mut *tx).await?;
        let runners = sqlx::query_scalar("SELECT COUNT(*) FROM runners").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(Counts {
            jobs_by_status: status_counts(jobs_by_status, JobStatus::parse)?,
            pipelines_by_status: status_counts(pipelines_by_status, PipelineStatus::parse)?,
            runners,
        })
    }

    async fn wakeups(&self, limit: i64) -> Result<Vec<Wakeup>> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT id, wake_at FROM pipelines WHERE wake_at IS NOT NULL ORDER BY wake_at, id LIMIT ?1")
                .bind(limit.max(0))
                .fetch_all(&self.readers)
                .await?;
        Ok(rows.into_iter().map(|(pipeline_id, at)| Wakeup { pipeline_id, at }).collect())
    }
    async fn record_forge_post(&self, pipeline_id: i64, state: &str, error: Option<&str>, at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO forge_statuses (pipeline_id, state, posted, error, at) \
             VALUES (?1, ?2, CASE WHEN ?3 IS NULL THEN ?2 END, ?3, ?4) \
             ON CONFLICT (pipeline_id) DO UPDATE SET state = excluded.state, error = excluded.error, at = excluded.at, \
             posted = CASE WHEN excluded.error IS NULL THEN excluded.state ELSE forge_statuses.posted END",
        )
        .bind(pipeline_id)
        .bind(state)
        .bind(error)
        .bind(at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn forge_post(&self, pipeline_id: i64) -> Result<Option<ForgePost>> {
        let row: Option<(String, Option<String>, Option<String>, i64)> =
            sqlx::query_as("SELECT state, posted, error, at FROM forge_statuses WHERE pipeline_id = ?1")
                .bind(pipeline_id)
                .fetch_optional(&self.readers)
                .await?;
        Ok(row.map(|(state, posted, error, at)| ForgePost { pipeline_id, state, posted, error, at }))
    }

    async fn forge_unposted(&self, projects: &[String], limit: i64) -> Result<Vec<Unposted>> {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT p.id, p.status, f.posted FROM pipelines p LEFT JOIN forge_statuses f ON f.pipeline_id = p.id \
             WHERE p.project IN (SELECT value FROM json_each(?1)) AND (f.posted IS NULL OR f.posted <> p.status) ORDER BY p.id DESC LIMIT ?2",
        )
        .bind(serde_json::to_string(projects).map_err(|source| StoreError::Encode { what: "projects", source })?)
        .bind(limit.max(0))
        .fetch_all(&self.readers)
        .await?;
        unposted(rows)
    }

    async fn set_test_report(&self, job_id: i64, pipeline_id: i64, tests: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_reports (job_id, pipeline_id, tests) VALUES (?1, ?2, ?3) \
             ON CONFLICT (job_id) DO UPDATE SET tests = excluded.tests",
        )
        .bind(job_id)
        .bind(pipeline_id)
        .bind(tests)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn set_coverage(&self, job_id: i64, pipeline_id: i64, coverage: Option<f64>) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_reports (job_id, pipeline_id, coverage) VALUES (?1, ?2, ?3) \
             ON CONFLICT (job_id) DO UPDATE SET coverage = excluded.coverage",
        )
        .bind(job_id)
        .bind(pipeline_id)
        .bind(coverage)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn job_reports(&self, pipeline_id: i64) -> Result<Vec<JobReport>> {
        let rows: Vec<(i64, Option<String>, Option<f64>)> =
            sqlx::query_as("SELECT job_id, tests, coverage FROM job_reports WHERE pipeline_id = ?1 ORDER BY job_id")
                .bind(pipeline_id)
                .fetch_all(&self.readers)
                .await?;
        Ok(rows.into_iter().map(|(job_id, tests, coverage)| JobReport { job_id, tests, coverage }).collect())
    }

    async fn create_access_token(
        &self,
        user: &str,
        label: &str,
        token_hash: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<AccessToken> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO access_tokens (user_name, label, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        )
        .bind(user)
        .bind(label)
        .bind(token_hash)
        .bind(now)
        .bind(expires_at)
        .fetch_one(&self.writer)
        .await?;
        Ok(AccessToken { id, user: user.into(), label: label.into(), created_at: now, expires_at, revoked_at: None })
    }

    async fn access_token(&self, token_hash: &str, now: i64) -> Result<Option<AccessToken>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM access_tokens WHERE token_hash = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.readers)
        .await?;
        row.as_ref().map(token_row).transpose()
    }

    async fn access_tokens(&self, user: Option<&str>) -> Result<Vec<AccessToken>> {
        let rows = sqlx::query(concat!("SELECT ", token_columns!(), " FROM access_tokens WHERE ?1 IS NULL OR user_name = ?1 ORDER BY id"))
            .bind(user)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(token_row).collect()
    }

    async fn revoke_access_token(&self, id: i64, now: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE access_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_session(&self, token_hash: &str, session: &Session) -> Result<()> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at <= ?1").bind(session.created_at).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO sessions (token_hash, user_name, groups, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(token_hash)
            .bind(&session.user)
            .bind(tags_json(&session.groups)?)
            .bind(session.created_at)
            .bind(session.expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str, now: i64) -> Result<Option<Session>> {
        let row: Option<(String, String, i64, i64)> =
            sqlx::query_as("SELECT user_name, groups, created_at, expires_at FROM sessions WHERE token_hash = ?1 AND expires_at > ?2")
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.readers)
                .await?;
        let Some((user, groups, created_at, expires_at)) = row else { return Ok(None) };
        let groups = tags_from_json("session groups of", 0, &groups)?;
        Ok(Some(Session { user, groups, created_at, expires_at }))
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = ?1").bind(token_hash).execute(&self.writer).await?;
        Ok(())
    }
}

fn token_row(r: &SqliteRow) -> Result<AccessToken> {
    Ok(AccessToken {
        id: r.try_get("id")?,
        user: r.try_get("user_name")?,
        label: r.try_get("label")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// Why a guarded pipeline update changed no row: the pipeline is missing, or its version is
/// not the expected one (the caller rolls back by dropping the transaction).
async fn conflict(tx: &mut SqliteConnection, pipeline: i64, expected: i64) -> StoreError {
    match sqlx::query_scalar::<_, i64>("SELECT version FROM pipelines WHERE id = ?1").bind(pipeline).fetch_optional(tx).await {
        Ok(Some(found)) => StoreError::Conflict { pipeline, expected, found },
        Ok(None) => StoreError::NotFound { what: "pipeline", id: pipeline },
        Err(e) => e.into(),
    }
}

async fn update_job(tx: &mut SqliteConnection, pipeline_id: i64, update: &JobUpdate) -> Result<()> {
    let (done, job_id) = match update {
        // A new attempt: nothing of the previous one's claim or result survives.
        JobUpdate::Status { job_id, status: JobStatus::Pending, attempt, at: _ } => {
            // The attempt this one replaces keeps its result (a retry must not erase why the
            // first attempt failed). An attempt still `running` here ended with a result: failed.
            sqlx::query(
                "INSERT INTO job_attempts (job_id, attempt, status, exit_code, failure_reason, started_at, finished_at) \
                 SELECT id, attempt, CASE WHEN status = ?4 AND failure_reason IS NOT NULL THEN ?5 ELSE status END, \
                 exit_code, failure_reason, started_at, finished_at \
                 FROM jobs WHERE id = ?1 AND pipeline_id = ?2 AND attempt < ?3 \
                 ON CONFLICT (job_id, attempt) DO NOTHING",
            )
            .bind(job_id)
            .bind(pipeline_id)
            .bind(i64::from(*attempt))
            .bind(JobStatus::Running.as_str())
            .bind(JobStatus::Failed.as_str())
            .execute(&mut *tx)
            .await?;
            let done = sqlx::query(
                "UPDATE jobs SET status = ?4, attempt = ?3, runner_id = NULL, token_hash = NULL, lease_expires_at = NULL, \
                 cancel_requested = 0, started_at = NULL, finished_at = NULL, exit_code = NULL, failure_reason = NULL, \
                 artifacts = NULL, dotenv = NULL, reused_from = NULL, reuse_key = NULL \
                 WHERE id = ?1 AND pipeline_id = ?2",
            )
            .bind(job_id)
            .bind(pipeline_id)
            .bind(i64::from(*attempt))
            .bind(JobStatus::Pending.as_str())
            .execute(&mut *tx)
            .await?;
            (done, *job_id)
        }
        JobUpdate::Status { job_id, status, attempt, at } => {
            let done = sqlx::query(
                "UPDATE jobs SET status = ?3, attempt = ?4, \
                 started_at = CASE WHEN ?7 THEN COALESCE(started_at, ?5) ELSE started_at END, \
                 finished_at = CASE WHEN ?6 THEN COALESCE(finished_at, ?5) ELSE finished_at END \
                 WHERE id = ?1 AND pipeline_id = ?2",
            )
            .bind(job_id)
            .bind(pipeline_id)
            .bind(status.as_str())
            .bind(i64::from(*attempt))
            .bind(at)
            .bind(status.is_complete())
            .bind(*status == JobStatus::Running)
            .execute(&mut *tx)
            .await?;
            (done, *job_id)
        }
        JobUpdate::Result { job_id, exit_code, failure_reason, at } => {
            let done =
                sqlx::query("UPDATE jobs SET exit_code = ?3, failure_reason = ?4, finished_at = ?5 WHERE id = ?1 AND pipeline_id = ?2")
                    .bind(job_id)
                    .bind(pipeline_id)
                    .bind(exit_code.map(i64::from))
                    .bind(failure_reason)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            (done, *job_id)
        }
        JobUpdate::RunAnyway { job_id, attempt } => {
            let done = sqlx::query("UPDATE jobs SET run_anyway = ?3 WHERE id = ?1 AND pipeline_id = ?2")
                .bind(job_id)
                .bind(pipeline_id)
                .bind(i64::from(*attempt))
                .execute(&mut *tx)
                .await?;
            (done, *job_id)
        }
        JobUpdate::RequestCancel { job_id } => {
            let done = sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND pipeline_id = ?2")
                .bind(job_id)
                .bind(pipeline_id)
                .execute(&mut *tx)
                .await?;
            (done, *job_id)
        }
    };
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound { what: "job", id: job_id });
    }
    Ok(())
}

fn runner_row(r: &SqliteRow) -> Result<Runner> {
    let id = r.try_get("id")?;
    let projects: Option<String> = r.try_get("projects")?;
    Ok(Runner {
        id,
        name: r.try_get("name")?,
        tags: tags_from_json("runner", id, r.try_get("tags")?)?,
        scope: RunnerScope {
            run_untagged: r.try_get("run_untagged")?,
            protected_only: r.try_get("protected_only")?,
            projects: projects.as_deref().map(|p| tags_from_json("runner projects", id, p)).transpose()?,
        },
        created_at: r.try_get("created_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
    })
}

fn pipeline_row(r: &SqliteRow) -> Result<PipelineRow> {
    let id = r.try_get("id")?;
    Ok(PipelineRow {
        id,
        project: r.try_get("project")?,
        git_ref: r.try_get("git_ref")?,
        sha: r.try_get("sha")?,
        before_sha: r.try_get("before_sha")?,
        source: r.try_get("source")?,
        trigger: r.try_get("trigger")?,
        status: pipeline_status(id, r.try_get("status")?)?,
        error: r.try_get("error")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        iid: r.try_get("iid")?,
        approval: r
            .try_get::<bool, _>("needs_approval")?
            .then(|| -> Result<Approval> { Ok(Approval { by: r.try_get("approved_by")?, at: r.try_get("approved_at")? }) })
            .transpose()?,
        upstream: match (r.try_get::<Option<i64>, _>("upstream_pipeline_id")?, r.try_get::<Option<i64>, _>("upstream_job_id")?) {
            (Some(pipeline_id), Some(job_id)) => Some(super::Upstream { pipeline_id, job_id }),
            _ => None,
        },
    })
}

fn job_row(r: &SqliteRow) -> Result<JobRow> {
    let id = r.try_get("id")?;
    Ok(JobRow {
        id,
        pipeline_id: r.try_get("pipeline_id")?,
        name: r.try_get("name")?,
        stage: r.try_get("stage")?,
        stage_index: r.try_get("stage_index")?,
        tags: tags_from_json("job", id, r.try_get("tags")?)?,
        spec: r.try_get("spec")?,
        status: job_status(id, r.try_get("status")?)?,
        attempt: r.try_get("attempt")?,
        runner_id: r.try_get("runner_id")?,
        lease_expires_at: r.try_get("lease_expires_at")?,
        cancel_requested: r.try_get("cancel_requested")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        exit_code: r.try_get("exit_code")?,
        failure_reason: r.try_get("failure_reason")?,
        artifacts: r.try_get("artifacts")?,
        dotenv: r.try_get("dotenv")?,
        reused_from: r.try_get("reused_from")?,
        reuse_key: r.try_get("reuse_key")?,
        run_anyway: r.try_get("run_anyway")?,
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
        let writer: i64 = sqlx::query_scalar("PRAGMA cache_size").fetch_one(&store.writer).await.unwrap();
        assert_eq!(writer, expected);
        // Hold every reader at once, so that each connection of the pool is asked.
        let mut readers = Vec::new();
        for _ in 0..store.readers.options().get_max_connections() {
            readers.push(store.readers.acquire().await.unwrap());
        }
        for conn in &mut readers {
            let size: i64 = sqlx::query_scalar("PRAGMA cache_size").fetch_one(&mut **conn).await.unwrap();
            assert_eq!(size, expected);
        }
        drop(readers);
        store.close().await;
    }
}
