//! The local cache: one SQLite database file, the embedded default tier.
//!
//! `<root>/store.db` (WAL mode) holds every entry: `entries` is the small, dense table of keys,
//! sizes and last-use times; `bodies` holds each entry's bytes — the encoded [`Entry`] followed
//! by its blake3 digest keyed with the key digest, so an entry is bound to its key and a row
//! that fails its digest is corrupt, never a wrong hit. A lookup is one indexed read of an open
//! database, no file open per entry. Writes are batched into transactions; a run killed at any
//! moment loses only its uncommitted batch (SQLite's journal), and concurrent runs on one
//! cache take turns writing (WAL readers never wait).
//!
//! The store is bounded: when the pages in use pass the size limit, the least recently used
//! entries go until it is back under 90% of it, and the freed pages are returned to the file
//! system (`auto_vacuum = INCREMENTAL`, a WAL checkpoint). Last-use times of hits are written
//! once, at the end of a run. `stats` keeps hits, misses (and of those, the server's hits),
//! stores and evictions per day and interpreter, for `pycache-client cache stats`; `settings`
//! keeps the size limit `cache prune --cache-size` pruned to, for runs that set none.
//!
//! The directories of earlier layouts (`entries/`, `entries-v2/`: a file per entry) are
//! ignored: never read, never an error; `cache prune` and `cache clear` delete them.

mod report;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pycache_proto::{Entry, KeyDigest};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

pub use report::{legacy_bytes, CacheReport, DayStats, InterpreterStats, PruneReport, LEGACY_DIRS};

/// The database file under the cache root.
pub const STORE_FILE: &str = "store.db";
/// The size limit when nothing sets one.
pub const DEFAULT_SIZE_LIMIT: u64 = 2 << 30;
/// The schema this client writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;
/// Entries buffered before a write transaction.
const BATCH_ENTRIES: usize = 256;
/// Bytes buffered before a write transaction.
const BATCH_BYTES: usize = 8 << 20;
/// Eviction brings the pages in use down to this share of the limit, so a run does not evict
/// again at its next store.
const EVICT_TO: f64 = 0.9;
/// How long a writer waits for another process's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(20);

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A valid entry.
    Hit(Entry),
    /// No entry for the key.
    Miss,
    /// An entry that failed its digest or did not decode; it has been removed.
    Corrupt(String),
}

/// How a cache is opened.
#[derive(Debug, Clone, Default)]
pub struct CacheOptions {
    /// Bytes the store may hold; `None`: the limit the store remembers, else
    /// [`DEFAULT_SIZE_LIMIT`].
    pub size_limit: Option<u64>,
    /// The interpreter the run's entries are for, as `cache stats` names it.
    pub interpreter: Option<String>,
}

/// What a run asked of the cache, for its statistics.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunCounts {
    /// Results the local cache served.
    pub hits: u64,
    /// Results it did not have.
    pub misses: u64,
    /// Of those, results the server served.
    pub remote_hits: u64,
}

/// A bounded, content-addressed entry store in one database file.
#[derive(Debug)]
pub struct LocalCache {
    root: PathBuf,
    options: CacheOptions,
    /// The limit in force: the options', else the remembered one, else the default.
    size_limit: u64,
    conn: Mutex<Connection>,
    run: Mutex<RunState>,
    /// The store held no entry when it was opened: lookups look only at this run's own
    /// entries (a fresh cache's cold run asks the database nothing; entries another process
    /// stores meanwhile are missed, which costs a compile, never a wrong result).
    empty_at_open: bool,
}

/// What this process has not written yet.
#[derive(Debug, Default)]
struct RunState {
    /// Entries waiting for the next write transaction (bytes include the bound digest).
    pending: Vec<(KeyDigest, Vec<u8>)>,
    /// Their keys, so a lookup sees them.
    pending_index: HashMap<KeyDigest, usize>,
    pending_bytes: usize,
    /// Ids of the entries this run hit, for their last-use times.
    touched: Vec<i64>,
    /// Keys this run wrote, when the store was empty at open (the only ones to look up).
    written: HashSet<KeyDigest>,
    stored: u64,
    stored_bytes: u64,
    corrupt: u64,
    evicted: u64,
    evicted_bytes: u64,
}

