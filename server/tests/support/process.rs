//! The real `pycache-server` binary as a child process: run CLI commands, start a server on
//! `127.0.0.1:0` and learn its port from the `listening on ADDR` line (never by sleeping).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_pycache-server")
}

/// Runs `pycache-server ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env_remove("PYCACHE_DATABASE_URL")
        .output()
        .expect("run pycache-server")
}

/// `token create`, returning the token from the last line of stdout.
pub fn create_token(db_args: &[&str], name: &str, scope: &str) -> String {
    let mut args = vec!["token", "create", "--scope", scope, "--name", name];
    args.extend_from_slice(db_args);
    let out = run(&args);
    assert!(
        out.status.success(),
        "token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().expect("a last line").to_owned()
}

/// A running server; killed on drop if still running.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: PathBuf,
}

impl Server {
    /// Starts `pycache-server serve --listen 127.0.0.1:0 ARGS`, logging to `log_dir`.
    pub fn start(args: &[&str], log_dir: &Path) -> Server {
        let log = log_dir.join(format!("server-{}.log", std::process::id() ^ rand_suffix()));
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("PYCACHE_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn pycache-server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        break addr.to_owned();
                    }
                }
                _ => {
                    let _ = child.wait();
                    panic!(
                        "the server exited before listening:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `signal` (e.g. `TERM`, `KILL`) and waits for the exit; returns whether it succeeded.
    pub fn signal_and_wait(&mut self, signal: &str) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid} failed");
        self.child.wait().unwrap().success()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) << 16
}
