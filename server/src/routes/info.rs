//! `GET /api/v1/info`: limits and the caller's scope, so clients can size their batches.

use axum::extract::State;
use pycache_proto::api::ServerInfo;

use super::Json;
use crate::auth::Caller;
use crate::state::AppState;

/// Open to everyone; a token, if sent, must be valid (its scope is reported). With a namespace
/// header, the answer says where this caller's uploads go and where its lookups look; a
/// namespace the caller may neither read nor write is a 403.
#[utoipa::path(
    get,
    path = "/api/v1/info",
    tag = "server",
    responses(
        (status = 200, body = ServerInfo),
        (status = 400, body = pycache_proto::ErrorResponse, description = "Malformed namespace"),
        (status = 401, body = pycache_proto::ErrorResponse, description = "Unknown or revoked token"),
        (status = 403, body = pycache_proto::ErrorResponse, description = "The token may not use the namespace"),
    ),
    security((), ("bearer" = []))
)]
pub async fn info(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ServerInfo>, crate::error::AppError> {
    let config = &state.config;
    let reads = caller.read_order()?;
    let namespace = caller
        .scope
        .filter(|s| *s >= pycache_proto::api::Scope::Write)
        .and_then(|_| caller.write_namespace().ok());
    Ok(Json(ServerInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        max_entry_bytes: config.max_entry_bytes,
        max_request_bytes: config.max_request_bytes,
        max_batch_keys: config.max_batch_keys,
        scope: caller.scope,
        public_read: config.public_read,
        namespace,
        reads,
        lookups: true,
    }))
}
