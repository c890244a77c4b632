//! [`AppState`]: what every handler shares.

use std::sync::Arc;

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
}

impl AppState {
    /// State around an open store.
    pub fn new(store: Arc<dyn Store>, config: Config) -> Self {
        AppState {
            store,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            usage: Arc::new(UsageLog::default()),
        }
    }
}
