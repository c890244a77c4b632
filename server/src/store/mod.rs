//! Persistence: the [`Store`] trait and its SQLite and PostgreSQL implementations.
//!
//! All SQL lives in this module. Both implementations share their statements (SQLite accepts
//! PostgreSQL's `$N` placeholders), written once in [`sql`]; only connecting and migrating differ.

pub mod body;
#[macro_use]
mod sql;
mod postgres;
mod sqlite;
mod watch;

use async_trait::async_trait;
use pycache_proto::api::Scope;
use pycache_proto::namespace::NamespacePattern;
use pycache_proto::pack::FrameDigest;
use pycache_proto::signature::EntrySignature;
use pycache_proto::{CacheKey, EntryDigest, KeyDigest};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use watch::StorageProblem;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A token with this name exists already.
    #[error("a token named {0:?} already exists")]
    DuplicateTokenName(String),
    /// A stored row does not decode (a damaged or foreign database).
    #[error("corrupt row in the database: {0}")]
    Corrupt(String),
    /// An upload could not be written to or read back from its spool file.
    #[error("the upload's spool file failed: {0}")]
    Spool(#[source] std::io::Error),
}

impl StoreError {
    /// The database has no room left (SQLite `SQLITE_FULL`, PostgreSQL `disk_full`): nothing of
    /// the failed write was kept, and writes can succeed again once space returns.
    pub fn is_storage_full(&self) -> bool {
        if let StoreError::Spool(err) = self {
            return matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
        }
        let StoreError::Database(sqlx::Error::Database(db)) = self else {
            return false;
        };
        // SQLite reports its (extended) result code, PostgreSQL its SQLSTATE.
        matches!(db.code().as_deref(), Some("13") | Some("53100"))
    }

    /// The database refused a write as read-only (SQLite `SQLITE_READONLY` and its extended
    /// codes: a read-only file or directory, a read-only mount, a database file moved away;
    /// PostgreSQL `read_only_sql_transaction`, a standby).
    pub fn is_read_only(&self) -> bool {
        let StoreError::Database(err) = self else {
            return false;
        };
        refused_as_read_only(err)
    }

    /// The database cannot be reached or is not accepting work right now (connection refused
    /// or lost, no pooled connection within the acquire timeout, PostgreSQL shutting down):
    /// worth a retry later, not a server bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            // SQLSTATE class 08 (connection exception) and 57P (operator intervention);
            // SQLite busy or locked past its busy timeout (result codes 5 and 6, and their
            // extended codes), which another writer's long transaction causes, and a file that
            // cannot be opened (14: deleted under the server).
            StoreError::Database(sqlx::Error::Database(db)) => {
                let sqlite = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
                db.code().is_some_and(|c| {
                    if sqlite {
                        c.parse::<i32>()
                            .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 14))
                    } else {
                        c.starts_with("08") || c.starts_with("57P")
                    }
                })
            }
            _ => false,
        }
    }
}

/// Whether the database refused a write as read-only (see [`StoreError::is_read_only`]).
fn refused_as_read_only(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        db.code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|n| n & 0xff == 8)
    } else {
        db.code().as_deref() == Some("25006")
    }
}

/// An entry as stored: its key, its encoded bytes and their digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// The full key (its parts are columns).
    pub key: CacheKey,
    /// `Entry::encode` output.
    pub entry_bytes: Vec<u8>,
    /// blake3 of `entry_bytes`.
    pub digest: EntryDigest,
}

/// An entry found by a lookup: where it was found and who wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundEntry {
    /// The namespace it was found in (the first of the caller's read order that holds it).
    pub namespace: String,
    /// The name of the token that stored it; `None` for entries from before provenance.
    pub written_by: Option<String>,
    /// The key and its bytes.
    pub stored: StoredEntry,
    /// The writer's digest binding the bytes to the key.
    pub frame_digest: FrameDigest,
    /// The writers' signatures.
    pub signatures: Vec<EntrySignature>,
    /// `stored.entry_bytes` is the body as stored, one zstd frame of the entry (from
    /// [`Store::get_stored`] only; [`FoundEntry::into_plain`] decompresses it).
    pub stored_zstd: bool,
    /// Length of the entry's bytes (decompressed).
    pub entry_size: u64,
}

