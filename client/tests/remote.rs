//! End to end with the real server binary and the real client binary: the server tier of
//! `sync` and `compileall`, and the promise that the cache never breaks a build.
//!
//! Needs `target/<profile>/pycache-server`, which `cargo test --workspace` builds.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use pycache_testkit::pg;
use pycache_testkit::server::Server;

const CLIENT: &str = env!("CARGO_BIN_EXE_pycache-client");

/// A pycache-server process on 127.0.0.1:0 over `data_dir` (or `database_url`), logging beside
/// `data_dir`; killed on drop.
fn start_server(data_dir: &Path, database_url: Option<&str>) -> Server {
    let data_dir = data_dir.to_str().expect("a UTF-8 temp path");
    let mut args = vec!["--data-dir", data_dir];
    if let Some(url) = database_url {
        args.extend(["--database-url", url]);
    }
    let log_dir = Path::new(data_dir)
        .parent()
        .expect("the data dir has a parent");
    Server::start(&args, log_dir)
}

/// A small project: a package, a subpackage, a file with a SyntaxError and one with a warning.
fn make_tree(root: &Path) {
    let pkg = root.join("src/app");
    std::fs::create_dir_all(pkg.join("sub")).unwrap();
    std::fs::write(pkg.join("__init__.py"), "VERSION = '1.0'\n").unwrap();
    std::fs::write(
        pkg.join("core.py"),
        "def add(a, b):\n    return a + b\n\nclass K:\n    x = [i * i for i in range(10)]\n",
    )
    .unwrap();
    std::fs::write(pkg.join("sub/__init__.py"), "").unwrap();
    std::fs::write(
        pkg.join("sub/util.py"),
        "import os\n\ndef here():\n    return os.getcwd()\n",
    )
    .unwrap();
    std::fs::write(pkg.join("broken.py"), "def f(:\n    pass\n").unwrap();
    std::fs::write(pkg.join("warns.py"), "ok = 1 is 1\n").unwrap();
}

/// Copies `from` to `to` preserving mtimes (they go into .pyc headers).
fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

struct Run {
    out: Output,
    json: serde_json::Value,
}

fn sync(
    cwd: &Path,
    cache: &Path,
    server: Option<&str>,
    token: Option<&str>,
    extra: &[&str],
) -> Run {
    sync_with(Path::new("python3"), cwd, cache, server, token, extra)
}

/// `sync` with another target interpreter.
fn sync_with(
    python: &Path,
    cwd: &Path,
    cache: &Path,
    server: Option<&str>,
    token: Option<&str>,
    extra: &[&str],
) -> Run {
    let mut cmd = Command::new(CLIENT);
    cmd.current_dir(cwd)
        .env_remove("PYCACHE_SERVER")
        .env_remove("PYCACHE_TOKEN")
        .env("PYCACHE_CACHE_DIR", cache)
        .env("PYCACHE_PYTHON", python)
        .env("PYCACHE_TIMEOUT", "2");
    if let Some(s) = server {
        cmd.args(["--server", s]);
    }
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.args(extra).args(["sync", "--json", "src"]);
    let out = cmd.output().expect("run pycache-client");
    // A run that fails before the summary (--require-server) has no JSON; `n` then says so.
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    Run { out, json }
}

fn n(run: &Run, field: &str) -> u64 {
    run.json[field].as_u64().unwrap_or_else(|| {
        panic!(
            "{field} missing in {}; stderr: {}",
            run.json,
            String::from_utf8_lossy(&run.out.stderr)
        )
    })
}

fn stderr(run: &Run) -> String {
    String::from_utf8_lossy(&run.out.stderr).into_owned()
}

