//! The store chosen at run time from `--database`, and what both backends share: error
//! mapping, embedded migrations, JSON columns.

use std::borrow::Cow;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

use super::{
    AccessToken, AttemptRow, Claimed, Counts, ForgePost, JobReport, JobRow, NewJob, NewPipeline, PgStore, PipelineRow, Recorded,
    ResourceCandidate, Result, ReuseRecord, Runner, RunnerScope, Session, SqliteStore, Store, StoreError, StoredKey, Transition, Unposted,
    Wakeup,
};
use scheduler::{Event, JobStatus, PipelineStatus};

/// The server's store: SQLite (the embedded default) or PostgreSQL.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Backend {
    /// Opens the store named by `database`: a `postgres://` (or `postgresql://`) URL; a
    /// `sqlite://PATH` (or `sqlite:PATH`) URL or a plain file path; or, when empty,
    /// `<data_dir>/piste.db`. Migrations run before this returns.
    pub async fn open(database: &str, data_dir: &Path) -> Result<Backend> {
        Ok(match Location::parse(database, data_dir)? {
            Location::Postgres(url) => Backend::Postgres(PgStore::connect(&url).await?),
            Location::Sqlite(path) => Backend::Sqlite(SqliteStore::open(&path).await?),
        })
    }

    /// Closes every connection (waits for the ones in use).
    pub async fn close(&self) {
        match self {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(s) => s.close().await,
        }
    }
}

/// Where `--database` points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Postgres(String),
    Sqlite(PathBuf),
}

impl Location {
    fn parse(database: &str, data_dir: &Path) -> Result<Location> {
        let database = database.trim();
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            return Ok(Location::Postgres(database.to_string()));
        }
        let path = database.strip_prefix("sqlite://").or_else(|| database.strip_prefix("sqlite:")).unwrap_or(database);
        if path.is_empty() {
            return Ok(Location::Sqlite(data_dir.join("piste.db")));
        }
        if let Some((scheme, _)) = path.split_once("://") {
            return Err(StoreError::Location(format!(
                "unsupported database `{scheme}://…`: use a `postgres://` URL, a `sqlite://` path or a file path"
            )));
        }
        Ok(Location::Sqlite(PathBuf::from(path)))
    }
}

