//! A small project run against a real server: the client from a clean environment and its JSON
//! summary, copies of the tree and compileall's reference, and the keys and bodies a writer
//! (honest or hostile) stores for it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pycache_client::interpreter::Interpreter;
use pycache_proto::CacheKey;

/// The client binary under test.
pub const CLIENT: &str = env!("CARGO_BIN_EXE_pycache-client");

/// Three modules: `app` imports `util`; `lib` holds a comprehension.
pub fn make_tree(root: &Path) {
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.py"), "import util\nNAME = 'app'\n").unwrap();
    std::fs::write(src.join("util.py"), "def twice(x):\n    return 2 * x\n").unwrap();
    std::fs::write(src.join("lib.py"), "VALUE = [i for i in range(3)]\n").unwrap();
}

/// `cp -a FROM TO` (mtimes kept: they go into .pyc headers).
pub fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status();
    assert!(status.unwrap().success());
}

/// A copy of `base/pristine/src` in `base/NAME/src`.
pub fn fresh_copy(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    copy_tree(&base.join("pristine/src"), &dir.join("src"));
    dir
}

/// `python3 -m compileall -q src` of a fresh copy named `reference`.
pub fn compileall_reference(base: &Path) -> PathBuf {
    let dir = fresh_copy(base, "reference");
    let out = Command::new("python3")
        .current_dir(&dir)
        .args(["-m", "compileall", "-q", "src"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    dir
}

/// `pycache-client [ARGS] sync --json src` in `cwd` ([`run_client`]).
pub fn sync(cwd: &Path, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = args.to_vec();
    all.extend(["sync", "--json", "src"]);
    run_client(cwd, cache, &all, env)
}

/// `pycache-client ARGS` in `cwd`, with no `PYCACHE_*` or `SSL_CERT_FILE` of the test's own
/// environment: only `cache`, python3, a 5 s deadline and `env`.
pub fn run_client(cwd: &Path, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(CLIENT);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PYCACHE_") || name == "SSL_CERT_FILE" {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(cwd)
        .env("PYCACHE_CACHE_DIR", cache)
        .env("PYCACHE_PYTHON", "python3")
        .env("PYCACHE_TIMEOUT", "5")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run pycache-client")
}

/// A run's JSON summary.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON summary (exit {:?}); stderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A run's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The machine's python3, probed as the client probes it.
pub fn probe(base: &Path) -> Interpreter {
    let python =
        pycache_client::interpreter::resolve_interpreter(Some(Path::new("python3")), None).unwrap();
    Interpreter::probe(&python, &base.join("probe")).unwrap()
}

/// The key `sync src` run in `dir` looks `file` up under (optimization level 0, its own path).
pub fn key_of(interp: &Interpreter, dir: &Path, file: &str) -> CacheKey {
    let source = std::fs::read(dir.join(file)).unwrap();
    CacheKey {
        source_hash: *blake3::hash(&source).as_bytes(),
        magic: interp.magic,
        cache_tag: interp.cache_tag.clone(),
        optimization: interp.optimize,
        settings: interp.settings.clone(),
        dfile: file.to_owned(),
    }
}

/// The body compileall wrote for `file` under `reference` (its .pyc without the header).
pub fn body_of(interp: &Interpreter, reference: &Path, file: &str) -> Vec<u8> {
    let path = Path::new(file);
    let stem = path.file_stem().unwrap().to_str().unwrap();
    let pyc = reference
        .join(path.parent().unwrap())
        .join("__pycache__")
        .join(format!("{stem}.{}.pyc", interp.cache_tag));
    std::fs::read(pyc).unwrap()[16..].to_vec()
}
