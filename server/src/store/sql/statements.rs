//! The statements both stores run, and the queries built from their arguments.

use pycache_proto::KeyDigest;

use crate::store::{NewEntry, PurgeFilter};

/// Keys per `IN (…)` list: far below SQLite's and PostgreSQL's bound-variable limits.
pub(in crate::store) const KEYS_PER_QUERY: usize = 500;
/// Rows examined per eviction round.
pub(in crate::store) const EVICTION_ROUND: i64 = 256;
/// Entries deleted per purge transaction.
pub(in crate::store) const PURGE_ROUND: i64 = 500;
/// Entries stored per write transaction: a large batch is committed in rounds, so another
/// writer waits for one round, never for a whole batch.
pub(in crate::store) const PUT_ROUND_ENTRIES: usize = 1000;
/// Entry bytes stored per write transaction (and so the most SQLite's WAL grows by one).
pub(in crate::store) const PUT_ROUND_BYTES: u64 = 32 << 20;
/// The fixed part of [`row_bytes`]: the digests, numbers and index entries of one entry row.
pub(in crate::store) const ROW_OVERHEAD: i64 = 512;

/// Stores a body unless one with its digest is there. The pair differs by database: on
/// PostgreSQL an existing row is touched so that it is locked until the entry that points at it
/// commits (a concurrent purge then waits instead of freeing it under the new entry); SQLite has
/// one writer at a time and must not rewrite the blob.
/// Both answer whether the body is new (SQLite: a row only then).
pub(in crate::store) const INSERT_BODY_SQLITE: &str =
    "INSERT INTO bodies (digest, size, entry, zstd) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING RETURNING TRUE AS inserted";
pub(in crate::store) const INSERT_BODY_POSTGRES: &str =
    "INSERT INTO bodies (digest, size, entry, zstd) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO UPDATE SET size = excluded.size \
     RETURNING (xmax = 0) AS inserted";
/// Adds a write transaction's changes to the running totals; the last statement of every
/// write, so the row's lock is held only until the commit.
pub(in crate::store) const ADD_TOTALS: &str = "UPDATE store_totals SET entries = entries + $1, \
     bytes = bytes + $2, row_bytes = row_bytes + $3 WHERE id = 1";
/// Adds a write transaction's changes to one interpreter's totals; run in (cache tag, magic)
/// order just before [`ADD_TOTALS`].
pub(in crate::store) const ADD_INTERPRETER_TOTALS: &str = "INSERT INTO interpreter_totals \
     (cache_tag, magic, entries, bytes) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (cache_tag, magic) DO UPDATE SET \
     entries = interpreter_totals.entries + excluded.entries, \
     bytes = interpreter_totals.bytes + excluded.bytes";
/// Entries never change once stored: a second upload of a key inserts nothing.
pub(in crate::store) const INSERT_ENTRY: &str =
    "INSERT INTO entries (namespace, key_digest, source_hash, \
     magic, cache_tag, optimization, settings, dfile, success, body_digest, size, written_by, \
     frame_digest, signatures, created_at, last_used_at, hits, row_bytes) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, 0, $16) \
     ON CONFLICT (namespace, key_digest) DO NOTHING";
pub(in crate::store) const STORED_BODY: &str =
    "SELECT body_digest FROM entries WHERE namespace = $1 AND key_digest = $2";
pub(in crate::store) const BODY_BYTES: &str =
    "SELECT entry, zstd, size FROM bodies WHERE digest = $1";
/// Rewrites a damaged body with bytes that hash to its digest (checked by the caller).
pub(in crate::store) const REPAIR_BODY: &str =
    "UPDATE bodies SET entry = $2, zstd = $3, size = $4 WHERE digest = $1";
/// Frees a body no entry holds any more; answers its size when it did.
pub(in crate::store) const DELETE_ORPHAN_BODY: &str = "DELETE FROM bodies WHERE digest = $1 \
     AND NOT EXISTS (SELECT 1 FROM entries WHERE body_digest = $1) RETURNING size";
pub(in crate::store) const RECORD_USAGE: &str =
    "UPDATE entries SET hits = hits + $1, last_used_at = \
     CASE WHEN last_used_at < $2 THEN $2 ELSE last_used_at END \
     WHERE namespace = $3 AND key_digest = $4";
pub(in crate::store) const TOTALS: &str =
    "SELECT entries, bytes, row_bytes FROM store_totals WHERE id = 1";
pub(in crate::store) const BY_INTERPRETER: &str = "SELECT cache_tag, magic, entries, bytes \
     FROM interpreter_totals WHERE entries > 0 ORDER BY cache_tag, magic";
