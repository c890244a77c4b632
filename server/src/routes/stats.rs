//! `GET /api/v1/stats`: entries and bytes per interpreter; lookups (hits, misses, hit rate) in
//! all, per interpreter and per namespace, counted by this process since it started.

use std::collections::BTreeMap;

use axum::extract::State;
use pycache_proto::api::{
    hit_rate, InterpreterLookups, InterpreterStats, NamespaceLookups, Scope, StatsResponse,
};

use super::Json;
use crate::auth::Caller;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Needs read access.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "server",
    responses(
        (status = 200, body = StatsResponse),
        (status = 401, body = pycache_proto::ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<StatsResponse>, AppError> {
    caller.require(Scope::Read, state.config.public_read)?;
    let crate::store::Totals { entries, bytes, .. } = state.store.totals().await?;
    let interpreters = state
        .store
        .usage_by_interpreter()
        .await?
        .into_iter()
        .map(|u| InterpreterStats {
            cache_tag: u.cache_tag,
            magic: hex::encode(u.magic),
            entries: u.entries,
            bytes: u.bytes,
        })
        .collect();
    let mut by_interpreter: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let mut by_namespace: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for count in state.metrics.lookup_counts() {
        for slot in [
            by_interpreter
                .entry((count.interpreter.cache_tag, count.interpreter.magic))
                .or_default(),
            by_namespace.entry(count.namespace).or_default(),
        ] {
            slot.0 += count.hits;
            slot.1 += count.misses;
        }
    }
    let (hits, misses) = (
        Metrics::get(&state.metrics.hits),
        Metrics::get(&state.metrics.misses),
    );
    Ok(Json(StatsResponse {
        entries,
        bytes,
        hits,
        misses,
        hit_rate: hit_rate(hits, misses),
        interpreters,
        lookups_by_interpreter: by_interpreter
            .into_iter()
            .map(|((cache_tag, magic), (hits, misses))| InterpreterLookups {
                cache_tag,
                magic,
                hits,
                misses,
                hit_rate: hit_rate(hits, misses),
            })
            .collect(),
        lookups_by_namespace: by_namespace
            .into_iter()
            .map(|(namespace, (hits, misses))| NamespaceLookups {
                namespace,
                hits,
                misses,
                hit_rate: hit_rate(hits, misses),
            })
            .collect(),
    }))
}