impl FoundEntry {
    /// This entry with its bytes decompressed where they are stored compressed.
    pub fn into_plain(mut self) -> Result<FoundEntry, StoreError> {
        if self.stored_zstd {
            let bytes = std::mem::take(&mut self.stored.entry_bytes);
            self.stored.entry_bytes =
                body::plain_bytes(bytes, true, self.entry_size).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "the stored body {} does not decompress: {e}",
                        self.stored.digest
                    ))
                })?;
            self.stored_zstd = false;
        }
        Ok(self)
    }
}

/// What a write did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOutcome {
    /// Entries newly stored.
    pub inserted: u64,
    /// Keys the namespace already holds with other bytes: refused, the stored entry stands.
    pub conflicts: Vec<KeyDigest>,
    /// Stored bodies found damaged and rewritten with the uploaded bytes of their digest.
    pub repaired: u64,
    /// Keys a large batch could not store because the store failed after part of it was
    /// committed (the batch is stored in bounded transactions): neither stored nor refused as
    /// bad, to upload again later. Empty when everything was stored.
    pub unstored: Vec<KeyDigest>,
    /// What failed, when `unstored` is not empty.
    pub failure: Option<String>,
}

/// Running totals of the store, kept in every write transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Entries.
    pub entries: u64,
    /// Bytes of the bodies the entries hold, each body once.
    pub bytes: u64,
    /// Bytes the entries' rows take beyond their bodies (keys, digests, index entries).
    pub row_bytes: u64,
}

impl Totals {
    /// Entries and body bytes.
    pub fn entries_and_bytes(&self) -> (u64, u64) {
        (self.entries, self.bytes)
    }

    /// What the size limit counts: bodies and rows.
    pub fn accounted(&self) -> u64 {
        self.bytes.saturating_add(self.row_bytes)
    }
}

/// What the database's files take on disk, measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes of the tables and indexes in use (SQLite: pages not on the free list;
    /// PostgreSQL: the tables with their indexes and TOAST).
    pub data: u64,
    /// Bytes of the write-ahead log beyond its working size (SQLite's `-wal` file past the
    /// 4 MiB a checkpoint cuts it back to).
    pub journal: u64,
}

/// Which entries a purge deletes: every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeFilter {
    /// Written by the token of this name.
    pub written_by: Option<String>,
    /// In this namespace.
    pub namespace: Option<String>,
    /// Of this key digest (in every namespace unless one is given).
    pub key: Option<KeyDigest>,
    /// Written at or after this time, Unix milliseconds.
    pub since: Option<i64>,
}

impl PurgeFilter {
    /// Whether no condition is given (such a filter deletes nothing: a purge of everything
    /// must be asked for by name, e.g. per namespace).
    pub fn is_empty(&self) -> bool {
        self.written_by.is_none()
            && self.namespace.is_none()
            && self.key.is_none()
            && self.since.is_none()
    }
}

/// An entry to store; `success` mirrors the entry's outcome for statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// The key and its bytes.
    pub stored: StoredEntry,
    /// Whether the entry records a successful compile.
    pub success: bool,
    /// The writer's digest binding the bytes to the key (checked before it gets here).
    pub frame_digest: FrameDigest,
    /// The writer's signatures.
    pub signatures: Vec<EntrySignature>,
}

impl NewEntry {
    /// The entry a checked frame carries.
    pub fn from_frame(frame: pycache_proto::pack::Frame, success: bool) -> Self {
        let digest = frame.entry_digest();
        NewEntry {
            stored: StoredEntry {
                key: frame.key,
                entry_bytes: frame.entry_bytes,
                digest,
            },
            success,
            frame_digest: frame.digest,
            signatures: frame.signatures,
        }
    }
}

/// Entries to store, handed over one at a time in the order every writer locks rows in (by key
/// digest, each key once), so that a batch never has to be in memory whole.
pub trait EntrySource: Send {
    /// The next entry, or `None` after the last.
    fn next_entry(&mut self) -> Result<Option<NewEntry>, StoreError>;
}

/// A slice of entries as an [`EntrySource`].
pub struct SliceSource<'a> {
    ordered: std::vec::IntoIter<(KeyDigest, &'a NewEntry)>,
}

impl<'a> SliceSource<'a> {
    /// The entries of `entries` in lock order, each key once (the last of a key wins).
    pub fn new(entries: &'a [NewEntry]) -> Self {
        SliceSource {
            ordered: sql::in_lock_order(entries).into_iter(),
        }
    }
}

impl EntrySource for SliceSource<'_> {
    fn next_entry(&mut self) -> Result<Option<NewEntry>, StoreError> {
        Ok(self.ordered.next().map(|(_, entry)| entry.clone()))
    }
}