/// A store error, as a sentence naming the file.
fn store_error(path: &Path, e: rusqlite::Error) -> io::Error {
    io::Error::other(format!("{}: {e}", path.display()))
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The digest stored after an entry: blake3 of its bytes, keyed with its key's digest.
fn bound_digest(key: &KeyDigest, encoded: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(&key.0, encoded).as_bytes()
}

impl LocalCache {
    /// Opens (creating if needed) the cache under `root` with the default options.
    pub fn open(root: &Path) -> io::Result<Self> {
        Self::open_with(root, CacheOptions::default())
    }

    /// Opens (creating if needed) the cache under `root`. A store file that is not a database
    /// is moved aside (`store.db.corrupt`) and a new one created; a store written by a newer
    /// pycache is an error (the run goes on without the local cache).
    pub fn open_with(root: &Path, options: CacheOptions) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        let path = root.join(STORE_FILE);
        let conn = match connect(&path) {
            Err(e) if is_not_a_database(&e) => {
                tracing::warn!(path = %path.display(), error = %e, "the local cache was not a database; moved aside and started anew");
                for suffix in ["", "-wal", "-shm"] {
                    let from = root.join(format!("{STORE_FILE}{suffix}"));
                    let _ = fs::rename(&from, root.join(format!("{STORE_FILE}.corrupt{suffix}")));
                }
                connect(&path)
            }
            other => other,
        }
        .map_err(|e| store_error(&path, e))?;
        let empty_at_open = conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM entries)", [], |r| {
                r.get::<_, bool>(0)
            })
            .unwrap_or(false);
        let size_limit = match options.size_limit {
            Some(limit) => limit,
            None => remembered_size_limit(&conn)
                .map_err(|e| store_error(&path, e))?
                .unwrap_or(DEFAULT_SIZE_LIMIT),
        };
        Ok(LocalCache {
            root: root.to_path_buf(),
            options,
            size_limit,
            conn: Mutex::new(conn),
            run: Mutex::new(RunState::default()),
            empty_at_open,
        })
    }

    /// The cache's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The database file.
    pub fn store_path(&self) -> PathBuf {
        self.root.join(STORE_FILE)
    }

    /// The size limit.
    pub fn size_limit(&self) -> u64 {
        self.size_limit
    }

    /// Keeps `limit` in the store as the limit of later runs that set none, and uses it now.
    pub fn remember_size_limit(&mut self, limit: u64) -> io::Result<()> {
        let conn = self.conn.lock().expect("cache connection lock");
        conn.execute(
            "INSERT INTO settings (name, value) VALUES ('size_limit', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [limit as i64],
        )
        .map_err(|e| store_error(&self.store_path(), e))?;
        drop(conn);
        self.size_limit = limit;
        Ok(())
    }

    /// Looks up one entry, verifying its digest and key binding.
    pub fn get(&self, key: &KeyDigest) -> Lookup {
        let mut run = self.run.lock().expect("cache state lock");
        if let Some(&i) = run.pending_index.get(key) {
            return match verify(key, &run.pending[i].1) {
                Ok(entry) => Lookup::Hit(entry),
                Err(why) => Lookup::Corrupt(why),
            };
        }
        if self.empty_at_open && !run.written.contains(key) {
            return Lookup::Miss;
        }
        let conn = self.conn.lock().expect("cache connection lock");
        let found = conn
            .prepare_cached(
                "SELECT e.id, b.data FROM entries e JOIN bodies b ON b.id = e.id WHERE e.key = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([&key.0[..]], |row| {
                    let id: i64 = row.get(0)?;
                    let data = row.get_ref(1)?.as_blob()?;
                    Ok((id, verify(key, data)))
                })
                .optional()
            });
        match found {
            Ok(Some((id, Ok(entry)))) => {
                run.touched.push(id);
                Lookup::Hit(entry)
            }
            Ok(Some((id, Err(why)))) => {
                run.corrupt += 1;
                let _ = conn.execute_batch(&format!(
                    "DELETE FROM bodies WHERE id = {id}; DELETE FROM entries WHERE id = {id};"
                ));
                Lookup::Corrupt(format!(
                    "entry {} in {}: {why}",
                    key.to_hex(),
                    self.store_path().display()
                ))
            }
            Ok(None) => Lookup::Miss,
            // A damaged page (or a body that is not a blob) is corruption; anything else (the
            // disk failing a read, a lock held too long) is only a miss for this lookup.
            Err(e)
                if matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt))
                    || matches!(e, rusqlite::Error::InvalidColumnType(..)) =>
            {
                run.corrupt += 1;
                Lookup::Corrupt(format!("{}: {e}", self.store_path().display()))
            }
            Err(e) => {
                tracing::warn!(path = %self.store_path().display(), error = %e, "a local cache lookup failed; compiling instead");
                Lookup::Miss
            }
        }
    }

    /// Deletes the entry of `key` (pending or stored); returns whether there was one.
    pub fn remove(&self, key: &KeyDigest) -> io::Result<bool> {
        let mut run = self.run.lock().expect("cache state lock");
        let mut removed = false;
        if let Some(at) = run.pending_index.remove(key) {
            let (_, data) = run.pending.remove(at);
            run.pending_bytes -= data.len();
            let moved: Vec<KeyDigest> = run.pending[at..].iter().map(|(k, _)| *k).collect();
            for k in moved {
                if let Some(i) = run.pending_index.get_mut(&k) {
                    *i -= 1;
                }
            }
            removed = true;
        }
        let conn = self.conn.lock().expect("cache connection lock");
        let deleted = conn
            .execute(
                "DELETE FROM bodies WHERE id IN (SELECT id FROM entries WHERE key = ?1)",
                [&key.0[..]],
            )
            .and_then(|_| conn.execute("DELETE FROM entries WHERE key = ?1", [&key.0[..]]))
            .map_err(|e| store_error(&self.store_path(), e))?;
        Ok(removed || deleted > 0)
    }

    /// Stores one entry; returns the bytes it takes.
    pub fn put(&self, key: &KeyDigest, entry: &Entry) -> io::Result<u64> {
        self.put_encoded(key, &entry.encode())
    }

    /// Stores already-encoded entry bytes. Entries are written in batches: an error of the
    /// batch's write transaction is returned by the put that completed the batch (or by
    /// [`LocalCache::finish`]).
    pub fn put_encoded(&self, key: &KeyDigest, encoded: &[u8]) -> io::Result<u64> {
        let mut data = Vec::with_capacity(encoded.len() + 32);
        data.extend_from_slice(encoded);
        data.extend_from_slice(&bound_digest(key, encoded));
        let size = data.len() as u64;
        let mut run = self.run.lock().expect("cache state lock");
        if run.pending_index.contains_key(key) {
            return Ok(size);
        }
        let at = run.pending.len();
        run.pending_index.insert(*key, at);
        run.pending_bytes += data.len();
        run.pending.push((*key, data));
        if run.pending.len() >= BATCH_ENTRIES || run.pending_bytes >= BATCH_BYTES {
            self.flush(&mut run)?;
        }
        Ok(size)
    }

    /// Writes what is pending, the last-use times of this run's hits and its statistics, and
    /// evicts down to the size limit if the store passed it.
    pub fn finish(&self, counts: RunCounts) -> io::Result<()> {
        let mut run = self.run.lock().expect("cache state lock");
        let flushed = self.flush(&mut run);
        let recorded = self.record_run(&mut run, counts);
        flushed.and(recorded)
    }

    /// One write transaction for the pending entries; evicts afterwards when over the limit.
    fn flush(&self, run: &mut RunState) -> io::Result<()> {
        if run.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut run.pending);
        run.pending_index.clear();
        if self.empty_at_open {
            run.written.extend(pending.iter().map(|(key, _)| *key));
        }
        run.pending_bytes = 0;
        let mut conn = self.conn.lock().expect("cache connection lock");
        let path = self.store_path();
        let now = now_ms();
        let (stored, bytes) = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let interp = interpreter_id(&tx, self.options.interpreter.as_deref())?;
            let (mut stored, mut bytes) = (0u64, 0u64);
            {
                let mut entry = tx.prepare_cached(
                    "INSERT INTO entries (key, size, interpreter, created, last_use)
                     VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (key) DO NOTHING",
                )?;
                let mut body =
                    tx.prepare_cached("INSERT INTO bodies (id, data) VALUES (?1, ?2)")?;
                for (key, data) in &pending {
                    if entry.execute(params![&key.0[..], data.len() as i64, interp, now])? == 1 {
                        body.execute(params![tx.last_insert_rowid(), data])?;
                        stored += 1;
                        bytes += data.len() as u64;
                    }
                }
            }
            tx.commit()?;
            Ok::<_, rusqlite::Error>((stored, bytes))
        })()
        .map_err(|e| store_error(&path, e))?;
        run.stored += stored;
        run.stored_bytes += bytes;
        self.evict_if_over(&mut conn, run)
    }

    /// Last-use times and the run's statistics, in one transaction.
    fn record_run(&self, run: &mut RunState, counts: RunCounts) -> io::Result<()> {
        let touched = std::mem::take(&mut run.touched);
        let stats = [
            counts.hits,
            counts.misses,
            run.stored,
            run.stored_bytes,
            run.evicted,
            run.evicted_bytes,
            run.corrupt,
            counts.remote_hits,
        ];
        (
            run.stored,
            run.stored_bytes,
            run.evicted,
            run.evicted_bytes,
            run.corrupt,
        ) = (0, 0, 0, 0, 0);
        if touched.is_empty() && stats.iter().all(|&n| n == 0) {
            return Ok(());
        }
        let mut conn = self.conn.lock().expect("cache connection lock");
        let now = now_ms();
        (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut touch =
                    tx.prepare_cached("UPDATE entries SET last_use = ?1 WHERE id = ?2")?;
                for id in touched {
                    touch.execute(params![now, id])?;
                }
            }
            let interp = interpreter_id(&tx, self.options.interpreter.as_deref())?;
            tx.execute(
                "INSERT INTO stats (day, interpreter, hits, misses, stored, stored_bytes,
                                    evicted, evicted_bytes, corrupt, remote_hits)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (day, interpreter) DO UPDATE SET
                   hits = hits + excluded.hits, misses = misses + excluded.misses,
                   remote_hits = remote_hits + excluded.remote_hits,
                   stored = stored + excluded.stored,
                   stored_bytes = stored_bytes + excluded.stored_bytes,
                   evicted = evicted + excluded.evicted,
                   evicted_bytes = evicted_bytes + excluded.evicted_bytes,
                   corrupt = corrupt + excluded.corrupt",
                params![
                    now / 86_400_000,
                    interp,
                    stats[0] as i64,
                    stats[1] as i64,
                    stats[2] as i64,
                    stats[3] as i64,
                    stats[4] as i64,
                    stats[5] as i64,
                    stats[6] as i64,
                    stats[7] as i64
                ],
            )?;
            tx.commit()
        })()
        .map_err(|e| store_error(&self.store_path(), e))
    }

    /// Evicts least recently used entries when the pages in use pass the limit.
    fn evict_if_over(&self, conn: &mut Connection, run: &mut RunState) -> io::Result<()> {
        let limit = self.size_limit;
        let used = used_bytes(conn).map_err(|e| store_error(&self.store_path(), e))?;
        if used <= limit {
            return Ok(());
        }
        let target = (limit as f64 * EVICT_TO) as u64;
        let (n, bytes) = evict_to(conn, target).map_err(|e| store_error(&self.store_path(), e))?;
        run.evicted += n;
        run.evicted_bytes += bytes;
        tracing::debug!(
            evicted = n,
            bytes,
            limit,
            "local cache over its limit: evicted"
        );
        Ok(())
    }
}

