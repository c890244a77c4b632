//! One worker process: start it, send it jobs, read its answers within a deadline, stop it.
//!
//! The pool thread that owns a worker writes its requests and reads its answers itself, with
//! plain blocking reads: an answer costs the client one read, not a hand-off between threads.
//! Deadlines are kept by the pool's [`Watchdog`], which kills a worker whose answer is late
//! (or that is busy when the pool stops), so the blocked read ends. Requests may be sent ahead
//! of answers (the pool keeps a few in the worker's pipe, so the worker never waits for the
//! client between two compiles). Another thread keeps the tail of its stderr for messages.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::protocol::{decode_response, encode_request, MAX_FRAME, READY_MARKER};
use super::{CompileJob, CompileOutcome};
/// The worker script, run with `python -c`.
const WORKER_SCRIPT: &str = include_str!("worker.py");
/// How much of a worker's stderr is kept for error messages.
const STDERR_TAIL: usize = 4096;
/// How much stray output before the ready marker is tolerated.
const MAX_PREAMBLE: usize = 1 << 20;
/// How often the watchdog looks at deadlines and at the pool's stop flag.
const WATCH_TICK: Duration = Duration::from_millis(100);

/// How to start a worker.
#[derive(Clone, Debug)]
pub(super) struct Launch {
    /// The target interpreter.
    pub executable: PathBuf,
    /// The interpreter as the user named it (a shim, a venv's `bin/python`), for messages.
    pub shown: PathBuf,
    /// Working directory (job paths may be relative to it); `None` inherits ours.
    pub cwd: Option<PathBuf>,
    /// Test hook: wait for this file before starting a worker.
    pub start_gate: Option<PathBuf>,
}

/// A worker process as the watchdog sees it.
struct Watched {
    child: Child,
    /// When the answer being waited for is late; `None` while nobody waits.
    deadline: Option<Instant>,
    /// The watchdog killed the process because the deadline passed.
    expired: bool,
}

/// Kills workers whose answer is late, and busy workers once the pool stops: a pool thread
/// blocked reading from such a worker then sees its output end.
#[derive(Default)]
pub(super) struct Watchdog {
    workers: Mutex<Vec<Weak<Mutex<Watched>>>>,
}

impl Watchdog {
    /// Looks at every worker each [`WATCH_TICK`] until `done` is set (unpark the thread to end
    /// it at once).
    pub(super) fn run(&self, stopping: &AtomicBool, done: &AtomicBool) {
        while !done.load(Ordering::Relaxed) {
            std::thread::park_timeout(WATCH_TICK);
            let stopping = stopping.load(Ordering::Relaxed);
            let now = Instant::now();
            let mut workers = lock(&self.workers);
            workers.retain(|w| w.strong_count() > 0);
            for watched in workers.iter().filter_map(Weak::upgrade) {
                let mut watched = lock(&watched);
                let Some(deadline) = watched.deadline else {
                    continue;
                };
                if stopping || now >= deadline {
                    watched.expired = !stopping;
                    watched.deadline = None;
                    let _ = watched.child.kill();
                }
            }
        }
    }
}

/// A lock, even when a thread panicked holding it (the data stays usable).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running worker.
pub(super) struct WorkerProcess {
    watched: Arc<Mutex<Watched>>,
    pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr_tail: Arc<Mutex<VecDeque<u8>>>,
    executable: PathBuf,
}

