-- Reuse of job results. `reuse_records`: one row per (scope, key) that succeeded, `scope_key`
-- being HMAC-SHA256 (server secret) over the project, its ref's protection and the runner's
-- key, so a key is only ever found again for the same project and the same protection, and
-- the table alone does not tell what a key was. It points at the attempt that ran (its log)
-- and keeps what a later attempt of the same job would erase from the job row: its artifacts,
-- dotenv variables and coverage.
-- `jobs.reuse_key`: the scoped key of the current attempt (kept when the runner asks, recorded
-- if the attempt succeeds); `jobs.reused_from`: `{"pipeline","job_id","job"}` of a reused job;
-- `jobs.run_anyway`: the attempt that must run whatever its key ("run anyway").
ALTER TABLE jobs ADD COLUMN reuse_key TEXT;
ALTER TABLE jobs ADD COLUMN reused_from TEXT;
ALTER TABLE jobs ADD COLUMN run_anyway INTEGER;
CREATE TABLE reuse_records (
    scope_key TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    attempt INTEGER NOT NULL,
    pipeline_id INTEGER NOT NULL,
    job_name TEXT NOT NULL,
    artifacts TEXT,
    dotenv TEXT,
    coverage REAL,
    created_at INTEGER NOT NULL
);
CREATE INDEX reuse_records_by_job ON reuse_records (job_id);
