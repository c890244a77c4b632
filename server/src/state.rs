//! [`AppState`]: what every handler shares.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::metrics::Metrics;
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
    /// multiplying the memory each may take.
    heavy: Arc<Semaphore>,
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
            heavy: Arc::new(Semaphore::new(config.max_heavy_requests.max(1))),
            eviction: Arc::new(Mutex::new(())),
            reclaim_due: Arc::new(AtomicBool::new(false)),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            usage: Arc::new(UsageLog::default()),
        }
    }

    /// Waits for a heavy-request slot, at most the configured slot wait (then a 503 `busy`
    /// with `Retry-After`); it is freed when the [`HeavySlot`] drops.
    pub async fn heavy_slot(&self) -> Result<HeavySlot, crate::error::AppError> {
        let wait = self.config.slot_wait;
        let permit = tokio::time::timeout(wait, self.heavy.clone().acquire_owned())
            .await
            .map_err(|_| {
                crate::error::AppError::Busy(format!(
                    "the server is busy: all {} slots for batch requests stayed taken for {}s; \
                     try again shortly",
                    self.config.max_heavy_requests,
                    wait.as_secs_f64()
                ))
            })?
            .expect("the heavy-request semaphore is never closed");
        Ok(HeavySlot {
            permit: Some(permit),
            slots: self.config.max_heavy_requests.max(1),
            trim: true,
        })
    }

    /// Gives freed memory back to the operating system when no heavy request is in progress
    /// (for requests that took their slots [`HeavySlot::without_trim`]).
    pub fn release_memory_if_idle(&self) {
        if self.heavy.available_permits() == self.config.max_heavy_requests.max(1) {
            crate::memory::release_free_memory();
        }
    }

    /// Heavy-request slots free right now.
    pub fn free_slots(&self) -> usize {
        self.heavy.available_permits()
    }
}

/// One heavy request's slot. When the last slot in use is given back, the memory the heavy
/// requests freed goes back to the operating system, so a burst of large uploads does not leave
/// the server holding their size.
pub struct HeavySlot {
    permit: Option<OwnedSemaphorePermit>,
    slots: usize,
    trim: bool,
}

impl HeavySlot {
    /// This slot gives memory back to the system on release only if the request says so at
    /// its end ([`AppState::release_memory_if_idle`]): for slots taken once per chunk.
    pub fn without_trim(mut self) -> Self {
        self.trim = false;
        self
    }
}

impl Drop for HeavySlot {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let semaphore = permit.semaphore().clone();
        drop(permit);
        if self.trim && semaphore.available_permits() == self.slots {
            crate::memory::release_free_memory();
        }
    }
}
