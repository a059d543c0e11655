-- When the server received each running log's chunk (unix ms): the job page's per-line
-- timestamps. Sealing writes them next to the log (`logs/<job>.<attempt>.times`).
ALTER TABLE log_chunks ADD COLUMN at_ms INTEGER;
