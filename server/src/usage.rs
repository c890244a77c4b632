//! Last-use bookkeeping and eviction.
//!
//! Reads only note their hits in memory ([`UsageLog`]); a background task ([`maintain`]) writes
//! them to the store in one transaction every `maintenance_interval`, and then evicts the
//! least-recently-used entries while the store is over `--max-size`. Shutdown flushes once more.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use pycache_proto::KeyDigest;

use crate::state::AppState;
use crate::store::{unix_millis, Evicted, StoreError, Usage};

/// Eviction frees down to this fraction of `--max-size`, so it does not run on every tick.
const LOW_WATERMARK_PERCENT: u64 = 90;

/// Hits since the last flush: key → (count, last time).
#[derive(Debug, Default)]
pub struct UsageLog {
    pending: Mutex<HashMap<KeyDigest, (u64, i64)>>,
}

impl UsageLog {
    /// Notes that `keys` were served now.
    pub fn record<'a>(&self, keys: impl IntoIterator<Item = &'a KeyDigest>) {
        let now = unix_millis();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            let slot = pending.entry(*key).or_insert((0, now));
            slot.0 += 1;
            slot.1 = now;
        }
    }

    /// Takes everything noted so far.
    fn take(&self) -> Vec<Usage> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .drain()
            .map(|(key, (hits, last_used_at))| Usage {
                key,
                hits,
                last_used_at,
            })
            .collect()
    }
}

/// Writes pending hits to the store; on failure they are kept for the next flush.
pub async fn flush_usage(state: &AppState) -> Result<(), StoreError> {
    let usage = state.usage.take();
    if usage.is_empty() {
        return Ok(());
    }
    if let Err(err) = state.store.record_usage(&usage).await {
        let mut pending = state
            .usage
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for u in usage {
            let slot = pending.entry(u.key).or_insert((0, u.last_used_at));
            slot.0 += u.hits;
            slot.1 = slot.1.max(u.last_used_at);
        }
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