/// Entries and bytes of one interpreter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterpreterUsage {
    /// `sys.implementation.cache_tag`.
    pub cache_tag: String,
    /// The 4 magic bytes.
    pub magic: Vec<u8>,
    /// Entries stored.
    pub entries: u64,
    /// Bytes stored.
    pub bytes: u64,
}

/// What eviction removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Entries deleted.
    pub entries: u64,
    /// Bytes of bodies freed.
    pub bytes: u64,
    /// Bytes of the deleted entries' rows.
    pub row_bytes: u64,
}

/// How often an entry was served since the last flush, and when last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    /// The namespace of the entry served.
    pub namespace: String,
    /// The entry served.
    pub key: KeyDigest,
    /// Times served.
    pub hits: u64,
    /// Last time served, Unix milliseconds.
    pub last_used_at: i64,
}

/// A token to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    /// Unique name.
    pub name: String,
    /// Permission level.
    pub scope: Scope,
    /// Namespaces it may write.
    pub writes: Vec<NamespacePattern>,
    /// Namespaces it reads, in order.
    pub reads: Vec<NamespacePattern>,
}

/// A token as stored (its hash, never its text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// Unique name.
    pub name: String,
    /// Permission level.
    pub scope: Scope,
    /// Namespaces it may write.
    pub writes: Vec<NamespacePattern>,
    /// Namespaces it reads, in order.
    pub reads: Vec<NamespacePattern>,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Revocation time, Unix milliseconds.
    pub revoked_at: Option<i64>,
}

/// Whether the storage under a store can take writes: checked before each write and by
/// `/readyz`, so that a database file deleted, replaced or made read-only under a running
/// server is refused loudly instead of losing acknowledged writes.
pub trait StorageWatch {
    /// Why writes must be refused now, or `None`. Cheap (a `stat` and an `access` for a SQLite
    /// file); a store without a file of its own (PostgreSQL) has nothing to watch.
    fn storage_problem(&self) -> Option<StorageProblem> {
        None
    }
}

/// The server's persistence. Object safe: the server holds an `Arc<dyn Store>`.
#[async_trait]
pub trait Store: StorageWatch + Send + Sync + 'static {
    /// The entries found among `keys` in `namespaces`, in no particular order: for each key
    /// the entry of the first namespace (in the order given) that holds it; unknown keys are
    /// skipped.
    async fn get_many(
        &self,
        namespaces: &[String],
        keys: &[KeyDigest],
    ) -> Result<Vec<FoundEntry>, StoreError> {
        // A body that does not decompress was damaged at rest: that entry is missing (a
        // writer's next upload of it repairs it), the others are served.
        Ok(self
            .get_stored(namespaces, keys)
            .await?
            .into_iter()
            .filter_map(|found| match found.into_plain() {
                Ok(found) => Some(found),
                Err(err) => {
                    tracing::error!(error = %err, "a stored body is damaged; served as a miss");
                    None
                }
            })
            .collect())
    }

    /// [`Store::get_many`] with each body as stored (compressed ones as their zstd frame, see
    /// [`FoundEntry::stored_zstd`]), to send as it is.
    async fn get_stored(
        &self,
        namespaces: &[String],
        keys: &[KeyDigest],
    ) -> Result<Vec<FoundEntry>, StoreError>;

    /// Stores the entries in `namespace` in one transaction, recording `written_by` and `now`.
    /// Entries never change once stored: a key the namespace holds with the same bytes is left
    /// alone, one it holds with other bytes is a conflict (refused, the stored entry stands).
    /// Bodies are stored once by digest, however many entries hold them.
    async fn put_many(
        &self,
        namespace: &str,
        written_by: Option<&str>,
        entries: &[NewEntry],
        now: i64,
    ) -> Result<PutOutcome, StoreError> {
        self.put_from(namespace, written_by, &mut SliceSource::new(entries), now)
            .await
    }

    /// [`Store::put_many`] of the entries `entries` hands over, one at a time.
    async fn put_from(
        &self,
        namespace: &str,
        written_by: Option<&str>,
        entries: &mut dyn EntrySource,
        now: i64,
    ) -> Result<PutOutcome, StoreError>;

    /// Records hits and last-use times gathered since the last flush, in one transaction.
    async fn record_usage(&self, usage: &[Usage]) -> Result<(), StoreError>;

    /// The running totals: entries, bytes of the bodies they hold (each body counted once),
    /// bytes of their rows.
    async fn totals(&self) -> Result<Totals, StoreError>;

    /// What the store's files take on disk; `None` where it cannot be measured.
    async fn disk_usage(&self) -> Result<Option<DiskUsage>, StoreError>;

    /// Cuts the write-ahead log back when it has grown (SQLite: a truncating checkpoint when
    /// the `-wal` file is over a few MiB); nothing elsewhere.
    async fn trim_journal(&self) -> Result<(), StoreError>;

    /// Entries and bytes per interpreter.
    async fn usage_by_interpreter(&self) -> Result<Vec<InterpreterUsage>, StoreError>;

    /// Deletes least-recently-used entries until at least `bytes` of bodies and rows are freed
    /// (or none are left).
    async fn evict_lru(&self, bytes: u64) -> Result<Evicted, StoreError>;

    /// Deletes every entry matching `filter` (none when it has no condition), and the bodies
    /// no entry holds any more.
    async fn purge(&self, filter: &PurgeFilter) -> Result<Evicted, StoreError>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Returns the space of deleted rows to the file system where the database can (SQLite:
    /// incremental vacuum and a WAL checkpoint); PostgreSQL leaves it to autovacuum.
    async fn reclaim_space(&self) -> Result<(), StoreError>;

    /// Stores a new token by its hash.
    async fn create_token(
        &self,
        token_hash: &[u8; 32],
        token: &NewToken,
        now: i64,
    ) -> Result<(), StoreError>;

    /// A valid (not revoked) token, by its hash.
    async fn token_grant(&self, token_hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError>;

    /// Every token, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Revokes the token called `name`; false when there is no valid token of that name.
    async fn revoke_token(&self, name: &str, now: i64) -> Result<bool, StoreError>;

    /// Closes the connection pool, waiting for in-flight queries.
    async fn close(&self);
}

/// Connects to `database_url` (`sqlite://…` or `postgres://…`) and applies the migrations.
pub async fn connect(database_url: &str) -> Result<std::sync::Arc<dyn Store>, ConnectError> {
    if database_url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            SqliteStore::connect(database_url).await?,
        ))
    } else if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgStore::connect(database_url).await?))
    } else {
        Err(ConnectError::UnknownScheme(redact_url(database_url)))
    }
}

