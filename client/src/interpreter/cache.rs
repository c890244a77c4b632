//! The on-disk cache of probe answers: `cache_dir/interpreters/<key>.json`.
//!
//! The key covers everything that can change the answer without changing the file name: the
//! interpreter path and the metadata of it and of the binary it resolves to, the environment
//! (`PYTHON*`, locale), a nearby `pyvenv.cfg`, and the probe script itself. For wrapper scripts
//! (pyenv shims pick a version from `PYENV_VERSION` or `.python-version`) it also covers `PYENV*`
//! and the current directory. An entry also records the `sys.path` directories and their
//! modification times, re-checked on load: installing a `.pth` file changes `sys.path`.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Interpreter;

/// One cache file.
#[derive(Serialize, Deserialize)]
struct CachedProbe {
    interpreter: Interpreter,
    /// `sys.path` directories and their modification times (ns) when probed.
    dirs: Vec<(PathBuf, i64)>,
}

/// The cache key of `executable`'s probe; an error when it cannot be inspected (e.g. missing).
pub(super) fn probe_key(executable: &Path, script: &str) -> std::io::Result<String> {
    let link = std::fs::symlink_metadata(executable)?;
    let resolved = std::fs::canonicalize(executable)?;
    let target = std::fs::metadata(&resolved)?;
    let mut hasher = blake3::Hasher::new();
    let mut field = |name: &str, value: &[u8]| {
        hasher.update(name.as_bytes());
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(value);
    };
    field("script", script.as_bytes());
    field("path", executable.as_os_str().as_encoded_bytes());
    field("path-meta", &meta_bytes(&link));
    field("resolved", resolved.as_os_str().as_encoded_bytes());
    field("resolved-meta", &meta_bytes(&target));
    for cfg in venv_configs(executable) {
        if let Ok(meta) = std::fs::metadata(&cfg) {
            field("pyvenv.cfg", &meta_bytes(&meta));
        }
    }
    let wrapper = is_script(&resolved);
    let mut vars: Vec<_> = std::env::vars_os()
        .filter(|(name, _)| {
            let name = name.to_string_lossy();
            name.starts_with("PYTHON")
                || matches!(&*name, "LANG" | "LC_ALL" | "LC_CTYPE")
                || (wrapper && name.starts_with("PYENV"))
        })
        .collect();
    vars.sort();
    for (name, value) in &vars {
        field("env", name.as_encoded_bytes());
        field("=", value.as_encoded_bytes());
    }
    let relative_pythonpath = std::env::var_os("PYTHONPATH").is_some();
    if wrapper || relative_pythonpath {
        let cwd = std::env::current_dir().unwrap_or_default();
        field("cwd", cwd.as_os_str().as_encoded_bytes());
        if wrapper {
            // What a version manager's shim decides by: `.python-version` in the current
            // directory or above, and the global version file.
            for file in version_files(&cwd) {
                if let Ok(text) = std::fs::read(&file) {
                    field("version-file", file.as_os_str().as_encoded_bytes());
                    field("=", &text);
                }
            }
        }
    }
    Ok(hasher.finalize().to_hex()[..32].to_string())
}

/// The files a pyenv-style shim reads to pick a version: `.python-version` from `cwd` up to
/// the root, then `$PYENV_ROOT/version` (default `~/.pyenv/version`).
fn version_files(cwd: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = cwd.ancestors().map(|d| d.join(".python-version")).collect();
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".pyenv")));
    if let Some(root) = root {
        files.push(root.join("version"));
    }
    files
}

/// mtime (ns), size, inode and device of a file.
fn meta_bytes(meta: &std::fs::Metadata) -> Vec<u8> {
    let parts = [
        meta.mtime(),
        meta.mtime_nsec(),
        meta.size() as i64,
        meta.ino() as i64,
        meta.dev() as i64,
    ];
    parts.iter().flat_map(|p| p.to_le_bytes()).collect()
}

