//! PostgreSQL, for several server processes sharing one store.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use super::ConnectError;

/// How long start-up waits for the database before failing with a clear message.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for a pooled connection once serving: short, so a database that is
/// down costs a quick 503 `unavailable`, not a hung request.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// A [`Store`](super::Store) in a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` and applies the migrations (sqlx holds an advisory lock meanwhile, so
    /// replicas starting together migrate once).
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        let unreachable = |cause| ConnectError::unreachable(url, cause);
        let options = PgConnectOptions::from_str(url).map_err(unreachable)?;
        // One plain connection first: a pool would hide "connection refused" behind a timeout.
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| unreachable(sqlx::Error::PoolTimedOut))?
            .map_err(unreachable)?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .map_err(|cause| ConnectError::migrate(url, cause))?;
        Ok(PgStore { pool })
    }

    /// Nothing: autovacuum makes the space of deleted rows reusable (see the 0002 migration).
    async fn reclaim(&self) -> Result<(), super::StoreError> {
        Ok(())
    }

    /// No turns: PostgreSQL queues writers on its row locks.
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        None
    }

    /// The tables with their indexes and TOAST (from the catalog: no scan). PostgreSQL's own
    /// WAL is the database server's to manage.
    async fn measure_disk(&self) -> Result<Option<super::DiskUsage>, super::StoreError> {
        let (data,): (i64,) = sqlx::query_as(
            "SELECT CAST(pg_total_relation_size('entries') + pg_total_relation_size('bodies') \
             + pg_total_relation_size('interpreter_totals') AS BIGINT)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(super::DiskUsage {
            data: data.max(0) as u64,
            journal: 0,
        }))
    }

    /// Nothing: PostgreSQL manages its WAL.
    async fn trim(&self) -> Result<(), super::StoreError> {
        Ok(())
    }
}

/// No file of its own to watch: PostgreSQL reports its own storage failures.
impl super::StorageWatch for PgStore {}

impl_store_with_sql!(
    PgStore,
    sqlx::Postgres,
    super::sql::INSERT_BODY_POSTGRES,
    super::sql::BEGIN_WRITE_POSTGRES
);
