//! The local cache with the real client binary and the real interpreter: warm runs start no
//! Python, corruption is detected and repaired, concurrent runs share one cache, and bad
//! settings fail with a clear message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CLIENT: &str = env!("CARGO_BIN_EXE_pycache-client");

fn make_tree(root: &Path, files: usize) {
    let pkg = root.join("src/pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    for i in 0..files {
        std::fs::write(
            pkg.join(format!("m{i}.py")),
            format!("def f{i}(x):\n    return x * {i}\n"),
        )
        .unwrap();
    }
    std::fs::write(pkg.join("bad.py"), "x = (\n").unwrap();
}

fn copy(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    assert!(Command::new("cp")
        .arg("-a")
        .arg(base.join("pristine/src"))
        .arg(&dir)
        .status()
        .unwrap()
        .success());
    dir
}

fn client(cwd: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(CLIENT);
    cmd.current_dir(cwd)
        .env("PYCACHE_CACHE_DIR", cache)
        .env("PYCACHE_PYTHON", "python3")
        .env_remove("PYCACHE_SERVER")
        .env_remove("PYCACHE_TOKEN");
    cmd
}

fn sync_json(cwd: &Path, cache: &Path) -> (Output, serde_json::Value) {
    let out = client(cwd, cache)
        .args(["sync", "--json", "src"])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (out, json)
}

