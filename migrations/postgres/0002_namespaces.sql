-- Namespaces, immutable entries, provenance, bodies stored once. PostgreSQL dialect; keep in step
-- with migrations/sqlite/0002_namespaces.sql.

-- Entry bodies (proto's Entry::encode output) by their blake3 digest, stored once however many
-- (namespace, key) rows hold them. `size` sits before the blob, so sums over it read no
-- TOAST chunks.
CREATE TABLE bodies (
    digest  BYTEA  PRIMARY KEY,
    size    BIGINT NOT NULL,
    entry   BYTEA  NOT NULL
);

INSERT INTO bodies (digest, size, entry)
    SELECT DISTINCT ON (entry_digest) entry_digest, size, entry FROM entries;

-- One compile result per (namespace, key); immutable once stored. `written_by` names the token
-- that stored it (NULL for entries from before provenance was recorded). `frame_digest` is the
-- writer's digest binding the body to this key, served as stored (NULL for entries from before:
-- the server then computes it); `signatures` the writers' signatures (proto's encoding).
CREATE TABLE entries_v2 (
    namespace     TEXT    NOT NULL,
    key_digest    BYTEA   NOT NULL,
    source_hash   BYTEA   NOT NULL,
    magic         BYTEA   NOT NULL,
    cache_tag     TEXT    NOT NULL,
    optimization  INTEGER NOT NULL,
    settings      TEXT    NOT NULL,
    dfile         TEXT    NOT NULL,
    success       BOOLEAN NOT NULL,
    body_digest   BYTEA   NOT NULL REFERENCES bodies (digest),
    size          BIGINT  NOT NULL,
    written_by    TEXT,
    frame_digest  BYTEA,
    signatures    BYTEA,
    created_at    BIGINT  NOT NULL,
    last_used_at  BIGINT  NOT NULL,
    hits          BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, key_digest)
);

INSERT INTO entries_v2 (namespace, key_digest, source_hash, magic, cache_tag, optimization,
                        settings, dfile, success, body_digest, size, written_by, frame_digest,
                        signatures, created_at, last_used_at, hits)
    SELECT 'default', key_digest, source_hash, magic, cache_tag, optimization, settings, dfile,
           success, entry_digest, size, NULL, NULL, NULL, created_at, last_used_at, hits
    FROM entries;

DROP TABLE entries;
ALTER TABLE entries_v2 RENAME TO entries;

-- Eviction walks entries least recently used first; lookups of one key across namespaces,
-- freeing a body once no entry holds it, and purges by writer use the others.
CREATE INDEX entries_last_used ON entries (last_used_at);
CREATE INDEX entries_key ON entries (key_digest);
CREATE INDEX entries_body ON entries (body_digest);
CREATE INDEX entries_writer ON entries (written_by, created_at);
CREATE INDEX entries_created ON entries (created_at);

-- What each token may write (comma-separated namespace patterns: `main`, `pr/*`, `*`) and the
-- namespaces it reads, in order. Tokens from before namespaces keep doing what they did.
ALTER TABLE tokens ADD COLUMN writes TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN reads TEXT NOT NULL DEFAULT 'default';
UPDATE tokens SET writes = 'default' WHERE scope IN ('write', 'admin');

-- Running totals, kept in every write transaction, so that limits, /metrics and /stats never
-- scan the store: entries, and bytes of the bodies they hold (each body once).
CREATE TABLE store_totals (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    entries  BIGINT  NOT NULL,
    bytes    BIGINT  NOT NULL
);

INSERT INTO store_totals (id, entries, bytes)
    SELECT 1, (SELECT COUNT(*) FROM entries), (SELECT COALESCE(SUM(size), 0) FROM bodies);
