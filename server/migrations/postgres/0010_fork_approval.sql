-- `fork_pipelines = "approval"`: a fork's merge-request pipeline is planned but waits until a
-- maintainer approves it. Whether it needs one is decided when the webhook arrives (and kept,
-- whatever the configuration says later); who approved it and when, once someone did.
ALTER TABLE pipelines ADD COLUMN needs_approval BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE pipelines ADD COLUMN approved_by TEXT;
ALTER TABLE pipelines ADD COLUMN approved_at BIGINT;
