//! The pool of long-lived target-interpreter processes that compile cache misses.
//!
//! Each of `size` threads owns at most one worker process (`python -c worker.py`), started the
//! first time that thread takes a job, so a run without misses starts no Python at all. Jobs go
//! out and answers come back as length-prefixed binary frames over the worker's stdin/stdout
//! (see `protocol`). The worker compiles through the interpreter's own `py_compile.compile`
//! inside a faithful copy of `python -m compileall`'s process state, so bodies are
//! byte-identical to what compileall writes (see `worker.py`).
//!
//! A worker that dies, hangs past the per-job timeout or breaks the protocol is killed; its job
//! is retried once on a fresh worker, then reported as [`CompileOutcome::WorkerLost`].

mod process;
mod protocol;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::interpreter::Interpreter;
use process::{Launch, WorkerProcess};

/// Per-job timeout unless the settings say otherwise.
const DEFAULT_TIMEOUT: Duration = crate::settings::DEFAULT_COMPILE_TIMEOUT;
/// How long a worker may take to exit after its stdin is closed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// One file to compile, as compileall's `compile_file` would hand it to `py_compile.compile`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileJob {
    /// Caller's id, returned with the outcome.
    pub id: u64,
    /// compileall's `fullname`: the path as compileall built it (may be relative to the cwd); any
    /// bytes, as the worker decodes it with `os.fsdecode`.
    pub source: std::ffi::OsString,
    /// compileall's `dfile`, the path recorded in the code object (`None`: `source`).
    pub dfile: Option<std::ffi::OsString>,
    /// compileall's `opt_level`: -1 (the interpreter's), 0, 1 or 2.
    pub optimize: i32,
}

/// What py_compile read for a compile, and what it found when it stat'ed the file after.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceRead {
    /// The source bytes that were compiled.
    pub bytes: Vec<u8>,
    /// `int(st_mtime) & 0xFFFFFFFF` after the read (the pyc header's field).
    pub mtime: u32,
    /// `st_size & 0xFFFFFFFF` after the read.
    pub size: u32,
}

/// The result of one [`CompileJob`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompileOutcome {
    /// The .pyc body: the bytes after the 16-byte header, exactly as py_compile writes them.
    /// `warnings` is what the compile printed on stderr (e.g. a SyntaxWarning), verbatim.
    Compiled {
        /// Marshalled code object.
        body: Vec<u8>,
        /// Warnings text, empty when none.
        warnings: String,
        /// What was compiled: the caller stores the body only under the hash of these bytes.
        read: SourceRead,
    },
    /// `py_compile` raised `PyCompileError`; `message` is its `msg` (not yet re-encoded for
    /// stdout). Deterministic for a given key, so the caller may cache it.
    Failed {
        /// `err.msg`.
        message: String,
        /// Warnings text printed before the failure.
        warnings: String,
    },
    /// Another exception (an `OSError` reading the source, ...): compileall prints
    /// `<class_name>: <text>` for `SyntaxError`, `UnicodeError` and `OSError` subclasses (other
    /// classes would crash compileall). Not deterministic, so not to be cached.
    Raised {
        /// `e.__class__.__name__`.
        class_name: String,
        /// `str(e)`.
        text: String,
        /// Warnings text printed before the exception.
        warnings: String,
    },
    /// The worker died, hung or could not start, twice for this job; a message for people.
    WorkerLost {
        /// Names the interpreter and says what happened.
        message: String,
    },
}

/// How a pool runs its workers.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Number of workers (at least 1).
    pub size: usize,
    /// How long one job may take before its worker is killed.
    pub job_timeout: Duration,
    /// Working directory of the workers; `None` inherits ours (job paths may be relative).
    pub cwd: Option<PathBuf>,
    /// Test hook: no worker starts before this file exists (makes "the source changed between
    /// hashing and compiling" reproducible).
    pub start_gate: Option<PathBuf>,
}

impl PoolConfig {
    /// `size` workers in the current directory with the default per-job timeout (120 s).
    pub fn new(size: usize) -> Self {
        PoolConfig {
            size,
            job_timeout: DEFAULT_TIMEOUT,
            cwd: None,
            start_gate: None,
        }
    }
}

/// State shared by the pool's threads.
struct Shared {
    launch: Launch,
    timeout: Duration,
    started: AtomicUsize,
    stopping: AtomicBool,
    /// Set when workers cannot be started at all: later jobs fail at once with this message.
    broken: OnceLock<String>,
}

