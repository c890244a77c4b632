//! `POST /api/v1/purge`: delete entries by writer, namespace, key and time (admin).

use axum::extract::State;
use pycache_proto::api::{PurgeRequest, PurgeResponse, Scope};
use pycache_proto::ErrorResponse;

use super::Json;
use crate::auth::Caller;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::PurgeFilter;

/// Deletes the entries matching every condition given (at least one), and the bodies no entry
/// holds any more.
#[utoipa::path(
    post,
    path = "/api/v1/purge",
    tag = "entries",
    request_body = PurgeRequest,
    responses((status = 200, body = PurgeResponse), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn purge(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<PurgeRequest>,
) -> Result<Json<PurgeResponse>, AppError> {
    caller.require(Scope::Admin, state.config.public_read)?;
    if let Some(namespace) = &request.namespace {
        pycache_proto::namespace::validate_namespace(namespace)
            .map_err(|e| AppError::bad_request("bad_namespace", e.to_string()))?;
    }
    let filter = PurgeFilter {
        written_by: request.written_by,
        namespace: request.namespace,
        key: request.key,
        since: request.since,
    };
    if filter.is_empty() {
        return Err(AppError::bad_request(
            "empty_purge",
            "name at least one of written_by, namespace, key, since",
        ));
    }
    Ok(Json(run_purge(&state, &caller, &filter).await?))
}

/// Runs a purge, counts and logs it.
pub async fn run_purge(
    state: &AppState,
    caller: &Caller,
    filter: &PurgeFilter,
) -> Result<PurgeResponse, AppError> {
    let purged = state.store.purge(filter).await?;
    Metrics::add(&state.metrics.purged_entries, purged.entries);
    if purged.entries > 0 {
        state
            .reclaim_due
            .store(true, std::sync::atomic::Ordering::Release);
    }
    tracing::warn!(
        by = %caller.who(),
        written_by = filter.written_by.as_deref().unwrap_or("-"),
        namespace = filter.namespace.as_deref().unwrap_or("-"),
        key = %filter.key.map_or("-".to_owned(), |k| k.to_string()),
        since = filter.since.unwrap_or(0),
        entries = purged.entries,
        bytes = purged.bytes,
        "entries purged"
    );
    Ok(PurgeResponse {
        entries: purged.entries,
        bytes: purged.bytes,
    })
}
