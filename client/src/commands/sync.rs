//! `pycache-client sync [PATH...]`: the project command. The same engine as `compileall`, with
//! project defaults: full recursion, quiet per-file output, a progress bar on a terminal, a
//! one-line summary on stderr and `--json` on stdout.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cli::SyncArgs;
use crate::commands::compileall::{plan_context, run_engine};
use crate::compileall::plan::{FileOptions, Planner};
use crate::engine::{self, Style, Summary};
use crate::interpreter::Interpreter;
use crate::pyc::InvalidationMode;
use crate::settings::Settings;

/// The `--json` document.
#[derive(Debug, Serialize)]
struct SyncReport<'a> {
    /// Interpreter used.
    python: String,
    /// Its cache tag.
    cache_tag: &'a str,
    /// Whether every file compiled.
    success: bool,
    /// Counts and time.
    #[serde(flatten)]
    summary: &'a Summary,
}

/// Runs sync; returns the exit status.
pub fn run(settings: &Settings, args: &SyncArgs) -> Result<i32> {
    let started = Instant::now();
    let python = crate::interpreter::resolve_interpreter(settings.python.as_deref())?;
    let interp = Interpreter::probe(&python, &settings.cache_dir)?;
    if let Some(why) = interp.unchecked() {
        bail!(
            "{} is {why}: pycache does not guess its .pyc rules. Run `pycache-client compileall` \
             (it hands such an interpreter to its own `python -m compileall`) or a pycache \
             release that knows it",
            interp.executable.display()
        );
    }
    let cwd = std::env::current_dir().context("the current directory is not accessible")?;
    let ctx = plan_context(&interp, &cwd);
    let exclude = args.exclude.clone().or_else(|| settings.exclude.clone());
    let rx = match exclude {
        Some(p) => Some(fancy_regex::Regex::new(&p).with_context(|| {
            format!("the exclude pattern {p:?} is not a valid regular expression")
        })?),
        None => None,
    };
    let optimize = if !args.optimize.is_empty() {
        args.optimize.clone()
    } else {
        settings.optimize.clone().unwrap_or_else(|| vec![-1])
    };
    if let Some(bad) = optimize.iter().find(|l| !(-1..=2).contains(*l)) {
        bail!("optimization level {bad} is not one of -1, 0, 1, 2 (check [tool.pycache] optimize)");
    }
    let invalidation_mode = match &args.invalidation_mode {
        Some(m) => InvalidationMode::parse(m).with_context(|| {
            format!(
                "--invalidation-mode {m:?} is not one of timestamp, checked-hash, unchecked-hash"
            )
        })?,
        None => InvalidationMode::default_from_env(),
    };
    let opts = FileOptions {
        force: args.force,
        quiet: 1,
        legacy: false,
        rx,
        optimize,
        stripdir: None,
        prependdir: None,
        limit_sl_dest: None,
    };
    let paths: Vec<PathBuf> = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let mut planner = Planner::new(&ctx, &opts);
    for path in &paths {
        if !path.exists() {
            bail!(
                "{} does not exist; pass files or directories to sync",
                path.display()
            );
        }
        let p = OsString::from(path.as_os_str());
        if engine::is_file(path) {
            planner.compile_file(&p, None, None, None);
        } else {
            planner.compile_dir(&p, ctx.recursion_limit, None, true);
        }
    }
    let mut summary = Summary {
        files: planner.python_files,
        up_to_date: planner.up_to_date,
        ..Default::default()
    };
    let progress = !args.json && !args.quiet && std::io::stderr().is_terminal();
    let style = Style::Sync { progress };
    let ok = run_engine(
        settings,
        &interp,
        planner.events,
        style,
        invalidation_mode,
        false,
        &mut summary,
    )?;
    summary.seconds = started.elapsed().as_secs_f64();
    if args.json {
        let report = SyncReport {
            python: interp.executable.display().to_string(),
            cache_tag: &interp.cache_tag,
            success: ok,
            summary: &summary,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !args.quiet {
        eprintln!("{}", summary_line(&summary));
    }
    Ok(if ok { 0 } else { 1 })
}

/// The one-line summary.
pub fn summary_line(s: &Summary) -> String {
    format!(
        "pycache: {} files: {} up to date, {} local hits, {} remote hits, {} compiled, {} uploaded, {} errors; \
         {} written, {} down, {} up, {:.2}s ({} workers)",
        s.files,
        s.up_to_date,
        s.local_hits,
        s.remote_hits,
        s.compiled,
        s.uploaded,
        s.errors,
        s.written,
        human_bytes(s.bytes_down),
        human_bytes(s.bytes_up),
        s.seconds,
        s.workers_started
    )
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
