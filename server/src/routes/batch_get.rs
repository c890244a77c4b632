//! `POST /api/v1/batch/get`: every key in one request, one streamed pack back.
//!
//! The keys are looked up in the caller's namespaces in order (the one it names, then its
//! token's reads; the first that holds a key wins). The answer is a pack
//! (`application/x-pycache-pack`) of the entries found, in request order,
//! each frame carrying the digest its writer bound it to its key with and the writers'
//! signatures, as stored; missing keys are simply absent. The first
//! chunk of keys is looked up before answering, so an unreachable database is a clean error;
//! later chunks stream, and a failure there cuts the pack short, which the client detects as a
//! truncated pack (no end marker). Chunks are sized by the bytes of the entries found so far
//! (about [`CHUNK_BYTES`]), so an answer's memory does not grow with its keys or its entries'
//! size. zstd is applied by the router when the request accepts it.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use pycache_proto::api::{self, BatchGetRequest, Scope};
use pycache_proto::pack::{Frame, PackWriter, PACK_CONTENT_TYPE, PACK_MAGIC};
use pycache_proto::{ErrorResponse, KeyDigest};

use crate::auth::Caller;
use crate::config::Config;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::FoundEntry;

/// The answer is looked up and sent in chunks of about this many bytes of entries: a batch get
/// in flight holds the chunk being looked up and at most [`QUEUED_CHUNKS`] waiting to be sent,
/// however many keys it asks for.
const CHUNK_BYTES: usize = 512 << 10;
/// Keys of the first chunk, before the size of this store's entries is known: one, so that even
/// entries of the largest size allowed cost one entry's memory until their size is known.
const FIRST_CHUNK_KEYS: usize = 1;
/// Most keys in a chunk, however small the entries.
const MAX_CHUNK_KEYS: usize = 1000;
/// While nothing was found, each chunk asks for this many times the keys of the last.
const GROWTH_WITHOUT_HITS: usize = 4;
/// Chunks of frames queued between the store and the connection.
const QUEUED_CHUNKS: usize = 2;

/// Keys for the next chunk, given the bytes and number of the entries found so far and the keys
/// of the last chunk: about [`CHUNK_BYTES`] of entries of the average size found; while nothing
/// was found (a cold run), geometrically more keys, so a batch of misses costs few queries.
fn next_chunk_keys(bytes: usize, found: usize, last: usize) -> usize {
    if found == 0 {
        return last
            .saturating_mul(GROWTH_WITHOUT_HITS)
            .clamp(1, MAX_CHUNK_KEYS);
    }
    (CHUNK_BYTES / (bytes / found).max(1)).clamp(1, MAX_CHUNK_KEYS)
}

