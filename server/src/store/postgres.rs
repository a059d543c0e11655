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

use super::backend::{event_from_json, event_json, held, job_status, pipeline_status, postgres_migrator, status_counts, unposted};
use super::{
    AccessToken, Approval, AttemptRow, Claimed, Counts, ForgePost, JobReport, JobRow, JobUpdate, NewJob, NewPipeline, PipelineRow,
    Recorded, ResourceCandidate, Result, ReuseRecord, Runner, RunnerScope, Session, Store, StoreError, StoredKey, Transition, Unposted,
    Wakeup,
};
use scheduler::{Event, JobStatus, PipelineStatus};

/// `last_seen_at` is written at most this often per runner (every poll would be a write).
const SEEN_EVERY_MS: i64 = 1000;

/// Connections per server. A request holds one for a single short transaction.
const MAX_CONNECTIONS: u32 = 16;

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

    /// [`Store::apply`] in one statement, so one round trip instead of five (begin, the
    /// pipeline's version, its events, the jobs, commit), for the transitions most jobs make:
    /// events with no job update (a job started, a tick) or with jobs' results and the final
    /// statuses that follow them (jobs finished and nothing else changed; several when
    /// `pipelines::process` stores the finishes that arrived together). `None` for any other
    /// transition (the caller runs the transaction). The statement is its own transaction:
    /// the pipeline's version moves only if every job exists, and the events and the jobs'
    /// updates happen only if the version moved.
    async fn apply_in_one_statement(&self, t: &Transition, events: &[String]) -> Result<Option<i64>> {
        let Some(finished) = finished_jobs(&t.jobs) else { return Ok(None) };
        let added = events.len() as i64;
        let seqs: Vec<i64> = (t.expected_version + 1..).take(events.len()).collect();
        let ids: Vec<i64> = finished.iter().map(|f| f.job_id).collect();
        // The pipeline's version, its events, then the jobs: `$9` to `$14` are one job's
        // values (the common case, one job or none: the arrays' statement costs PostgreSQL
        // more CPU per call) or arrays of them.
        macro_rules! in_one_statement {
            ($jobs_exist:literal, $jobs_update:literal) => {
                concat!(
                    "WITH p AS ( \
                       UPDATE pipelines SET version = version + $3, status = COALESCE($4, status), updated_at = $5, wake_at = $6 \
                       WHERE id = $1 AND version = $2 AND ",
                    $jobs_exist,
                    " RETURNING id), \
                     e AS (INSERT INTO pipeline_events (pipeline_id, seq, event) \
                       SELECT p.id, u.seq, u.event FROM p, UNNEST($7::BIGINT[], $8::TEXT[]) AS u(seq, event)), \
                     j AS (",
                    $jobs_update,
                    " RETURNING jobs.id) SELECT COUNT(*) FROM p"
                )
            };
        }
        let one = match finished.as_slice() {
            [] | [_] => Some(finished.first()),
            _ => None,
        };
        let query = sqlx::query_scalar(match one {
            Some(_) => in_one_statement!(
                "($9::BIGINT IS NULL OR EXISTS (SELECT 1 FROM jobs WHERE id = $9 AND pipeline_id = $1))",
                "UPDATE jobs SET status = $10, attempt = $11, exit_code = $12, failure_reason = $13, finished_at = $14 \
                 FROM p WHERE jobs.id = $9 AND jobs.pipeline_id = p.id"
            ),
            None => in_one_statement!(
                "(SELECT COUNT(*) FROM jobs WHERE id = ANY($9) AND pipeline_id = $1) = cardinality($9::BIGINT[])",
                "UPDATE jobs SET status = u.status, attempt = u.attempt, exit_code = u.exit_code, \
                   failure_reason = u.failure_reason, finished_at = u.finished_at \
                 FROM p, UNNEST($9::BIGINT[], $10::TEXT[], $11::BIGINT[], $12::BIGINT[], $13::TEXT[], $14::BIGINT[]) \
                   AS u(id, status, attempt, exit_code, failure_reason, finished_at) \
                 WHERE jobs.id = u.id AND jobs.pipeline_id = p.id"
            ),
        })
        .bind(t.pipeline_id)
        .bind(t.expected_version)
        .bind(added)
        .bind(t.pipeline_status.map(|s| s.as_str()))
        .bind(t.at)
        .bind(t.wake_at)
        .bind(&seqs)
        .bind(events);
        let query = match one {
            Some(one) => query
                .bind(one.map(|f| f.job_id))
                .bind(one.map(|f| f.status.as_str()))
                .bind(one.map(|f| i64::from(f.attempt)))
                .bind(one.and_then(|f| f.exit_code.map(i64::from)))
                .bind(one.and_then(|f| f.failure_reason))
                .bind(one.map(|f| f.at)),
            None => query
                .bind(&ids)
                .bind(finished.iter().map(|f| f.status.as_str()).collect::<Vec<_>>())
                .bind(finished.iter().map(|f| i64::from(f.attempt)).collect::<Vec<_>>())
                .bind(finished.iter().map(|f| f.exit_code.map(i64::from)).collect::<Vec<_>>())
                .bind(finished.iter().map(|f| f.failure_reason).collect::<Vec<_>>())
                .bind(finished.iter().map(|f| f.at).collect::<Vec<_>>()),
        };
        let appended: i64 = query.fetch_one(&self.pool).await?;
        if appended == 1 {
            return Ok(Some(t.expected_version + added));
        }
        // Nothing changed: the version moved, or the pipeline or a job is missing.
        let mut conn = self.pool.acquire().await?;
        match conflict(&mut conn, t.pipeline_id, t.expected_version).await {
            StoreError::Conflict { found, .. } if found == t.expected_version => {
                Err(StoreError::NotFound { what: "job", id: ids.first().copied().unwrap_or(0) })
            }
            e => Err(e),
        }
    }
}

