//! What pycache promises, each promise held by a test that was seen failing before its fix:
//! an entry is the compile of its key's bytes by that exact interpreter (entries bound to
//! their keys, the real interpreter behind a shim, the interpreter's own modules never shadowed),
//! compileall's semantics for overlapping arguments, and a closed stdout that ends the run the
//! way compileall's does.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::trees::package;
use support::{check, Case, Scope, Step, Tree};

const CLIENT: &str = env!("CARGO_BIN_EXE_pycache-client");

/// The client with a private cache, no server, and the default `python3`.
fn client(cwd: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(CLIENT);
    cmd.current_dir(cwd)
        .env("PYCACHE_CACHE_DIR", cache)
        .env_remove("PYCACHE_PYTHON")
        .env_remove("PYCACHE_SERVER")
        .env_remove("PYCACHE_TOKEN")
        .env_remove("PYCACHE_LOG")
        .env_remove("VIRTUAL_ENV")
        .env_remove("PYENV_VERSION");
    cmd
}

/// Every regular file below `root`, with its bytes.
fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let data = std::fs::read(&path).unwrap();
                out.push((path.strip_prefix(root).unwrap().to_path_buf(), data));
            }
        }
    }
    out.sort();
    out
}

fn write_modules(dir: &Path, count: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        std::fs::write(
            dir.join(format!("module_{i:04}.py")),
            format!("NAME = 'module number {i}'\n\ndef f(x):\n    return x + {i}\n"),
        )
        .unwrap();
    }
}

