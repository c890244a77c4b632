//! `pycache-client compileall [ARGS]`: compileall's `main()`, with compiling done by the
//! engine. Command lines pycache does not run itself are handed to the interpreter's own
//! compileall, unchanged, so usage errors and `--help` are the real ones.

use std::ffi::OsString;
use std::io::{self, BufRead};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::compileall::args::{self, CompileallArgs, Dialect, Parsed};
use crate::compileall::plan::{Event, FileOptions, PlanContext, Planner};
use crate::engine::{self, EngineConfig, RemoteTier, Style, Summary};
use crate::interpreter::Interpreter;
use crate::local_cache::LocalCache;
use crate::pyc::InvalidationMode;
use crate::settings::Settings;
use crate::workers::WorkerPool;

/// Runs compileall; returns the process exit status.
pub fn run(settings: &Settings, raw_args: Vec<OsString>) -> Result<i32> {
    let python = crate::interpreter::resolve_interpreter(settings.python.as_deref())?;
    let interp = Interpreter::probe(&python, &settings.cache_dir)?;
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
    let cwd = std::env::current_dir().context("the current directory is not accessible")?;
    let ctx = plan_context(&interp, &cwd);
    let opts = FileOptions {
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
                    println!("Error reading file list {}", flist.to_string_lossy());
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
            .sys_path(&cwd)
            .into_iter()
            .map(|s| OsString::from_vec(s.into_bytes()))
            .collect();
        path_planner.compile_path(&sys_path);
        return execute(settings, &interp, path_planner.events, &args);
    }
    let maxlevels = args.recursion.or(args.maxlevels);
    for dest in &dests {
        if engine::is_file(Path::new(dest)) {
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
    execute(settings, &interp, events, &args)
}

fn execute(
    settings: &Settings,
    interp: &Interpreter,
    events: Vec<Event>,
    args: &CompileallArgs,
) -> Result<i32> {
    let mode = args
        .invalidation_mode
        .unwrap_or_else(InvalidationMode::default_from_env);
    let mut summary = Summary::default();
    let style = Style::Compileall { quiet: args.quiet };
    let ok = run_engine(
        settings,
        interp,
        events,
        style,
        mode,
        args.hardlink_dupes,
        &mut summary,
    )
    .context("writing compileall's output failed")?;
    Ok(if ok { 0 } else { 1 })
}

/// Opens the caches, connects to the server, and runs the engine over `events` with a worker
/// pool of the target interpreter: the part `compileall` and `sync` share.
pub fn run_engine(
    settings: &Settings,
    interp: &Interpreter,
    events: Vec<Event>,
    style: Style,
    invalidation_mode: InvalidationMode,
    hardlink_dupes: bool,
    summary: &mut Summary,
) -> Result<bool> {
    let local = open_local_cache(settings);
    let connected = crate::remote::connect(settings)?;
    let tier = connected.as_ref().map(remote_tier);
    let pool = WorkerPool::new(interp, settings.jobs);
    let cfg = EngineConfig {
        style,
        invalidation_mode,
        hardlink_dupes,
        magic: interp.magic,
        cache_tag: &interp.cache_tag,
        settings: &interp.settings,
        siphash13: interp.hash_based_siphash13,
        stdout_encoding: &interp.stdout_encoding,
        local: local.as_ref(),
        remote: tier.as_ref(),
    };
    let ok = engine::run(events, &cfg, &pool, summary)?;
    pool.shutdown();
    Ok(ok)
}

/// The local cache, or `None` (with a warning) when it is disabled or cannot be opened: the
/// cache never breaks a build.
pub fn open_local_cache(settings: &Settings) -> Option<LocalCache> {
    if !settings.local_cache {
        return None;
    }
    match LocalCache::open(&settings.cache_dir) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!(
                "pycache: warning: the local cache {} cannot be used ({e}); compiling without it. Set --cache-dir or PYCACHE_CACHE_DIR to a writable directory.",
                settings.cache_dir.display()
            );
            None
        }
    }
}

/// The engine's view of a connected server, sized by its advertised limits.
pub fn remote_tier(c: &crate::remote::Connected) -> RemoteTier<'_> {
    RemoteTier {
        remote: &c.remote,
        can_write: c.can_write(),
        max_batch_keys: usize::try_from(c.info.max_batch_keys)
            .unwrap_or(usize::MAX)
            .max(1),
        max_upload_bytes: usize::try_from(c.info.max_request_bytes / 2)
            .unwrap_or(8 << 20)
            .clamp(64 << 10, 32 << 20),
    }
}

/// What the planner needs from the probe.
pub fn plan_context(interp: &Interpreter, cwd: &Path) -> PlanContext {
    PlanContext {
        version: (interp.version.0, interp.version.1),
        magic: interp.magic,
        cache_tag: interp.cache_tag.clone(),
        interp_optimize: interp.optimize,
        pycache_prefix: interp.pycache_prefix.clone().map(OsString::from),
        recursion_limit: i64::from(interp.recursion_limit),
        process_pool: interp.process_pool,
        cwd: cwd.to_path_buf(),
    }
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
    tracing_log(why);
    let err = Command::new(python)
        .arg("-m")
        .arg("compileall")
        .args(raw_args)
        .exec();
    Err(err).with_context(|| format!("could not run {} -m compileall", python.display()))
}

fn tracing_log(why: &str) {
    if std::env::var_os("PYCACHE_DEBUG").is_some() {
        eprintln!("pycache: handing this command line to the interpreter's compileall ({why})");
    }
}
