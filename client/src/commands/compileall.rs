//! `pycache-client compileall [ARGS]`: compileall's `main()`, with compiling done by the
//! engine. Command lines pycache does not run itself are handed to the interpreter's own
//! compileall, unchanged, so usage errors and `--help` are the real ones.

use std::ffi::OsString;
use std::io::{self, BufRead};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::compileall::plan::Event;

use anyhow::{Context, Result};

use crate::compileall::args::{self, CompileallArgs, Dialect, Parsed};
use crate::compileall::plan::{FileOptions, Planner};
use crate::engine::{Style, Summary};
use crate::pyc::InvalidationMode;
use crate::session::{Plan, Session};

/// Runs compileall; returns the process exit status.
pub fn run(session: &Session, raw_args: Vec<OsString>) -> Result<i32> {
    let interp = &session.interpreter;
    let dialect = Dialect {
        has_39_options: interp.version >= (3, 9, 0),
    };
    let args = match args::parse(&raw_args, dialect) {
        Parsed::Run(a) => *a,
        Parsed::Delegate(why) => return delegate(&interp.executable, &raw_args, why),
    };
    let rx = match &args.rx {
        Some(pattern) => match fancy_regex::Regex::new(pattern) {
            Ok(r) => Some(r),
            Err(_) => {
                return delegate(
                    &interp.executable,
                    &raw_args,
                    "regex pycache cannot compile",
                )
            }
        },
        None => None,
    };
    let ctx = session.plan_context();
    let invalidation_mode = args
        .invalidation_mode
        .unwrap_or_else(|| session.default_invalidation_mode());
    let opts = FileOptions {
        timestamp_pycs: invalidation_mode == InvalidationMode::Timestamp,
        force: args.force,
        quiet: args.quiet,
        legacy: args.legacy,
        rx,
        optimize: args.opt_levels.clone().unwrap_or_else(|| vec![-1]),
        stripdir: args.stripdir.clone(),
        prependdir: args.prependdir.clone(),
        limit_sl_dest: args.limit_sl_dest.clone(),
    };
    let mut dests = args.dests.clone();
    if let Some(flist) = &args.flist {
        match read_file_list(flist) {
            Ok(lines) => dests.extend(lines),
            Err(_) => {
                if args.quiet < 2 {
                    session.console.stdout_line(&format!(
                        "Error reading file list {}",
                        flist.to_string_lossy()
                    ))?;
                    session.console.flush()?;
                }
                return Ok(1);
            }
        }
    }
    if dests.is_empty() {
        // compile_path() ignores -o, -d, -s, -p, -x, -e and -j.
        let path_opts = FileOptions {
            optimize: vec![-1],
            rx: None,
            stripdir: None,
            prependdir: None,
            limit_sl_dest: None,
            ..opts
        };
        let mut path_planner = Planner::new(&ctx, &path_opts);
        let sys_path: Vec<OsString> = interp
            .sys_path(&session.cwd)
            .into_iter()
            .map(|s| OsString::from_vec(s.into_bytes()))
            .collect();
        path_planner.compile_path(&sys_path);
        return execute(session, path_planner.events, &args, invalidation_mode);
    }
    let mut planner = Planner::new(&ctx, &opts);
    let maxlevels = args.recursion.or(args.maxlevels);
    for dest in &dests {
        if is_file(Path::new(dest)) {
            planner.compile_file(
                dest,
                args.ddir.as_deref(),
                args.stripdir.as_deref(),
                args.prependdir.as_deref(),
            );
        } else {
            let levels = maxlevels.unwrap_or(if ctx.version >= (3, 9) {
                ctx.recursion_limit
            } else {
                10
            });
            planner.compile_dir(dest, levels, args.ddir.as_deref(), args.workers != 1);
        }
    }
    let events = planner.events;
    execute(session, events, &args, invalidation_mode)
}

fn execute(
    session: &Session,
    events: Vec<Event>,
    args: &CompileallArgs,
    invalidation_mode: InvalidationMode,
) -> Result<i32> {
    let plan = Plan {
        events,
        style: Style::Compileall { quiet: args.quiet },
        invalidation_mode,
        hardlink_dupes: args.hardlink_dupes,
    };
    let (ok, _) = session
        .run(plan, Summary::default())
        .context("writing compileall's output failed")?;
    Ok(if ok { 0 } else { 1 })
}

/// Whether `path` exists as a regular file (compileall's `os.path.isfile`).
pub fn is_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file())
        .unwrap_or(false)
}

/// `-i FILE` / `-i -`: one path per line, stripped of surrounding whitespace.
fn read_file_list(flist: &OsString) -> io::Result<Vec<OsString>> {
    let reader: Box<dyn BufRead> = if flist == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(io::BufReader::new(std::fs::File::open(flist)?))
    };
    let mut out = Vec::new();
    for line in reader.split(b'\n') {
        let line = line?;
        let text = String::from_utf8_lossy(&line);
        let stripped = text.trim();
        if std::str::from_utf8(&line).is_ok() {
            out.push(OsString::from(stripped));
        } else {
            let start = line
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(line.len());
            let end = line
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())
                .map_or(start, |e| e + 1);
            out.push(OsString::from_vec(line[start..end].to_vec()));
        }
    }
    Ok(out)
}

/// Replaces this process with `python -m compileall ARGS`.
fn delegate(python: &Path, raw_args: &[OsString], why: &str) -> Result<i32> {
    tracing::debug!("handing this command line to the interpreter's compileall ({why})");
    let err = Command::new(python)
        .arg("-m")
        .arg("compileall")
        .args(raw_args)
        .exec();
    Err(err).with_context(|| format!("could not run {} -m compileall", python.display()))
}
