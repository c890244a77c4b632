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

/// One maintenance round: flush hits, evict while over `--max-size`, and give the space of
/// what was evicted back to the file system.
pub async fn maintain(state: &AppState) -> Result<Evicted, StoreError> {
    flush_usage(state).await?;
    let evicted = make_room(state, 0).await?;
    if state.reclaim_due.swap(false, Ordering::AcqRel) {
        if let Err(err) = state.store.reclaim_space().await {
            state.reclaim_due.store(true, Ordering::Release);
            return Err(err);
        }
    }
    Ok(evicted)
}

/// Evicts least-recently-used entries when storing `incoming` more bytes would take the store
/// past `--max-size`, down to 90% of it less `incoming`; called before every write that adds
/// entries, so the limit holds at every moment, not only after a maintenance round. Rounds are
/// serialized within the process.
pub async fn make_room(state: &AppState, incoming: u64) -> Result<Evicted, StoreError> {
    let Some(limit) = state.config.max_store_bytes else {
        return Ok(Evicted::default());
    };
    let _one_at_a_time = state.eviction.lock().await;
    let (_, bytes) = state.store.totals().await?;
    if bytes.saturating_add(incoming) <= limit {
        return Ok(Evicted::default());
    }
    let target = (limit / 100 * LOW_WATERMARK_PERCENT).saturating_sub(incoming);
    let evicted = state.store.evict_lru(bytes.saturating_sub(target)).await?;
    if evicted.entries > 0 {
        state.reclaim_due.store(true, Ordering::Release);
    }
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
        incoming,
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