/// Every .pyc under `root`, relative path → bytes.
fn pycs(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "pyc") {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// compileall's own result for the same tree, as the reference.
fn compileall_reference(python: &Path, base: &Path) -> PathBuf {
    let dir = base.join("reference");
    std::fs::create_dir_all(&dir).unwrap();
    copy_tree(&base.join("pristine/src"), &dir.join("src"));
    let out = Command::new(python)
        .current_dir(&dir)
        .args(["-m", "compileall", "-q", "src"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the tree has one broken file, so compileall exits 1"
    );
    dir
}

fn fresh_copy(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    copy_tree(&base.join("pristine/src"), &dir.join("src"));
    dir
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    make_tree(&base.join("pristine"));
    (tmp, base)
}

/// Cold sync uploads everything; a fresh copy with an empty local cache is all remote hits
/// with no Python started, byte-identical to compileall; a read-only token reads and uploads
/// nothing.
fn cold_then_warm(database_url: Option<&str>) {
    cold_then_warm_on(Path::new("python3"), database_url);
}

fn cold_then_warm_on(python: &Path, database_url: Option<&str>) {
    let (_tmp, base) = setup();
    let server = start_server(&base.join("server-data"), database_url);
    let write = server.token("write", "ci");
    let read = server.token("read", "pull-requests");
    let reference = compileall_reference(python, &base);

    let cold = sync_with(
        python,
        &fresh_copy(&base, "cold"),
        &base.join("cache-cold"),
        Some(&server.base),
        Some(&write),
        &[],
    );
    assert_eq!(
        cold.out.status.code(),
        Some(1),
        "broken.py fails: {}",
        stderr(&cold)
    );
    assert_eq!(n(&cold, "files"), 6);
    assert_eq!(n(&cold, "compiled"), 6, "{}", cold.json);
    assert_eq!(
        n(&cold, "uploaded"),
        6,
        "every result, failures included, is uploaded: {}",
        cold.json
    );
    assert!(stderr(&cold).contains("SyntaxError"), "{}", stderr(&cold));

    let warm_dir = fresh_copy(&base, "warm");
    let warm = sync_with(
        python,
        &warm_dir,
        &base.join("cache-warm"),
        Some(&server.base),
        Some(&read),
        &[],
    );
    assert_eq!(
        warm.out.status.code(),
        Some(1),
        "the failure, compiled here again, still fails the run"
    );
    // A failure from the server is a hint, not a verdict (a hostile writer could plant one):
    // broken.py is compiled here; the five successes are remote hits.
    assert_eq!(n(&warm, "remote_hits"), 5, "{}", warm.json);
    assert_eq!(n(&warm, "compiled"), 1);
    assert_eq!(n(&warm, "uploaded"), 0, "a read token uploads nothing");
    assert!(
        stderr(&warm).contains("SyntaxError"),
        "the failure is reported: {}",
        stderr(&warm)
    );
    assert!(
        stderr(&warm).contains("SyntaxWarning"),
        "the warning is replayed: {}",
        stderr(&warm)
    );
    assert!(
        !stderr(&warm).contains("warning: "),
        "no pycache warning on a healthy run: {}",
        stderr(&warm)
    );
    // Issue 23, case 9: the read token's skipped uploads are said, once.
    assert_eq!(
        stderr(&warm).matches("can only read").count(),
        1,
        "{}",
        stderr(&warm)
    );
    assert!(stderr(&warm).contains("not uploaded"), "{}", stderr(&warm));
    assert_eq!(
        pycs(&warm_dir),
        pycs(&reference),
        ".pyc files must equal compileall's"
    );
    // Issue 23, case 6: the local cache's statistics count the run's remote hits as hits.
    let stats = Command::new(CLIENT)
        .env("PYCACHE_CACHE_DIR", base.join("cache-warm"))
        .args(["--no-config", "cache", "stats", "--json"])
        .output()
        .unwrap();
    assert!(stats.status.success(), "{stats:?}");
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["interpreters"][0]["remote_hits"], 5, "{stats}");
    assert_eq!(stats["interpreters"][0]["hits"], 0, "{stats}");
    assert_eq!(stats["interpreters"][0]["compiled"], 1, "{stats}");
    let text = Command::new(CLIENT)
        .env("PYCACHE_CACHE_DIR", base.join("cache-warm"))
        .args(["--no-config", "cache", "stats"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("83.3%") && !text.contains(" 0.0%"), "{text}");
}

/// The same on CPython 3.14 (Pyodide): the server tier serves a version no native interpreter
/// here has.
#[test]
fn cold_sync_uploads_and_fresh_copy_is_all_remote_hits_on_cpython_314() {
    cold_then_warm_on(&support::interp::pyodide_cpython(14).path, None);
}

#[test]
fn cold_sync_uploads_and_fresh_copy_is_all_remote_hits_on_sqlite() {
    cold_then_warm(None);
}

#[test]
fn cold_sync_uploads_and_fresh_copy_is_all_remote_hits_on_postgres() {
    let pg = pg::start();
    cold_then_warm(Some(&pg.url()));
}

#[test]
fn corrupt_server_entry_is_detected_recompiled_and_replaced() {
    let (_tmp, base) = setup();
    let server = start_server(&base.join("server-data"), None);
    let write = server.token("write", "ci");
    let first = sync(
        &fresh_copy(&base, "a"),
        &base.join("cache-a"),
        Some(&server.base),
        Some(&write),
        &[],
    );
    assert_eq!(n(&first, "uploaded"), 6);
    // Flip the last byte of the largest stored body (core.py's, compressed at rest) behind the
    // server's back.
    let db = base.join("server-data/pycache.db");
    let script = format!(
        "import sqlite3\n\
         c = sqlite3.connect({:?})\n\
         k, e = c.execute(\"SELECT digest, entry FROM bodies ORDER BY size DESC LIMIT 1\").fetchone()\n\
         e = bytearray(e); e[-1] ^= 0xFF\n\
         c.execute('UPDATE bodies SET entry = ? WHERE digest = ?', (bytes(e), k)); c.commit()\n\
         print(c.total_changes)",
        db.display().to_string()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let reference = compileall_reference(Path::new("python3"), &base);
    let dir = fresh_copy(&base, "b");
    let second = sync(
        &dir,
        &base.join("cache-b"),
        Some(&server.base),
        Some(&write),
        &[],
    );
    assert_eq!(
        n(&second, "corrupt_entries"),
        1,
        "{}\n{}",
        second.json,
        stderr(&second)
    );
    // (broken.py's stored failure is only a hint: it is compiled here too.)
    assert_eq!(n(&second, "remote_hits"), 4);
    assert_eq!(n(&second, "compiled"), 2);
    assert!(stderr(&second).contains("corrupt"), "{}", stderr(&second));
    assert_eq!(pycs(&dir), pycs(&reference));

    let third = sync(
        &fresh_copy(&base, "c"),
        &base.join("cache-c"),
        Some(&server.base),
        Some(&write),
        &[],
    );
    assert_eq!(
        n(&third, "corrupt_entries"),
        0,
        "the corrupt entry was replaced: {}",
        stderr(&third)
    );
    assert_eq!(n(&third, "remote_hits"), 5);
}

#[test]
fn server_down_costs_a_warning_not_the_build() {
    let (_tmp, base) = setup();
    // A port with nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let reference = compileall_reference(Path::new("python3"), &base);
    let dir = fresh_copy(&base, "down");
    let run = sync(&dir, &base.join("cache"), Some(&url), Some("whatever"), &[]);
    assert_eq!(
        run.out.status.code(),
        Some(1),
        "only broken.py fails the run"
    );
    assert_eq!(
        stderr(&run).matches("pycache: warning").count(),
        1,
        "one warning: {}",
        stderr(&run)
    );
    assert!(
        stderr(&run).contains(&url),
        "the warning names the server: {}",
        stderr(&run)
    );
    assert_eq!(n(&run, "compiled"), 6);
    assert_eq!(pycs(&dir), pycs(&reference));

    let strict = sync(
        &fresh_copy(&base, "strict"),
        &base.join("cache2"),
        Some(&url),
        Some("x"),
        &["--require-server"],
    );
    assert_eq!(strict.out.status.code(), Some(2), "{}", stderr(&strict));
}

#[test]
fn server_that_never_answers_is_given_up_within_the_timeout() {
    let (_tmp, base) = setup();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accept connections and never answer.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let dir = fresh_copy(&base, "hang");
    let started = Instant::now();
    let run = sync(&dir, &base.join("cache"), Some(&url), Some("t"), &[]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(n(&run, "compiled"), 6);
    assert!(
        stderr(&run).contains("pycache: warning"),
        "{}",
        stderr(&run)
    );
    assert_eq!(
        pycs(&dir),
        pycs(&compileall_reference(Path::new("python3"), &base))
    );
}

#[test]
fn server_killed_during_the_run_still_gives_correct_pycs() {
    let (_tmp, base) = setup();
    let mut server = start_server(&base.join("server-data"), None);
    let write = server.token("write", "ci");
    let dir = fresh_copy(&base, "killed");
    let mut cmd = Command::new(CLIENT);
    cmd.current_dir(&dir)
        .env("PYCACHE_CACHE_DIR", base.join("cache"))
        .env("PYCACHE_PYTHON", "python3")
        .env("PYCACHE_TIMEOUT", "2")
        .args([
            "--server",
            &server.base,
            "--token",
            &write,
            "sync",
            "--json",
            "src",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(150));
    server.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "only broken.py fails: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pycs(&dir),
        pycs(&compileall_reference(Path::new("python3"), &base))
    );
}

#[test]
fn wrong_token_is_said_loudly_and_the_build_goes_on() {
    let (_tmp, base) = setup();
    let server = start_server(&base.join("server-data"), None);
    let _ = server.token("write", "ci");
    let dir = fresh_copy(&base, "badtoken");
    let run = sync(
        &dir,
        &base.join("cache"),
        Some(&server.base),
        Some("not-a-real-token"),
        &[],
    );
    assert_eq!(run.out.status.code(), Some(1), "only broken.py fails");
    assert!(stderr(&run).contains("WARNING"), "{}", stderr(&run));
    assert!(stderr(&run).contains("401"), "{}", stderr(&run));
    assert_eq!(
        pycs(&dir),
        pycs(&compileall_reference(Path::new("python3"), &base))
    );

    let strict = sync(
        &fresh_copy(&base, "strict"),
        &base.join("cache2"),
        Some(&server.base),
        Some("nope"),
        &["--require-server"],
    );
    assert_eq!(strict.out.status.code(), Some(2));
    assert!(
        stderr(&strict).contains("--require-server"),
        "{}",
        stderr(&strict)
    );
}

#[test]
fn compileall_mode_keeps_stdout_exactly_compileall_with_a_server() {
    let (_tmp, base) = setup();
    let server = start_server(&base.join("server-data"), None);
    let write = server.token("write", "ci");
    let reference = base.join("ref");
    std::fs::create_dir_all(&reference).unwrap();
    copy_tree(&base.join("pristine/src"), &reference.join("src"));
    let expected = Command::new("python3")
        .current_dir(&reference)
        .args(["-m", "compileall", "src"])
        .output()
        .unwrap();
    for (name, cache) in [("first", "c1"), ("second", "c2")] {
        let dir = fresh_copy(&base, name);
        let got = Command::new(CLIENT)
            .current_dir(&dir)
            .env("PYCACHE_CACHE_DIR", base.join(cache))
            .env("PYCACHE_PYTHON", "python3")
            .args([
                "--server",
                &server.base,
                "--token",
                &write,
                "compileall",
                "src",
            ])
            .output()
            .unwrap();
        assert_eq!(got.status.code(), expected.status.code());
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            String::from_utf8_lossy(&expected.stdout),
            "{name} run"
        );
        assert_eq!(
            String::from_utf8_lossy(&got.stderr),
            String::from_utf8_lossy(&expected.stderr),
            "{name} run"
        );
        assert_eq!(pycs(&dir), pycs(&reference), "{name} run");
    }
}

#[test]
fn status_shows_the_scope_and_hides_the_token_and_stats_reads_the_server() {
    let (_tmp, base) = setup();
    let server = start_server(&base.join("server-data"), None);
    let write = server.token("write", "ci");
    let dir = fresh_copy(&base, "s");
    let run = |args: &[&str]| {
        Command::new(CLIENT)
            .current_dir(&dir)
            .env("PYCACHE_CACHE_DIR", base.join("cache"))
            .env("PYCACHE_PYTHON", "python3")
            .args(["--server", &server.base, "--token", &write])
            .args(args)
            .output()
            .unwrap()
    };
    let status = run(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{text}");
    assert!(text.contains("scope write"), "{text}");
    assert!(text.contains("uploads to:   default"), "{text}");
    assert!(text.contains("reads from:   default"), "{text}");
    assert!(text.contains("cpython"), "{text}");
    assert!(!text.contains(&write), "the token never shows: {text}");
    assert!(text.contains("redacted"), "{text}");

    sync(
        &dir,
        &base.join("cache"),
        Some(&server.base),
        Some(&write),
        &[],
    );
    let stats = run(&["stats"]);
    assert_eq!(stats.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(json["entries"], 6, "{json}");
    assert!(json["interpreters"][0]["cache_tag"]
        .as_str()
        .unwrap()
        .starts_with("cpython-"));
}

/// One entry past the server's entry limit does not lose the whole upload: it is skipped (said
/// once) and the rest is stored, so a fresh copy elsewhere finds everything but that one.
#[test]
fn an_oversized_entry_is_skipped_and_the_rest_uploaded() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let data = base.join("server-data");
    let data_str = data.to_str().unwrap();
    let server = Server::start(&["--data-dir", data_str, "--max-entry-size", "64KiB"], base);
    let write = server.token("write", "ci");
    let src = base.join("one/src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        std::fs::write(src.join(format!("small{i}.py")), format!("X = {i}\n")).unwrap();
    }
    // A generated module whose compiled body is far past 64 KiB.
    let big: String = (0..4000)
        .map(|i| format!("V{i} = 'value number {i}'\n"))
        .collect();
    std::fs::write(src.join("generated.py"), big).unwrap();
    let cold = sync(
        &base.join("one"),
        &base.join("cache-one"),
        Some(&server.base),
        Some(&write),
        &[],
    );
    assert_eq!(cold.out.status.code(), Some(0), "{}", stderr(&cold));
    assert_eq!(cold.json["uploaded"], 8, "{}", cold.json);
    assert_eq!(cold.json["upload_too_large"], 1, "{}", cold.json);
    assert_eq!(
        stderr(&cold).matches("larger than the server").count(),
        1,
        "said once: {}",
        stderr(&cold)
    );
    copy_tree(&base.join("one"), &base.join("two"));
    std::fs::remove_dir_all(base.join("two/src/__pycache__")).unwrap();
    let warm = sync(
        &base.join("two"),
        &base.join("cache-two"),
        Some(&server.base),
        Some(&write),
        &[],
    );
    assert_eq!(warm.json["remote_hits"], 8, "{}", warm.json);
    assert_eq!(warm.json["compiled"], 1, "{}", warm.json);
}

/// `GET path` at `server` over plain HTTP/1.1 (one request, connection closed), with a bearer
/// token when given: the status line's code and the body.
fn http_get(server: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "a plain body is expected: {head}"
    );
    (status, body.to_owned())
}

/// The value of the sample `series` (name and labels, as written) in Prometheus text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.trim().parse().unwrap())
    })
}

