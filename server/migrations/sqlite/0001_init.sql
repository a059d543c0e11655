-- piste's schema on SQLite. Times are milliseconds since the Unix epoch; JSON is kept as text,
-- byte for byte. See server/src/store/sqlite.rs.

CREATE TABLE runners (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL,
    tags         TEXT    NOT NULL,          -- JSON array of strings
    token_hash   TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);

CREATE TABLE pipelines (
    id         INTEGER PRIMARY KEY,
    project    TEXT    NOT NULL,
    git_ref    TEXT    NOT NULL,
    sha        TEXT    NOT NULL,
    before_sha TEXT,
    source     TEXT    NOT NULL,
    trigger    TEXT    NOT NULL,            -- JSON
    status     TEXT    NOT NULL,
    error      TEXT,
    version    INTEGER NOT NULL DEFAULT 0,  -- number of rows in pipeline_events
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX pipelines_by_project ON pipelines (project, id);
CREATE INDEX pipelines_by_status ON pipelines (status, id);

-- One row per webhook delivery that created a pipeline: a replayed delivery finds it here.
CREATE TABLE deliveries (
    project     TEXT    NOT NULL,
    delivery_id TEXT    NOT NULL,
    pipeline_id INTEGER NOT NULL REFERENCES pipelines (id),
    PRIMARY KEY (project, delivery_id)
) WITHOUT ROWID;

-- The engine's input, in order: the pipeline's state is their replay.
CREATE TABLE pipeline_events (
    pipeline_id INTEGER NOT NULL REFERENCES pipelines (id),
    seq         INTEGER NOT NULL,           -- 1, 2, ...: the pipeline's version after it
    event       TEXT    NOT NULL,           -- JSON of scheduler::Event
    PRIMARY KEY (pipeline_id, seq)
) WITHOUT ROWID;

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    pipeline_id      INTEGER NOT NULL REFERENCES pipelines (id),
    name             TEXT    NOT NULL,
    stage            TEXT    NOT NULL,
    stage_index      INTEGER NOT NULL,
    tags             TEXT    NOT NULL,      -- JSON array of strings
    spec             TEXT    NOT NULL,      -- JSON payload template
    status           TEXT    NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 1,
    -- The current attempt's claim: who runs it, with which token, until when.
    runner_id        INTEGER REFERENCES runners (id),
    token_hash       TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    started_at       INTEGER,
    finished_at      INTEGER,
    exit_code        INTEGER,
    failure_reason   TEXT,
    artifacts        TEXT,
    dotenv           TEXT
);
CREATE INDEX jobs_by_pipeline ON jobs (pipeline_id, id);
-- The queue (oldest pending first), running jobs for lease expiry, counts by status.
CREATE INDEX jobs_by_status ON jobs (status, id);
