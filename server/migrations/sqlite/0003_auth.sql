-- Users' personal access tokens and web sessions (hashes only), and what each runner may run.

-- `piste token create`: a user's bearer token for the API. Expired or revoked tokens stay for
-- `piste token list` until removed by hand.
CREATE TABLE access_tokens (
    id         INTEGER PRIMARY KEY,
    user_name  TEXT    NOT NULL,
    label      TEXT    NOT NULL DEFAULT '',
    token_hash TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,                     -- NULL: never
    revoked_at INTEGER
);
CREATE INDEX access_tokens_by_user ON access_tokens (user_name, id);

-- A browser's login (OpenID Connect): the cookie's hash, who it is and their groups then.
CREATE TABLE sessions (
    token_hash TEXT    NOT NULL PRIMARY KEY,
    user_name  TEXT    NOT NULL,
    groups     TEXT    NOT NULL,            -- JSON array of strings, from the groups claim
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- Runner scoping: `--run-untagged` (a runner with tags takes untagged jobs), `--protected` (only
-- jobs of pipelines of protected refs), `--projects` (JSON array; NULL: every project).
ALTER TABLE runners ADD COLUMN run_untagged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runners ADD COLUMN protected_only INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runners ADD COLUMN projects TEXT;
