//! The pool of long-lived target-interpreter processes that compile cache misses.
//!
//! Each of `size` threads owns at most one worker process (`python -c worker.py`), started the
//! first time that thread takes a job, so a run without misses starts no Python at all. Jobs go
//! out and answers come back as length-prefixed binary frames over the worker's stdin/stdout
//! (see `protocol`); a few jobs wait in each worker's pipe, so a worker goes from one compile
//! to the next without waiting for the client. The worker compiles through the interpreter's
//! own `py_compile.compile` inside a faithful copy of `python -m compileall`'s process state,
//! so bodies are byte-identical to what compileall writes (see `worker.py`).
//!
//! A worker that dies, hangs past the per-job timeout or breaks the protocol is killed; its job
//! is retried once on a fresh worker, then reported as [`CompileOutcome::WorkerLost`].

mod process;
mod protocol;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::interpreter::Interpreter;
use process::{Launch, Watchdog, WorkerProcess};

/// Per-job timeout unless the settings say otherwise.
const DEFAULT_TIMEOUT: Duration = crate::settings::DEFAULT_COMPILE_TIMEOUT;
/// How long a worker may take to exit after its stdin is closed.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Jobs sent to one worker ahead of its answers: enough that it never waits for the client
/// between two compiles, few enough that the last jobs of a run spread over every worker.
const IN_FLIGHT: usize = 2;
/// Tries of one job (the first and one retry on a fresh worker).
const MAX_TRIES: usize = 2;

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
    /// Keeps the deadlines of the workers' answers.
    watchdog: Watchdog,
    /// Ends the watchdog (once every pool thread is gone).
    done: AtomicBool,
}

/// A pool of compile workers. Submit jobs; read outcomes, in completion order, from
/// [`results`](Self::results).
pub struct WorkerPool {
    jobs: Option<Sender<Message>>,
    /// (A channel whose blocking receive parks at once: the reader waits for most answers, and
    /// a receive that spins first takes the CPU a worker needs.)
    results: Mutex<mpsc::Receiver<(u64, CompileOutcome)>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    watchdog: Option<JoinHandle<()>>,
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
            watchdog: Watchdog::default(),
            done: AtomicBool::new(false),
        });
        let (jobs, job_rx) = crossbeam_channel::unbounded::<Message>();
        let (result_tx, results) = mpsc::channel();
        let watchdog = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("pycache-watchdog".into())
                .spawn(move || shared.watchdog.run(&shared.stopping, &shared.done))
                .expect("spawn the worker watchdog")
        };
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
            results: Mutex::new(results),
            shared,
            threads,
            watchdog: Some(watchdog),
        }
    }

    /// Queues a job without blocking; a worker starts for it if all running ones are busy.
    pub fn submit(&self, job: CompileJob) {
        if let Some(jobs) = &self.jobs {
            // The threads hold the receiver until the pool is dropped, so this cannot fail.
            let _ = jobs.send(Message::Job(job));
        }
    }

    /// Starts the workers now, ahead of their first jobs (for a run that will surely compile:
    /// the interpreters start while the caller still looks for work). Does not block.
    pub fn start_workers(&self) {
        if let Some(jobs) = &self.jobs {
            for _ in 0..self.threads.len() {
                let _ = jobs.send(Message::Start);
            }
        }
    }

    /// Outcomes as `(job id, outcome)`, in completion order; one per submitted job.
    pub fn results(&self) -> MutexGuard<'_, mpsc::Receiver<(u64, CompileOutcome)>> {
        self.results.lock().unwrap_or_else(|e| e.into_inner())
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
        self.shared.done.store(true, Ordering::Relaxed);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.thread().unpark();
            let _ = watchdog.join();
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the pool threads are asked.
enum Message {
    /// Compile this.
    Job(CompileJob),
    /// Start a worker process if this thread has none (a thread busy starting one leaves the
    /// next such message to another thread).
    Start,
}

/// A job and what befell it so far.
struct Attempt {
    job: CompileJob,
    /// Why earlier tries failed (a lost worker, a worker that could not start).
    reasons: Vec<String>,
    /// Of those, tries whose worker could not start.
    start_failures: usize,
}

impl Attempt {
    fn new(job: CompileJob) -> Self {
        Attempt {
            job,
            reasons: Vec::new(),
            start_failures: 0,
        }
    }

    /// The outcome once every try has failed.
    fn lost(self, shared: &Shared) -> CompileOutcome {
        let message = if self.start_failures == MAX_TRIES {
            let message = self.reasons.join("; then ");
            shared.broken.get_or_init(|| message.clone());
            message
        } else {
            format!(
                "could not compile {:?}: {}",
                self.job.source,
                self.reasons.join("; then ")
            )
        };
        CompileOutcome::WorkerLost { message }
    }
}