macro_rules! delegate {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match $self {
            Backend::Sqlite(s) => s.$method($($arg),*).await,
            Backend::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store for Backend {
    async fn register_runner(&self, name: &str, tags: &[String], scope: &RunnerScope, token_hash: &str, now: i64) -> Result<Runner> {
        delegate!(self, register_runner(name, tags, scope, token_hash, now))
    }
    async fn runners(&self, limit: i64) -> Result<Vec<Runner>> {
        delegate!(self, runners(limit))
    }
    async fn runner_by_token(&self, token_hash: &str, now: i64) -> Result<Option<Runner>> {
        delegate!(self, runner_by_token(token_hash, now))
    }
    async fn record_pipeline(&self, delivery_id: &str, pipeline: &NewPipeline) -> Result<Recorded> {
        delegate!(self, record_pipeline(delivery_id, pipeline))
    }
    async fn pipeline(&self, id: i64) -> Result<Option<PipelineRow>> {
        delegate!(self, pipeline(id))
    }
    async fn downstream_pipelines(&self, pipeline_id: i64) -> Result<Vec<PipelineRow>> {
        delegate!(self, downstream_pipelines(pipeline_id))
    }

    async fn pipelines(&self, project: Option<&str>, limit: i64) -> Result<Vec<PipelineRow>> {
        delegate!(self, pipelines(project, limit))
    }
    async fn pipelines_with_status(&self, statuses: &[PipelineStatus]) -> Result<Vec<PipelineRow>> {
        delegate!(self, pipelines_with_status(statuses))
    }
    async fn save_plan(&self, pipeline_id: i64, jobs: &[NewJob], status: PipelineStatus, now: i64) -> Result<Vec<i64>> {
        delegate!(self, save_plan(pipeline_id, jobs, status, now))
    }
    async fn fail_pipeline(&self, pipeline_id: i64, error: &str, now: i64) -> Result<()> {
        delegate!(self, fail_pipeline(pipeline_id, error, now))
    }
    async fn approve_pipeline(&self, pipeline_id: i64, by: &str, now: i64) -> Result<bool> {
        delegate!(self, approve_pipeline(pipeline_id, by, now))
    }
    async fn events(&self, pipeline_id: i64) -> Result<Vec<Event>> {
        delegate!(self, events(pipeline_id))
    }
    async fn apply(&self, transition: &Transition) -> Result<i64> {
        delegate!(self, apply(transition))
    }
    async fn job(&self, id: i64) -> Result<Option<JobRow>> {
        delegate!(self, job(id))
    }
    async fn resource_holder(&self, project: &str, group: &str) -> Result<Option<(i64, i64)>> {
        delegate!(self, resource_holder(project, group))
    }
    async fn grant_resource(&self, project: &str, group: &str, job: i64, attempt: i64) -> Result<bool> {
        delegate!(self, grant_resource(project, group, job, attempt))
    }
    async fn release_resource(&self, project: &str, group: &str, job: i64, attempt: i64) -> Result<bool> {
        delegate!(self, release_resource(project, group, job, attempt))
    }
    async fn resource_groups_in_use(&self) -> Result<Vec<(String, String)>> {
        delegate!(self, resource_groups_in_use())
    }
    async fn resource_queue(&self, project: &str, group: &str) -> Result<Vec<ResourceCandidate>> {
        delegate!(self, resource_queue(project, group))
    }
    async fn jobs(&self, pipeline_id: i64) -> Result<Vec<JobRow>> {
        delegate!(self, jobs(pipeline_id))
    }
    async fn past_attempts(&self, job_id: i64) -> Result<Vec<AttemptRow>> {
        delegate!(self, past_attempts(job_id))
    }
    async fn claim_job(&self, runner: &Runner, token_hash: &str, now: i64, lease_until: i64) -> Result<Option<Claimed>> {
        delegate!(self, claim_job(runner, token_hash, now, lease_until))
    }
    async fn job_by_token(&self, id: i64, token_hash: &str) -> Result<Option<JobRow>> {
        delegate!(self, job_by_token(id, token_hash))
    }
    async fn extend_lease(&self, id: i64, until: i64) -> Result<bool> {
        delegate!(self, extend_lease(id, until))
    }
    async fn expired_leases(&self, now: i64) -> Result<Vec<JobRow>> {
        delegate!(self, expired_leases(now))
    }
    async fn set_artifacts(&self, id: i64, digest: &str) -> Result<()> {
        delegate!(self, set_artifacts(id, digest))
    }
    async fn project_has_artifacts(&self, project: &str, digest: &str) -> Result<bool> {
        delegate!(self, project_has_artifacts(project, digest))
    }
    async fn set_dotenv(&self, id: i64, dotenv_json: &str) -> Result<()> {
        delegate!(self, set_dotenv(id, dotenv_json))
    }

    async fn set_reuse_key(&self, id: i64, attempt: i64, scope_key: &str) -> Result<bool> {
        delegate!(self, set_reuse_key(id, attempt, scope_key))
    }

    async fn set_reused_from(&self, id: i64, attempt: i64, reused_from: &str) -> Result<()> {
        delegate!(self, set_reused_from(id, attempt, reused_from))
    }

    async fn reuse_record(&self, scope_key: &str, project: &str) -> Result<Option<ReuseRecord>> {
        delegate!(self, reuse_record(scope_key, project))
    }

    async fn record_reuse(&self, scope_key: &str, project: &str, record: &ReuseRecord, at: i64) -> Result<()> {
        delegate!(self, record_reuse(scope_key, project, record, at))
    }

    async fn forget_reuse(&self, scope_key: &str) -> Result<()> {
        delegate!(self, forget_reuse(scope_key))
    }
    async fn id_token_key(&self, name: &str, candidate: &StoredKey, now: i64) -> Result<StoredKey> {
        delegate!(self, id_token_key(name, candidate, now))
    }
    async fn log_chunks(&self, job: i64, attempt: i64, from: u64) -> Result<Vec<(u64, u64)>> {
        delegate!(self, log_chunks(job, attempt, from))
    }
    async fn log_chunk(&self, job: i64, attempt: i64, offset: u64) -> Result<Option<Vec<u8>>> {
        delegate!(self, log_chunk(job, attempt, offset))
    }
    async fn put_log_chunk(&self, job: i64, attempt: i64, offset: u64, data: &[u8], at_ms: Option<i64>) -> Result<()> {
        delegate!(self, put_log_chunk(job, attempt, offset, data, at_ms))
    }
    async fn log_chunk_times(&self, job: i64, attempt: i64, range: std::ops::Range<u64>) -> Result<Vec<(u64, i64)>> {
        delegate!(self, log_chunk_times(job, attempt, range))
    }
    async fn delete_log_chunks(&self, job: i64, attempt: i64) -> Result<()> {
        delegate!(self, delete_log_chunks(job, attempt))
    }
    async fn open_logs(&self) -> Result<Vec<(i64, i64)>> {
        delegate!(self, open_logs())
    }
    async fn queue_depth(&self) -> Result<i64> {
        delegate!(self, queue_depth())
    }
    async fn counts(&self) -> Result<Counts> {
        delegate!(self, counts())
    }
    async fn wakeups(&self, limit: i64) -> Result<Vec<Wakeup>> {
        delegate!(self, wakeups(limit))
    }
    async fn create_access_token(
        &self,
        user: &str,
        label: &str,
        token_hash: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<AccessToken> {
        delegate!(self, create_access_token(user, label, token_hash, now, expires_at))
    }
    async fn access_token(&self, token_hash: &str, now: i64) -> Result<Option<AccessToken>> {
        delegate!(self, access_token(token_hash, now))
    }
    async fn access_tokens(&self, user: Option<&str>) -> Result<Vec<AccessToken>> {
        delegate!(self, access_tokens(user))
    }
    async fn revoke_access_token(&self, id: i64, now: i64) -> Result<bool> {
        delegate!(self, revoke_access_token(id, now))
    }
    async fn create_session(&self, token_hash: &str, session: &Session) -> Result<()> {
        delegate!(self, create_session(token_hash, session))
    }
    async fn session(&self, token_hash: &str, now: i64) -> Result<Option<Session>> {
        delegate!(self, session(token_hash, now))
    }
    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        delegate!(self, delete_session(token_hash))
    }
    async fn record_forge_post(&self, pipeline_id: i64, state: &str, error: Option<&str>, at: i64) -> Result<()> {
        delegate!(self, record_forge_post(pipeline_id, state, error, at))
    }
    async fn forge_post(&self, pipeline_id: i64) -> Result<Option<ForgePost>> {
        delegate!(self, forge_post(pipeline_id))
    }
    async fn forge_unposted(&self, projects: &[String], limit: i64) -> Result<Vec<Unposted>> {
        delegate!(self, forge_unposted(projects, limit))
    }
    async fn set_test_report(&self, job_id: i64, pipeline_id: i64, tests: Option<&str>) -> Result<()> {
        delegate!(self, set_test_report(job_id, pipeline_id, tests))
    }
    async fn set_coverage(&self, job_id: i64, pipeline_id: i64, coverage: Option<f64>) -> Result<()> {
        delegate!(self, set_coverage(job_id, pipeline_id, coverage))
    }
    async fn job_reports(&self, pipeline_id: i64) -> Result<Vec<JobReport>> {
        delegate!(self, job_reports(pipeline_id))
    }
}

/// Decodes `forge_unposted` rows.
pub(super) fn unposted(rows: Vec<(i64, String, Option<String>)>) -> Result<Vec<Unposted>> {
    rows.into_iter().map(|(id, status, posted)| Ok(Unposted { pipeline_id: id, status: pipeline_status(id, &status)?, posted })).collect()
}

// What both backends share.

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
                StoreError::corrupt("a column does not decode", e)
            }
            e => StoreError::Database(Box::new(e)),
        }
    }
}

