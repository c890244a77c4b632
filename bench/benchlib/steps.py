"""The timed steps of one run: cold, warm and no-op, each tool on its own fresh tree."""

import json
import os
import re
from pathlib import Path

from .proc import StepFailed, Timed, flush_disk, log, run, timed
from .servers import PycacheServer
from .trees import copy_command, count_pycs

FLOOR_SCRIPT = Path(__file__).with_name("floor.py")
UV_COMPILED = re.compile(r"Bytecode compiled (\d+) files? in ([\d.]+)(ms|s)\b")
PHASES = ("lookup_seconds", "fetch_seconds", "emit_seconds", "upload_wait_seconds")


def clean_env():
    """The environment minus PYCACHE_* (every option is passed explicitly)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYCACHE_")}


def client_sync(env, slot, cache_dir, server=None, expect=None, what="pycache sync", extra=()):
    """Times `pycache-client sync --json src` in `slot`; checks the summary against `expect`."""
    cmd = [env.client, "--python", env.python, "--cache-dir", str(cache_dir)]
    cmd += server.client_args() if server else []
    cmd += list(extra)
    cmd += ["sync", "--json", "src"]
    t = timed(cmd, cwd=slot, env=clean_env(), what=what)
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
    if summary.get("errors"):
        raise StepFailed(f"{what}: {summary['errors']} errors\n{t.stderr[-2000:]}")
    return t


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


class Run:
    """One run: its trees, caches and server, and the steps in a fixed order."""

    def __init__(self, env, index, slots, work, corpus_root, files):
        self.env, self.i, self.slots, self.work = env, index, slots, work
        self.wheel = next(corpus_root.glob("*.whl"))
        self.files = files
        self.scratch = work / "trees"  # removed at start and end, with the trees
        self.caches = self.scratch / "caches" / f"r{index}"
        self.results = {}

    def record(self, name, t):
        """Keeps one step's numbers and logs them."""
        self.results[name] = {**t.extra, "seconds": t.seconds, "rss_mb": t.rss_mb}
        log(f"  run {self.i}: {name:<22} {t.seconds:8.3f} s  rss {t.rss_mb:6.1f} MB")

    def step(self, name, fn, *args, **kw):
        """Flushes the disk, then times one step."""
        flush_disk()
        self.record(name, fn(*args, **kw))

    def execute(self):
        """cold → warm → no-op, every step on pre-made trees and empty caches."""
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
            self.step("warm_pycache_server_trusted", client_sync, env, s["wst"],
                      c / "server-warm-trusted", server=signed,
                      expect={"remote_hits": f, "compiled": 0, "untrusted_entries": 0},
                      what="warm pycache (server, verifying signatures)",
                      extra=["--trusted-key", public])
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
        return self.results


def run_names():
    """Slot names one run needs (cold/warm per tool, plus the copy floor's target)."""
    return ["cc", "cl", "cs", "css", "wl", "ws", "wst", "wc"]
