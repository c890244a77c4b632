#!/usr/bin/env python3
"""pycache benchmark: cold, warm, pull request, a shaped link, no-op, the whole stdlib,
server load and RSS, against compileall, uv and copy floors.

    python3 bench/run.py [--quick] [--runs N] [--out bench/results] [--python PATH]

Prepares everything first (a venv under bench/work with uv and matplotlib from
PyPI, the release binaries, the corpus, every tree copy), then times. Writes
latest.md, latest.png and latest.json to --out. Exits non-zero if a step fails;
a missed bar is reported, not an error. See docs/bench.md.
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import report  # noqa: E402
from benchlib.corpus import prepare_corpus, prepare_stdlib  # noqa: E402
from benchlib.env import REPO, prepare_env  # noqa: E402
from benchlib.load import load_level, prepare_load_trees  # noqa: E402
from benchlib.proc import StepFailed, flush_disk, log, run  # noqa: E402
from benchlib.servers import Postgres  # noqa: E402
from benchlib.netlab import NetLab  # noqa: E402
from benchlib.steps import Run, run_names, stdlib_names  # noqa: E402
from benchlib.trees import TreeBank, apply_pull_request  # noqa: E402


def parse_args(argv=None):
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="CI smoke: tiny corpus (a few stdlib packages), 1 run, the shaped "
                   "link at 100 Mbit/s only, the stdlib rows on a subset")
    p.add_argument("--runs", type=int, help="runs per step (default 5; 1 with --quick)")
    p.add_argument("--out", type=Path, help="results folder (default bench/results; "
                   "bench/work/results-quick with --quick, so a smoke never overwrites them)")
    p.add_argument("--work", type=Path, default=HERE / "work", help="scratch folder")
    p.add_argument("--python", help="target interpreter (default: the one running this)")
    p.add_argument("--no-build", action="store_true", help="use the existing release binaries")
    p.add_argument("--bin-dir", type=Path,
                   help="take pycache-client and pycache-server from here (no build)")
    p.add_argument("--profile", choices=["release", "debug"],
                   help="cargo profile to build and use (default release; debug with --quick)")
    p.add_argument("--no-load", action="store_true", help="skip the server load test")
    p.add_argument("--no-postgres", action="store_true", help="load test on SQLite only")
    p.add_argument("--clients", default="1,4,16", help="load test client counts")
    p.add_argument("--report-only", action="store_true",
                   help="re-render latest.md and latest.png from --out/latest.json")
    p.add_argument("--keep", action="store_true", help="keep the tree copies afterwards")
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 5)
    args.profile = args.profile or ("debug" if args.quick else "release")
    args.levels = [int(x) for x in args.clients.split(",") if x]
    args.out = args.out or (HERE / "work" / "results-quick" if args.quick else HERE / "results")
    args.out, args.work = args.out.resolve(), args.work.resolve()
    return args


def load_average():
    """The 1-minute load average, as text."""
    return f"{os.getloadavg()[0]:.2f}"


def describe(env, args, corpus, stdlib):
    """Facts about this run for the report header."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "client", "server", "proto"],
                           cwd=REPO, capture_output=True, text=True).stdout.strip()
    parts = [f"{k} {v}" for k, v in corpus.items() if isinstance(v, int) and k not in ("files", "bytes")]
    return {
        "mode": "quick" if args.quick else "full", "runs": args.runs,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python_version": run([env.python, "-c", "import sys; print(sys.version.split()[0])"]).strip(),
        "commit": commit + (" (+ uncommitted client/server changes)" if dirty else ""),
        "uv_version": run([env.uv, "--version"]).split()[1],
        "corpus_text": f"{corpus['files']} files, {corpus['bytes'] / 1e6:.1f} MB ({', '.join(parts)})",
        "corpus": corpus, "load_before": load_average(), "client": env.client,
        "stdlib_text": f"{stdlib['files']} files ({'the quick subset' if args.quick else 'all'}"
                       f" of `Lib/`, test dirs included), {len(stdlib['failures'])} of which "
                       f"compileall fails on",
    }


def make_slots(root, base, runs, names):
    """Per run, {name: slot} of fresh copies of `root`'s tree under `base`."""
    bank = TreeBank(base, root)
    made = [bank.make([f"r{i}/{n}" for n in names]) for i in range(runs)]
    return [{n: s[f"r{i}/{n}"] for n in names} for i, s in enumerate(made)]


# Seconds after a mass deletion before timing starts. ext4 without a journal (this machine's
# disk) does not reuse an inode deleted less than 60 s ago while its table block is clean (300 s
# while dirty), and scans past every such inode each time it allocates one: files created in
# that window cost several times more, at random, whichever step creates them first.
SETTLE_SECONDS = 65


def settle_after_deletions(args):
    """Waits until the trees of an earlier invocation, removed by `reset`, were removed more
    than [`SETTLE_SECONDS`] ago (after a `sync`, so their inode table blocks are clean)."""
    flush_disk()
    wait = SETTLE_SECONDS - (time.time() - args.reset_at)
    if wait > 0 and not args.quick:
        log(f"waiting {wait:.0f} s so no step creates files among inodes deleted moments ago")
        time.sleep(wait)


