//! A run, assembled once: settings → interpreter → local cache → remote → pool.
//!
//! Commands only turn their arguments into a [`Plan`]; the session owns everything the plan
//! runs with. The interpreter is probed when the session opens (commands need its version to
//! read their arguments); the cache tiers and the worker pool are set up when a plan runs, so
//! a command line handed to the interpreter's own compileall never touches them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::compileall::plan::{Event, PlanContext};
use crate::engine::{self, RunConfig, Style, Summary, Tiers};
use crate::interpreter::{resolve_project_interpreter, Interpreter};
use crate::local_cache::{CacheOptions, LocalCache, RunCounts};
use crate::output::{Console, WarningKind};
use crate::pyc::InvalidationMode;
use crate::remote::{RemoteConfig, RemoteTier};
use crate::settings::Settings;
use crate::workers::{PoolConfig, WorkerPool};

/// What a command asks the session to do.
#[derive(Debug)]
pub struct Plan {
    /// compileall's events, in order.
    pub events: Vec<Event>,
    /// How results are shown.
    pub style: Style,
    /// Header kind to write.
    pub invalidation_mode: InvalidationMode,
    /// `--hardlink-dupes`.
    pub hardlink_dupes: bool,
}

/// The settings, the probed interpreter and the console of one command.
pub struct Session {
    /// The resolved settings.
    pub settings: Settings,
    /// The target interpreter.
    pub interpreter: Interpreter,
    /// The owner of stdout and stderr.
    pub console: Console,
    /// The working directory the run's relative paths start from.
    pub cwd: PathBuf,
}

impl Session {
    /// Resolves and probes the target interpreter.
    pub fn open(settings: Settings, console: Console) -> Result<Session> {
        Self::open_with(settings, console, false)
    }

    /// [`Session::open`] for a project command (`sync`, `verify`): the project's `.venv` is a
    /// choice of interpreter too (after the active virtualenv).
    pub fn open_project(settings: Settings, console: Console) -> Result<Session> {
        Self::open_with(settings, console, true)
    }

    fn open_with(settings: Settings, console: Console, project: bool) -> Result<Session> {
        let cwd = std::env::current_dir().context("the current directory is not accessible")?;
        let python = resolve_project_interpreter(
            settings.python.as_deref(),
            settings.virtual_env.as_deref(),
            settings.project_env.as_deref().filter(|_| project),
        )?;
        let interpreter = Interpreter::probe(&python, &settings.cache_dir)?;
        Ok(Session {
            settings,
            interpreter,
            console,
            cwd,
        })
    }

    /// What the planner needs from the probe.
    pub fn plan_context(&self) -> PlanContext {
        plan_context(&self.interpreter, &self.cwd)
    }

    /// py_compile's default invalidation mode in this environment.
    pub fn default_invalidation_mode(&self) -> InvalidationMode {
        InvalidationMode::default_for(self.settings.source_date_epoch)
    }

    /// Opens the cache tiers and the worker pool and runs `plan`; returns compileall's
    /// `success` and the counts. `summary` may carry the planner's counts already.
    pub fn run(&self, plan: Plan, summary: Summary) -> Result<(bool, Summary)> {
        self.run_with_cache(plan, summary, None)
    }

    /// [`Session::run`] with a local cache the command opened already (else it is opened here).
    /// A plan with no file to compile (everything up to date) opens no cache tier: a no-op
    /// run costs its walk alone.
    pub fn run_with_cache(
        &self,
        plan: Plan,
        summary: Summary,
        local: Option<LocalCache>,
    ) -> Result<(bool, Summary)> {
        self.run_with(plan, summary, local, None)
    }

    /// [`Session::run_with_cache`] with a worker pool the command made already (else it is
    /// made here).
    pub fn run_with(
        &self,
        plan: Plan,
        mut summary: Summary,
        local: Option<LocalCache>,
        pool: Option<WorkerPool>,
    ) -> Result<(bool, Summary)> {
        let settings = &self.settings;
        let has_files = plan.events.iter().any(|e| matches!(e, Event::File(_)));
        let local = match local {
            Some(local) => Some(local),
            None if has_files => self.open_local_cache(),
            None => None,
        };
        let remote = match &settings.server {
            // (`--require-server` still asks: a server that cannot be used fails the run.)
            Some(url) if has_files || settings.require_server => {
                RemoteTier::connect(&self.remote_config(url), &self.console)?
            }
            _ => None,
        };
        let pool = pool.unwrap_or_else(|| self.worker_pool());
        let cfg = self.run_config(plan.style, plan.invalidation_mode, plan.hardlink_dupes);
        let tiers = Tiers {
            local: local.as_ref(),
            remote: remote.as_ref(),
        };
        let ok = engine::run(
            &plan.events,
            &cfg,
            tiers,
            &pool,
            &self.console,
            &mut summary,
        );
        pool.shutdown();
        if let Some(remote) = remote.as_ref().filter(|r| !r.can_write() && r.enabled()) {
            if settings.token.is_some() && summary.compiled > 0 {
                self.console.warn(
                    WarningKind::ReadOnlyToken,
                    &format!(
                        "the token can only read at {}: the {} results compiled here are not \
                         uploaded (a token with the write scope and a namespace to write to \
                         shares them)",
                        remote.url(),
                        summary.compiled
                    ),
                );
            }
        }
        if let Some(cache) = &local {
            let counts = RunCounts {
                hits: summary.local_hits,
                misses: summary.remote_hits + summary.compiled,
                remote_hits: summary.remote_hits,
            };
            if let Err(e) = cache.finish(counts) {
                self.console.warn(
                    WarningKind::LocalCache,
                    &format!("could not update the local cache: {e}"),
                );
            }
        }
        Ok((ok?, summary))
    }

