//! The embedded default: one SQLite file in WAL mode.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::watch::FileWatch;
use super::{ConnectError, StorageProblem};

/// How long a writer waits for another's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The WAL is cut back to this after a checkpoint (SQLite's `journal_size_limit`), and a
/// maintenance round truncates it when it is larger.
const WAL_KEEP_BYTES: u64 = 4 << 20;

/// A [`Store`](super::Store) in a SQLite database.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file's path (its `-wal` file sits beside it).
    path: std::path::PathBuf,
    /// The database file as opened (none for an in-memory database).
    file: Option<std::sync::Arc<FileWatch>>,
    /// Write transactions of this process take turns here, first come first served. SQLite has
    /// one writer at a time and its busy handler polls: without a queue, a writer committing
    /// a large batch round after round could keep a small one waiting past its busy timeout.
    turns: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        let unreachable = |cause| ConnectError::unreachable(url, cause);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(unreachable)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("journal_size_limit", WAL_KEEP_BYTES.to_string());
        let file = options.get_filename().to_owned();
        // A file or directory the server may not write gets a message that says so.
        let unreachable = |cause| ConnectError::sqlite_open(url, &file, cause);
        // The file is created here, once; the pool's connections never create one, so that a
        // database deleted under the running server is not quietly replaced by an empty one
        // (a new connection fails instead, and the store reports the file gone).
        if !file.exists() {
            use sqlx::Connection;
            sqlx::SqliteConnection::connect_with(&options)
                .await
                .map_err(unreachable)?
                .close()
                .await
                .map_err(unreachable)?;
        }
        let options = if file.exists() {
            options.create_if_missing(false)
        } else {
            options
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        owner_only(&file);
        sqlx::migrate!("../migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|cause| ConnectError::migrate(url, cause))?;
        let (mode,): (i64,) = sqlx::query_as("PRAGMA auto_vacuum")
            .fetch_one(&pool)
            .await
            .map_err(unreachable)?;
        if mode != 2 {
            // Evicted pages go back to the file system (`reclaim`) only in incremental mode,
            // which a file takes with one VACUUM. Set once here rather than on every new
            // connection: a connection must open (and read) even when the disk is full.
            tracing::info!("switching the SQLite file to incremental auto-vacuum (one VACUUM)");
            let mut conn = pool.acquire().await.map_err(unreachable)?;
            sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
                .execute(&mut *conn)
                .await
                .map_err(unreachable)?;
            sqlx::query("VACUUM")
                .execute(&mut *conn)
                .await
                .map_err(unreachable)?;
        }
        let watch = FileWatch::new(&file).map(std::sync::Arc::new);
        if let Some(watch) = &watch {
            // Logs at once when the file cannot be written (a read-only file or mount).
            watch.check();
        }
        Ok(SqliteStore {
            pool,
            path: file,
            file: watch,
            turns: Default::default(),
        })
    }

    /// This process's turn to write (see [`SqliteStore::turns`]).
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        Some(self.turns.lock().await)
    }

    /// The path of the database's WAL file.
    fn wal_file(&self) -> std::path::PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push("-wal");
        name.into()
    }

    /// Pages in use (not on the free list) and the WAL file's length.
    async fn measure_disk(&self) -> Result<Option<super::DiskUsage>, super::StoreError> {
        let (pages,): (i64,) = sqlx::query_as("PRAGMA page_count")
            .fetch_one(&self.pool)
            .await?;
        let (free,): (i64,) = sqlx::query_as("PRAGMA freelist_count")
            .fetch_one(&self.pool)
            .await?;
        let (page_size,): (i64,) = sqlx::query_as("PRAGMA page_size")
            .fetch_one(&self.pool)
            .await?;
        // The WAL's working size is a fixed cost like the schema's pages; what a large
        // transaction grew it by, until a checkpoint truncates it, counts.
        let wal = std::fs::metadata(self.wal_file()).map_or(0, |m| m.len());
        let journal = wal.saturating_sub(WAL_KEEP_BYTES);
        Ok(Some(super::DiskUsage {
            data: (pages - free).max(0) as u64 * page_size.max(0) as u64,
            journal,
        }))
    }

    /// Truncates the WAL when a large transaction left it over [`WAL_KEEP_BYTES`]; a reader
    /// in the way leaves it for the next round.
    async fn trim(&self) -> Result<(), super::StoreError> {
        let wal = std::fs::metadata(self.wal_file()).map_or(0, |m| m.len());
        if wal > WAL_KEEP_BYTES {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Gives the pages of deleted rows back to the file system and truncates the WAL.
    async fn reclaim(&self) -> Result<(), super::StoreError> {
        sqlx::query("PRAGMA incremental_vacuum")
            .execute(&self.pool)
            .await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Makes the database file and its WAL and shared-memory files readable by their owner only
/// (SQLite gives the WAL files the database's mode): they hold the tokens' hashes and entries.
fn owner_only(file: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let name = file.as_os_str().to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let mut path = name.clone();
        path.push(suffix);
        let path = std::path::PathBuf::from(path);
        // Only group and others lose their bits: a file its operator made read-only stays so
        // (and the store reports it as read-only).
        let mode = match std::fs::metadata(&path) {
            Ok(meta) => meta.permissions().mode() & 0o600,
            Err(_) => continue,
        };
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot make the database file private");
            }
        }
    }
}

impl super::StorageWatch for SqliteStore {
    fn storage_problem(&self) -> Option<StorageProblem> {
        self.file.as_ref().and_then(|file| file.check())
    }
}

impl_store_with_sql!(
    SqliteStore,
    sqlx::Sqlite,
    super::sql::INSERT_BODY_SQLITE,
    super::sql::BEGIN_WRITE_SQLITE
);