def timing_runs(env, args, corpus_root, files, stdlib_root, stdlib):
    """Prepares every run's trees (and the pull request's change), opens the shaped link,
    then runs every step `runs` times; the link is removed even if a step fails."""
    slots = make_slots(corpus_root, args.work / "trees", args.runs, run_names())
    changed = [apply_pull_request(s["pr"]) for s in slots]
    std_slots = make_slots(stdlib_root, args.work / "trees", args.runs, stdlib_names())
    settle_after_deletions(args)
    lab, reason = NetLab.open(args.work)
    if reason:
        log(f"note: no shaped link, its rows read n/a: {reason}")
    results = []
    try:
        for i in range(args.runs):
            log(f"run {i + 1}/{args.runs}")
            std = dict(stdlib, slots=std_slots[i])
            results.append(Run(env, i, slots[i], args.work, corpus_root, files,
                               pr_changed=changed[i], stdlib=std, lab=lab, lab_reason=reason,
                               quick=args.quick).execute())
    finally:
        if lab:
            lab.close()
    return results


def load_source(corpus_root, quick):
    """What each load-test client syncs: Django (full) or the json package (quick)."""
    src = corpus_root / "src"
    return src / "stdlib" / "json" if quick else src / "django"


def load_test(env, args, corpus_root):
    """Every (backend, N) cell; PostgreSQL if available and not turned off."""
    repeats = max(1, min(args.runs, 3))
    source = load_source(corpus_root, args.quick)
    backends = ["sqlite"] + ([] if args.no_postgres else ["postgres"])
    if "postgres" in backends and not Postgres.available():
        log("note: PostgreSQL 15 binaries or the postgres user are missing: SQLite only")
        backends.remove("postgres")
    base = args.work / "load"
    trees = {b: prepare_load_trees(source, base / "trees" / b, args.levels, repeats) for b in backends}
    out = {}
    for backend in backends:
        pg = Postgres().start() if backend == "postgres" else None
        try:
            out[backend] = {}
            for n in args.levels:
                log(f"load: {backend}, {n} clients")
                url = pg.create_db(f"bench_n{n}") if pg else None
                out[backend][n] = load_level(env, url, base / "servers" / f"{backend}-n{n}",
                                             trees[backend][n], n, repeats,
                                             base / "caches" / f"{backend}-n{n}")
        finally:
            if pg:
                pg.stop()
    return out, f"{sum(1 for _ in source.rglob('*.py'))} files per client "\
        f"({source.relative_to(corpus_root)}), 1 put phase + {repeats} get phases per cell"


def write_results(args, env, meta, runs, load, load_text):
    """latest.json, latest.md and (if matplotlib is there) latest.png."""
    args.out.mkdir(parents=True, exist_ok=True)
    med, client_rss, server_rss = report.medians(runs)
    if load:
        server_rss = max([server_rss] + [c["server_rss_mb"] for b in load.values() for c in b.values()])
    checked = report.bars(med, client_rss, load)
    meta["load_after"], meta["load_text"] = load_average(), load_text
    (args.out / "latest.json").write_text(json.dumps(
        {"meta": meta, "medians": med, "client_rss_mb": client_rss, "server_rss_mb": server_rss,
         "bars": checked, "runs": runs, "load": load}, indent=1, default=str))
    md = report.markdown(meta, med, client_rss, server_rss, checked, load)
    (args.out / "latest.md").write_text(md)
    if env.has_matplotlib:
        report.chart(args.out / "latest.png", med, checked, load)
    else:
        log("note: matplotlib is not installed: no chart this time")
    print(md)


def rerender(args):
    """Rewrites latest.md and latest.png from latest.json (no measuring)."""
    data = json.loads((args.out / "latest.json").read_text())
    load = data["load"] and {b: {int(n): c for n, c in cells.items()} for b, cells in data["load"].items()}
    med, client_rss, _ = report.medians(data["runs"])
    checked = report.bars(med, client_rss, load)
    md = report.markdown(data["meta"], med, client_rss, data["server_rss_mb"], checked, load)
    (args.out / "latest.md").write_text(md)
    report.chart(args.out / "latest.png", med, checked, load)
    print(md)
    return 0


def reexec_in_venv(args):
    """Prepares the bench venv and re-runs this script in it (for matplotlib)."""
    from benchlib.env import _venv, _pip_install
    args.work.mkdir(parents=True, exist_ok=True)
    py = _venv(args.work)
    _pip_install(py, ["uv"], required=True)
    _pip_install(py, ["matplotlib"], required=not args.quick)
    argv = [str(py), str(Path(__file__).resolve()), *sys.argv[1:]]
    if not args.python:
        argv += ["--python", sys.executable]
    os.execv(str(py), argv)


def _terminate(signum, frame):
    """SIGTERM ends the run through the same clean-up as an error (trees, namespace)."""
    raise SystemExit(128 + signum)


def main(argv=None):
    """Prepare everything, time, report."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if Path(sys.prefix).resolve() != (args.work / "venv").resolve():
        reexec_in_venv(args)
    if args.report_only:
        return rerender(args)
    started = time.time()
    try:
        env = prepare_env(args.work, args.python, build=not args.no_build,
                          need_chart=not args.quick, bin_dir=args.bin_dir,
                          profile=args.profile)
        corpus_root, corpus = prepare_corpus(env, args.work, args.quick)
        stdlib_root, stdlib = prepare_stdlib(env, args.work, args.quick)
        TreeBank(args.work / "trees", corpus_root).reset()
        TreeBank(args.work / "load", corpus_root).reset()
        args.reset_at = time.time()
        meta = describe(env, args, corpus, stdlib)
        runs = timing_runs(env, args, corpus_root, corpus["files"], stdlib_root, stdlib)
        load, load_text = (None, "") if args.no_load else load_test(env, args, corpus_root)
        write_results(args, env, meta, runs, load, load_text)
    except StepFailed as e:
        log(f"FAILED: {e}")
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        if not args.keep:
            TreeBank(args.work / "trees", None).remove()
            TreeBank(args.work / "load", None).remove()
    log(f"done in {time.time() - started:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
