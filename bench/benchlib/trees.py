"""Pre-made copies of the corpus, one per timed step, rotated instead of deleted.

Every copy is laid out as `<slot>/src/...` and every tool is run with cwd = `<slot>`
and the path `src`, so the path recorded in the bytecode (part of pycache's key) is
the same in every copy: a copy is a fresh checkout of the same project.
"""

import os
import shutil
from pathlib import Path

from .proc import flush_disk, log


def copy_tree(master, slot, hardlink=False):
    """Copies master/src to slot/src (real copies, or hard links of the sources)."""
    dst = Path(slot) / "src"
    if dst.exists():
        return dst
    Path(slot).mkdir(parents=True, exist_ok=True)
    shutil.copytree(Path(master) / "src", dst, copy_function=os.link if hardlink else shutil.copy2)
    return dst


class TreeBank:
    """Named slots under one directory, all made before timing starts."""

    def __init__(self, base, master):
        self.base, self.master = Path(base), master and Path(master)

    def reset(self):
        """Removes slots left from an earlier invocation (before anything is timed)."""
        if self.base.exists():
            log(f"removing old trees under {self.base}")
            shutil.rmtree(self.base)
        flush_disk()

    def make(self, names, hardlink=False):
        """Creates every named slot; returns {name: slot dir}."""
        slots = {}
        for name in names:
            slots[name] = self.base / name
            copy_tree(self.master, slots[name], hardlink)
        flush_disk()
        return slots

    def remove(self):
        """Deletes every slot (at the very end)."""
        shutil.rmtree(self.base, ignore_errors=True)


def pyc_pairs(compiled_src):
    """Walks a compiled tree: yields (dir, [pyc names]) of each __pycache__."""
    for d, ds, fs in os.walk(compiled_src):
        if os.path.basename(d) == "__pycache__":
            yield d, fs


def pycache_dirs(slot):
    """The `__pycache__` dirs of a compiled slot, relative to the slot (`src/.../__pycache__`)."""
    return sorted(os.path.relpath(d, slot) for d, _ in pyc_pairs(os.path.join(slot, "src")))


def copy_command(compiled_slot, fresh_slot):
    """The warm floor's command: `cp -a --parents` of every `__pycache__` dir, run in the
    compiled slot, into a fresh copy (measured faster here than `tar -cf - | tar -xf -`)."""
    return ["cp", "-a", "--parents", *pycache_dirs(compiled_slot), str(fresh_slot)]


def count_pycs(slot):
    """How many .pyc files a slot holds."""
    return sum(len(fs) for _, fs in pyc_pairs(os.path.join(slot, "src")))


def apply_pull_request(slot, every=100):
    """A pull request's change, made untimed: appends a comment line naming the file to
    every `every`-th .py file of the slot (sorted by path, the `every`-th, `2·every`-th …),
    so each changed file is a new, distinct source; at least one (the last) in a tree of
    fewer files (--quick); returns how many files changed."""
    src = Path(slot) / "src"
    paths = sorted(p.relative_to(slot).as_posix() for p in src.rglob("*.py"))
    changed = paths[every - 1::every] or paths[-1:]
    for rel in changed:
        p = Path(slot) / rel
        text = p.read_bytes()
        sep = b"" if text.endswith(b"\n") or not text else b"\n"
        p.write_bytes(text + sep + f"# changed by the pull request: {rel}\n".encode())
    return len(changed)
