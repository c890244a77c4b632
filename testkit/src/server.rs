//! The real `pycache-server` binary as a child process: run CLI commands, start a server on
//! `127.0.0.1:0` and learn its port from the `listening on ADDR` line (never by sleeping).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The binary under test: `PYCACHE_SERVER_BIN`, else `pycache-server` in the target directory
/// of the running test (`target/<profile>/`, beside the `deps/` folder tests run from).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PYCACHE_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = profile_dir.join("pycache-server");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p pycache-server`, or run the tests with \
         `cargo test --workspace`), or point PYCACHE_SERVER_BIN at it",
        path.display()
    );
    path
}

/// Runs `pycache-server ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env_remove("PYCACHE_DATABASE_URL")
        .output()
        .expect("run pycache-server")
}

/// `token create`, returning the token from the last line of stdout. `db_args` names the
/// database (`--data-dir DIR` or `--database-url URL`).
pub fn create_token(db_args: &[&str], name: &str, scope: &str) -> String {
    create_token_with(db_args, name, scope, &[])
}

/// [`create_token`] with more arguments (`--writes main`, `--reads main,default`).
pub fn create_token_with(db_args: &[&str], name: &str, scope: &str, extra: &[&str]) -> String {
    let mut args = vec!["token", "create", "--scope", scope, "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(db_args);
    let out = run(&args);
    assert!(
        out.status.success(),
        "token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .last()
        .expect("a last line")
        .trim()
        .to_owned()
}

/// A running server; killed on drop if still running.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: PathBuf,
    db_args: Vec<String>,
}

impl Server {
    /// Starts `pycache-server serve --listen 127.0.0.1:0 ARGS`, logging to a file in `log_dir`.
    pub fn start(args: &[&str], log_dir: &Path) -> Server {
        Server::start_with(Command::new(binary()), args, log_dir)
    }

    /// [`Server::start`] with a prepared command (e.g. wrapped in `sh -c 'ulimit …; exec "$@"'`
    /// or with extra environment); `serve --listen 127.0.0.1:0 ARGS` are appended to it.
    pub fn start_with(mut command: Command, args: &[&str], log_dir: &Path) -> Server {
        let log = log_dir.join(format!("server-{}-{}.log", std::process::id(), next_id()));
        let mut child = command
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
                        break addr.trim().to_owned();
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
        let db_args = args
            .windows(2)
            .filter(|w| w[0] == "--data-dir" || w[0] == "--database-url")
            .flat_map(|w| [w[0].to_owned(), w[1].to_owned()])
            .collect();
        Server {
            child,
            base: format!("http://{addr}"),
            log,
            db_args,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Creates a token with `scope` in this server's database (`token create`).
    pub fn token(&self, scope: &str, name: &str) -> String {
        let db_args: Vec<&str> = self.db_args.iter().map(String::as_str).collect();
        create_token(&db_args, name, scope)
    }

    /// Creates a token with `scope` and the namespace grants `writes` and `reads` (comma-separated
    /// patterns, as `token create --writes/--reads` takes them).
    pub fn token_for(&self, scope: &str, name: &str, writes: &str, reads: &str) -> String {
        let db_args: Vec<&str> = self.db_args.iter().map(String::as_str).collect();
        create_token_with(
            &db_args,
            name,
            scope,
            &["--writes", writes, "--reads", reads],
        )
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

    /// Kills the server at once (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn next_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
