//! `/healthz` (the process answers) and `/readyz` (the database answers too).

use axum::extract::State;

use crate::error::AppError;
use crate::state::AppState;

/// Liveness: always `ok` while the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "server", responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: 503 when the database does not answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "server",
    responses(
        (status = 200, body = String),
        (status = 503, body = pycache_proto::ErrorResponse, description = "Database unreachable"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, AppError> {
    state.store.ping().await.map_err(AppError::Unavailable)?;
    Ok("ready\n")
}
