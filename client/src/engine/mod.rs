//! The engine: turns compileall's plan into .pyc files, from the caches or the workers, and
//! prints what compileall prints, in compileall's order.
//!
//! A run is five stages, one file each, in run order:
//! 1. [`resolve`]: hash every source, build its keys, look them up in the local cache — one
//!    [`resolve::FileRecord`] per file; each distinct miss becomes one compile job;
//! 2. [`fetch`]: one batched lookup at the server for the misses;
//! 3. [`compile`]: what is still missing goes to the worker pool (without a server, misses go
//!    there during stage 1 already, so the workers start while the tree is being hashed);
//! 4. [`emit`]: events in compileall's order — each file waits only for its own results, is
//!    written as compileall writes it (hard links for `--hardlink-dupes`) and reported;
//! 5. [`sinks`]: server hits and new compiles go to the local cache, new compiles to the server,
//!    on background threads while stage 4 prints.

pub mod compile;
pub mod emit;
pub mod fetch;
pub mod resolve;
pub mod sinks;
mod writes;

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::compileall::plan::Event;
use crate::local_cache::LocalCache;
use crate::output::Console;
use crate::pyc::InvalidationMode;
use crate::remote::RemoteTier;
use crate::workers::{CompileJob, CompileOutcome, WorkerPool};

pub use compile::Compiler;

/// How results are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Exactly compileall's stdout, with its `-q` count.
    Compileall {
        /// Number of `-q`.
        quiet: u32,
    },
    /// `sync`: errors on stderr (compileall's `-q` form), an optional progress bar.
    Sync {
        /// Draw a progress bar on stderr.
        progress: bool,
        /// Print compile errors on stderr (not under `sync -qq`).
        errors: bool,
    },
}

/// What a run needs to know besides the plan: plain values from the interpreter and the
/// command line.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Output style.
    pub style: Style,
    /// Header kind to write.
    pub invalidation_mode: InvalidationMode,
    /// `--hardlink-dupes`.
    pub hardlink_dupes: bool,
    /// The interpreter's magic number.
    pub magic: [u8; 4],
    /// Its cache tag.
    pub cache_tag: String,
    /// The settings fingerprint that goes into every key.
    pub settings: String,
    /// SipHash-1-3 (3.11+) or 2-4 for hash-based headers.
    pub siphash13: bool,
    /// compileall's stdout encoding, for escaping error messages.
    pub stdout_encoding: String,
    /// `Some((major, minor))` when entries leave dfile out of their key and a hit for another
    /// path is rewritten (CPython versions where relocation was measured exact).
    pub relocation: Option<(u32, u32)>,
    /// The marshal format a server body must parse in completely before it becomes a .pyc;
    /// `None` for interpreters the marshal reader does not know (then a body must at least
    /// start like a code object).
    pub body_format: Option<crate::marshal::Format>,
}

/// The cache tiers of a run.
#[derive(Clone, Copy, Default)]
pub struct Tiers<'a> {
    /// The local cache, unless disabled.
    pub local: Option<&'a LocalCache>,
    /// The server, when one is configured and answered.
    pub remote: Option<&'a RemoteTier>,
}

/// A file that failed to compile and why, as `sync --json` lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FailedFile {
    /// The path as the walk built it (lossily decoded).
    pub path: String,
    /// The error, as compileall prints it after `*** Error compiling ...`.
    pub error: String,
}

/// Counts for the summary line and `--json`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    /// Python files considered.
    pub files: u64,
    /// Files whose pyc was already current.
    pub up_to_date: u64,
    /// Results taken from the local cache.
    pub local_hits: u64,
    /// Results taken from the server.
    pub remote_hits: u64,
    /// Hits (local or remote) compiled at another path and rewritten for this one.
    pub relocated_hits: u64,
    /// Results compiled in this run.
    pub compiled: u64,
    /// Of those, results of files whose source (and level) another file of this run has at
    /// another path: compiled once, rewritten for each path.
    pub shared: u64,
    /// .pyc files written.
    pub written: u64,
    /// Files that failed.
    pub errors: u64,
    /// Each file that failed, with the error compileall reports for it (`sync --json`).
    pub failed: Vec<FailedFile>,
    /// Local cache entries found corrupt (and replaced).
    pub corrupt_entries: u64,
    /// Server entries not used because no trusted key signed them (with `trusted-keys` set).
    pub untrusted_entries: u64,
    /// Python worker processes started.
    pub workers_started: u64,
    /// Entries the server accepted from this run.
    pub uploaded: u64,
    /// Entries the server refused (conflicts included).
    pub upload_refused: u64,
    /// Of those, entries whose key the namespace already held with other bytes.
    pub conflicts: u64,
    /// Entries too large for the server, not uploaded.
    pub upload_too_large: u64,
    /// Bytes received from the server.
    pub bytes_down: u64,
    /// Bytes sent to the server.
    pub bytes_up: u64,
    /// Time spent hashing sources and reading the local cache.
    pub lookup_seconds: f64,
    /// Time spent waiting for the server's batch get.
    pub fetch_seconds: f64,
    /// Time spent compiling misses and writing .pyc files.
    pub emit_seconds: f64,
    /// Time spent waiting for uploads to finish after the last file.
    pub upload_wait_seconds: f64,
    /// Wall time.
    pub seconds: f64,
}

