//! The store for several `piste serve` on one PostgreSQL database.
//!
//! The schema is SQLite's (see `sqlite.rs`; `server/migrations/postgres/`), with `BIGINT`
//! identity keys, `BOOLEAN` and `TEXT[]` tags. Migrations run under sqlx's advisory lock, so
//! servers starting together apply them once.
//!
//! # Sharing the queue
//!
//! Transactions run at READ COMMITTED; every guarded write re-checks its condition on the row's
//! latest version after waiting for its lock, so:
//! - `claim_job` is one `UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)`: the oldest
//!   pending job with `tags <@ runner_tags` that no other claimer holds; a claimer never waits
//!   for another and never gets a job someone else got.
//! - `apply` bumps `version` with `WHERE version = expected` before anything else: of two
//!   servers appending to one pipeline, the second waits for the first's lock, then matches no
//!   row and gets `Conflict`, with nothing written.
//! - `record_pipeline` inserts the delivery with `ON CONFLICT DO NOTHING`: of two servers
//!   receiving one delivery, the second finds the first's pipeline and drops its own.
//! - `save_plan` and `fail_pipeline` only move a pipeline out of `created`, so it is planned once.

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};

use super::backend::{event_from_json, event_json, held, job_status, pipeline_status, postgres_migrator, status_counts};
use super::{
    Claimed, Counts, JobRow, JobUpdate, NewJob, NewPipeline, PipelineRow, Recorded, Result, Runner, Store, StoreError, Transition, Wakeup,
};
use scheduler::{Event, JobStatus, PipelineStatus};

/// `last_seen_at` is written at most this often per runner (every poll would be a write).
const SEEN_EVERY_MS: i64 = 1000;

/// Connections per server. A request holds one for a single short transaction.
const MAX_CONNECTIONS: u32 = 16;

macro_rules! runner_columns {
    () => {
        "id, name, tags, created_at, last_seen_at"
    };
}
macro_rules! pipeline_columns {
    () => {
        "id, project, git_ref, sha, before_sha, source, trigger, status, error, version, created_at, updated_at"
    };
}
macro_rules! job_columns {
    () => {
        "id, pipeline_id, name, stage, stage_index, tags, spec, status, attempt, runner_id, lease_expires_at, cancel_requested, \
         started_at, finished_at, exit_code, failure_reason, artifacts, dotenv"
    };
}