impl From<MigrateError> for StoreError {
    fn from(e: MigrateError) -> StoreError {
        StoreError::Migrate(Box::new(e))
    }
}

/// The schema's migrations, compiled in (`server/migrations/<backend>/`). Never edit one
/// that has shipped: sqlx refuses a database whose applied migration changed; add a new one.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = std::result::Result<Vec<Migration>, BoxDynError>> + Send>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, Cow::Borrowed(sql), false)
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

pub(super) async fn sqlite_migrator() -> Result<Migrator> {
    Ok(Migrator::new(Embedded(&[
        (1, "init", include_str!("../../migrations/sqlite/0001_init.sql")),
        (2, "wake_at", include_str!("../../migrations/sqlite/0002_wake_at.sql")),
        (3, "auth", include_str!("../../migrations/sqlite/0003_auth.sql")),
        (4, "job_attempts", include_str!("../../migrations/sqlite/0004_job_attempts.sql")),
        (5, "forge_and_reports", include_str!("../../migrations/sqlite/0005_forge_and_reports.sql")),
        (8, "log_chunks", include_str!("../../migrations/sqlite/0008_log_chunks.sql")),
        (9, "log_times", include_str!("../../migrations/sqlite/0009_log_times.sql")),
        (10, "fork_approval", include_str!("../../migrations/sqlite/0010_fork_approval.sql")),
        (11, "resource_groups", include_str!("../../migrations/sqlite/0011_resource_groups.sql")),
        (12, "pipeline_iid", include_str!("../../migrations/sqlite/0012_pipeline_iid.sql")),
        (13, "downstream", include_str!("../../migrations/sqlite/0013_downstream.sql")),
        (14, "reuse", include_str!("../../migrations/sqlite/0014_reuse.sql")),
        (15, "id_token_keys", include_str!("../../migrations/sqlite/0015_id_token_keys.sql")),
    ]))
    .await?)
}

