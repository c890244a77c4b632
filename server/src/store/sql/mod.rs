//! The SQL both stores share, and the [`Store`](super::Store) implementation built on it.
//!
//! SQLite accepts PostgreSQL's `$N` placeholders, `ON CONFLICT … DO UPDATE … WHERE` and the
//! casts used here, so one set of statements serves both databases. The trait implementation is
//! a macro because sqlx's pools are typed by database; the macro body is the same code for each.
//!
//! [`statements`] holds the SQL, [`rows`] what it answers; this file the implementation, one
//! macro for both databases.

mod rows;
mod statements;

pub(in crate::store) use rows::*;
pub(in crate::store) use statements::*;

/// Implements [`Store`](super::Store) for a type with a `pool: sqlx::Pool<_>` field, given the
/// statements that differ by database: the one that stores a body and the one that starts a
/// write transaction.
macro_rules! impl_store_with_sql {
    ($store:ty, $db:ty, $insert_body:expr, $begin_write:expr) => {
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

        impl $store {
            /// Adds a write transaction's changes to the running totals: the interpreters'
            /// rows in one order, then the store's, last (its lock is held until the commit).
            async fn add_totals(
                tx: &mut sqlx::Transaction<'_, $db>,
                interpreters: $crate::store::sql::InterpreterChanges,
                entries: i64,
                bytes: i64,
                row_bytes: i64,
            ) -> Result<(), $crate::store::StoreError> {
                for ((cache_tag, magic), (n, size)) in interpreters.into_rows() {
                    sqlx::query($crate::store::sql::ADD_INTERPRETER_TOTALS)
                        .bind(cache_tag)
                        .bind(magic)
                        .bind(n)
                        .bind(size)
                        .execute(&mut **tx)
                        .await?;
                }
                sqlx::query($crate::store::sql::ADD_TOTALS)
                    .bind(entries)
                    .bind(bytes)
                    .bind(row_bytes)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// One transaction of [`Store::put_from`]: entries from `entries` until the source
            /// ends (then `true`) or the round holds [`PUT_ROUND_ENTRIES`] entries or
            /// [`PUT_ROUND_BYTES`]; the keys it took are pushed to `keys` as it goes.
            async fn put_round(
                &self,
                namespace: &str,
                written_by: Option<&str>,
                entries: &mut dyn $crate::store::EntrySource,
                now: i64,
                conn: &mut sqlx::pool::PoolConnection<$db>,
                keys: &mut Vec<pycache_proto::KeyDigest>,
            ) -> Result<($crate::store::PutOutcome, bool), $crate::store::StoreError> {
                use $crate::store::sql::{
                    row_bytes, signatures_column, InterpreterChanges, BODY_BYTES,
                    DELETE_ORPHAN_BODY, INSERT_ENTRY, PUT_ROUND_BYTES, PUT_ROUND_ENTRIES,
                    REPAIR_BODY, STORED_BODY,
                };
                let mut tx = sqlx::Connection::begin_with(&mut **conn, $begin_write).await?;
                let mut outcome = $crate::store::PutOutcome::default();
                let mut interpreters = InterpreterChanges::default();
                let (mut added_bytes, mut added_rows, mut round_bytes) = (0i64, 0i64, 0u64);
                let mut exhausted = false;
                while keys.len() < PUT_ROUND_ENTRIES && round_bytes < PUT_ROUND_BYTES {
                    let Some(new) = entries.next_entry()? else {
                        exhausted = true;
                        break;
                    };
                    let key = &new.stored.key;
                    let digest = key.digest();
                    keys.push(digest);
                    round_bytes += new.stored.entry_bytes.len() as u64;
                    let body = &new.stored.digest.0[..];
                    let stored: Option<(Vec<u8>,)> = sqlx::query_as(STORED_BODY)
                        .bind(namespace)
                        .bind(&digest.0[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some((stored,)) = stored {
                        if stored != body {
                            outcome.conflicts.push(digest);
                        } else {
                            // The same entry again: its writer missed it here, so make sure the
                            // stored bytes are intact (a damaged body is rewritten with bytes of
                            // the digest it is stored under, the only right ones).
                            let (bytes, zstd, old_size): (Vec<u8>, bool, i64) =
                                sqlx::query_as(BODY_BYTES)
                                    .bind(body)
                                    .fetch_one(&mut *tx)
                                    .await?;
                            let intact = $crate::store::body::plain_bytes(
                                bytes,
                                zstd,
                                new.stored.entry_bytes.len() as u64,
                            )
                            .is_ok_and(|plain| plain == new.stored.entry_bytes);
                            if !intact {
                                let at_rest =
                                    $crate::store::body::AtRest::of(&new.stored.entry_bytes);
                                sqlx::query(REPAIR_BODY)
                                    .bind(body)
                                    .bind(at_rest.bytes())
                                    .bind(at_rest.is_zstd())
                                    .bind(at_rest.len() as i64)
                                    .execute(&mut *tx)
                                    .await?;
                                added_bytes += at_rest.len() as i64 - old_size;
                                outcome.repaired += 1;
                            }
                        }
                        continue;
                    }
                    let size = new.stored.entry_bytes.len() as i64;
                    let at_rest = $crate::store::body::AtRest::of(&new.stored.entry_bytes);
                    let stored_size = at_rest.len() as i64;
                    let new_body: Option<(bool,)> = sqlx::query_as($insert_body)
                        .bind(body)
                        .bind(stored_size)
                        .bind(at_rest.bytes())
                        .bind(at_rest.is_zstd())
                        .fetch_optional(&mut *tx)
                        .await?;
                    let new_body = new_body.is_some_and(|(inserted,)| inserted);
                    let signatures = signatures_column(&new.signatures);
                    let row = row_bytes(namespace, key, written_by, signatures.as_deref());
                    let done = sqlx::query(INSERT_ENTRY)
                        .bind(namespace)
                        .bind(&digest.0[..])
                        .bind(&key.source_hash[..])
                        .bind(&key.magic[..])
                        .bind(&key.cache_tag)
                        .bind(i32::from(key.optimization))
                        .bind(&key.settings)
                        .bind(&key.dfile)
                        .bind(new.success)
                        .bind(body)
                        .bind(size)
                        .bind(written_by)
                        .bind(&new.frame_digest.0[..])
                        .bind(signatures)
                        .bind(now)
                        .bind(row)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() > 0 {
                        outcome.inserted += 1;
                        added_rows += row;
                        interpreters.add(&key.cache_tag, &key.magic, 1, size);
                        if new_body {
                            added_bytes += stored_size;
                        }
                        continue;
                    }
                    // Another writer stored this key since the look above (PostgreSQL waited
                    // for it to commit): its entry stands.
                    let (stored,): (Vec<u8>,) = sqlx::query_as(STORED_BODY)
                        .bind(namespace)
                        .bind(&digest.0[..])
                        .fetch_one(&mut *tx)
                        .await?;
                    if stored != body {
                        outcome.conflicts.push(digest);
                        if new_body {
                            // The body this upload brought is held by no entry.
                            sqlx::query(DELETE_ORPHAN_BODY)
                                .bind(body)
                                .execute(&mut *tx)
                                .await?;
                        }
                    } else if new_body {
                        added_bytes += stored_size;
                    }
                }
                Self::add_totals(
                    &mut tx,
                    interpreters,
                    outcome.inserted as i64,
                    added_bytes,
                    added_rows,
                )
                .await?;
                tx.commit().await?;
                Ok((outcome, exhausted))
            }

            /// Deletes `doomed` entries in one transaction, in the order writers lock rows in,
            /// and frees each body no entry holds any more.
            async fn delete_entries(
                &self,
                mut doomed: Vec<$crate::store::sql::DoomedRow>,
            ) -> Result<$crate::store::Evicted, $crate::store::StoreError> {
                use $crate::store::sql::{DELETE_ENTRY, DELETE_ORPHAN_BODY};
                doomed.sort();
                let _turn = self.write_turn().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<$crate::store::Evicted, $crate::store::StoreError> = async {
                    let mut done = $crate::store::Evicted::default();
                    let mut tx = sqlx::Connection::begin_with(&mut *conn, $begin_write).await?;
                    let mut bodies = Vec::new();
                    let mut interpreters = $crate::store::sql::InterpreterChanges::default();
                    for row in &doomed {
                        let deleted = sqlx::query(DELETE_ENTRY)
                            .bind(&row.namespace)
                            .bind(&row.key_digest)
                            .execute(&mut *tx)
                            .await?;
                        if deleted.rows_affected() > 0 {
                            done.entries += 1;
                            done.row_bytes += row.row_bytes.max(0) as u64;
                            interpreters.add(&row.cache_tag, &row.magic, -1, -row.size);
                            bodies.push(row.body_digest.clone());
                        }
                    }
                    bodies.sort();
                    bodies.dedup();
                    for body in bodies {
                        // In a savepoint: on PostgreSQL a writer may have just pointed a new
                        // entry at this body (the foreign key then refuses the delete, and the
                        // body stays, as it must).
                        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
                        let freed: Result<Option<(i64,)>, sqlx::Error> =
                            sqlx::query_as(DELETE_ORPHAN_BODY)
                                .bind(&body)
                                .fetch_optional(&mut *savepoint)
                                .await;
                        match freed {
                            Ok(size) => {
                                savepoint.commit().await?;
                                done.bytes += size.map_or(0, |(s,)| s as u64);
                            }
                            Err(sqlx::Error::Database(db))
                                if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
                            {
                                savepoint.rollback().await?;
                            }
                            Err(err) => return Err(err.into()),
                        }
                    }
                    Self::add_totals(
                        &mut tx,
                        interpreters,
                        -(done.entries as i64),
                        -(done.bytes as i64),
                        -(done.row_bytes as i64),
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(done)
                }
                .await;
                discard_on_error(&mut conn, &result);
                result
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn get_stored(
                &self,
                namespaces: &[String],
                keys: &[pycache_proto::KeyDigest],
            ) -> Result<Vec<$crate::store::FoundEntry>, $crate::store::StoreError> {
                use $crate::store::sql::{select_entries, EntryRow, KEYS_PER_QUERY};
                let mut found: std::collections::HashMap<
                    pycache_proto::KeyDigest,
                    (usize, $crate::store::FoundEntry),
                > = std::collections::HashMap::new();
                if namespaces.is_empty() {
                    return Ok(Vec::new());
                }
                for chunk in keys.chunks(KEYS_PER_QUERY) {
                    let sql = select_entries(chunk.len(), namespaces.len());
                    let mut query = sqlx::query_as::<_, EntryRow>(&sql);
                    for key in chunk {
                        query = query.bind(&key.0[..]);
                    }
                    for namespace in namespaces {
                        query = query.bind(namespace);
                    }
                    for row in query.fetch_all(&self.pool).await? {
                        let entry = row.into_found()?;
                        let rank = namespaces
                            .iter()
                            .position(|n| *n == entry.namespace)
                            .unwrap_or(usize::MAX);
                        let key = entry.stored.key.digest();
                        // The first namespace in the caller's order that holds the key wins.
                        match found.get(&key) {
                            Some((best, _)) if *best <= rank => {}
                            _ => {
                                found.insert(key, (rank, entry));
                            }
                        }
                    }
                }
                Ok(found.into_values().map(|(_, e)| e).collect())
            }

            async fn put_from(
                &self,
                namespace: &str,
                written_by: Option<&str>,
                entries: &mut dyn $crate::store::EntrySource,
                now: i64,
            ) -> Result<$crate::store::PutOutcome, $crate::store::StoreError> {
                let mut outcome = $crate::store::PutOutcome::default();
                let mut committed = 0usize;
                loop {
                    let mut round_keys = Vec::new();
                    let round = {
                        let _turn = self.write_turn().await;
                        let mut conn = self.pool.acquire().await?;
                        let round = self
                            .put_round(
                                namespace,
                                written_by,
                                entries,
                                now,
                                &mut conn,
                                &mut round_keys,
                            )
                            .await;
                        discard_on_error(&mut conn, &round);
                        round
                    };
                    match round {
                        Ok((done, exhausted)) => {
                            committed += round_keys.len();
                            outcome.inserted += done.inserted;
                            outcome.repaired += done.repaired;
                            outcome.conflicts.extend(done.conflicts);
                            if exhausted {
                                return Ok(outcome);
                            }
                        }
                        // Nothing committed yet: the batch fails whole, as a small one does.
                        Err(err) if committed == 0 => return Err(err),
                        Err(err) => {
                            // Part of the batch is stored: say exactly which keys are not.
                            outcome.unstored = round_keys;
                            while let Ok(Some(rest)) = entries.next_entry() {
                                outcome.unstored.push(rest.stored.key.digest());
                            }
                            outcome.failure = Some(err.to_string());
                            return Ok(outcome);
                        }
                    }
                }
            }

            async fn record_usage(
                &self,
                usage: &[$crate::store::Usage],
            ) -> Result<(), $crate::store::StoreError> {
                let mut ordered: Vec<&$crate::store::Usage> = usage.iter().collect();
                ordered.sort_by(|a, b| (&a.namespace, a.key).cmp(&(&b.namespace, b.key)));
                let _turn = self.write_turn().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<(), $crate::store::StoreError> = async {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    for u in ordered {
                        sqlx::query($crate::store::sql::RECORD_USAGE)
                            .bind(u.hits as i64)
                            .bind(u.last_used_at)
                            .bind(&u.namespace)
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

            async fn totals(&self) -> Result<$crate::store::Totals, $crate::store::StoreError> {
                let (entries, bytes, row_bytes): (i64, i64, i64) =
                    sqlx::query_as($crate::store::sql::TOTALS)
                        .fetch_one(&self.pool)
                        .await?;
                Ok($crate::store::Totals {
                    entries: entries.max(0) as u64,
                    bytes: bytes.max(0) as u64,
                    row_bytes: row_bytes.max(0) as u64,
                })
            }

            async fn disk_usage(
                &self,
            ) -> Result<Option<$crate::store::DiskUsage>, $crate::store::StoreError> {
                self.measure_disk().await
            }

            async fn trim_journal(&self) -> Result<(), $crate::store::StoreError> {
                self.trim().await
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
                use $crate::store::sql::{DoomedRow, EVICTION_ROUND, LRU_CANDIDATES};
                let mut evicted = $crate::store::Evicted::default();
                while evicted.bytes + evicted.row_bytes < bytes {
                    let candidates: Vec<DoomedRow> = sqlx::query_as(LRU_CANDIDATES)
                        .bind(EVICTION_ROUND)
                        .fetch_all(&self.pool)
                        .await?;
                    if candidates.is_empty() {
                        break;
                    }
                    let mut chosen = Vec::new();
                    let mut planned = 0u64;
                    for row in candidates {
                        if evicted.bytes + evicted.row_bytes + planned >= bytes {
                            break;
                        }
                        planned += (row.size + row.row_bytes).max(0) as u64;
                        chosen.push(row);
                    }
                    let round = self.delete_entries(chosen).await?;
                    if round.entries == 0 {
                        break;
                    }
                    evicted.entries += round.entries;
                    evicted.bytes += round.bytes;
                    evicted.row_bytes += round.row_bytes;
                }
                Ok(evicted)
            }

            async fn purge(
                &self,
                filter: &$crate::store::PurgeFilter,
            ) -> Result<$crate::store::Evicted, $crate::store::StoreError> {
                use $crate::store::sql::{purge_candidates, DoomedRow, PurgeValue, PURGE_ROUND};
                let mut purged = $crate::store::Evicted::default();
                if filter.is_empty() {
                    return Ok(purged);
                }
                let (sql, values) = purge_candidates(filter);
                loop {
                    let mut query = sqlx::query_as::<_, DoomedRow>(&sql);
                    for value in &values {
                        query = match value {
                            PurgeValue::Text(text) => query.bind(*text),
                            PurgeValue::Bytes(bytes) => query.bind(*bytes),
                            PurgeValue::Int(n) => query.bind(*n),
                        };
                    }
                    let doomed = query.bind(PURGE_ROUND).fetch_all(&self.pool).await?;
                    if doomed.is_empty() {
                        break;
                    }
                    let round = self.delete_entries(doomed).await?;
                    purged.entries += round.entries;
                    purged.bytes += round.bytes;
                    purged.row_bytes += round.row_bytes;
                }
                Ok(purged)
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
                token: &$crate::store::NewToken,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::sql::patterns_column;
                sqlx::query($crate::store::sql::INSERT_TOKEN)
                    .bind(&token_hash[..])
                    .bind(&token.name)
                    .bind(token.scope.as_str())
                    .bind(patterns_column(&token.writes))
                    .bind(patterns_column(&token.reads))
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::store::sql::token_insert_error(e, &token.name))?;
                Ok(())
            }

            async fn token_grant(
                &self,
                token_hash: &[u8; 32],
            ) -> Result<Option<$crate::store::TokenRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql::TokenRow> =
                    sqlx::query_as($crate::store::sql::TOKEN_GRANT)
                        .bind(&token_hash[..])
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(|r| r.into_record()).transpose()
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
