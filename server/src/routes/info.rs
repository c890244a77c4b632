//! `GET /api/v1/info`: limits and the caller's scope, so clients can size their batches.

use axum::extract::State;
use pycache_proto::api::ServerInfo;

use super::Json;
use crate::auth::Caller;
use crate::state::AppState;

/// Open to everyone; a token, if sent, must be valid (its scope is reported).
#[utoipa::path(
    get,
    path = "/api/v1/info",
    tag = "server",
    responses(
        (status = 200, body = ServerInfo),
        (status = 401, body = pycache_proto::ErrorResponse, description = "Unknown or revoked token"),
    ),
    security((), ("bearer" = []))
)]
pub async fn info(State(state): State<AppState>, caller: Caller) -> Json<ServerInfo> {
    let config = &state.config;
    Json(ServerInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        max_entry_bytes: config.max_entry_bytes,
        max_request_bytes: config.max_request_bytes,
        max_batch_keys: config.max_batch_keys,
        scope: caller.scope,
        public_read: config.public_read,
        namespace: caller
            .scope
            .filter(|s| *s >= pycache_proto::api::Scope::Write)
            .map(|_| pycache_proto::namespace::DEFAULT_NAMESPACE.to_owned()),
        reads: vec![pycache_proto::namespace::DEFAULT_NAMESPACE.to_owned()],
    })
}
