//! The SQL both stores share, and the [`Store`](super::Store) implementation built on it.
//!
//! SQLite accepts PostgreSQL's `$N` placeholders, `ON CONFLICT … DO UPDATE … WHERE` and the
//! casts used here, so one set of statements serves both databases. The trait implementation is
//! a macro because sqlx's pools are typed by database; the macro body is the same code for each.

use pycache_proto::api::Scope;
use pycache_proto::{CacheKey, EntryDigest};

use pycache_proto::KeyDigest;

use super::{NewEntry, StoreError, StoredEntry, TokenRecord};

/// Keys per `IN (…)` list: far below SQLite's and PostgreSQL's bound-variable limits.
pub(super) const KEYS_PER_QUERY: usize = 500;
/// Rows examined per eviction round.
pub(super) const EVICTION_ROUND: i64 = 256;

pub(super) const INSERT_ENTRY: &str = "INSERT INTO entries (key_digest, source_hash, magic, \
     cache_tag, optimization, settings, dfile, success, entry, entry_digest, size, created_at, \
     last_used_at, hits) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, 0) \
     ON CONFLICT (key_digest) DO UPDATE SET entry = excluded.entry, \
     entry_digest = excluded.entry_digest, size = excluded.size, success = excluded.success \
     WHERE entries.entry <> excluded.entry";
pub(super) const RECORD_USAGE: &str = "UPDATE entries SET hits = hits + $1, last_used_at = \
     CASE WHEN last_used_at < $2 THEN $2 ELSE last_used_at END WHERE key_digest = $3";
pub(super) const TOTALS: &str =
    "SELECT COUNT(*) AS entries, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes FROM entries";
pub(super) const BY_INTERPRETER: &str = "SELECT cache_tag, magic, COUNT(*) AS entries, \
     CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes FROM entries \
     GROUP BY cache_tag, magic ORDER BY cache_tag, magic";
pub(super) const LRU_CANDIDATES: &str =
    "SELECT key_digest, size FROM entries ORDER BY last_used_at, key_digest LIMIT $1";
pub(super) const DELETE_ENTRY: &str = "DELETE FROM entries WHERE key_digest = $1";
pub(super) const INSERT_TOKEN: &str =
    "INSERT INTO tokens (token_hash, name, scope, created_at) VALUES ($1, $2, $3, $4)";
pub(super) const TOKEN_SCOPE: &str =
    "SELECT scope FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL";
pub(super) const LIST_TOKENS: &str =
    "SELECT name, scope, created_at, revoked_at FROM tokens ORDER BY created_at, name";
pub(super) const REVOKE_TOKEN: &str =
    "UPDATE tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL";

/// `SELECT` of the entries whose key digest is among `n` bound values.
pub(super) fn select_entries(n: usize) -> String {
    let list: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    format!(
        "SELECT source_hash, magic, cache_tag, optimization, settings, dfile, entry, entry_digest \
         FROM entries WHERE key_digest IN ({})",
        list.join(", ")
    )
}

/// The entries of one batch in the order every writer locks rows in: by key digest, each key
/// once (the last upload of a key wins, as it would one statement later). Two transactions that
/// lock overlapping keys in one global order cannot deadlock on them.
pub(super) fn in_lock_order(entries: &[NewEntry]) -> Vec<(KeyDigest, &NewEntry)> {
    let mut ordered: Vec<(KeyDigest, &NewEntry)> =
        entries.iter().map(|e| (e.stored.key.digest(), e)).collect();
    // Stable, so equal keys keep their upload order and the last one survives `dedup`.
    ordered.sort_by_key(|e| e.0);
    ordered.reverse();
    ordered.dedup_by(|next, kept| next.0 == kept.0);
    ordered.reverse();
    ordered
}

/// One row of [`select_entries`].
#[derive(sqlx::FromRow)]
pub(super) struct EntryRow {
    source_hash: Vec<u8>,
    magic: Vec<u8>,
    cache_tag: String,
    optimization: i32,
    settings: String,
    dfile: String,
    entry: Vec<u8>,
    entry_digest: Vec<u8>,
}

