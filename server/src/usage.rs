//! Last-use bookkeeping: reads only note their hits in memory ([`UsageLog`]); the maintenance
//! task ([`crate::maintenance`]) writes them to the store in batches.

use std::collections::HashMap;
use std::sync::Mutex;

use pycache_proto::KeyDigest;

use crate::store::{unix_millis, Usage};

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
    pub fn take(&self) -> Vec<Usage> {
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

    /// Puts back hits whose flush failed, so the next flush writes them.
    pub fn restore(&self, usage: Vec<Usage>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for u in usage {
            let slot = pending.entry(u.key).or_insert((0, u.last_used_at));
            slot.0 += u.hits;
            slot.1 = slot.1.max(u.last_used_at);
        }
    }
}
