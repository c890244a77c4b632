//! `pycache-client cache stats | prune | clear | path`: the local cache, what `ccache -s` and
//! `sccache --show-stats` show for theirs. None of them needs an interpreter.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use crate::cli::CacheCommand;
use crate::local_cache::{CacheOptions, LocalCache, PruneReport};
use crate::output::{human_bytes, Console};
use crate::settings::Settings;

/// Runs one `cache` subcommand.
pub fn run(command: &CacheCommand, settings: &Settings, console: &Console) -> Result<i32> {
    if let CacheCommand::Path = command {
        console.stdout_line(&settings.cache_dir.display().to_string())?;
        console.flush()?;
        return Ok(0);
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
    let text = match command {
        CacheCommand::Stats { json } => {
            let report = cache.report()?;
            if *json {
                serde_json::to_string_pretty(&report)?
            } else {
                stats_text(&report)
            }
        }
        CacheCommand::Prune { json } => removal(&cache.prune()?, *json, "pruned")?,
        CacheCommand::Clear { json } => removal(&cache.clear()?, *json, "cleared")?,
        CacheCommand::Path => unreachable!("answered above"),
    };
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
    let rate = |hits: u64, misses: u64| match hits + misses {
        0 => "-".to_owned(),
        n => format!("{:.1}%", hits as f64 * 100.0 / n as f64),
    };
    if !r.interpreters.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:>8} {:>10} {:>9} {:>9} {:>8} {:>8} {:>8}",
            "interpreter", "entries", "size", "hits", "misses", "hit rate", "stored", "evicted"
        );
        for i in &r.interpreters {
            let _ = writeln!(
                out,
                "{:<24} {:>8} {:>10} {:>9} {:>9} {:>8} {:>8} {:>8}",
                i.interpreter,
                i.entries,
                human_bytes(i.entry_bytes),
                i.hits,
                i.misses,
                rate(i.hits, i.misses),
                i.stored,
                i.evicted
            );
        }
    }
    if !r.days.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<10}  {:<24} {:>9} {:>9} {:>8} {:>8} {:>8}",
            "day (UTC)", "interpreter", "hits", "misses", "hit rate", "stored", "evicted"
        );
        for d in &r.days {
            let _ = writeln!(
                out,
                "{:<10}  {:<24} {:>9} {:>9} {:>8} {:>8} {:>8}",
                d.day,
                d.interpreter,
                d.hits,
                d.misses,
                rate(d.hits, d.misses),
                d.stored,
                d.evicted
            );
        }
    }
    out
}
