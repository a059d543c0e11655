-- `resource_group`: the expanded group of a job (NULL: none), and who holds each group of a
-- project (GitLab's `ci_resource_groups`/`ci_resources`: one resource per group). A holder is a
-- job attempt; a holder that is no longer pending or running is released by whoever looks.
ALTER TABLE jobs ADD COLUMN resource_group TEXT;
CREATE INDEX jobs_by_resource_group ON jobs (resource_group) WHERE resource_group IS NOT NULL;
CREATE TABLE resource_groups (
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    holder_job INTEGER,
    holder_attempt INTEGER,
    PRIMARY KEY (project, name)
);
