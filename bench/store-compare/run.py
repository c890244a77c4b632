#!/usr/bin/env python3
"""Runs every measurement of RESULTS.md and prints its tables.

Usage: python3 run.py [WORKDIR] [--big-only | --table]   (default /tmp/store-compare; needs ./make_corpus.sh run into
WORKDIR first, and `cargo build --release`). Every phase is a fresh process; timings are taken
inside it (process start-up and loading the key list are excluded). Medians of RUNS runs.
"""
import json, os, shutil, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "target/release/store-compare")
WORK = sys.argv[1] if len(sys.argv) > 1 else "/tmp/store-compare"
CORPUS = os.path.join(WORK, "corpus.bin")
ALL = ["files", "files-skip", "sqlite", "sqlite-mmap", "pack", "pack-mmap"]
# STORES=a,b runs only those and merges them into an existing results.json.
STORES = os.environ["STORES"].split(",") if os.environ.get("STORES") else ALL
RUNS = 5
BIG = 50_000


def run(store, phase, root, *extra, check=True):
    out = subprocess.run([BIN, store, phase, "--root", root, "--corpus", CORPUS, *extra],
                         capture_output=True, text=True)
    if check and out.returncode != 0:
        raise SystemExit(f"{store} {phase} failed: {out.stdout} {out.stderr}")
    return dict(kv.split("=", 1) for kv in out.stdout.split())


def med(rows, field):
    return statistics.median(float(r[field]) for r in rows)


def strace(store, phase, root, *extra):
    log = os.path.join(WORK, f"strace-{store}-{phase}.txt")
    subprocess.run(["strace", "-c", "-f", "-o", log, BIN, store, phase, "--root", root,
                    "--corpus", CORPUS, *extra], check=True, capture_output=True)
    calls = {}
    for line in open(log):
        f = line.split()
        if len(f) >= 5 and f[-1] != "syscall" and not f[0].startswith("-"):
            try:
                calls[f[-1]] = int(f[3])
            except ValueError:
                pass
    return calls


def fresh(root):
    shutil.rmtree(root, ignore_errors=True)


def main():
    # The machine is shared: repetitions are interleaved (each round runs every store once) so
    # that load from other users spreads over all stores alike.
    if not os.path.exists(CORPUS):
        subprocess.run([BIN, "corpus", os.path.join(WORK, "src"), CORPUS], check=True)
    path = os.path.join(WORK, "results.json")
    res = json.load(open(path)) if os.path.exists(path) else {}
    res["baseline_strace"] = strace("files", "baseline", os.path.join(WORK, "none"))
    root = {s: os.path.join(WORK, "store-" + s) for s in STORES}
    big = {s: os.path.join(WORK, "big-" + s) for s in STORES}
    acc = {s: {k: [] for k in ("fill", "read", "open", "conc", "open_big")} for s in STORES}
    log = lambda *a: print(*a, file=sys.stderr, flush=True)

    for rnd in range(RUNS):
        log("fill round", rnd)
        for s in STORES:
            fresh(root[s])
            acc[s]["fill"].append(run(s, "fill", root[s]))
    for rnd in range(RUNS):
        log("read/open round", rnd)
        for s in STORES:
            acc[s]["read"].append(run(s, "read", root[s]))
            acc[s]["open"].append(run(s, "open", root[s]))
    for s in STORES:
        r = res[s] = {}
        fills, reads, opens = acc[s]["fill"], acc[s]["read"], acc[s]["open"]
        r["fill_ms"] = med(fills, "fill_ms")
        r["entries"] = int(fills[0]["entries"])
        r["size"] = run(s, "size", root[s])
        r["read_ms"] = med(reads, "read_ms")
        r["read_open_ms"] = med(reads, "open_ms")
        r["read_gets_ms"] = med(reads, "gets_done_ms")
        r["open_ms"] = med(opens, "open_ms")
        r["first_get_ms"] = med(opens, "first_get_ms")
        r["strace_read"] = strace(s, "read", root[s])
        r["evict"] = run(s, "evict", root[s])
        r["size_after_evict"] = run(s, "size", root[s])
        r["raw"] = {k: [x for x in v] for k, v in acc[s].items()}
    for rnd in range(RUNS):
        log("concurrent round", rnd)
        for s in STORES:
            fresh(root[s])
            c = run(s, "concurrent", root[s])
            assert c["all_exited_ok"] == "true", c
            chk = run(s, "read", root[s], check=False)
            assert int(chk["hits"]) == res[s]["entries"] and chk["corrupt"] == "0", (s, chk)
            acc[s]["conc"].append(c)
    for s in STORES:
        res[s]["concurrent_ms"] = med(acc[s]["conc"], "concurrent_ms")
        res[s]["size_after_concurrent"] = run(s, "size", root[s])
        fresh(root[s])
        log("fill", BIG, s)
        fresh(big[s])
        res[s]["fill_big"] = run(s, "fill", big[s], "--n", str(BIG))
        res[s]["size_big"] = run(s, "size", big[s])
    for rnd in range(RUNS):
        for s in STORES:
            acc[s]["open_big"].append(run(s, "open", big[s], "--n", str(BIG)))
    for s in STORES:
        res[s]["open_big_ms"] = med(acc[s]["open_big"], "open_ms")
        res[s]["first_get_big_ms"] = med(acc[s]["open_big"], "first_get_ms")
        res[s]["evict_big"] = run(s, "evict", big[s])
        res[s]["size_big_after_evict"] = run(s, "size", big[s])
        fresh(big[s])
        res[s]["raw"] = acc[s]
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    table(res)