/// Two cache entries exchanged in the store must not give two wrong .pyc files.
#[test]
fn a_cache_entry_moved_under_another_key_is_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let one = tmp.path().join("one");
    std::fs::create_dir_all(one.join("pkg")).unwrap();
    std::fs::write(one.join("pkg/a.py"), "A = 'the first module'\n").unwrap();
    std::fs::write(one.join("pkg/b.py"), "B = 'the second module'\n").unwrap();
    let run = client(&one, &cache)
        .args(["compileall", "-q", "pkg"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let expected = files(&one.join("pkg/__pycache__"));
    assert_eq!(expected.len(), 2);

    // Swap the two entries' bodies in the store.
    let db = rusqlite::Connection::open(cache.join("store.db")).unwrap();
    let ids: Vec<i64> = db
        .prepare("SELECT id FROM bodies ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    db.execute_batch(&format!(
        "UPDATE bodies SET id = -1 WHERE id = {a}; UPDATE bodies SET id = {a} WHERE id = {b};
         UPDATE bodies SET id = {b} WHERE id = -1;",
        a = ids[0],
        b = ids[1]
    ))
    .unwrap();
    drop(db);

    std::fs::remove_dir_all(one.join("pkg/__pycache__")).unwrap();
    let again = client(&one, &cache)
        .args(["compileall", "-q", "pkg"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{again:?}");
    assert_eq!(
        files(&one.join("pkg/__pycache__")),
        expected,
        "the swapped entries were served as hits"
    );
}

/// A pyenv shim picks its interpreter from `.python-version`: a change there must change the
/// interpreter pycache uses, as it changes the one `python3 -m compileall` uses.
#[test]
fn a_version_manager_shim_is_followed_when_its_choice_changes() {
    let root = match Command::new("pyenv").arg("root").output() {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        }
        _ => panic!("pyenv is needed: this machine's python3 is a pyenv shim"),
    };
    let versions: Vec<String> = std::fs::read_dir(root.join("versions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|v| v.starts_with("3.12") || v.starts_with("3.13"))
        .collect();
    let v312 = versions
        .iter()
        .find(|v| v.starts_with("3.12"))
        .expect("a pyenv 3.12");
    let v313 = versions
        .iter()
        .find(|v| v.starts_with("3.13"))
        .expect("a pyenv 3.13");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let proj = tmp.path().join("proj");
    std::fs::create_dir_all(proj.join("pkg")).unwrap();
    std::fs::write(proj.join("pkg/m.py"), "M = 1\n").unwrap();
    let shim = root.join("shims/python3");
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    for version in [v312, v313] {
        std::fs::write(proj.join(".python-version"), format!("{version}\n")).unwrap();
        let _ = std::fs::remove_dir_all(proj.join("pkg/__pycache__"));
        let run = client(&proj, &cache)
            .arg("--python")
            .arg(&shim)
            .args(["compileall", "-q", "pkg"])
            .output()
            .unwrap();
        assert!(run.status.success(), "{run:?}");
        let minor = &version[2..4];
        assert_eq!(
            names(&proj.join("pkg/__pycache__")),
            [format!("m.cpython-3{minor}.pyc")],
            "with .python-version = {version}"
        );
    }
}

/// A project's own `json.py` or `logging.py` does not break pycache where
/// `python -m compileall` works (modules compileall itself imports from the project directory,
/// such as `warnings.py` on some versions, break both alike).
fn shadowing(t: &mut Tree, interp: &support::Interp) {
    package(t, interp);
    t.file(
        "proj/json.py",
        "raise ImportError('the project json module')\n",
    )
    .file(
        "proj/logging.py",
        "raise ImportError('the project logging module')\n",
    );
}

#[test]
fn project_modules_do_not_shadow_the_interpreters() {
    check(
        &Case {
            name: "shadowing",
            tree: shadowing,
            steps: vec![Step::new(&["-q", "."]).cwd("proj")],
        },
        Scope::Core,
    );
    // `sync` too.
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join("json.py"), "raise ImportError('project json')\n").unwrap();
    std::fs::write(
        proj.join("logging.py"),
        "raise ImportError('project logging')\n",
    )
    .unwrap();
    let run = client(&proj, &tmp.path().join("cache"))
        .args(["sync", "-q"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(proj.join("__pycache__").is_dir());
}

/// compileall compiles a file once per run: a later visit finds the pyc just written up to
/// date (and prints nothing for it).
#[test]
fn overlapping_arguments_compile_each_file_once() {
    check(
        &Case {
            name: "overlap_ddir",
            tree: package,
            steps: vec![
                Step::new(&["-q", "-d", "/x", "proj/top.py", "proj"]),
                Step::new(&["proj", "proj/pkg"]).fresh(),
                Step::new(&["-f", "proj/pkg", "proj"]).fresh(),
                Step::new(&["--invalidation-mode", "checked-hash", "proj/pkg", "proj"]).fresh(),
            ],
        },
        Scope::Core,
    );
}

/// `pycache-client compileall DIR | head -1` exits as compileall does (1, with the
/// BrokenPipeError on stderr), never with a panic.
#[test]
fn a_closed_stdout_ends_compileall_like_compileall() {
    let tmp = tempfile::tempdir().unwrap();
    // Enough lines to fill a pipe: the writer must see the reader go away mid-run.
    write_modules(&tmp.path().join("many"), 2500);
    let first_line_then_close = |mut cmd: Command| {
        let mut child = cmd
            .current_dir(tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            first,
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mut python = Command::new("python3");
    python.args(["-m", "compileall", "-f", "many"]);
    let (py_first, py_code, py_err) = first_line_then_close(python);
    let mut ours = client(tmp.path(), &tmp.path().join("cache"));
    ours.args(["compileall", "-f", "many"]);
    let (first, code, err) = first_line_then_close(ours);
    assert_eq!(first, py_first);
    assert_eq!(
        code, py_code,
        "pycache stderr: {err}\ncompileall stderr: {py_err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let last = |s: &str| s.trim_end().lines().last().unwrap_or("").to_owned();
    assert_eq!(last(&err), last(&py_err));
}

/// `sync --json` into a closed pipe is not a panic; the sync itself succeeded.
#[test]
fn sync_json_into_a_closed_pipe_does_not_panic() {
    let tmp = tempfile::tempdir().unwrap();
    write_modules(&tmp.path().join("src"), 3);
    let mut child = client(tmp.path(), &tmp.path().join("cache"))
        .args(["sync", "--json", "src"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(files(&tmp.path().join("src/__pycache__")).len(), 3);
}

/// `PYCACHE_LOG=debug` shows the client's own debug log on stderr, in plain text when stderr
/// is not a terminal.
#[test]
fn pycache_log_prints_the_clients_debug_log() {
    let tmp = tempfile::tempdir().unwrap();
    write_modules(&tmp.path().join("src"), 2);
    let out = client(tmp.path(), &tmp.path().join("cache"))
        .env("PYCACHE_LOG", "debug")
        .args(["sync", "src"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DEBUG") && stderr.contains("started a compile worker"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "a log written to a pipe has colour codes: {stderr:?}"
    );
    let quiet = client(tmp.path(), &tmp.path().join("cache2"))
        .args(["sync", "src"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("DEBUG"));
}

/// A source that changes between hashing and compiling must not poison the cache: the entry
/// stored under the first hash would be the compile of other bytes. The test holds the workers
/// back (a test-only gate file) until the client has hashed the tree, then changes the file.
#[test]
fn a_source_changed_during_a_run_is_not_cached_under_its_old_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let proj = tmp.path().join("proj");
    write_modules(&proj.join("src"), 20);
    let target = proj.join("src/target.py");
    std::fs::write(&target, "X = 1\n").unwrap();
    let gate = tmp.path().join("gate");
    let mut child = client(&proj, &cache)
        .env("PYCACHE_LOG", "pycache_client=debug")
        .env("PYCACHE_TEST_WORKER_GATE", &gate)
        .args(["sync", "src"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("local lookup done") {
                let _ = tx.send(true);
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    let hashed = rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok();
    // The file changes after it was hashed and before any worker reads it.
    std::fs::write(&target, "X = 2\n").unwrap();
    std::fs::write(&gate, "").unwrap();
    let status = child.wait().unwrap();
    assert!(hashed, "the client never logged the end of its lookup");
    assert!(status.success());
    let import = |root: &Path| -> String {
        let out = Command::new("python3")
            .current_dir(root.join("src"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args(["-c", "import target; print(target.X, target.__cached__)"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    // What was written is a pyc compileall could have written: it describes the new bytes.
    let pycache = proj.join("src/__pycache__");
    let pyc = std::fs::read_dir(&pycache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("target."))
        .expect("a pyc for target.py");
    let data = std::fs::read(&pyc).unwrap();
    let meta = std::fs::metadata(&target).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        u32::from_le_bytes(data[8..12].try_into().unwrap()),
        meta.mtime() as u32,
        "the header's mtime is the changed file's"
    );
    assert_eq!(import(&proj), "2");

    // Back to the first content, on a fresh tree: the cache must not answer with `X = 2`.
    std::fs::write(&target, "X = 1\n").unwrap();
    std::fs::remove_dir_all(&pycache).unwrap();
    let again = client(&proj, &cache)
        .args(["sync", "-q", "src"])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(
        import(&proj),
        "1",
        "the cache served the compile of the changed bytes for the original source"
    );
}

/// A killed client's temporary files (a `.pyc.<n>` beside the pyc) are removed by a later run.
/// (The local cache is one database: a killed run leaves no file of its own there.)
#[test]
fn temporary_files_of_a_killed_run_are_removed_later() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    write_modules(&tmp.path().join("src"), 2);
    // A process id that is surely gone: one we started and waited for.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let pycache = tmp.path().join("src/__pycache__");
    std::fs::create_dir_all(&pycache).unwrap();
    let stale_pyc = pycache.join(format!("module_0000.cpython-311.pyc.{pid:07}00003"));
    std::fs::write(&stale_pyc, b"half a pyc").unwrap();
    let touched = Command::new("touch")
        .args(["-d", "10 minutes ago"])
        .arg(&stale_pyc)
        .status()
        .unwrap();
    assert!(touched.success());
    let run = client(tmp.path(), &cache)
        .args(["sync", "-q", "src"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    assert!(!stale_pyc.exists(), "the abandoned .pyc.<n> is still there");
    assert_eq!(files(&pycache).len(), 2);
}

/// A source with a coding cookie makes the compile import its codec, a second read inside the
/// worker: the check of what was compiled must look at the source's own bytes, so the result
/// is cached like any other.
#[test]
fn a_source_with_a_coding_cookie_is_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    for copy in ["one", "two"] {
        let src = tmp.path().join(copy).join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("cyrillic.py"),
            b"# coding: iso-8859-5\nNAME = '\xbf\xe0\xd8\xd2\xd5\xe2'\n",
        )
        .unwrap();
    }
    let sync = |copy: &str| -> serde_json::Value {
        let out = client(&tmp.path().join(copy), &cache)
            .args(["sync", "--json", "src"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("changed while"), "{stderr}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(sync("one")["compiled"], 1);
    let second = sync("two");
    assert_eq!(second["compiled"], 0, "{second}");
    assert_eq!(second["local_hits"], 1, "{second}");
}
