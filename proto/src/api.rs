//! API v1: routes and the JSON types of the endpoints.
//!
//! Batch endpoints carry binary packs ([`crate::pack`]); everything else is JSON. Every error
//! is an [`ErrorResponse`], so the client decodes exactly what the server sends.

use serde::{Deserialize, Serialize};

use crate::key::KeyDigest;

/// `POST`: body [`BatchGetRequest`] (JSON), a binary key list ([`KEY_LIST_CONTENT_TYPE`],
/// [`encode_key_list`]) or a binary lookup list ([`LOOKUPS_CONTENT_TYPE`], [`encode_lookups`]);
/// answer a pack of the entries found (`Content-Encoding: zstd` when the request accepts it).
pub const BATCH_GET: &str = "/api/v1/batch/get";
/// `POST`: body a pack; answer [`BatchPutResponse`].
pub const BATCH_PUT: &str = "/api/v1/batch/put";
/// `GET | HEAD | PUT /api/v1/entries/{key}`: one entry, as its encoded bytes.
pub const ENTRY: &str = "/api/v1/entries/{key}";
/// `GET`: [`StatsResponse`].
pub const STATS: &str = "/api/v1/stats";
/// `GET`: [`ServerInfo`]: version, limits and the caller's scope.
pub const INFO: &str = "/api/v1/info";
/// `GET`: the OpenAPI document of the JSON endpoints.
pub const OPENAPI: &str = "/api/v1/openapi.json";
/// `GET`: liveness.
pub const HEALTHZ: &str = "/healthz";
/// `GET`: readiness (the database answers).
pub const READYZ: &str = "/readyz";
/// `GET`: Prometheus text metrics.
pub const METRICS: &str = "/metrics";

/// `GET`: list tokens (admin); `POST`: create one ([`TokenCreateRequest`] → [`TokenCreated`]).
pub const TOKENS: &str = "/api/v1/tokens";
/// `DELETE /api/v1/tokens/{name}`: revoke a token (admin); `?purge=true` also deletes the
/// entries it wrote.
pub const TOKEN: &str = "/api/v1/tokens/{name}";
/// `POST`: delete entries by writer, namespace, key and time ([`PurgeRequest`] →
/// [`PurgeResponse`], admin).
pub const PURGE: &str = "/api/v1/purge";

/// Request header naming the namespace a client writes to and looks in first (see
/// [`crate::namespace`]); without it the token's first writable namespace is used for writes
/// and its read list for lookups.
pub const NAMESPACE_HEADER: &str = "x-pycache-namespace";
/// Response header of `GET`/`HEAD` [`ENTRY`]: the namespace the entry was found in.
pub const ENTRY_NAMESPACE_HEADER: &str = "x-pycache-entry-namespace";
/// Response header of `GET`/`HEAD` [`ENTRY`]: the name of the token that wrote the entry
/// (absent for entries from before provenance was recorded).
pub const ENTRY_WRITER_HEADER: &str = "x-pycache-entry-written-by";

/// Media type of one encoded entry ([`crate::Entry::encode`]), as `GET` [`ENTRY`] answers it.
pub const ENTRY_CONTENT_TYPE: &str = "application/x-pycache-entry";
/// Response header of `GET`/`HEAD` [`ENTRY`]: the blake3 digest of the entry bytes, hex.
pub const ENTRY_DIGEST_HEADER: &str = "x-pycache-entry-digest";

/// Media type of a binary key list, the compact body of a batch get: the key digests back to
/// back, 32 bytes each, nothing else ([`encode_key_list`] / [`decode_key_list`]).
pub const KEY_LIST_CONTENT_TYPE: &str = "application/octet-stream";

/// Bytes of one key in a binary key list.
pub const KEY_LIST_KEY_BYTES: usize = 32;

/// The binary key list of `keys` ([`KEY_LIST_CONTENT_TYPE`]).
pub fn encode_key_list<'a>(keys: impl IntoIterator<Item = &'a KeyDigest>) -> Vec<u8> {
    keys.into_iter().flat_map(|k| k.0).collect()
}

/// The keys of a binary key list; its length must be a multiple of 32 bytes.
pub fn decode_key_list(bytes: &[u8]) -> Result<Vec<KeyDigest>, KeyListError> {
    let chunks = bytes.chunks_exact(KEY_LIST_KEY_BYTES);
    if !chunks.remainder().is_empty() {
        return Err(KeyListError { len: bytes.len() });
    }
    Ok(chunks
        .map(|c| KeyDigest(c.try_into().expect("32 bytes")))
        .collect())
}

