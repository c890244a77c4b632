"""Server load: N concurrent clients syncing different trees against one server.

For each backend (SQLite, PostgreSQL) and each N, a fresh server gets:
- a put phase: N clients, each on its own tree (`src0`, `src1`, ..., each .py
  with a trailer naming its client, so every client's keys differ) with an empty local cache: they compile and upload;
- get phases (repeated): N clients on fresh copies of the same trees with empty
  local caches: one batch get each, everything a remote hit.
Requests/s and MB/s come from the server's /metrics deltas over a phase's wall
time; per-request latencies from the server's own log (tower_http's `latency=`,
whole milliseconds, time to the response head), and the client's `fetch_seconds`
(its full batch get, body included) from `sync --json`.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .proc import StepFailed, flush_disk, log
from .servers import PycacheServer
from .steps import clean_env

BATCH_GET, BATCH_PUT = "/api/v1/batch/get", "/api/v1/batch/put"


def percentile(values, q):
    """The q-th percentile (nearest rank) of a list, or None."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * len(v) + 0.5) - 1))]


def _client_copy(source, dst, i):
    """A copy of `source` whose every .py ends with a line naming client i.

    Keys do not depend on where a tree lives (relocation), so clients on copies of
    the same sources would hit each other's uploads: the trailer gives each client
    its own keys. Other files are hard links.
    """
    def copy(src, to):
        if src.endswith(".py"):
            data = Path(src).read_bytes()
            Path(to).write_bytes(data + (b"" if data.endswith(b"\n") or not data else b"\n")
                                 + f"# pycache load client {i}\n".encode())
            shutil.copystat(src, to)
        else:
            os.link(src, to)
    shutil.copytree(source, dst, copy_function=copy)


def make_trees(source, base, n, phases):
    """Per client i, base/<phase>/c<i>/src<i> for every phase: the first phase's tree
    is a copy with client-specific sources, the others hard links of it."""
    trees = {}
    for i in range(n):
        first = None
        for phase in phases:
            slot = base / phase / f"c{i}"
            dst = slot / f"src{i}"
            if not dst.exists():
                if first is None:
                    _client_copy(source, dst, i)
                else:
                    shutil.copytree(first, dst, copy_function=os.link)
            first = first or dst
            trees[(phase, i)] = slot
    return trees


def _traffic(m):
    """Total requests and bytes from a /metrics snapshot."""
    reqs = sum(v for k, v in m.items() if k.startswith("pycache_http_requests_total"))
    return reqs, m.get("pycache_bytes_in_total", 0) + m.get("pycache_bytes_out_total", 0)


def _clients(env, server, trees, phase, n, caches):
    """Starts N syncs at once, waits for all; returns (wall seconds, summaries)."""
    procs = []
    start = time.perf_counter()
    for i in range(n):
        cmd = [env.client, "--python", env.python, "--cache-dir", str(caches / phase / f"c{i}"),
               *server.client_args(), "sync", "--json", f"src{i}"]
        procs.append(subprocess.Popen(cmd, cwd=trees[(phase, i)], env=clean_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    summaries = []
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            raise StepFailed(f"load client exited {p.returncode}:\n{err[-2000:]}")
        summaries.append(json.loads(out))
    return wall, summaries


def _phase(env, server, trees, phase, n, caches, expect_key):
    """One phase: run the clients, check they all did their job, collect numbers."""
    flush_disk()
    before, offset = server.metrics(), server.log_offset()
    wall, summaries = _clients(env, server, trees, phase, n, caches)
    after = server.metrics()
    time.sleep(0.05)
    lat = server.latencies(offset)
    errors = sum(s.get("errors", 0) + s.get("upload_refused", 0) for s in summaries)
    short = [s for s in summaries if s.get(expect_key) != s["files"]]
    if errors or short:
        raise StepFailed(f"load {phase}: {errors} errors; {len(short)} clients short of "
                         f"{expect_key} (first: {short[:1]})")
    (r0, b0), (r1, b1) = _traffic(before), _traffic(after)
    return {"wall": wall, "requests": r1 - r0, "bytes": b1 - b0,
            "get": lat.get(BATCH_GET, []), "put": lat.get(BATCH_PUT, []),
            "client_fetch": [s.get("fetch_seconds") for s in summaries
                             if s.get("fetch_seconds") is not None],
            "client_seconds": [s["seconds"] for s in summaries]}


def _summarize(put, gets):
    """Aggregates a put phase and repeated get phases into the reported numbers."""
    get_lat = [x for g in gets for x in g["get"]]
    fetch = [x for g in gets for x in g["client_fetch"]]
    get_wall = sum(g["wall"] for g in gets)
    return {
        "get_requests_per_s": sum(g["requests"] for g in gets) / get_wall,
        "get_mb_per_s": sum(g["bytes"] for g in gets) / get_wall / 1e6,
        "put_requests_per_s": put["requests"] / put["wall"],
        "put_mb_per_s": put["bytes"] / put["wall"] / 1e6,
        "get_p50": percentile(get_lat, 50), "get_p99": percentile(get_lat, 99),
        "put_p50": percentile(put["put"], 50), "put_p99": percentile(put["put"], 99),
        "client_fetch_p50": percentile(fetch, 50), "client_fetch_p99": percentile(fetch, 99),
        "get_samples": len(get_lat), "put_samples": len(put["put"]),
        "put_wall": put["wall"], "get_wall_median": sorted(g["wall"] for g in gets)[len(gets) // 2],
        "errors": 0,
    }


def load_level(env, backend_url, data_dir, trees, n, repeats, caches):
    """One (backend, N) cell: fresh server, a put phase, `repeats` get phases."""
    server = PycacheServer(env.server, data_dir, backend_url).start()
    try:
        put = _phase(env, server, trees, "put", n, caches, "compiled")
        gets = [_phase(env, server, trees, f"get{r}", n, caches, "remote_hits")
                for r in range(repeats)]
    finally:
        rss = server.stop()
    out = _summarize(put, gets)
    out["server_rss_mb"] = rss
    log(f"  load n={n}: get p50 {out['get_p50']} p99 {out['get_p99']} "
        f"{out['get_requests_per_s']:.1f} req/s {out['get_mb_per_s']:.1f} MB/s; "
        f"put p50 {out['put_p50']} p99 {out['put_p99']}")
    return out


def prepare_load_trees(source, base, levels, repeats):
    """All trees of one backend's load test, before anything is timed."""
    phases = ["put"] + [f"get{r}" for r in range(repeats)]
    trees = {n: make_trees(source, base / f"n{n}", n, phases) for n in levels}
    flush_disk()
    return trees
