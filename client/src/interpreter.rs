//! The target interpreter: which one to use, and what it is.
//!
//! `python -m compileall`'s output depends on the interpreter (magic number, cache tag, version)
//! and on its setup (optimization level, warnings filters, `no_debug_ranges`, ...). This module
//! finds the interpreter ([`resolve_interpreter`]), asks it those questions once with a small
//! embedded script ([`Interpreter::probe`]), and caches the answer on disk so that a run where
//! everything is up to date or a cache hit starts no Python process at all.

mod answer;
mod cache;
mod support;

pub use support::{Unchecked, KNOWN_IMPLEMENTATIONS, NEWEST_KNOWN};

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The script the interpreter runs to describe itself.
const PROBE_SCRIPT: &str = include_str!("interpreter/probe.py");
/// The line prefix that starts the probe's JSON answer (anything printed before it is ignored).
const PROBE_MARKER: &str = "@@PYCACHE-PROBE@@";
/// A probe that takes longer than this is a broken interpreter.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Oldest supported version.
const MIN_VERSION: (u32, u32) = (3, 8);

/// Picks the interpreter: `explicit` (`--python`, `PYCACHE_PYTHON`, `[tool.pycache] python`, as
/// the settings resolved it) > `virtual_env/bin/python` (the active virtualenv) > the `bin/python` of the virtualenv
/// pycache-client is installed in > `python3` on `PATH`. [`resolve_project_interpreter`] puts
/// the project's own environment after the active one.
///
/// A bare name (no `/`) is looked up on `PATH`; a path is made absolute against the current
/// directory without resolving symlinks (a venv's `bin/python` is a symlink that must stay one).
/// A path that does not exist is returned as is: [`Interpreter::probe`] reports it clearly.
pub fn resolve_interpreter(
    explicit: Option<&Path>,
    virtual_env: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    resolve_project_interpreter(explicit, virtual_env, None)
}

/// [`resolve_interpreter`] for a project command (`sync`, `verify`): the project's environment
/// (`.venv` beside the nearest pyproject.toml) comes after the active virtualenv and before
/// the one pycache-client is installed in, as uv picks a project's interpreter.
pub fn resolve_project_interpreter(
    explicit: Option<&Path>,
    virtual_env: Option<&Path>,
    project_env: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let chosen = match (explicit, virtual_env.or(project_env)) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(venv)) => venv.join("bin").join("python"),
        (None, None) => crate::venv::installed_environment().map_or_else(
            || PathBuf::from("python3"),
            |env| env.join("bin").join("python"),
        ),
    };
    if chosen.components().count() == 1 && !chosen.as_os_str().as_encoded_bytes().contains(&b'/') {
        return find_on_path(&chosen).ok_or_else(|| {
            anyhow::anyhow!(
                "no `{}` was found on PATH; pass --python PATH or set PYCACHE_PYTHON",
                chosen.display()
            )
        });
    }
    Ok(std::path::absolute(&chosen)?)
}

/// The first executable file called `name` in a `PATH` directory.
fn find_on_path(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
        .and_then(|found| std::path::absolute(found).ok())
}

/// Whether `path` is a regular file with an execute bit.
fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Why an interpreter could not be probed. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing at that path.
    #[error("the Python interpreter {} was not found; pass --python PATH or set PYCACHE_PYTHON", .0.display())]
    NotFound(PathBuf),
    /// The path exists but cannot be run.
    #[error("{} is not an executable file; pass --python PATH or set PYCACHE_PYTHON", .0.display())]
    NotExecutable(PathBuf),
    /// The program ran but did not answer like a Python interpreter.
    #[error("{} does not look like a Python interpreter ({detail}); pass --python PATH or set PYCACHE_PYTHON", .path.display())]
    NotPython {
        /// The program that was run.
        path: PathBuf,
        /// What went wrong (exit status, stderr, unparsable output).
        detail: String,
    },
    /// A Python older than 3.8.
    #[error("{} is Python {version}, which is unsupported; pycache needs Python 3.8 or newer", .path.display())]
    TooOld {
        /// The interpreter.
        path: PathBuf,
        /// Its version, e.g. `3.7.16`.
        version: String,
    },
}

