//! Process-wide counters, rendered as Prometheus text for `/metrics`.
//!
//! Counters live in this process's memory, since it started, as Prometheus counters do: each
//! replica of a shared PostgreSQL exports its own and a dashboard sums them (a total kept in
//! the database and exported by every replica would be counted once per replica), and a restart
//! is a counter reset, which `rate()` and `increase()` account for. Lookups (a file asked for,
//! under however many alternative keys) are counted by namespace and interpreter, under a fixed
//! number of each.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Lookups by namespace and interpreter.
    lookups: Mutex<LookupTable>,
}

/// Most namespaces lookups are counted under by name; lookups in others are counted under
/// `other`, so that callers naming ever new namespaces (`pr/1234` under a `pr/*` token) cannot
/// grow `/metrics` without bound.
pub const MAX_LOOKUP_NAMESPACES: usize = 32;
/// Most interpreters lookups are counted under by name; the rest under `other`.
pub const MAX_LOOKUP_INTERPRETERS: usize = 16;

/// The interpreter a lookup is counted under: the cache tag and the magic (hex).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterpreterLabel {
    /// `sys.implementation.cache_tag`, `unknown` or `other`.
    pub cache_tag: String,
    /// The magic bytes in hex; empty for `unknown` and `other`.
    pub magic: String,
}

impl InterpreterLabel {
    /// A miss whose client did not name its interpreter.
    pub fn unknown() -> Self {
        InterpreterLabel {
            cache_tag: "unknown".to_owned(),
            magic: String::new(),
        }
    }

    fn other() -> Self {
        InterpreterLabel {
            cache_tag: "other".to_owned(),
            magic: String::new(),
        }
    }

    /// The interpreter of a stored key.
    pub fn of_key(key: &pycache_proto::CacheKey) -> Self {
        InterpreterLabel {
            cache_tag: key.cache_tag.clone(),
            magic: hex::encode(key.magic),
        }
    }

    /// The interpreter a request names ([`pycache_proto::api::INTERPRETER_HEADER`]:
    /// `<cache_tag> <8 hex digits>`); `None` when it names none or not in that form.
    pub fn from_header(headers: &axum::http::HeaderMap) -> Option<Self> {
        let value = headers
            .get(pycache_proto::api::INTERPRETER_HEADER)?
            .to_str()
            .ok()?;
        let (cache_tag, magic) = value.trim().split_once(' ')?;
        let tag_ok = (1..=32).contains(&cache_tag.len())
            && cache_tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        let magic_ok = magic.len() == 8 && magic.bytes().all(|b| b.is_ascii_hexdigit());
        (tag_ok && magic_ok).then(|| InterpreterLabel {
            cache_tag: cache_tag.to_owned(),
            magic: magic.to_ascii_lowercase(),
        })
    }
}

/// Lookups by (namespace, interpreter): (hits, misses), with the names counted so far.
#[derive(Debug, Default)]
struct LookupTable {
    counts: BTreeMap<(String, InterpreterLabel), (u64, u64)>,
    namespaces: BTreeSet<String>,
    interpreters: BTreeSet<InterpreterLabel>,
}

impl LookupTable {
    /// `value` itself when it is known or there is room for one more, else `other`.
    fn bounded<T: Ord + Clone>(known: &mut BTreeSet<T>, value: &T, most: usize, other: T) -> T {
        if known.contains(value) {
            return value.clone();
        }
        if known.len() < most {
            known.insert(value.clone());
            return value.clone();
        }
        other
    }
}

