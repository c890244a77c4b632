//! What `pycache-client cache` shows and does: statistics, prune, clear, zeroing the
//! statistics.

use std::fs;
use std::io;
use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;

use super::{evict_to, release_free_pages, store_error, used_bytes, LocalCache, EVICT_TO};

/// Directories of earlier layouts (a file per entry), never read; prune and clear delete them.
pub const LEGACY_DIRS: [&str; 2] = ["entries", "entries-v2"];
/// The marker file of the earlier layouts' temporary-file sweep.
const LEGACY_FILES: [&str; 1] = ["last-sweep"];

/// Days of history `cache stats` lists.
const DAYS_SHOWN: i64 = 14;

/// The store's contents and history, per interpreter.
#[derive(Debug, Serialize)]
pub struct CacheReport {
    /// Whether the store exists (`cache stats` on a cache no run has written yet creates none).
    pub exists: bool,
    /// The cache directory.
    pub cache_dir: String,
    /// The database file.
    pub store: String,
    /// Bytes the store files take on disk (database and its WAL).
    pub disk_bytes: u64,
    /// The size limit.
    pub size_limit: u64,
    /// Entries stored.
    pub entries: u64,
    /// Bytes of the entries.
    pub entry_bytes: u64,
    /// Bytes in directories of earlier layouts (ignored; `cache prune` removes them).
    pub legacy_bytes: u64,
    /// Per interpreter: what is stored and what the runs asked, all time.
    pub interpreters: Vec<InterpreterStats>,
    /// Per day (UTC) and interpreter, the last days with activity.
    pub days: Vec<DayStats>,
}

/// One interpreter's share of the store and its runs' totals.
#[derive(Debug, Serialize)]
pub struct InterpreterStats {
    /// The interpreter, e.g. `CPython 3.11.7`.
    pub interpreter: String,
    /// Entries stored for it.
    pub entries: u64,
    /// Their bytes.
    pub entry_bytes: u64,
    /// Results served from the cache.
    pub hits: u64,
    /// Results the cache lacked.
    pub misses: u64,
    /// Of those, results the server served.
    pub remote_hits: u64,
    /// Of those, results compiled (`misses - remote_hits`).
    pub compiled: u64,
    /// Entries stored.
    pub stored: u64,
    /// Entries evicted.
    pub evicted: u64,
    /// Entries found corrupt.
    pub corrupt: u64,
}

/// One day's activity for one interpreter.
#[derive(Debug, Serialize)]
pub struct DayStats {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The interpreter.
    pub interpreter: String,
    /// Hits.
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// Of those, results the server served.
    pub remote_hits: u64,
    /// Of those, results compiled.
    pub compiled: u64,
    /// Entries stored.
    pub stored: u64,
    /// Entries evicted.
    pub evicted: u64,
}

/// What prune or clear removed.
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    /// Entries removed.
    pub entries: u64,
    /// Their bytes.
    pub entry_bytes: u64,
    /// Bytes of earlier layouts' directories removed.
    pub legacy_bytes: u64,
    /// Bytes the store files take afterwards.
    pub disk_bytes: u64,
}

fn label(name: Option<String>) -> String {
    name.unwrap_or_else(|| "(unknown interpreter)".to_owned())
}

/// A day number (days since the epoch) as a calendar date.
fn date(day: i64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Bytes of the files under `dir` (0 when it does not exist).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(read) = fs::read_dir(dir) else {
        return 0;
    };
    read.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

impl CacheReport {
    /// The report on a cache directory without a store: nothing stored, nothing counted.
    pub fn missing(root: &Path, size_limit: u64) -> CacheReport {
        CacheReport {
            exists: false,
            cache_dir: root.display().to_string(),
            store: root.join(super::STORE_FILE).display().to_string(),
            disk_bytes: 0,
            size_limit,
            entries: 0,
            entry_bytes: 0,
            legacy_bytes: legacy_bytes(root),
            interpreters: Vec::new(),
            days: Vec::new(),
        }
    }
}

/// Bytes in the directories of earlier layouts under `root`.
pub fn legacy_bytes(root: &Path) -> u64 {
    LEGACY_DIRS.iter().map(|d| tree_bytes(&root.join(d))).sum()
}

impl LocalCache {
    /// Bytes the store files take on disk.
    pub fn disk_bytes(&self) -> u64 {
        ["", "-wal"]
            .iter()
            .map(|s| {
                fs::metadata(self.root.join(format!("{}{s}", super::STORE_FILE)))
                    .map_or(0, |m| m.len())
            })
            .sum()
    }

    /// Bytes in the directories of earlier layouts.
    pub fn legacy_bytes(&self) -> u64 {
        legacy_bytes(&self.root)
    }

    /// Deletes the statistics of every day and interpreter (`cache stats --zero-stats`); the
    /// entries stay.
    pub fn zero_stats(&self) -> io::Result<()> {
        let conn = self.conn.lock().expect("cache connection lock");
        conn.execute("DELETE FROM stats", [])
            .map(drop)
            .map_err(|e| store_error(&self.store_path(), e))
    }

    /// The store's contents and history.
    pub fn report(&self) -> io::Result<CacheReport> {
        let conn = self.conn.lock().expect("cache connection lock");
        let path = self.store_path();
        let (interpreters, days, entries, entry_bytes) =
            query_report(&conn).map_err(|e| store_error(&path, e))?;
        Ok(CacheReport {
            exists: true,
            cache_dir: self.root.display().to_string(),
            store: path.display().to_string(),
            disk_bytes: self.disk_bytes(),
            size_limit: self.size_limit,
            entries,
            entry_bytes,
            legacy_bytes: self.legacy_bytes(),
            interpreters,
            days,
        })
    }

    /// Evicts down to the size limit (to 90% of it when over) and deletes earlier layouts'
    /// directories.
    pub fn prune(&self) -> io::Result<PruneReport> {
        let mut conn = self.conn.lock().expect("cache connection lock");
        let path = self.store_path();
        let limit = self.size_limit;
        let over = used_bytes(&conn).map_err(|e| store_error(&path, e))? > limit;
        let (entries, entry_bytes) = if over {
            evict_to(&mut conn, (limit as f64 * EVICT_TO) as u64)
                .map_err(|e| store_error(&path, e))?
        } else {
            (0, 0)
        };
        drop(conn);
        self.finish_removal(entries, entry_bytes)
    }

    /// Deletes every entry (the statistics stay) and earlier layouts' directories.
    pub fn clear(&self) -> io::Result<PruneReport> {
        let mut conn = self.conn.lock().expect("cache connection lock");
        let path = self.store_path();
        let removed = (|| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let counts: (i64, i64) = tx.query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM entries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            tx.execute_batch("DELETE FROM bodies; DELETE FROM entries;")?;
            tx.commit()?;
            release_free_pages(&conn)?;
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            Ok::<_, rusqlite::Error>(counts)
        })()
        .map_err(|e| store_error(&path, e))?;
        drop(conn);
        self.finish_removal(removed.0 as u64, removed.1 as u64)
    }

    fn finish_removal(&self, entries: u64, entry_bytes: u64) -> io::Result<PruneReport> {
        let legacy_bytes = self.legacy_bytes();
        for dir in LEGACY_DIRS {
            let path = self.root.join(dir);
            match fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("could not remove {}: {e}", path.display()),
                    ))
                }
            }
        }
        for file in LEGACY_FILES {
            let _ = fs::remove_file(self.root.join(file));
        }
        Ok(PruneReport {
            entries,
            entry_bytes,
            legacy_bytes,
            disk_bytes: self.disk_bytes(),
        })
    }
}

