//! `pycache-client compileall [ARGS]`: compileall's `main()`, with compiling done by the
//! engine. Command lines pycache does not run itself are handed to the interpreter's own
//! compileall, unchanged, so usage errors and `--help` are the real ones.

use std::ffi::OsString;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;

use anyhow::{Context, Result};

use crate::compileall::args::{self, CompileallArgs, Dialect, Parsed};
use crate::compileall::exclude::{Exclusion, Start};
use crate::compileall::narrow_stdout::reason_to_delegate;
use crate::compileall::plan::{Event, Exclude, FileOptions, Planner};
use crate::compileall::pypy_cold;
use crate::engine::{Style, Summary};
use crate::local_cache::LocalCache;
use crate::pyc::InvalidationMode;
use crate::session::{Plan, Session};

/// Runs compileall; returns the process exit status.
pub fn run(session: &Session, raw_args: Vec<OsString>) -> Result<i32> {
    let interp = &session.interpreter;
    if let Some(why) = interp.unchecked() {
        return delegate(&interp.executable, &raw_args, &why.to_string());
    }
    let dialect = Dialect {
        has_39_options: interp.version >= (3, 9, 0),
    };
    let args = match args::parse(&raw_args, dialect) {
        Parsed::Run(a) => *a,
        Parsed::Delegate(why) => return delegate(&interp.executable, &raw_args, why),
    };
    if args.hardlink_dupes && !interp.hardlinks {
        return delegate(
            &interp.executable,
            &raw_args,
            "--hardlink-dupes without os.link",
        );
    }
    let (rx, rx_warnings) = match &args.rx {
        Some(pattern) => match Exclusion::start(&interp.executable, pattern) {
            Start::Ready {
                exclusion,
                warnings,
            } => (Some(Rc::new(exclusion)), warnings),
            Start::Delegate(why) => return delegate(&interp.executable, &raw_args, &why),
        },
        None => (None, Vec::new()),
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
        rx: rx
            .clone()
            .map(|r| Box::new(SharedExclusion(r)) as Box<dyn Exclude>),
        optimize: args.opt_levels.clone().unwrap_or_else(|| vec![-1]),
        stripdir: args.stripdir.clone(),
        prependdir: args.prependdir.clone(),
        limit_sl_dest: args.limit_sl_dest.clone(),
        skip_dirs: &[],
    };
    let mut dests = args.dests.clone();
    let mut stdin_copy: Option<Vec<u8>> = None;
    if let Some(flist) = &args.flist {
        match read_file_list(flist, &mut stdin_copy) {
            Ok(lines) => dests.extend(lines),
            Err(_) => {
                write_stderr(&rx_warnings).context("writing compileall's warnings failed")?;
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
    let mut planner = Planner::new(&ctx, &opts);
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
        let struct_error = path_planner.mtime_struct_error;
        let events = path_planner.events;
        if let Some(why) = handoff_after_walk(struct_error, &events, &args, interp) {
            return delegate_fed(&interp.executable, &raw_args, why, stdin_copy.as_deref());
        }
        let stdin = stdin_copy.as_deref();
        return finish(
            session,
            events,
            &args,
            &raw_args,
            &rx_warnings,
            stdin,
            invalidation_mode,
        );
    }
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
    let struct_error = planner.mtime_struct_error;
    let events = planner.events;
    if let Some(why) = handoff_after_walk(struct_error, &events, &args, interp) {
        return delegate_fed(&interp.executable, &raw_args, why, stdin_copy.as_deref());
    }
    if let Some(rx) = rx {
        drop(opts);
        if rx.failed() {
            return delegate_fed(
                &interp.executable,
                &raw_args,
                "the -x helper stopped answering",
                stdin_copy.as_deref(),
            );
        }
        if let Ok(exclusion) = Rc::try_unwrap(rx) {
            exclusion.finish();
        }
    }
    let stdin = stdin_copy.as_deref();
    finish(
        session,
        events,
        &args,
        &raw_args,
        &rx_warnings,
        stdin,
        invalidation_mode,
    )
}

/// Runs the plan: on PyPy with nothing cached in compileall's own process (see
/// [`pypy_cold`]), else in the engine after the `-x` pattern's warnings.
fn finish(
    session: &Session,
    events: Vec<Event>,
    args: &CompileallArgs,
    raw_args: &[OsString],
    rx_warnings: &[u8],
    stdin: Option<&[u8]>,
    invalidation_mode: InvalidationMode,
) -> Result<i32> {
    let (settings, interp) = (&session.settings, &session.interpreter);
    // Only a PyPy run asks the local cache before the engine does (see `pypy_cold`).
    let local = if interp.implementation == "pypy" {
        session.open_local_cache()
    } else {
        None
    };
    if pypy_cold::applies(&events, interp, settings.server.as_deref(), local.as_ref()) {
        tracing::debug!("PyPy run with nothing cached: compileall's own process compiles it");
        return pypy_cold::run(
            interp,
            raw_args,
            stdin,
            &events,
            invalidation_mode,
            local.as_ref(),
        );
    }
    // compileall compiles the pattern first thing in main(): its warnings precede its output.
    session
        .console
        .stderr_text(&String::from_utf8_lossy(rx_warnings));
    execute(session, events, args, invalidation_mode, local)
}

/// Why the walked plan is better run by compileall itself, if it is: a source mtime 3.8 cannot
/// pack, or a path the narrow stdout encoding cannot print.
fn handoff_after_walk(
    mtime_struct_error: bool,
    events: &[Event],
    args: &CompileallArgs,
    interp: &crate::interpreter::Interpreter,
) -> Option<&'static str> {
    if mtime_struct_error {
        return Some(MTIME_STRUCT_ERROR);
    }
    reason_to_delegate(events, args.quiet, &interp.stdout_encoding)
}

/// Why a run with a source mtime 3.8 cannot pack is compileall's own.
const MTIME_STRUCT_ERROR: &str = "a source mtime outside 3.8's signed 32-bit up-to-date check";

fn write_stderr(bytes: &[u8]) -> io::Result<()> {
    let mut stderr = io::stderr().lock();
    stderr.write_all(bytes)?;
    stderr.flush()
}

/// Whether `path` exists as a regular file (compileall's `os.path.isfile`).
pub fn is_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file())
        .unwrap_or(false)
}