impl EntryRow {
    /// Rebuilds the key and entry; a row that does not fit is corruption, not a panic.
    pub(super) fn into_stored(self) -> Result<StoredEntry, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("entries.{what} has a bad length"));
        let key = CacheKey {
            source_hash: self
                .source_hash
                .try_into()
                .map_err(|_| corrupt("source_hash"))?,
            magic: self.magic.try_into().map_err(|_| corrupt("magic"))?,
            cache_tag: self.cache_tag,
            optimization: u8::try_from(self.optimization).map_err(|_| corrupt("optimization"))?,
            settings: self.settings,
            dfile: self.dfile,
        };
        let digest = EntryDigest(
            self.entry_digest
                .try_into()
                .map_err(|_| corrupt("entry_digest"))?,
        );
        Ok(StoredEntry {
            key,
            entry_bytes: self.entry,
            digest,
        })
    }
}

/// One row of [`TOTALS`] or [`BY_INTERPRETER`].
#[derive(sqlx::FromRow)]
pub(super) struct UsageRow {
    pub(super) cache_tag: String,
    pub(super) magic: Vec<u8>,
    pub(super) entries: i64,
    pub(super) bytes: i64,
}

/// One row of [`LIST_TOKENS`].
#[derive(sqlx::FromRow)]
pub(super) struct TokenRow {
    name: String,
    scope: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TokenRow {
    pub(super) fn into_record(self) -> Result<TokenRecord, StoreError> {
        Ok(TokenRecord {
            scope: parse_scope(&self.scope)?,
            name: self.name,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        })
    }
}

/// A scope column's value.
pub(super) fn parse_scope(text: &str) -> Result<Scope, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

/// Maps a unique violation on insert to [`StoreError::DuplicateTokenName`].
pub(super) fn token_insert_error(err: sqlx::Error, name: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            StoreError::DuplicateTokenName(name.to_owned())
        }
        _ => StoreError::Database(err),
    }
}

