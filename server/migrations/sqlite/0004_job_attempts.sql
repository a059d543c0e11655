-- Each earlier attempt of a job, as it ended: a retry starts a new attempt in the job row,
-- and the attempt it replaces is copied here first, so its failure reason stays readable.
CREATE TABLE job_attempts (
    job_id         INTEGER NOT NULL REFERENCES jobs (id),
    attempt        INTEGER NOT NULL,
    status         TEXT    NOT NULL,
    exit_code      INTEGER,
    failure_reason TEXT,
    started_at     INTEGER,
    finished_at    INTEGER,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
