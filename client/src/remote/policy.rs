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
                    &format!("{what} failed: {err}; compiling locally instead"),
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