/// What pycache needs to know about the target interpreter. Serialized as the probe cache file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interpreter {
    /// The interpreter as resolved (absolute; symlinks kept, so a venv stays that venv).
    pub executable: PathBuf,
    /// The program that really runs: `sys.executable` as the interpreter reports it (for a
    /// pyenv shim, the version it picked). The workers run this one, with no wrapper start.
    pub real_executable: PathBuf,
    /// `sys.implementation.name`: `cpython` or `pypy`.
    pub implementation: String,
    /// `sys.version_info[:3]`.
    pub version: (u32, u32, u32),
    /// `importlib.util.MAGIC_NUMBER`.
    pub magic: [u8; 4],
    /// `sys.implementation.cache_tag`, e.g. `cpython-311`; empty when it is None (then
    /// [`Interpreter::unchecked`] hands the run to the interpreter's compileall).
    pub cache_tag: String,
    /// `sys.flags.optimize` (`-O`, `PYTHONOPTIMIZE`).
    pub optimize: u8,
    /// `sys.pycache_prefix` (`PYTHONPYCACHEPREFIX`), `None` when unset.
    pub pycache_prefix: Option<String>,
    /// Canonical fingerprint of the setup that changes compiled bytes or whether a compile
    /// succeeds; see `answer::settings_fingerprint` for what it holds.
    pub settings: String,
    /// `sys.stdout.encoding` when stdout is a pipe; compileall re-encodes error messages with it.
    pub stdout_encoding: String,
    /// `sys.path` after the entry the interpreter puts first for `-m` (the current directory).
    pub sys_path_tail: Vec<String>,
    /// `sys.flags.safe_path` (`-P`, `PYTHONSAFEPATH`): no current-directory entry at all.
    pub safe_path: bool,
    /// `importlib.util.source_hash` is SipHash-1-3 (CPython 3.11+), not SipHash-2-4; measured.
    pub hash_based_siphash13: bool,
    /// `sys.getrecursionlimit()`, compileall's default `maxlevels` on 3.9+.
    pub recursion_limit: u32,
    /// Whether compileall's `-j` can start a process pool: false where
    /// `concurrent.futures.process._check_system_limits()` refuses (Emscripten/Pyodide, too few
    /// semaphores), and compileall 3.10+ then compiles serially.
    pub process_pool: bool,
    /// `os.link` exists (not on Emscripten/Pyodide, where `--hardlink-dupes` raises
    /// AttributeError at the first duplicate: such runs go to the interpreter's compileall).
    pub hardlinks: bool,
}

impl Interpreter {
    /// Probes `executable` once, caching the answer as JSON under `cache_dir/interpreters/`.
    ///
    /// The cache file is named after the interpreter path, the metadata of the path and of the
    /// binary it resolves to, every `PYTHON*` environment variable and the locale variables; it
    /// also records the `sys.path` directories, whose modification times must still match (a new
    /// `.pth` file changes `sys.path`). A valid cached answer starts no Python process. Cache
    /// trouble is never fatal: the interpreter is probed instead.
    pub fn probe(executable: &Path, cache_dir: &Path) -> Result<Interpreter, ProbeError> {
        let key = cache::probe_key(executable, PROBE_SCRIPT).map_err(|err| match err.kind() {
            ErrorKind::NotFound => ProbeError::NotFound(executable.to_path_buf()),
            _ => ProbeError::NotExecutable(executable.to_path_buf()),
        })?;
        if !is_executable_file(executable) {
            return Err(ProbeError::NotExecutable(executable.to_path_buf()));
        }
        if let Some(found) = cache::load(cache_dir, &key) {
            tracing::debug!(path = %executable.display(), "interpreter probe cache hit");
            return Ok(found);
        }
        let interpreter = run_probe(executable)?;
        cache::store(cache_dir, &key, &interpreter);
        Ok(interpreter)
    }

    /// `sys.path` as compileall's no-argument mode iterates it: `[cwd] + sys_path_tail` (without
    /// the `cwd` entry under `-P` / `PYTHONSAFEPATH`).
    pub fn sys_path(&self, cwd: &Path) -> Vec<String> {
        let head = (!self.safe_path).then(|| cwd.to_string_lossy().into_owned());
        head.into_iter()
            .chain(self.sys_path_tail.iter().cloned())
            .collect()
    }
}

/// Runs the probe script and turns its answer into an [`Interpreter`].
fn run_probe(executable: &Path) -> Result<Interpreter, ProbeError> {
    let not_python = |detail: String| ProbeError::NotPython {
        path: executable.to_path_buf(),
        detail,
    };
    // `-B`: the probe's own imports (and those a `.pth` file makes at start-up) write no
    // .pyc; which .pyc files exist is the run's decision alone.
    let mut child = crate::child::hide_secrets(&mut Command::new(executable))
        .arg("-B")
        .arg("-c")
        .arg(PROBE_SCRIPT)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| match err.kind() {
            ErrorKind::NotFound => ProbeError::NotFound(executable.to_path_buf()),
            ErrorKind::PermissionDenied => ProbeError::NotExecutable(executable.to_path_buf()),
            _ => not_python(format!("could not start it: {err}")),
        })?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let _ = stdout.map(|mut s| s.read_to_end(&mut out));
        let _ = stderr.map(|mut s| s.read_to_end(&mut err));
        let _ = tx.send((out, err));
    });
    let Ok((out, err)) = rx.recv_timeout(PROBE_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(not_python(format!(
            "no answer within {}s",
            PROBE_TIMEOUT.as_secs()
        )));
    };
    let status = child.wait().map_err(|e| not_python(e.to_string()))?;
    let out = String::from_utf8_lossy(&out);
    let Some(json) = out.lines().rev().find_map(|l| l.strip_prefix(PROBE_MARKER)) else {
        let stderr = String::from_utf8_lossy(&err);
        let tail: String = stderr
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        return Err(not_python(format!("{status}; {tail}")));
    };
    let answer = answer::ProbeAnswer::parse(json).map_err(|e| not_python(e.to_string()))?;
    let version = answer.version_tuple().map_err(not_python)?;
    if (version.0, version.1) < MIN_VERSION {
        return Err(ProbeError::TooOld {
            path: executable.to_path_buf(),
            version: format!("{}.{}.{}", version.0, version.1, version.2),
        });
    }
    answer.into_interpreter(executable).map_err(not_python)
}
