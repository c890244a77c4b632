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
use crate::commands::compileall::is_file;
use crate::compileall::plan::{FileOptions, Planner};
use crate::engine::{Style, Summary};
use crate::output::is_closed_stdout;
use crate::pyc::InvalidationMode;
use crate::session::{Plan, Session};

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
pub fn run(
    session: &Session,
    args: &SyncArgs,
    started: Instant,
    venv: Option<crate::venv::Environment>,
) -> Result<i32> {
    let invalidation_mode = match &args.invalidation_mode {
        Some(m) => InvalidationMode::parse(m).with_context(|| {
            format!(
                "--invalidation-mode {m:?} is not one of timestamp, checked-hash, unchecked-hash"
            )
        })?,
        None => session.default_invalidation_mode(),
    };
    let paths: Vec<PathBuf> = match venv {
        Some(env) => env.site_packages,
        None => or_current_dir(&args.paths),
    };
    let walk = TreeWalk {
        paths: &paths,
        exclude: &args.exclude,
        default_excludes: !args.no_default_excludes,
        optimize: &args.optimize,
        timestamp_pycs: invalidation_mode == InvalidationMode::Timestamp,
        force: args.force,
    };
    // A run with no cache it could hit compiles every file it plans: its workers start as soon
    // as the walk finds the first, and are ready when the files are.
    let pool = session.worker_pool();
    let planned = if session.nothing_cached() {
        plan_tree_with(session, &walk, Some(&|| pool.start_workers()))?
    } else {
        plan_tree(session, &walk)?
    };
    let summary = Summary {
        files: planned.files,
        up_to_date: planned.up_to_date,
        ..Default::default()
    };
    let progress = !args.json && args.quiet == 0 && std::io::stderr().is_terminal();
    let plan = Plan {
        events: planned.events,
        style: Style::Sync {
            progress,
            errors: args.quiet < 2,
        },
        invalidation_mode,
        hardlink_dupes: false,
    };
    let (ok, mut summary) = session.run_with(plan, summary, None, Some(pool))?;
    summary.seconds = started.elapsed().as_secs_f64();
    let console = &session.console;
    if args.json {
        let report = SyncReport {
            python: session.interpreter.executable.display().to_string(),
            cache_tag: &session.interpreter.cache_tag,
            success: ok,
            summary: &summary,
        };
        let written = console
            .stdout_line(&serde_json::to_string_pretty(&report)?)
            .and_then(|()| console.flush());
        match written {
            // A reader that stopped reading (`| head`) does not make the sync fail.
            Err(e) if is_closed_stdout(&e) => {}
            other => other.context("could not write the JSON summary")?,
        }
    } else if args.quiet < 2 {
        console.stderr_text(&format!("{}\n", summary_line(&summary)));
    }
    Ok(if ok { 0 } else { 1 })
}

/// Directories `sync` and `verify` do not walk into unless `--no-default-excludes`: the ones
/// ruff skips by default (version control, virtual environments, tool caches, build output,
/// installed packages), unless the directory is a package; and no virtual environment, whatever
/// its name (see `Walker::skipped`). A path given on the command line is walked all the same,
/// as ruff checks a path it is given.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    ".bzr",
    ".direnv",
    ".eggs",
    ".git",
    ".git-rewrite",
    ".hg",
    ".ipynb_checkpoints",
    ".mypy_cache",
    ".nox",
    ".pants.d",
    ".pyenv",
    ".pytest_cache",
    ".pytype",
    ".ruff_cache",
    ".svn",
    ".tox",
    ".venv",
    ".vscode",
    "__pypackages__",
    "_build",
    "buck-out",
    "build",
    "dist",
    "node_modules",
    "site-packages",
    "venv",
];

/// What `sync` and `verify` walk: the paths and the options that choose files and levels.
#[derive(Debug)]
pub struct TreeWalk<'a> {
    /// Files and directories.
    pub paths: &'a [PathBuf],
    /// `--exclude` patterns (none: the settings' patterns).
    pub exclude: &'a [String],
    /// Skip the [`DEFAULT_EXCLUDES`] directories below the paths.
    pub default_excludes: bool,
    /// `--optimize` levels (none: the settings', else the interpreter's).
    pub optimize: &'a [i64],
    /// Whether the .pyc files record timestamps (then up-to-date ones are skipped).
    pub timestamp_pycs: bool,
    /// Plan every file, up to date or not.
    pub force: bool,
}

/// A walked tree: compileall's events and the planner's counts.
#[derive(Debug)]
pub struct PlannedTree {
    /// The events, in compileall's order.
    pub events: Vec<crate::compileall::plan::Event>,
    /// Python files considered.
    pub files: u64,
    /// Of those, files whose .pyc files are current.
    pub up_to_date: u64,
}

/// The paths of a command line, `.` when none is given.
pub fn or_current_dir(paths: &[PathBuf]) -> Vec<PathBuf> {
    if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    }
}

/// Walks `walk.paths` as `sync` does (full recursion, the ruff-like default excludes).
pub fn plan_tree(session: &Session, walk: &TreeWalk<'_>) -> Result<PlannedTree> {
    plan_tree_with(session, walk, None)
}

