//! Writes only to storage that keeps them: every write route (uploads, token changes, purges)
//! first asks the store whether its storage can take writes ([`StorageWatch`]) and is refused
//! with a JSON 503 or 507 naming the database file when it cannot; nothing is acknowledged that
//! would be lost.
//!
//! [`StorageWatch`]: crate::store::StorageWatch

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::state::AppState;

/// Middleware for write routes: refuses the request when the database file is gone, replaced
/// or read-only, before it runs and again after it (the file may have gone meanwhile: then what
/// the request wrote went with it, and its caller must not be told it was stored).
pub async fn require_writable_storage(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(problem) = state.store.storage_problem() {
        return AppError::StorageRefused(problem).into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    if status.is_success() || status.is_server_error() {
        if let Some(problem) = state.store.storage_problem() {
            return AppError::StorageRefused(problem).into_response();
        }
    }
    response
}
