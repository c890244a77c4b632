//! Discovery of the target interpreters the parity suites run against.
//!
//! Every CPython 3.8+ under `$(pyenv root)/versions/*/bin/python3`, plus `/usr/bin/pypy3` when it
//! exists, plus CPython 3.14 and 3.15 on Pyodide (`python3.14`/`python3.15` in the `bin` folder
//! `tools/pyodide-python/install.sh` fills: `$PYCACHE_PYODIDE_DIR`, else
//! `~/.cache/pycache/pyodide-python`; `.ci/run` installs them and sets `PYCACHE_PYODIDE_DIR`,
//! which makes them required). Their standard library lives in the package's
//! `python_stdlib.zip`; it is extracted once per machine into the Cargo target's tmp folder, and
//! `Interp::stdlib` points there. The default `python3` on `PATH` must be among them: discovery panics otherwise, and
//! also when nothing is found, so a machine without interpreters fails the suite instead of
//! passing it silently. `PYCACHE_PARITY_PYTHONS` (paths separated by `:`) replaces discovery,
//! for a quick local run against one interpreter.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One target interpreter, as it describes itself.
#[derive(Debug, Clone)]
pub struct Interp {
    /// The executable the tests pass to `python -m compileall` and to the client.
    pub path: PathBuf,
    /// `sys.implementation.name`: `cpython` or `pypy`.
    pub implementation: String,
    /// `sys.version_info[:3]`.
    pub version: (u32, u32, u32),
    /// `sys.implementation.cache_tag`, e.g. `cpython-311`.
    pub cache_tag: String,
    /// The directory of its standard library (`sysconfig.get_paths()["stdlib"]`).
    pub stdlib: PathBuf,
    /// True for the interpreter the default `python3` resolves to.
    pub is_default: bool,
    /// CPython compiled to WebAssembly (Pyodide, `sys.platform == "emscripten"`): no
    /// subprocesses, so compileall `-j` cannot run there.
    pub pyodide: bool,
}

impl Interp {
    /// A short name for reports: `cpython-3.11`.
    pub fn label(&self) -> String {
        format!(
            "{}-{}.{}",
            self.implementation, self.version.0, self.version.1
        )
    }

    /// CPython whose serial compileall is byte-reproducible (3.11+, DESIGN.md §6).
    pub fn bytes_must_match(&self) -> bool {
        self.implementation == "cpython" && self.version >= (3, 11, 0)
    }

    /// Whether compileall can start worker processes (`-j`): not on Pyodide.
    pub fn has_subprocesses(&self) -> bool {
        !self.pyodide
    }

    /// True when the interpreter is CPython of at least `3.minor`.
    pub fn cpython_at_least(&self, minor: u32) -> bool {
        self.implementation == "cpython" && self.version >= (3, minor, 0)
    }
}

const PROBE: &str = "import sys, os, sysconfig\n\
print(sys.implementation.name)\n\
print('%d.%d.%d' % sys.version_info[:3])\n\
print(sys.implementation.cache_tag)\n\
print(sysconfig.get_paths()['stdlib'])\n\
print(os.path.realpath(sys.executable))\n\
print(sys.platform)\n";

struct Probe {
    interp: Interp,
    real_executable: PathBuf,
}

