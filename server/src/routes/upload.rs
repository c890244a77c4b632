//! Reading and checking uploaded packs, shared by batch put and single-entry put.
//!
//! The whole body is decoded and checked before anything is stored: a malformed, truncated or
//! oversized pack, or a frame whose bytes do not hash to its digest, refuses the request and
//! stores nothing. Entries that arrive intact but are not acceptable (not a code object, bad
//! encoding) are refused one by one. Accepted entries go to a [`Spool`] file as they are
//! checked: an upload's bytes are never held in memory whole.

use axum::body::Body;
use axum::http::{header::CONTENT_LENGTH, HeaderMap};
use futures::StreamExt;
use pycache_proto::api::RefusedEntry;
use pycache_proto::pack::{Frame, FrameError, PackDecoder, PackError};

use super::content_encoding::BodyDecoder;
use crate::config::Config;
use crate::error::AppError;
use crate::spool::Spool;

/// A decoded upload: the entries to store and those refused.
#[derive(Debug)]
pub struct Upload {
    /// Entries that passed every check, spooled to disk.
    pub accepted: Spool,
    /// Entries refused, with the reason.
    pub refused: Vec<RefusedEntry>,
}

/// Streams `body` through its content decoding and the pack decoder, enforcing the request,
/// compression-ratio and entry limits and the body timeout.
pub async fn read_upload(
    headers: &HeaderMap,
    body: Body,
    config: &Config,
) -> Result<Upload, AppError> {
    tokio::time::timeout(config.body_timeout, decode_upload(headers, body, config))
        .await
        .map_err(|_| AppError::body_timeout(config.body_timeout))?
}

async fn decode_upload(
    headers: &HeaderMap,
    body: Body,
    config: &Config,
) -> Result<Upload, AppError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|&len| len > config.max_request_bytes) {
        return Err(AppError::request_too_large(len, config.max_request_bytes));
    }
    let mut body_decoder = BodyDecoder::for_request(headers, config)?;
    let mut decoder = PackDecoder::new(config.max_entry_bytes as usize);
    let mut upload = Upload {
        accepted: Spool::new(&config.spool_dir)?,
        refused: Vec::new(),
    };
    let mut received: u64 = 0;
    let mut frames: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            AppError::bad_request(
                "bad_body",
                format!("the request body could not be read: {e}"),
            )
        })?;
        received += chunk.len() as u64;
        if received > config.max_request_bytes {
            return Err(AppError::request_too_large(
                received,
                config.max_request_bytes,
            ));
        }
        body_decoder.decode(&chunk, |plain| {
            decoder.feed(plain);
            while let Some(frame) = decoder.next_frame().map_err(pack_error)? {
                frames += 1;
                if frames > config.max_batch_keys {
                    return Err(AppError::PayloadTooLarge(format!(
                        "the upload holds more than {} frames; send at most {} entries per \
                         batch put (the server advertises the limit as max_batch_keys in \
                         /api/v1/info); nothing was stored",
                        config.max_batch_keys, config.max_batch_keys
                    )));
                }
                accept(frame, &mut upload)?;
            }
            Ok(())
        })?;
    }
    body_decoder.finish()?;
    decoder.finish().map_err(pack_error)?;
    Ok(upload)
}

/// Checks one frame: a digest mismatch refuses the whole request, an unusable entry only itself.
fn accept(frame: Frame, upload: &mut Upload) -> Result<(), AppError> {
    let key = frame.key_digest();
    match frame.verify() {
        Ok(entry) => {
            let invalid = match frame.key.check_fields() {
                Err(field) => Some(format!(
                    "entry {key}: its key is not one an interpreter makes: {field}"
                )),
                Ok(()) => check_body(&frame.key, &entry).err().map(|why| {
                    format!(
                        "entry {key}: its body is not one whole marshalled code object for {}: {why}",
                        frame.key.cache_tag
                    )
                }),
            };
            if let Some(reason) = invalid {
                upload.refused.push(RefusedEntry {
                    key,
                    code: pycache_proto::api::REFUSED_INVALID.to_owned(),
                    reason,
                });
                return Ok(());
            }
            upload.accepted.push(frame, entry.is_success())?;
            Ok(())
        }
        Err(FrameError::DigestMismatch) => Err(AppError::unprocessable(
            "digest_mismatch",
            format!(
                "entry {key}: its bytes and key do not hash to the frame digest sent with \
                 them; the upload was damaged, nothing was stored"
            ),
        )),
        Err(FrameError::Entry(err)) => {
            upload.refused.push(RefusedEntry {
                key,
                code: pycache_proto::api::REFUSED_INVALID.to_owned(),
                reason: err.to_string(),
            });
            Ok(())
        }
    }
}

/// Checks that a success body parses completely as one marshalled code object of the key's
/// interpreter (CPython 3.8–3.15, known from the cache tag); bodies of other implementations
/// have passed the entry decoder's check of their first byte. A failed compile has no body.
fn check_body(key: &pycache_proto::CacheKey, entry: &pycache_proto::Entry) -> Result<(), String> {
    let pycache_proto::Outcome::Compiled { body } = &entry.outcome else {
        return Ok(());
    };
    let Some(format) = cpython_format(&key.cache_tag) else {
        return Ok(());
    };
    pyc::check_code_body(body, format).map_err(|e| e.to_string())
}

/// The marshal format of a CPython cache tag (`cpython-311` → 3.11).
fn cpython_format(cache_tag: &str) -> Option<pyc::Format> {
    let digits = cache_tag.strip_prefix("cpython-3")?;
    let minor: u32 = digits.parse().ok()?;
    pyc::Format::for_python(3, minor)
}

fn pack_error(err: PackError) -> AppError {
    match err {
        PackError::TooLarge { .. } => {
            AppError::PayloadTooLarge(format!("{err}; nothing was stored"))
        }
        other => AppError::bad_request("bad_pack", format!("{other}; nothing was stored")),
    }
}