impl Drop for LocalCache {
    /// Entries still pending are written (a run that ended without `finish`).
    fn drop(&mut self) {
        let Ok(mut run) = self.run.lock() else { return };
        if let Err(e) = self.flush(&mut run) {
            tracing::warn!(error = %e, "could not write the last entries to the local cache");
        }
    }
}

/// Opens the database, sets it up and checks its schema.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 {
        // A new file: these decide its layout before the first write, and cost a write
        // transaction on an existing one, so they are set only here. 16 KiB pages keep a
        // typical entry's body in one or two pages (fewer reads per lookup).
        conn.execute_batch("PRAGMA page_size = 16384; PRAGMA auto_vacuum = INCREMENTAL;")?;
    }
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::debug!(mode, "the local cache is not in WAL mode");
    }
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA journal_size_limit = 8388608;
         PRAGMA foreign_keys = OFF;",
    )?;
    match version {
        SCHEMA_VERSION => add_missing_tables(&conn)?,
        0 => create_schema(&conn)?,
        newer => {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
                Some(format!(
                    "written by a newer pycache-client (schema {newer}, this one knows {SCHEMA_VERSION}): upgrade, or use another --cache-dir"
                )),
            ))
        }
    }
    Ok(conn)
}

/// Creates the tables (once; concurrent first runs serialize on the write lock).
fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS interpreters (
             id INTEGER PRIMARY KEY,
             label TEXT NOT NULL UNIQUE
         );
         CREATE TABLE IF NOT EXISTS entries (
             id INTEGER PRIMARY KEY,
             key BLOB NOT NULL UNIQUE,
             size INTEGER NOT NULL,
             interpreter INTEGER,
             created INTEGER NOT NULL,
             last_use INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS entries_by_last_use ON entries (last_use, id);
         CREATE TABLE IF NOT EXISTS bodies (
             id INTEGER PRIMARY KEY,
             data BLOB NOT NULL
         );
         CREATE TABLE IF NOT EXISTS stats (
             day INTEGER NOT NULL,
             interpreter INTEGER,
             hits INTEGER NOT NULL DEFAULT 0,
             misses INTEGER NOT NULL DEFAULT 0,
             stored INTEGER NOT NULL DEFAULT 0,
             stored_bytes INTEGER NOT NULL DEFAULT 0,
             evicted INTEGER NOT NULL DEFAULT 0,
             evicted_bytes INTEGER NOT NULL DEFAULT 0,
             corrupt INTEGER NOT NULL DEFAULT 0,
             remote_hits INTEGER NOT NULL DEFAULT 0,
             PRIMARY KEY (day, interpreter)
         );
         CREATE TABLE IF NOT EXISTS settings (
             name TEXT PRIMARY KEY,
             value INTEGER NOT NULL
         );
         PRAGMA user_version = {SCHEMA_VERSION};
         COMMIT;"
    ))
}