/// Implements [`Store`](super::Store) for a type with a `pool: sqlx::Pool<_>` field.
macro_rules! impl_store_with_sql {
    ($store:ty) => {
        /// A connection whose write failed is closed instead of going back to the pool: after
        /// an error such as `SQLITE_FULL` SQLite may have rolled the transaction back itself
        /// (or not), and a connection whose transaction state is unknown must never serve the
        /// next batch (its "commit" could release a savepoint of a transaction that never
        /// ends, acknowledging writes no other connection sees, and holding the write lock).
        fn discard_on_error<DB: sqlx::Database, T>(
            conn: &mut sqlx::pool::PoolConnection<DB>,
            result: &Result<T, $crate::store::StoreError>,
        ) {
            if result.is_err() {
                conn.close_on_drop();
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn get_many(
                &self,
                keys: &[pycache_proto::KeyDigest],
            ) -> Result<Vec<$crate::store::StoredEntry>, $crate::store::StoreError> {
                use $crate::store::sql::{select_entries, EntryRow, KEYS_PER_QUERY};
                let mut found = Vec::new();
                for chunk in keys.chunks(KEYS_PER_QUERY) {
                    let sql = select_entries(chunk.len());
                    let mut query = sqlx::query_as::<_, EntryRow>(&sql);
                    for key in chunk {
                        query = query.bind(&key.0[..]);
                    }
                    for row in query.fetch_all(&self.pool).await? {
                        found.push(row.into_stored()?);
                    }
                }
                Ok(found)
            }

            async fn put_from(
                &self,
                entries: &mut dyn $crate::store::EntrySource,
                now: i64,
            ) -> Result<u64, $crate::store::StoreError> {
                let mut conn = self.pool.acquire().await?;
                let result: Result<u64, $crate::store::StoreError> = async {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    let mut inserted = 0;
                    while let Some(new) = entries.next_entry()? {
                        let key = &new.stored.key;
                        let digest = key.digest();
                        let done = sqlx::query($crate::store::sql::INSERT_ENTRY)
                            .bind(&digest.0[..])
                            .bind(&key.source_hash[..])
                            .bind(&key.magic[..])
                            .bind(&key.cache_tag)
                            .bind(i32::from(key.optimization))
                            .bind(&key.settings)
                            .bind(&key.dfile)
                            .bind(new.success)
                            .bind(&new.stored.entry_bytes)
                            .bind(&new.stored.digest.0[..])
                            .bind(new.stored.entry_bytes.len() as i64)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        inserted += done.rows_affected();
                    }
                    tx.commit().await?;
                    Ok(inserted)
                }
                .await;
                discard_on_error(&mut conn, &result);
                result
            }

            async fn record_usage(
                &self,
                usage: &[$crate::store::Usage],
            ) -> Result<(), $crate::store::StoreError> {
                let mut ordered: Vec<&$crate::store::Usage> = usage.iter().collect();
                ordered.sort_by_key(|u| u.key);
                let mut conn = self.pool.acquire().await?;
                let result: Result<(), $crate::store::StoreError> = async {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    for u in ordered {
                        sqlx::query($crate::store::sql::RECORD_USAGE)
                            .bind(u.hits as i64)
                            .bind(u.last_used_at)
                            .bind(&u.key.0[..])
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }
                .await;
                discard_on_error(&mut conn, &result);
                result
            }

            async fn totals(&self) -> Result<(u64, u64), $crate::store::StoreError> {
                let (entries, bytes): (i64, i64) = sqlx::query_as($crate::store::sql::TOTALS)
                    .fetch_one(&self.pool)
                    .await?;
                Ok((entries as u64, bytes as u64))
            }

            async fn usage_by_interpreter(
                &self,
            ) -> Result<Vec<$crate::store::InterpreterUsage>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sql::UsageRow> =
                    sqlx::query_as($crate::store::sql::BY_INTERPRETER)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::InterpreterUsage {
                        cache_tag: r.cache_tag,
                        magic: r.magic,
                        entries: r.entries as u64,
                        bytes: r.bytes as u64,
                    })
                    .collect())
            }

            async fn evict_lru(
                &self,
                bytes: u64,
            ) -> Result<$crate::store::Evicted, $crate::store::StoreError> {
                use $crate::store::sql::{DELETE_ENTRY, EVICTION_ROUND, LRU_CANDIDATES};
                let mut evicted = $crate::store::Evicted::default();
                while evicted.bytes < bytes {
                    let candidates: Vec<(Vec<u8>, i64)> = sqlx::query_as(LRU_CANDIDATES)
                        .bind(EVICTION_ROUND)
                        .fetch_all(&self.pool)
                        .await?;
                    if candidates.is_empty() {
                        break;
                    }
                    // Deleted in key order, the order every writer locks rows in.
                    let mut chosen = Vec::new();
                    let mut planned = 0u64;
                    for (key, size) in candidates {
                        if evicted.bytes + planned >= bytes {
                            break;
                        }
                        planned += size as u64;
                        chosen.push((key, size));
                    }
                    chosen.sort();
                    let mut conn = self.pool.acquire().await?;
                    let result: Result<$crate::store::Evicted, $crate::store::StoreError> = async {
                        let mut round = $crate::store::Evicted::default();
                        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                        for (key, size) in &chosen {
                            let done = sqlx::query(DELETE_ENTRY)
                                .bind(key)
                                .execute(&mut *tx)
                                .await?;
                            if done.rows_affected() > 0 {
                                round.entries += 1;
                                round.bytes += *size as u64;
                            }
                        }
                        tx.commit().await?;
                        Ok(round)
                    }
                    .await;
                    discard_on_error(&mut conn, &result);
                    let round = result?;
                    evicted.entries += round.entries;
                    evicted.bytes += round.bytes;
                }
                Ok(evicted)
            }

            async fn reclaim_space(&self) -> Result<(), $crate::store::StoreError> {
                self.reclaim().await
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn create_token(
                &self,
                token_hash: &[u8; 32],
                name: &str,
                scope: pycache_proto::api::Scope,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::INSERT_TOKEN)
                    .bind(&token_hash[..])
                    .bind(name)
                    .bind(scope.as_str())
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::store::sql::token_insert_error(e, name))?;
                Ok(())
            }

            async fn token_scope(
                &self,
                token_hash: &[u8; 32],
            ) -> Result<Option<pycache_proto::api::Scope>, $crate::store::StoreError> {
                let scope: Option<(String,)> = sqlx::query_as($crate::store::sql::TOKEN_SCOPE)
                    .bind(&token_hash[..])
                    .fetch_optional(&self.pool)
                    .await?;
                scope
                    .map(|(s,)| $crate::store::sql::parse_scope(&s))
                    .transpose()
            }

            async fn list_tokens(
                &self,
            ) -> Result<Vec<$crate::store::TokenRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sql::TokenRow> =
                    sqlx::query_as($crate::store::sql::LIST_TOKENS)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(|r| r.into_record()).collect()
            }

            async fn revoke_token(
                &self,
                name: &str,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::sql::REVOKE_TOKEN)
                    .bind(now)
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn close(&self) {
                self.pool.close().await;
            }
        }
    };
}
