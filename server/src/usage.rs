//! Last-use bookkeeping: reads only note their hits in memory ([`UsageLog`]); the maintenance
//! task ([`crate::maintenance`]) writes them to the store in batches.

use std::collections::HashMap;
use std::sync::Mutex;

use pycache_proto::KeyDigest;

use crate::store::{unix_millis, Usage};

/// Hits since the last flush: (namespace, key) → (count, last time).
#[derive(Debug, Default)]
pub struct UsageLog {
    pending: Mutex<HashMap<(String, KeyDigest), (u64, i64)>>,
}

impl UsageLog {
    /// Notes that the entries `served` (namespace and key) were served now.
    pub fn record<'a>(&self, served: impl IntoIterator<Item = (&'a str, KeyDigest)>) {
        let now = unix_millis();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (namespace, key) in served {
            let slot = pending
                .entry((namespace.to_owned(), key))
                .or_insert((0, now));
            slot.0 += 1;
            slot.1 = now;
        }
    }

    /// Takes everything noted so far.
    pub fn take(&self) -> Vec<Usage> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .drain()
            .map(|((namespace, key), (hits, last_used_at))| Usage {
                namespace,
                key,
                hits,
                last_used_at,
            })
            .collect()
    }

    /// Puts back hits whose flush failed, so the next flush writes them.
    pub fn restore(&self, usage: Vec<Usage>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for u in usage {
            let slot = pending
                .entry((u.namespace, u.key))
                .or_insert((0, u.last_used_at));
            slot.0 += u.hits;
            slot.1 = slot.1.max(u.last_used_at);
        }
    }
}