/// Lookups of one (namespace, interpreter), as counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupCount {
    /// The namespace looked in first, or `other`.
    pub namespace: String,
    /// The interpreter.
    pub interpreter: InterpreterLabel,
    /// Lookups served an entry.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
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

    /// Counts `hits` and `misses` lookups made in `namespace` (the one looked in first) under
    /// `interpreter`, in the totals and by name.
    pub fn count_lookups(
        &self,
        namespace: &str,
        interpreter: &InterpreterLabel,
        hits: u64,
        misses: u64,
    ) {
        if hits == 0 && misses == 0 {
            return;
        }
        Self::add(&self.hits, hits);
        Self::add(&self.misses, misses);
        let mut table = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
        let namespace = LookupTable::bounded(
            &mut table.namespaces,
            &namespace.to_owned(),
            MAX_LOOKUP_NAMESPACES,
            "other".to_owned(),
        );
        let interpreter = LookupTable::bounded(
            &mut table.interpreters,
            interpreter,
            MAX_LOOKUP_INTERPRETERS,
            InterpreterLabel::other(),
        );
        let slot = table.counts.entry((namespace, interpreter)).or_default();
        slot.0 += hits;
        slot.1 += misses;
    }

    /// Lookups by namespace and interpreter so far.
    pub fn lookup_counts(&self) -> Vec<LookupCount> {
        let table = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
        table
            .counts
            .iter()
            .map(|((namespace, interpreter), &(hits, misses))| LookupCount {
                namespace: namespace.clone(),
                interpreter: interpreter.clone(),
                hits,
                misses,
            })
            .collect()
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
            (
                "pycache_hits_total",
                "Lookups served an entry (a file, however many keys it was asked under).",
                &self.hits,
            ),
            (
                "pycache_misses_total",
                "Lookups that found no entry.",
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
        let name = "pycache_lookups_total";
        let _ = writeln!(
            out,
            "# HELP {name} Lookups by the namespace looked in first and the interpreter (a hit \
             under the served entry's, a miss under the one the client named), and result.\n\
             # TYPE {name} counter"
        );
        for count in self.lookup_counts() {
            for (result, n) in [("hit", count.hits), ("miss", count.misses)] {
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{}\",cache_tag=\"{}\",magic=\"{}\",result=\"{result}\"}} {n}",
                    label(&count.namespace),
                    label(&count.interpreter.cache_tag),
                    label(&count.interpreter.magic),
                );
            }
        }
        let name = "pycache_hit_rate";
        let rate = pycache_proto::api::hit_rate(Self::get(&self.hits), Self::get(&self.misses));
        let _ = writeln!(
            out,
            "# HELP {name} Hits divided by lookups since start (NaN before the first).\n\
             # TYPE {name} gauge\n{name} {}",
            rate.map_or_else(|| "NaN".to_owned(), |r| r.to_string())
        );
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

/// A label value in Prometheus text: backslash, double quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_counted_under_a_bounded_set_of_names() {
        let metrics = Metrics::default();
        let python = InterpreterLabel {
            cache_tag: "cpython-311".to_owned(),
            magic: "a70d0d0a".to_owned(),
        };
        for n in 0..MAX_LOOKUP_NAMESPACES + 5 {
            metrics.count_lookups(&format!("pr/{n}"), &python, 1, 2);
        }
        let counts = metrics.lookup_counts();
        assert_eq!(counts.len(), MAX_LOOKUP_NAMESPACES + 1);
        let other = counts.iter().find(|c| c.namespace == "other").unwrap();
        assert_eq!((other.hits, other.misses), (5, 10));
        assert_eq!(
            Metrics::get(&metrics.hits),
            MAX_LOOKUP_NAMESPACES as u64 + 5
        );
        let text = metrics.render(0, 0);
        assert!(text.contains(
            "pycache_lookups_total{namespace=\"pr/0\",cache_tag=\"cpython-311\",magic=\"a70d0d0a\",result=\"miss\"} 2"
        ), "{text}");
        assert!(text.contains("pycache_hit_rate 0.333"), "{text}");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn the_interpreter_header_is_taken_only_in_its_form() {
        let header = |v: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                pycache_proto::api::INTERPRETER_HEADER,
                axum::http::HeaderValue::from_str(v).unwrap(),
            );
            InterpreterLabel::from_header(&headers)
        };
        assert_eq!(
            header("cpython-311 A70D0D0A"),
            Some(InterpreterLabel {
                cache_tag: "cpython-311".to_owned(),
                magic: "a70d0d0a".to_owned()
            })
        );
        assert_eq!(header("cpython-311"), None);
        assert_eq!(header("cpython\"311 a70d0d0a"), None);
        assert_eq!(header("cpython-311 a70d0d0"), None);
        assert_eq!(
            InterpreterLabel::from_header(&axum::http::HeaderMap::new()),
            None
        );
    }
}
