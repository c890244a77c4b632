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
        let failed = &json["failed"];
        assert_eq!(failed.as_array().map(Vec::len), Some(1), "{run}: {json}");
        assert!(
            failed[0]["path"]
                .as_str()
                .unwrap()
                .ends_with("blocked/mod.py")
                && failed[0]["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("NotADirectoryError"),
            "{run}: {json}"
        );
    }
}

/// `pycache-client ARGS` in `cwd` with no `PYCACHE_*` of the test's own environment and its
/// user config folders inside `home` (`$HOME/.config` unless `env` names another).
fn client_at_home(cwd: &Path, home: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(CLIENT);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PYCACHE_") || name == "XDG_CONFIG_HOME" {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(cwd)
        .env("HOME", home)
        .env("PYCACHE_CACHE_DIR", home.join("cache"))
        .env("PYCACHE_PYTHON", "python3");
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.args(args).output().unwrap()
}

/// Issue 23, case 6: a user config file (`$XDG_CONFIG_HOME/pycache/config.toml`, by default
/// `~/.config/pycache/config.toml`, or the file `PYCACHE_CONFIG_FILE` names) keeps settings
/// for every project: below `[tool.pycache]` and the environment, above the defaults, one
/// setting at a time; `--no-config` leaves it out; a broken one is named in the error.
#[test]
fn the_user_config_file_sits_below_the_project_and_above_the_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let project = tmp.path().join("project");
    std::fs::create_dir_all(home.join(".config/pycache")).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        home.join(".config/pycache/config.toml"),
        "cache-size = \"3MiB\"\nnamespace = \"laptop\"\n",
    )
    .unwrap();
    let namespace = |env: &[(&str, &Path)], args: &[&str]| -> String {
        let args: Vec<&str> = args.iter().copied().chain(["status"]).collect();
        let out = client_at_home(&project, &home, env, &args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("namespace:"))
            .unwrap_or_else(|| panic!("no namespace line: {out:?}"))
            .trim()
            .to_owned()
    };
    let size_limit = |env: &[(&str, &Path)], args: &[&str]| -> serde_json::Value {
        let args: Vec<&str> = args
            .iter()
            .copied()
            .chain(["cache", "stats", "--json"])
            .collect();
        let out = client_at_home(&project, &home, env, &args);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["size_limit"].clone()
    };
    // The default place.
    assert_eq!(namespace(&[], &[]), "laptop");
    assert_eq!(size_limit(&[], &[]), 3 << 20);
    // [tool.pycache] wins for what it sets; the rest still comes from the user's file.
    std::fs::write(
        project.join("pyproject.toml"),
        "[tool.pycache]\nnamespace = \"proj\"\n",
    )
    .unwrap();
    assert_eq!(namespace(&[], &[]), "proj");
    assert_eq!(size_limit(&[], &[]), 3 << 20);
    std::fs::remove_file(project.join("pyproject.toml")).unwrap();
    // The environment wins over the file.
    let ns = tmp.path().join("env-ns");
    let ns_name = Path::new(ns.file_name().unwrap());
    assert_eq!(namespace(&[("PYCACHE_NAMESPACE", ns_name)], &[]), "env-ns");
    // XDG_CONFIG_HOME moves the folder; PYCACHE_CONFIG_FILE names the file.
    let xdg = tmp.path().join("xdg");
    std::fs::create_dir_all(xdg.join("pycache")).unwrap();
    std::fs::write(xdg.join("pycache/config.toml"), "namespace = \"xdg\"\n").unwrap();
    assert_eq!(namespace(&[("XDG_CONFIG_HOME", &xdg)], &[]), "xdg");
    let named = tmp.path().join("named.toml");
    std::fs::write(&named, "namespace = \"named\"\n").unwrap();
    assert_eq!(namespace(&[("PYCACHE_CONFIG_FILE", &named)], &[]), "named");
    // --no-config: the defaults.
    assert_eq!(size_limit(&[], &["--no-config"]), 2u64 << 30);
    assert!(
        namespace(&[], &["--no-config"]).starts_with("not set"),
        "{}",
        namespace(&[], &["--no-config"])
    );
    // A broken file is named, with what to do; so is a named file that does not exist.
    std::fs::write(&named, "cache-sise = 1\n").unwrap();
    let out = client_at_home(
        &project,
        &home,
        &[("PYCACHE_CONFIG_FILE", &named)],
        &["status"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(named.to_str().unwrap()) && stderr.contains("cache-sise"),
        "{stderr}"
    );
    let missing = tmp.path().join("missing.toml");
    let out = client_at_home(
        &project,
        &home,
        &[("PYCACHE_CONFIG_FILE", &missing)],
        &["status"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(missing.to_str().unwrap()) && stderr.contains("PYCACHE_CONFIG_FILE"),
        "{stderr}"
    );
}

/// Issue 23, case 9: `sync`'s output options do what their help says. `-q` drops the progress
/// bar and keeps the summary, `-qq` is silent; `--json` names each failed file with its
/// error; `-j` is `--jobs`; `-o 3` says what -o is and which levels exist; the help lists the
/// global options once, under their own heading, after the subcommand's own.
#[test]
fn sync_output_options_do_what_their_help_says() {
    let (_tmp, base) = setup(2);
    let dir = copy(&base, "x");
    let cache = base.join("cache");
    let run = |args: &[&str]| client(&dir, &cache).args(args).output().unwrap();

    let out = run(&["sync", "-q", "src"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pycache: 3 files:"),
        "-q keeps the summary: {stderr}"
    );
    assert!(stderr.contains("bad.py"), "-q keeps the errors: {stderr}");
    let out = run(&["sync", "-qq", "src"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "-qq: {out:?}"
    );

    let out = run(&["sync", "--json", "-f", "-j", "1", "src"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = json["failed"]
        .as_array()
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(failed.len(), 1, "{json}");
    assert_eq!(failed[0]["path"], "src/pkg/bad.py", "{json}");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("SyntaxError"),
        "{json}"
    );

    let out = run(&["sync", "-o", "3", "src"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("optimization level") && stderr.contains("-1, 0, 1 or 2"),
        "{stderr}"
    );

    let out = run(&["sync", "--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    let (own, global) = help
        .split_once("Global options:")
        .unwrap_or_else(|| panic!("no global heading: {help}"));
    assert!(
        own.contains("--json") && !own.contains("--server"),
        "{help}"
    );
    assert!(
        global.contains("--server") && !global.contains("--json"),
        "{help}"
    );
}

/// Issue 23, case 9: a run with an empty cache counts exactly, every time. Files of identical
/// source (empty `__init__.py`, vendored copies) are one compile shared by their paths, never
/// a "local hit" of what the same run stored a moment earlier (which depended on how far the
/// cache-writing thread had got: the counts varied run to run).
#[test]
fn an_empty_cache_run_counts_the_same_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..40 {
        let pkg = src.join(format!("p{i:02}"));
        std::fs::create_dir_all(pkg.join("sub")).unwrap();
        std::fs::write(pkg.join("__init__.py"), "").unwrap();
        std::fs::write(pkg.join("sub/__init__.py"), "").unwrap();
        std::fs::write(pkg.join("vendored.py"), "import os\nX = [1, 2]\n").unwrap();
        std::fs::write(pkg.join(format!("own{i}.py")), format!("Y = {i}\n")).unwrap();
    }
    let mut seen = Vec::new();
    for round in 0..3 {
        let cache = tmp.path().join(format!("cache-{round}"));
        for pkg in std::fs::read_dir(&src).unwrap() {
            let pkg = pkg.unwrap().path();
            let _ = std::fs::remove_dir_all(pkg.join("__pycache__"));
            let _ = std::fs::remove_dir_all(pkg.join("sub/__pycache__"));
        }
        let (out, json) = sync_json(tmp.path(), &cache);
        assert!(out.status.success(), "{out:?}");
        let counts: Vec<u64> = ["files", "local_hits", "compiled", "shared", "written"]
            .iter()
            .map(|k| json[k].as_u64().unwrap_or_else(|| panic!("{k}: {json}")))
            .collect();
        // 160 files; the 80 empty __init__.py are one source, the 40 vendored.py another.
        assert_eq!(counts, [160, 0, 160, 79 + 39, 160], "round {round}: {json}");
        seen.push(counts);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
}

/// `sync`'s default excludes skip what is not the project's code — version control, tool
/// caches, build output, any virtual environment whatever its name — but a package that
/// happens to bear one of those names (the standard library's `venv`, PyPA's `build`) is code.
#[test]
fn default_excludes_skip_environments_and_tool_folders_but_not_packages_of_those_names() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = [
        ("app.py", true),
        ("venv/__init__.py", true),
        ("venv/__main__.py", true),
        ("build/__init__.py", true),
        ("build/env.py", true),
        ("dist/leftover.py", false),
        ("build_tools/make.py", true),
        (".git/hooks/hook.py", false),
        ("node_modules/x/y.py", false),
        ("env-3.12/lib/python3.12/site-packages/dep.py", false),
    ];
    for (rel, _) in files {
        let path = src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "X = 1\n").unwrap();
    }
    std::fs::write(src.join("env-3.12/pyvenv.cfg"), "home = /usr/bin\n").unwrap();
    let out = client(tmp.path(), &tmp.path().join("cache"))
        .args(["sync", "--json", "src"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = files.iter().filter(|(_, compiled)| *compiled).count();
    assert_eq!(json["files"], expected, "{json}");
    for (rel, compiled) in files {
        let path = src.join(rel);
        let cached = path
            .parent()
            .unwrap()
            .join("__pycache__")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some());
        assert_eq!(cached, compiled, "{rel}: {json}");
    }
}
