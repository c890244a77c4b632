//! Integration tests of the interpreter probe and the worker pool, with real interpreters: every
//! CPython 3.8+ under `$(pyenv root)/versions`, `pypy3` when installed, and the default `python3`.
//! Each compile is checked against what `python -m compileall` itself writes and prints.

use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::Command;

use pycache_client::interpreter::{resolve_interpreter, Interpreter, ProbeError};

/// The interpreters to test: pyenv CPythons 3.8+, pypy3, and the default python3 (required).
fn interpreters() -> Vec<PathBuf> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs::home_dir().unwrap().join(".pyenv"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|dir| {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut parts = name.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next(), parts.next()) >= (Some(3), Some(8)) && dir.join("bin/python3").exists()
    });
    found.sort();
    let mut out: Vec<PathBuf> = found.into_iter().map(|d| d.join("bin/python3")).collect();
    out.extend(
        ["/usr/bin/pypy3"]
            .map(PathBuf::from)
            .into_iter()
            .filter(|p| p.exists()),
    );
    let default = resolve_interpreter(Some(Path::new("python3")), None).expect("python3 on PATH");
    out.push(default);
    out
}

fn probe(exe: &Path) -> Interpreter {
    let cache = tempfile::tempdir().unwrap();
    Interpreter::probe(exe, cache.path()).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `code` with `exe` and returns its stdout.
fn python(exe: &Path, code: &str) -> String {
    let out = Command::new(exe).args(["-c", code]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn probe_fields_match_what_python_says() {
    for exe in interpreters() {
        let interp = probe(&exe);
        let said = python(
            &exe,
            "import sys, importlib.util as u\n\
             print(sys.implementation.name, '%d.%d.%d' % sys.version_info[:3], u.MAGIC_NUMBER.hex(),\n\
             sys.implementation.cache_tag, sys.flags.optimize, sys.getrecursionlimit(), sys.stdout.encoding)\n\
             print('\\n'.join(sys.path[1:]))\n\
             print(u.source_hash(b'pycache').hex())",
        );
        let mut lines = said.lines();
        let head: Vec<&str> = lines.next().unwrap().split(' ').collect();
        let (v, m) = (interp.version, interp.magic);
        assert_eq!(head[0], interp.implementation, "{exe:?}");
        assert_eq!(head[1], format!("{}.{}.{}", v.0, v.1, v.2));
        assert_eq!(head[2], hex::encode(m));
        assert_eq!(head[3], interp.cache_tag);
        assert_eq!(head[4], interp.optimize.to_string());
        assert_eq!(head[5], interp.recursion_limit.to_string());
        assert_eq!(head[6], interp.stdout_encoding);
        let hash = lines.next_back().unwrap();
        let path: Vec<&str> = lines.collect();
        assert_eq!(path, interp.sys_path_tail, "{exe:?}");
        assert_eq!(interp.sys_path(Path::new("/cwd"))[0], "/cwd");
        let k0 = u64::from(u32::from_le_bytes(m));
        let ours = if interp.hash_based_siphash13 {
            let mut h = siphasher::sip::SipHasher13::new_with_keys(k0, 0);
            h.write(b"pycache");
            h.finish()
        } else {
            let mut h = siphasher::sip::SipHasher24::new_with_keys(k0, 0);
            h.write(b"pycache");
            h.finish()
        };
        assert_eq!(hash, hex::encode(ours.to_le_bytes()), "{exe:?}");
        let expect_13 = interp.implementation == "cpython" && v >= (3, 11, 0);
        assert_eq!(interp.hash_based_siphash13, expect_13, "{exe:?}");
        assert!(
            interp.settings.starts_with("v2;impl="),
            "{}",
            interp.settings
        );
    }
}

#[test]
fn probe_settings_follow_the_environment() {
    let exe = interpreters()
        .into_iter()
        .find(|p| probe(p).version >= (3, 11, 0))
        .unwrap();
    let plain = probe(&exe);
    let run = |var: &str, value: &str| {
        // Setting the variable in this (multi-threaded) test process would race with other
        // tests, so probe through a wrapper script that sets it.
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("python");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\n{var}={value} exec {} \"$@\"\n", exe.display()),
        )
        .unwrap();
        make_executable(&wrapper);
        (probe(&wrapper), dir)
    };
    let (no_ranges, _d1) = run("PYTHONNODEBUGRANGES", "1");
    assert!(
        no_ranges.settings.contains("ndr=1"),
        "{}",
        no_ranges.settings
    );
    assert!(plain.settings.contains("ndr=0"), "{}", plain.settings);
    let (errors, _d2) = run("PYTHONWARNINGS", "error");
    assert_ne!(errors.settings, plain.settings);
    let (optimized, _d3) = run("PYTHONOPTIMIZE", "2");
    assert_eq!(optimized.optimize, 2);
    let (prefixed, _d4) = run("PYTHONPYCACHEPREFIX", "/tmp/pfx");
    assert_eq!(prefixed.pycache_prefix.as_deref(), Some("/tmp/pfx"));
    assert_eq!(plain.pycache_prefix, None);
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn probe_cache_hit_starts_no_python() {
    let exe = resolve_interpreter(Some(Path::new("python3")), None).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let first = Interpreter::probe(&exe, cache.path()).unwrap();
    let dir = cache.path().join("interpreters");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one cache file, no temporary leftovers");
    // Doctor the cached answer: if the next probe returns it, no Python process answered.
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let doctored = text.replace(&format!("\"{}\"", first.cache_tag), "\"doctored-tag\"");
    assert_ne!(text, doctored);
    std::fs::write(&files[0], doctored).unwrap();
    let second = Interpreter::probe(&exe, cache.path()).unwrap();
    assert_eq!(second.cache_tag, "doctored-tag");
    // A corrupt cache file is ignored and replaced by a real probe.
    std::fs::write(&files[0], "{not json").unwrap();
    assert_eq!(Interpreter::probe(&exe, cache.path()).unwrap(), first);
}

#[test]
fn probe_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let missing = dir.path().join("nope/python");
    let err = Interpreter::probe(&missing, &cache).unwrap_err();
    assert!(matches!(err, ProbeError::NotFound(_)));
    assert_eq!(
        err.to_string(),
        format!(
            "the Python interpreter {} was not found; pass --python PATH or set PYCACHE_PYTHON",
            missing.display()
        )
    );
    let plain_file = dir.path().join("python");
    std::fs::write(&plain_file, "x").unwrap();
    assert!(matches!(
        Interpreter::probe(&plain_file, &cache),
        Err(ProbeError::NotExecutable(_))
    ));
    assert!(matches!(
        Interpreter::probe(dir.path(), &cache),
        Err(ProbeError::NotExecutable(_))
    ));
    let err = Interpreter::probe(Path::new("/bin/true"), &cache).unwrap_err();
    assert!(matches!(err, ProbeError::NotPython { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("does not look like a Python interpreter"),
        "{err}"
    );
    let root = interpreters()[0]
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    for old in ["2.7.18", "3.6.15", "3.7.16"] {
        let exe = root.join(old).join("bin/python");
        if exe.exists() {
            let err = Interpreter::probe(&exe, &cache).unwrap_err();
            assert!(matches!(err, ProbeError::TooOld { .. }), "{old}: {err}");
            assert!(err.to_string().contains("unsupported"), "{err}");
        }
    }
}

#[test]
fn resolve_prefers_explicit_paths_and_searches_path_for_names() {
    assert_eq!(
        resolve_interpreter(Some(Path::new("/x/python")), None).unwrap(),
        Path::new("/x/python")
    );
    let relative = resolve_interpreter(Some(Path::new("venv/bin/python")), None).unwrap();
    assert_eq!(
        relative,
        std::env::current_dir().unwrap().join("venv/bin/python")
    );
    assert!(resolve_interpreter(Some(Path::new("python3")), None)
        .unwrap()
        .is_absolute());
    let err = resolve_interpreter(Some(Path::new("no-such-python-anywhere")), None).unwrap_err();
    assert!(err.to_string().contains("PYCACHE_PYTHON"), "{err}");
}

#[path = "workers/compile.rs"]
mod compile;
