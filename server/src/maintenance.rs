//! The background maintenance of the store: hit flushing and eviction.
//!
//! Reads only note their hits in memory ([`crate::usage::UsageLog`]); [`run_maintenance`] writes
//! them to the store in one transaction every `maintenance_interval`, and then evicts the
//! least-recently-used entries while the store is over `--max-size`. Shutdown flushes once more.

use std::sync::atomic::Ordering;

use crate::state::AppState;
use crate::store::{Evicted, StoreError};

/// Eviction frees down to this fraction of `--max-size`, so it does not run on every tick.
const LOW_WATERMARK_PERCENT: u64 = 90;

/// Writes pending hits to the store; on failure they are kept for the next flush.
pub async fn flush_usage(state: &AppState) -> Result<(), StoreError> {
    let usage = state.usage.take();
    if usage.is_empty() {
        return Ok(());
    }
    if let Err(err) = state.store.record_usage(&usage).await {
        state.usage.restore(usage);
        return Err(err);
    }
    Ok(())
}

/// One maintenance round: flush hits, then evict while over `--max-size`.
pub async fn maintain(state: &AppState) -> Result<Evicted, StoreError> {
    flush_usage(state).await?;
    let Some(limit) = state.config.max_store_bytes else {
        return Ok(Evicted::default());
    };
    let (_, bytes) = state.store.totals().await?;
    if bytes <= limit {
        return Ok(Evicted::default());
    }
    let target = limit / 100 * LOW_WATERMARK_PERCENT;
    let evicted = state.store.evict_lru(bytes - target).await?;
    let metrics = &state.metrics;
    metrics
        .evicted_entries
        .fetch_add(evicted.entries, Ordering::Relaxed);
    metrics
        .evicted_bytes
        .fetch_add(evicted.bytes, Ordering::Relaxed);
    tracing::info!(
        entries = evicted.entries,
        bytes = evicted.bytes,
        limit,
        "evicted least-recently-used entries"
    );
    Ok(evicted)
}

/// Runs [`maintain`] every `maintenance_interval` until the task is aborted.
pub async fn run_maintenance(state: AppState) {
    let mut tick = tokio::time::interval(state.config.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(err) = maintain(&state).await {
            tracing::warn!(error = %err, "maintenance round failed; retrying next round");
        }
    }
}
