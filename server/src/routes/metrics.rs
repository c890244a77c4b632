//! `GET /metrics`: Prometheus text. Open, like most exporters; it holds no entry data.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use crate::error::AppError;
use crate::state::AppState;

/// Counters since start plus the store's entry and byte totals.
#[utoipa::path(get, path = "/metrics", tag = "server", responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let (entries, bytes) = state.store.totals().await.map_err(AppError::Unavailable)?;
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(entries, bytes),
    ))
}
