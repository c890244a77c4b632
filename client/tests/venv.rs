//! Virtual environments with the real client binary and real `python -m venv` environments:
//! a client installed in a venv targets that venv's interpreter by default, and
//! `sync --venv [PATH]` compiles an environment's site-packages with its own interpreter, byte
//! for byte as `python -m compileall` does.
//!
//! Environments live under the system temporary directory, never under `target/`: a
//! `CACHEDIR.TAG` above an environment marks it as a tool manager's (uvx), see `venv.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;

use support::tree::{all_pycs, remove_pycache};

const CLIENT: &str = env!("CARGO_BIN_EXE_pycache-client");

/// A fresh `python3 -m venv --without-pip` at `root`.
fn make_venv(root: &Path) {
    let status = Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success(), "python3 -m venv {}", root.display());
}

/// The venv's site-packages, as its interpreter reports it.
fn site_packages(root: &Path) -> PathBuf {
    let out = Command::new(root.join("bin/python"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A small package with nested modules, a warning and a failure, written into `dir`.
fn write_package(dir: &Path) {
    let pkg = dir.join("demo_pkg");
    std::fs::create_dir_all(pkg.join("sub")).unwrap();
    std::fs::write(pkg.join("__init__.py"), "from .core import f\n").unwrap();
    std::fs::write(
        pkg.join("core.py"),
        "def f(x):\n    return [i * x for i in range(3)]\n",
    )
    .unwrap();
    std::fs::write(pkg.join("sub/__init__.py"), "").unwrap();
    std::fs::write(
        pkg.join("sub/deep.py"),
        "class A:\n    '''doc'''\n    def g(self):\n        assert self\n        return 1\n",
    )
    .unwrap();
    std::fs::write(dir.join("single_module.py"), "VALUE = 'x' * 3\n").unwrap();
}

/// A command for the client at `exe`, with pycache's and Python's variables removed.
fn client_at(exe: &Path, cwd: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.current_dir(cwd).env("PYCACHE_CACHE_DIR", cache);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("PYTHON") || key.starts_with("PYCACHE_") || key == "VIRTUAL_ENV" {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PYCACHE_CACHE_DIR", cache);
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `python:` line of `pycache-client status`.
fn status_python(cmd: &mut Command) -> String {
    let out = cmd.arg("status").output().unwrap();
    let all = text(&out);
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("python:"))
        .unwrap_or_else(|| panic!("no python line\n{all}"))
        .to_string();
    line.trim_start_matches("python:").trim().to_string()
}

#[test]
fn a_client_installed_in_a_venv_targets_that_venvs_interpreter() {
    let tmp = tempfile::tempdir().unwrap();
    let venv = tmp.path().join("env");
    make_venv(&venv);
    let exe = venv.join("bin/pycache-client");
    std::fs::copy(CLIENT, &exe).unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let cache = tmp.path().join("cache");

    // Installed in the venv, nothing else said: the venv's interpreter.
    let python = status_python(&mut client_at(&exe, &work, &cache));
    let want = venv.join("bin/python").display().to_string();
    assert!(python.starts_with(&format!("{want} (")), "{python}");

    // The active environment and PYCACHE_PYTHON still come first.
    let other = tmp.path().join("other");
    make_venv(&other);
    let python = status_python(client_at(&exe, &work, &cache).env("VIRTUAL_ENV", &other));
    let want_other = other.join("bin/python").display().to_string();
    assert!(python.starts_with(&format!("{want_other} (")), "{python}");
    let python = status_python(
        client_at(&exe, &work, &cache).env("PYCACHE_PYTHON", other.join("bin/python")),
    );
    assert!(python.starts_with(&format!("{want_other} (")), "{python}");

    // A tool manager's environment (uv tool install, pipx) is pycache's own, not a target.
    std::fs::write(venv.join("uv-receipt.toml"), "[tool]\n").unwrap();
    let python = status_python(&mut client_at(&exe, &work, &cache));
    assert!(!python.starts_with(&want), "{python}");
    assert!(python.contains("python3"), "{python}");
}

#[test]
fn sync_venv_compiles_site_packages_like_compileall() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let venv = project.join(".venv");
    make_venv(&venv);
    let sp = site_packages(&venv);
    write_package(&sp);
    let cache = tmp.path().join("cache");

    // The reference: the venv's own `python -m compileall` of its site-packages.
    let out = Command::new(venv.join("bin/python"))
        .args(["-m", "compileall", "-q"])
        .arg(&sp)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let want = all_pycs(&sp);
    assert_eq!(want.len(), 5, "{:?}", want.keys());
    remove_pycache(&sp);

    // `sync --venv` with no path: ./.venv of the current directory, with its interpreter
    // (python3 on PATH is not asked: PATH holds no Python here).
    let out = client_at(Path::new(CLIENT), &project, &cache)
        .env("PATH", "/nonexistent")
        .args(["sync", "--venv", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["python"],
        venv.join("bin/python").display().to_string()
    );
    assert_eq!(report["files"], 5, "{report}");
    assert_eq!(report["compiled"], 5, "{report}");
    assert_eq!(all_pycs(&sp), want, "sync --venv differs from compileall");

    // The active environment is the default before ./.venv; a second run from the cache is
    // all hits and starts no Python worker.
    remove_pycache(&sp);
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = client_at(Path::new(CLIENT), &elsewhere, &cache)
        .env("VIRTUAL_ENV", &venv)
        .args(["sync", "--venv", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["local_hits"], 5, "{report}");
    assert_eq!(report["compiled"], 0, "{report}");
    assert_eq!(report["workers_started"], 0, "{report}");
    assert_eq!(all_pycs(&sp), want, "hits differ from compileall");
}

#[test]
fn sync_venv_refuses_what_is_not_an_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let run = |args: &[&str]| {
        client_at(Path::new(CLIENT), tmp.path(), &cache)
            .args(args)
            .output()
            .unwrap()
    };
    // No ./.venv and no active environment.
    let out = run(&["sync", "--venv"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(".venv") && stderr.contains("does not exist") && stderr.contains("--venv"),
        "{stderr}"
    );
    // A directory that is not an environment.
    std::fs::create_dir(tmp.path().join("plain")).unwrap();
    let out = run(&["sync", "--venv", "plain"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no pyvenv.cfg"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Paths and --venv together are a usage error.
    let out = run(&["sync", "src", "--venv"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    let tmp = tempfile::tempdir().unwrap();
    // A broken pyproject.toml does not stop completions.
    std::fs::write(tmp.path().join("pyproject.toml"), "[tool.pycache\n").unwrap();
    for (shell, marker, venv_option) in [
        ("bash", "complete -F", "--venv"),
        ("zsh", "#compdef pycache-client", "--venv"),
        ("fish", "complete -c pycache-client", "-l venv"),
    ] {
        let out = client_at(Path::new(CLIENT), tmp.path(), &tmp.path().join("cache"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains(venv_option),
            "{shell}: no --venv in the script"
        );
    }
    let out = client_at(Path::new(CLIENT), tmp.path(), &tmp.path().join("cache"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// The bash script completes for real: sourced in bash and asked, as bash asks when Tab is
/// pressed, it offers the options of the subcommand typed so far (the binary's name has a
/// hyphen, which the generated script must survive).
#[test]
fn bash_completion_completes_after_the_subcommand() {
    let tmp = tempfile::tempdir().unwrap();
    let out = client_at(Path::new(CLIENT), tmp.path(), &tmp.path().join("cache"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let script = tmp.path().join("pycache-client.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let complete = |words: &[&str]| -> Vec<String> {
        let words_array = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let cword = words.len() - 1;
        let probe = format!(
            "source '{}'\nCOMP_WORDS=({words_array})\nCOMP_CWORD={cword}\n\
             COMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
             _pycache__client pycache-client '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words[cword],
            words[cword - 1],
        );
        let out = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &probe])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let sync = complete(&["pycache-client", "sync", "--"]);
    for option in ["--json", "--venv", "--exclude"] {
        assert!(sync.iter().any(|o| o == option), "sync --<Tab>: {sync:?}");
    }
    let key = complete(&["pycache-client", "key", ""]);
    assert!(key.iter().any(|o| o == "generate"), "key <Tab>: {key:?}");
    let top = complete(&["pycache-client", "sy"]);
    assert_eq!(top, vec!["sync".to_owned()], "sy<Tab>");
    let cache = complete(&["pycache-client", "cache", ""]);
    assert!(cache.iter().any(|o| o == "stats"), "cache <Tab>: {cache:?}");
}

/// A directory holding only a `python3` that is `interp`, to put first on `PATH`.
fn path_with_python3(dir: &Path, interp: &Path) -> std::ffi::OsString {
    std::fs::create_dir_all(dir).unwrap();
    std::os::unix::fs::symlink(interp, dir.join("python3")).unwrap();
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// Issue 23, case 1: in a uv-style project (a pyproject.toml and a `.venv` of another Python
/// beside it), plain `sync` compiles the project for the `.venv`'s interpreter, not for the
/// `python3` first on `PATH`, and walks past `.venv` (and the other directories ruff skips)
/// unless `--no-default-excludes` says otherwise. `[tool.pycache] exclude` takes a list.
#[test]
fn sync_in_a_project_targets_its_venv_and_writes_nothing_inside_it() {
    let other = support::interp::other_cpython();
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    let venv = project.join(".venv");
    std::fs::create_dir_all(project.join("src")).unwrap();
    let status = Command::new(&other.path)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(status.success());
    // Something to compile inside the environment, as an installed package would be.
    write_package(&site_packages(&venv));
    std::fs::write(
        project.join("pyproject.toml"),
        "[project]\nname = 'p'\nversion = '0'\n\n[tool.pycache]\nexclude = ['skip_me', 'also_skipped']\n",
    )
    .unwrap();
    std::fs::write(project.join("src/app.py"), "import json\n").unwrap();
    std::fs::write(project.join("src/skip_me.py"), "X = 1\n").unwrap();
    std::fs::write(project.join("src/also_skipped.py"), "X = 2\n").unwrap();
    for ignored in ["node_modules/pkg", "build/lib", ".tox/py", "dist"] {
        std::fs::create_dir_all(project.join(ignored)).unwrap();
        std::fs::write(project.join(ignored).join("gen.py"), "Y = 1\n").unwrap();
    }
    let cache = tmp.path().join("cache");
    let default = support::interp::default_cpython();
    let path = path_with_python3(&tmp.path().join("bin"), &default.path);

    let sync = |cwd: &Path, args: &[&str]| {
        let out = client_at(Path::new(CLIENT), cwd, &cache)
            .env("PATH", &path)
            .args(["sync", "--json"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let report = sync(&project, &[]);
    assert_eq!(
        report["python"],
        venv.join("bin/python").display().to_string(),
        "{report}"
    );
    assert_eq!(report["cache_tag"], other.cache_tag, "{report}");
    assert_eq!(report["files"], 1, "{report}");
    let pyc = |name: &str| {
        project
            .join("src/__pycache__")
            .join(format!("{name}.{}.pyc", other.cache_tag))
    };
    assert!(pyc("app").is_file(), "{report}");
    assert!(!pyc("skip_me").exists() && !pyc("also_skipped").exists());
    assert!(all_pycs(&venv).is_empty(), "sync wrote into .venv");
    for ignored in ["node_modules", "build", ".tox", "dist"] {
        assert!(all_pycs(&project.join(ignored)).is_empty(), "{ignored}");
    }

    // From a subdirectory, the project (and its .venv) is found upwards, as uv finds it.
    remove_pycache(&project.join("src"));
    let report = sync(&project.join("src"), &[]);
    assert_eq!(report["cache_tag"], other.cache_tag, "{report}");
    assert!(pyc("app").is_file(), "{report}");

    // --no-default-excludes walks every directory (the environment's five files included).
    let report = sync(&project, &["--no-default-excludes"]);
    assert_eq!(report["files"], 1 + 5 + 4, "{report}");
    assert_eq!(all_pycs(&site_packages(&venv)).len(), 5, "{report}");

    // `sync --venv` from a subdirectory means the project's .venv too, as plain `sync` does.
    remove_pycache(&site_packages(&venv));
    let report = sync(&project.join("src"), &["--venv"]);
    assert_eq!(
        report["python"],
        venv.join("bin/python").display().to_string(),
        "{report}"
    );
    assert_eq!(report["files"], 5, "{report}");
}

/// Issue 23, case 8: under `PYTHONDONTWRITEBYTECODE=1` the interpreter questions `sync --venv`
/// asks (the probe, site-packages) write no .pyc of their own, not even for a module a `.pth`
/// file imports at start-up (setuptools' `distutils-precedence.pth` does): every .pyc in the
/// environment afterwards is one the run decided on, of the mode it was asked for.
#[test]
fn sync_venv_leaves_no_pyc_of_its_interpreter_questions() {
    let tmp = tempfile::tempdir().unwrap();
    let venv = tmp.path().join(".venv");
    make_venv(&venv);
    let sp = site_packages(&venv);
    std::fs::create_dir(sp.join("_start_hook")).unwrap();
    std::fs::write(sp.join("_start_hook/__init__.py"), "HOOKED = True\n").unwrap();
    std::fs::write(sp.join("start-hook.pth"), "import _start_hook\n").unwrap();
    let out = client_at(Path::new(CLIENT), tmp.path(), &tmp.path().join("cache"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args([
            "sync",
            "--venv",
            "--json",
            "--invalidation-mode",
            "checked-hash",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let pycs = all_pycs(&venv);
    assert!(!pycs.is_empty(), "{}", text(&out));
    for (path, bytes) in &pycs {
        assert_eq!(
            bytes[4..8],
            [3, 0, 0, 0],
            "{} is not a checked-hash pyc: something else wrote it",
            path.display()
        );
    }
}