/// A job's result with the final status that follows it in a transition.
struct Finished<'a> {
    job_id: i64,
    exit_code: Option<i32>,
    failure_reason: Option<&'a str>,
    at: i64,
    status: JobStatus,
    attempt: u32,
}

/// `jobs` as results each followed by the job's final status, and nothing else, each job
/// once; `None` for any other list of updates.
fn finished_jobs(jobs: &[JobUpdate]) -> Option<Vec<Finished<'_>>> {
    let mut folded = vec![false; jobs.len()];
    let mut finished: Vec<Finished<'_>> = Vec::with_capacity(jobs.len() / 2);
    for i in 0..jobs.len() {
        if folded[i] {
            continue;
        }
        let (j, JobUpdate::Result { job_id, exit_code, failure_reason, at }, status, attempt) = final_status_after(jobs, i)? else {
            return None;
        };
        if folded[j] || finished.iter().any(|f| f.job_id == *job_id) {
            return None;
        }
        folded[j] = true;
        finished.push(Finished {
            job_id: *job_id,
            exit_code: *exit_code,
            failure_reason: failure_reason.as_deref(),
            at: *at,
            status,
            attempt,
        });
    }
    Some(finished)
}

impl Store for PgStore {
    async fn register_runner(&self, name: &str, tags: &[String], scope: &RunnerScope, token_hash: &str, now: i64) -> Result<Runner> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runners (name, tags, token_hash, created_at, last_seen_at, run_untagged, protected_only, projects) \
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7) RETURNING id",
        )
        .bind(name)
        .bind(tags)
        .bind(token_hash)
        .bind(now)
        .bind(scope.run_untagged)
        .bind(scope.protected_only)
        .bind(scope.projects.as_deref())
        .fetch_one(&self.pool)
        .await?;
        Ok(Runner { id, name: name.to_string(), tags: tags.to_vec(), scope: scope.clone(), created_at: now, last_seen_at: now })
    }

    async fn runners(&self, limit: i64) -> Result<Vec<Runner>> {
        let rows = sqlx::query(concat!("SELECT ", runner_columns!(), " FROM runners ORDER BY id LIMIT $1"))
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(runner_row).collect()
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
        // `CI_PIPELINE_IID`: the project's next number, taken in this transaction (a row lock on
        // PostgreSQL, the one writer on SQLite), so no two pipelines of a project share one.
        let iid: i64 = sqlx::query_scalar(
            "INSERT INTO pipeline_iids (project, last_iid) VALUES ($1, 1) \
             ON CONFLICT (project) DO UPDATE SET last_iid = pipeline_iids.last_iid + 1 RETURNING last_iid",
        )
        .bind(&p.project)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO pipelines (project, git_ref, sha, before_sha, source, trigger, status, version, created_at, updated_at, \
             needs_approval, upstream_pipeline_id, upstream_job_id, iid) VALUES ($1, $2, $3, $4, $5, $6, $8, 0, $7, $7, $9, $10, $11, $12) RETURNING id",
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

    async fn downstream_pipelines(&self, pipeline_id: i64) -> Result<Vec<PipelineRow>> {
        let rows = sqlx::query(concat!("SELECT ", pipeline_columns!(), " FROM pipelines WHERE upstream_pipeline_id = $1 ORDER BY id"))
            .bind(pipeline_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pipeline_row).collect()
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
                "INSERT INTO jobs (pipeline_id, name, stage, stage_index, tags, spec, status, attempt, resource_group) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8) RETURNING id",
            )
            .bind(pipeline_id)
            .bind(&job.name)
            .bind(&job.stage)
            .bind(job.stage_index)
            .bind(&job.tags)
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

    async fn approve_pipeline(&self, pipeline_id: i64, by: &str, now: i64) -> Result<bool> {
        let approved = sqlx::query(
            "UPDATE pipelines SET approved_by = $2, approved_at = $3, updated_at = $3 \
             WHERE id = $1 AND needs_approval AND approved_by IS NULL AND version = 0 AND status = $4",
        )
        .bind(pipeline_id)
        .bind(by)
        .bind(now)
        .bind(PipelineStatus::Manual.as_str())
        .execute(&self.pool)
        .await?;
        Ok(approved.rows_affected() == 1)
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
        if let Some(version) = self.apply_in_one_statement(t, &events).await? {
            return Ok(version);
        }
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
        let mut folded = vec![false; t.jobs.len()];
        for (i, update) in t.jobs.iter().enumerate() {
            if folded[i] {
                continue;
            }
            // A job's result and the final status that follows it change the same row: one
            // statement instead of two, a round trip fewer in every finished job's transaction.
            if let Some((j, JobUpdate::Result { job_id, exit_code, failure_reason, at }, status, attempt)) = final_status_after(&t.jobs, i)
            {
                let done = sqlx::query(
                    "UPDATE jobs SET status = $3, attempt = $4, exit_code = $5, failure_reason = $6, finished_at = $7 \
                     WHERE id = $1 AND pipeline_id = $2",
                )
                .bind(job_id)
                .bind(t.pipeline_id)
                .bind(status.as_str())
                .bind(i64::from(attempt))
                .bind(exit_code.map(i64::from))
                .bind(failure_reason)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound { what: "job", id: *job_id });
                }
                folded[j] = true;
                continue;
            }
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

    async fn resource_holder(&self, project: &str, group: &str) -> Result<Option<(i64, i64)>> {
        let row = sqlx::query(
            "SELECT holder_job, holder_attempt FROM resource_groups WHERE project = $1 AND name = $2 AND holder_job IS NOT NULL",
        )
        .bind(project)
        .bind(group)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some((r.try_get::<i64, _>("holder_job")?, r.try_get::<i64, _>("holder_attempt")?)),
            None => None,
        })
    }

    async fn grant_resource(&self, project: &str, group: &str, job: i64, attempt: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO resource_groups (project, name, holder_job, holder_attempt) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (project, name) DO UPDATE SET holder_job = excluded.holder_job, holder_attempt = excluded.holder_attempt \
             WHERE resource_groups.holder_job IS NULL",
        )
        .bind(project)
        .bind(group)
        .bind(job)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_resource(&self, project: &str, group: &str, job: i64, attempt: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE resource_groups SET holder_job = NULL, holder_attempt = NULL \
             WHERE project = $1 AND name = $2 AND holder_job = $3 AND holder_attempt = $4",
        )
        .bind(project)
        .bind(group)
        .bind(job)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn resource_groups_in_use(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT project, name FROM resource_groups WHERE holder_job IS NOT NULL \
             UNION SELECT p.project, j.resource_group FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id \
             WHERE j.resource_group IS NOT NULL AND j.status = $1 ORDER BY 1, 2",
        )
        .bind(JobStatus::WaitingForResource.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?))).collect()
    }

    async fn resource_queue(&self, project: &str, group: &str) -> Result<Vec<ResourceCandidate>> {
        let rows = sqlx::query(
            "SELECT j.id, j.pipeline_id, j.name, j.status, j.attempt FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id \
             WHERE p.project = $1 AND j.resource_group = $2 AND p.version > 0 AND j.status IN ($3, $4, $5) \
             ORDER BY j.pipeline_id, j.id",
        )
        .bind(project)
        .bind(group)
        .bind(JobStatus::Created.as_str())
        .bind(JobStatus::Scheduled.as_str())
        .bind(JobStatus::WaitingForResource.as_str())
        .fetch_all(&self.pool)
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
            "SELECT attempt, status, exit_code, failure_reason, started_at, finished_at FROM job_attempts WHERE job_id = $1 ORDER BY attempt",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| super::backend::attempt_row(job_id, r)).collect()
    }

    async fn claim_job(&self, runner: &Runner, token_hash: &str, now: i64, lease_until: i64) -> Result<Option<Claimed>> {
        // One statement: the sub-select locks the oldest pending job this runner may run (see
        // the trait) that nobody else has locked, the update hands it over; the pending status
        // is re-checked on the row's latest version, so a job is never claimed twice.
        let row = sqlx::query(concat!(
            "UPDATE jobs SET status = $6, runner_id = $1, token_hash = $2, started_at = $3, lease_expires_at = $4 \
             WHERE status = $7 AND id = (SELECT j.id FROM jobs AS j JOIN pipelines AS p ON p.id = j.pipeline_id \
               WHERE j.status = $7 \
               AND CASE WHEN cardinality(j.tags) = 0 THEN $8 ELSE j.tags <@ $5 END \
               AND (NOT $9 OR (p.trigger::jsonb ->> 'ref_protected') = 'true') \
               AND ($10::text[] IS NULL OR p.project = ANY($10)) \
               ORDER BY j.id LIMIT 1 FOR UPDATE OF j SKIP LOCKED) \
             RETURNING ",
            job_columns!()
        ))
        .bind(runner.id)
        .bind(token_hash)
        .bind(now)
        .bind(lease_until)
        .bind(&runner.tags)
        .bind(JobStatus::Running.as_str())
        .bind(JobStatus::Pending.as_str())
        .bind(runner.tags.is_empty() || runner.scope.run_untagged)
        .bind(runner.scope.protected_only)
        .bind(runner.scope.projects.as_deref())
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

    async fn set_reuse_key(&self, id: i64, attempt: i64, scope_key: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE jobs SET reuse_key = $4 WHERE id = $1 AND attempt = $2 AND status = ANY($3)")
            .bind(id)
            .bind(attempt)
            .bind(&held()[..])
            .bind(scope_key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_reused_from(&self, id: i64, attempt: i64, reused_from: &str) -> Result<()> {
        let done = sqlx::query("UPDATE jobs SET reused_from = $3 WHERE id = $1 AND attempt = $2")
            .bind(id)
            .bind(attempt)
            .bind(reused_from)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "job", id });
        }
        Ok(())
    }

    async fn reuse_record(&self, scope_key: &str, project: &str) -> Result<Option<ReuseRecord>> {
        let row: Option<super::backend::ReuseColumns> = sqlx::query_as(
            "SELECT job_id, attempt, pipeline_id, job_name, artifacts, dotenv, coverage FROM reuse_records WHERE scope_key = $1 AND project = $2",
        )
        .bind(scope_key)
        .bind(project)
        .fetch_optional(&self.pool)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $10, $8) \
             ON CONFLICT (scope_key) DO UPDATE SET project = EXCLUDED.project, job_id = EXCLUDED.job_id, attempt = EXCLUDED.attempt, \
             pipeline_id = EXCLUDED.pipeline_id, job_name = EXCLUDED.job_name, artifacts = EXCLUDED.artifacts, dotenv = EXCLUDED.dotenv, coverage = EXCLUDED.coverage, \
             created_at = EXCLUDED.created_at",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn forget_reuse(&self, scope_key: &str) -> Result<()> {
        sqlx::query("DELETE FROM reuse_records WHERE scope_key = $1").bind(scope_key).execute(&self.pool).await?;
        Ok(())
    }

    async fn id_token_key(&self, name: &str, candidate: &StoredKey, now: i64) -> Result<StoredKey> {
        // Insert if absent, then read: whoever inserted first, every server reads that row.
        sqlx::query("INSERT INTO id_token_keys (name, alg, pkcs8, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&candidate.alg)
            .bind(&candidate.pkcs8)
            .bind(now)
            .execute(&self.pool)
            .await?;
        let (alg, pkcs8): (String, Vec<u8>) =
            sqlx::query_as("SELECT alg, pkcs8 FROM id_token_keys WHERE name = $1").bind(name).fetch_one(&self.pool).await?;
        Ok(StoredKey { alg, pkcs8 })
    }

    async fn log_chunks(&self, job: i64, attempt: i64, from: u64) -> Result<Vec<(u64, u64)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            r#"SELECT "offset", octet_length(data)::BIGINT FROM log_chunks WHERE job_id = $1 AND attempt = $2 AND "offset" >= $3 ORDER BY "offset""#,
        )
        .bind(job)
        .bind(attempt)
        .bind(from as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(o, l)| (o as u64, l as u64)).collect())
    }

    async fn log_chunk(&self, job: i64, attempt: i64, offset: u64) -> Result<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as(r#"SELECT data FROM log_chunks WHERE job_id = $1 AND attempt = $2 AND "offset" = $3"#)
            .bind(job)
            .bind(attempt)
            .bind(offset as i64)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(d,)| d))
    }

    async fn put_log_chunk(&self, job: i64, attempt: i64, offset: u64, data: &[u8], at_ms: Option<i64>) -> Result<()> {
        sqlx::query(
            r#"INSERT INTO log_chunks (job_id, attempt, "offset", data, at_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (job_id, attempt, "offset") DO UPDATE SET data = EXCLUDED.data, at_ms = COALESCE(EXCLUDED.at_ms, log_chunks.at_ms)"#,
        )
        .bind(job)
        .bind(attempt)
        .bind(offset as i64)
        .bind(data)
        .bind(at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn log_chunk_times(&self, job: i64, attempt: i64, range: std::ops::Range<u64>) -> Result<Vec<(u64, i64)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            r#"SELECT "offset", at_ms FROM log_chunks WHERE job_id = $1 AND attempt = $2 AND at_ms IS NOT NULL AND "offset" < $4
             AND "offset" >= COALESCE((SELECT MAX("offset") FROM log_chunks WHERE job_id = $1 AND attempt = $2 AND at_ms IS NOT NULL AND "offset" <= $3), 0)
             ORDER BY "offset""#,
        )
        .bind(job)
        .bind(attempt)
        .bind(range.start.min(i64::MAX as u64) as i64)
        .bind(range.end.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(o, t)| (o as u64, t)).collect())
    }

    async fn delete_log_chunks(&self, job: i64, attempt: i64) -> Result<()> {
        sqlx::query("DELETE FROM log_chunks WHERE job_id = $1 AND attempt = $2").bind(job).bind(attempt).execute(&self.pool).await?;
        Ok(())
    }

    async fn open_logs(&self) -> Result<Vec<(i64, i64)>> {
        Ok(sqlx::query_as("SELECT DISTINCT job_id, attempt FROM log_chunks ORDER BY job_id, attempt").fetch_all(&self.pool).await?)
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
    async fn record_forge_post(&self, pipeline_id: i64, state: &str, error: Option<&str>, at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO forge_statuses (pipeline_id, state, posted, error, at) \
             VALUES ($1, $2, CASE WHEN $3 IS NULL THEN $2 END, $3, $4) \
             ON CONFLICT (pipeline_id) DO UPDATE SET state = excluded.state, error = excluded.error, at = excluded.at, \
             posted = CASE WHEN excluded.error IS NULL THEN excluded.state ELSE forge_statuses.posted END",
        )
        .bind(pipeline_id)
        .bind(state)
        .bind(error)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn forge_post(&self, pipeline_id: i64) -> Result<Option<ForgePost>> {
        let row: Option<(String, Option<String>, Option<String>, i64)> =
            sqlx::query_as("SELECT state, posted, error, at FROM forge_statuses WHERE pipeline_id = $1")
                .bind(pipeline_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(state, posted, error, at)| ForgePost { pipeline_id, state, posted, error, at }))
    }

    async fn forge_unposted(&self, projects: &[String], limit: i64) -> Result<Vec<Unposted>> {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT p.id, p.status, f.posted FROM pipelines p LEFT JOIN forge_statuses f ON f.pipeline_id = p.id \
             WHERE p.project = ANY($1) AND (f.posted IS NULL OR f.posted <> p.status) ORDER BY p.id DESC LIMIT $2",
        )
        .bind(projects)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        unposted(rows)
    }

    async fn set_test_report(&self, job_id: i64, pipeline_id: i64, tests: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_reports (job_id, pipeline_id, tests) VALUES ($1, $2, $3) \
             ON CONFLICT (job_id) DO UPDATE SET tests = excluded.tests",
        )
        .bind(job_id)
        .bind(pipeline_id)
        .bind(tests)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_coverage(&self, job_id: i64, pipeline_id: i64, coverage: Option<f64>) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_reports (job_id, pipeline_id, coverage) VALUES ($1, $2, $3) \
             ON CONFLICT (job_id) DO UPDATE SET coverage = excluded.coverage",
        )
        .bind(job_id)
        .bind(pipeline_id)
        .bind(coverage)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn job_reports(&self, pipeline_id: i64) -> Result<Vec<JobReport>> {
        let rows: Vec<(i64, Option<String>, Option<f64>)> =
            sqlx::query_as("SELECT job_id, tests, coverage FROM job_reports WHERE pipeline_id = $1 ORDER BY job_id")
                .bind(pipeline_id)
                .fetch_all(&self.pool)
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
            "INSERT INTO access_tokens (user_name, label, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(user)
        .bind(label)
        .bind(token_hash)
        .bind(now)
        .bind(expires_at)
        .fetch_one(&self.pool)
        .await?;
        Ok(AccessToken { id, user: user.into(), label: label.into(), created_at: now, expires_at, revoked_at: None })
    }

    async fn access_token(&self, token_hash: &str, now: i64) -> Result<Option<AccessToken>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM access_tokens WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token_row).transpose()
    }

    async fn access_tokens(&self, user: Option<&str>) -> Result<Vec<AccessToken>> {
        let rows =
            sqlx::query(concat!("SELECT ", token_columns!(), " FROM access_tokens WHERE $1::text IS NULL OR user_name = $1 ORDER BY id"))
                .bind(user)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(token_row).collect()
    }

    async fn revoke_access_token(&self, id: i64, now: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE access_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_session(&self, token_hash: &str, session: &Session) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(session.created_at).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO sessions (token_hash, user_name, groups, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(token_hash)
            .bind(&session.user)
            .bind(&session.groups)
            .bind(session.created_at)
            .bind(session.expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str, now: i64) -> Result<Option<Session>> {
        let row: Option<(String, Vec<String>, i64, i64)> =
            sqlx::query_as("SELECT user_name, groups, created_at, expires_at FROM sessions WHERE token_hash = $1 AND expires_at > $2")
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(user, groups, created_at, expires_at)| Session { user, groups, created_at, expires_at }))
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(&self.pool).await?;
        Ok(())
    }
}

