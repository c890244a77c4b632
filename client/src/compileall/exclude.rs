//! compileall's `-x REGEXP`, answered by the target interpreter's own `re`.
//!
//! compileall compiles the pattern in `main()` and skips every path for which
//! `rx.search(fullname)` matches. Python's `re` differs from any Rust engine (POSIX-class
//! look-alikes, `\s` and `\w` over Unicode, which patterns are errors, which warn), so one
//! helper process of the target interpreter compiles the pattern and answers, path by path,
//! whether the walk skips it. A pattern the interpreter rejects, and `-x ''` (which crashes
//! compileall at its first file), are handed to compileall itself by the caller.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::plan::Exclude;

/// The helper script, run with `python -c`.
const EXCLUDE_SCRIPT: &str = include_str!("exclude.py");

/// How starting the helper ended.
pub enum Start {
    /// The pattern compiled; `warnings` is what compiling it printed on stderr.
    Ready {
        /// The running helper.
        exclusion: Exclusion,
        /// compileall's stderr text for the pattern (warnings), to print before anything else.
        warnings: Vec<u8>,
    },
    /// compileall must handle the command line itself; the reason is for logs.
    Delegate(String),
}

/// A running helper that answers `rx.search(fullname)`.
pub struct Exclusion {
    io: RefCell<Option<Pipes>>,
}

struct Pipes {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Exclusion {
    /// Starts the helper of `python` for `pattern` (raw bytes of the argument).
    pub fn start(python: &Path, pattern: &OsStr) -> Start {
        if pattern.is_empty() {
            return Start::Delegate("-x with an empty pattern".into());
        }
        // `-B`: a question, not a compile; it leaves no .pyc behind.
        let spawned = crate::child::hide_secrets(&mut Command::new(python))
            .args(["-B", "-c"])
            .arg(EXCLUDE_SCRIPT)
            .arg(pattern)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => return Start::Delegate(format!("the -x helper did not start: {e}")),
        };
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut kind = [0u8; 5];
        let text = stdout.read_exact(&mut kind).and_then(|()| {
            let len = u32::from_le_bytes(kind[1..5].try_into().expect("4 bytes")) as usize;
            let mut text = vec![0u8; len];
            stdout.read_exact(&mut text).map(|()| text)
        });
        let pipes = Pipes {
            child,
            stdin,
            stdout,
        };
        match (kind[0], text) {
            (b'R', Ok(warnings)) => Start::Ready {
                exclusion: Exclusion {
                    io: RefCell::new(Some(pipes)),
                },
                warnings,
            },
            (b'D', Ok(reason)) => {
                stop(pipes);
                Start::Delegate(format!(
                    "the interpreter rejects the -x pattern ({})",
                    String::from_utf8_lossy(&reason)
                ))
            }
            (_, result) => {
                stop(pipes);
                Start::Delegate(format!(
                    "the -x helper gave no answer ({})",
                    result
                        .err()
                        .map_or("bad reply".to_string(), |e| e.to_string())
                ))
            }
        }
    }

    /// True when the helper stopped answering: the caller must not trust the plan.
    pub fn failed(&self) -> bool {
        self.io.borrow().is_none()
    }

    /// Stops the helper.
    pub fn finish(self) {
        if let Some(pipes) = self.io.into_inner() {
            stop(pipes);
        }
    }

    fn ask(pipes: &mut Pipes, fullname: &OsStr) -> std::io::Result<bool> {
        let bytes = fullname.as_bytes();
        let len = u32::try_from(bytes.len())
            .map_err(|_| std::io::Error::other("path longer than 4 GiB"))?;
        pipes.stdin.write_all(&len.to_le_bytes())?;
        pipes.stdin.write_all(bytes)?;
        pipes.stdin.flush()?;
        let mut answer = [0u8; 1];
        pipes.stdout.read_exact(&mut answer)?;
        match answer[0] {
            b'1' => Ok(true),
            b'0' => Ok(false),
            other => Err(std::io::Error::other(format!("unexpected answer {other}"))),
        }
    }
}

impl Exclude for Exclusion {
    fn excludes(&self, fullname: &OsStr) -> bool {
        let mut io = self.io.borrow_mut();
        let Some(pipes) = io.as_mut() else {
            return false;
        };
        match Self::ask(pipes, fullname) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!("the -x helper failed: {e}");
                if let Some(pipes) = io.take() {
                    stop(pipes);
                }
                false
            }
        }
    }
}

fn stop(pipes: Pipes) {
    let Pipes {
        mut child,
        stdin,
        stdout,
    } = pipes;
    drop(stdin);
    drop(stdout);
    if child.wait().is_err() {
        let _ = child.kill();
    }
}
