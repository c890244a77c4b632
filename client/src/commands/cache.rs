//! `pycache-client cache stats | prune | clear | path`: the local cache, what `ccache -s` and
//! `sccache --show-stats` show for theirs. None of them needs an interpreter.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::CacheCommand;
use crate::local_cache::{
    CacheOptions, CacheReport, LocalCache, PruneReport, DEFAULT_SIZE_LIMIT, LEGACY_DIRS, STORE_FILE,
};
use crate::output::{human_bytes, Console};
use crate::settings::Settings;

/// Runs one `cache` subcommand. On a cache directory without a store, `stats`, `prune` and
/// `clear` create nothing and say so (`prune --cache-size` creates the store to keep the limit).
pub fn run(command: &CacheCommand, settings: &Settings, console: &Console) -> Result<i32> {
    let dir = &settings.cache_dir;
    let exists = dir.join(STORE_FILE).is_file();
    let text = match command {
        CacheCommand::Path => dir.display().to_string(),
        CacheCommand::Stats { json, zero_stats } => {
            let Some(cache) = open(settings, exists)? else {
                let report =
                    CacheReport::missing(dir, settings.cache_size.unwrap_or(DEFAULT_SIZE_LIMIT));
                return say(
                    console,
                    &if *json {
                        serde_json::to_string_pretty(&report)?
                    } else {
                        format!(
                            "no local cache in {} yet: no run has stored anything there{}",
                            dir.display(),
                            if *zero_stats {
                                " (no statistics to zero)"
                            } else {
                                ""
                            }
                        )
                    },
                );
            };
            let report = cache.report()?;
            let mut text = if *json {
                serde_json::to_string_pretty(&report)?
            } else {
                stats_text(&report)
            };
            if *zero_stats {
                cache.zero_stats()?;
                if !*json {
                    text.push_str("\nstatistics zeroed (the entries stay)");
                }
            }
            text
        }
        CacheCommand::Prune { json } => {
            let Some(mut cache) = open(settings, exists || settings.cache_size.is_some())? else {
                return nothing_there(console, dir, *json, "prune");
            };
            if let Some(limit) = settings.cache_size {
                cache.remember_size_limit(limit)?;
            }
            let mut text = removal(&cache.prune()?, *json, "pruned")?;
            if settings.cache_size.is_some() && !*json {
                text.push_str(&format!(
                    "; the limit {} is kept for later runs that set none",
                    human_bytes(cache.size_limit())
                ));
            }
            text
        }
        CacheCommand::Clear { json } => {
            let Some(cache) = open(settings, exists)? else {
                return nothing_there(console, dir, *json, "clear");
            };
            removal(&cache.clear()?, *json, "cleared")?
        }
    };
    say(console, &text)
}

/// The store, opened (or created when `create`); `None` when it does not exist and is not to
/// be created.
fn open(settings: &Settings, create: bool) -> Result<Option<LocalCache>> {
    if !create {
        return Ok(None);
    }
    let cache = LocalCache::open_with(
        &settings.cache_dir,
        CacheOptions {
            size_limit: settings.cache_size,
            interpreter: None,
        },
    )
    .with_context(|| {
        format!(
            "the local cache {} cannot be opened (check --cache-dir / PYCACHE_CACHE_DIR)",
            settings.cache_dir.display()
        )
    })?;
    Ok(Some(cache))
}

/// `prune` or `clear` of a cache that has no store: earlier layouts' directories are still
/// deleted; nothing is created.
fn nothing_there(console: &Console, dir: &Path, json: bool, what: &str) -> Result<i32> {
    let legacy_bytes = crate::local_cache::legacy_bytes(dir);
    for name in LEGACY_DIRS {
        match std::fs::remove_dir_all(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("could not remove {}", dir.join(name).display()))
            }
            _ => {}
        }
    }
    let report = PruneReport {
        legacy_bytes,
        ..PruneReport::default()
    };
    let text = if json {
        serde_json::to_string_pretty(&report)?
    } else if legacy_bytes > 0 {
        format!(
            "no local cache in {}: nothing to {what} but {} of earlier cache layouts, removed",
            dir.display(),
            human_bytes(legacy_bytes)
        )
    } else {
        format!("no local cache in {}: nothing to {what}", dir.display())
    };
    say(console, &text)
}

/// Prints a command's answer on stdout.
fn say(console: &Console, text: &str) -> Result<i32> {
    console.stdout_line(text.trim_end())?;
    console.flush()?;
    Ok(0)
}

fn removal(report: &PruneReport, json: bool, what: &str) -> Result<String> {
    if json {
        return Ok(serde_json::to_string_pretty(report)?);
    }
    let mut out = format!(
        "{what}: {} entries ({}) removed",
        report.entries,
        human_bytes(report.entry_bytes)
    );
    if report.legacy_bytes > 0 {
        let _ = write!(
            out,
            ", and {} of earlier cache layouts",
            human_bytes(report.legacy_bytes)
        );
    }
    let _ = write!(
        out,
        "; the store now takes {}",
        human_bytes(report.disk_bytes)
    );
    Ok(out)
}

fn stats_text(r: &crate::local_cache::CacheReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "cache directory:  {}", r.cache_dir);
    let _ = writeln!(
        out,
        "size:             {} on disk of a {} limit ({} entries, {})",
        human_bytes(r.disk_bytes),
        human_bytes(r.size_limit),
        r.entries,
        human_bytes(r.entry_bytes)
    );
    if r.legacy_bytes > 0 {
        let _ = writeln!(
            out,
            "earlier layouts:  {} (not used; `pycache-client cache prune` deletes them)",
            human_bytes(r.legacy_bytes)
        );
    }
    // A remote hit is a hit of the run, though not of this cache: the rate counts both.
    let rate = |hits: u64, remote_hits: u64, misses: u64| match hits + misses {
        0 => "-".to_owned(),
        n => format!("{:.1}%", (hits + remote_hits) as f64 * 100.0 / n as f64),
    };
    if !r.interpreters.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:>8} {:>10} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
            "interpreter",
            "entries",
            "size",
            "hits",
            "remote",
            "compiled",
            "hit rate",
            "stored",
            "evicted"
        );
        for i in &r.interpreters {
            let _ = writeln!(
                out,
                "{:<24} {:>8} {:>10} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
                i.interpreter,
                i.entries,
                human_bytes(i.entry_bytes),
                i.hits,
                i.remote_hits,
                i.compiled,
                rate(i.hits, i.remote_hits, i.misses),
                i.stored,
                i.evicted
            );
        }
    }
    if !r.days.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<10}  {:<24} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
            "day (UTC)",
            "interpreter",
            "hits",
            "remote",
            "compiled",
            "hit rate",
            "stored",
            "evicted"
        );
        for d in &r.days {
            let _ = writeln!(
                out,
                "{:<10}  {:<24} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
                d.day,
                d.interpreter,
                d.hits,
                d.remote_hits,
                d.compiled,
                rate(d.hits, d.remote_hits, d.misses),
                d.stored,
                d.evicted
            );
        }
        let _ = writeln!(
            out,
            "\nhits: served by this cache; remote: by the server; compiled: neither"
        );
    }
    out
}
