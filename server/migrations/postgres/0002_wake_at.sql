-- When the pipeline's engine next needs the time (its earliest delayed job), so that any
-- server sharing the database wakes it then; NULL when nothing waits for the clock.
ALTER TABLE pipelines ADD COLUMN wake_at BIGINT;
CREATE INDEX pipelines_by_wake_at ON pipelines (wake_at) WHERE wake_at IS NOT NULL;

-- A pipeline that could not be planned is `failed` (with `error` saying why): statuses are the
-- engine's, nothing else.
UPDATE pipelines SET status = 'failed' WHERE status = 'error';
