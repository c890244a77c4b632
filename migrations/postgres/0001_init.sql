-- pycache-server schema, PostgreSQL dialect. Keep in step with migrations/sqlite/0001_init.sql.

-- One compile result per cache key. The key parts are columns for statistics and eviction by
-- interpreter; `entry` is proto's Entry::encode output and `entry_digest` its blake3.
CREATE TABLE entries (
    key_digest    BYTEA   PRIMARY KEY,
    source_hash   BYTEA   NOT NULL,
    magic         BYTEA   NOT NULL,
    cache_tag     TEXT    NOT NULL,
    optimization  INTEGER NOT NULL,
    settings      TEXT    NOT NULL,
    dfile         TEXT    NOT NULL,
    success       BOOLEAN NOT NULL,
    entry         BYTEA   NOT NULL,
    entry_digest  BYTEA   NOT NULL,
    size          BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL,
    last_used_at  BIGINT  NOT NULL,
    hits          BIGINT  NOT NULL DEFAULT 0
);

-- Eviction walks entries least recently used first.
CREATE INDEX entries_last_used ON entries (last_used_at);

-- Bearer tokens, stored only as the blake3 hash of the token text.
CREATE TABLE tokens (
    token_hash  BYTEA  PRIMARY KEY,
    name        TEXT   NOT NULL UNIQUE,
    scope       TEXT   NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
