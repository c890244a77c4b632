//! CPython 3.14 (Pyodide) through the local cache, and interpreters pycache does not know.
//!
//! The parity suites (`parity.rs`, `stdlib_parity.rs`) compare 3.14 and 3.15 with compileall;
//! this file checks what they cannot: that a fresh copy on 3.14 is served from the local cache
//! with no Python started, and that an interpreter newer than pycache knows is handed to its own
//! compileall (`compileall`) or refused with a clear message (`sync`), never guessed.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CLIENT: &str = env!("CARGO_BIN_EXE_pycache-client");

fn make_tree(root: &Path) {
    let pkg = root.join("src/pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    for i in 0..8 {
        std::fs::write(
            pkg.join(format!("m{i}.py")),
            format!("def f{i}(x):\n    return [x * {i} for _ in range(3)]\n"),
        )
        .unwrap();
    }
    std::fs::write(pkg.join("__init__.py"), "").unwrap();
    std::fs::write(pkg.join("bad.py"), "x = (\n").unwrap();
    std::fs::write(pkg.join("warns.py"), "ok = 1 is 1\n").unwrap();
}

fn copy(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(base.join("pristine/src"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

fn client(python: &Path, cwd: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(CLIENT);
    cmd.current_dir(cwd)
        .env("PYCACHE_CACHE_DIR", cache)
        .env("PYCACHE_PYTHON", python)
        .env_remove("PYCACHE_SERVER")
        .env_remove("PYCACHE_TOKEN")
        .env_remove("PYTHONPATH");
    cmd
}

fn sync_json(python: &Path, cwd: &Path, cache: &Path) -> (Output, serde_json::Value) {
    let out = client(python, cwd, cache)
        .args(["sync", "--json", "src"])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (out, json)
}

/// Every .pyc under `root`, relative path → bytes.
fn pycs(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "pyc") {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn cpython_314_fresh_copy_is_all_local_hits_with_no_python() {
    let python = &support::interp::pyodide_cpython(14).path;
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_tree(&base.join("pristine"));
    let cache = base.join("cache");

    // The reference: the interpreter's own compileall on a copy.
    let reference = copy(base, "reference");
    let out = Command::new(python)
        .current_dir(&reference)
        .args(["-m", "compileall", "-q", "src"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "bad.py fails: {out:?}");

    let cold_dir = copy(base, "cold");
    let (cold_out, cold) = sync_json(python, &cold_dir, &cache);
    assert_eq!(cold_out.status.code(), Some(1), "{cold}");
    assert_eq!(cold["compiled"], 11, "{cold}");
    assert!(cold["workers_started"].as_u64().unwrap() >= 1, "{cold}");

    let warm_dir = copy(base, "warm");
    let (warm_out, warm) = sync_json(python, &warm_dir, &cache);
    let stderr = String::from_utf8_lossy(&warm_out.stderr);
    assert_eq!(warm_out.status.code(), Some(1), "a cached failure fails");
    assert_eq!(warm["local_hits"], 11, "{warm}");
    assert_eq!(warm["compiled"], 0, "{warm}");
    assert_eq!(
        warm["workers_started"], 0,
        "no Python on a warm run: {warm}"
    );
    assert!(stderr.contains("SyntaxError"), "{stderr}");
    assert!(stderr.contains("SyntaxWarning"), "{stderr}");
    let want = pycs(&reference);
    assert_eq!(want.len(), 10, "compileall wrote the 10 good files");
    assert_eq!(pycs(&cold_dir), want, "cold run: compileall's bytes");
    assert_eq!(pycs(&warm_dir), want, "warm run: compileall's bytes");
    assert!(
        want[0].1.starts_with(&[0x2b, 0x0e, b'\r', b'\n']),
        "magic 3627"
    );
}

/// A real interpreter (the default python3) made to report Python 3.16 by a sitecustomize.
fn pretend_316(base: &Path) -> PathBuf {
    let site = base.join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("sitecustomize.py"),
        "import sys\nsys.version_info = (3, 16, 0, 'alpha', 1)\n",
    )
    .unwrap();
    site
}

#[test]
fn newer_python_compileall_is_handed_to_its_own_compileall() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_tree(&base.join("pristine"));
    let site = pretend_316(base);
    let dir = copy(base, "one");
    let out = client(Path::new("python3"), &dir, &base.join("cache"))
        .env("PYTHONPATH", &site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYCACHE_DEBUG", "1")
        .args(["compileall", "-q", "src"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "handing this command line to the interpreter's compileall \
             (Python 3.16.0, newer than the 3.15 pycache was checked against)"
        ),
        "{stderr}"
    );
    assert!(
        !base.join("cache/entries").exists(),
        "nothing cached: the interpreter's compileall did the work"
    );
    assert_eq!(pycs(&dir).len(), 10);
}

#[test]
fn newer_python_sync_refuses_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_tree(&base.join("pristine"));
    let site = pretend_316(base);
    let dir = copy(base, "one");
    let out = client(Path::new("python3"), &dir, &base.join("cache"))
        .env("PYTHONPATH", &site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["sync", "src"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is Python 3.16.0, newer than the 3.15 pycache was checked against")
            && stderr.contains("pycache-client compileall"),
        "{stderr}"
    );
    assert!(pycs(&dir).is_empty(), "nothing written");
}
