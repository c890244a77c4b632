"""A local pycache-server (SQLite or PostgreSQL) and a throwaway PostgreSQL 15 cluster."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from .proc import HwmWatcher, StepFailed, log, run

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# tower_http's TraceLayer logs each response at DEBUG with its latency.
SERVER_LOG = "info,sqlx=warn,tower_http=debug"
LATENCY_RE = re.compile(r"uri=(\S+?)[ }].*?finished processing request latency=(\d+) (ms|us|µs|s)")


def free_port():
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PycacheServer:
    """One pycache-server process; stderr (with per-request latencies) goes to a log file."""

    def __init__(self, binary, data_dir, database_url=None, listen="127.0.0.1:0", prefix=(),
                 token=None, log_name="server.log"):
        """`prefix` runs the server through another command (`ip netns exec NS`); with
        `token`, a server on a data dir that already holds that token creates none."""
        self.binary, self.data_dir, self.database_url = binary, Path(data_dir), database_url
        self.listen, self.prefix = listen, list(prefix)
        self.proc = self.url = self.watcher = None
        self.token = token
        self.log_path = self.data_dir / log_name

    def _db_args(self):
        args = ["--data-dir", str(self.data_dir)]
        return args + (["--database-url", self.database_url] if self.database_url else [])

    def start(self):
        """Starts serving on a free port, reads the bound address, creates a write token."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYCACHE_LOG=SERVER_LOG, NO_COLOR="1")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [*self.prefix, self.binary, "serve", "--listen", self.listen, *self._db_args()],
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (\S+)", line)
        if not m:
            self.stop()
            raise StepFailed(f"pycache-server did not start: {line!r}; see {self.log_path}")
        self.url = f"http://{m.group(1)}"
        self.watcher = HwmWatcher(self.proc.pid, interval=0.1)
        if self.token:
            return self
        out = run([self.binary, "token", "create", "--scope", "write", "--name", "bench",
                   *self._db_args()], what="pycache-server token create")
        self.token = out.strip().splitlines()[-1].strip()
        return self

    def client_args(self):
        """Command-line options that point pycache-client here."""
        return ["--server", self.url, "--token", self.token]

    def metrics(self):
        """The /metrics counters as {name{labels}: value}."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def log_offset(self):
        """Current size of the log, to slice one phase's requests out of it."""
        self._log.flush()
        return self.log_path.stat().st_size

    def latencies(self, start, end=None):
        """Per-route latencies (seconds) the server logged between two offsets."""
        with open(self.log_path, "rb") as f:
            f.seek(start)
            text = f.read(None if end is None else end - start).decode(errors="replace")
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
        out = {}
        for m in LATENCY_RE.finditer(text):
            out.setdefault(m.group(1), []).append(int(m.group(2)) * scale[m.group(3)])
        return out

    def stop(self):
        """SIGTERM, wait; returns the server's peak RSS in MB."""
        rss = 0.0
        if self.proc and self.proc.poll() is None:
            rss = self.watcher.stop() if self.watcher else 0.0
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
        return rss


class Postgres:
    """A throwaway PostgreSQL 15 cluster run as the postgres user, on a free port."""

    def __init__(self):
        self.dir = self.port = None

    @staticmethod
    def available():
        """Whether the binaries and the postgres user are there."""
        return (PG_BIN / "initdb").exists() and shutil.which("runuser") is not None and \
            subprocess.run(["id", "postgres"], capture_output=True).returncode == 0

    def _as_pg(self, *cmd, what):
        return run(["runuser", "-u", "postgres", "--", *cmd], what=what)

    def start(self):
        """initdb + pg_ctl start in a temp dir owned by postgres."""
        self.dir = Path(tempfile.mkdtemp(prefix="pycache-bench-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        data = self.dir / "data"
        self._as_pg(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "-E", "UTF8", what="initdb")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._as_pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts,
                    "-l", str(self.dir / "pg.log"), "-w", "start", what="pg_ctl start")
        log(f"postgresql 15 on 127.0.0.1:{self.port}")
        return self

    def create_db(self, name):
        """A new database; returns its URL."""
        self._as_pg(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                    "-U", "postgres", name, what="createdb")
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self):
        """pg_ctl stop and remove the cluster."""
        if self.dir:
            subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"),
                            "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"],
                           capture_output=True)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
