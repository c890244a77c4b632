//! Virtual environments: the one `pycache-client` is installed in (its interpreter is the default
//! target), and the one `sync --venv` compiles (its `site-packages`, with its own interpreter).
//!
//! A virtual environment is a directory with a `pyvenv.cfg` and `bin/python` (PEP 405); that is
//! what `python -m venv`, virtualenv, uv, Poetry and pipx all create.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The marker file of a PEP 405 environment.
const PYVENV_CFG: &str = "pyvenv.cfg";

/// Files that mark an environment a tool manager made for pycache itself (`uv tool install`,
/// `pipx install`): its interpreter is pycache's, not the project's, so it is never the default
/// target.
const TOOL_RECEIPTS: [&str; 2] = ["uv-receipt.toml", "pipx_metadata.json"];

/// Asks the environment's interpreter where packages go (`sysconfig`, as pip and uv install).
const SITE_PACKAGES_SCRIPT: &str =
    "import json, sysconfig; p = sysconfig.get_paths(); print(json.dumps([p['purelib'], p['platlib']]))";

/// The virtual environment the running `pycache-client` was installed into (`pip install
/// pycache-client` in a venv puts the binary in `<venv>/bin`), unless a tool manager made that
/// environment for pycache alone (`uv tool install`, `pipx`, `uvx`).
pub fn installed_environment() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?;
    if bin.file_name()? != "bin" {
        return None;
    }
    let root = bin.parent()?;
    (is_environment(root) && !is_tool_environment(root)).then(|| root.to_path_buf())
}

/// The project's own environment, as uv finds it: `.venv` beside the project's
/// `pyproject.toml` (the nearest one at or above the working directory), when it is a virtual
/// environment with an interpreter.
pub fn project_environment(pyproject: &Path) -> Option<PathBuf> {
    let root = pyproject.parent()?.join(".venv");
    let usable = is_environment(&root) && root.join("bin").join("python").exists();
    usable.then(|| std::path::absolute(&root).unwrap_or(root))
}

/// Whether `root` is the root of a virtual environment.
fn is_environment(root: &Path) -> bool {
    root.join(PYVENV_CFG).is_file()
}

/// Whether `root` is an environment a tool manager made for one tool: it holds a receipt, or
/// it lives inside a cache directory (`uvx` runs tools from environments in uv's cache, which
/// is marked by a `CACHEDIR.TAG`; a project's own `.venv` may hold one, but not its parents).
fn is_tool_environment(root: &Path) -> bool {
    TOOL_RECEIPTS.iter().any(|r| root.join(r).exists())
        || root
            .ancestors()
            .skip(1)
            .any(|dir| dir.join("CACHEDIR.TAG").is_file())
}

/// A virtual environment to compile: its root, its interpreter and its package directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// The environment's root (absolute, symlinks kept).
    pub root: PathBuf,
    /// `<root>/bin/python`, the compiler of record for everything in the environment.
    pub python: PathBuf,
    /// `sysconfig`'s `purelib` and `platlib` as the interpreter reports them, the second left
    /// out when it is the same directory or does not exist.
    pub site_packages: Vec<PathBuf>,
}

impl Environment {
    /// Finds the environment `sync --venv [PATH]` means: `PATH`, else the active one
    /// (`VIRTUAL_ENV`), else the project's (`project_env`: `.venv` beside the nearest
    /// pyproject.toml), else `./.venv`; and asks its interpreter for its package directories.
    pub fn locate(
        explicit: Option<&Path>,
        cwd: &Path,
        project_env: Option<&Path>,
    ) -> Result<Environment> {
        let (root, how) = match explicit {
            Some(path) => (cwd.join(path), "--venv"),
            None => match std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
                Some(active) => (cwd.join(active), "VIRTUAL_ENV (the active environment)"),
                None => match project_env {
                    Some(env) => (env.to_path_buf(), "the project's .venv"),
                    None => (cwd.join(".venv"), "the default ./.venv"),
                },
            },
        };
        let root = std::path::absolute(&root)?;
        if !root.exists() {
            bail!(
                "{} ({how}) does not exist; create the environment first (`uv sync`, \
                 `python -m venv {}`) or pass --venv PATH",
                root.display(),
                root.display()
            );
        }
        if !root.is_dir() {
            bail!(
                "{} ({how}) is not a directory; pass the environment's root directory, \
                 the one that holds pyvenv.cfg and bin/",
                root.display()
            );
        }
        if !is_environment(&root) {
            bail!(
                "{} ({how}) is not a virtual environment: it has no pyvenv.cfg; pass the \
                 environment's root directory, the one that holds pyvenv.cfg and bin/",
                root.display()
            );
        }
        let python = root.join("bin").join("python");
        if !python.exists() {
            bail!(
                "{} has no bin/python (its interpreter was removed or moved); recreate the \
                 environment",
                root.display()
            );
        }
        let site_packages = site_packages(&python)?;
        Ok(Environment {
            root,
            python,
            site_packages,
        })
    }

    /// The interpreter that compiles this environment: always its own. An interpreter chosen
    /// otherwise (`--python`, `PYCACHE_PYTHON`, `[tool.pycache] python`) is not used, and a
    /// different one is named in a warning so the choice is never silent.
    pub fn target_interpreter(
        &self,
        explicit: Option<&Path>,
        console: &crate::output::Console,
    ) -> PathBuf {
        if let Some(other) = explicit {
            let same = std::path::absolute(other).is_ok_and(|p| p == self.python)
                || other.canonicalize().ok() == self.python.canonicalize().ok();
            if !same {
                console.stderr_text(&format!(
                    "pycache: warning: --venv compiles {} with its own interpreter {}, not {} \
                     (from --python, PYCACHE_PYTHON or [tool.pycache] python)\n",
                    self.root.display(),
                    self.python.display(),
                    other.display()
                ));
            }
        }
        self.python.clone()
    }
}

