//! Entries hit wherever the tree lives: a tree compiled at one path, then copies at other paths
//! (longer, shorter, non-ASCII, past 255 bytes, relative) with the same local cache — every file
//! a hit, no worker started, and the bytes of `python -m compileall -q` of that copy (CPython
//! 3.11+; equal code objects on 3.8–3.10, where compileall is not reproducible by itself).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::compare::code_equal;
use support::interp::Interp;
use support::tree::copy_tree;

const CLIENT: &str = env!("CARGO_BIN_EXE_pycache-client");

/// Standard-library packages that make the corpus: real code, a few hundred files.
const PACKAGES: [&str; 4] = ["json", "email", "importlib", "concurrent"];

fn corpus(interp: &Interp, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for pkg in PACKAGES {
        copy_tree(&interp.stdlib.join(pkg), &dst.join(pkg), &|p| {
            p.file_name().is_some_and(|n| n == "__pycache__")
        });
    }
}

fn pycs(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
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

fn remove_pycache(root: &Path) {
    for (rel, _) in pycs(root) {
        let _ = std::fs::remove_dir_all(root.join(rel).parent().unwrap());
    }
}

/// Runs the client with `args` in `cwd`, with `cache` and no server.
fn client(interp: &Interp, cwd: &Path, cache: &Path, args: &[&str]) -> std::process::Output {
    Command::new(CLIENT)
        .current_dir(cwd)
        .env("PYCACHE_CACHE_DIR", cache)
        .env_remove("PYCACHE_SERVER")
        .env_remove("PYCACHE_TOKEN")
        .arg("--python")
        .arg(&interp.path)
        .args(args)
        .output()
        .unwrap()
}

fn sync_json(interp: &Interp, cwd: &Path, path: &str, cache: &Path) -> serde_json::Value {
    let out = client(interp, cwd, cache, &["sync", "--json", path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_tree_at_another_path_is_all_hits_with_compileall_bytes() {
    let mut ran = 0;
    for interp in support::interpreters() {
        if !interp.cpython_at_least(8) || interp.version >= (3, 14, 0) {
            continue;
        }
        ran += 1;
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let cache = base.join("cache");
        let first = base.join("a/lib");
        corpus(interp, &first);
        let cold = sync_json(interp, base, &first.to_string_lossy(), &cache);
        assert!(cold["compiled"].as_u64().unwrap() > 40, "{cold}");

        let long: PathBuf =
            (0..30).fold(base.join("long"), |p, i| p.join(format!("segment{i:02}")));
        assert!(long.join("lib").as_os_str().len() > 255);
        let places: Vec<(PathBuf, String, PathBuf)> = vec![
            // (cwd, the argument, where the tree is)
            (
                base.to_path_buf(),
                base.join("bb/lib").to_string_lossy().into_owned(),
                base.join("bb/lib"),
            ),
            (
                base.to_path_buf(),
                base.join("a-much-longer-directory/lib")
                    .to_string_lossy()
                    .into_owned(),
                base.join("a-much-longer-directory/lib"),
            ),
            (
                base.to_path_buf(),
                base.join("dïr-ñame/lib").to_string_lossy().into_owned(),
                base.join("dïr-ñame/lib"),
            ),
            (
                base.to_path_buf(),
                long.join("lib").to_string_lossy().into_owned(),
                long.join("lib"),
            ),
            (base.join("rel"), "lib".to_owned(), base.join("rel/lib")),
        ];
        for (cwd, arg, tree) in places {
            corpus(interp, &tree);
            let status = Command::new(&interp.path)
                .current_dir(&cwd)
                .args(["-m", "compileall", "-q", &arg])
                .status()
                .unwrap();
            assert!(status.success());
            let reference = pycs(&tree);
            remove_pycache(&tree);
            let warm = sync_json(interp, &cwd, &arg, &cache);
            let label = format!("{} at {arg}", interp.label());
            assert_eq!(warm["compiled"], 0, "{label}: {warm}");
            assert_eq!(warm["workers_started"], 0, "{label}: {warm}");
            assert_eq!(warm["local_hits"], reference.len(), "{label}: {warm}");
            assert_eq!(warm["relocated_hits"], reference.len(), "{label}: {warm}");
            let ours = pycs(&tree);
            assert_eq!(
                ours.keys().collect::<Vec<_>>(),
                reference.keys().collect::<Vec<_>>(),
                "{label}"
            );
            if interp.bytes_must_match() {
                let differ: Vec<_> = ours
                    .iter()
                    .filter(|(k, v)| reference[*k] != **v)
                    .map(|(k, _)| k)
                    .collect();
                assert!(
                    differ.is_empty(),
                    "{label}: {} files differ: {:?}",
                    differ.len(),
                    &differ[..differ.len().min(5)]
                );
            } else {
                let pairs: Vec<(&[u8], &[u8])> = ours
                    .iter()
                    .map(|(k, v)| (reference[k].as_slice(), v.as_slice()))
                    .collect();
                let verdicts = code_equal(interp, &pairs, base);
                let unequal = verdicts.iter().filter(|v| !**v).count();
                assert_eq!(unequal, 0, "{label}: {unequal} files are not code-equal");
            }
        }
    }
    assert!(ran > 0, "no CPython 3.8-3.13 found");
}

fn default_interp() -> &'static Interp {
    support::interpreters()
        .iter()
        .find(|i| i.is_default)
        .expect("the default python3")
}

/// `sync --json TREE` from `base` with `cache` against the server at `url`; must succeed.
fn server_sync(
    interp: &Interp,
    base: &Path,
    url: &str,
    token: &str,
    tree: &Path,
    cache: &Path,
) -> serde_json::Value {
    let out = Command::new(CLIENT)
        .current_dir(base)
        .env("PYCACHE_CACHE_DIR", cache)
        .env("PYCACHE_SERVER", url)
        .env("PYCACHE_TOKEN", token)
        .arg("--python")
        .arg(&interp.path)
        .args(["sync", "--json"])
        .arg(tree)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The .pyc files `python -m compileall` writes for `tree`, which is left without them.
fn compileall_pycs(interp: &Interp, tree: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let status = Command::new(&interp.path)
        .args(["-m", "compileall", "-q"])
        .arg(tree)
        .status()
        .unwrap();
    assert!(status.success());
    let reference = pycs(tree);
    remove_pycache(tree);
    reference
}

/// Through the server: a tree elsewhere, with an empty local cache, is all remote hits,
/// rewritten for its path, byte-identical to compileall's.
#[test]
fn a_tree_at_another_path_hits_through_the_server() {
    let interp = default_interp();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let data = base.join("server-data");
    let server =
        pycache_testkit::server::Server::start(&["--data-dir", data.to_str().unwrap()], base);
    let token = server.token("write", "ci");
    let run =
        |tree: &Path, cache: &Path| server_sync(interp, base, &server.base, &token, tree, cache);
    let first = base.join("ci-runner-1/workspace/lib");
    corpus(interp, &first);
    let cold = run(&first, &base.join("cache-1"));
    let files = cold["compiled"].as_u64().unwrap();
    assert_eq!(cold["uploaded"], files, "{cold}");

    let other = base.join("another-runner/builds/project/lib");
    corpus(interp, &other);
    let reference = compileall_pycs(interp, &other);
    let warm = run(&other, &base.join("cache-2"));
    assert_eq!(warm["remote_hits"], files, "{warm}");
    assert_eq!(warm["relocated_hits"], files, "{warm}");
    assert_eq!(warm["workers_started"], 0, "{warm}");
    assert_eq!(pycs(&other), reference);
}

/// Two virtualenvs at different paths with the same packages (pip and its vendored packages,
/// as `venv` installs them): every file of the second is a hit.
#[test]
fn a_second_virtualenv_elsewhere_is_all_hits() {
    let interp = default_interp();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let mut summaries = Vec::new();
    for name in ["service-a/.venv", "services/another-service/.venv"] {
        let venv = tmp.path().join(name);
        let made = Command::new(&interp.path)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success());
        let site = Command::new(venv.join("bin/python"))
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ])
            .output()
            .unwrap();
        let site = String::from_utf8(site.stdout).unwrap().trim().to_owned();
        let out = Command::new(CLIENT)
            .env("PYCACHE_CACHE_DIR", &cache)
            .env_remove("PYCACHE_SERVER")
            .arg("--python")
            .arg(venv.join("bin/python"))
            .args(["sync", "--json", "-f", &site])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        summaries.push(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap());
    }
    let (first, second) = (&summaries[0], &summaries[1]);
    assert!(first["compiled"].as_u64().unwrap() > 100, "{first}");
    assert_eq!(second["compiled"], 0, "{second}");
    assert_eq!(second["workers_started"], 0, "{second}");
    assert_eq!(second["local_hits"], first["compiled"], "{second}");
}

/// Files of identical source in one tree: an empty `__init__.py` in every package, a module
/// vendored twice, a copy with a SyntaxWarning and a copy that does not compile (whose
/// messages name their own paths).
fn duplicates_tree(root: &Path) {
    let module = "import os\n\n\nclass Walker:\n    def walk(self, top):\n        return [lambda: os.path.join(top, name) for name in os.listdir(top)]\n\n\ndef nested():\n    def inner():\n        return (yield 1)\n    return inner\n";
    let files: [(&str, &str); 12] = [
        ("lib/__init__.py", ""),
        ("lib/a/__init__.py", ""),
        ("lib/a/walker.py", module),
        ("lib/b/__init__.py", ""),
        ("lib/b/_vendor/__init__.py", ""),
        ("lib/b/_vendor/walker.py", module),
        ("lib/b/_vendor/walker_copy.py", module),
        ("lib/c/__init__.py", ""),
        ("lib/c/warn.py", "x = 1 is 1\n"),
        ("lib/c/warn_again.py", "x = 1 is 1\n"),
        ("lib/c/broken.py", "def f(:\n"),
        ("lib/c/broken_again.py", "def f(:\n"),
    ];
    for (rel, text) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

#[test]
fn identical_sources_in_one_run_are_compiled_once_with_each_paths_bytes() {
    let mut ran = 0;
    for interp in support::interpreters() {
        if !interp.cpython_at_least(8) {
            continue;
        }
        ran += 1;
        let label = interp.label();
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let (ours, theirs) = (base.join("ours"), base.join("theirs"));
        duplicates_tree(&ours);
        duplicates_tree(&theirs);
        let reference = Command::new(&interp.path)
            .current_dir(&theirs)
            .args(["-m", "compileall", "-q", "lib"])
            .output()
            .unwrap();
        let out = client(
            interp,
            &ours,
            &base.join("cache"),
            &["compileall", "-q", "lib"],
        );
        assert_eq!(out.status.code(), reference.status.code(), "{label}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&reference.stdout),
            "{label}: stdout"
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&reference.stderr),
            "{label}: stderr (each warning names its own file)"
        );
        let (mine, want) = (pycs(&ours), pycs(&theirs));
        assert_eq!(
            mine.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{label}"
        );
        if interp.bytes_must_match() {
            for (rel, bytes) in &mine {
                assert!(want[rel] == *bytes, "{label}: {} differs", rel.display());
            }
        } else {
            let pairs: Vec<(&[u8], &[u8])> = mine
                .iter()
                .map(|(k, v)| (want[k].as_slice(), v.as_slice()))
                .collect();
            assert!(
                code_equal(interp, &pairs, base).iter().all(|v| *v),
                "{label}"
            );
        }

        // The counts: one compile per distinct source where results may be relocated.
        let counted = base.join("counted");
        duplicates_tree(&counted);
        let cache = base.join("cache-counted");
        let out = client(interp, &counted, &cache, &["sync", "--json", "lib"]);
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["files"], 12, "{label}: {summary}");
        assert_eq!(summary["errors"], 2, "{label}: {summary}");
        assert_eq!(summary["compiled"], 12, "{label}: {summary}");
        let relocates = interp.version < (3, 14, 0);
        // Four more empty `__init__.py` and two more `walker.py`: served by the first
        // compile of each, rewritten; the warning and the error are compiled at each path.
        let shared = if relocates { 6 } else { 0 };
        assert_eq!(summary["shared"], shared, "{label}: {summary}");
    }
    assert!(ran > 0, "no CPython 3.8+ found");
}

