//! [`AppState`]: what every handler shares.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::auth::Caller;
use crate::config::Config;
use crate::metrics::Metrics;
pub use crate::slots::HeavySlot;
use crate::slots::HeavySlots;
use crate::store::Store;
use crate::usage::UsageLog;

/// Shared by all handlers through `State(..)`.
#[derive(Clone)]
pub struct AppState {
    /// Where entries and tokens live.
    pub store: Arc<dyn Store>,
    /// Limits and policy.
    pub config: Arc<Config>,
    /// Counters for `/metrics` and `/api/v1/stats`.
    pub metrics: Arc<Metrics>,
    /// Hits not yet written to the store.
    pub usage: Arc<UsageLog>,
    /// Slots for heavy requests (batch get and uploads), so a burst of them queues instead of
    /// multiplying the memory each may take; each caller holds at most its share.
    heavy: Arc<HeavySlots>,
    /// Held while an eviction round runs, so concurrent writes do not evict twice.
    pub eviction: Arc<Mutex<()>>,
    /// Set when entries were evicted since the last time space was given back to the file
    /// system.
    pub reclaim_due: Arc<AtomicBool>,
}

impl AppState {
    /// State around an open store.
    pub fn new(store: Arc<dyn Store>, config: Config) -> Self {
        AppState {
            store,
            heavy: Arc::new(HeavySlots::new(
                config.max_heavy_requests,
                config.max_heavy_per_token,
            )),
            eviction: Arc::new(Mutex::new(())),
            reclaim_due: Arc::new(AtomicBool::new(false)),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            usage: Arc::new(UsageLog::default()),
        }
    }

    /// Waits for a heavy-request slot for `caller`, at most the configured slot wait (then a
    /// 503 `busy` with `Retry-After`); the caller holds at most its share
    /// (`--max-heavy-per-token`, keyed by its token's name, one key for every caller without a
    /// token). The slot is freed when the [`HeavySlot`] drops.
    pub async fn heavy_slot(&self, caller: &Caller) -> Result<HeavySlot, crate::error::AppError> {
        self.heavy
            .take(caller.name.as_deref(), self.config.slot_wait)
            .await
    }

    /// Gives freed memory back to the operating system when no heavy request is in progress
    /// (for requests that took their slots [`HeavySlot::without_trim`]).
    pub fn release_memory_if_idle(&self) {
        if self.heavy.free() == self.heavy.total() {
            crate::memory::release_free_memory();
        }
    }

    /// Heavy-request slots free right now.
    pub fn free_slots(&self) -> usize {
        self.heavy.free()
    }

    /// Heavy-request slots in all.
    pub fn total_slots(&self) -> usize {
        self.heavy.total()
    }
}
