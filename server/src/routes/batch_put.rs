//! `POST /api/v1/batch/put`: store a pack of entries (spooled to disk while it arrives, read
//! back entry by entry while it is stored, committed in bounded transactions).

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use pycache_proto::api::{
    BatchPutResponse, RefusedEntry, Scope, REFUSED_CONFLICT, REFUSED_UNAVAILABLE,
};
use pycache_proto::ErrorResponse;

use super::upload::{read_upload, Upload};
use super::Json;
use crate::auth::Caller;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::unix_millis;

/// Stores a batch in the caller's write namespace; answers which keys were stored and which
/// refused, and why (a key the namespace holds with other bytes is a `conflict`: entries never
/// change once stored).
#[utoipa::path(
    post,
    path = "/api/v1/batch/put",
    tag = "entries",
    request_body(content = Vec<u8>, content_type = "application/x-pycache-pack",
        description = "A pack of frames (see pycache_proto::pack); may be zstd-compressed \
                       with Content-Encoding: zstd"),
    responses(
        (status = 200, body = BatchPutResponse, description = "What was stored and refused"),
        (status = 400, body = ErrorResponse, description = "Malformed or truncated pack; nothing stored"),
        (status = 401, body = ErrorResponse),
        (status = 403, body = ErrorResponse, description = "No write scope, or a namespace the token may not write"),
        (status = 413, body = ErrorResponse, description = "An entry, the body or its number of frames is over a limit"),
        (status = 422, body = ErrorResponse, description = "A digest does not match; nothing stored"),
        (status = 503, body = ErrorResponse, description = "Busy (every slot taken, or this token's share; Retry-After), the database unreachable, or its file gone; nothing stored"),
        (status = 507, body = ErrorResponse, description = "The database or the spool directory cannot be written (read-only or full); nothing stored"),
    ),
    security(("bearer" = []))
)]
pub async fn batch_put(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchPutResponse>, AppError> {
    caller.require(Scope::Write, state.config.public_read)?;
    let namespace = caller.write_namespace()?;
    // The body is spooled to disk before a slot is taken: a slow sender holds no slot.
    let upload = read_upload(&headers, body, &state.config).await?;
    let _slot = state.heavy_slot(caller.name.as_deref()).await?;
    let (response, _) = store_upload(&state, &caller, namespace, upload).await?;
    Ok(Json(response))
}

/// Stores the accepted entries of an upload in `namespace` (in transactions of a bounded size;
/// a store failure after the first commit answers the rest as unavailable), recording the
/// caller as their writer, and counts them; also returns how many were new.
pub async fn store_upload(
    state: &AppState,
    caller: &Caller,
    namespace: String,
    upload: Upload,
) -> Result<(BatchPutResponse, u64), AppError> {
    let Upload {
        accepted,
        mut refused,
    } = upload;
    let (count, bytes) = (accepted.len(), accepted.bytes());
    let mut stored: Vec<_> = accepted.keys().collect();
    let outcome = if accepted.is_empty() {
        crate::store::PutOutcome::default()
    } else {
        // Rows take room beside the bodies: the measured ratio scales both.
        let rows = count as u64 * 512;
        crate::maintenance::make_room(state, bytes + rows).await?;
        let mut source = accepted.into_source()?;
        state
            .store
            .put_from(
                &namespace,
                caller.name.as_deref(),
                &mut source,
                unix_millis(),
            )
            .await?
    };
    let inserted = outcome.inserted;
    if let Some(failure) = &outcome.failure {
        tracing::warn!(
            writer = caller.name.as_deref().unwrap_or("-"),
            namespace = %namespace,
            unstored = outcome.unstored.len(),
            error = %failure,
            "the store failed part way through a large upload: the entries committed before \
             stay stored, the rest are answered as unavailable"
        );
        let unstored: std::collections::HashSet<_> = outcome.unstored.iter().collect();
        stored.retain(|k| !unstored.contains(k));
        refused.extend(outcome.unstored.iter().map(|key| RefusedEntry {
            key: *key,
            code: REFUSED_UNAVAILABLE.to_owned(),
            reason: format!(
                "the store failed before this entry was committed ({failure}); upload it again"
            ),
        }));
    }
    if outcome.repaired > 0 {
        tracing::warn!(
            repaired = outcome.repaired,
            namespace = %namespace,
            "stored bodies were damaged (their bytes no longer matched their digest) and were \
             rewritten from an upload; check the database's storage"
        );
    }
    if let Some(first) = outcome.conflicts.first() {
        tracing::warn!(
            writer = caller.name.as_deref().unwrap_or("-"),
            namespace = %namespace,
            conflicts = outcome.conflicts.len(),
            first_key = %first,
            "upload refused: the namespace holds other bytes for these keys (entries never \
             change once stored; nondeterministic compiles or an attempt to replace entries)"
        );
        let conflicted: std::collections::HashSet<_> = outcome.conflicts.iter().collect();
        stored.retain(|k| !conflicted.contains(k));
        refused.extend(outcome.conflicts.iter().map(|key| RefusedEntry {
            key: *key,
            code: REFUSED_CONFLICT.to_owned(),
            reason: format!(
                "the namespace {namespace:?} holds other bytes for this key; entries never \
                 change once stored"
            ),
        }));
    }
    let metrics = &state.metrics;
    Metrics::add(&metrics.stored, inserted);
    Metrics::add(&metrics.bytes_in, bytes);
    Metrics::add(&metrics.refused, refused.len() as u64);
    Metrics::add(&metrics.conflicts, outcome.conflicts.len() as u64);
    tracing::debug!(
        accepted = count,
        inserted,
        refused = refused.len(),
        namespace = %namespace,
        "batch stored"
    );
    Ok((
        BatchPutResponse {
            namespace,
            stored,
            refused,
        },
        inserted,
    ))
}
