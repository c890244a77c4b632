//! The local store as one bounded database, with the real client and the real interpreter:
//! runs killed at random moments lose nothing but what was in flight, concurrent runs share
//! one store, the size limit holds after a run that overflows it, `cache stats | prune |
//! clear | path` say and do what they should, and earlier layouts are ignored.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod support;

use support::tree::{all_pycs, remove_pycache};

const CLIENT: &str = env!("CARGO_BIN_EXE_pycache-client");

/// Standard-library packages with no file compileall refuses.
const PACKAGES: [&str; 6] = ["email", "json", "asyncio", "concurrent", "xmlrpc", "http"];

fn stdlib() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Copies the packages' sources (no __pycache__) to `root/src`, keeping mtimes.
fn make_tree(root: &Path) {
    let lib = stdlib();
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for pkg in PACKAGES {
        let ok = Command::new("rsync")
            .args(["-a", "--exclude", "__pycache__"])
            .arg(lib.join(pkg))
            .arg(&src)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            copy_sources(&lib.join(pkg), &src.join(pkg));
        }
    }
}

fn copy_sources(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (path, name) = (e.path(), e.file_name());
        if name == "__pycache__" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_sources(&path, &to.join(&name));
        } else {
            let ok = Command::new("cp")
                .arg("-p")
                .arg(&path)
                .arg(to.join(&name))
                .status()
                .unwrap();
            assert!(ok.success());
        }
    }
}

fn client(cwd: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(CLIENT);
    cmd.current_dir(cwd)
        .env("PYCACHE_CACHE_DIR", cache)
        .env("PYCACHE_PYTHON", "python3")
        .env_remove("PYCACHE_CACHE_SIZE")
        .env_remove("PYCACHE_SERVER")
        .env_remove("PYCACHE_TOKEN");
    cmd
}

fn sync_json(cwd: &Path, cache: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let out = client(cwd, cache)
        .args(extra)
        .args(["sync", "--json", "src"])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (out, json)
}

