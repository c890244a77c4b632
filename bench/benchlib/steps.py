"""The timed steps of one run: cold, warm and no-op, each tool on its own fresh tree."""

import json
import os
import re
from pathlib import Path

from .corpus import COMPILE_ERROR
from .netlab import DelayProxy, proxy_throughput
from .proc import StepFailed, Timed, flush_disk, log, run, timed
from .servers import PycacheServer
from .trees import copy_command, count_pycs

FLOOR_SCRIPT = Path(__file__).with_name("floor.py")
UV_COMPILED = re.compile(r"Bytecode compiled (\d+) files? in ([\d.]+)(ms|s)\b")
PHASES = ("lookup_seconds", "fetch_seconds", "emit_seconds", "upload_wait_seconds")
# Warm from the server through the shaped link: (step, tbf rate in bit/s; None: no tbf).
NET_ROWS = [("warm_pycache_server_proxy", None), ("warm_pycache_server_1gbit", 1e9),
            ("warm_pycache_server_100mbit", 100e6)]
# --quick runs the 100 Mbit/s row only (the one with a bar).
QUICK_NET_SKIP = {"warm_pycache_server_proxy", "warm_pycache_server_1gbit"}


def clean_env():
    """The environment minus PYCACHE_* (every option is passed explicitly)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYCACHE_")}


def client_sync(env, slot, cache_dir, server=None, expect=None, what="pycache sync", extra=(),
                failures=()):
    """Times `pycache-client sync --json src` in `slot`; checks the summary against `expect`.

    `failures`: the `src/...` files compileall fails on; the run must then exit 1 and report
    exactly those (as `errors`, and by name on stderr), like compileall.
    """
    cmd = [env.client, "--python", env.python, "--cache-dir", str(cache_dir)]
    cmd += server.client_args() if server else []
    cmd += list(extra)
    cmd += ["sync", "--json", "src"]
    t = timed(cmd, cwd=slot, env=clean_env(), what=what, check=not failures)
    if failures:
        check_failures(t, failures, what)
    summary = json.loads(t.stdout)
    # The client's own `seconds` starts after its process does: kept, but not as the step's time.
    t.extra = {("client_seconds" if k == "seconds" else k): v for k, v in summary.items()
               if k not in ("python", "cache_tag")}
    for key, want in (expect or {}).items():
        # `a+b`: the sum of two counts.
        got = sum(summary.get(k, 0) for k in key.split("+")) if "+" in key else summary.get(key)
        if got != want:
            raise StepFailed(f"{what}: expected {key}={want}, got {got} "
                             f"(summary: {t.extra})")
    if summary.get("errors") and not failures:
        raise StepFailed(f"{what}: {summary['errors']} errors\n{t.stderr[-2000:]}")
    return t


def check_failures(t, failures, what):
    """A run over files that fail to compile: exit 1, `errors` = their number, and (if it
    names them compileall's way, `*** Error compiling '...'...`) the same files."""
    summary = json.loads(t.stdout) if t.stdout.strip() else {}
    if t.returncode != 1 or summary.get("errors") != len(failures):
        raise StepFailed(f"{what}: expected exit 1 with {len(failures)} errors, got exit "
                         f"{t.returncode} with {summary.get('errors')}\n{t.stderr[-2000:]}")
    named = set(COMPILE_ERROR.findall(t.stderr))
    if named and named != set(failures):
        raise StepFailed(f"{what}: reported failures differ from compileall's: "
                         f"only pycache {sorted(named - set(failures))}, "
                         f"only compileall {sorted(set(failures) - named)}")


def compileall(env, slot, force):
    """Times compileall in `slot`: cold `-f -q -j0 src`; no-op (force=False) `-q src`."""
    flags = ["-f", "-q", "-j0"] if force else ["-q"]
    cmd = [env.python, "-m", "compileall", *flags, "src"]
    return timed(cmd, cwd=slot, env=clean_env(), what="compileall")


def uv_compile(env, venv, wheel, uv_cache, files):
    """uv's bytecode compilation: `uv pip install --compile-bytecode` of the corpus wheel.

    The number is uv's own 'Bytecode compiled N files in T' (its compile phase only,
    workers included); the whole install's wall time is kept beside it.
    """
    cmd = [env.uv, "pip", "install", "--python", str(Path(venv) / "bin" / "python"),
           "--no-index", "--no-deps", "--link-mode", "copy", "--compile-bytecode", str(wheel)]
    t = timed(cmd, env=dict(clean_env(), UV_CACHE_DIR=str(uv_cache), NO_COLOR="1"), what="uv")
    m = UV_COMPILED.search(t.stderr + t.stdout)
    if not m:
        raise StepFailed(f"uv printed no 'Bytecode compiled' line:\n{t.stderr[-2000:]}")
    n, value, unit = int(m.group(1)), float(m.group(2)), m.group(3)
    if n < files:
        raise StepFailed(f"uv compiled {n} files, the corpus has {files}")
    t.extra = {"install_seconds": t.seconds, "files": n}
    t.seconds = value / 1000 if unit == "ms" else value
    return t


def prepare_uv_venv(env, venv, wheel, uv_cache):
    """A fresh venv for uv (untimed); the first call also warms uv's cache with the wheel."""
    run([env.uv, "venv", "-q", "--python", env.python, str(venv)],
        env=dict(clean_env(), UV_CACHE_DIR=str(uv_cache)), what="uv venv")
    warm = Path(uv_cache).parent / "uv-warm-venv"
    if not warm.exists():
        run([env.uv, "venv", "-q", "--python", env.python, str(warm)],
            env=dict(clean_env(), UV_CACHE_DIR=str(uv_cache)), what="uv venv")
        run([env.uv, "pip", "install", "-q", "--python", str(warm / "bin" / "python"),
             "--no-index", "--no-deps", str(wheel)],
            env=dict(clean_env(), UV_CACHE_DIR=str(uv_cache)), what="uv warm-up install")


def floor(env, slot):
    """Summed compile() CPU time over the tree / cores (see floor.py)."""
    t = timed([env.python, str(FLOOR_SCRIPT), "src"], cwd=slot, env=clean_env(), what="floor")
    data = json.loads(t.stdout)
    return Timed(data["floor_seconds"], t.rss_mb, extra=data)


def copy_floor(compiled_slot, fresh_slot, files):
    """Times the warm floor: `cp -a --parents` of the `__pycache__` dirs of a tree pycache
    compiled into a fresh copy (one child process, no interpreter start; see trees.py)."""
    t = timed(copy_command(compiled_slot, fresh_slot), cwd=compiled_slot, what="cp -a")
    n = count_pycs(fresh_slot)
    if n != files:
        raise StepFailed(f"cp -a: copied {n} .pyc files, expected {files}")
    t.extra = {"files": n}
    return t


class Link:
    """The client's view of the server through the delaying proxy: the proxy's loopback
    address (the client sends a token over plain http to loopback only) and the token."""

    def __init__(self, proxy, token):
        self.url, self.token = f"http://{proxy.address}", token

    def client_args(self):
        """Command-line options that point pycache-client at the proxy."""
        return ["--server", self.url, "--token", self.token]


class Run:
    """One run: its trees, caches and server, and the steps in a fixed order.

    `extras` (all optional): `pr_changed` (files the `pr` slot's pull request changed),
    `stdlib` ({slots, files, failures} of the whole-stdlib tree), `lab` / `lab_reason`
    (the shaped link, or why there is none), `quick`.
    """

    def __init__(self, env, index, slots, work, corpus_root, files, **extras):
        self.env, self.i, self.slots, self.work = env, index, slots, work
        self.wheel = next(corpus_root.glob("*.whl"))
        self.files = files
        self.scratch = work / "trees"  # removed at start and end, with the trees
        self.caches = self.scratch / "caches" / f"r{index}"
        self.pr_changed = extras.get("pr_changed")
        self.stdlib = extras.get("stdlib")
        self.lab, self.lab_reason = extras.get("lab"), extras.get("lab_reason")
        self.quick = extras.get("quick", False)
        self.results = {}

    def record(self, name, t):
        """Keeps one step's numbers and logs them."""
        self.results[name] = {**t.extra, "seconds": t.seconds, "rss_mb": t.rss_mb}
        log(f"  run {self.i}: {name:<28} {t.seconds:8.3f} s  rss {t.rss_mb:6.1f} MB")

    def skip(self, name, reason):
        """A step that cannot run here: kept as its reason (the report reads n/a)."""
        self.results[f"skipped:{name}"] = reason
        log(f"  run {self.i}: {name:<28} skipped: {reason}")

    def step(self, name, fn, *args, **kw):
        """Flushes the disk, then times one step."""
        flush_disk()
        self.record(name, fn(*args, **kw))

    def execute(self):
        """cold → warm → pull request → shaped link → no-op → whole stdlib, every step on
        pre-made trees and empty caches."""
        env, s, f, c = self.env, self.slots, self.files, self.caches
        uv_cache = self.work / "uv-cache"
        prepare_uv_venv(env, self.scratch / "uvenvs" / f"r{self.i}", self.wheel, uv_cache)
        server = PycacheServer(env.server, self.scratch / "servers" / f"r{self.i}").start()
        # A second store for the signed rows, and the writer's key pair.
        signed = PycacheServer(env.server, self.scratch / "servers" / f"r{self.i}-signed").start()
        key = self.scratch / "keys" / f"r{self.i}.secret"
        key.parent.mkdir(parents=True, exist_ok=True)
        key.unlink(missing_ok=True)
        public = run([env.client, "key", "generate", "bench", "--secret-file", str(key)],
                     env=clean_env(), what="pycache-client key generate").strip().splitlines()[-1]
        try:
            self.step("cold_compileall", compileall, env, s["cc"], force=True)
            self.step("cold_uv", uv_compile, env, self.scratch / "uvenvs" / f"r{self.i}",
                      self.wheel, uv_cache, f)
            self.step("cold_pycache_local", client_sync, env, s["cl"], c / "local",
                      # A file with the same source as one compiled earlier in the run may be
                      # served from the entry stored meanwhile (relocated to its path).
                      expect={"compiled+local_hits": f}, what="cold pycache (local)")
            # Files of identical source share a key on 3.8–3.13 and are uploaded once.
            self.step("cold_pycache_server", client_sync, env, s["cs"], c / "server-cold",
                      server=server, expect={"compiled": f}, what="cold pycache (server)")
            self.step("cold_pycache_server_signed", client_sync, env, s["css"],
                      c / "server-cold-signed", server=signed, expect={"compiled": f},
                      what="cold pycache (server, signing)", extra=["--signing-key", str(key)])
            self.step("floor", floor, env, s["cl"])
            self.step("warm_pycache_local", client_sync, env, s["wl"], c / "local",
                      expect={"local_hits": f, "compiled": 0}, what="warm pycache (local)")
            self.step("warm_pycache_server", client_sync, env, s["ws"], c / "server-warm",
                      server=server, expect={"remote_hits": f, "compiled": 0},
                      what="warm pycache (server)")
            # The pull request: the `pr` slot had 1% of its files changed when it was made.
            self.step("pr_pycache_server", client_sync, env, s["pr"], c / "pr",
                      server=server,
                      expect={"remote_hits+compiled": f, "compiled": self.pr_changed},
                      what="pull request (server warm, local cache empty)")
            self.step("warm_pycache_server_trusted", client_sync, env, s["wst"],
                      c / "server-warm-trusted", server=signed,
                      expect={"remote_hits": f, "compiled": 0, "untrusted_entries": 0},
                      what="warm pycache (server, verifying signatures)",
                      extra=["--trusted-key", public])
            self.shaped_rows(server)
        finally:
            self.results["server_rss_mb"] = server.stop()
            signed.stop()
        # The floor copies exactly what pycache's warm step wrote, into the same kind of tree.
        self.step("warm_cp_copy", copy_floor, s["wl"], s["wc"], f)
        noop = [("noop_compileall", compileall, (env, s["cc"]), {"force": False}),
                ("noop_pycache", client_sync, (env, s["cc"], c / "local"),
                 {"expect": {"up_to_date": f}, "what": "no-op pycache"})]
        for name, fn, args, kw in (noop if self.i % 2 == 0 else noop[::-1]):
            self.step(name, fn, *args, **kw)
        self.stdlib_rows()
        return self.results

    def shaped_rows(self, server):
        """Warm from the server through the shaped link: a second server process on the
        warm server's data dir, inside the namespace, reached through the delaying proxy;
        each row on a fresh slot with an empty local cache."""
        names = [n for n, _ in NET_ROWS]
        if not self.lab:
            for n in names + ["netlab_proxy_check"]:
                self.skip(n, self.lab_reason or "no network namespace")
            return
        nbytes = (32 if self.quick else 256) * 10**6
        flush_disk()
        got, seconds = proxy_throughput(self.lab, nbytes)
        self.record("netlab_proxy_check", Timed(seconds, 0.0, extra={"bytes_down": got}))
        remote = PycacheServer(self.env.server, server.data_dir, listen=f"{self.lab.ns_addr}:0",
                               prefix=self.lab.exec_prefix(), token=server.token,
                               log_name="server-netns.log").start()
        proxy = None
        try:
            host, port = remote.url.removeprefix("http://").rsplit(":", 1)
            proxy = DelayProxy(host, int(port)).start()
            link = Link(proxy, server.token)
            for name, rate in NET_ROWS:
                if self.quick and name in QUICK_NET_SKIP:
                    self.skip(name, "--quick runs the 100 Mbit/s row only")
                    continue
                if rate:
                    self.lab.shape(rate)
                else:
                    self.lab.unshape()
                self.step(name, client_sync, self.env, self.slots[name], self.caches / name,
                          server=link, expect={"remote_hits": self.files, "compiled": 0},
                          what=f"warm pycache (server, {name.rsplit('_', 1)[-1]})")
        finally:
            self.lab.unshape()
            if proxy:
                proxy.stop()
            remote.stop()

    def stdlib_rows(self):
        """The target's whole Lib/ (test dirs included): cold and warm from the local cache,
        and the `cp -a` floor; files compileall fails on are reported the same way."""
        if not self.stdlib:
            return
        s, c = self.stdlib["slots"], self.caches / "stdlib-local"
        failures = self.stdlib["failures"]
        ok = self.stdlib["files"] - len(failures)
        self.step("stdlib_cold_pycache_local", client_sync, self.env, s["stdlib-cold"], c,
                  expect={"written": ok}, failures=failures,
                  what="whole stdlib, cold pycache (local)")
        self.step("stdlib_warm_pycache_local", client_sync, self.env, s["stdlib-warm"], c,
                  expect={"compiled": 0, "written": ok}, failures=failures,
                  what="whole stdlib, warm pycache (local)")
        self.step("stdlib_warm_cp_copy", copy_floor, s["stdlib-warm"], s["stdlib-copy"], ok)


def run_names():
    """Slot names one run needs (cold/warm per tool, the copy floor's target, the pull
    request, one per shaped-link row)."""
    return ["cc", "cl", "cs", "css", "wl", "ws", "wst", "wc", "pr"] + [n for n, _ in NET_ROWS]


def stdlib_names():
    """Slot names of one run's whole-stdlib rows."""
    return ["stdlib-cold", "stdlib-warm", "stdlib-copy"]