type ReportRows = (Vec<InterpreterStats>, Vec<DayStats>, u64, u64);

fn query_report(conn: &Connection) -> rusqlite::Result<ReportRows> {
    let mut interpreters = Vec::new();
    let mut stmt = conn.prepare(
        "WITH stored AS (
             SELECT interpreter, count(*) AS n, sum(size) AS bytes FROM entries GROUP BY interpreter
         ), runs AS (
             SELECT interpreter, sum(hits) AS hits, sum(misses) AS misses, sum(stored) AS stored,
                    sum(evicted) AS evicted, sum(corrupt) AS corrupt,
                    sum(remote_hits) AS remote_hits
             FROM stats GROUP BY interpreter
         ), ids AS (
             SELECT interpreter FROM stored UNION SELECT interpreter FROM runs
         )
         SELECT i.label, coalesce(s.n, 0), coalesce(s.bytes, 0), coalesce(r.hits, 0),
                coalesce(r.misses, 0), coalesce(r.stored, 0), coalesce(r.evicted, 0),
                coalesce(r.corrupt, 0), coalesce(r.remote_hits, 0)
         FROM ids
         LEFT JOIN interpreters i ON i.id = ids.interpreter
         LEFT JOIN stored s ON s.interpreter IS ids.interpreter
         LEFT JOIN runs r ON r.interpreter IS ids.interpreter
         ORDER BY i.label",
    )?;
    let rows = stmt.query_map([], |r| {
        let misses = r.get::<_, i64>(4)? as u64;
        let remote_hits = r.get::<_, i64>(8)? as u64;
        Ok(InterpreterStats {
            interpreter: label(r.get(0)?),
            entries: r.get::<_, i64>(1)? as u64,
            entry_bytes: r.get::<_, i64>(2)? as u64,
            hits: r.get::<_, i64>(3)? as u64,
            misses,
            remote_hits,
            compiled: misses.saturating_sub(remote_hits),
            stored: r.get::<_, i64>(5)? as u64,
            evicted: r.get::<_, i64>(6)? as u64,
            corrupt: r.get::<_, i64>(7)? as u64,
        })
    })?;
    for row in rows {
        interpreters.push(row?);
    }
    let mut days = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT s.day, i.label, s.hits, s.misses, s.stored, s.evicted, s.remote_hits
         FROM stats s LEFT JOIN interpreters i ON i.id = s.interpreter
         WHERE s.day > (SELECT max(day) FROM stats) - ?1
         ORDER BY s.day, i.label",
    )?;
    let rows = stmt.query_map([DAYS_SHOWN], |r| {
        let misses = r.get::<_, i64>(3)? as u64;
        let remote_hits = r.get::<_, i64>(6)? as u64;
        Ok(DayStats {
            day: date(r.get(0)?),
            interpreter: label(r.get(1)?),
            hits: r.get::<_, i64>(2)? as u64,
            misses,
            remote_hits,
            compiled: misses.saturating_sub(remote_hits),
            stored: r.get::<_, i64>(4)? as u64,
            evicted: r.get::<_, i64>(5)? as u64,
        })
    })?;
    for row in rows {
        days.push(row?);
    }
    let (entries, bytes): (i64, i64) = conn.query_row(
        "SELECT count(*), coalesce(sum(size), 0) FROM entries",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((interpreters, days, entries as u64, bytes as u64))
}

#[cfg(test)]
mod tests {
    #[test]
    fn days_are_calendar_dates() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::date(20_417), "2025-11-25");
        assert_eq!(super::date(11_016), "2000-02-29");
    }
}