/// A pool thread: takes jobs, runs them on its own worker process, sends back outcomes.
///
/// Up to [`IN_FLIGHT`] jobs are in the worker's pipe at once, so the worker finds its next job
/// waiting when it answers one. The worker answers in request order; when it is lost, the job
/// it was working on (the oldest) is charged a try, and the ones behind it are sent again to
/// the next worker as they were.
fn serve(shared: &Shared, jobs: &Receiver<Message>, results: &mpsc::Sender<(u64, CompileOutcome)>) {
    let mut worker: Option<WorkerProcess> = None;
    // Jobs to send before taking new ones: retries and jobs a lost worker had queued.
    let mut again: VecDeque<Attempt> = VecDeque::new();
    let mut in_flight: VecDeque<Attempt> = VecDeque::new();
    let mut open = true;
    'serve: loop {
        while in_flight.len() < IN_FLIGHT {
            if shared.stopping.load(Ordering::Relaxed) {
                break 'serve;
            }
            let attempt = match again.pop_front() {
                Some(attempt) => attempt,
                // Block for a job only when the worker has nothing to do.
                None if open && in_flight.is_empty() => match jobs.recv() {
                    Ok(Message::Job(job)) => Attempt::new(job),
                    Ok(Message::Start) => {
                        if worker.is_none() && shared.broken.get().is_none() {
                            worker = start_early(shared);
                        }
                        continue;
                    }
                    Err(_) => {
                        open = false;
                        break;
                    }
                },
                None if open => match jobs.try_recv() {
                    Ok(Message::Job(job)) => Attempt::new(job),
                    // (This thread's worker is running: it holds jobs.)
                    Ok(Message::Start) => continue,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                },
                None => break,
            };
            if shared.stopping.load(Ordering::Relaxed) {
                break 'serve;
            }
            if let Some(message) = shared.broken.get() {
                let lost = CompileOutcome::WorkerLost {
                    message: message.clone(),
                };
                if results.send((attempt.job.id, lost)).is_err() {
                    break 'serve;
                }
                continue;
            }
            let process = match &mut worker {
                Some(process) => process,
                None => match WorkerProcess::start(
                    &shared.launch,
                    shared.timeout,
                    &shared.started,
                    &shared.stopping,
                    &shared.watchdog,
                ) {
                    Ok(process) => worker.insert(process),
                    Err(reason) => {
                        let mut attempt = attempt;
                        attempt.start_failures += 1;
                        attempt.reasons.push(reason);
                        if !retry(shared, attempt, &mut again, results) {
                            break 'serve;
                        }
                        continue;
                    }
                },
            };
            match process.send(&attempt.job) {
                Ok(()) => in_flight.push_back(attempt),
                Err(reason) => {
                    // The oldest job the worker holds is the one it was working on.
                    in_flight.push_back(attempt);
                    worker = None;
                    if !lose_worker(shared, reason, &mut in_flight, &mut again, results) {
                        break 'serve;
                    }
                }
            }
        }
        let Some(oldest) = in_flight.front() else {
            if !open && again.is_empty() {
                break;
            }
            continue;
        };
        let Some(process) = &mut worker else {
            continue;
        };
        match process.answer(oldest.job.id, shared.timeout, &shared.stopping) {
            Ok(outcome) => {
                let done = in_flight.pop_front().expect("an oldest job");
                if results.send((done.job.id, outcome)).is_err() {
                    break;
                }
            }
            Err(reason) => {
                if shared.stopping.load(Ordering::Relaxed) {
                    break;
                }
                tracing::warn!(pid = process.id(), source = ?oldest.job.source, %reason, "compile worker lost; retrying");
                worker = None;
                if !lose_worker(shared, reason, &mut in_flight, &mut again, results) {
                    break;
                }
            }
        }
    }
    if let Some(worker) = worker {
        worker.stop(STOP_GRACE);
    }
}

/// A worker started ahead of any job; a failure to start is left to the first job to report.
fn start_early(shared: &Shared) -> Option<WorkerProcess> {
    WorkerProcess::start(
        &shared.launch,
        shared.timeout,
        &shared.started,
        &shared.stopping,
        &shared.watchdog,
    )
    .map_err(|reason| tracing::debug!(%reason, "a worker started early did not start"))
    .ok()
}

/// A worker was lost for `reason`: its oldest job is charged a try, the others go back to
/// `again`, in order. Returns false when the results are no longer read.
fn lose_worker(
    shared: &Shared,
    reason: String,
    in_flight: &mut VecDeque<Attempt>,
    again: &mut VecDeque<Attempt>,
    results: &mpsc::Sender<(u64, CompileOutcome)>,
) -> bool {
    for waiting in in_flight.drain(1..).rev() {
        again.push_front(waiting);
    }
    let Some(mut oldest) = in_flight.pop_front() else {
        return true;
    };
    oldest.reasons.push(reason);
    retry(shared, oldest, again, results)
}

/// Queues `attempt` for another try first, or reports it lost after [`MAX_TRIES`]. Returns
/// false when the results are no longer read.
fn retry(
    shared: &Shared,
    attempt: Attempt,
    again: &mut VecDeque<Attempt>,
    results: &mpsc::Sender<(u64, CompileOutcome)>,
) -> bool {
    if attempt.reasons.len() < MAX_TRIES {
        again.push_front(attempt);
        return true;
    }
    let id = attempt.job.id;
    results.send((id, attempt.lost(shared))).is_ok()
}
