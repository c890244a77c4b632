//! `/api/v1/tokens`: token management over HTTP, admin scope only (the CLI does the same).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use pycache_proto::api::{
    Scope, TokenCreateRequest, TokenCreated, TokenListResponse, TokenSummary,
};
use pycache_proto::ErrorResponse;

use super::Json;
use crate::auth::{new_token, token_hash, Caller};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::{unix_millis, StoreError};

/// Every token (names, scopes, times; never the token text).
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    responses((status = 200, body = TokenListResponse), (status = 401, body = ErrorResponse),
              (status = 403, body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TokenListResponse>, AppError> {
    caller.require(Scope::Admin, state.config.public_read)?;
    let tokens = state
        .store
        .list_tokens()
        .await?
        .into_iter()
        .map(|t| TokenSummary {
            name: t.name,
            scope: t.scope,
            created_at: t.created_at,
            revoked_at: t.revoked_at,
            writes: Vec::new(),
            reads: Vec::new(),
        })
        .collect();
    Ok(Json(TokenListResponse { tokens }))
}

/// Creates a token; the answer is the only place its text appears.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body = TokenCreateRequest,
    responses((status = 201, body = TokenCreated), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
              (status = 409, body = ErrorResponse, description = "The name is taken")),
    security(("bearer" = []))
)]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<TokenCreateRequest>,
) -> Result<(StatusCode, Json<TokenCreated>), AppError> {
    caller.require(Scope::Admin, state.config.public_read)?;
    if request.name.trim().is_empty() {
        return Err(AppError::bad_request(
            "bad_name",
            "a token needs a non-empty name",
        ));
    }
    let token = new_token();
    let hash = token_hash(&token);
    match state
        .store
        .create_token(&hash, &request.name, request.scope, unix_millis())
        .await
    {
        Ok(()) => {}
        Err(err @ StoreError::DuplicateTokenName(_)) => {
            return Err(AppError::Conflict(format!("{err}: pick another name")))
        }
        Err(err) => return Err(err.into()),
    }
    tracing::info!(name = %request.name, scope = request.scope.as_str(), "token created");
    let created = TokenCreated {
        name: request.name,
        scope: request.scope,
        token,
        writes: Vec::new(),
        reads: Vec::new(),
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revokes the token called `name`.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{name}",
    tag = "tokens",
    params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorResponse),
              (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require(Scope::Admin, state.config.public_read)?;
    if !state.store.revoke_token(&name, unix_millis()).await? {
        return Err(AppError::NotFound(format!("no valid token named {name:?}")));
    }
    tracing::info!(name = %name, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
