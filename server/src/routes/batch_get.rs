//! `POST /api/v1/batch/get`: every key in one request, one streamed pack back.
//!
//! A request is a list of lookups: a binary lookup list (`application/x-pycache-lookups`) or
//! JSON `lookups` groups the keys that are alternatives for one file (its exact key and its
//! path-free one), a binary key list or JSON `keys` makes each key its own lookup. Each lookup
//! is counted once: a hit when any of its keys was served (under the interpreter of the entry
//! served), else a miss (under the interpreter the request names in `x-pycache-interpreter`),
//! in the namespace looked in first; it is counted once all its keys are looked up.
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
//! size. A request that accepts zstd gets a zstd answer the server does not compress: each body as
//! stored (compressed once, at upload), the rest in raw zstd frames between them.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use pycache_proto::api::{self, BatchGetRequest, Scope};
use pycache_proto::pack::{Frame, PACK_CONTENT_TYPE, PACK_MAGIC};
use pycache_proto::{ErrorResponse, KeyDigest};

use crate::auth::Caller;
use crate::config::Config;
use crate::error::AppError;
use crate::metrics::{InterpreterLabel, Metrics};
use crate::state::AppState;
use crate::store::body::raw_zstd_frame;
use crate::store::FoundEntry;

/// The answer is looked up and sent in chunks of about this many bytes of entries: a batch get
/// in flight holds the chunk the connection is writing and, once that is written, the next one
/// being looked up, however many keys it asks for.
const CHUNK_BYTES: usize = 512 << 10;
/// Keys of the first chunk, before the size of this store's entries is known: one, so that even
/// entries of the largest size allowed cost one entry's memory until their size is known.
const FIRST_CHUNK_KEYS: usize = 1;
/// Most keys in a chunk, however small the entries.
const MAX_CHUNK_KEYS: usize = 1000;
/// While nothing was found, each chunk asks for this many times the keys of the last.
const GROWTH_WITHOUT_HITS: usize = 4;

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
        (Vec<u8> = "application/x-pycache-lookups"),
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
    let lookups = read_lookups(&headers, body, &state.config).await?;
    let (keys, mut tally) = Tally::new(
        lookups,
        namespaces.first().map_or("none", String::as_str),
        InterpreterLabel::from_header(&headers).unwrap_or_else(InterpreterLabel::unknown),
    );
    let zstd = accepts_zstd(&headers);
    let first_len = keys.len().min(FIRST_CHUNK_KEYS);
    let first = {
        let _slot = state
            .heavy_slot(caller.name.as_deref())
            .await?
            .without_trim();
        lookup(&state, &namespaces, &keys[..first_len], zstd).await?
    };
    tally.found(0, &keys[..first_len], &first);
    tally.count_through(first_len, &state.metrics);
    let first_bytes: usize = first.iter().map(|f| f.frame.entry_bytes.len()).sum();
    let rest = Rest {
        zstd,
        caller,
        count: first.len(),
        bytes: first_bytes,
        next: first_len,
        last: first_len,
        state,
        namespaces,
        keys,
        tally,
        done: false,
    };
    let head = pieces(PACK_MAGIC, first, zstd);
    // The rest is looked up only when the connection asks for more, that is once it has
    // written what it was given: an answer holds one chunk, and a reader that stopped reading
    // holds one chunk and no slot.
    // Fused: the body may be polled again after its end.
    let chunks = futures::stream::unfold(rest, Rest::next_piece).fuse();
    let body = futures::stream::iter(head)
        .map(Ok::<_, std::io::Error>)
        .chain(chunks.flat_map(|piece| {
            futures::stream::iter(match piece {
                Ok(parts) => parts.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(err) => vec![Err(err)],
            })
        }))
        .fuse();
    let mut response =
        ([(CONTENT_TYPE, PACK_CONTENT_TYPE)], Body::from_stream(body)).into_response();
    if zstd {
        // Compressed already (bodies as stored): the router's compression leaves it alone.
        let headers = response.headers_mut();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    }
    Ok(response)
}

/// Whether the request accepts a zstd answer (`Accept-Encoding: zstd`, not with `q=0`).
fn accepts_zstd(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name.eq_ignore_ascii_case("zstd") && !refused
        })
}

