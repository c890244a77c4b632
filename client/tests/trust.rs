//! What a hostile writer can do to a reader, end to end with the real server binary, the real
//! client binary and the real interpreter: nothing that reaches the reader's .pyc files, its
//! exit status or its terminal. And the namespace a client names reaches the server.
//!
//! Needs `target/<profile>/pycache-server`, which `cargo test --workspace` builds.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pycache_client::interpreter::Interpreter;
use pycache_client::remote::ServerClient;
use pycache_client::settings::Secret;
use pycache_proto::pack::Frame;
use pycache_proto::Entry;
use pycache_testkit::server::Server;

mod support;

use support::project::{
    body_of, compileall_reference, copy_tree, fresh_copy, json, key_of, make_tree, sync,
};
use support::tree::all_pycs;

/// The warning text the hostile writer stores with an honest body: a colour escape, a carriage
/// return that would overwrite the line, a bell.
const HOSTILE_WARNINGS: &str = "src/app.py:1: SyntaxWarning: \x1b[31mred\r\x07 text\n";

/// A hostile write token, used before any honest writer, stores for the tree's keys a body
/// `c\x00`, a fake SyntaxError and an honest body with terminal escapes in its warnings. A reader
/// with an empty local cache gets compileall's .pyc files, exit 0, no fake error, and the
/// escapes escaped; nothing of the poison lands in its local cache either.
#[test]
fn a_hostile_writer_cannot_break_or_change_a_readers_build() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_tree(&base.join("pristine"));
    let data = base.join("server-data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()], base);
    let hostile = server.token("write", "hostile-pr");
    let reader = server.token("read", "laptop");
    let reference = compileall_reference(base);

    let python =
        pycache_client::interpreter::resolve_interpreter(Some(Path::new("python3")), None).unwrap();
    let interp = Interpreter::probe(&python, &base.join("probe")).unwrap();
    let pristine = base.join("pristine");
    let util_key = key_of(&interp, &pristine, "src/util.py");
    let frames = [
        Frame::new(
            util_key.clone(),
            &Entry::compiled(body_of(&interp, &reference, "src/util.py"), String::new()),
        ),
        Frame::new(
            key_of(&interp, &pristine, "src/lib.py"),
            &Entry::failed(
                "  File \"src/lib.py\", line 1\n    VALUE = [\nSyntaxError: planted by a hostile writer".into(),
                String::new(),
            ),
        ),
        Frame::new(
            key_of(&interp, &pristine, "src/app.py"),
            &Entry::compiled(
                body_of(&interp, &reference, "src/app.py"),
                HOSTILE_WARNINGS.into(),
            ),
        ),
    ];
    let writer =
        ServerClient::new(&server.base, Some(Secret(hostile)), Duration::from_secs(5)).unwrap();
    // The server itself refuses a body that is not one whole code object...
    let bad = Entry::compiled(b"c\x00".to_vec(), String::new());
    let mut other_key = util_key.clone();
    other_key.dfile = "src/other.py".into();
    let (answer, _) = writer.batch_put(&[Frame::new(other_key, &bad)]).unwrap();
    assert_eq!(
        (answer.stored.len(), answer.refused.len()),
        (0, 1),
        "{answer:?}"
    );
    let (answer, _) = writer.batch_put(&frames).unwrap();
    assert_eq!(
        answer.stored.len(),
        3,
        "the server stored the poison: {answer:?}"
    );
    // ...so util's `c\x00` is planted behind the server's back, as a compromised database would,
    // with a frame digest that matches: only the client's own check stands in the way.
    let bad_bytes = bad.encode();
    let body_digest = pycache_proto::EntryDigest::of(&bad_bytes);
    let frame_digest = pycache_proto::pack::FrameDigest::bind(&util_key.digest(), &body_digest);
    let script = format!(
        "import sqlite3\n\
         c = sqlite3.connect({db:?})\n\
         c.execute('INSERT INTO bodies (digest, size, entry) VALUES (?, ?, ?)', (bytes.fromhex('{body}'), {size}, bytes.fromhex('{bytes}')))\n\
         c.execute('UPDATE entries SET body_digest = ?, frame_digest = ? WHERE key_digest = ?', (bytes.fromhex('{body}'), bytes.fromhex('{frame}'), bytes.fromhex('{key}')))\n\
         c.commit()\n\
         print(c.total_changes)",
        db = data.join("pycache.db").display().to_string(),
        body = body_digest.to_hex(),
        size = bad_bytes.len(),
        bytes = hex::encode(&bad_bytes),
        frame = frame_digest.to_hex(),
        key = util_key.digest().to_hex(),
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = fresh_copy(base, "reader");
    let cache = base.join("reader-cache");
    let out = sync(
        &dir,
        &cache,
        &["--server", &server.base, "--token", &reader],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("the reader's stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let summary = json(&out);
    assert_eq!(
        summary["remote_hits"], 1,
        "only app's honest body is used: {summary}"
    );
    assert!(
        !stderr.contains("planted by a hostile writer"),
        "the fake SyntaxError is not replayed: {stderr}"
    );
    assert!(
        !out.stderr.iter().any(|b| matches!(b, 0x1b | b'\r' | 0x07)),
        "no raw control byte reaches stderr: {stderr:?}"
    );
    assert!(
        stderr.contains("\\x1b[31mred\\x0d\\x07 text"),
        "the stored warning is shown escaped: {stderr:?}"
    );
    assert!(
        stderr.contains("src/util.py") || stderr.contains("compiled locally"),
        "the bad body is said: {stderr}"
    );
    assert_eq!(all_pycs(&dir), all_pycs(&reference));
    let import = Command::new("python3")
        .current_dir(dir.join("src"))
        .args([
            "-c",
            "import app, util, lib; print(util.twice(lib.VALUE[2]))",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&import.stdout).trim(),
        "4",
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    // The reader's local cache holds no poison: a run from it alone gives the same files.
    let again = fresh_copy(base, "again");
    let out = sync(&again, &cache, &[], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(all_pycs(&again), all_pycs(&reference));
}

/// A server stand-in on a real socket: records the head of every request and answers 503 (the
/// client then gives the server up for the run and compiles locally).
fn recording_server() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut out = stream;
            let _ = out.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            let _ = tx.send(head);
        }
    });
    (base, rx)
}

fn namespace_header(head: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case(pycache_proto::api::NAMESPACE_HEADER)
            .then(|| value.trim().to_owned())
    })
}