impl Compiler for WorkerPool {
    fn submit(&self, job: CompileJob) {
        WorkerPool::submit(self, job);
    }

    fn next_result(&self) -> Option<(u64, CompileOutcome)> {
        self.results().recv().ok()
    }

    fn workers_started(&self) -> usize {
        WorkerPool::workers_started(self)
    }
}

/// Server answers decoded ahead of the file being written, at most.
const ANNOUNCED_AHEAD: usize = 256;

/// Runs the plan's events; returns whether everything succeeded (compileall's `success`).
pub fn run(
    events: &[Event],
    cfg: &RunConfig,
    tiers: Tiers<'_>,
    compiler: &dyn Compiler,
    console: &Console,
    summary: &mut Summary,
) -> Result<bool> {
    let started = Instant::now();
    let remote = tiers.remote.filter(|r| r.enabled());
    // With a server, stage 1 ends before the lookup asks for every miss at once. Without one,
    // stage 1 runs on its own thread beside the emit stage (files are written while later ones
    // are still hashed and looked up), and its misses go to the workers as they are found.
    let (resolved, asked) = match remote {
        Some(_) => {
            let mut resolution = resolve::resolve(events, cfg, tiers.local, console, summary);
            summary.lookup_seconds = started.elapsed().as_secs_f64();
            let asked = fetch::take_asked(&mut resolution);
            (Some(resolution), asked)
        }
        None => (None, Vec::new()),
    };

    let emit_started = Instant::now();
    let result = sinks::with_sinks(tiers, console, |sinks| {
        std::thread::scope(|scope| {
            let (found, resolver) = match resolved {
                Some(resolution) => (emit::Found::All(resolution), None),
                None => {
                    let (tx, rx) = crossbeam_channel::unbounded();
                    let handle = scope.spawn(move || {
                        let mut counts = Summary::default();
                        let found = &mut |item| {
                            let _ = tx.send(item);
                        };
                        let (local, early) = (tiers.local, Some(compiler));
                        resolve::resolve_each(
                            events,
                            cfg,
                            local,
                            early,
                            console,
                            &mut counts,
                            found,
                        );
                        counts.lookup_seconds = started.elapsed().as_secs_f64();
                        counts
                    });
                    (emit::Found::Streaming(rx), Some(handle))
                }
            };
            // The server lookup streams beside the emit stage (see `fetch`).
            let (fetchers, announced) = match remote.filter(|_| !asked.is_empty()) {
                Some(remote) => {
                    // Bounded: a lookup that runs ahead of the writes waits (and the server with
                    // it) instead of holding every entry it decoded.
                    let (tx, rx) = crossbeam_channel::bounded(ANNOUNCED_AHEAD);
                    let parts = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
                    let handles: Vec<_> = fetch::split(asked, parts)
                        .into_iter()
                        .map(|part| {
                            let tx = tx.clone();
                            scope.spawn(move || {
                                fetch::stream(part, remote, cfg, compiler, sinks, &tx)
                            })
                        })
                        .collect();
                    (handles, Some(rx))
                }
                None => (Vec::new(), None),
            };
            let feeds = emit::Feeds {
                compiler,
                sinks,
                announced,
            };
            let emitted = emit::emit(events, found, cfg, feeds, console, summary);
            summary.emit_seconds = emit_started.elapsed().as_secs_f64();
            if let Some(handle) = resolver {
                let counts = handle.join().expect("the resolve thread panicked");
                summary.local_hits += counts.local_hits;
                summary.relocated_hits += counts.relocated_hits;
                summary.corrupt_entries += counts.corrupt_entries;
                summary.lookup_seconds = counts.lookup_seconds;
            }
            let fetched = fetchers
                .into_iter()
                .map(|h| h.join().expect("the server lookup thread panicked"))
                .reduce(|mut all, part| {
                    all.merge(part);
                    all
                });
            if let (Some(report), Some(remote)) = (&fetched, remote) {
                if report.untrusted > 0 {
                    remote.say_untrusted(report.untrusted);
                }
            }
            if let Some(report) = fetched {
                summary.remote_hits += report.remote_hits;
                summary.relocated_hits += report.relocated_hits;
                summary.corrupt_entries += report.corrupt;
                summary.untrusted_entries += report.untrusted;
                summary.bytes_down += report.bytes;
                summary.fetch_seconds = report.seconds;
                if let Some(err) = report.error {
                    return Err(err);
                }
            }
            emitted
        })
    });
    let (success, upload) = result;
    if let Some(upload) = upload {
        let report = upload.report;
        summary.uploaded = report.stored;
        summary.upload_refused = report.refused;
        summary.conflicts = report.conflicts;
        summary.upload_too_large = report.too_large;
        summary.bytes_up = report.bytes;
        summary.upload_wait_seconds = upload.wait_seconds;
        if let Some(err) = report.error {
            return Err(err);
        }
    }
    summary.workers_started = compiler.workers_started() as u64;
    summary.seconds += started.elapsed().as_secs_f64();
    success
}

#[cfg(test)]
mod tests;