/// The PostgreSQL store. Clones share the connection pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and brings the schema
    /// up to date.
    pub async fn connect(url: &str) -> Result<PgStore> {
        let pool = PgPoolOptions::new().max_connections(MAX_CONNECTIONS).connect(url).await?;
        postgres_migrator().await?.run(&pool).await?;
        Ok(PgStore { pool })
    }

    /// Closes every connection (waits for the ones in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl Store for PgStore {
    async fn register_runner(&self, name: &str, tags: &[String], token_hash: &str, now: i64) -> Result<Runner> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runners (name, tags, token_hash, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $4) RETURNING id",
        )
        .bind(name)
        .bind(tags)
        .bind(token_hash)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(Runner { id, name: name.to_string(), tags: tags.to_vec(), created_at: now, last_seen_at: now })
    }

    async fn runner_by_token(&self, token_hash: &str, now: i64) -> Result<Option<Runner>> {
        let row = sqlx::query(concat!("SELECT ", runner_columns!(), " FROM runners WHERE token_hash = $1"))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(mut runner) = row.as_ref().map(runner_row).transpose()? else { return Ok(None) };
        if runner.last_seen_at + SEEN_EVERY_MS <= now {
            sqlx::query("UPDATE runners SET last_seen_at = $2 WHERE id = $1 AND last_seen_at < $2")
                .bind(runner.id)
                .bind(now)
                .execute(&self.pool)
                .await?;
            runner.last_seen_at = now;
        }
        Ok(Some(runner))
    }

    async fn record_pipeline(&self, delivery_id: &str, p: &NewPipeline) -> Result<Recorded> {
        let mut tx = self.pool.begin().await?;
        if let Some(id) = delivered(&mut tx, &p.project, delivery_id).await? {
            return Ok(Recorded::Duplicate(id));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO pipelines (project, git_ref, sha, before_sha, source, trigger, status, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $8, 0, $7, $7) RETURNING id",
        )
        .bind(&p.project)
        .bind(&p.git_ref)
        .bind(&p.sha)
        .bind(&p.before_sha)
        .bind(&p.source)
        .bind(&p.trigger)
        .bind(p.created_at)
        .bind(PipelineStatus::Created.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO deliveries (project, delivery_id, pipeline_id) VALUES ($1, $2, $3) \
             ON CONFLICT (project, delivery_id) DO NOTHING RETURNING pipeline_id",
        )
        .bind(&p.project)
        .bind(delivery_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            // Another server recorded this delivery since we looked: theirs stands, ours goes.
            let first = delivered(&mut tx, &p.project, delivery_id).await?;
            let first = first.ok_or_else(|| StoreError::Corrupt {
                what: format!("delivery `{delivery_id}` conflicted but is not stored"),
                source: None,
            })?;
            return Ok(Recorded::Duplicate(first));
        }
        tx.commit().await?;
        Ok(Recorded::Created(id))
    }

    async fn pipeline(&self, id: i64) -> Result<Option<PipelineRow>> {
        let row = sqlx::query(concat!("SELECT ", pipeline_columns!(), " FROM pipelines WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(pipeline_row).transpose()
    }

    async fn pipelines(&self, project: Option<&str>, limit: i64) -> Result<Vec<PipelineRow>> {
        let limit = limit.max(0);
        let rows = match project {
            Some(project) => {
                sqlx::query(concat!("SELECT ", pipeline_columns!(), " FROM pipelines WHERE project = $1 ORDER BY id DESC LIMIT $2"))
                    .bind(project)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(concat!("SELECT ", pipeline_columns!(), " FROM pipelines ORDER BY id DESC LIMIT $1"))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(pipeline_row).collect()
    }

    async fn pipelines_with_status(&self, statuses: &[PipelineStatus]) -> Result<Vec<PipelineRow>> {
        let rows = sqlx::query(concat!("SELECT ", pipeline_columns!(), " FROM pipelines WHERE status = ANY($1) ORDER BY id"))
            .bind(statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pipeline_row).collect()
    }

    async fn save_plan(&self, pipeline_id: i64, jobs: &[NewJob], status: PipelineStatus, now: i64) -> Result<Vec<i64>> {
        let mut tx = self.pool.begin().await?;
        let planned = sqlx::query("UPDATE pipelines SET status = $2, updated_at = $3 WHERE id = $1 AND status = $4")
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
        for job in jobs {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO jobs (pipeline_id, name, stage, stage_index, tags, spec, status, attempt) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1) RETURNING id",
            )
            .bind(pipeline_id)
            .bind(&job.name)
            .bind(&job.stage)
            .bind(job.stage_index)
            .bind(&job.tags)
            .bind(&job.spec)
            .bind(JobStatus::Created.as_str())
            .fetch_one(&mut *tx)
            .await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn fail_pipeline(&self, pipeline_id: i64, error: &str, now: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let failed = sqlx::query("UPDATE pipelines SET status = $4, error = $2, updated_at = $3 WHERE id = $1 AND status = $5")
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

    async fn events(&self, pipeline_id: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query("SELECT seq, event FROM pipeline_events WHERE pipeline_id = $1 ORDER BY seq")
            .bind(pipeline_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| event_from_json(pipeline_id, r.try_get("seq")?, r.try_get("event")?)).collect()
    }

    async fn apply(&self, t: &Transition) -> Result<i64> {
        let events = t.events.iter().map(event_json).collect::<Result<Vec<_>>>()?;
        let added = events.len() as i64;
        let mut tx = self.pool.begin().await?;
        let appended = sqlx::query(
            "UPDATE pipelines SET version = version + $3, status = COALESCE($4, status), updated_at = $5, wake_at = $6 \
             WHERE id = $1 AND version = $2",
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
        if !events.is_empty() {
            let seqs: Vec<i64> = (t.expected_version + 1..).take(events.len()).collect();
            sqlx::query("INSERT INTO pipeline_events (pipeline_id, seq, event) SELECT $1::BIGINT, * FROM UNNEST($2::BIGINT[], $3::TEXT[])")
                .bind(t.pipeline_id)
                .bind(&seqs)
                .bind(&events)
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
        let row = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(job_row).transpose()
    }

    async fn jobs(&self, pipeline_id: i64) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE pipeline_id = $1 ORDER BY id"))
            .bind(pipeline_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_row).collect()
    }

    async fn claim_job(
        &self,
        runner_id: i64,
        runner_tags: &[String],
        token_hash: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<Claimed>> {
        // One statement: the sub-select locks the oldest matching pending job that nobody else
        // has locked, the update hands it over; the pending status is re-checked on the row's
        // latest version, so a job is never claimed twice.
        let row = sqlx::query(concat!(
            "UPDATE jobs SET status = $6, runner_id = $1, token_hash = $2, started_at = $3, lease_expires_at = $4 \
             WHERE status = $7 AND id = (SELECT id FROM jobs WHERE status = $7 AND tags <@ $5 \
               ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING ",
            job_columns!()
        ))
        .bind(runner_id)
        .bind(token_hash)
        .bind(now)
        .bind(lease_until)
        .bind(runner_tags)
        .bind(JobStatus::Running.as_str())
        .bind(JobStatus::Pending.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(job) = row.as_ref().map(job_row).transpose()? else { return Ok(None) };
        Ok(Some(Claimed { job, lease_expires_at: lease_until }))
    }

    async fn job_by_token(&self, id: i64, token_hash: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1 AND token_hash = $2 AND status = ANY($3)"))
            .bind(id)
            .bind(token_hash)
            .bind(&held()[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_row).transpose()
    }

    async fn extend_lease(&self, id: i64, until: i64) -> Result<bool> {
        let cancel: Option<bool> =
            sqlx::query_scalar("UPDATE jobs SET lease_expires_at = $2 WHERE id = $1 AND status = ANY($3) RETURNING cancel_requested")
                .bind(id)
                .bind(until)
                .bind(&held()[..])
                .fetch_optional(&self.pool)
                .await?;
        cancel.ok_or(StoreError::NotFound { what: "running job", id })
    }

    async fn expired_leases(&self, now: i64) -> Result<Vec<JobRow>> {
        let rows =
            sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE status = ANY($2) AND lease_expires_at < $1 ORDER BY id"))
                .bind(now)
                .bind(&held()[..])
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(job_row).collect()
    }

    async fn project_has_artifacts(&self, project: &str, digest: &str) -> Result<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM jobs JOIN pipelines ON pipelines.id = jobs.pipeline_id \
             WHERE pipelines.project = $1 AND jobs.artifacts = $2 LIMIT 1",
        )
        .bind(project)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn set_artifacts(&self, id: i64, digest: &str) -> Result<()> {
        let done = sqlx::query("UPDATE jobs SET artifacts = $2 WHERE id = $1").bind(id).bind(digest).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "job", id });
        }
        Ok(())
    }

    async fn set_dotenv(&self, id: i64, dotenv_json: &str) -> Result<()> {
        let done = sqlx::query("UPDATE jobs SET dotenv = $2 WHERE id = $1").bind(id).bind(dotenv_json).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "job", id });
        }
        Ok(())
    }

    async fn queue_depth(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = $1")
            .bind(JobStatus::Pending.as_str())
            .fetch_one(&self.pool)
            .await?)
    }

    async fn counts(&self) -> Result<Counts> {
        // One snapshot for the three counts.
        let mut tx = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
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
            sqlx::query_as("SELECT id, wake_at FROM pipelines WHERE wake_at IS NOT NULL ORDER BY wake_at, id LIMIT $1")
                .bind(limit.max(0))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(pipeline_id, at)| Wakeup { pipeline_id, at }).collect())
    }
}