/// `--namespace` and `PYCACHE_NAMESPACE` reach the server as the namespace header; without
/// either none is sent; a bad name is a clear error naming the setting, exit 2.
#[test]
fn the_namespace_is_sent_and_a_bad_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_tree(&base.join("pristine"));
    let (url, heads) = recording_server();
    // (options, environment, the header expected)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: [Case; 4] = [
        (&["--namespace", "main"], &[], Some("main")),
        (&[], &[("PYCACHE_NAMESPACE", "pr/1234")], Some("pr/1234")),
        (
            &["--namespace", "main"],
            &[("PYCACHE_NAMESPACE", "pr/1")],
            Some("main"),
        ),
        (&[], &[], None),
    ];
    for (i, (args, env, expected)) in cases.into_iter().enumerate() {
        let dir = fresh_copy(base, &format!("run{i}"));
        let mut all: Vec<&str> = vec!["--server", &url];
        all.extend(args);
        let out = sync(&dir, &base.join(format!("cache{i}")), &all, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("503"), "the server was asked: {stderr}");
        let head = heads.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(head.contains("/api/v1/info"), "{head}");
        assert_eq!(namespace_header(&head).as_deref(), expected, "{head}");
        while heads.try_recv().is_ok() {}
    }

    for (args, env) in [
        (&["--namespace", "../x"][..], &[][..]),
        (&[][..], &[("PYCACHE_NAMESPACE", "a b")][..]),
    ] {
        let out = sync(&fresh_copy(base, "bad"), &base.join("cache-bad"), args, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--namespace") && stderr.contains("not a valid namespace"),
            "{stderr}"
        );
        std::fs::remove_dir_all(base.join("bad")).unwrap();
    }
}

/// The tree of the namespace test: `app` prints what `util` and `extra` say.
fn make_project(root: &Path, with_extra: bool) {
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.py"), "import util\nprint(util.MESSAGE)\n").unwrap();
    std::fs::write(src.join("util.py"), "MESSAGE = 'honest'\n").unwrap();
    std::fs::write(src.join("lib.py"), "VALUE = 1\n").unwrap();
    if with_extra {
        std::fs::write(src.join("extra.py"), "EXTRA = 'honest extra'\n").unwrap();
    }
}