/// Why the store could not be opened; messages say what, where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnknownScheme(String),
    /// The database could not be opened or reached.
    #[error("cannot open the database at {url}: {cause}; check --database-url and that the database is running and accepts connections")]
    Unreachable {
        /// The URL without its password.
        url: String,
        /// The driver's error.
        cause: sqlx::Error,
    },
    /// The SQLite file or its directory cannot be written.
    #[error(
        "cannot open the SQLite database {} for writing: {cause}; make the file, its -wal and \
         -shm files and its directory writable by the user the server runs as (or mount the \
         disk read-write), or pick another --data-dir or --database-url",
        .path.display()
    )]
    ReadOnly {
        /// The database file.
        path: std::path::PathBuf,
        /// The driver's error.
        cause: sqlx::Error,
    },
    /// Migrations failed.
    #[error("cannot migrate the database at {url}: {cause}")]
    Migrate {
        /// The URL without its password.
        url: String,
        /// The migrator's error.
        cause: sqlx::migrate::MigrateError,
    },
}

impl ConnectError {
    /// [`ConnectError::Unreachable`] for `url`, its password hidden.
    pub fn unreachable(url: &str, cause: sqlx::Error) -> Self {
        ConnectError::Unreachable {
            url: redact_url(url),
            cause,
        }
    }

    /// [`ConnectError::ReadOnly`] when SQLite refused to write `file`, else
    /// [`ConnectError::Unreachable`].
    pub fn sqlite_open(url: &str, file: &std::path::Path, cause: sqlx::Error) -> Self {
        if refused_as_read_only(&cause) {
            ConnectError::ReadOnly {
                path: file.to_owned(),
                cause,
            }
        } else {
            ConnectError::unreachable(url, cause)
        }
    }

    /// [`ConnectError::Migrate`] for `url`, its password hidden.
    pub fn migrate(url: &str, cause: sqlx::migrate::MigrateError) -> Self {
        ConnectError::Migrate {
            url: redact_url(url),
            cause,
        }
    }
}

/// A database URL fit for messages and logs: any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let sep = if rest.contains('/') { "/" } else { "" };
    if userinfo.contains(':') {
        format!("{scheme}://{user}:***@{host}{sep}{path}")
    } else {
        format!("{scheme}://{userinfo}@{host}{sep}{path}")
    }
}

/// The current time as stored: Unix milliseconds.
pub fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }
}
