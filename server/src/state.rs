//! [`AppState`]: what every handler shares.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::Mutex;

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
    /// What the store's files take on disk per accounted byte (bodies and rows), in
    /// thousandths, and the write-ahead log's bytes, as the last maintenance round measured
    /// them: the size limit holds for what is really on disk.
    pub disk: Arc<DiskFactor>,
}

/// The measured ratio of disk use to accounted bytes, and the journal's size.
#[derive(Debug)]
pub struct DiskFactor {
    per_mille: std::sync::atomic::AtomicU64,
    journal: std::sync::atomic::AtomicU64,
}

impl Default for DiskFactor {
    fn default() -> Self {
        DiskFactor {
            per_mille: std::sync::atomic::AtomicU64::new(1000),
            journal: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl DiskFactor {
    /// Bytes on disk for `accounted` bytes of entries (the journal included).
    pub fn on_disk(&self, accounted: u64) -> u64 {
        let per_mille = self.per_mille.load(std::sync::atomic::Ordering::Relaxed);
        let journal = self.journal.load(std::sync::atomic::Ordering::Relaxed);
        (u128::from(accounted) * u128::from(per_mille) / 1000).min(u128::from(u64::MAX)) as u64
            + journal
    }

    /// Accounted bytes that take `on_disk` bytes.
    pub fn accounted(&self, on_disk: u64) -> u64 {
        let per_mille = self
            .per_mille
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1);
        (u128::from(on_disk) * 1000 / u128::from(per_mille)) as u64
    }

    /// Records a measurement: `data` bytes on disk for `accounted` bytes, and the journal.
    /// Stores under [`DiskFactor::MIN_MEASURED`] keep the last ratio (their fixed overhead,
    /// the schema and tokens, would dominate it); the ratio stays between 1 and 8.
    pub fn measured(&self, accounted: u64, data: u64, journal: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.journal.store(journal, Relaxed);
        if accounted >= Self::MIN_MEASURED {
            let per_mille = (u128::from(data) * 1000 / u128::from(accounted)).clamp(1000, 8000);
            self.per_mille.store(per_mille as u64, Relaxed);
        }
    }

    /// The least accounted bytes a ratio is measured on.
    pub const MIN_MEASURED: u64 = 1 << 20;
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
            disk: Arc::new(DiskFactor::default()),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            usage: Arc::new(UsageLog::default()),
        }
    }

    /// Waits for a heavy-request slot for the caller whose token is named `token` (`None`: no
    /// token), at most the configured slot wait (then a 503 `busy` with `Retry-After`); a
    /// caller holds at most its share (`--max-heavy-per-token`, keyed by the token's name, one
    /// key for every caller without a token). The slot is freed when the [`HeavySlot`] drops.
    pub async fn heavy_slot(
        &self,
        token: Option<&str>,
    ) -> Result<HeavySlot, crate::error::AppError> {
        self.heavy.take(token, self.config.slot_wait).await
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
