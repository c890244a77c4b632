"""Corpora: the target interpreter's stdlib, Django and SymPy wheels, as one source tree.

The master tree holds only `.py` files (what is compiled), laid out as
`src/stdlib`, `src/django`, `src/sympy`. Test directories of the stdlib are left
out (they hold files that are meant not to compile), and any file that does not
compile with the target interpreter is dropped, so every tool exits 0.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

from .proc import StepFailed, log, run

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
QUICK_STDLIB = ["json", "email", "http", "logging", "urllib", "xml", "importlib",
                "argparse.py", "ast.py", "dataclasses.py", "typing.py"]
# The whole standard library keeps its test directories (with files meant not to compile).
STDLIB_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
# --quick's whole-stdlib subset: the quick packages plus two test dirs holding failing files.
QUICK_WHOLE_STDLIB = QUICK_STDLIB + ["test/tokenizedata", "test/test_future_stmt"]
COMPILE_ERROR = re.compile(r"\*\*\* Error compiling '(.+?)'\.\.\.")
CHECK_SCRIPT = r"""
import os, sys, warnings
warnings.simplefilter("ignore")
bad = []
for d, ds, fs in os.walk(sys.argv[1]):
    for f in fs:
        p = os.path.join(d, f)
        try:
            compile(open(p, "rb").read(), p, "exec", dont_inherit=True)
        except Exception:
            bad.append(p)
print("\n".join(bad))
"""


def _copy_py(src, dst, only=None, skip=SKIP_DIRS):
    """Copies the .py files of `src` (or of its entries named in `only`) into `dst`."""
    n = 0
    for entry in (only or sorted(os.listdir(src))):
        if entry in skip:
            continue
        top = Path(src) / entry
        if not top.exists():
            continue
        if top.is_file():
            if top.suffix == ".py":
                dst.mkdir(parents=True, exist_ok=True)
                shutil.copy2(top, dst / entry)
                n += 1
            continue
        for d, ds, fs in os.walk(top):
            ds[:] = sorted(x for x in ds if x not in skip)
            rel = Path(d).relative_to(src)
            for f in sorted(fs):
                if f.endswith(".py"):
                    (dst / rel).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(Path(d) / f, dst / rel / f)
                    n += 1
    return n


def _wheels(env, work):
    """Downloads the Django and SymPy wheels once (`pip download --no-deps`)."""
    wheels = work / "wheels"
    have = list(wheels.glob("*.whl")) if wheels.exists() else []
    names = {w.name.split("-")[0].lower() for w in have}
    if not {"django", "sympy"} <= names:
        log("pip download --no-deps django sympy")
        run([env.venv_python, "-m", "pip", "download", "-q", "--no-deps",
             "--only-binary", ":all:", "-d", str(wheels), "django", "sympy"],
            what="pip download")
        have = list(wheels.glob("*.whl"))
    return {w.name.split("-")[0].lower(): w for w in have}


def _unpack(wheel, into, package):
    """Unpacks one top-level package of a wheel (zipfile) into `into/package`."""
    tmp = into.parent / f".unpack-{package}"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp)
    n = _copy_py(tmp, into, only=[package])
    shutil.rmtree(tmp)
    return n


def _drop_bad(env, src):
    """Removes files the target interpreter cannot compile; returns them."""
    out = run([env.python, "-c", CHECK_SCRIPT, str(src)], what="compile check")
    bad = [line for line in out.splitlines() if line]
    for p in bad:
        os.unlink(p)
    return bad


def prepare_corpus(env, work, quick):
    """Builds (once) the master tree; returns its root (the dir holding `src`) and stats."""
    name = "quick" if quick else "full"
    root = work / "corpus" / name
    meta = root / "corpus.json"
    if meta.exists():
        return root, json.loads(meta.read_text())
    shutil.rmtree(root, ignore_errors=True)
    src = root / "src"
    stdlib = run([env.python, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"]).strip()
    counts = {"stdlib": _copy_py(stdlib, src / "stdlib", only=QUICK_STDLIB if quick else None)}
    if not quick:
        wheels = _wheels(env, work)
        for pkg in ("django", "sympy"):
            counts[pkg] = _unpack(wheels[pkg], src, pkg)
            counts[pkg + "_wheel"] = wheels[pkg].name
    counts["dropped"] = [os.path.relpath(p, root) for p in _drop_bad(env, src)]
    counts["files"] = sum(1 for _ in src.rglob("*.py"))
    counts["bytes"] = sum(p.stat().st_size for p in src.rglob("*.py"))
    if counts["files"] == 0:
        raise StepFailed(f"the corpus {src} is empty")
    _corpus_wheel(root)
    meta.write_text(json.dumps(counts, indent=1))
    log(f"corpus {name}: {counts['files']} files, {counts['bytes'] / 1e6:.1f} MB")
    return root, counts


def prepare_stdlib(env, work, quick):
    """Builds (once) the whole-stdlib tree: every .py of the target's `Lib/`, test dirs
    included (`site-packages` left out); --quick takes `QUICK_WHOLE_STDLIB` only.

    Files that fail to compile stay: compileall is run once, untimed, on a scratch copy,
    and the files it reports (`*** Error compiling`) are what pycache must report too.
    Returns the root (holding `src`) and {files, failures: [src/... paths], ...}.
    """
    name = "stdlib-quick" if quick else "stdlib-full"
    root = work / "corpus" / name
    meta = root / "corpus.json"
    if meta.exists():
        return root, json.loads(meta.read_text())
    shutil.rmtree(root, ignore_errors=True)
    lib = run([env.python, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"]).strip()
    files = _copy_py(lib, root / "src", only=QUICK_WHOLE_STDLIB if quick else None,
                     skip=STDLIB_SKIP_DIRS)
    scratch = work / "corpus" / f".{name}-compileall"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(root / "src", scratch / "src")
    # One process (no -j), so no two reports interleave on stdout.
    p = subprocess.run([env.python, "-m", "compileall", "-q", "src"], cwd=scratch,
                       capture_output=True, text=True)
    shutil.rmtree(scratch)
    failures = sorted(set(COMPILE_ERROR.findall(p.stdout)))
    if p.returncode != (1 if failures else 0):
        raise StepFailed(f"compileall on {name} exited {p.returncode} with {len(failures)} "
                         f"failing files:\n{p.stderr[-2000:]}\n{p.stdout[-2000:]}")
    counts = {"files": files, "failures": failures,
              "bytes": sum(q.stat().st_size for q in (root / "src").rglob("*.py"))}
    meta.write_text(json.dumps(counts, indent=1))
    log(f"{name}: {files} files, {len(failures)} of them fail to compile")
    return root, counts


def _corpus_wheel(root):
    """Packs src/* as a wheel, so uv can install it and compile exactly these files."""
    name, ver = "pycache_bench_corpus", "0"
    info = f"{name}-{ver}.dist-info"
    wheel = root / f"{name}-{ver}-py3-none-any.whl"
    record = []

    def add(z, arc, data):
        z.writestr(arc, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arc},sha256={digest},{len(data)}")

    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted((root / "src").rglob("*.py")):
            add(z, p.relative_to(root / "src").as_posix(), p.read_bytes())
        add(z, f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n".encode())
        add(z, f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: pycache-bench\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n")
        record.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel
