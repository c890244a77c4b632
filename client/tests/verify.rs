//! `pycache-client verify` end to end: the real server binary, the real client binary, the
//! real interpreter. An honest cache is clean; an entry planted on the server or in the local
//! cache is found, named with its tier, key, namespace and writer, and purged; purging needs an
//! admin token.
//!
//! Needs `target/<profile>/pycache-server`, which `cargo test --workspace` builds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pycache_client::local_cache::LocalCache;
use pycache_client::remote::ServerClient;
use pycache_client::settings::Secret;
use pycache_proto::pack::Frame;
use pycache_proto::Entry;
use pycache_testkit::server::Server;

mod support;

use support::project::{fresh_copy, key_of, probe, run_client};

/// `pycache-client ARGS` in `cwd` from a clean environment, with `cache` as its local cache.
fn client(cwd: &Path, cache: &Path, args: &[&str]) -> Output {
    run_client(cwd, cache, args, &[])
}

/// Two modules, written once (mtimes kept by `cp -a` for every checkout).
fn make_tree(root: &Path) {
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.py"), "import util\nNAME = 'app'\n").unwrap();
    std::fs::write(src.join("util.py"), "def twice(x):\n    return 2 * x\n").unwrap();
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("no JSON: {}", text(out)))
}

/// A valid code object that is not `file`'s: other source compiled under its name.
fn other_code(file: &str) -> Vec<u8> {
    let script = format!(
        "import marshal, sys\n\
         code = compile(\"NAME = 'planted'\\nVALUE = 666\\n\", {file:?}, 'exec')\n\
         sys.stdout.buffer.write(marshal.dumps(code))"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

/// A server with a writer for `main` (`ci-main`), a second writer for `main` (`intruder`), a
/// reader and an admin.
struct Setup {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    server: Server,
    writer: String,
    intruder: String,
    reader: String,
    admin: String,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    make_tree(&base.join("pristine"));
    let data = base.join("server-data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()], &base);
    Setup {
        writer: server.token_for("write", "ci-main", "main", "main"),
        intruder: server.token_for("write", "intruder", "main", "main"),
        reader: server.token_for("read", "laptop", "", "main"),
        admin: server.token_for("admin", "ops", "main", "main"),
        _tmp: tmp,
        base,
        server,
    }
}

impl Setup {
    /// `sync` with the honest write token, from a checkout and cache of its own.
    fn honest_sync(&self) {
        let dir = fresh_copy(&self.base, "ci");
        let out = client(
            &dir,
            &self.base.join("ci-cache"),
            &[
                "--server",
                &self.server.base,
                "--token",
                &self.writer,
                "--namespace",
                "main",
                "sync",
                "--json",
                "src",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }

    /// `verify` of a fresh checkout with `token` and the local cache `cache`.
    fn verify(&self, name: &str, cache: &Path, token: &str, extra: &[&str]) -> Output {
        let dir = self.base.join(name);
        if !dir.exists() {
            fresh_copy(&self.base, name);
        }
        let mut args = vec![
            "--server",
            &self.server.base,
            "--token",
            token,
            "--namespace",
            "main",
            "verify",
            "src",
        ];
        args.extend_from_slice(extra);
        client(&dir, cache, &args)
    }
}

/// An honest cache (a `sync` with a write token) verifies clean from a fresh checkout, and
/// verify writes no .pyc file.
#[test]
fn an_honest_cache_is_clean() {
    let s = setup();
    s.honest_sync();
    let cache = s.base.join("audit-cache");
    let out = s.verify("audit", &cache, &s.reader, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["files"], 2, "{report}");
    assert!(report["entries"]["server"].as_u64() >= Some(2), "{report}");
    assert_eq!(report["mismatches"], 0, "{report}");
    assert!(
        !s.base.join("audit/src/__pycache__").exists(),
        "verify wrote .pyc files"
    );
    let out = s.verify("audit", &cache, &s.reader, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pycache: verify: 2 files") && stdout.contains("0 mismatches"),
        "{}",
        text(&out)
    );
}

/// A code object planted on the server under a file's honest key (before any honest upload)
/// is a mismatch naming the file, the namespace and the writer; `--purge-mismatches` with an
/// admin token removes it, and the next verify is clean.
#[test]
fn a_planted_server_entry_is_found_and_purged() {
    let s = setup();
    let interp = probe(&s.base);
    let pristine = s.base.join("pristine");
    let key = key_of(&interp, &pristine, "src/util.py");
    let digest = key.digest();
    let intruder = ServerClient::new(
        &s.server.base,
        Some(Secret(s.intruder.clone())),
        Duration::from_secs(5),
    )
    .unwrap()
    .with_namespace(Some("main".into()));
    let frame = Frame::new(
        key,
        &Entry::compiled(other_code("src/util.py"), String::new()),
    );
    let (answer, _) = intruder.batch_put(&[frame]).unwrap();
    assert_eq!(answer.stored.len(), 1, "{answer:?}");
    s.honest_sync();

    let out = s.verify("audit", &s.base.join("audit-cache"), &s.reader, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("pycache: mismatch:"))
        .unwrap_or_else(|| panic!("no mismatch line: {}", text(&out)));
    for part in [
        "src/util.py",
        "server",
        &digest.to_string(),
        "namespace main",
        "written by intruder",
    ] {
        assert!(line.contains(part), "{part:?} not in {line:?}");
    }
    assert!(
        !stdout.contains("pycache: mismatch: src/app.py"),
        "app.py is honest: {stdout}"
    );

    let out = s.verify(
        "audit",
        &s.base.join("audit-cache"),
        &s.admin,
        &["--purge-mismatches", "--json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    let purged = report["purged"].as_array().unwrap();
    assert!(
        purged.iter().any(|p| p["tier"] == "server"
            && p["key"] == digest.to_string()
            && p["namespace"] == "main"
            && p["entries"] == 1),
        "{report}"
    );

    let out = s.verify("audit", &s.base.join("audit-cache"), &s.reader, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// An entry planted in the local cache (through its own API) is a local mismatch, and
/// `--purge-mismatches` removes it from the local cache.
#[test]
fn a_planted_local_entry_is_found_and_purged() {
    let s = setup();
    s.honest_sync();
    let interp = probe(&s.base);
    let cache = s.base.join("audit-cache");
    let key = key_of(&interp, &s.base.join("pristine"), "src/app.py");
    let digest = key.digest();
    {
        let local = LocalCache::open(&cache).unwrap();
        local
            .put(
                &digest,
                &Entry::compiled(other_code("src/app.py"), String::new()),
            )
            .unwrap();
    }
    let out = s.verify("audit", &cache, &s.reader, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("pycache: mismatch:"))
        .unwrap_or_else(|| panic!("no mismatch line: {}", text(&out)));
    assert!(
        line.contains("src/app.py")
            && line.contains("local entry")
            && line.contains(&digest.to_string()),
        "{line}"
    );
    assert_eq!(
        stdout.matches("pycache: mismatch:").count(),
        1,
        "only the local entry: {stdout}"
    );

    // No admin token needed to clean one's own cache: no server here.
    let dir = s.base.join("audit");
    let out = client(&dir, &cache, &["verify", "--purge-mismatches", "src"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("pycache: purged: local entry {digest}")),
        "{}",
        text(&out)
    );
    let out = s.verify("audit", &cache, &s.reader, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `marshal.dumps(compile(...))` of a file's own source is other bytes than py_compile writes
/// (reference flags, DESIGN §6) but an equal code object: a pass, said as "bytes differ, code
/// equal".
#[test]
fn other_bytes_of_an_equal_code_object_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_tree(&base.join("pristine"));
    let dir = fresh_copy(base, "audit");
    let interp = probe(base);
    let cache = base.join("cache");
    let key = key_of(&interp, &dir, "src/util.py");
    let script = "import marshal, sys\n\
                  src = open('src/util.py').read()\n\
                  sys.stdout.buffer.write(marshal.dumps(compile(src, 'src/util.py', 'exec')))";
    let out = Command::new("python3")
        .current_dir(&dir)
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    LocalCache::open(&cache)
        .unwrap()
        .put(&key.digest(), &Entry::compiled(out.stdout, String::new()))
        .unwrap();
    let out = client(&dir, &cache, &["verify", "-v", "src"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pycache: ok: src/util.py: local entry")
            && stdout.contains("bytes differ, code equal"),
        "{}",
        text(&out)
    );
}

/// `--purge-mismatches` with a token that is not an admin's is a clear error (exit 2) before
/// anything is compiled or deleted.
#[test]
fn purging_needs_an_admin_token() {
    let s = setup();
    for token in [&s.reader, &s.writer] {
        let out = s.verify(
            "audit",
            &s.base.join("audit-cache"),
            token,
            &["--purge-mismatches"],
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--purge-mismatches") && stderr.contains("admin token"),
            "{}",
            text(&out)
        );
    }
}
