-- Users' personal access tokens and web sessions (hashes only), and what each runner may run.

CREATE TABLE access_tokens (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_name  TEXT   NOT NULL,
    label      TEXT   NOT NULL DEFAULT '',
    token_hash TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,                      -- NULL: never
    revoked_at BIGINT
);
CREATE INDEX access_tokens_by_user ON access_tokens (user_name, id);

CREATE TABLE sessions (
    token_hash TEXT   NOT NULL PRIMARY KEY,
    user_name  TEXT   NOT NULL,
    groups     TEXT[] NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

ALTER TABLE runners ADD COLUMN run_untagged BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE runners ADD COLUMN protected_only BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE runners ADD COLUMN projects TEXT[];