pub(super) async fn postgres_migrator() -> Result<Migrator> {
    Ok(Migrator::new(Embedded(&[
        (1, "init", include_str!("../../migrations/postgres/0001_init.sql")),
        (2, "wake_at", include_str!("../../migrations/postgres/0002_wake_at.sql")),
        (3, "auth", include_str!("../../migrations/postgres/0003_auth.sql")),
        (4, "job_attempts", include_str!("../../migrations/postgres/0004_job_attempts.sql")),
        (5, "forge_and_reports", include_str!("../../migrations/postgres/0005_forge_and_reports.sql")),
        (8, "log_chunks", include_str!("../../migrations/postgres/0008_log_chunks.sql")),
        (9, "log_times", include_str!("../../migrations/postgres/0009_log_times.sql")),
        (10, "fork_approval", include_str!("../../migrations/postgres/0010_fork_approval.sql")),
        (11, "resource_groups", include_str!("../../migrations/postgres/0011_resource_groups.sql")),
        (12, "pipeline_iid", include_str!("../../migrations/postgres/0012_pipeline_iid.sql")),
        (13, "downstream", include_str!("../../migrations/postgres/0013_downstream.sql")),
        (14, "reuse", include_str!("../../migrations/postgres/0014_reuse.sql")),
        (15, "id_token_keys", include_str!("../../migrations/postgres/0015_id_token_keys.sql")),
    ]))
    .await?)
}

/// Runs the migrations inside the caller's transaction (SQLite's `BEGIN IMMEDIATE`, so that
/// processes opening a new file together do not both create the tables). `Migrator::run`
/// cannot be used on a connection here: its future fails the `Send` check ("`Acquire` is not
/// general enough"), and `run_direct` is sqlx's public way around that (hidden from its docs).
pub(super) async fn migrate_sqlite(migrator: &Migrator, conn: &mut sqlx::SqliteConnection) -> Result<()> {
    Ok(migrator.run_direct(conn).await?)
}