/// What later clients added to the schema, added to a store an earlier one created: the
/// additions are ones an earlier client does not notice (a column with a default, a table it
/// never reads), so the schema version stays and every client keeps using the store. Costs
/// one read when nothing is missing.
fn add_missing_tables(conn: &Connection) -> rusqlite::Result<()> {
    let complete = |conn: &Connection| -> rusqlite::Result<(bool, bool)> {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('stats') WHERE name = 'remote_hits'),
                    EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'settings')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    };
    if complete(conn)? == (true, true) {
        return Ok(());
    }
    // Under the write lock, checked again: another process may have added them meanwhile.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let added = (|| {
        let (has_column, has_settings) = complete(conn)?;
        if !has_column {
            conn.execute_batch(
                "ALTER TABLE stats ADD COLUMN remote_hits INTEGER NOT NULL DEFAULT 0;",
            )?;
        }
        if !has_settings {
            conn.execute_batch(
                "CREATE TABLE settings (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
            )?;
        }
        conn.execute_batch("COMMIT")
    })();
    if added.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    added
}

/// The limit `cache prune --cache-size` kept, if any.
fn remembered_size_limit(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    conn.query_row(
        "SELECT value FROM settings WHERE name = 'size_limit'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|v| v.map(|n| n.max(0) as u64))
}

/// Whether opening failed because the file is not an SQLite database (or is damaged).
fn is_not_a_database(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

/// The id of an interpreter label, added on first use.
fn interpreter_id(conn: &Connection, label: Option<&str>) -> rusqlite::Result<Option<i64>> {
    let Some(label) = label else { return Ok(None) };
    conn.prepare_cached(
        "INSERT INTO interpreters (label) VALUES (?1) ON CONFLICT (label) DO NOTHING",
    )?
    .execute([label])?;
    conn.prepare_cached("SELECT id FROM interpreters WHERE label = ?1")?
        .query_row([label], |r| r.get(0))
        .map(Some)
}

/// Bytes of the database's pages in use (free pages not counted).
fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

/// Deletes least recently used entries until the pages in use are at most `target` bytes,
/// then returns the freed pages to the file system. Returns the entries and bytes evicted.
fn evict_to(conn: &mut Connection, target: u64) -> rusqlite::Result<(u64, u64)> {
    let page = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))? as u64;
    let (mut evicted, mut evicted_bytes) = (0u64, 0u64);
    // Each round frees what the estimate says is needed; pages shared by small rows make the
    // estimate low at times, hence a few rounds.
    for _ in 0..8 {
        let used = used_bytes(conn)?;
        if used <= target {
            break;
        }
        let mut need = used - target;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let victims: Vec<(i64, u64)> = {
            let mut stmt =
                tx.prepare_cached("SELECT id, size FROM entries ORDER BY last_use, id LIMIT 4096")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, size) = row?;
                out.push((id, size));
                // A body takes whole overflow pages, plus its share of a row in two tables.
                let cost = size.div_ceil(page - 4) * page + 64;
                need = need.saturating_sub(cost);
                if need == 0 {
                    break;
                }
            }
            out
        };
        if victims.is_empty() {
            break;
        }
        {
            let mut body = tx.prepare_cached("DELETE FROM bodies WHERE id = ?1")?;
            let mut entry = tx.prepare_cached("DELETE FROM entries WHERE id = ?1")?;
            for (id, size) in &victims {
                body.execute([id])?;
                entry.execute([id])?;
                evicted += 1;
                evicted_bytes += size;
            }
        }
        tx.commit()?;
        release_free_pages(conn)?;
    }
    // Hand the space back: the WAL holds the freed pages' last images until a checkpoint.
    // Another process reading keeps part of the WAL; that is fine, the next checkpoint gets it.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    Ok((evicted, evicted_bytes))
}

/// Gives the free pages back to the file system. `incremental_vacuum` frees one page per step,
/// so the statement is stepped to its end.
fn release_free_pages(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

fn verify(key: &KeyDigest, data: &[u8]) -> Result<Entry, String> {
    if data.len() < 32 {
        return Err("shorter than its digest".into());
    }
    let (encoded, digest) = data.split_at(data.len() - 32);
    if bound_digest(key, encoded) != digest {
        return Err("its digest does not match its content and key".into());
    }
    Entry::decode(encoded).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