/// [`plan_tree`], calling `first_file` once the walk plans a file to compile.
pub fn plan_tree_with(
    session: &Session,
    walk: &TreeWalk<'_>,
    first_file: Option<&dyn Fn()>,
) -> Result<PlannedTree> {
    let settings = &session.settings;
    let ctx = session.plan_context();
    if let Some(why) = session.interpreter.unchecked() {
        bail!(
            "{} is {why}: pycache does not guess its .pyc rules. Run `pycache-client compileall` \
             (it hands such an interpreter to its own `python -m compileall`) or a pycache \
             release that knows it",
            session.interpreter.executable.display()
        );
    }
    let patterns = if walk.exclude.is_empty() {
        settings.exclude.as_slice()
    } else {
        walk.exclude
    };
    let rx =
        exclusion(patterns)?.map(|rx| Box::new(rx) as Box<dyn crate::compileall::plan::Exclude>);
    let optimize = if !walk.optimize.is_empty() {
        walk.optimize.to_vec()
    } else {
        settings.optimize.clone().unwrap_or_else(|| vec![-1])
    };
    if let Some(bad) = optimize.iter().find(|l| !(-1..=2).contains(*l)) {
        bail!("optimization level {bad} is not one of -1, 0, 1, 2 (check [tool.pycache] optimize)");
    }
    let opts = FileOptions {
        timestamp_pycs: walk.timestamp_pycs,
        force: walk.force,
        quiet: 1,
        legacy: false,
        rx,
        optimize,
        stripdir: None,
        prependdir: None,
        limit_sl_dest: None,
        skip_dirs: if walk.default_excludes {
            DEFAULT_EXCLUDES
        } else {
            &[]
        },
    };
    let mut planner = Planner::new(&ctx, &opts);
    if let Some(hook) = first_file {
        planner.on_first_file(hook);
    }
    for path in walk.paths {
        if !path.exists() {
            bail!(
                "{} does not exist; pass files or directories to sync",
                path.display()
            );
        }
        let p = OsString::from(path.as_os_str());
        if is_file(path) {
            planner.compile_file(&p, None, None, None);
        } else {
            planner.compile_dir(&p, ctx.recursion_limit, None, true);
        }
    }
    Ok(PlannedTree {
        files: planner.python_files,
        up_to_date: planner.up_to_date,
        events: planner.events,
    })
}

/// One regular expression that matches where any of `patterns` does; `None` for no pattern.
fn exclusion(patterns: &[String]) -> Result<Option<fancy_regex::Regex>> {
    for p in patterns {
        fancy_regex::Regex::new(p).with_context(|| {
            format!("the exclude pattern {p:?} is not a valid regular expression")
        })?;
    }
    if patterns.is_empty() {
        return Ok(None);
    }
    let joined = patterns
        .iter()
        .map(|p| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|");
    Ok(Some(fancy_regex::Regex::new(&joined).with_context(
        || format!("the exclude patterns {patterns:?} do not combine into one regular expression"),
    )?))
}

/// The one-line summary (upload conflicts only when there were some).
pub fn summary_line(s: &Summary) -> String {
    let conflicts = match s.conflicts {
        0 => String::new(),
        n => format!(", {n} conflicts"),
    };
    format!(
        "pycache: {} files: {} up to date, {} local hits, {} remote hits ({} relocated), {} compiled, {} uploaded{conflicts}, {} errors; \
         {} written, {} down, {} up, {:.2}s ({} workers)",
        s.files,
        s.up_to_date,
        s.local_hits,
        s.remote_hits,
        s.relocated_hits,
        s.compiled,
        s.uploaded,
        s.errors,
        s.written,
        crate::output::human_bytes(s.bytes_down),
        crate::output::human_bytes(s.bytes_up),
        s.seconds,
        s.workers_started
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_patterns_combine_and_a_bad_one_is_named() {
        use crate::compileall::plan::Exclude;
        let rx = exclusion(&["^a/".to_owned(), "tests?/".to_owned()])
            .unwrap()
            .unwrap();
        assert!(rx.excludes("a/x.py".as_ref()));
        assert!(rx.excludes("src/tests/x.py".as_ref()));
        assert!(!rx.excludes("src/b/x.py".as_ref()));
        assert!(exclusion(&[]).unwrap().is_none());
        let err = exclusion(&["ok".to_owned(), "(".to_owned()]).unwrap_err();
        assert!(format!("{err:#}").contains("\"(\""), "{err:#}");
    }

    #[test]
    fn the_summary_line_names_conflicts_only_when_there_were_some() {
        let mut summary = Summary {
            files: 3,
            uploaded: 2,
            ..Default::default()
        };
        assert!(
            summary_line(&summary).contains("2 uploaded, 0 errors;"),
            "{}",
            summary_line(&summary)
        );
        summary.conflicts = 1;
        assert!(
            summary_line(&summary).contains("2 uploaded, 1 conflicts, 0 errors;"),
            "{}",
            summary_line(&summary)
        );
    }
}
