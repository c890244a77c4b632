//! `/healthz` (the process answers) and `/readyz` (the database answers and can take writes,
//! and a heavy-request slot is free).

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

/// Readiness: 503 when the database file is gone, replaced or read-only, when every
/// heavy-request slot is taken (`saturated`), or when the database does not answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "server",
    responses(
        (status = 200, body = String),
        (status = 503, body = pycache_proto::ErrorResponse,
         description = "Database unreachable, gone or read-only, or every slot taken"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, AppError> {
    if let Some(problem) = state.store.storage_problem() {
        return Err(AppError::NotReady(problem));
    }
    // Before the database is asked: when every slot is taken its connections may be too.
    if state.free_slots() == 0 {
        return Err(AppError::Saturated(format!(
            "saturated: free slots 0 of {} for batch requests (every one is in use); send \
             requests to another replica or try again shortly",
            state.total_slots()
        )));
    }
    match tokio::time::timeout(READY_WITHIN, state.store.ping()).await {
        Ok(Ok(())) => Ok("ready\n"),
        Ok(Err(err)) => Err(AppError::Unavailable(err)),
        Err(_) => Err(AppError::Unavailable(StoreError::Database(
            sqlx::Error::PoolTimedOut,
        ))),
    }
}
