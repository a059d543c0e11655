-- The commit status last sent to the project's forge for each pipeline: `state` is the last
-- state tried (piste's names: pending, running, success, failed, canceled, skipped), `posted`
-- the last one the forge accepted, `error` why the last try failed (NULL when it succeeded).
-- What is still to post is recomputed at start from the pipeline's status and `posted`.
CREATE TABLE forge_statuses (
    pipeline_id BIGINT PRIMARY KEY REFERENCES pipelines (id),
    state       TEXT    NOT NULL,
    posted      TEXT,
    error       TEXT,
    at          BIGINT NOT NULL
);
