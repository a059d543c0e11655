-- Running logs, when finished logs go to object storage: each accepted chunk is a row (one
-- small write per request instead of several object-storage requests), until the job's
-- finish seals them into one object and deletes the rows.
CREATE TABLE log_chunks (
    job_id BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    "offset" BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (job_id, attempt, "offset")
);
