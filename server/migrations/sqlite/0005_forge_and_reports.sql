-- The commit status last sent to the project's forge for each pipeline: `state` is the last
-- state tried (piste's names: pending, running, success, failed, canceled, skipped), `posted`
-- the last one the forge accepted, `error` why the last try failed (NULL when it succeeded).
-- What is still to post is recomputed at start from the pipeline's status and `posted`.
CREATE TABLE forge_statuses (
    pipeline_id INTEGER PRIMARY KEY REFERENCES pipelines (id),
    state       TEXT    NOT NULL,
    posted      TEXT,
    error       TEXT,
    at          INTEGER NOT NULL
);

-- What a job's reports say (see server/src/reports.rs): its JUnit tests as JSON (totals and
-- bounded failures), and the value its `coverage:` regex found in its log.
CREATE TABLE job_reports (
    job_id      INTEGER PRIMARY KEY REFERENCES jobs (id),
    pipeline_id INTEGER NOT NULL REFERENCES pipelines (id),
    tests       TEXT,
    coverage    REAL
);
CREATE INDEX job_reports_by_pipeline ON job_reports (pipeline_id);
