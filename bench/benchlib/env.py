"""The harness's own environment: a venv with uv and matplotlib, and the pycache binaries."""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .proc import StepFailed, log, run

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    """Tools the steps call."""

    python: str          # target interpreter (compiled for, by everyone)
    venv_python: str     # the bench venv's python (pip, matplotlib)
    uv: str
    client: str
    server: str
    has_matplotlib: bool


def _venv(work):
    """Creates work/venv once (with the harness's interpreter)."""
    venv = work / "venv"
    py = venv / "bin" / "python"
    if not py.exists():
        log(f"creating {venv}")
        run([sys.executable, "-m", "venv", str(venv)], what="python -m venv")
    return py


def _pip_install(py, packages, required):
    """pip-installs what is missing; returns False if an optional install failed."""
    missing = [p for p in packages if subprocess.run(
        [str(py), "-c", f"import {p}"], capture_output=True).returncode != 0]
    if not missing:
        return True
    log(f"pip install {' '.join(missing)}")
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", *missing],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        if required:
            raise StepFailed(f"pip install {missing} failed:\n{proc.stderr[-2000:]}")
        log(f"note: pip could not install {missing}; continuing without")
        return False
    return True


def _binaries(build, bin_dir=None, profile="release"):
    """Builds (unless told not to, or given a folder of binaries) and locates them.

    `profile` is "release" (real runs) or "debug" (the --quick smoke, which then
    reuses what `cargo test` already built).
    """
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / profile
    if bin_dir:
        target = Path(bin_dir).resolve()
    elif build:
        flags = ["--release"] if profile == "release" else []
        log(f"cargo build {' '.join(flags)} -p pycache-client -p pycache-server")
        run(["cargo", "build", *flags, "-q", "-p", "pycache-client",
             "-p", "pycache-server"], cwd=REPO, what="cargo build")
    client, server = target / "pycache-client", target / "pycache-server"
    for b in (client, server):
        if not b.exists():
            raise StepFailed(f"{b} is missing; build it or drop --no-build")
    return str(client), str(server)


def prepare_env(work, python, build=True, need_chart=True, bin_dir=None, profile="release"):
    """The venv (uv + matplotlib from PyPI) and the binaries, before anything is timed."""
    py = _venv(work)
    _pip_install(py, ["uv"], required=True)
    has_mpl = _pip_install(py, ["matplotlib"], required=need_chart)
    uv = py.parent / "uv"
    if not uv.exists():
        raise StepFailed(f"uv was installed but {uv} is missing")
    client, server = _binaries(build, bin_dir, profile)
    python = python or sys.executable
    python = shutil.which(python) or python
    real = run([python, "-c", "import sys; print(sys.executable)"]).strip()
    return Env(real, str(py), str(uv), client, server, has_mpl)