/// A binary key list whose length is not a multiple of 32 bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a binary key list is 32 bytes per key (a lookup list: a count byte of 1 to 255, then that \
     many keys, per lookup), but this one is {len} bytes long and does not divide so"
)]
pub struct KeyListError {
    /// The body's length.
    pub len: usize,
}

/// Media type of a binary lookup list, the body of a batch get that says which keys are
/// alternatives for one file (its exact key and its path-free one, say): for each lookup one
/// byte, its number of keys (1 to 255), then those keys, 32 bytes each ([`encode_lookups`] /
/// [`decode_lookups`]). The server answers it as it answers the same keys in a key list, and
/// counts each lookup once in its statistics: a hit when any of its keys is served, else a
/// miss. Sent only to servers whose [`ServerInfo::lookups`] says they take it.
pub const LOOKUPS_CONTENT_TYPE: &str = "application/x-pycache-lookups";

/// Most keys in one lookup of a binary lookup list.
pub const MAX_LOOKUP_KEYS: usize = u8::MAX as usize;

/// The binary lookup list of `lookups` ([`LOOKUPS_CONTENT_TYPE`]); each lookup holds 1 to
/// [`MAX_LOOKUP_KEYS`] keys (an empty one is left out, a longer one is split).
pub fn encode_lookups<'a>(lookups: impl IntoIterator<Item = &'a [KeyDigest]>) -> Vec<u8> {
    let mut out = Vec::new();
    for lookup in lookups {
        for part in lookup.chunks(MAX_LOOKUP_KEYS) {
            out.push(part.len() as u8);
            out.extend(part.iter().flat_map(|k| k.0));
        }
    }
    out
}

/// The lookups of a binary lookup list.
pub fn decode_lookups(bytes: &[u8]) -> Result<Vec<Vec<KeyDigest>>, KeyListError> {
    let mut lookups = Vec::new();
    let mut rest = bytes;
    while let Some((&n, tail)) = rest.split_first() {
        let len = usize::from(n) * KEY_LIST_KEY_BYTES;
        if n == 0 || tail.len() < len {
            return Err(KeyListError { len: bytes.len() });
        }
        let (keys, tail) = tail.split_at(len);
        lookups.push(decode_key_list(keys)?);
        rest = tail;
    }
    Ok(lookups)
}

/// Request header of a batch get (or an entry `GET`) naming the client's interpreter,
/// `<cache_tag> <magic as 8 hex digits>` (`cpython-311 a70d0d0a`), so the server can count
/// misses per interpreter (a hit is counted under the interpreter of the entry served).
pub const INTERPRETER_HEADER: &str = "x-pycache-interpreter";

/// The value of [`INTERPRETER_HEADER`] for an interpreter.
pub fn interpreter_header(cache_tag: &str, magic: &[u8]) -> String {
    let hex: String = magic.iter().map(|b| format!("{b:02x}")).collect();
    format!("{cache_tag} {hex}")
}

/// The path of one entry.
pub fn entry_path(key: &KeyDigest) -> String {
    format!("/api/v1/entries/{key}")
}

/// Every error the server answers, whatever the status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorResponse {
    /// A stable machine-readable code, e.g. `bad_request`, `unauthorized`, `payload_too_large`.
    pub code: String,
    /// What went wrong and what to do, for people.
    pub message: String,
}

/// Ask for many entries at once. The keys asked for are `keys`, then the keys of `lookups`;
/// the answer holds those the server has, in that order, each once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchGetRequest {
    /// Key digests wanted, each its own lookup in the server's statistics.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub keys: Vec<KeyDigest>,
    /// Lookups of several keys that are alternatives for one file (its exact key and its
    /// path-free one): each counted once, a hit when any of its keys is served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Vec<String>>))]
    pub lookups: Vec<Vec<KeyDigest>>,
}

/// What happened to each entry of a batch put.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchPutResponse {
    /// The namespace the batch was written to.
    #[serde(default)]
    pub namespace: String,
    /// Keys stored (or already present with the same content).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub stored: Vec<KeyDigest>,
    /// Entries refused, each with the reason.
    pub refused: Vec<RefusedEntry>,
}