/// The columns of a [`DoomedRow`].
const DOOMED_COLUMNS: &str =
    "namespace, key_digest, body_digest, size, row_bytes, cache_tag, magic";
pub(in crate::store) const LRU_CANDIDATES: &str =
    "SELECT namespace, key_digest, body_digest, size, \
     row_bytes, cache_tag, magic FROM entries \
     ORDER BY last_used_at, namespace, key_digest LIMIT $1";
pub(in crate::store) const DELETE_ENTRY: &str =
    "DELETE FROM entries WHERE namespace = $1 AND key_digest = $2";
pub(in crate::store) const INSERT_TOKEN: &str =
    "INSERT INTO tokens (token_hash, name, scope, writes, \
     reads, created_at) VALUES ($1, $2, $3, $4, $5, $6)";
pub(in crate::store) const TOKEN_GRANT: &str =
    "SELECT name, scope, writes, reads, created_at, revoked_at \
     FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL";
pub(in crate::store) const LIST_TOKENS: &str =
    "SELECT name, scope, writes, reads, created_at, revoked_at \
     FROM tokens ORDER BY created_at, name";
pub(in crate::store) const REVOKE_TOKEN: &str =
    "UPDATE tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL";

/// `SELECT` of the entries whose key digest is among `keys` bound values (`$1…`) and whose
/// namespace is among the `namespaces` bound after them, with their bodies.
pub(in crate::store) fn select_entries(keys: usize, namespaces: usize) -> String {
    let list = |from: usize, n: usize| -> String {
        (from..from + n)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "SELECT e.namespace, e.source_hash, e.magic, e.cache_tag, e.optimization, e.settings, \
         e.dfile, e.written_by, e.body_digest, e.frame_digest, e.signatures, e.size, b.entry, \
         b.zstd \
         FROM entries e JOIN bodies b ON b.digest = e.body_digest \
         WHERE e.key_digest IN ({}) AND e.namespace IN ({})",
        list(1, keys),
        list(keys + 1, namespaces)
    )
}

/// A value bound to a purge condition.
pub(in crate::store) enum PurgeValue<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
    Int(i64),
}

/// `SELECT` of up to `$N` (the last value bound) entries matching `filter`, in the order writers
/// lock rows in, with the values to bind before the limit.
pub(in crate::store) fn purge_candidates(filter: &PurgeFilter) -> (String, Vec<PurgeValue<'_>>) {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    if let Some(name) = &filter.written_by {
        values.push(PurgeValue::Text(name));
        conditions.push(format!("written_by = ${}", values.len()));
    }
    if let Some(namespace) = &filter.namespace {
        values.push(PurgeValue::Text(namespace));
        conditions.push(format!("namespace = ${}", values.len()));
    }
    if let Some(key) = &filter.key {
        values.push(PurgeValue::Bytes(&key.0));
        conditions.push(format!("key_digest = ${}", values.len()));
    }
    if let Some(since) = filter.since {
        values.push(PurgeValue::Int(since));
        conditions.push(format!("created_at >= ${}", values.len()));
    }
    let filter_sql = if conditions.is_empty() {
        // Never reached through the API (a purge needs a condition); kept total for safety.
        "1 = 0".to_owned()
    } else {
        conditions.join(" AND ")
    };
    let sql = format!(
        "SELECT {DOOMED_COLUMNS} FROM entries WHERE {filter_sql} \
         ORDER BY namespace, key_digest LIMIT ${}",
        values.len() + 1
    );
    (sql, values)
}

/// The entries of one batch in the order every writer locks rows in: by key digest, each key
/// once (the first upload of a key counts: entries never change once stored). Two transactions
/// that lock overlapping keys in one global order cannot deadlock on them.
pub(in crate::store) fn in_lock_order(entries: &[NewEntry]) -> Vec<(KeyDigest, &NewEntry)> {
    let mut ordered: Vec<(KeyDigest, &NewEntry)> =
        entries.iter().map(|e| (e.stored.key.digest(), e)).collect();
    // Stable, so equal keys keep their upload order and the first one survives `dedup`.
    ordered.sort_by_key(|e| e.0);
    ordered.dedup_by(|next, kept| next.0 == kept.0);
    ordered
}

/// Starts a transaction that reads before it writes. SQLite must take the write lock at once
/// (`BEGIN IMMEDIATE`): a deferred transaction that read first cannot upgrade while another
/// writer holds the lock and fails with `SQLITE_BUSY` instead of waiting its busy timeout.
pub(in crate::store) const BEGIN_WRITE_SQLITE: &str = "BEGIN IMMEDIATE";
pub(in crate::store) const BEGIN_WRITE_POSTGRES: &str = "BEGIN";
