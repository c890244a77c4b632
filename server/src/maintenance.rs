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

/// One maintenance round: flush hits, cut the write-ahead log back, measure what the store
/// takes on disk, evict while over `--max-size`, and give the space of what was evicted back to
/// the file system.
pub async fn maintain(state: &AppState) -> Result<Evicted, StoreError> {
    flush_usage(state).await?;
    measure_disk(state).await?;
    let evicted = make_room(state, 0).await?;
    if state.reclaim_due.swap(false, Ordering::AcqRel) {
        if let Err(err) = state.store.reclaim_space().await {
            state.reclaim_due.store(true, Ordering::Release);
            return Err(err);
        }
    }
    Ok(evicted)
}

/// Truncates a grown write-ahead log and measures the store's files against its running
/// totals, so that the size limit counts what is really on disk (rows, keys, indexes, the
/// log), not entry bytes alone.
pub async fn measure_disk(state: &AppState) -> Result<(), StoreError> {
    if let Err(err) = state.store.trim_journal().await {
        // A reader in the way: the next round tries again; the log is counted meanwhile.
        tracing::debug!(error = %err, "the write-ahead log could not be truncated this round");
    }
    let Some(usage) = state.store.disk_usage().await? else {
        return Ok(());
    };
    let totals = state.store.totals().await?;
    state
        .disk
        .measured(totals.accounted(), usage.data, usage.journal);
    Ok(())
}

/// Evicts least-recently-used entries when storing `incoming` more bytes would take the store
/// past `--max-size`, down to 90% of it less `incoming`; called before every write that adds
/// entries, so the limit holds at every moment, not only after a maintenance round. Bytes are
/// those on disk: entry bodies and rows (the running totals) scaled by the last measured ratio
/// of the files to them, plus the write-ahead log. Rounds are serialized within the process.
pub async fn make_room(state: &AppState, incoming: u64) -> Result<Evicted, StoreError> {
    let Some(limit) = state.config.max_store_bytes else {
        return Ok(Evicted::default());
    };
    let _one_at_a_time = state.eviction.lock().await;
    let totals = state.store.totals().await?;
    let disk = &state.disk;
    let on_disk = disk.on_disk(totals.accounted().saturating_add(incoming));
    if on_disk <= limit {
        return Ok(Evicted::default());
    }
    let target = limit / 100 * LOW_WATERMARK_PERCENT;
    let evict = disk.accounted(on_disk.saturating_sub(target));
    let evicted = state.store.evict_lru(evict).await?;
    if evicted.entries > 0 {
        state.reclaim_due.store(true, Ordering::Release);
    }
    let metrics = &state.metrics;
    metrics
        .evicted_entries
        .fetch_add(evicted.entries, Ordering::Relaxed);
    metrics
        .evicted_bytes
        .fetch_add(evicted.bytes + evicted.row_bytes, Ordering::Relaxed);
    tracing::info!(
        entries = evicted.entries,
        bytes = evicted.bytes,
        row_bytes = evicted.row_bytes,
        incoming,
        on_disk,
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
