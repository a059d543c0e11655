-- piste's schema on PostgreSQL. Times are milliseconds since the Unix epoch; JSON is kept as
-- text, byte for byte. See server/src/store/postgres.rs.

CREATE TABLE runners (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT   NOT NULL,
    tags         TEXT[] NOT NULL,
    token_hash   TEXT   NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);

CREATE TABLE pipelines (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project    TEXT   NOT NULL,
    git_ref    TEXT   NOT NULL,
    sha        TEXT   NOT NULL,
    before_sha TEXT,
    source     TEXT   NOT NULL,
    trigger    TEXT   NOT NULL,            -- JSON
    status     TEXT   NOT NULL,
    error      TEXT,
    version    BIGINT NOT NULL DEFAULT 0,  -- number of rows in pipeline_events
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX pipelines_by_project ON pipelines (project, id);
CREATE INDEX pipelines_by_status ON pipelines (status, id);

-- One row per webhook delivery that created a pipeline: a replayed delivery finds it here.
CREATE TABLE deliveries (
    project     TEXT   NOT NULL,
    delivery_id TEXT   NOT NULL,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    PRIMARY KEY (project, delivery_id)
);

-- The engine's input, in order: the pipeline's state is their replay.
CREATE TABLE pipeline_events (
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    seq         BIGINT NOT NULL,           -- 1, 2, ...: the pipeline's version after it
    event       TEXT   NOT NULL,           -- JSON of scheduler::Event
    PRIMARY KEY (pipeline_id, seq)
);

CREATE TABLE jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_id      BIGINT  NOT NULL REFERENCES pipelines (id),
    name             TEXT    NOT NULL,
    stage            TEXT    NOT NULL,
    stage_index      BIGINT  NOT NULL,
    tags             TEXT[]  NOT NULL,
    spec             TEXT    NOT NULL,     -- JSON payload template
    status           TEXT    NOT NULL,
    attempt          BIGINT  NOT NULL DEFAULT 1,
    -- The current attempt's claim: who runs it, with which token, until when.
    runner_id        BIGINT REFERENCES runners (id),
    token_hash       TEXT,
    lease_expires_at BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    started_at       BIGINT,
    finished_at      BIGINT,
    exit_code        BIGINT,
    failure_reason   TEXT,
    artifacts        TEXT,
    dotenv           TEXT
);
CREATE INDEX jobs_by_pipeline ON jobs (pipeline_id, id);
-- The queue (oldest pending first), running jobs for lease expiry, counts by status.
CREATE INDEX jobs_by_status ON jobs (status, id);
