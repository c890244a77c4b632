//! PyPy runs with nothing cached: compileall's own process compiles, pycache keeps the result.
//!
//! On PyPy a name in a compiled file is marshalled as an interned string (shared by reference)
//! exactly when an interned copy of it is alive at that moment, and PyPy's table of interned
//! strings holds them weakly: whether one is alive depends on the garbage of earlier compiles
//! and on when the garbage collector last ran. The bytes of a .pyc are therefore a function of
//! the compiling process's whole history, down to the size of its environment (one more
//! environment variable changes a quarter of rich's files). No worker can replay that history;
//! only compileall's own process, started as `python -m compileall ARGS` would be, gives its
//! bytes. So a PyPy run in which no planned file is in the local cache is handed to that
//! process unchanged (with `PYCACHE_PYTHON`, which only chose the interpreter, removed), and
//! the .pyc files it writes are then stored in the local cache, so the next run is served from
//! there. Harvesting is skipped when compileall printed anything on stderr (a compile warning
//! cannot be attributed to its file, and an entry must replay its warnings).

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use pycache_proto::{CacheKey, Entry};

use crate::compileall::plan::{Event, FileTask};
use crate::engine::resolve::lossless_text;
use crate::interpreter::Interpreter;
use crate::local_cache::{LocalCache, Lookup};
use crate::pyc::{self, InvalidationMode};

/// True when this run is PyPy's and compileall's own process should compile it: a target
/// PyPy, no server (its entries would have to be asked for first), and no planned file whose
/// entry is in the local cache.
pub fn applies(
    events: &[Event],
    interp: &Interpreter,
    server: Option<&str>,
    local: Option<&LocalCache>,
) -> bool {
    if interp.implementation != "pypy" || server.is_some() {
        return false;
    }
    let mut any = false;
    for task in tasks(events) {
        any = true;
        let Some(cache) = local else { continue };
        let Ok(source) = fs::read(&task.fullname) else {
            continue;
        };
        let source_hash = *blake3::hash(&source).as_bytes();
        for level in &task.levels {
            let digest = key(interp, task, level.effective, source_hash).digest();
            if matches!(cache.get(&digest), Lookup::Hit(_)) {
                return false;
            }
        }
    }
    any
}

/// Runs `python -m compileall ARGS`, passes its output through, stores what it wrote in the
/// local cache, and returns its exit status.
pub fn run(
    interp: &Interpreter,
    raw_args: &[OsString],
    stdin: Option<&[u8]>,
    events: &[Event],
    mode: InvalidationMode,
    local: Option<&LocalCache>,
) -> Result<i32> {
    let mut command = Command::new(&interp.executable);
    crate::child::hide_secrets(&mut command)
        .arg("-m")
        .arg("compileall")
        .args(raw_args)
        .env_remove("PYCACHE_PYTHON")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .stderr(Stdio::piped());
    let mut child = command.spawn().with_context(|| {
        format!(
            "could not run {} -m compileall",
            interp.executable.display()
        )
    })?;
    let feeder = feed(&mut child, stdin);
    let mut child_stderr = child.stderr.take().expect("piped stderr");
    let mut printed_on_stderr = false;
    let mut chunk = [0u8; 8192];
    loop {
        let n = match child_stderr.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading compileall's stderr failed"),
        };
        printed_on_stderr = true;
        let mut stderr = io::stderr().lock();
        stderr
            .write_all(&chunk[..n])
            .and_then(|()| stderr.flush())
            .context("writing compileall's stderr failed")?;
    }
    let status = child.wait().context("waiting for compileall failed")?;
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    if let (Some(cache), false) = (local, printed_on_stderr) {
        harvest(interp, events, mode, cache);
    }
    Ok(status.code().unwrap_or(1))
}

/// Stores every .pyc compileall wrote for a planned file whose header proves it was compiled
/// from the source as it is now.
fn harvest(interp: &Interpreter, events: &[Event], mode: InvalidationMode, cache: &LocalCache) {
    for task in tasks(events) {
        let (Ok(source), Ok(meta)) = (fs::read(&task.fullname), fs::metadata(&task.fullname))
        else {
            continue;
        };
        let header = pyc::header(
            mode,
            &pyc::HeaderInputs {
                magic: interp.magic,
                siphash13: interp.hash_based_siphash13,
                source: &source,
                mtime: pyc::python_mtime(&meta),
                size: meta.size(),
            },
        );
        let source_hash = *blake3::hash(&source).as_bytes();
        for level in &task.levels {
            let Ok(written) = fs::read(&level.cfile) else {
                continue;
            };
            if written.len() <= 16 || written[..16] != header {
                continue;
            }
            let digest = key(interp, task, level.effective, source_hash).digest();
            let entry = Entry::compiled(written[16..].to_vec(), String::new());
            if let Err(e) = cache.put(&digest, &entry) {
                tracing::debug!("could not store a compileall result in the local cache: {e}");
                return;
            }
        }
    }
}

/// Runs `command` with `stdin` as its standard input (output inherited); returns its status.
pub fn run_fed(command: &mut Command, stdin: &[u8]) -> io::Result<i32> {
    let mut child = command.stdin(Stdio::piped()).spawn()?;
    let feeder = feed(&mut child, Some(stdin));
    let status = child.wait()?;
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    Ok(status.code().unwrap_or(1))
}

/// Writes `bytes` to the child's stdin from a thread, then closes it.
fn feed(child: &mut Child, bytes: Option<&[u8]>) -> Option<std::thread::JoinHandle<()>> {
    let bytes = bytes?.to_vec();
    let mut pipe = child.stdin.take()?;
    Some(std::thread::spawn(move || {
        let _ = pipe.write_all(&bytes);
    }))
}

fn tasks(events: &[Event]) -> impl Iterator<Item = &FileTask> {
    events.iter().filter_map(|e| match e {
        Event::File(task) => Some(task),
        _ => None,
    })
}

/// The key the engine gives this file at this level.
fn key(interp: &Interpreter, task: &FileTask, optimization: u8, source_hash: [u8; 32]) -> CacheKey {
    CacheKey {
        source_hash,
        magic: interp.magic,
        cache_tag: interp.cache_tag.clone(),
        optimization,
        settings: interp.settings.clone(),
        dfile: lossless_text(task.recorded_name()),
    }
}
