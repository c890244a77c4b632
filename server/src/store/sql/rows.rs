//! The rows the statements answer, and the values written into their columns.

use pycache_proto::api::Scope;
use pycache_proto::namespace::{join_patterns, parse_patterns};
use pycache_proto::pack::FrameDigest;
use pycache_proto::signature::{decode_signatures, encode_signatures};
use pycache_proto::{CacheKey, EntryDigest};

use super::statements::ROW_OVERHEAD;
use crate::store::{FoundEntry, StoreError, StoredEntry, TokenRecord};

/// One row of [`select_entries`].
#[derive(sqlx::FromRow)]
pub(in crate::store) struct EntryRow {
    namespace: String,
    source_hash: Vec<u8>,
    magic: Vec<u8>,
    cache_tag: String,
    optimization: i32,
    settings: String,
    dfile: String,
    written_by: Option<String>,
    body_digest: Vec<u8>,
    frame_digest: Option<Vec<u8>>,
    signatures: Option<Vec<u8>>,
    size: i64,
    entry: Vec<u8>,
    zstd: bool,
}

impl EntryRow {
    /// Rebuilds the key and entry; a row that does not fit is corruption, not a panic.
    pub(in crate::store) fn into_found(self) -> Result<FoundEntry, StoreError> {
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
            self.body_digest
                .try_into()
                .map_err(|_| corrupt("body_digest"))?,
        );
        // Entries from before frame digests were stored get theirs computed here.
        let frame_digest = match self.frame_digest {
            Some(bytes) => FrameDigest(bytes.try_into().map_err(|_| corrupt("frame_digest"))?),
            None => FrameDigest::bind(&key.digest(), &digest),
        };
        let signatures = match self.signatures {
            Some(bytes) => match decode_signatures(&bytes) {
                Ok((signatures, len)) if len == bytes.len() => signatures,
                _ => return Err(corrupt("signatures")),
            },
            None => Vec::new(),
        };
        Ok(FoundEntry {
            namespace: self.namespace,
            written_by: self.written_by,
            frame_digest,
            signatures,
            stored: StoredEntry {
                key,
                entry_bytes: self.entry,
                digest,
            },
            stored_zstd: self.zstd,
            entry_size: self.size.max(0) as u64,
        })
    }
}

/// One row of [`LRU_CANDIDATES`] or [`purge_candidates`]: an entry to delete.
#[derive(sqlx::FromRow, PartialEq, Eq, PartialOrd, Ord)]
pub(in crate::store) struct DoomedRow {
    pub(in crate::store) namespace: String,
    pub(in crate::store) key_digest: Vec<u8>,
    pub(in crate::store) body_digest: Vec<u8>,
    pub(in crate::store) size: i64,
    pub(in crate::store) row_bytes: i64,
    pub(in crate::store) cache_tag: String,
    pub(in crate::store) magic: Vec<u8>,
}

/// What one entry's row takes beyond its body, as the 0003 migration computes it for the rows
/// before it: [`ROW_OVERHEAD`] plus its strings, the indexed namespace and writer twice.
pub(in crate::store) fn row_bytes(
    namespace: &str,
    key: &CacheKey,
    written_by: Option<&str>,
    signatures: Option<&[u8]>,
) -> i64 {
    let strings = 2 * namespace.len()
        + key.cache_tag.len()
        + key.settings.len()
        + key.dfile.len()
        + 2 * written_by.map_or(0, str::len)
        + signatures.map_or(0, <[u8]>::len);
    ROW_OVERHEAD + strings as i64
}

/// Changes to the per-interpreter totals within one transaction, applied in one order.
#[derive(Default)]
pub(in crate::store) struct InterpreterChanges(
    std::collections::BTreeMap<(String, Vec<u8>), (i64, i64)>,
);

impl InterpreterChanges {
    pub(in crate::store) fn add(
        &mut self,
        cache_tag: &str,
        magic: &[u8],
        entries: i64,
        bytes: i64,
    ) {
        let slot = self
            .0
            .entry((cache_tag.to_owned(), magic.to_vec()))
            .or_default();
        slot.0 += entries;
        slot.1 += bytes;
    }

    pub(in crate::store) fn into_rows(
        self,
    ) -> impl Iterator<Item = ((String, Vec<u8>), (i64, i64))> {
        self.0.into_iter()
    }
}

/// One row of [`TOTALS`] or [`BY_INTERPRETER`].
#[derive(sqlx::FromRow)]
pub(in crate::store) struct UsageRow {
    pub(in crate::store) cache_tag: String,
    pub(in crate::store) magic: Vec<u8>,
    pub(in crate::store) entries: i64,
    pub(in crate::store) bytes: i64,
}

/// One row of [`LIST_TOKENS`] or [`TOKEN_GRANT`].
#[derive(sqlx::FromRow)]
pub(in crate::store) struct TokenRow {
    name: String,
    scope: String,
    writes: String,
    reads: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TokenRow {
    pub(in crate::store) fn into_record(self) -> Result<TokenRecord, StoreError> {
        let patterns = |column: &str, text: &str| {
            parse_patterns(text).map_err(|e| {
                StoreError::Corrupt(format!("tokens.{column} of {:?}: {e}", self.name))
            })
        };
        Ok(TokenRecord {
            scope: parse_scope(&self.scope)?,
            writes: patterns("writes", &self.writes)?,
            reads: patterns("reads", &self.reads)?,
            name: self.name,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        })
    }
}

/// The `signatures` column's value: `NULL` for none.
pub(in crate::store) fn signatures_column(
    signatures: &[pycache_proto::signature::EntrySignature],
) -> Option<Vec<u8>> {
    if signatures.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    encode_signatures(signatures, &mut out);
    Some(out)
}

/// The `writes` or `reads` column's value.
pub(in crate::store) fn patterns_column(
    patterns: &[pycache_proto::namespace::NamespacePattern],
) -> String {
    join_patterns(patterns)
}

/// A scope column's value.
pub(in crate::store) fn parse_scope(text: &str) -> Result<Scope, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

/// Maps a unique violation on insert to [`StoreError::DuplicateTokenName`].
pub(in crate::store) fn token_insert_error(err: sqlx::Error, name: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            StoreError::DuplicateTokenName(name.to_owned())
        }
        _ => StoreError::Database(err),
    }
}
