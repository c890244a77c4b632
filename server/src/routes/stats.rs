//! `GET /api/v1/stats`: entries, bytes, hits and misses, per interpreter.

use axum::extract::State;
use pycache_proto::api::{InterpreterStats, Scope, StatsResponse};

use super::Json;
use crate::auth::Caller;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Needs read access.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "server",
    responses(
        (status = 200, body = StatsResponse),
        (status = 401, body = pycache_proto::ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<StatsResponse>, AppError> {
    caller.require(Scope::Read, state.config.public_read)?;
    let crate::store::Totals { entries, bytes, .. } = state.store.totals().await?;
    let interpreters = state
        .store
        .usage_by_interpreter()
        .await?
        .into_iter()
        .map(|u| InterpreterStats {
            cache_tag: u.cache_tag,
            magic: hex::encode(u.magic),
            entries: u.entries,
            bytes: u.bytes,
        })
        .collect();
    Ok(Json(StatsResponse {
        entries,
        bytes,
        hits: Metrics::get(&state.metrics.hits),
        misses: Metrics::get(&state.metrics.misses),
        interpreters,
    }))
}
