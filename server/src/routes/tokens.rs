//! `/api/v1/tokens`: token management over HTTP, admin scope only (the CLI does the same).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use pycache_proto::api::{
    Scope, TokenCreateRequest, TokenCreated, TokenListResponse, TokenSummary,
};
use pycache_proto::namespace::{NamespaceError, NamespacePattern};
use pycache_proto::ErrorResponse;
use serde::Deserialize;

use super::Json;
use crate::auth::{default_grants, new_token, token_hash, Caller};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::{unix_millis, NewToken, PurgeFilter, StoreError};

/// Patterns as the API shows them.
fn shown(patterns: &[NamespacePattern]) -> Vec<String> {
    patterns.iter().map(ToString::to_string).collect()
}

/// Patterns the API was sent; a bad one is a 400 naming it.
fn parsed(
    list: Option<Vec<String>>,
    field: &str,
) -> Result<Option<Vec<NamespacePattern>>, AppError> {
    list.map(|items| {
        items
            .iter()
            .map(|item| item.parse())
            .collect::<Result<Vec<_>, NamespaceError>>()
            .map_err(|e| AppError::bad_request("bad_namespace", format!("{field}: {e}")))
    })
    .transpose()
}

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
            writes: shown(&t.writes),
            reads: shown(&t.reads),
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
    crate::auth::validate_token_name(&request.name)
        .map_err(|e| AppError::bad_request("bad_name", e))?;
    let (default_writes, default_reads) = default_grants(request.scope);
    let grant = NewToken {
        name: request.name.clone(),
        scope: request.scope,
        writes: parsed(request.writes, "writes")?.unwrap_or(default_writes),
        reads: parsed(request.reads, "reads")?.unwrap_or(default_reads),
    };
    let token = new_token();
    let hash = token_hash(&token);
    match state.store.create_token(&hash, &grant, unix_millis()).await {
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
        writes: shown(&grant.writes),
        reads: shown(&grant.reads),
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// The query of a revoke.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct RevokeQuery {
    /// Also delete every entry the token wrote.
    #[serde(default)]
    pub purge: bool,
}

/// Revokes the token called `name`; with `?purge=true` also deletes what it wrote.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{name}",
    tag = "tokens",
    params(("name" = String, Path), RevokeQuery),
    responses((status = 204), (status = 401, body = ErrorResponse),
              (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<RevokeQuery>,
) -> Result<StatusCode, AppError> {
    caller.require(Scope::Admin, state.config.public_read)?;
    if !state.store.revoke_token(&name, unix_millis()).await? {
        return Err(AppError::NotFound(format!("no valid token named {name:?}")));
    }
    tracing::info!(name = %name, by = %caller.who(), "token revoked");
    if query.purge {
        let filter = PurgeFilter {
            written_by: Some(name),
            ..PurgeFilter::default()
        };
        super::purge::run_purge(&state, &caller, &filter).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
