-- Running logs, when finished logs go to object storage: each accepted chunk is a row (one
-- small write per request instead of several object-storage requests), until the job's
-- finish seals them into one object and deletes the rows.
CREATE TABLE log_chunks (
    job_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, attempt, "offset")
);