fn token_row(r: &PgRow) -> Result<AccessToken> {
    Ok(AccessToken {
        id: r.try_get("id")?,
        user: r.try_get("user_name")?,
        label: r.try_get("label")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
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

/// When `jobs[i]` is a job's result and the next update of that job is a final status (its
/// finish: the runner's report comes first, the engine's status after it), that status's index.
/// Applied together, they leave the row as applying both in turn would: the result's
/// `finished_at` stands (the status only fills an empty one), and a finish leaves `started_at`
/// as it is.
fn final_status_after(jobs: &[JobUpdate], i: usize) -> Option<(usize, &JobUpdate, JobStatus, u32)> {
    let result = &jobs[i];
    let JobUpdate::Result { job_id, .. } = result else { return None };
    match jobs.iter().enumerate().skip(i + 1).find(|(_, u)| update_of(u) == *job_id)? {
        (j, JobUpdate::Status { status, attempt, .. }) if status.is_complete() => Some((j, result, *status, *attempt)),
        _ => None,
    }
}

fn update_of(update: &JobUpdate) -> i64 {
    match update {
        JobUpdate::Status { job_id, .. }
        | JobUpdate::Result { job_id, .. }
        | JobUpdate::RequestCancel { job_id }
        | JobUpdate::RunAnyway { job_id, .. } => *job_id,
    }
}

async fn update_job(tx: &mut PgConnection, pipeline_id: i64, update: &JobUpdate) -> Result<()> {
    let (done, job_id) = match update {
        // A new attempt: nothing of the previous one's claim or result survives.
        JobUpdate::Status { job_id, status: JobStatus::Pending, attempt, at: _ } => {
            // The attempt this one replaces keeps its result (a retry must not erase why the
            // first attempt failed). An attempt still `running` here ended with a result: failed.
            sqlx::query(
                "INSERT INTO job_attempts (job_id, attempt, status, exit_code, failure_reason, started_at, finished_at) \
                 SELECT id, attempt, CASE WHEN status = $4 AND failure_reason IS NOT NULL THEN $5 ELSE status END, \
                 exit_code, failure_reason, started_at, finished_at \
                 FROM jobs WHERE id = $1 AND pipeline_id = $2 AND attempt < $3 \
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
                "UPDATE jobs SET status = $4, attempt = $3, runner_id = NULL, token_hash = NULL, lease_expires_at = NULL, \
                 cancel_requested = FALSE, started_at = NULL, finished_at = NULL, exit_code = NULL, failure_reason = NULL, \
                 artifacts = NULL, dotenv = NULL, reused_from = NULL, reuse_key = NULL \
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
        JobUpdate::RunAnyway { job_id, attempt } => {
            let done = sqlx::query("UPDATE jobs SET run_anyway = $3 WHERE id = $1 AND pipeline_id = $2")
                .bind(job_id)
                .bind(pipeline_id)
                .bind(i64::from(*attempt))
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
        scope: RunnerScope {
            run_untagged: r.try_get("run_untagged")?,
            protected_only: r.try_get("protected_only")?,
            projects: r.try_get("projects")?,
        },
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
        reused_from: r.try_get("reused_from")?,
        reuse_key: r.try_get("reuse_key")?,
        run_anyway: r.try_get("run_anyway")?,
    })
}
