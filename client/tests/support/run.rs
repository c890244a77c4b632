//! Running `python -m compileall` and `pycache-client compileall` the same way.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::interp::Interp;

/// Which program answers the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `python -m compileall ARGS` of the target interpreter: the reference.
    Compileall,
    /// `pycache-client compileall ARGS`, target given by `PYCACHE_PYTHON`.
    Client,
    /// `pycache-client --python PATH compileall ARGS`.
    ClientFlag,
}

/// Variables that change what compileall does; the tests start from an environment without them
/// and set exactly the ones a case asks for.
const SCRUBBED: &[&str] = &[
    "SOURCE_DATE_EPOCH",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "PYENV_VERSION",
];

/// A process that does not finish in this time is killed and reported as hung.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// One command to run.
pub struct Invocation<'a> {
    /// The target interpreter.
    pub interp: &'a Interp,
    /// Which program runs.
    pub tool: Tool,
    /// compileall's arguments.
    pub args: Vec<OsString>,
    /// The working directory.
    pub cwd: PathBuf,
    /// Extra environment variables (after scrubbing).
    pub env: Vec<(String, OsString)>,
    /// Bytes fed to stdin (empty stdin when `None`).
    pub stdin: Option<Vec<u8>>,
    /// The client's private cache directory.
    pub cache_dir: PathBuf,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code; `None` when killed by a signal or the timeout.
    pub status: Option<i32>,
    /// Raw stdout.
    pub stdout: Vec<u8>,
    /// Raw stderr.
    pub stderr: Vec<u8>,
    /// True when the timeout killed it.
    pub timed_out: bool,
    /// Wall time.
    pub elapsed: Duration,
}

/// The path of the client binary under test.
pub fn client_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pycache-client"))
}

impl Invocation<'_> {
    fn command(&self) -> Command {
        let mut cmd = match self.tool {
            Tool::Compileall => {
                let mut cmd = Command::new(&self.interp.path);
                cmd.args(["-m", "compileall"]);
                cmd
            }
            Tool::Client => {
                let mut cmd = Command::new(client_binary());
                cmd.arg("compileall");
                cmd
            }
            Tool::ClientFlag => {
                let mut cmd = Command::new(client_binary());
                cmd.arg("--python").arg(&self.interp.path).arg("compileall");
                cmd
            }
        };
        cmd.args(&self.args).current_dir(&self.cwd);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("PYTHON") || key.starts_with("PYCACHE") || SCRUBBED.contains(&&*key)
            {
                cmd.env_remove(&key);
            }
        }
        cmd.env("LC_ALL", "C.UTF-8");
        cmd.env("PYCACHE_CACHE_DIR", &self.cache_dir);
        if self.tool == Tool::Client {
            cmd.env("PYCACHE_PYTHON", &self.interp.path);
        }
        if self.tool != Tool::Compileall && self.interp.pyodide {
            // Each Pyodide start costs ~2.5 s of CPU; one worker gives the same output.
            cmd.env("PYCACHE_JOBS", "1");
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    /// Runs to completion (or to `TIMEOUT`), collecting both output streams.
    pub fn run(&self) -> Outcome {
        let start = Instant::now();
        // The shared target directory may be rebuilding the client right now: a missing binary
        // is retried for a few seconds before it counts as a failure.
        let mut attempts = 0;
        let mut child = loop {
            let spawned = self
                .command()
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            match spawned {
                Ok(child) => break child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("spawn {:?}: {e}", self.tool),
            }
        };
        let stdin_bytes = self.stdin.clone().unwrap_or_default();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&stdin_bytes);
        });
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > TIMEOUT {
                timed_out = true;
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let _ = feeder.join();
        Outcome {
            status: status.code(),
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
            timed_out,
            elapsed: start.elapsed(),
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs a small Python program with the target interpreter (isolated mode) and returns stdout.
pub fn python(interp: &Interp, program: &str, args: &[&Path]) -> String {
    let output = Command::new(&interp.path)
        .arg("-I")
        .arg("-c")
        .arg(program)
        .args(args)
        .output()
        .expect("run the target interpreter");
    assert!(
        output.status.success(),
        "{} failed: {}",
        interp.label(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 from the checker")
}
