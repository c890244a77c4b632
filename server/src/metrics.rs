//! Process-wide counters, rendered as Prometheus text for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters since the process started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Entries served.
    pub hits: AtomicU64,
    /// Keys asked for and not found.
    pub misses: AtomicU64,
    /// Entry bytes received in accepted uploads.
    pub bytes_in: AtomicU64,
    /// Entry bytes sent.
    pub bytes_out: AtomicU64,
    /// Entries newly stored.
    pub stored: AtomicU64,
    /// Entries refused from uploads (conflicts included).
    pub refused: AtomicU64,
    /// Uploads refused because the namespace holds other bytes under the key.
    pub conflicts: AtomicU64,
    /// Entries deleted by purges.
    pub purged_entries: AtomicU64,
    /// Entries evicted.
    pub evicted_entries: AtomicU64,
    /// Bytes evicted.
    pub evicted_bytes: AtomicU64,
    /// Requests by (method, route, status).
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts one answered request.
    pub fn count_request(&self, method: &str, route: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
    }

    /// The Prometheus text exposition, with the store's current totals as gauges.
    pub fn render(&self, entries: u64, bytes: u64) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 10] = [
            ("pycache_hits_total", "Entries served.", &self.hits),
            (
                "pycache_misses_total",
                "Keys asked for and not found.",
                &self.misses,
            ),
            (
                "pycache_bytes_in_total",
                "Entry bytes received.",
                &self.bytes_in,
            ),
            (
                "pycache_bytes_out_total",
                "Entry bytes sent.",
                &self.bytes_out,
            ),
            (
                "pycache_stored_total",
                "Entries newly stored.",
                &self.stored,
            ),
            (
                "pycache_refused_total",
                "Uploaded entries refused.",
                &self.refused,
            ),
            (
                "pycache_conflicts_total",
                "Uploads refused because the namespace holds other bytes for the key.",
                &self.conflicts,
            ),
            (
                "pycache_purged_entries_total",
                "Entries deleted by purges.",
                &self.purged_entries,
            ),
            (
                "pycache_evicted_entries_total",
                "Entries evicted.",
                &self.evicted_entries,
            ),
            (
                "pycache_evicted_bytes_total",
                "Bytes evicted.",
                &self.evicted_bytes,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", Self::get(counter));
        }
        let gauges = [
            ("pycache_entries", "Entries in the store.", entries),
            (
                "pycache_store_bytes",
                "Bytes of entries in the store.",
                bytes,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let name = "pycache_http_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP requests answered.\n# TYPE {name} counter"
        );
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, route, status), n) in requests.iter() {
            let _ = writeln!(
                out,
                "{name}{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out
    }
}