fn pycs(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root.join("src/pkg/__pycache__");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.strip_prefix(root).unwrap().to_path_buf(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn setup(files: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    make_tree(&base.join("pristine"), files);
    (tmp, base)
}

#[test]
fn second_run_on_a_fresh_copy_is_all_hits_with_no_python() {
    let (_tmp, base) = setup(20);
    let cache = base.join("cache");
    let (cold_out, cold) = sync_json(&copy(&base, "one"), &cache);
    assert_eq!(cold_out.status.code(), Some(1), "bad.py fails");
    assert_eq!(cold["compiled"], 21);
    assert!(cold["workers_started"].as_u64().unwrap() >= 1);

    let two = copy(&base, "two");
    let (warm_out, warm) = sync_json(&two, &cache);
    assert_eq!(
        warm_out.status.code(),
        Some(1),
        "a cached failure still fails the run"
    );
    assert_eq!(warm["local_hits"], 21, "{warm}");
    assert_eq!(warm["compiled"], 0);
    assert_eq!(
        warm["workers_started"], 0,
        "no Python process on a warm run"
    );
    assert!(
        String::from_utf8_lossy(&warm_out.stderr).contains("SyntaxError"),
        "the failure is reported again"
    );
    assert_eq!(pycs(&base.join("one")), pycs(&two));

    // And the third run on the same tree: everything up to date.
    let (_, noop) = sync_json(&two, &cache);
    assert_eq!(noop["up_to_date"], 20, "{noop}");
    assert_eq!(noop["workers_started"], 0);
}

#[test]
fn a_corrupted_cache_entry_is_detected_recompiled_and_replaced() {
    let (_tmp, base) = setup(3);
    let cache = base.join("cache");
    sync_json(&copy(&base, "one"), &cache);
    // Damage one entry: flip a byte in the middle of its body.
    let db = rusqlite::Connection::open(cache.join("store.db")).unwrap();
    let (id, mut body): (i64, Vec<u8>) = db
        .query_row("SELECT id, data FROM bodies ORDER BY id LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let mid = body.len() / 2;
    body[mid] ^= 0xFF;
    db.execute(
        "UPDATE bodies SET data = ?1 WHERE id = ?2",
        rusqlite::params![body, id],
    )
    .unwrap();
    let entries = |db: &rusqlite::Connection| -> i64 {
        db.query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(entries(&db), 4);

    let two = copy(&base, "two");
    let (out, json) = sync_json(&two, &cache);
    assert_eq!(json["corrupt_entries"], 1, "{json}");
    assert_eq!(json["compiled"], 1);
    assert_eq!(json["local_hits"], 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pycs(&base.join("one")), pycs(&two));
    assert_eq!(entries(&db), 4, "the entry was written again");

    let (_, again) = sync_json(&copy(&base, "three"), &cache);
    assert_eq!(again["corrupt_entries"], 0);
    assert_eq!(again["local_hits"], 4);
}

#[test]
fn two_concurrent_runs_share_one_cache() {
    let (_tmp, base) = setup(60);
    let cache = base.join("cache");
    let dirs = [copy(&base, "a"), copy(&base, "b")];
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            client(d, &cache)
                .args(["sync", "--json", "src"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains("corrupt"));
    }
    assert_eq!(pycs(&dirs[0]), pycs(&dirs[1]));
    let (_, warm) = sync_json(&copy(&base, "c"), &cache);
    assert_eq!(
        warm["local_hits"], 61,
        "both runs left a complete, valid cache: {warm}"
    );
    assert_eq!(warm["corrupt_entries"], 0);
}

#[test]
fn a_missing_interpreter_is_a_clear_error() {
    let (_tmp, base) = setup(1);
    let dir = copy(&base, "x");
    for args in [
        &["--python", "/nonexistent/python3", "compileall", "src"][..],
        &["--python", "/nonexistent/python3", "sync", "src"],
    ] {
        let out = client(&dir, &base.join("cache"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("/nonexistent/python3") && err.contains("--python"),
            "{err}"
        );
        assert!(!dir.join("src/pkg/__pycache__").exists(), "nothing written");
    }
}

#[test]
fn a_bad_python_is_a_clear_error() {
    let (_tmp, base) = setup(1);
    let dir = copy(&base, "x");
    let not_python = base.join("fake-python");
    std::fs::write(&not_python, "#!/bin/sh\necho hello\n").unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&not_python)
        .status()
        .unwrap();
    let out = client(&dir, &base.join("cache"))
        .arg("--python")
        .arg(&not_python)
        .args(["sync", "src"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fake-python"), "{err}");
    let out = client(&dir, &base.join("cache"))
        .args(["--python", "/etc/passwd", "sync", "src"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/etc/passwd"));
}

#[test]
fn an_unusable_cache_dir_costs_a_warning_not_the_build() {
    let (_tmp, base) = setup(2);
    let dir = copy(&base, "x");
    let blocker = base.join("not-a-dir");
    std::fs::write(&blocker, "file").unwrap();
    let (out, json) = sync_json(&dir, &blocker.join("cache"));
    assert_eq!(out.status.code(), Some(1), "only bad.py fails");
    assert_eq!(json["compiled"], 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("local cache"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pyproject_settings_apply_and_the_command_line_wins() {
    let (_tmp, base) = setup(2);
    let dir = copy(&base, "x");
    std::fs::write(
        dir.join("pyproject.toml"),
        "[tool.pycache]\noptimize = [0, 2]\nexclude = 'bad'\n",
    )
    .unwrap();
    let (out, json) = sync_json(&dir, &base.join("cache"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "bad.py is excluded: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json["written"], 4, "two files × two levels: {json}");
    let names: Vec<String> = pycs(&dir)
        .into_iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".opt-2.pyc")), "{names:?}");
    let out = client(&dir, &base.join("cache"))
        .args(["sync", "--json", "-x", "nomatch", "src"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the command line's exclude replaces the project's"
    );
}

/// `sync` writes on several threads; a .pyc that cannot be written is still one error, said
/// once and named, every other file is written, and the exit status says it, warm or cold.
#[test]
fn a_pyc_that_cannot_be_written_is_one_named_error_among_parallel_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_tree(&base.join("pristine"), 300);
    std::fs::remove_file(base.join("pristine/src/pkg/bad.py")).unwrap();
    // A `__pycache__` that is a file: the .pyc below it cannot be created.
    let blocked = base.join("pristine/src/blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join("__pycache__"), "not a directory").unwrap();
    std::fs::write(blocked.join("mod.py"), "X = 1\n").unwrap();
    let cache = base.join("cache");
    for run in ["cold", "warm"] {
        let tree = copy(base, run);
        let (out, json) = sync_json(&tree, &cache);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{run}: {stderr}");
        assert_eq!(json["errors"], 1, "{run}: {json}");
        assert_eq!(json["written"], 300, "{run}: {json}");
        assert_eq!(
            stderr.matches("blocked/mod.py").count(),
            1,
            "{run}: {stderr}"
        );
        assert_eq!(pycs(&tree).len(), 300, "{run}");
    }
}
