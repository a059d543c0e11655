-- Each earlier attempt of a job, as it ended: a retry starts a new attempt in the job row,
-- and the attempt it replaces is copied here first, so its failure reason stays readable.
CREATE TABLE job_attempts (
    job_id         BIGINT NOT NULL REFERENCES jobs (id),
    attempt        BIGINT NOT NULL,
    status         TEXT   NOT NULL,
    exit_code      BIGINT,
    failure_reason TEXT,
    started_at     BIGINT,
    finished_at    BIGINT,
    PRIMARY KEY (job_id, attempt)
);
