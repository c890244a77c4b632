//! One worker process: start it, hand it a job, read its answer within a deadline, stop it.
//!
//! A reader thread turns the worker's stdout into [`Event`]s, so waiting for an answer is a
//! channel receive with a timeout; another thread keeps the tail of its stderr for messages.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::protocol::{decode_response, encode_request, MAX_FRAME, READY_MARKER};
use super::{CompileJob, CompileOutcome};

/// The worker script, run with `python -c`.
const WORKER_SCRIPT: &str = include_str!("worker.py");
/// How much of a worker's stderr is kept for error messages.
const STDERR_TAIL: usize = 4096;
/// How much stray output before the ready marker is tolerated.
const MAX_PREAMBLE: usize = 1 << 20;
/// How often a waiting thread looks at the pool's stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

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

/// What the stdout reader thread reports.
enum Event {
    Ready,
    Response(Result<(u64, CompileOutcome), String>),
    Closed(String),
}

/// A running worker.
pub(super) struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    events: Receiver<Event>,
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
        crate::settings::hide_secrets(&mut command)
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
        let (tx, events) = crossbeam_channel::unbounded();
        std::thread::spawn(move || read_stdout(stdout, &tx));
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        std::thread::spawn(move || read_stderr(stderr, &tail));
        let mut process = WorkerProcess {
            child,
            stdin,
            events,
            stderr_tail,
            executable: launch.shown.clone(),
        };
        match process.wait_event(timeout, stopping) {
            Ok(Event::Ready) => Ok(process),
            Ok(_) => Err(process.fail("sent a frame before it was ready")),
            Err(reason) => Err(process.fail(&format!("did not start: {reason}"))),
        }
    }

    /// Compiles one job. An `Err` means this process is unusable (it died, hung or broke the
    /// protocol) and has been killed.
    pub(super) fn compile(
        &mut self,
        job: &CompileJob,
        timeout: Duration,
        stopping: &AtomicBool,
    ) -> Result<CompileOutcome, String> {
        let frame = encode_request(job);
        if let Err(err) = self
            .stdin
            .write_all(&frame)
            .and_then(|()| self.stdin.flush())
        {
            return Err(self.fail(&format!("could not be sent the job: {err}")));
        }
        match self.wait_event(timeout, stopping) {
            Ok(Event::Response(Ok((id, outcome)))) if id == job.id => Ok(outcome),
            Ok(Event::Response(Ok((id, _)))) => {
                Err(self.fail(&format!("answered job {id}, expected {}", job.id)))
            }
            Ok(Event::Response(Err(err))) => Err(self.fail(&format!("sent a bad frame: {err}"))),
            Ok(_) => Err(self.fail("sent a second ready marker")),
            Err(reason) => Err(self.fail(&reason)),
        }
    }

    /// Waits for the next event, up to `timeout`, giving up early when the pool stops.
    fn wait_event(&mut self, timeout: Duration, stopping: &AtomicBool) -> Result<Event, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left.min(STOP_POLL)) {
                Ok(Event::Closed(reason)) => return Err(reason),
                Ok(event) => return Ok(event),
                Err(RecvTimeoutError::Disconnected) => return Err("its output closed".into()),
                Err(RecvTimeoutError::Timeout) if left.is_zero() => {
                    return Err(format!(
                        "gave no answer within {} s (PYCACHE_COMPILE_TIMEOUT)",
                        timeout.as_secs_f64()
                    ))
                }
                Err(RecvTimeoutError::Timeout) if stopping.load(Ordering::Relaxed) => {
                    return Err("the pool is stopping".into())
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Kills the process and builds a message naming the interpreter, the reason, the exit status
    /// and the end of its stderr.
    fn fail(&mut self, reason: &str) -> String {
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
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
        let WorkerProcess {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The process id, for diagnostics.
    pub(super) fn id(&self) -> u32 {
        self.child.id()
    }
}

/// Reader thread: skips stray output up to the ready marker, then forwards response frames.
fn read_stdout(stdout: impl Read, tx: &Sender<Event>) {
    let mut reader = BufReader::with_capacity(1 << 16, stdout);
    let mut preamble = Vec::new();
    loop {
        match reader.read_until(b'\n', &mut preamble) {
            Ok(0) | Err(_) => {
                let _ = tx.send(Event::Closed("exited before it was ready".into()));
                return;
            }
            Ok(_) if preamble.ends_with(READY_MARKER) => break,
            Ok(_) if preamble.len() > MAX_PREAMBLE => {
                let _ = tx.send(Event::Closed("printed too much before it was ready".into()));
                return;
            }
            Ok(_) => {}
        }
    }
    if preamble.len() > READY_MARKER.len() {
        let stray = String::from_utf8_lossy(&preamble[..preamble.len() - READY_MARKER.len()]);
        tracing::debug!(%stray, "compile worker printed before it was ready");
    }
    if tx.send(Event::Ready).is_err() {
        return;
    }
    loop {
        let mut len = [0u8; 4];
        if reader.read_exact(&mut len).is_err() {
            let _ = tx.send(Event::Closed("exited".into()));
            return;
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME {
            let _ = tx.send(Event::Response(Err(format!("frame of {len} bytes"))));
            return;
        }
        let mut frame = vec![0u8; len as usize];
        if reader.read_exact(&mut frame).is_err() {
            let _ = tx.send(Event::Closed("exited in the middle of an answer".into()));
            return;
        }
        if tx.send(Event::Response(decode_response(&frame))).is_err() {
            return;
        }
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
