//! `/healthz` (the process answers) and `/readyz` (the database answers too).

use std::time::Duration;

use axum::extract::State;

use crate::error::AppError;
use crate::state::AppState;
use crate::store::StoreError;

/// `/readyz` answers within this, so a load balancer's probe never hangs on a dead database.
const READY_WITHIN: Duration = Duration::from_millis(800);

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
    match tokio::time::timeout(READY_WITHIN, state.store.ping()).await {
        Ok(Ok(())) => Ok("ready\n"),
        Ok(Err(err)) => Err(AppError::Unavailable(err)),
        Err(_) => Err(AppError::Unavailable(StoreError::Database(
            sqlx::Error::PoolTimedOut,
        ))),
    }
}
