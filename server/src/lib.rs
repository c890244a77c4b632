//! `pycache-server`: the shared cache of Python bytecode.
//!
//! [`app`] builds the router over an [`AppState`]; [`serve`] runs it on a listener until a
//! shutdown signal, with the maintenance task (hit flushing and eviction) beside it. The binary
//! (`main.rs`) only parses the command line and calls into [`commands`].

pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connections;
pub mod error;
pub mod maintenance;
pub mod memory;
pub mod metrics;
pub mod routes;
pub mod slots;
pub mod spool;
pub mod state;
pub mod store;
pub mod usage;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use pycache_proto::api;
use tokio::net::TcpListener;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::trace::TraceLayer;

pub use config::Config;
pub use state::AppState;

/// The whole HTTP API over `state`.
pub fn app(state: AppState) -> Router {
    let body_limit = usize::try_from(state.config.max_request_bytes).unwrap_or(usize::MAX);
    let writes = || {
        axum::middleware::from_fn_with_state(
            state.clone(),
            routes::writable::require_writable_storage,
        )
    };
    Router::new()
        .route(
            api::BATCH_GET,
            // zstd's fastest level: bytecode packs compress almost as well as at the default
            // level, for less CPU and a smaller window per answer in flight.
            post(routes::batch_get::batch_get)
                .layer(CompressionLayer::new().quality(CompressionLevel::Fastest)),
        )
        .route(
            api::BATCH_PUT,
            post(routes::batch_put::batch_put).route_layer(writes()),
        )
        .route(
            api::ENTRY,
            get(routes::entry::get_entry)
                .head(routes::entry::head_entry)
                .merge(put(routes::entry::put_entry).route_layer(writes())),
        )
        .route(api::INFO, get(routes::info::info))
        .route(api::STATS, get(routes::stats::stats))
        .route(api::OPENAPI, get(routes::openapi::openapi_json))
        .route(api::HEALTHZ, get(routes::health::healthz))
        .route(api::READYZ, get(routes::health::readyz))
        .route(api::METRICS, get(routes::metrics::metrics))
        .route(
            api::TOKENS,
            get(routes::tokens::list_tokens)
                .merge(post(routes::tokens::create_token).route_layer(writes())),
        )
        .route(
            api::TOKEN,
            delete(routes::tokens::revoke_token).route_layer(writes()),
        )
        .route(api::PURGE, post(routes::purge::purge).route_layer(writes()))
        .fallback(routes::fallback::not_found)
        .method_not_allowed_fallback(routes::fallback::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::metrics::count_requests,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::host::allowed_host,
        ))
        .layer(axum::middleware::from_fn(routes::fallback::header_limits))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` resolves, letting in-flight requests finish;
/// then flushes pending hit counts and closes the store.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let maintenance = tokio::spawn(maintenance::run_maintenance(state.clone()));
    let result = connections::serve(
        listener,
        app(state.clone()),
        state.config.connections,
        state.config.tls.clone(),
        shutdown,
    )
    .await;
    maintenance.abort();
    if let Err(err) = maintenance::flush_usage(&state).await {
        tracing::warn!(error = %err, "could not flush hit counts at shutdown");
    }
    state.store.close().await;
    result
}
