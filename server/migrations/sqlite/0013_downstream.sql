-- Downstream pipelines (`trigger:`): a pipeline created by a trigger job keeps its upstream
-- pipeline and that trigger job (GitLab's `ci_sources_pipelines`), NULL for the others.
ALTER TABLE pipelines ADD COLUMN upstream_pipeline_id INTEGER;
ALTER TABLE pipelines ADD COLUMN upstream_job_id INTEGER;
CREATE INDEX pipelines_by_upstream ON pipelines (upstream_pipeline_id) WHERE upstream_pipeline_id IS NOT NULL;
