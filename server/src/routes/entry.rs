//! `GET | HEAD | PUT /api/v1/entries/{key}`: one entry, for tools and curl.
//!
//! `GET` answers the encoded entry (`Entry::encode`, `application/x-pycache-entry`) with its
//! blake3 digest in `x-pycache-entry-digest` and as the `ETag`. `PUT` takes a pack holding exactly
//! one frame whose key digest is `{key}` (the key parts are needed for the store's columns).
//! Namespaces work as in the batch endpoints: `GET`/`HEAD` look in the caller's read order and
//! say where the entry was found and who wrote it; `PUT` stores in its write namespace.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pycache_proto::api::{
    BatchPutResponse, Scope, ENTRY_CONTENT_TYPE, ENTRY_DIGEST_HEADER, ENTRY_NAMESPACE_HEADER,
    ENTRY_WRITER_HEADER,
};
use pycache_proto::ErrorResponse;

use super::batch_put::store_upload;
use super::upload::read_upload;
use super::{parse_key, Json};
use crate::auth::Caller;
use crate::error::AppError;
use crate::metrics::{InterpreterLabel, Metrics};
use crate::state::AppState;
use crate::store::FoundEntry;

/// Looks up one entry in the caller's namespaces, counting the miss when it is absent (under
/// the interpreter the request names); with the namespace looked in first.
async fn find(
    state: &AppState,
    caller: Caller,
    raw_key: &str,
    headers: &HeaderMap,
) -> Result<(FoundEntry, String), AppError> {
    caller.require(Scope::Read, state.config.public_read)?;
    let namespaces = caller.read_order()?;
    let first = namespaces
        .first()
        .cloned()
        .unwrap_or_else(|| "none".to_owned());
    let key = parse_key(raw_key)?;
    match state.store.get_many(&namespaces, &[key]).await?.pop() {
        Some(found) => Ok((found, first)),
        None => {
            let interpreter =
                InterpreterLabel::from_header(headers).unwrap_or_else(InterpreterLabel::unknown);
            state.metrics.count_lookups(&first, &interpreter, 0, 1);
            Err(AppError::NotFound(format!("no entry for key {key}")))
        }
    }
}

fn entry_headers(found: &FoundEntry) -> HeaderMap {
    let digest = found.stored.digest.to_hex();
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(ENTRY_CONTENT_TYPE));
    headers.insert(
        CONTENT_LENGTH,
        HeaderValue::from(found.stored.entry_bytes.len()),
    );
    if let Ok(value) = HeaderValue::from_str(&found.namespace) {
        headers.insert(ENTRY_NAMESPACE_HEADER, value);
    }
    if let Some(Ok(value)) = found.written_by.as_deref().map(HeaderValue::from_str) {
        headers.insert(ENTRY_WRITER_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&digest) {
        headers.insert(ENTRY_DIGEST_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        headers.insert(ETAG, value);
    }
    headers
}

/// The encoded entry.
#[utoipa::path(
    get,
    path = "/api/v1/entries/{key}",
    tag = "entries",
    params(("key" = String, Path, description = "Key digest, 64 hex digits")),
    responses(
        (status = 200, content_type = "application/x-pycache-entry", body = Vec<u8>,
         description = "Entry::encode bytes; x-pycache-entry-digest holds their blake3"),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn get_entry(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (found, first) = find(&state, caller, &raw_key, &headers).await?;
    state
        .usage
        .record([(found.namespace.as_str(), found.stored.key.digest())]);
    let interpreter = InterpreterLabel::of_key(&found.stored.key);
    state.metrics.count_lookups(&first, &interpreter, 1, 0);
    Metrics::add(
        &state.metrics.bytes_out,
        found.stored.entry_bytes.len() as u64,
    );
    let headers = entry_headers(&found);
    Ok((headers, found.stored.entry_bytes).into_response())
}

/// Whether the entry exists (headers only; not counted as a use).
pub async fn head_entry(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (found, _) = find(&state, caller, &raw_key, &headers).await?;
    Ok((entry_headers(&found), Body::empty()).into_response())
}

/// Stores one entry sent as a one-frame pack.
#[utoipa::path(
    put,
    path = "/api/v1/entries/{key}",
    tag = "entries",
    params(("key" = String, Path, description = "Key digest, 64 hex digits")),
    request_body(content = Vec<u8>, content_type = "application/x-pycache-pack",
        description = "A pack of exactly one frame whose key digest is {key}"),
    responses(
        (status = 201, body = BatchPutResponse, description = "Stored"),
        (status = 200, body = BatchPutResponse, description = "The same bytes were already stored"),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 403, body = ErrorResponse), (status = 413, body = ErrorResponse),
        (status = 409, body = ErrorResponse, description = "The namespace holds other bytes for the key; entries never change"),
        (status = 422, body = ErrorResponse, description = "Bad digest or not a code object"),
        (status = 503, body = ErrorResponse, description = "Busy, the database unreachable, or its file gone; nothing stored"),
        (status = 507, body = ErrorResponse, description = "The database or the spool directory cannot be written; nothing stored"),
    ),
    security(("bearer" = []))
)]
pub async fn put_entry(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<BatchPutResponse>), AppError> {
    caller.require(Scope::Write, state.config.public_read)?;
    let namespace = caller.write_namespace()?;
    let key = parse_key(&raw_key)?;
    let upload = read_upload(&headers, body, &state.config).await?;
    let _slot = state.heavy_slot(caller.name.as_deref()).await?;
    let keys: Vec<_> = upload
        .accepted
        .keys()
        .chain(upload.refused.iter().map(|r| r.key))
        .collect();
    if keys != [key] {
        return Err(AppError::bad_request(
            "key_mismatch",
            format!("the body must be a pack of exactly one frame whose key digest is {key}"),
        ));
    }
    if let Some(refused) = upload.refused.first() {
        return Err(AppError::unprocessable(
            "invalid_entry",
            refused.reason.clone(),
        ));
    }
    let (response, inserted) = store_upload(&state, &caller, namespace, upload).await?;
    if let Some(conflict) = response.refused.first() {
        return Err(AppError::Conflict(conflict.reason.clone()));
    }
    let status = if inserted > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response)))
}
