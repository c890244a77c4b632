"""The cold floor: summed CPU time of compile() over a tree, divided by the core count.

Run with the target interpreter: `python floor.py src` (cwd = the tree's slot).
Sources are read before the clock starts; only compile() is timed, with
time.process_time() in each of os.cpu_count() worker processes. Prints JSON.
"""

import json
import multiprocessing
import os
import sys
import time
import warnings


def files_under(root):
    """The .py files under root, in compileall's order."""
    out = []
    for d, ds, fs in os.walk(root):
        ds[:] = sorted(x for x in ds if x != "__pycache__")
        out += [os.path.join(d, f) for f in sorted(fs) if f.endswith(".py")]
    return out


def compile_cpu(paths):
    """CPU seconds spent in compile() for these files (sources read untimed)."""
    warnings.simplefilter("ignore")
    total = 0.0
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        t0 = time.process_time()
        compile(data, p, "exec", dont_inherit=True)
        total += time.process_time() - t0
    return total


def main():
    paths = files_under(sys.argv[1])
    cores = os.cpu_count() or 1
    chunks = [paths[i::cores] for i in range(cores)]
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        cpu = sum(pool.map(compile_cpu, chunks))
    print(json.dumps({"files": len(paths), "cpu_seconds": cpu, "cores": cores,
                      "floor_seconds": cpu / cores}))


if __name__ == "__main__":
    main()