fn probe(path: &Path) -> Option<Probe> {
    let output = Command::new(path).args(["-I", "-c", PROBE]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let [implementation, version, cache_tag, stdlib, real, platform] = lines[..] else {
        return None;
    };
    let pyodide = platform == "emscripten";
    let stdlib = match pyodide {
        true => pyodide_stdlib(path, version)?,
        false => PathBuf::from(stdlib),
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    Some(Probe {
        interp: Interp {
            path: path.to_path_buf(),
            implementation: implementation.to_string(),
            version,
            cache_tag: cache_tag.to_string(),
            stdlib,
            is_default: false,
            pyodide,
        },
        real_executable: PathBuf::from(real),
    })
}

/// The folder of the Pyodide commands, and whether they are required (`PYCACHE_PYODIDE_DIR` set).
fn pyodide_dir() -> (PathBuf, bool) {
    if let Some(dir) = std::env::var_os("PYCACHE_PYODIDE_DIR").filter(|d| !d.is_empty()) {
        return (PathBuf::from(dir), true);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    (home.join(".cache/pycache/pyodide-python"), false)
}

/// The commands `install.sh` writes.
const PYODIDE_COMMANDS: &[&str] = &["python3.14", "python3.15"];

/// The `.py` files of a Pyodide interpreter's `python_stdlib.zip` (install.sh links it as
/// `DIR/lib/python3.X/python_stdlib.zip`), extracted once into the target's tmp folder.
fn pyodide_stdlib(command: &Path, version: &str) -> Option<PathBuf> {
    let dir = command.parent()?.parent()?;
    let name = command.file_name()?.to_string_lossy().into_owned();
    let zip = dir.join("lib").join(&name).join("python_stdlib.zip");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pyodide-stdlib")
        .join(version);
    if target.join("os.py").exists() {
        return Some(target);
    }
    let parent = target.parent()?;
    std::fs::create_dir_all(parent).ok()?;
    let partial = tempfile::tempdir_in(parent).ok()?;
    // Whole-second mtimes (the zip's own): Emscripten's stat rounds a fractional mtime where
    // a native stat truncates it, which would put two different seconds into pyc headers.
    const EXTRACT: &str = r#"import os, sys, time, zipfile
z = zipfile.ZipFile(sys.argv[1])
for info in z.infolist():
    if info.filename.endswith('.py'):
        path = z.extract(info, sys.argv[2])
        t = int(time.mktime(info.date_time + (0, 0, -1)))
        os.utime(path, (t, t))
"#;
    let status = Command::new("python3")
        .args(["-I", "-c", EXTRACT])
        .arg(&zip)
        .arg(partial.path())
        .status()
        .ok()?;
    assert!(status.success(), "could not extract {}", zip.display());
    // Another test binary may have finished first: either copy is the same.
    let _ = std::fs::rename(partial.keep(), &target);
    Some(target)
}

fn pyenv_root() -> PathBuf {
    if let Ok(output) = Command::new("pyenv").arg("root").output() {
        let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() && !text.is_empty() {
            return PathBuf::from(text);
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".pyenv")
}

fn candidates() -> Vec<PathBuf> {
    if let Some(list) = std::env::var_os("PYCACHE_PARITY_PYTHONS") {
        return std::env::split_paths(&list).collect();
    }
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(pyenv_root().join("versions")) {
        for entry in entries.flatten() {
            let python = entry.path().join("bin/python3");
            if python.exists() {
                found.push(python);
            }
        }
    }
    let pypy = PathBuf::from("/usr/bin/pypy3");
    if pypy.exists() {
        found.push(pypy);
    }
    let (pyodide, _) = pyodide_dir();
    for command in PYODIDE_COMMANDS {
        let python = pyodide.join("bin").join(command);
        if python.exists() {
            found.push(python);
        }
    }
    found
}

fn discover() -> Vec<Interp> {
    let default_real = probe(Path::new("python3"))
        .expect("the default `python3` must run: it is the one interpreter every suite covers")
        .real_executable;
    let mut interps: Vec<Interp> = Vec::new();
    let mut default_seen = false;
    for path in candidates() {
        let Some(found) = probe(&path) else { continue };
        if found.interp.version < (3, 8, 0) {
            continue;
        }
        let mut interp = found.interp;
        interp.is_default = found.real_executable == default_real;
        default_seen |= interp.is_default;
        interps.push(interp);
    }
    let restricted = std::env::var_os("PYCACHE_PARITY_PYTHONS").is_some();
    if pyodide_dir().1 && !restricted {
        let found = interps.iter().filter(|i| i.pyodide).count();
        assert_eq!(
            found,
            PYODIDE_COMMANDS.len(),
            "PYCACHE_PYODIDE_DIR is set but not every Pyodide command in {}/bin runs \
             (run tools/pyodide-python/install.sh)",
            pyodide_dir().0.display()
        );
    }
    assert!(
        !interps.is_empty(),
        "no Python 3.8+ interpreter found under $(pyenv root)/versions or /usr/bin/pypy3"
    );
    assert!(
        default_seen || restricted,
        "the default python3 ({}) is not among the interpreters found",
        default_real.display()
    );
    interps.sort_by(|a, b| (&a.implementation, a.version).cmp(&(&b.implementation, b.version)));
    interps
}

/// All interpreters under test, discovered once per test binary.
pub fn interpreters() -> &'static [Interp] {
    static INTERPS: OnceLock<Vec<Interp>> = OnceLock::new();
    INTERPS.get_or_init(discover)
}

/// The interpreters that get the full option matrix: the default `python3`, the oldest and the
/// newest natively installed CPython, every Pyodide CPython (3.14, 3.15: the versions no other
/// machine covers) and every PyPy. The others run the core subset (see `parity.rs`).
/// `PYCACHE_PARITY_FULL=1` gives every interpreter the full matrix.
pub fn full_matrix(interp: &Interp) -> bool {
    if std::env::var_os("PYCACHE_PARITY_FULL").is_some() {
        return true;
    }
    let cpython: Vec<&Interp> = interpreters()
        .iter()
        .filter(|i| i.implementation == "cpython" && !i.pyodide)
        .collect();
    let oldest = cpython.first().map(|i| i.version);
    let newest = cpython.last().map(|i| i.version);
    interp.is_default
        || interp.pyodide
        || interp.implementation != "cpython"
        || Some(interp.version) == oldest
        || Some(interp.version) == newest
}

/// CPython `3.minor` on Pyodide; panics with what to run when it is not installed, so a test
/// that needs it fails rather than passing without it.
pub fn pyodide_cpython(minor: u32) -> &'static Interp {
    interpreters()
        .iter()
        .find(|i| i.pyodide && i.version.0 == 3 && i.version.1 == minor)
        .unwrap_or_else(|| {
            panic!(
                "CPython 3.{minor} on Pyodide is not installed in {}/bin: run \
                 tools/pyodide-python/install.sh",
                pyodide_dir().0.display()
            )
        })
}

/// The natively installed CPython the default `python3` is.
pub fn default_cpython() -> &'static Interp {
    interpreters()
        .iter()
        .find(|i| i.is_default)
        .expect("the default python3 is among the interpreters (discovery checks it)")
}

/// A natively installed CPython of another minor version than the default `python3` (3.12
/// first, then the newest), for tests about which interpreter a command picks; panics when the
/// machine has none, so such a test fails rather than passing without one.
pub fn other_cpython() -> &'static Interp {
    let default = default_cpython().version;
    let others: Vec<&Interp> = interpreters()
        .iter()
        .filter(|i| {
            i.implementation == "cpython"
                && !i.pyodide
                && (i.version.0, i.version.1) != (default.0, default.1)
        })
        .collect();
    others
        .iter()
        .find(|i| (i.version.0, i.version.1) == (3, 12))
        .or(others.last())
        .copied()
        .expect("a CPython other than the default python3 under $(pyenv root)/versions")
}