/// Where a virtual environment's `pyvenv.cfg` would be for this interpreter.
fn venv_configs(executable: &Path) -> Vec<PathBuf> {
    executable
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("pyvenv.cfg"))
        .collect()
}

/// Whether `path` is a `#!` script (a wrapper such as a pyenv shim) rather than a binary.
fn is_script(path: &Path) -> bool {
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"#!"
}

/// The file holding `key`'s answer.
fn cache_file(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join("interpreters").join(format!("{key}.json"))
}

/// Modification time in nanoseconds.
fn mtime_ns(path: &Path) -> Option<i64> {
    let meta = std::fs::metadata(path).ok()?;
    Some(meta.mtime() * 1_000_000_000 + meta.mtime_nsec())
}

/// A cached answer that is still valid.
pub(super) fn load(cache_dir: &Path, key: &str) -> Option<Interpreter> {
    let text = std::fs::read(cache_file(cache_dir, key)).ok()?;
    let cached: CachedProbe = match serde_json::from_slice(&text) {
        Ok(cached) => cached,
        Err(err) => {
            tracing::debug!(%err, "ignoring an unreadable interpreter probe cache file");
            return None;
        }
    };
    let fresh = cached
        .dirs
        .iter()
        .all(|(dir, mtime)| mtime_ns(dir) == Some(*mtime));
    fresh.then_some(cached.interpreter)
}

/// Records `interpreter` under `key`, atomically (write a temporary file, then rename). A failure
/// only costs a probe next time, so it is logged, not returned.
pub(super) fn store(cache_dir: &Path, key: &str, interpreter: &Interpreter) {
    let dirs = interpreter
        .sys_path_tail
        .iter()
        .map(PathBuf::from)
        .filter_map(|dir| Some((mtime_ns(&dir)?, dir)))
        .map(|(mtime, dir)| (dir, mtime))
        .collect();
    let cached = CachedProbe {
        interpreter: interpreter.clone(),
        dirs,
    };
    let path = cache_file(cache_dir, key);
    let write = || -> std::io::Result<()> {
        let dir = path.parent().expect("cache file has a parent");
        std::fs::create_dir_all(dir)?;
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        file.write_all(&serde_json::to_vec_pretty(&cached)?)?;
        file.persist(&path).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(err) = write() {
        tracing::warn!(path = %path.display(), %err, "could not cache the interpreter probe");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_the_environment_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("python");
        std::fs::write(&exe, b"\x7fELF").unwrap();
        let a = probe_key(&exe, "script").unwrap();
        assert_eq!(a, probe_key(&exe, "script").unwrap());
        assert_ne!(a, probe_key(&exe, "other script").unwrap());
        std::fs::write(&exe, b"\x7fELF2").unwrap();
        assert_ne!(a, probe_key(&exe, "script").unwrap());
        assert!(probe_key(&dir.path().join("missing"), "script").is_err());
    }

    #[test]
    fn stale_sys_path_directory_invalidates_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site-packages");
        std::fs::create_dir(&site).unwrap();
        let interp = Interpreter {
            executable: "/x/python".into(),
            real_executable: "/x/python".into(),
            implementation: "cpython".into(),
            version: (3, 11, 7),
            magic: *b"\xa7\x0d\x0d\x0a",
            cache_tag: "cpython-311".into(),
            optimize: 0,
            pycache_prefix: None,
            settings: "v1".into(),
            stdout_encoding: "utf-8".into(),
            sys_path_tail: vec![site.to_string_lossy().into_owned()],
            safe_path: false,
            hash_based_siphash13: true,
            recursion_limit: 1000,
            process_pool: true,
            hardlinks: true,
        };
        store(dir.path(), "k", &interp);
        assert_eq!(load(dir.path(), "k"), Some(interp));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(site.join("new.pth"), "x").unwrap();
        assert_eq!(load(dir.path(), "k"), None);
    }
}
