//! `GET /api/v1/openapi.json`: the OpenAPI document, generated from the handlers' and proto's
//! types so it cannot drift from them.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use pycache_proto::api::{
    BatchGetRequest, BatchPutResponse, InterpreterLookups, InterpreterStats, NamespaceLookups,
    PurgeRequest, PurgeResponse, RefusedEntry, Scope, ServerInfo, StatsResponse,
    TokenCreateRequest, TokenCreated, TokenListResponse, TokenSummary,
};
use pycache_proto::ErrorResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's root.
#[derive(OpenApi)]
#[openapi(
    info(title = "pycache-server", description = "Shared cache of Python bytecode, API v1"),
    paths(
        super::batch_get::batch_get,
        super::batch_put::batch_put,
        super::entry::get_entry,
        super::entry::put_entry,
        super::info::info,
        super::stats::stats,
        super::health::healthz,
        super::health::readyz,
        super::metrics::metrics,
        super::tokens::list_tokens,
        super::tokens::create_token,
        super::tokens::revoke_token,
        super::purge::purge,
        openapi_json,
    ),
    components(schemas(
        BatchGetRequest, BatchPutResponse, RefusedEntry, Scope, ServerInfo, StatsResponse,
        InterpreterStats, InterpreterLookups, NamespaceLookups, ErrorResponse, TokenCreateRequest, TokenCreated, TokenSummary,
        TokenListResponse, PurgeRequest, PurgeResponse
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "server", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
pub async fn openapi_json() -> impl IntoResponse {
    let json = ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|_| "{}".to_owned());
    ([(CONTENT_TYPE, "application/json")], json)
}
