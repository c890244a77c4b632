//! A throwaway PostgreSQL 15 cluster for tests: `initdb` + `pg_ctl` in a temp dir, on a free
//! port, stopped and deleted on drop.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the cluster runs as the
//! `postgres` user (`runuser`). If the cluster cannot start, [`start`] panics with what failed and what to install — the tests fail, they
//! never skip.
//!
//! ```ignore
//! let pg = pycache_testkit::pg::start();
//! let url = pg.url();                    // postgres://postgres@127.0.0.1:PORT/postgres
//! let other = pg.create_database("e2e"); // a fresh database on the same cluster
//! ```

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Where Debian's postgresql-15 puts its programs; `PYCACHE_PG_BIN` overrides.
const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The unprivileged user the cluster runs as when the tests run as root.
const PG_USER: &str = "postgres";

/// A running cluster; dropping it stops the server and deletes its files.
pub struct TestPostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

/// Starts a fresh cluster, or panics saying why and what to do.
pub fn start() -> TestPostgres {
    let bin = std::env::var_os("PYCACHE_PG_BIN")
        .map_or_else(|| PathBuf::from(DEFAULT_PG_BIN), PathBuf::from);
    assert!(
        bin.join("initdb").exists(),
        "PostgreSQL 15 is needed for these tests but {} does not exist: install it \
         (`apt-get install postgresql-15`) or point PYCACHE_PG_BIN at its bin directory",
        bin.join("initdb").display()
    );
    let as_postgres = is_root();
    let dir = tempfile::Builder::new()
        .prefix("pycache-pg-")
        .tempdir()
        .expect("create a temp dir for PostgreSQL");
    if as_postgres {
        run_checked(
            Command::new("chown")
                .arg(format!("{PG_USER}:"))
                .arg(dir.path()),
            "chown the cluster's temp dir to postgres",
        );
    }
    let data = dir.path().join("data");
    let mut pg = TestPostgres {
        dir,
        port: 0,
        bin,
        as_postgres,
    };
    let mut initdb = pg.command("initdb");
    pg.run(
        initdb
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-N", "-E", "UTF8"]),
        "initdb",
    );
    // A port freed just now can be taken by someone else before the server binds it: retry.
    for attempt in 1..=5 {
        pg.port = free_port();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            pg.port,
            pg.dir.path().display()
        );
        let mut start = pg.command("pg_ctl");
        start
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(pg.dir.path().join("server.log"))
            .args(["-o", &options]);
        let out = start.output().expect("run pg_ctl start");
        if out.status.success() {
            return pg;
        }
        if attempt == 5 {
            let log = std::fs::read_to_string(pg.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "pg_ctl start failed 5 times:\n{}\nserver log:\n{log}",
                describe(&out)
            );
        }
    }
    unreachable!()
}

impl TestPostgres {
    /// The URL of the `postgres` database (superuser, trust auth).
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `name` on this cluster.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let mut createdb = self.command("createdb");
        createdb.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            name,
        ]);
        self.run(&mut createdb, "createdb");
        self.url_of(name)
    }

    /// Stops the cluster at once (`pg_ctl stop -m immediate`), as a crashed or unreachable
    /// database looks to its clients; its files stay until drop.
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let mut stop = self.command("pg_ctl");
        stop.args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&data);
        self.run(&mut stop, "pg_ctl stop");
    }

    /// A PostgreSQL program, run as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", PG_USER, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, command: &mut Command, what: &str) {
        run_checked(command, what);
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&data)
            .output();
    }
}

fn run_checked(command: &mut Command, what: &str) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}"));
    assert!(out.status.success(), "{what} failed:\n{}", describe(&out));
    out
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}