/// A real code object that says `poisoned`, compiled for `file`: what a hostile job's own
/// compile (a patched `py_compile`, a `sitecustomize`) would upload under the honest key.
fn poisoned_body(file: &str) -> Vec<u8> {
    let script = format!(
        "import marshal, sys\n\
         code = compile(\"MESSAGE = EXTRA = 'poisoned'\\nVALUE = 666\\n\", {file:?}, 'exec')\n\
         sys.stdout.buffer.write(marshal.dumps(code))"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

fn run_python(dir: &Path, code: &str) -> String {
    let out = Command::new("python3")
        .current_dir(dir.join("src"))
        .args(["-c", code])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The attack of a pull-request job that holds a write token of its own (the Nx "CREEP"
/// case): it re-uploads poisoned code objects for the keys `main` stored, and races `main` on a
/// key `main` has not stored yet. `main`'s readers get none of it; the pull request's own runs
/// hit its own entries and `main`'s.
fn a_pull_request_cannot_poison_main(database_url: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_project(&base.join("pristine"), false);
    let data = base.join("server-data");
    let mut args = vec!["--data-dir", data.to_str().unwrap()];
    if let Some(url) = database_url {
        args.extend(["--database-url", url]);
    }
    let server = Server::start(&args, base);
    let main_writer = server.token_for("write", "ci-main", "main", "main");
    let pr_writer = server.token_for("write", "ci-pr", "pr/*", "main");
    let reader = server.token_for("read", "laptop", "", "main");
    let python =
        pycache_client::interpreter::resolve_interpreter(Some(Path::new("python3")), None).unwrap();
    let interp = Interpreter::probe(&python, &base.join("probe")).unwrap();

    // main's CI stores the tree.
    let main_dir = fresh_copy(base, "main-ci");
    let out = sync(
        &main_dir,
        &base.join("main-cache"),
        &[
            "--server",
            &server.base,
            "--token",
            &main_writer,
            "--namespace",
            "main",
        ],
        &[],
    );
    assert_eq!(
        json(&out)["uploaded"],
        3,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The PR job poisons every key main stored and extra.py, which main has not stored yet.
    make_project(&base.join("with-extra"), true);
    let poison: Vec<Frame> = ["src/app.py", "src/util.py", "src/lib.py", "src/extra.py"]
        .iter()
        .map(|file| {
            Frame::new(
                key_of(&interp, &base.join("with-extra"), file),
                &Entry::compiled(poisoned_body(file), String::new()),
            )
        })
        .collect();
    let as_pr = |namespace: Option<&str>| {
        ServerClient::new(
            &server.base,
            Some(Secret(pr_writer.clone())),
            Duration::from_secs(5),
        )
        .unwrap()
        .with_namespace(namespace.map(str::to_owned))
    };
    for namespace in [Some("main"), None] {
        let refused = as_pr(namespace).batch_put(&poison);
        assert!(
            refused.is_err(),
            "the PR token wrote {namespace:?}: {refused:?}"
        );
    }
    let (stored, _) = as_pr(Some("pr/7")).batch_put(&poison).unwrap();
    assert_eq!(
        (stored.namespace.as_str(), stored.stored.len()),
        ("pr/7", 4)
    );

    // main adds extra.py after the PR stored its poison for it.
    std::fs::write(main_dir.join("src/extra.py"), "EXTRA = 'honest extra'\n").unwrap();
    let out = sync(
        &main_dir,
        &base.join("main-cache"),
        &[
            "--server",
            &server.base,
            "--token",
            &main_writer,
            "--namespace",
            "main",
        ],
        &[],
    );
    assert_eq!(
        json(&out)["uploaded"],
        1,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // main's readers: a fresh checkout, an empty cache, every file from the server, none
    // poisoned.
    let reader_dir = base.join("reader");
    copy_tree(&main_dir.join("src"), &{
        std::fs::create_dir_all(&reader_dir).unwrap();
        reader_dir.join("src")
    });
    let _ = std::fs::remove_dir_all(reader_dir.join("src/__pycache__"));
    let out = sync(
        &reader_dir,
        &base.join("reader-cache"),
        &["--server", &server.base, "--token", &reader],
        &[],
    );
    let summary = json(&out);
    assert_eq!(
        (
            summary["remote_hits"].as_u64(),
            summary["compiled"].as_u64()
        ),
        (Some(4), Some(0)),
        "{summary}"
    );
    assert_eq!(
        run_python(
            &reader_dir,
            "import app, extra, lib; print(extra.EXTRA, lib.VALUE)"
        ),
        "honest\nhonest extra 1\n"
    );
    let reference = base.join("reader-reference");
    copy_tree(&reader_dir, &reference);
    let _ = std::fs::remove_dir_all(reference.join("src/__pycache__"));
    let out = Command::new("python3")
        .current_dir(&reference)
        .args(["-m", "compileall", "-q", "src"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        all_pycs(&reader_dir),
        all_pycs(&reference),
        "0 poisoned .pyc"
    );

    // The PR's own runs: a changed lib.py is compiled once and uploaded to pr/8; the second
    // run (fresh cache) hits its own entry and main's three.
    let pr_dir = base.join("pr");
    copy_tree(&reader_dir, &pr_dir);
    let _ = std::fs::remove_dir_all(pr_dir.join("src/__pycache__"));
    std::fs::write(pr_dir.join("src/lib.py"), "VALUE = 2\n").unwrap();
    let pr_args = [
        "--server",
        &server.base,
        "--token",
        &pr_writer,
        "--namespace",
        "pr/8",
    ];
    let first = json(&sync(&pr_dir, &base.join("pr-cache-1"), &pr_args, &[]));
    assert_eq!(
        (
            first["remote_hits"].as_u64(),
            first["compiled"].as_u64(),
            first["uploaded"].as_u64()
        ),
        (Some(3), Some(1), Some(1)),
        "{first}"
    );
    let _ = std::fs::remove_dir_all(pr_dir.join("src/__pycache__"));
    let second = json(&sync(&pr_dir, &base.join("pr-cache-2"), &pr_args, &[]));
    assert_eq!(
        (second["remote_hits"].as_u64(), second["compiled"].as_u64()),
        (Some(4), Some(0)),
        "{second}"
    );
    assert_eq!(run_python(&pr_dir, "import lib; print(lib.VALUE)"), "2\n");
}

#[test]
fn a_pull_request_cannot_poison_main_on_sqlite() {
    a_pull_request_cannot_poison_main(None);
}

#[test]
fn a_pull_request_cannot_poison_main_on_postgres() {
    let pg = pycache_testkit::pg::start();
    a_pull_request_cannot_poison_main(Some(&pg.url()));
}