/// One refused entry of a batch put.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefusedEntry {
    /// The entry's key digest.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub key: KeyDigest,
    /// Why it was refused: [`REFUSED_CONFLICT`], [`REFUSED_INVALID`] or [`REFUSED_UNAVAILABLE`].
    #[serde(default)]
    pub code: String,
    /// Why it was refused, for people.
    pub reason: String,
}

/// [`RefusedEntry::code`] of an upload whose key is stored in the namespace with other bytes:
/// entries never change once stored.
pub const REFUSED_CONFLICT: &str = "conflict";
/// [`RefusedEntry::code`] of an entry that is not acceptable (not a code object, bad encoding).
pub const REFUSED_INVALID: &str = "invalid_entry";
/// [`RefusedEntry::code`] of an entry the server could not store this time (the store failed
/// after part of a large batch was committed): upload it again later.
pub const REFUSED_UNAVAILABLE: &str = "unavailable";

/// A caller's permission level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read entries and statistics.
    Read,
    /// Read, and store entries.
    Write,
    /// Everything, including token management.
    Admin,
}

/// Limits and identity the server advertises, so clients can size their batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerInfo {
    /// The server's version.
    pub version: String,
    /// Largest encoded entry accepted, in bytes.
    pub max_entry_bytes: u64,
    /// Largest request body accepted, in bytes.
    pub max_request_bytes: u64,
    /// Most keys in one batch get, and most entries (frames) in one batch put.
    pub max_batch_keys: u64,
    /// The scope of the caller's token; `None` without one (or when reads are public).
    pub scope: Option<Scope>,
    /// Whether anyone may read without a token.
    pub public_read: bool,
    /// The namespace this caller's uploads go to (the one it named, else its token's first
    /// writable one); `None` when it may not write.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The namespaces a batch get of this caller looks in, in order (first hit wins).
    #[serde(default)]
    pub reads: Vec<String>,
    /// The server takes batch gets as lookup lists ([`LOOKUPS_CONTENT_TYPE`]) and counts a
    /// lookup once; `false` from servers older than that (send them a key list).
    #[serde(default)]
    pub lookups: bool,
}

/// Store statistics. Lookups (a file asked for, however many alternative keys it is asked
/// under) are counted by this server process since it started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsResponse {
    /// Entries stored.
    pub entries: u64,
    /// Bytes of stored entries.
    pub bytes: u64,
    /// Lookups served an entry since the server started.
    pub hits: u64,
    /// Lookups that found no entry since the server started.
    pub misses: u64,
    /// `hits / (hits + misses)`; `None` before the first lookup.
    #[serde(default)]
    pub hit_rate: Option<f64>,
    /// Per interpreter (cache tag and magic): entries stored.
    pub interpreters: Vec<InterpreterStats>,
    /// Lookups per interpreter: a hit under the served entry's interpreter, a miss under the
    /// one the client named ([`INTERPRETER_HEADER`]; `unknown` when it named none). Past a
    /// fixed number of interpreters, the rest are counted as `other`.
    #[serde(default)]
    pub lookups_by_interpreter: Vec<InterpreterLookups>,
    /// Lookups per namespace looked in first (the one the client named, else its token's
    /// first). Past a fixed number of namespaces, the rest are counted as `other`.
    #[serde(default)]
    pub lookups_by_namespace: Vec<NamespaceLookups>,
}

/// Lookups of one interpreter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InterpreterLookups {
    /// `sys.implementation.cache_tag`, `unknown` or `other`.
    pub cache_tag: String,
    /// Magic bytes, hex (empty for `unknown` and `other`).
    pub magic: String,
    /// Lookups served an entry.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// `hits / (hits + misses)`.
    pub hit_rate: Option<f64>,
}

/// Lookups of one namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NamespaceLookups {
    /// The namespace looked in first, or `other`.
    pub namespace: String,
    /// Lookups served an entry.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// `hits / (hits + misses)`.
    pub hit_rate: Option<f64>,
}

/// `hits / (hits + misses)`, `None` when both are 0.
pub fn hit_rate(hits: u64, misses: u64) -> Option<f64> {
    let all = hits.saturating_add(misses);
    (all > 0).then(|| hits as f64 / all as f64)
}