    /// How to reach the server at `url`, from the settings.
    pub fn remote_config(&self, url: &str) -> RemoteConfig {
        let settings = &self.settings;
        RemoteConfig {
            url: url.to_owned(),
            token: settings.token.clone(),
            namespace: settings.namespace.clone(),
            require: settings.require_server,
            timeout: settings.remote_timeout,
            connect_timeout: settings.connect_timeout,
            transport: settings.transport.clone(),
            signing_key: settings.signing_key.clone(),
            trusted_keys: std::sync::Arc::clone(&settings.trusted_keys),
        }
    }

    /// Whether this run has no cache it could hit: no server, and no local cache or one with
    /// no store yet. Then every file it plans is compiled.
    pub fn nothing_cached(&self) -> bool {
        let settings = &self.settings;
        settings.server.is_none()
            && (!settings.local_cache
                || !settings
                    .cache_dir
                    .join(crate::local_cache::STORE_FILE)
                    .exists())
    }

    /// The pool of target-interpreter workers that compiles misses (no process starts before
    /// its first job).
    pub fn worker_pool(&self) -> WorkerPool {
        let settings = &self.settings;
        WorkerPool::with_config(
            &self.interpreter,
            PoolConfig {
                size: settings.jobs,
                job_timeout: settings.compile_timeout,
                cwd: None,
                start_gate: settings.worker_gate.clone(),
            },
        )
    }

    /// The values a run takes from the interpreter, with the command's output style and
    /// header kind.
    pub fn run_config(
        &self,
        style: Style,
        invalidation_mode: InvalidationMode,
        hardlink_dupes: bool,
    ) -> RunConfig {
        let interp = &self.interpreter;
        RunConfig {
            style,
            invalidation_mode,
            hardlink_dupes,
            magic: interp.magic,
            cache_tag: interp.cache_tag.clone(),
            settings: interp.settings.clone(),
            siphash13: interp.hash_based_siphash13,
            stdout_encoding: interp.stdout_encoding.clone(),
            relocation: pycache_proto::key::dfile_leaves_key(
                &interp.implementation,
                (interp.version.0, interp.version.1),
            )
            .then_some((interp.version.0, interp.version.1)),
            body_format: (interp.implementation == "cpython")
                .then(|| crate::marshal::Format::for_python(interp.version.0, interp.version.1))
                .flatten(),
        }
    }

    /// The local cache, or `None` (with a warning) when it is disabled or cannot be opened: the
    /// cache never breaks a build.
    pub fn open_local_cache(&self) -> Option<LocalCache> {
        if !self.settings.local_cache {
            return None;
        }
        let dir = &self.settings.cache_dir;
        let interp = &self.interpreter;
        let options = CacheOptions {
            size_limit: self.settings.cache_size,
            interpreter: Some(format!(
                "{} {}.{}.{}",
                match interp.implementation.as_str() {
                    "cpython" => "CPython",
                    "pypy" => "PyPy",
                    other => other,
                },
                interp.version.0,
                interp.version.1,
                interp.version.2
            )),
        };
        match LocalCache::open_with(dir, options) {
            Ok(c) => Some(c),
            Err(e) => {
                self.console.warn(
                    WarningKind::LocalCache,
                    &format!(
                        "the local cache {} cannot be used ({e}); compiling without it. Set --cache-dir or PYCACHE_CACHE_DIR to a writable directory.",
                        dir.display()
                    ),
                );
                None
            }
        }
    }
}

/// What the planner needs from the probe.
pub fn plan_context(interp: &Interpreter, cwd: &Path) -> PlanContext {
    PlanContext {
        version: (interp.version.0, interp.version.1),
        magic: interp.magic,
        cache_tag: interp.cache_tag.clone(),
        interp_optimize: interp.optimize,
        pycache_prefix: interp.pycache_prefix.clone().map(Into::into),
        recursion_limit: i64::from(interp.recursion_limit),
        process_pool: interp.process_pool,
        cwd: cwd.to_path_buf(),
    }
}