async fn delivered(tx: &mut PgConnection, project: &str, delivery_id: &str) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar("SELECT pipeline_id FROM deliveries WHERE project = $1 AND delivery_id = $2")
        .bind(project)
        .bind(delivery_id)
        .fetch_optional(tx)
        .await?)
}

/// Why a guarded pipeline update changed no row: the pipeline is missing, or its version is
/// not the expected one (the caller rolls back by dropping the transaction).
async fn conflict(tx: &mut PgConnection, pipeline: i64, expected: i64) -> StoreError {
    match sqlx::query_scalar::<_, i64>("SELECT version FROM pipelines WHERE id = $1").bind(pipeline).fetch_optional(tx).await {
        Ok(Some(found)) => StoreError::Conflict { pipeline, expected, found },
        Ok(None) => StoreError::NotFound { what: "pipeline", id: pipeline },
        Err(e) => e.into(),
    }
}

async fn update_job(tx: &mut PgConnection, pipeline_id: i64, update: &JobUpdate) -> Result<()> {
    let (done, job_id) = match update {
        // A new attempt: nothing of the previous one's claim or result survives.
        JobUpdate::Status { job_id, status: JobStatus::Pending, attempt, at: _ } => {
            let done = sqlx::query(
                "UPDATE jobs SET status = $4, attempt = $3, runner_id = NULL, token_hash = NULL, lease_expires_at = NULL, \
                 cancel_requested = FALSE, started_at = NULL, finished_at = NULL, exit_code = NULL, failure_reason = NULL, \
                 artifacts = NULL, dotenv = NULL \
                 WHERE id = $1 AND pipeline_id = $2",
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
                "UPDATE jobs SET status = $3, attempt = $4, \
                 started_at = CASE WHEN $7 THEN COALESCE(started_at, $5) ELSE started_at END, \
                 finished_at = CASE WHEN $6 THEN COALESCE(finished_at, $5) ELSE finished_at END \
                 WHERE id = $1 AND pipeline_id = $2",
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
                sqlx::query("UPDATE jobs SET exit_code = $3, failure_reason = $4, finished_at = $5 WHERE id = $1 AND pipeline_id = $2")
                    .bind(job_id)
                    .bind(pipeline_id)
                    .bind(exit_code.map(i64::from))
                    .bind(failure_reason)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            (done, *job_id)
        }
        JobUpdate::RequestCancel { job_id } => {
            let done = sqlx::query("UPDATE jobs SET cancel_requested = TRUE WHERE id = $1 AND pipeline_id = $2")
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

fn runner_row(r: &PgRow) -> Result<Runner> {
    Ok(Runner {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        tags: r.try_get("tags")?,
        created_at: r.try_get("created_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
    })
}

fn pipeline_row(r: &PgRow) -> Result<PipelineRow> {
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
    })
}

fn job_row(r: &PgRow) -> Result<JobRow> {
    let id = r.try_get("id")?;
    Ok(JobRow {
        id,
        pipeline_id: r.try_get("pipeline_id")?,
        name: r.try_get("name")?,
        stage: r.try_get("stage")?,
        stage_index: r.try_get("stage_index")?,
        tags: r.try_get("tags")?,
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
    })
}