impl WorkerProcess {
    /// Starts a worker and waits for its ready marker. `started` counts processes spawned.
    pub(super) fn start(
        launch: &Launch,
        timeout: Duration,
        started: &AtomicUsize,
        stopping: &AtomicBool,
        watchdog: &Watchdog,
    ) -> Result<Self, String> {
        if let Some(gate) = &launch.start_gate {
            let waiting = Instant::now();
            while !gate.exists() && waiting.elapsed() < timeout {
                if stopping.load(Ordering::Relaxed) {
                    return Err("the pool is stopping".into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let mut command = Command::new(&launch.executable);
        crate::child::hide_secrets(&mut command)
            .arg("-c")
            .arg(WORKER_SCRIPT)
            .env("PYCACHE_WORKER_DIR", std::env::temp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cwd) = &launch.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|err| {
            format!(
                "could not start the Python interpreter {}: {err}",
                launch.shown.display()
            )
        })?;
        started.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(pid = child.id(), "started a compile worker");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        std::thread::spawn(move || read_stderr(stderr, &tail));
        let pid = child.id();
        let watched = Arc::new(Mutex::new(Watched {
            child,
            deadline: None,
            expired: false,
        }));
        lock(&watchdog.workers).push(Arc::downgrade(&watched));
        let mut process = WorkerProcess {
            watched,
            pid,
            stdin,
            stdout: BufReader::with_capacity(1 << 16, stdout),
            stderr_tail,
            executable: launch.shown.clone(),
        };
        process.watch(Some(timeout));
        let ready = process.skip_to_ready();
        process.watch(None);
        match ready {
            Ok(()) => Ok(process),
            Err(how) => {
                let reason = process.read_failure(how, timeout, stopping);
                Err(process.fail(&format!("did not start: {reason}")))
            }
        }
    }

    /// Sets (or clears) the deadline of the answer waited for.
    fn watch(&self, timeout: Option<Duration>) {
        lock(&self.watched).deadline = timeout.map(|t| Instant::now() + t);
    }

    /// Why a read ended: the watchdog's doing (a late answer, a stopping pool) or `how` the
    /// output ended.
    fn read_failure(&self, how: &str, timeout: Duration, stopping: &AtomicBool) -> String {
        if lock(&self.watched).expired {
            format!(
                "gave no answer within {} s (PYCACHE_COMPILE_TIMEOUT)",
                timeout.as_secs_f64()
            )
        } else if stopping.load(Ordering::Relaxed) {
            "the pool is stopping".into()
        } else {
            how.to_owned()
        }
    }

    /// Reads up to the ready marker; stray output before it (a `sitecustomize` that prints) is
    /// skipped. An `Err` says how the output ended.
    fn skip_to_ready(&mut self) -> Result<(), &'static str> {
        let mut preamble = Vec::new();
        loop {
            self.read_line(&mut preamble)
                .map_err(|_| "exited before it was ready")?;
            if preamble.ends_with(READY_MARKER) {
                break;
            }
            if preamble.len() > MAX_PREAMBLE {
                return Err("printed too much before it was ready");
            }
        }
        if preamble.len() > READY_MARKER.len() {
            let stray = String::from_utf8_lossy(&preamble[..preamble.len() - READY_MARKER.len()]);
            tracing::debug!(%stray, "compile worker printed before it was ready");
        }
        Ok(())
    }

    /// Sends one job without waiting for its answer. An `Err` means this process is unusable
    /// and has been killed.
    pub(super) fn send(&mut self, job: &CompileJob) -> Result<(), String> {
        let frame = encode_request(job);
        self.stdin
            .write_all(&frame)
            .and_then(|()| self.stdin.flush())
            .map_err(|err| self.fail(&format!("could not be sent the job: {err}")))
    }

    /// Reads the next answer, which must be `expected`'s (answers come in request order),
    /// waiting at most `timeout`. An `Err` means this process is unusable (it died, hung or
    /// broke the protocol) and has been killed.
    pub(super) fn answer(
        &mut self,
        expected: u64,
        timeout: Duration,
        stopping: &AtomicBool,
    ) -> Result<CompileOutcome, String> {
        self.watch(Some(timeout));
        let frame = self.read_frame();
        self.watch(None);
        let frame = match frame {
            Ok(frame) => frame,
            Err(how) => {
                let reason = self.read_failure(how, timeout, stopping);
                return Err(self.fail(&reason));
            }
        };
        match decode_response(&frame) {
            Ok((id, outcome)) if id == expected => Ok(outcome),
            Ok((id, _)) => Err(self.fail(&format!("answered job {id}, expected {expected}"))),
            Err(err) => Err(self.fail(&format!("sent a bad frame: {err}"))),
        }
    }

    /// Reads one length-prefixed frame. An `Err` says what went wrong.
    fn read_frame(&mut self) -> Result<Vec<u8>, &'static str> {
        let mut len = [0u8; 4];
        self.stdout.read_exact(&mut len).map_err(|_| "exited")?;
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME {
            return Err("sent a bad frame: a frame larger than the limit");
        }
        let mut frame = vec![0u8; len as usize];
        self.stdout
            .read_exact(&mut frame)
            .map_err(|_| "exited in the middle of an answer")?;
        Ok(frame)
    }

    /// Appends stdout up to and including the next newline to `line`.
    fn read_line(&mut self, line: &mut Vec<u8>) -> std::io::Result<()> {
        match self.stdout.read_until(b'\n', line)? {
            0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    /// Kills the process and builds a message naming the interpreter, the reason, the exit status
    /// and the end of its stderr.
    fn fail(&mut self, reason: &str) -> String {
        let status = {
            let mut watched = lock(&self.watched);
            let _ = watched.child.kill();
            watched
                .child
                .wait()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        };
        // The stderr thread sees EOF once the process is gone; give it a moment to catch up.
        let deadline = Instant::now() + Duration::from_millis(200);
        while Arc::strong_count(&self.stderr_tail) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let tail = self
            .stderr_tail
            .lock()
            .map(|t| t.iter().copied().collect::<Vec<u8>>())
            .unwrap_or_default();
        let tail = String::from_utf8_lossy(&tail);
        let tail = tail.trim();
        let mut message = format!(
            "the Python worker {} {reason}{status}",
            self.executable.display()
        );
        if !tail.is_empty() {
            message.push_str(&format!("; its stderr ends with:\n{tail}"));
        }
        tracing::debug!(%message, "compile worker failed");
        message
    }

    /// Closes stdin so the worker exits on its own; kills it if it has not within `grace`.
    pub(super) fn stop(self, grace: Duration) {
        let WorkerProcess { watched, stdin, .. } = self;
        drop(stdin);
        let mut watched = lock(&watched);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match watched.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        let _ = watched.child.kill();
        let _ = watched.child.wait();
    }

    /// The process id, for diagnostics.
    pub(super) fn id(&self) -> u32 {
        self.pid
    }
}

/// Stderr thread: keeps the last [`STDERR_TAIL`] bytes and logs what arrives.
fn read_stderr(mut stderr: impl Read, tail: &Mutex<VecDeque<u8>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stderr.read(&mut buf) {
        tracing::debug!(stderr = %String::from_utf8_lossy(&buf[..n]), "compile worker stderr");
        if let Ok(mut tail) = tail.lock() {
            tail.extend(&buf[..n]);
            let excess = tail.len().saturating_sub(STDERR_TAIL);
            tail.drain(..excess);
        }
    }
}