fn cache_json(cache: &Path, what: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(CLIENT)
        .env("PYCACHE_CACHE_DIR", cache)
        .env_remove("PYCACHE_CACHE_SIZE")
        .args(extra)
        .args(["cache", what, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The tree's .pyc files are exactly those `python3 -m compileall -q src` writes there.
fn assert_same_as_compileall(tree: &Path) {
    let ours = all_pycs(tree);
    assert!(!ours.is_empty());
    remove_pycache(&tree.join("src"));
    let out = Command::new("python3")
        .args(["-m", "compileall", "-q", "src"])
        .current_dir(tree)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let theirs = all_pycs(tree);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same .pyc files"
    );
    let differ: Vec<_> = ours
        .iter()
        .filter(|(k, v)| theirs[*k] != **v)
        .map(|(k, _)| k)
        .collect();
    assert!(
        differ.is_empty(),
        "{} differ, e.g. {:?}",
        differ.len(),
        &differ[..differ.len().min(3)]
    );
}

fn store_files_bytes(cache: &Path) -> u64 {
    ["store.db", "store.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(cache.join(f)).map_or(0, |m| m.len()))
        .sum()
}

/// A small random number generator (xorshift), seeded from the clock and printed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("random seed {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn runs_killed_at_random_moments_lose_only_what_was_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("tree"), tmp.path().join("cache"));
    make_tree(&tree);
    // How long a whole cold run takes here, so the kills land inside runs: timed as the killed
    // runs run, with a store that exists (a run whose cache has no store yet starts its
    // workers early, and is faster).
    let timing_cache = tmp.path().join("cache-timing");
    // (`cache stats` creates no store; `cache prune` given a limit makes one to keep it in.)
    cache_json(&timing_cache, "prune", &["--cache-size", "2GiB"]);
    assert!(timing_cache.join("store.db").exists());
    let started = Instant::now();
    let (out, cold) = sync_json(&tree, &timing_cache, &[]);
    assert!(out.status.success(), "{out:?}");
    let files = cold["files"].as_u64().unwrap();
    let span = started.elapsed().as_millis().max(200) as u64;
    remove_pycache(&tree.join("src"));

    let mut rng = Rng::new();
    for round in 0..10 {
        // Every third round starts from no .pyc, so runs read the store as well as write it.
        if round % 3 == 0 {
            remove_pycache(&tree.join("src"));
        }
        let mut child = client(&tree, &cache)
            .args(["sync", "-q", "src"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = 20 + rng.below(span);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        child.wait().unwrap();
        eprintln!("round {round}: killed after {delay} ms");
    }
    let (out, after) = sync_json(&tree, &cache, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(after["files"].as_u64(), Some(files));
    assert_eq!(after["corrupt_entries"], 0, "{after}");
    assert_eq!(after["errors"], 0, "{after}");
    let stats = cache_json(&cache, "stats", &[]);
    assert!(stats["entries"].as_u64().unwrap() > 0, "{stats}");
    // A fresh copy is served from the store entirely: nothing stored was lost.
    let (out, warm) = {
        remove_pycache(&tree.join("src"));
        sync_json(&tree, &cache, &[])
    };
    assert!(out.status.success(), "{out:?}");
    assert_eq!(warm["compiled"], 0, "{warm}");
    assert_same_as_compileall(&tree);
}

fn concurrent_runs(n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let trees: Vec<PathBuf> = (0..=n).map(|i| tmp.path().join(format!("t{i}"))).collect();
    for t in &trees {
        make_tree(t);
    }
    let children: Vec<_> = trees[..n]
        .iter()
        .map(|t| {
            client(t, &cache)
                .args(["sync", "--json", "src"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("warning"), "{stderr}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["corrupt_entries"], 0, "{json}");
    }
    // A further tree: every file a local hit, no Python started.
    let (out, warm) = sync_json(&trees[n], &cache, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(warm["local_hits"], warm["files"], "{warm}");
    assert_eq!(warm["workers_started"], 0, "{warm}");
    for t in [&trees[0], &trees[n - 1], &trees[n]] {
        assert_same_as_compileall(t);
    }
}

#[test]
fn two_concurrent_runs_share_one_store() {
    concurrent_runs(2);
}

#[test]
fn four_concurrent_runs_share_one_store() {
    concurrent_runs(4);
}

#[test]
fn the_size_limit_holds_after_a_run_that_overflows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("tree"), tmp.path().join("cache"));
    make_tree(&tree);
    let limit: u64 = 512 << 10;
    let (out, cold) = sync_json(&tree, &cache, &["--cache-size", "512KiB"]);
    assert!(out.status.success(), "{out:?}");
    let written: u64 = all_pycs(&tree).values().map(|v| v.len() as u64).sum();
    assert!(
        written > 2 * limit,
        "the tree overflows the limit: {written}"
    );
    let disk = store_files_bytes(&cache);
    assert!(
        disk <= limit + limit / 10,
        "the store takes {disk} bytes for a {limit}-byte limit"
    );
    let stats = cache_json(&cache, "stats", &["--cache-size", "512KiB"]);
    assert_eq!(stats["size_limit"], limit);
    let kept = stats["entries"].as_u64().unwrap();
    assert!(
        kept > 0 && kept < cold["files"].as_u64().unwrap(),
        "{stats}"
    );
    assert!(
        stats["interpreters"][0]["evicted"].as_u64().unwrap() > 0,
        "{stats}"
    );
    // What stayed is served, what went is compiled again: the same bytes either way.
    remove_pycache(&tree.join("src"));
    let (out, again) = sync_json(&tree, &cache, &["--cache-size", "512KiB"]);
    assert!(out.status.success(), "{out:?}");
    assert!(again["local_hits"].as_u64().unwrap() > 0, "{again}");
    assert!(again["compiled"].as_u64().unwrap() > 0, "{again}");
    assert!(store_files_bytes(&cache) <= limit + limit / 10);
    assert_same_as_compileall(&tree);
}

#[test]
fn the_size_setting_comes_from_the_command_line_the_environment_or_pyproject() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    std::fs::write(
        tmp.path().join("pyproject.toml"),
        "[tool.pycache]\ncache-size = \"3MiB\"\n",
    )
    .unwrap();
    let limit = |env: Option<&str>, args: &[&str]| -> serde_json::Value {
        let mut cmd = Command::new(CLIENT);
        cmd.current_dir(tmp.path())
            .env("PYCACHE_CACHE_DIR", &cache)
            .env_remove("PYCACHE_CACHE_SIZE")
            .args(args)
            .args(["cache", "stats", "--json"]);
        if let Some(v) = env {
            cmd.env("PYCACHE_CACHE_SIZE", v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["size_limit"].clone()
    };
    assert_eq!(limit(None, &[]), 3 << 20);
    assert_eq!(limit(Some("500MB"), &[]), 500_000_000);
    assert_eq!(limit(Some("500MB"), &["--cache-size", "1GiB"]), 1u64 << 30);
    let bad = Command::new(CLIENT)
        .current_dir(tmp.path())
        .env("PYCACHE_CACHE_DIR", &cache)
        .env("PYCACHE_CACHE_SIZE", "lots")
        .args(["cache", "stats"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("lots") && stderr.contains("MiB"),
        "{stderr}"
    );
    std::fs::remove_file(tmp.path().join("pyproject.toml")).unwrap();
    assert_eq!(limit(None, &[]), 2u64 << 30, "the default");
}

#[test]
fn cache_commands_report_prune_clear_and_say_where() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("tree"), tmp.path().join("cache"));
    make_tree(&tree);
    // An earlier layout's directory, with a garbage entry: ignored, never an error.
    let legacy = cache.join("entries-v2/ab");
    std::fs::create_dir_all(&legacy).unwrap();
    std::fs::write(legacy.join("ab".repeat(32)), b"not an entry").unwrap();

    let (out, cold) = sync_json(&tree, &cache, &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{out:?}"
    );
    let files = cold["files"].as_u64().unwrap();
    // Files with the same source (empty __init__.py) share one stored entry.
    let compiled = cold["compiled"].as_u64().unwrap();
    remove_pycache(&tree.join("src"));
    let (_, warm) = sync_json(&tree, &cache, &[]);
    assert_eq!(warm["local_hits"].as_u64(), Some(files), "{warm}");

    let stats = cache_json(&cache, "stats", &[]);
    let entries = stats["entries"].as_u64().unwrap();
    assert!(entries > files * 9 / 10 && entries <= compiled, "{stats}");
    assert!(stats["legacy_bytes"].as_u64().unwrap() > 0, "{stats}");
    let interp = &stats["interpreters"][0];
    assert!(
        interp["interpreter"]
            .as_str()
            .unwrap()
            .starts_with("CPython 3."),
        "{stats}"
    );
    assert_eq!(interp["hits"].as_u64(), Some(files), "{stats}");
    assert_eq!(interp["misses"].as_u64(), Some(compiled), "{stats}");
    assert_eq!(interp["stored"].as_u64(), Some(entries), "{stats}");
    assert_eq!(stats["days"].as_array().unwrap().len(), 1, "{stats}");
    let text = Command::new(CLIENT)
        .env("PYCACHE_CACHE_DIR", &cache)
        .args(["cache", "stats"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("hit rate") && text.contains("CPython 3."),
        "{text}"
    );

    let pruned = cache_json(&cache, "prune", &[]);
    assert_eq!(pruned["entries"], 0, "under the limit: nothing evicted");
    assert!(pruned["legacy_bytes"].as_u64().unwrap() > 0);
    assert!(!cache.join("entries-v2").exists());

    let path = Command::new(CLIENT)
        .env("PYCACHE_CACHE_DIR", &cache)
        .args(["cache", "path"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&path.stdout).trim(),
        cache.to_str().unwrap()
    );

    let cleared = cache_json(&cache, "clear", &[]);
    assert_eq!(cleared["entries"].as_u64(), Some(entries));
    remove_pycache(&tree.join("src"));
    let (_, after) = sync_json(&tree, &cache, &[]);
    assert_eq!(after["local_hits"], 0, "{after}");
    assert_eq!(after["compiled"].as_u64(), Some(compiled), "{after}");
}

/// `pycache-client cache WHAT ARGS` with the cache at `cache` (no size from the environment).
fn cache_command(cache: &Path, args: &[&str]) -> Output {
    Command::new(CLIENT)
        .env("PYCACHE_CACHE_DIR", cache)
        .env_remove("PYCACHE_CACHE_SIZE")
        .env_remove("PYCACHE_CONFIG_FILE")
        .arg("--no-config")
        .arg("cache")
        .args(args)
        .output()
        .unwrap()
}

/// Issue 23, case 6: `cache stats` (and prune and clear) on a cache directory that does not
/// exist create nothing and say so; the limit `--cache-size … cache prune` pruned to is kept
/// by the store, so the next `cache stats` and runs use it; `cache stats --zero-stats` shows
/// the statistics, then zeroes them (the entries stay).
#[test]
fn cache_commands_create_nothing_remember_the_limit_and_zero_the_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, cache) = (tmp.path().join("tree"), tmp.path().join("cache"));
    support::project::make_tree(&tree);

    let out = cache_command(&cache, &["stats"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("no local cache") && stdout.contains(cache.to_str().unwrap()),
        "{stdout}"
    );
    for what in ["stats", "prune", "clear"] {
        let json = cache_json(&cache, what, &[]);
        assert_eq!(json["entries"], 0, "{what}: {json}");
        assert!(
            !cache.exists(),
            "`cache {what}` created {}",
            cache.display()
        );
    }
    assert_eq!(cache_json(&cache, "stats", &[])["exists"], false);

    let (out, _) = sync_json(&tree, &cache, &[]);
    assert!(out.status.success(), "{out:?}");
    let pruned = cache_json(&cache, "prune", &["--cache-size", "3MiB"]);
    assert_eq!(pruned["entries"], 0, "{pruned}");
    let stats = cache_json(&cache, "stats", &[]);
    assert_eq!(
        stats["size_limit"],
        3 << 20,
        "the pruned-to limit is kept: {stats}"
    );
    assert_eq!(stats["exists"], true, "{stats}");
    // A run with no size setting keeps to it too; one with a setting uses that.
    remove_pycache(&tree.join("src"));
    let (out, warm) = sync_json(&tree, &cache, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(warm["local_hits"], 3, "{warm}");
    assert_eq!(cache_json(&cache, "stats", &[])["size_limit"], 3 << 20);
    assert_eq!(
        cache_json(&cache, "stats", &["--cache-size", "5MiB"])["size_limit"],
        5 << 20
    );

    let out = cache_command(&cache, &["stats", "--zero-stats"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("hit rate") && stdout.contains("statistics zeroed"),
        "{stdout}"
    );
    let stats = cache_json(&cache, "stats", &[]);
    assert_eq!(stats["entries"], 3, "{stats}");
    let interp = &stats["interpreters"][0];
    assert_eq!(
        (interp["hits"].as_u64(), interp["stored"].as_u64()),
        (Some(0), Some(0)),
        "{stats}"
    );
    assert_eq!(stats["days"].as_array().map(Vec::len), Some(0), "{stats}");
}