/// The part of a batch get answer still to look up and send.
struct Rest {
    /// The answer is a zstd stream: bodies as stored, the rest in raw frames.
    zstd: bool,
    /// Whose slots its lookups take.
    caller: Caller,
    state: AppState,
    namespaces: Vec<String>,
    /// The keys asked for, each once, in request order.
    keys: Vec<KeyDigest>,
    /// The lookups, counted as their keys are looked up.
    tally: Tally,
    /// The first key not looked up yet.
    next: usize,
    /// Keys of the last chunk.
    last: usize,
    /// Entries found so far, and their bytes.
    count: usize,
    bytes: usize,
    done: bool,
}

impl Rest {
    /// The next chunk's bytes (skipping chunks where nothing was found), then the end marker,
    /// then nothing; a store failure ends the body with an error, which cuts the pack short.
    async fn next_piece(mut self) -> Option<(Result<Vec<Bytes>, std::io::Error>, Rest)> {
        if self.done {
            return None;
        }
        while self.next < self.keys.len() {
            self.last = next_chunk_keys(self.bytes, self.count, self.last);
            let end = self.keys.len().min(self.next + self.last);
            let found = match self.state.heavy_slot(self.caller.name.as_deref()).await {
                Ok(slot) => {
                    let _slot = slot.without_trim();
                    lookup(
                        &self.state,
                        &self.namespaces,
                        &self.keys[self.next..end],
                        self.zstd,
                    )
                    .await
                }
                Err(err) => Err(err),
            };
            let frames = match found {
                Ok(frames) => frames,
                Err(err) => {
                    tracing::warn!(error = %err, "batch get failed mid-stream; pack cut short");
                    self.done = true;
                    return Some((Err(std::io::Error::other("store failed")), self));
                }
            };
            self.tally
                .found(self.next, &self.keys[self.next..end], &frames);
            self.next = end;
            self.tally.count_through(end, &self.state.metrics);
            if frames.is_empty() {
                continue;
            }
            self.count += frames.len();
            self.bytes += frames
                .iter()
                .map(|f| f.frame.entry_bytes.len())
                .sum::<usize>();
            return Some((Ok(pieces(&[], frames, self.zstd)), self));
        }
        self.done = true;
        self.state.release_memory_if_idle();
        let mut end = 0u32.to_le_bytes().to_vec();
        end.extend_from_slice(&(self.count as u32).to_le_bytes());
        if self.zstd {
            end = raw_zstd_frame(&end);
        }
        Some((Ok(vec![end.into()]), self))
    }
}

/// Bytes of JSON per key that a batch get body may use: a 64-digit hex string in quotes, a
/// comma and some white space.
const JSON_BYTES_PER_KEY: u64 = 72;