/// The entries found among the requested keys, as a pack.
#[utoipa::path(
    post,
    path = "/api/v1/batch/get",
    tag = "entries",
    request_body(content(
        (BatchGetRequest = "application/json"),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses(
        (status = 200, content_type = "application/x-pycache-pack", body = Vec<u8>,
         description = "A pack of the entries found (zstd with Accept-Encoding: zstd)"),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 403, body = ErrorResponse, description = "No read scope, or a namespace the token may not read"),
        (status = 413, body = ErrorResponse, description = "More keys than max_batch_keys"),
    ),
    security((), ("bearer" = []))
)]
pub async fn batch_get(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    caller.require(Scope::Read, state.config.public_read)?;
    let namespaces = caller.read_order()?;
    // The keys are read before a slot is taken, so a slow sender holds none; a slot is held
    // only while a chunk is looked up, never while it waits for the client to read it.
    let keys = read_keys(&headers, body, &state.config).await?;
    let mut seen = std::collections::HashSet::new();
    let keys: Vec<KeyDigest> = keys.into_iter().filter(|k| seen.insert(*k)).collect();
    drop(seen);
    let first_len = keys.len().min(FIRST_CHUNK_KEYS);
    let first = {
        let _slot = state.heavy_slot(&caller).await?.without_trim();
        lookup(&state, &namespaces, &keys[..first_len]).await?
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(QUEUED_CHUNKS);
    tokio::spawn(async move {
        let mut count = first.len();
        let mut bytes: usize = first.iter().map(|f| f.entry_bytes.len()).sum();
        if tx.send(Ok(Bytes::from_static(PACK_MAGIC))).await.is_err() {
            return;
        }
        if tx.send(Ok(frames_bytes(first))).await.is_err() {
            return;
        }
        let mut next = first_len;
        let mut last = first_len;
        while next < keys.len() {
            last = next_chunk_keys(bytes, count, last);
            let end = keys.len().min(next + last);
            let found = match state.heavy_slot(&caller).await {
                Ok(slot) => {
                    let _slot = slot.without_trim();
                    lookup(&state, &namespaces, &keys[next..end]).await
                }
                Err(err) => Err(err),
            };
            let frames = match found {
                Ok(frames) => frames,
                Err(err) => {
                    tracing::warn!(error = %err, "batch get failed mid-stream; pack cut short");
                    let _ = tx.send(Err(std::io::Error::other("store failed"))).await;
                    return;
                }
            };
            next = end;
            count += frames.len();
            bytes += frames.iter().map(|f| f.entry_bytes.len()).sum::<usize>();
            if tx.send(Ok(frames_bytes(frames))).await.is_err() {
                return;
            }
        }
        let mut end = 0u32.to_le_bytes().to_vec();
        end.extend_from_slice(&(count as u32).to_le_bytes());
        let _ = tx.send(Ok(end.into())).await;
        drop(tx);
        state.release_memory_if_idle();
    });
    let body = Body::from_stream(tokio_stream(rx));
    Ok(([(CONTENT_TYPE, PACK_CONTENT_TYPE)], body).into_response())
}

/// Bytes of JSON per key that a batch get body may use: a 64-digit hex string in quotes, a
/// comma and some white space.
const JSON_BYTES_PER_KEY: u64 = 72;

/// The keys of a batch get body, JSON or a binary key list by its `Content-Type`. The body is
/// read only up to what `max_keys` keys can take, so a huge request costs no memory before it
/// is refused.
async fn read_keys(
    headers: &HeaderMap,
    body: Body,
    config: &Config,
) -> Result<Vec<KeyDigest>, AppError> {
    let max_keys = config.max_batch_keys;
    let binary = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(api::KEY_LIST_CONTENT_TYPE));
    let per_key = if binary {
        api::KEY_LIST_KEY_BYTES as u64
    } else {
        JSON_BYTES_PER_KEY
    };
    let limit = max_keys
        .saturating_mul(per_key)
        .saturating_add(1024)
        .min(config.max_request_bytes);
    let too_many = || {
        AppError::PayloadTooLarge(format!(
            "the batch get body is over {limit} bytes (the server's request limit, or what \
             {max_keys} keys can take; it answers at most {max_keys} keys per batch): split \
             the request"
        ))
    };
    let read = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = tokio::time::timeout(config.body_timeout, read)
        .await
        .map_err(|_| AppError::body_timeout(config.body_timeout))?
        .map_err(|_| too_many())?;
    let keys = if binary {
        api::decode_key_list(&bytes).map_err(|e| AppError::bad_request("bad_key", e.to_string()))?
    } else {
        serde_json::from_slice::<BatchGetRequest>(&bytes)
            .map_err(|e| {
                AppError::bad_request(
                    "bad_json",
                    format!(
                        "{e}; send {{\"keys\": [\"<64 hex digits>\", …]}} with Content-Type: \
                         application/json, or the keys as {} (32 bytes each)",
                        api::KEY_LIST_CONTENT_TYPE
                    ),
                )
            })?
            .keys
    };
    if keys.len() as u64 > max_keys {
        return Err(AppError::PayloadTooLarge(format!(
            "{} keys asked for; the server answers at most {max_keys} per batch: split the request",
            keys.len()
        )));
    }
    Ok(keys)
}

/// Looks up one chunk of keys in `namespaces` (first hit wins), in request order, and counts
/// hits, misses and bytes.
async fn lookup(
    state: &AppState,
    namespaces: &[String],
    keys: &[KeyDigest],
) -> Result<Vec<Frame>, AppError> {
    let mut by_key: std::collections::HashMap<KeyDigest, FoundEntry> = state
        .store
        .get_many(namespaces, keys)
        .await?
        .into_iter()
        .map(|e| (e.stored.key.digest(), e))
        .collect();
    let found: Vec<FoundEntry> = keys.iter().filter_map(|k| by_key.remove(k)).collect();
    state.usage.record(
        found
            .iter()
            .map(|e| (e.namespace.as_str(), e.stored.key.digest())),
    );
    let frames: Vec<Frame> = found
        .into_iter()
        .map(|e| Frame {
            key: e.stored.key,
            entry_bytes: e.stored.entry_bytes,
            digest: e.frame_digest,
            signatures: e.signatures,
        })
        .collect();
    let metrics = &state.metrics;
    Metrics::add(&metrics.hits, frames.len() as u64);
    Metrics::add(&metrics.misses, (keys.len() - frames.len()) as u64);
    let bytes: usize = frames.iter().map(|f| f.entry_bytes.len()).sum();
    Metrics::add(&metrics.bytes_out, bytes as u64);
    Ok(frames)
}

/// The frames' bytes as they sit inside a pack: proto's writer output without its 8-byte magic
/// and 8-byte end marker (a view of it, not a copy), so the frame layout is written by proto
/// alone. Each frame is dropped once written.
fn frames_bytes(frames: Vec<Frame>) -> Bytes {
    let mut writer = PackWriter::new();
    for frame in frames {
        writer.push(&frame);
    }
    let pack = Bytes::from(writer.finish());
    pack.slice(PACK_MAGIC.len()..pack.len() - 8)
}

/// A receiver as a body stream.
fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_about_chunk_bytes_of_entries_within_bounds() {
        assert_eq!(next_chunk_keys(0, 0, 1), 4, "nothing found yet: grow");
        assert_eq!(next_chunk_keys(0, 0, 256), MAX_CHUNK_KEYS, "up to the most");
        assert_eq!(next_chunk_keys(32 * 16_384, 32, 8), 32, "16 KiB entries");
        assert_eq!(
            next_chunk_keys(32 * 200, 32, 8),
            MAX_CHUNK_KEYS,
            "tiny entries"
        );
        assert_eq!(
            next_chunk_keys(8 << 20, 1, 1),
            1,
            "8 MiB entries: one at a time"
        );
    }
}