/// Issue 23, case 3: the server counts a file as one lookup. The client asks for two keys per
/// file (the exact one, with the path, and the path-free one it relocates), and the server
/// counted each: a fresh server and 19 files gave 38 misses, and a second client served all 19
/// added 19 hits and 19 misses. Now: 19 misses, then 19 hits and no miss more, per interpreter
/// and namespace too, and a hit rate, through `/metrics` and `/api/v1/stats`.
fn one_lookup_per_file(database_url: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let pkg = base.join("pristine/src/pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    for i in 0..19 {
        std::fs::write(pkg.join(format!("m{i:02}.py")), format!("N = {i}\n")).unwrap();
    }
    let server = start_server(&base.join("server-data"), database_url);
    let write = server.token("write", "ci");
    let read = server.token("read", "laptops");
    let probe = Command::new("python3")
        .args([
            "-c",
            "import sys, importlib.util; print(sys.implementation.cache_tag, importlib.util.MAGIC_NUMBER.hex())",
        ])
        .output()
        .unwrap();
    let probe = String::from_utf8(probe.stdout).unwrap();
    let (cache_tag, magic) = probe.trim().split_once(' ').unwrap();
    let counts = |result: &str| {
        let (status, metrics) = http_get(&server, "/metrics", None);
        assert_eq!(status, 200, "{metrics}");
        let labelled = format!(
            "pycache_lookups_total{{namespace=\"default\",cache_tag=\"{cache_tag}\",magic=\"{magic}\",result=\"{result}\"}}"
        );
        (
            sample(
                &metrics,
                if result == "hit" {
                    "pycache_hits_total"
                } else {
                    "pycache_misses_total"
                },
            ),
            sample(&metrics, &labelled),
            metrics,
        )
    };

    let cold = sync(
        &fresh_copy(base, "cold"),
        &base.join("cache-cold"),
        Some(&server.base),
        Some(&write),
        &[],
    );
    assert_eq!(cold.out.status.code(), Some(0), "{}", stderr(&cold));
    assert_eq!(n(&cold, "compiled"), 19, "{}", cold.json);
    let (misses, labelled, metrics) = counts("miss");
    assert_eq!(misses, Some(19.0), "one miss per file: {metrics}");
    assert_eq!(labelled, Some(19.0), "{metrics}");
    assert_eq!(counts("hit").0, Some(0.0), "{metrics}");

    // Another client, another path, an empty local cache: all 19 from the server.
    let warm = sync(
        &fresh_copy(base, "warm"),
        &base.join("cache-warm"),
        Some(&server.base),
        Some(&read),
        &[],
    );
    assert_eq!(warm.out.status.code(), Some(0), "{}", stderr(&warm));
    assert_eq!(n(&warm, "remote_hits"), 19, "{}", warm.json);
    let (hits, labelled, metrics) = counts("hit");
    assert_eq!(hits, Some(19.0), "one hit per file: {metrics}");
    assert_eq!(labelled, Some(19.0), "{metrics}");
    assert_eq!(counts("miss").0, Some(19.0), "no miss added: {metrics}");
    assert_eq!(sample(&metrics, "pycache_hit_rate"), Some(0.5), "{metrics}");

    let (status, stats) = http_get(&server, "/api/v1/stats", Some(&read));
    assert_eq!(status, 200, "{stats}");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["hits"], 19, "{stats}");
    assert_eq!(stats["misses"], 19, "{stats}");
    assert_eq!(stats["hit_rate"], 0.5, "{stats}");
    let interpreters = stats["lookups_by_interpreter"].as_array().unwrap();
    assert_eq!(interpreters.len(), 1, "{stats}");
    assert_eq!(interpreters[0]["cache_tag"], cache_tag, "{stats}");
    assert_eq!(interpreters[0]["magic"], magic, "{stats}");
    assert_eq!(interpreters[0]["hits"], 19, "{stats}");
    assert_eq!(interpreters[0]["misses"], 19, "{stats}");
    assert_eq!(interpreters[0]["hit_rate"], 0.5, "{stats}");
    let namespaces = stats["lookups_by_namespace"].as_array().unwrap();
    assert_eq!(namespaces.len(), 1, "{stats}");
    assert_eq!(namespaces[0]["namespace"], "default", "{stats}");
    assert_eq!(namespaces[0]["hits"], 19, "{stats}");
    assert_eq!(namespaces[0]["misses"], 19, "{stats}");
}

#[test]
fn a_file_is_one_lookup_in_the_server_counts_on_sqlite() {
    one_lookup_per_file(None);
}

#[test]
fn a_file_is_one_lookup_in_the_server_counts_on_postgres() {
    let pg = pg::start();
    one_lookup_per_file(Some(&pg.url()));
}