pub(super) fn event_json(event: &Event) -> Result<String> {
    serde_json::to_string(event).map_err(|source| StoreError::Encode { what: "an event", source })
}

pub(super) fn event_from_json(pipeline_id: i64, seq: i64, json: &str) -> Result<Event> {
    serde_json::from_str(json).map_err(|e| StoreError::corrupt(format!("event {seq} of pipeline {pipeline_id}"), e))
}

pub(super) fn tags_json(tags: &[String]) -> Result<String> {
    serde_json::to_string(tags).map_err(|source| StoreError::Encode { what: "tags", source })
}

pub(super) fn tags_from_json(what: &str, id: i64, json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|e| StoreError::corrupt(format!("tags of {what} {id}"), e))
}

/// Statuses in which an attempt is in a runner's hands: its token works, its lease counts.
/// (`canceling`: the engine asked to stop it and waits for the runner's report.)
pub(super) const HELD: [JobStatus; 2] = [JobStatus::Running, JobStatus::Canceling];

// Statuses are stored as their `as_str` names (scheduler's one table) and decoded here only.

pub(super) fn held() -> [&'static str; 2] {
    HELD.map(JobStatus::as_str)
}

/// A `reuse_records` row as selected: job, attempt, pipeline, name, artifacts, dotenv, coverage.
pub(super) type ReuseColumns = (i64, i64, i64, String, Option<String>, Option<String>, Option<f64>);

/// A `job_attempts` row as selected: attempt, status, exit code, reason, started, finished.
pub(super) type AttemptColumns = (i64, String, Option<i64>, Option<String>, Option<i64>, Option<i64>);

pub(super) fn attempt_row(
    job_id: i64,
    (attempt, status, exit_code, failure_reason, started_at, finished_at): AttemptColumns,
) -> Result<AttemptRow> {
    Ok(AttemptRow { attempt, status: job_status(job_id, &status)?, exit_code, failure_reason, started_at, finished_at })
}

pub(super) fn job_status(id: i64, text: &str) -> Result<JobStatus> {
    JobStatus::parse(text).ok_or_else(|| StoreError::Corrupt { what: format!("job {id} has the unknown status `{text}`"), source: None })
}

pub(super) fn pipeline_status(id: i64, text: &str) -> Result<PipelineStatus> {
    PipelineStatus::parse(text)
        .ok_or_else(|| StoreError::Corrupt { what: format!("pipeline {id} has the unknown status `{text}`"), source: None })
}

/// `(status, count)` rows of a `GROUP BY status`, decoded.
pub(super) fn status_counts<S>(rows: Vec<(String, i64)>, parse: fn(&str) -> Option<S>) -> Result<Vec<(S, i64)>> {
    rows.into_iter()
        .map(|(text, n)| {
            parse(&text).map(|s| (s, n)).ok_or_else(|| StoreError::Corrupt { what: format!("unknown status `{text}`"), source: None })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let dir = Path::new("/data");
        let check = |database: &str, expected: Location| assert_eq!(Location::parse(database, dir).unwrap(), expected, "{database}");
        check("", Location::Sqlite(PathBuf::from("/data/piste.db")));
        check("  ", Location::Sqlite(PathBuf::from("/data/piste.db")));
        check("sqlite://", Location::Sqlite(PathBuf::from("/data/piste.db")));
        check("sqlite:///var/piste.db", Location::Sqlite(PathBuf::from("/var/piste.db")));
        check("sqlite:rel.db", Location::Sqlite(PathBuf::from("rel.db")));
        check("/srv/ci.db", Location::Sqlite(PathBuf::from("/srv/ci.db")));
        check("postgres://u@h/db", Location::Postgres("postgres://u@h/db".into()));
        check("postgresql://h/db?sslmode=disable", Location::Postgres("postgresql://h/db?sslmode=disable".into()));
        assert!(matches!(Location::parse("mysql://h/db", dir), Err(StoreError::Location(m)) if m.contains("mysql://")));
    }
}
