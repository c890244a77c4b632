-- What the store really takes, kept as running totals. SQLite dialect; keep in step with
-- migrations/postgres/0003_accounting.sql.

-- Entries and entry bytes per interpreter, kept in every write transaction (as store_totals
-- is), so /api/v1/stats never groups the whole entries table.
CREATE TABLE interpreter_totals (
    cache_tag  TEXT   NOT NULL,
    magic      BLOB   NOT NULL,
    entries    BIGINT NOT NULL,
    bytes      BIGINT NOT NULL,
    PRIMARY KEY (cache_tag, magic)
);

INSERT INTO interpreter_totals (cache_tag, magic, entries, bytes)
    SELECT cache_tag, magic, COUNT(*), COALESCE(SUM(size), 0) FROM entries
    GROUP BY cache_tag, magic;

-- The bytes an entry's row and index entries take beyond its body: a fixed 512 for the
-- digests, numbers and index entries, plus its strings (the namespace and writer twice: they
-- are indexed). The server computes the same for each new row; the size limit counts these
-- beside the bodies, so keys made large to take room are counted.
ALTER TABLE entries ADD COLUMN row_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE entries SET row_bytes = 512
    + 2 * LENGTH(CAST(namespace AS BLOB))
    + LENGTH(CAST(cache_tag AS BLOB))
    + LENGTH(CAST(settings AS BLOB))
    + LENGTH(CAST(dfile AS BLOB))
    + 2 * COALESCE(LENGTH(CAST(written_by AS BLOB)), 0)
    + COALESCE(LENGTH(signatures), 0);

ALTER TABLE store_totals ADD COLUMN row_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE store_totals SET row_bytes = (SELECT COALESCE(SUM(row_bytes), 0) FROM entries);

-- Bodies compressed at rest: `entry` holds one zstd frame of the entry when `zstd` is set, and
-- `size` is what is stored. A batch get sends such a body as stored, one frame of its zstd
-- answer; bodies from before stay as they are.
ALTER TABLE bodies ADD COLUMN zstd BOOLEAN NOT NULL DEFAULT FALSE;