def big_only():
    """The 50,000-entry measurements again, one store at a time, with the page cache's dirty
    data written back (`sync`, untimed) before each timed phase: in the interleaved run, six
    freshly filled 1.4 GB stores were being written back during the evictions."""
    path = os.path.join(WORK, "results.json")
    res = json.load(open(path))
    for s in STORES:
        big = os.path.join(WORK, "big-" + s)
        print("big", s, file=sys.stderr, flush=True)
        fresh(big)
        subprocess.run(["sync"], check=True)
        r = res[s]
        r["fill_big"] = run(s, "fill", big, "--n", str(BIG))
        subprocess.run(["sync"], check=True)
        r["size_big"] = run(s, "size", big)
        opens = [run(s, "open", big, "--n", str(BIG)) for _ in range(RUNS)]
        r["open_big_ms"] = med(opens, "open_ms")
        r["first_get_big_ms"] = med(opens, "first_get_ms")
        r["raw"]["open_big"] = opens
        r["evict_big"] = run(s, "evict", big)
        subprocess.run(["sync"], check=True)
        r["size_big_after_evict"] = run(s, "size", big)
        fresh(big)
        subprocess.run(["sync"], check=True)
        print(r["fill_big"], r["evict_big"], file=sys.stderr, flush=True)
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    table(res)


def table(res):
    stores = [s for s in ALL if s in res]
    mib = lambda b: f"{int(b) / 2**20:.1f}"

    def spread(kind, field, fmt):
        # median (min–max) of the 5 runs
        def f(r):
            v = sorted(float(x[field]) for x in r["raw"][kind])
            return f"{fmt(statistics.median(v))} ({fmt(v[0])}–{fmt(v[-1])})"
        return f
    rows = [
        ("cold fill, 1 process (ms)", spread("fill", "fill_ms", lambda x: f"{x:.0f}")),
        ("warm read: open + get + verify all (+LRU update) (ms)", spread("read", "read_ms", lambda x: f"{x:.0f}")),
        ("  of which open (ms)", lambda r: f"{r['read_open_ms']:.2f}"),
        (f"open, {{n}} entries (ms)", spread("open", "open_ms", lambda x: f"{x:.2f}")),
        (f"open, {BIG:,} entries (ms)", spread("open_big", "open_ms", lambda x: f"{x:.2f}")),
        (f"first get after open, {BIG:,} entries (ms)", lambda r: f"{r['first_get_big_ms']:.3f}"),
        ("4 concurrent fillers, wall (ms); all entries readable after", spread("conc", "concurrent_ms", lambda x: f"{x:.0f}")),
        ("disk used, allocated (MiB)", lambda r: mib(r["size"]["alloc_bytes"])),
        ("disk used, apparent (MiB)", lambda r: mib(r["size"]["apparent_bytes"])),
        ("inodes", lambda r: r["size"]["inodes"]),
        ("disk used after 4 concurrent fillers (MiB alloc)", lambda r: mib(r["size_after_concurrent"]["alloc_bytes"])),
        ("warm read syscalls: openat", lambda r: r["strace_read"].get("openat", 0)),
        ("warm read syscalls: read + pread64", lambda r: r["strace_read"].get("read", 0) + r["strace_read"].get("pread64", 0)),
        ("warm read syscalls: total", lambda r: r["strace_read"].get("total", 0)),
        ("evict 1/4, {n} entries (ms, 1 run)", lambda r: f"{float(r['evict']['evict_ms']):.0f}"),
        ("  disk after (MiB alloc)", lambda r: mib(r["size_after_evict"]["alloc_bytes"])),
        (f"cold fill, {BIG:,} entries (ms, 1 run)", lambda r: f"{float(r['fill_big']['fill_ms']):.0f}"),
        (f"disk used, {BIG:,} entries (MiB alloc)", lambda r: mib(r["size_big"]["alloc_bytes"])),
        (f"evict 1/4, {BIG:,} entries (ms, 1 run)", lambda r: f"{float(r['evict_big']['evict_ms']):.0f}"),
    ]
    n = res[stores[0]]["entries"]
    print("| measurement | " + " | ".join(stores) + " |")
    print("|---|" + "---:|" * len(stores))
    for name, f in rows:
        print(f"| {name.format(n=f'{n:,}')} | " + " | ".join(str(f(res[s])) for s in stores) + " |")
    b = res["baseline_strace"]
    print(f"\nBaseline (process start + loading the key list, no store): openat {b.get('openat', 0)}, "
          f"read {b.get('read', 0)}, total {b.get('total', 0)} syscalls.")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "--table":
        table(json.load(open(os.path.join(WORK, "results.json"))))
    elif len(sys.argv) > 2 and sys.argv[2] == "--big-only":
        big_only()
    else:
        main()