/// Statistics of one interpreter's entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InterpreterStats {
    /// `sys.implementation.cache_tag`.
    pub cache_tag: String,
    /// Magic bytes, hex.
    pub magic: String,
    /// Entries stored.
    pub entries: u64,
    /// Bytes stored.
    pub bytes: u64,
}

/// Ask the server for a new token (admin scope).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreateRequest {
    /// A unique name, e.g. `ci-main`; used to list and revoke the token.
    pub name: String,
    /// What the token may do.
    pub scope: Scope,
    /// Namespace patterns it may write (`main`, `pr/*`, `*`); default `default` for write and
    /// admin tokens, none for read tokens.
    #[serde(default)]
    pub writes: Option<Vec<String>>,
    /// Namespaces it reads, in order, after the one the client names; default `default`.
    #[serde(default)]
    pub reads: Option<Vec<String>>,
}

/// A token just created: the only time its text is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    /// The token's name.
    pub name: String,
    /// The token's scope.
    pub scope: Scope,
    /// The bearer token; the server keeps only its hash.
    pub token: String,
    /// Namespace patterns it may write.
    pub writes: Vec<String>,
    /// Namespaces it reads, in order.
    pub reads: Vec<String>,
}

/// A token as listed (never its text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenSummary {
    /// The token's name.
    pub name: String,
    /// The token's scope.
    pub scope: Scope,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Revocation time, Unix milliseconds; `None` while the token is valid.
    pub revoked_at: Option<i64>,
    /// Namespace patterns it may write.
    pub writes: Vec<String>,
    /// Namespaces it reads, in order.
    pub reads: Vec<String>,
}

/// Which entries to delete (admin): every condition given must hold; at least one is needed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurgeRequest {
    /// Entries written by the token of this name.
    #[serde(default)]
    pub written_by: Option<String>,
    /// Entries in this namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The entry (or entries, one per namespace) of this key digest.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub key: Option<KeyDigest>,
    /// Entries written at or after this time, Unix milliseconds.
    #[serde(default)]
    pub since: Option<i64>,
}

/// What a purge deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurgeResponse {
    /// Entries deleted.
    pub entries: u64,
    /// Bytes of bodies freed (bodies still held by other entries stay).
    pub bytes: u64,
}

/// Every token the server knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenListResponse {
    /// Tokens, oldest first.
    pub tokens: Vec<TokenSummary>,
}

impl Scope {
    /// The lower-case name used on the wire, on the command line and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?}: use read, write or admin")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lists_round_trip_and_refuse_partial_keys() {
        let keys: Vec<KeyDigest> = (0..3u8).map(|n| KeyDigest([n; 32])).collect();
        let bytes = encode_key_list(&keys);
        assert_eq!(bytes.len(), 96);
        assert_eq!(decode_key_list(&bytes).unwrap(), keys);
        assert_eq!(decode_key_list(&[]).unwrap(), vec![]);
        assert_eq!(decode_key_list(&bytes[..95]), Err(KeyListError { len: 95 }));
    }

    #[test]
    fn lookup_lists_round_trip_and_refuse_bad_counts() {
        let keys: Vec<KeyDigest> = (0..3u8).map(|n| KeyDigest([n; 32])).collect();
        let lookups = vec![keys[..2].to_vec(), keys[2..].to_vec()];
        let bytes = encode_lookups(lookups.iter().map(Vec::as_slice));
        assert_eq!(bytes.len(), 2 + 96);
        assert_eq!(bytes[0], 2);
        assert_eq!(decode_lookups(&bytes).unwrap(), lookups);
        assert_eq!(decode_lookups(&[]).unwrap(), Vec::<Vec<KeyDigest>>::new());
        assert!(decode_lookups(&bytes[..97]).is_err(), "a lookup cut short");
        assert!(decode_lookups(&[0]).is_err(), "a lookup of no key");
        let long: Vec<KeyDigest> = (0..300u16).map(|n| KeyDigest([n as u8; 32])).collect();
        let split = decode_lookups(&encode_lookups([long.as_slice()])).unwrap();
        assert_eq!(
            split.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![255, 45]
        );
    }

    #[test]
    fn hit_rates_and_the_interpreter_header() {
        assert_eq!(hit_rate(0, 0), None);
        assert_eq!(hit_rate(19, 19), Some(0.5));
        assert_eq!(
            interpreter_header("cpython-311", &[0xa7, 0x0d, 0x0d, 0x0a]),
            "cpython-311 a70d0d0a"
        );
    }
}