/// The lookups of a batch get body by its `Content-Type`: a binary lookup list, a binary key
/// list (each key a lookup) or JSON (each of `keys` a lookup, then `lookups`). The body is read
/// only up to what `max_keys` keys can take, so a huge request costs no memory before it is
/// refused; more than `max_keys` keys in all (repeats included) is refused too.
async fn read_lookups(
    headers: &HeaderMap,
    body: Body,
    config: &Config,
) -> Result<Vec<Vec<KeyDigest>>, AppError> {
    let max_keys = config.max_batch_keys;
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let grouped = content_type.starts_with(api::LOOKUPS_CONTENT_TYPE);
    let binary = content_type.starts_with(api::KEY_LIST_CONTENT_TYPE);
    let per_key = if grouped {
        // A count byte per lookup of at least one key.
        api::KEY_LIST_KEY_BYTES as u64 + 1
    } else if binary {
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
    let bad_key = |e: api::KeyListError| AppError::bad_request("bad_key", e.to_string());
    let lookups: Vec<Vec<KeyDigest>> = if grouped {
        api::decode_lookups(&bytes).map_err(bad_key)?
    } else if binary {
        let keys = api::decode_key_list(&bytes).map_err(bad_key)?;
        keys.into_iter().map(|k| vec![k]).collect()
    } else {
        let request = serde_json::from_slice::<BatchGetRequest>(&bytes).map_err(|e| {
            AppError::bad_request(
                "bad_json",
                format!(
                    "{e}; send {{\"keys\": [\"<64 hex digits>\", …]}} (or \"lookups\": \
                     [[\"<64 hex digits>\", …], …] for the alternative keys of each file) \
                     with Content-Type: application/json, or the keys as {} (32 bytes each)",
                    api::KEY_LIST_CONTENT_TYPE
                ),
            )
        })?;
        // A body that names neither (`{}`, `[]`, a misspelt `"kyes"`) is not a request for
        // nothing: it is a mistake to be told about.
        let named = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
            .is_ok_and(|m| m.contains_key("keys") || m.contains_key("lookups"));
        if !named {
            return Err(AppError::bad_request(
                "bad_json",
                "the request names no keys: send {\"keys\": [\"<64 hex digits>\", …]} or \
                 {\"lookups\": [[\"<64 hex digits>\", …], …]}",
            ));
        }
        if request.lookups.iter().any(Vec::is_empty) {
            return Err(AppError::bad_request(
                "bad_json",
                "a lookup of no key: each of \"lookups\" holds at least one key",
            ));
        }
        let keys = request.keys.into_iter().map(|k| vec![k]);
        keys.chain(request.lookups).collect()
    };
    let asked: usize = lookups.iter().map(Vec::len).sum();
    if asked as u64 > max_keys {
        return Err(AppError::PayloadTooLarge(format!(
            "{asked} keys asked for; the server answers at most {max_keys} per batch: split the request"
        )));
    }
    Ok(lookups)
}

/// The lookups of one batch get, counted as their keys are looked up: a lookup is counted
/// once the last of its keys was, a hit when any of them was found.
struct Tally {
    /// Each lookup's keys (their places in the answer's key list), in request order.
    lookups: Vec<Vec<u32>>,
    /// The first lookup not counted yet; those before it are.
    counted: usize,
    /// The interpreter of the entry found, by the key's place.
    found: std::collections::HashMap<u32, InterpreterLabel>,
    /// The namespace looked in first.
    namespace: String,
    /// The interpreter the request names, for misses.
    asked_for: InterpreterLabel,
}

impl Tally {
    /// The keys to look up, each once in request order, and the tally of `lookups`.
    fn new(
        lookups: Vec<Vec<KeyDigest>>,
        namespace: &str,
        asked_for: InterpreterLabel,
    ) -> (Vec<KeyDigest>, Tally) {
        let mut keys = Vec::new();
        let mut place = std::collections::HashMap::new();
        let lookups = lookups
            .into_iter()
            .map(|lookup| {
                let mut places: Vec<u32> = lookup
                    .into_iter()
                    .map(|key| {
                        *place.entry(key).or_insert_with(|| {
                            keys.push(key);
                            (keys.len() - 1) as u32
                        })
                    })
                    .collect();
                places.sort_unstable();
                places.dedup();
                places
            })
            .collect();
        let tally = Tally {
            lookups,
            counted: 0,
            found: std::collections::HashMap::new(),
            namespace: namespace.to_owned(),
            asked_for,
        };
        (keys, tally)
    }

    /// Notes the entries found (`frames`) among `keys`, the chunk of the answer's key list
    /// that starts at place `start`.
    fn found(&mut self, start: usize, keys: &[KeyDigest], frames: &[Found]) {
        if frames.is_empty() {
            return;
        }
        let at_of: std::collections::HashMap<&KeyDigest, usize> =
            keys.iter().enumerate().map(|(at, k)| (k, at)).collect();
        for frame in frames {
            if let Some(&at) = at_of.get(&frame.frame.key.digest()) {
                self.found.insert(
                    (start + at) as u32,
                    InterpreterLabel::of_key(&frame.frame.key),
                );
            }
        }
    }

    /// Counts, in `metrics`, each lookup whose keys all lie before `through` and that is not
    /// counted yet, in request order (stopping at the first still waiting for a key).
    fn count_through(&mut self, through: usize, metrics: &Metrics) {
        let mut counts: std::collections::BTreeMap<&InterpreterLabel, (u64, u64)> =
            std::collections::BTreeMap::new();
        while let Some(lookup) = self.lookups.get(self.counted) {
            if lookup.last().is_some_and(|&last| last as usize >= through) {
                break;
            }
            match lookup.iter().find_map(|place| self.found.get(place)) {
                Some(interpreter) => counts.entry(interpreter).or_default().0 += 1,
                None => counts.entry(&self.asked_for).or_default().1 += 1,
            }
            self.counted += 1;
        }
        for (interpreter, (hits, misses)) in counts {
            metrics.count_lookups(&self.namespace, interpreter, hits, misses);
        }
    }
}

/// An entry found, ready to send: its frame, and whether its entry bytes are the body as
/// stored, one zstd frame (for a zstd answer only).
struct Found {
    frame: Frame,
    zstd: bool,
    /// Length of the entry (decompressed).
    entry_size: usize,
}

/// Looks up one chunk of keys in `namespaces` (first hit wins), in request order, and counts
/// the bytes (the [`Tally`] counts lookups). For a zstd answer bodies come as stored.
async fn lookup(
    state: &AppState,
    namespaces: &[String],
    keys: &[KeyDigest],
    zstd: bool,
) -> Result<Vec<Found>, AppError> {
    let rows = if zstd {
        state.store.get_stored(namespaces, keys).await?
    } else {
        state.store.get_many(namespaces, keys).await?
    };
    let mut by_key: std::collections::HashMap<KeyDigest, FoundEntry> = rows
        .into_iter()
        .map(|e| (e.stored.key.digest(), e))
        .collect();
    let found: Vec<FoundEntry> = keys.iter().filter_map(|k| by_key.remove(k)).collect();
    state.usage.record(
        found
            .iter()
            .map(|e| (e.namespace.as_str(), e.stored.key.digest())),
    );
    let bytes: u64 = found.iter().map(|e| e.entry_size).sum();
    Metrics::add(&state.metrics.bytes_out, bytes);
    Ok(found
        .into_iter()
        .filter_map(|e| {
            // The head announces the entry's real length: the bytes sent for a body stored
            // plain, the length its frame records for one stored compressed.
            let entry_size = if e.stored_zstd {
                match crate::store::body::frame_content_size(&e.stored.entry_bytes) {
                    Ok(size) => size as usize,
                    Err(err) => {
                        tracing::error!(body = %e.stored.digest, error = %err, "a stored body is damaged; served as a miss");
                        return None;
                    }
                }
            } else {
                e.stored.entry_bytes.len()
            };
            Some((e, entry_size))
        })
        .map(|(e, entry_size)| Found {
            zstd: e.stored_zstd,
            entry_size,
            frame: Frame {
                key: e.stored.key,
                entry_bytes: e.stored.entry_bytes,
                digest: e.frame_digest,
                signatures: e.signatures,
            },
        })
        .collect())
}

/// Entries at least this large are sent as they came from the store, not copied into the
/// chunk's buffer.
const SEND_AS_IS_BYTES: usize = 64 << 10;

/// `lead` (the pack's magic, or nothing) and the frames as they sit inside a pack, as pieces
/// to send in order. A plain answer copies small frames together and sends the entry bytes of
/// large ones as they are. A zstd answer is a sequence of zstd frames: each body as stored
/// (its own zstd frame), and everything else, heads, tails and bodies stored plain, in raw
/// frames, so the server compresses nothing per request. The frame layout is proto's
/// ([`Frame::write_head`], [`Frame::write_tail`]).
fn pieces(lead: &[u8], frames: Vec<Found>, zstd: bool) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    let mut buf = lead.to_vec();
    let flush = |buf: &mut Vec<u8>, pieces: &mut Vec<Bytes>| {
        if !buf.is_empty() {
            let bytes = std::mem::take(buf);
            pieces.push(Bytes::from(if zstd {
                raw_zstd_frame(&bytes)
            } else {
                bytes
            }));
        }
    };
    for Found {
        mut frame,
        zstd: stored_zstd,
        entry_size,
    } in frames
    {
        frame.write_head_of_length(entry_size, &mut buf);
        let entry = std::mem::take(&mut frame.entry_bytes);
        // A stored frame goes out as it is (a zstd answer); so does a large entry of a plain
        // one (no copy into the chunk).
        let as_is = if zstd {
            stored_zstd
        } else {
            entry.len() >= SEND_AS_IS_BYTES
        };
        if as_is {
            flush(&mut buf, &mut pieces);
            pieces.push(Bytes::from(entry));
        } else {
            buf.extend_from_slice(&entry);
        }
        frame.write_tail(&mut buf);
    }
    flush(&mut buf, &mut pieces);
    pieces
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