/// The `-x` helper, shared between the walk's options and the check after the walk.
struct SharedExclusion(Rc<Exclusion>);

impl Exclude for SharedExclusion {
    fn excludes(&self, fullname: &std::ffi::OsStr) -> bool {
        self.0.excludes(fullname)
    }
}

fn execute(
    session: &Session,
    events: Vec<Event>,
    args: &CompileallArgs,
    invalidation_mode: InvalidationMode,
    local: Option<LocalCache>,
) -> Result<i32> {
    let plan = Plan {
        events,
        style: Style::Compileall { quiet: args.quiet },
        invalidation_mode,
        hardlink_dupes: args.hardlink_dupes,
    };
    let (ok, _) = session
        .run_with_cache(plan, Summary::default(), local)
        .context("writing compileall's output failed")?;
    Ok(if ok { 0 } else { 1 })
}

/// `-i FILE` / `-i -`: one path per line, stripped of surrounding whitespace.
fn read_file_list(flist: &OsString, stdin_copy: &mut Option<Vec<u8>>) -> io::Result<Vec<OsString>> {
    let reader: Box<dyn BufRead> = if flist == "-" {
        // Kept: a run handed to compileall afterwards gets the same list on its stdin.
        let mut bytes = Vec::new();
        io::stdin().lock().read_to_end(&mut bytes)?;
        *stdin_copy = Some(bytes.clone());
        Box::new(io::Cursor::new(bytes))
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

/// `delegate`, for a run whose `-i -` list was already read from stdin: compileall runs as a
/// child and gets the same bytes on its stdin.
fn delegate_fed(
    python: &Path,
    raw_args: &[OsString],
    why: &str,
    stdin: Option<&[u8]>,
) -> Result<i32> {
    let Some(bytes) = stdin else {
        return delegate(python, raw_args, why);
    };
    tracing_log(why);
    let mut command = Command::new(python);
    crate::child::hide_secrets(&mut command);
    command.arg("-m").arg("compileall").args(raw_args);
    crate::compileall::pypy_cold::run_fed(&mut command, bytes)
        .with_context(|| format!("could not run {} -m compileall", python.display()))
}

/// Replaces this process with `python -m compileall ARGS`.
fn delegate(python: &Path, raw_args: &[OsString], why: &str) -> Result<i32> {
    tracing_log(why);
    let err = crate::child::hide_secrets(&mut Command::new(python))
        .arg("-m")
        .arg("compileall")
        .args(raw_args)
        .exec();
    Err(err).with_context(|| format!("could not run {} -m compileall", python.display()))
}

fn tracing_log(why: &str) {
    tracing::debug!("handing this command line to the interpreter's compileall ({why})");
}