/// A pool of compile workers. Submit jobs; read outcomes, in completion order, from
/// [`results`](Self::results).
pub struct WorkerPool {
    jobs: Option<Sender<CompileJob>>,
    results: Receiver<(u64, CompileOutcome)>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// A pool of `size` workers of `interp` (see [`PoolConfig::new`]). No process starts until a
    /// job is submitted.
    pub fn new(interp: &Interpreter, size: usize) -> Self {
        Self::with_config(interp, PoolConfig::new(size))
    }

    /// A pool configured by `config`. No process starts until a job is submitted.
    pub fn with_config(interp: &Interpreter, config: PoolConfig) -> Self {
        let shared = Arc::new(Shared {
            launch: Launch {
                executable: interp.real_executable.clone(),
                shown: interp.executable.clone(),
                cwd: config.cwd,
                start_gate: config.start_gate,
            },
            timeout: config.job_timeout,
            started: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            broken: OnceLock::new(),
        });
        let (jobs, job_rx) = crossbeam_channel::unbounded::<CompileJob>();
        let (result_tx, results) = crossbeam_channel::unbounded();
        let threads = (0..config.size.max(1))
            .map(|n| {
                let (shared, job_rx, result_tx) =
                    (Arc::clone(&shared), job_rx.clone(), result_tx.clone());
                std::thread::Builder::new()
                    .name(format!("pycache-worker-{n}"))
                    .spawn(move || serve(&shared, &job_rx, &result_tx))
                    .expect("spawn a worker thread")
            })
            .collect();
        WorkerPool {
            jobs: Some(jobs),
            results,
            shared,
            threads,
        }
    }

    /// Queues a job without blocking; a worker starts for it if all running ones are busy.
    pub fn submit(&self, job: CompileJob) {
        if let Some(jobs) = &self.jobs {
            // The threads hold the receiver until the pool is dropped, so this cannot fail.
            let _ = jobs.send(job);
        }
    }

    /// Outcomes as `(job id, outcome)`, in completion order; one per submitted job.
    pub fn results(&self) -> &Receiver<(u64, CompileOutcome)> {
        &self.results
    }

    /// How many worker processes were started in total (replacements included).
    pub fn workers_started(&self) -> usize {
        self.shared.started.load(Ordering::Relaxed)
    }

    /// Stops the workers: queued jobs that no worker has taken are dropped, running jobs end
    /// (or are abandoned within a fraction of a second), stdin is closed, stragglers killed.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A pool thread: takes jobs, runs them on its own worker process, sends back outcomes.
fn serve(shared: &Shared, jobs: &Receiver<CompileJob>, results: &Sender<(u64, CompileOutcome)>) {
    let mut worker: Option<WorkerProcess> = None;
    while let Ok(job) = jobs.recv() {
        if shared.stopping.load(Ordering::Relaxed) {
            break;
        }
        let outcome = run_job(shared, &mut worker, &job);
        if results.send((job.id, outcome)).is_err() {
            break;
        }
    }
    if let Some(worker) = worker {
        worker.stop(STOP_GRACE);
    }
}

/// Runs `job`, starting a worker if needed; on a lost worker, retries once on a fresh one.
fn run_job(
    shared: &Shared,
    worker: &mut Option<WorkerProcess>,
    job: &CompileJob,
) -> CompileOutcome {
    if let Some(message) = shared.broken.get() {
        return CompileOutcome::WorkerLost {
            message: message.clone(),
        };
    }
    let mut start_failures = 0;
    let mut reasons = Vec::new();
    for _attempt in 0..2 {
        let process = match worker {
            Some(process) => process,
            None => match WorkerProcess::start(
                &shared.launch,
                shared.timeout,
                &shared.started,
                &shared.stopping,
            ) {
                Ok(process) => worker.insert(process),
                Err(reason) => {
                    start_failures += 1;
                    reasons.push(reason);
                    continue;
                }
            },
        };
        match process.compile(job, shared.timeout, &shared.stopping) {
            Ok(outcome) => return outcome,
            Err(reason) => {
                tracing::warn!(pid = process.id(), source = ?job.source, %reason, "compile worker lost; retrying");
                *worker = None;
                reasons.push(reason);
            }
        }
    }
    let message = if start_failures == 2 {
        let message = reasons.join("; then ");
        shared.broken.get_or_init(|| message.clone());
        message
    } else {
        format!(
            "could not compile {:?}: {}",
            job.source,
            reasons.join("; then ")
        )
    };
    CompileOutcome::WorkerLost { message }
}
