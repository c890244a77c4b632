"""Running commands: timed, with peak RSS, failing loudly."""

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field


class StepFailed(RuntimeError):
    """A benchmark step could not run (as opposed to a missed bar)."""


@dataclass
class Timed:
    """What a timed command did."""

    seconds: float
    rss_mb: float
    stdout: str = ""
    stderr: str = ""
    extra: dict = field(default_factory=dict)
    returncode: int = 0


def log(msg):
    """Progress on stderr, flushed (CI logs interleave)."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def flush_disk():
    """`sync` between steps, so one step's writeback does not bill the next."""
    os.sync()


def _vm_hwm_kb(pid):
    """The process's own peak RSS (VmHWM) in kB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class HwmWatcher:
    """Polls one process's VmHWM until it exits: its own peak, not its children's."""

    def __init__(self, pid, interval=0.02):
        self.pid, self.interval, self.peak_kb = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            kb = _vm_hwm_kb(self.pid)
            if kb is None:
                return
            self.peak_kb = max(self.peak_kb, kb)
            self._stop.wait(self.interval)

    def stop(self):
        """Takes a last sample and stops polling; returns the peak in MB."""
        kb = _vm_hwm_kb(self.pid)
        if kb:
            self.peak_kb = max(self.peak_kb, kb)
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def timed(cmd, cwd=None, env=None, check=True, what=None):
    """Runs `cmd`, returning wall seconds and the peak RSS of that process itself.

    The clock covers process start to exit (what a user waits for). RSS is the
    process's own VmHWM, sampled from /proc until it exits (workers excluded).
    """
    what = what or " ".join(map(str, cmd[:3]))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watcher = HwmWatcher(proc.pid)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    rss = watcher.stop()
    if check and proc.returncode != 0:
        raise StepFailed(f"{what} exited {proc.returncode} (cwd {cwd}):\n"
                         f"{err[-3000:]}\n{out[-1000:]}")
    return Timed(seconds, rss, out, err, returncode=proc.returncode)


def run(cmd, cwd=None, env=None, what=None):
    """Runs an untimed preparation command; raises StepFailed with its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StepFailed(f"{what or cmd[0]} exited {proc.returncode}:\n"
                         f"{proc.stderr[-3000:]}\n{proc.stdout[-1000:]}")
    return proc.stdout