/// Runs the environment's interpreter to learn its `purelib` and `platlib` directories.
fn site_packages(python: &Path) -> Result<Vec<PathBuf>> {
    let out = crate::child::hide_secrets(&mut Command::new(python))
        // `-I` ignores PYTHONDONTWRITEBYTECODE: `-B` keeps the start-up imports (a `.pth`
        // file's, such as setuptools' `_distutils_hack`) from leaving timestamp .pyc files
        // in the environment this run is about to compile.
        .args(["-I", "-B", "-c"])
        .arg(SITE_PACKAGES_SCRIPT)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("could not run {}", python.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{} failed to report its site-packages ({}): {}; check that the environment works \
             (`{} -c 'import sysconfig'`)",
            python.display(),
            out.status,
            stderr.trim().lines().last().unwrap_or(""),
            python.display()
        );
    }
    // The answer is the last line: a `sitecustomize` may have printed before it.
    let text = String::from_utf8_lossy(&out.stdout);
    let answer = text.trim().lines().last().unwrap_or("");
    let dirs: Vec<PathBuf> = serde_json::from_str(answer).with_context(|| {
        format!(
            "{} answered the site-packages question with {answer:?}, not a JSON list",
            python.display()
        )
    })?;
    let mut kept: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            continue;
        }
        let real = dir.canonicalize().ok();
        if !kept
            .iter()
            .any(|(d, r)| *d == dir || (r.is_some() && *r == real))
        {
            kept.push((dir, real));
        }
    }
    if kept.is_empty() {
        bail!(
            "{} reports no existing site-packages directory; install something into the \
             environment first",
            python.display()
        );
    }
    Ok(kept.into_iter().map(|(d, _)| d).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_venv(dir: &Path) -> PathBuf {
        let root = dir.join("env");
        let status = Command::new("python3")
            .args(["-m", "venv", "--without-pip"])
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success());
        root
    }

    #[test]
    fn a_venv_reports_its_site_packages_and_its_interpreter() {
        let tmp = tempfile::tempdir().unwrap();
        let root = make_venv(tmp.path());
        let env = Environment::locate(Some(Path::new("env")), tmp.path(), None).unwrap();
        assert_eq!(env.root, root);
        assert_eq!(env.python, root.join("bin/python"));
        assert_eq!(env.site_packages.len(), 1, "{:?}", env.site_packages);
        let sp = &env.site_packages[0];
        assert!(sp.starts_with(&root), "{}", sp.display());
        assert!(sp.ends_with("site-packages"), "{}", sp.display());
    }

    #[test]
    fn paths_that_are_not_environments_are_refused_clearly() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Environment::locate(Some(Path::new("missing")), tmp.path(), None).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("missing") && text.contains("does not exist"),
            "{text}"
        );
        std::fs::create_dir(tmp.path().join("plain")).unwrap();
        let err = Environment::locate(Some(Path::new("plain")), tmp.path(), None).unwrap_err();
        assert!(format!("{err:#}").contains("has no pyvenv.cfg"), "{err:#}");
        std::fs::write(tmp.path().join("file"), "x").unwrap();
        let err = Environment::locate(Some(Path::new("file")), tmp.path(), None).unwrap_err();
        assert!(format!("{err:#}").contains("not a directory"), "{err:#}");
        let root = make_venv(tmp.path());
        std::fs::remove_file(root.join("bin/python")).unwrap();
        let err = Environment::locate(Some(Path::new("env")), tmp.path(), None).unwrap_err();
        assert!(format!("{err:#}").contains("has no bin/python"), "{err:#}");
    }

    #[test]
    fn tool_environments_are_recognised() {
        let tmp = tempfile::tempdir().unwrap();
        let root = make_venv(tmp.path());
        assert!(is_environment(&root));
        assert!(!is_tool_environment(&root));
        // uv venv writes a CACHEDIR.TAG into a project's own .venv: still the project's.
        std::fs::write(root.join("CACHEDIR.TAG"), "Signature").unwrap();
        assert!(!is_tool_environment(&root));
        std::fs::write(root.join("uv-receipt.toml"), "[tool]").unwrap();
        assert!(is_tool_environment(&root));
        std::fs::remove_file(root.join("uv-receipt.toml")).unwrap();
        std::fs::write(tmp.path().join("CACHEDIR.TAG"), "Signature").unwrap();
        assert!(is_tool_environment(&root));
    }
}