/// 200 packages, each an empty `__init__.py` (one source, 200 paths) and a module of its own.
fn packages_tree(root: &Path) {
    for i in 0..200 {
        let pkg = root.join(format!("pkg{i:03}"));
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(pkg.join("__init__.py"), "").unwrap();
        std::fs::write(
            pkg.join("mod.py"),
            format!("def f(x):\n    return x + {i}\n"),
        )
        .unwrap();
    }
}

/// A warm lookup of hundreds of misses is split into parts asked side by side; a source shared
/// by files of every part is asked for once and each file still gets its own path's bytes.
#[test]
fn a_split_lookup_serves_shared_sources_across_its_parts() {
    let interp = default_interp();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let data = base.join("server-data");
    let server =
        pycache_testkit::server::Server::start(&["--data-dir", data.to_str().unwrap()], base);
    let token = server.token("write", "ci");
    let run =
        |tree: &Path, cache: &Path| server_sync(interp, base, &server.base, &token, tree, cache);
    let first = base.join("runner-1/lib");
    packages_tree(&first);
    let cold = run(&first, &base.join("cache-1"));
    assert_eq!(cold["files"], 400, "{cold}");
    assert_eq!(
        cold["uploaded"], 201,
        "one entry per distinct source: {cold}"
    );

    let other = base.join("runner-2/checkout/lib");
    packages_tree(&other);
    let reference = compileall_pycs(interp, &other);
    let warm = run(&other, &base.join("cache-2"));
    assert_eq!(warm["remote_hits"], 400, "{warm}");
    assert_eq!(warm["workers_started"], 0, "{warm}");
    assert!(warm["bytes_down"].as_u64().unwrap() > 0, "{warm}");
    assert_eq!(pycs(&other), reference);
}
