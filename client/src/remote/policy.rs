//! The failure policy that keeps the cache from ever breaking a build.
//!
//! A server that is down, slow past the deadline, answering 5xx, or sending a corrupt entry
//! costs one warning and a local compile. 401/403 is said loudly, once. A 503 (the server says
//! it cannot serve now) or [`MAX_FAILURES`] other failures and the server is not asked again in
//! this run. With `--require-server`, every such failure is an error instead.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use anyhow::{anyhow, Result};

use super::http::RemoteError;
use crate::output::{Console, WarningKind};

/// Failures after which the server is left alone for the rest of the run.
pub const MAX_FAILURES: u32 = 3;

/// The breaker and the warnings of one run's server tier.
#[derive(Debug, Default)]
pub struct FailurePolicy {
    require: bool,
    failures: AtomicU32,
    open: AtomicBool,
}

impl FailurePolicy {
    /// A closed breaker; `require`: failures are errors (`--require-server`).
    pub fn new(require: bool) -> Self {
        FailurePolicy {
            require,
            ..Default::default()
        }
    }

    /// Whether the server is still being asked in this run.
    pub fn enabled(&self) -> bool {
        !self.open.load(Ordering::Relaxed)
    }

    /// Applies the policy to a failed request: an error to return with `--require-server`,
    /// otherwise a warning (loud and once for auth) and `Ok`.
    pub fn absorb(&self, console: &Console, what: &str, err: RemoteError) -> Result<()> {
        self.absorb_then(console, what, err, "compiling locally instead")
    }

    /// [`FailurePolicy::absorb`] for a request after which the run does something else than
    /// compile (`then` says what, in the warning).
    pub fn absorb_then(
        &self,
        console: &Console,
        what: &str,
        err: RemoteError,
        then: &str,
    ) -> Result<()> {
        if self.require {
            return Err(anyhow!("{what} failed: {err} (--require-server is set)"));
        }
        match &err {
            RemoteError::Auth { .. } | RemoteError::Insecure { .. } => {
                console.warn(
                    WarningKind::ServerAuth,
                    &format!("{err}. Continuing without the server."),
                );
                self.open.store(true, Ordering::Relaxed);
            }
            _ => {
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                console.warn(
                    WarningKind::Server,
                    &format!("{what} failed: {err}; {then}"),
                );
                let unavailable = matches!(err, RemoteError::Status { status: 503, .. });
                if unavailable || n >= MAX_FAILURES {
                    self.open.store(true, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Streams;
    use std::sync::{Arc, Mutex};

    /// A failed upload says what happened to its results, not that anything is compiled.
    #[test]
    fn a_failed_upload_says_the_results_were_not_shared() {
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let console = Console::new(
            Streams::Buffers {
                stdout: Arc::new(Mutex::new(Vec::new())),
                stderr: Arc::clone(&stderr),
            },
            false,
        );
        let err = RemoteError::Status {
            url: "http://127.0.0.1:9".into(),
            status: 500,
            message: "boom".into(),
        };
        FailurePolicy::new(false)
            .absorb_then(
                &console,
                "uploading entries to the server",
                err,
                super::super::UPLOAD_FAILED_THEN,
            )
            .unwrap();
        let text = String::from_utf8(stderr.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("uploading entries to the server failed"),
            "{text}"
        );
        assert!(text.contains("not shared"), "{text}");
        assert!(!text.contains("compiling locally"), "{text}");
    }
}
