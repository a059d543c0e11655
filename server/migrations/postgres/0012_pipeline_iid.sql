-- `CI_PIPELINE_IID`: a pipeline's number within its project (GitLab's `ci_pipelines.iid`,
-- allocated from `internal_ids`). `pipeline_iids` holds each project's last number; a new
-- pipeline takes the next one with one upsert in the transaction that records it, so two
-- servers never hand out the same number. Existing pipelines are numbered in creation order.
ALTER TABLE pipelines ADD COLUMN iid BIGINT;
UPDATE pipelines SET iid = (SELECT COUNT(*) FROM pipelines p2 WHERE p2.project = pipelines.project AND p2.id <= pipelines.id);
CREATE UNIQUE INDEX pipelines_by_iid ON pipelines (project, iid);
CREATE TABLE pipeline_iids (
    project TEXT NOT NULL PRIMARY KEY,
    last_iid BIGINT NOT NULL
);
INSERT INTO pipeline_iids (project, last_iid) SELECT project, MAX(iid) FROM pipelines GROUP BY project;
