//! Which interpreters pycache reproduces itself, and what it does with the others.
//!
//! pycache replays compileall's walk, options and output and writes `.pyc` headers without
//! Python, so it must know the rules of the target's version. Those rules were checked against
//! CPython 3.8 to 3.15 (3.14 and 3.15 on Pyodide, see README) and PyPy. For anything else it
//! does not guess: `compileall` hands the whole run to the interpreter's own
//! `python -m compileall` (the output and files are then exactly compileall's, without the
//! cache), and `sync` refuses with [`Unchecked`]'s message.

use super::Interpreter;

/// The newest `major.minor` whose compileall and `.pyc` rules pycache was checked against.
pub const NEWEST_KNOWN: (u32, u32) = (3, 15);

/// The implementations pycache was checked against (`sys.implementation.name`).
pub const KNOWN_IMPLEMENTATIONS: &[&str] = &["cpython", "pypy"];

/// Why pycache does not run compileall itself for an interpreter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unchecked {
    /// A version newer than [`NEWEST_KNOWN`]: its compileall may have changed.
    #[error(
        "Python {}.{}.{}, newer than the {}.{} pycache was checked against",
        .version.0, .version.1, .version.2, NEWEST_KNOWN.0, NEWEST_KNOWN.1
    )]
    NewerVersion {
        /// `sys.version_info[:3]`.
        version: (u32, u32, u32),
    },
    /// An implementation other than CPython and PyPy.
    #[error("{0}, an implementation pycache was not checked against (it knows CPython and PyPy)")]
    Implementation(String),
    /// `sys.implementation.cache_tag` is None: there is no `__pycache__` name for the .pyc
    /// files (compileall 3.15 reports each file, older ones raise).
    #[error("an interpreter without a cache tag (sys.implementation.cache_tag is None)")]
    NoCacheTag,
}

impl Interpreter {
    /// `None` when pycache knows this interpreter's rules; otherwise why not.
    pub fn unchecked(&self) -> Option<Unchecked> {
        if !KNOWN_IMPLEMENTATIONS.contains(&self.implementation.as_str()) {
            return Some(Unchecked::Implementation(self.implementation.clone()));
        }
        if (self.version.0, self.version.1) > NEWEST_KNOWN {
            return Some(Unchecked::NewerVersion {
                version: self.version,
            });
        }
        if self.cache_tag.is_empty() {
            return Some(Unchecked::NoCacheTag);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn interp(implementation: &str, version: (u32, u32, u32), cache_tag: &str) -> Interpreter {
        Interpreter {
            executable: PathBuf::from("/usr/bin/python3"),
            real_executable: PathBuf::from("/usr/bin/python3"),
            implementation: implementation.into(),
            version,
            magic: [0; 4],
            cache_tag: cache_tag.into(),
            optimize: 0,
            pycache_prefix: None,
            settings: String::new(),
            stdout_encoding: "utf-8".into(),
            sys_path_tail: Vec::new(),
            safe_path: false,
            hash_based_siphash13: true,
            recursion_limit: 1000,
            process_pool: true,
            hardlinks: true,
        }
    }

    #[test]
    fn known_versions_run_in_pycache() {
        for (minor, tag) in [(8, "cpython-38"), (14, "cpython-314"), (15, "cpython-315")] {
            assert_eq!(interp("cpython", (3, minor, 0), tag).unchecked(), None);
        }
        assert_eq!(interp("pypy", (3, 9, 18), "pypy39").unchecked(), None);
    }

    #[test]
    fn anything_else_is_named() {
        let newer = interp("cpython", (3, 16, 0), "cpython-316")
            .unchecked()
            .unwrap();
        assert_eq!(
            newer.to_string(),
            "Python 3.16.0, newer than the 3.15 pycache was checked against"
        );
        let graal = interp("graalpy", (3, 11, 7), "graalpy-311")
            .unchecked()
            .unwrap();
        assert!(graal.to_string().starts_with("graalpy, an implementation"));
        let untagged = interp("cpython", (3, 15, 0), "").unchecked();
        assert_eq!(untagged, Some(Unchecked::NoCacheTag));
    }
}
