//! The source trees of the parity cases. Each one lives under `proj/` of the case root, so a case
//! can also use siblings (`outside/`, `pp/`, `prefix/`) for symlink targets and `sys.path`.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::interp::Interp;
use super::tree::{set_mtime, Tree};

/// A package tree: modules with docstrings and asserts (so -O and -OO differ), one module that
/// compiles the same at every level (for `--hardlink-dupes`), files that are not `.py`, odd
/// modes, and a `__pycache__` holding a `.py` that must be skipped.
pub fn package(t: &mut Tree, _: &Interp) {
    t.file(
        "proj/top.py",
        "import os\n\ndef f(x):\n    \"\"\"Doc.\"\"\"\n    assert x, 'no'\n    return os.sep + x\n",
    )
    .file("proj/plain.py", "VALUE = 1\n")
    .file("proj/pkg/__init__.py", "")
    .file(
        "proj/pkg/mod.py",
        "\"\"\"Module doc.\"\"\"\nassert True\nif __debug__:\n    X = 1\n",
    )
    .file("proj/pkg/sub/__init__.py", "from .. import mod\n")
    .file(
        "proj/pkg/sub/deep.py",
        "class C:\n    'doc'\n    def m(self):\n        return [i * 'é' for i in range(3)]\n",
    )
    .file("proj/pkg/data.txt", "not python\n")
    .file("proj/README", "readme\n")
    .file("proj/x.PY", "upper = 1\n")
    .file("proj/x.pyw", "windowed = 1\n")
    .file("proj/pkg/__pycache__/stale.py", "never = 1\n")
    .file_mode("proj/mode600.py", "a = 1\n", 0o600)
    .file_mode("proj/mode755.py", "b = 2\n", 0o755)
    .file_mode("proj/readonly.py", "c = 3\n", 0o444);
}

/// Files that fail to compile or need care to read, and file names that test `repr` quoting.
pub fn broken(t: &mut Tree, interp: &Interp) {
    t.file("proj/ok.py", "fine = True\n")
        .file("proj/syntax.py", "def f(:\n    pass\n")
        .file("proj/compiler_error.py", "x = 1\nreturn x\n")
        .file("proj/future.py", "from __future__ import braces\n")
        .file("proj/latin1.py", b"# -*- coding: latin-1 -*-\ns = '\xe9'\n")
        .file("proj/bom.py", b"\xef\xbb\xbfs = '\xc3\xa9'\n")
        .file(
            "proj/bom_latin1.py",
            b"\xef\xbb\xbf# coding: latin-1\nx = 1\n",
        )
        .file("proj/bad_cookie.py", b"# coding: klingon\nx = 1\n")
        .file("proj/nul.py", b"x = 1\0\n")
        .file("proj/empty.py", b"")
        .file("proj/not_utf8.py", b"s = '\xe9'\n")
        .file("proj/indent.py", "if 1:\nx = 1\n")
        .file("proj/tabs.py", "if 1:\n\tx = 1\n        y = 2\n")
        .file("proj/name_escape.py", "s = '\\N{NOT A NAME}'\n")
        .file("proj/café.py", "x = 'é'\n")
        .file("proj/it's.py", "q = 1\n")
        .file("proj/back\\slash.py", "b = 1\n")
        .file("proj/data.txt", "x\n")
        .file("proj/x.PY", "u = 1\n");
    // Emscripten's file system names files with JavaScript strings: a non-UTF-8 name cannot be
    // listed there (os.listdir sees a broken directory), so Pyodide gets UTF-8 names only.
    if !interp.pyodide {
        t.file(os_path(b"proj/raw\xff.py"), "r = 1\n");
    }
}

/// Files whose compile prints a warning (SyntaxWarning; DeprecationWarning before 3.12 for the
/// invalid escape, which is silent by default).
pub fn warnings(t: &mut Tree, _: &Interp) {
    t.file("proj/ok.py", "fine = True\n")
        .file("proj/warn_escape.py", "s = '\\d'\n")
        .file("proj/warn_is.py", "x = 1\nif x is 1:\n    pass\n")
        .file("proj/warn_assert.py", "def f(x):\n    assert (x, 'msg')\n");
}

/// `package` plus a file that fails and one that warns, for the dfile options.
pub fn mixed(t: &mut Tree, interp: &Interp) {
    package(t, interp);
    t.file("proj/pkg/syntax.py", "def f(:\n    pass\n")
        .file("proj/pkg/warn.py", "x = 1\nif x is 1:\n    pass\n");
}

/// `mixed` plus names where Python's `re` and other engines disagree: a U+001C separator
/// (`\s` in Python), a superscript two (`\w` in Python), a non-UTF-8 byte (a surrogate escape).
pub fn regex_names(t: &mut Tree, interp: &Interp) {
    mixed(t, interp);
    t.file("proj/sep\u{1c}x.py", "s = 1\n")
        .file("proj/sq\u{b2}.py", "q = 1\n")
        .file(os_path(b"proj/pkg/raw\xff.py"), "r = 1\n");
}

/// `package` plus non-ASCII names: one Latin-1 can encode, one it cannot, and a failing file
/// whose name only Latin-1 can encode (printed under `-q`).
pub fn wide_names(t: &mut Tree, interp: &Interp) {
    package(t, interp);
    t.file("proj/caf\u{e9}.py", "c = 1\n")
        .file("proj/pkg/\u{4e2d}.py", "z = 1\n")
        .file("proj/bad_\u{e9}.py", "def f(:\n");
}

/// Sources nested deeper than 3.8's parser stack (it prints `s_push: parser stack overflow`
/// on stderr and fails with MemoryError), next to good files.
pub fn deep_nesting(t: &mut Tree, _: &Interp) {
    let nested = |n: usize| format!("x = {}{}\n", "(".repeat(n), ")".repeat(n));
    t.file("proj/a_ok.py", "a = 1\n")
        .file("proj/b_deep.py", nested(100))
        .file("proj/d_deep.py", format!("y = 1\n{}", nested(120)))
        .file("proj/e_nearly.py", nested(90));
}

/// A source whose mtime is past 2038 (and one before 1970) between ordinary ones.
pub fn far_mtimes(t: &mut Tree, _: &Interp) {
    t.file("proj/a.py", "a = 1\n")
        .file("proj/b_2040.py", "b = 1\n")
        .file("proj/c_1960.py", "c = 1\n")
        .file("proj/sub/d.py", "d = 1\n");
    set_mtime(&t.root().join("proj/b_2040.py"), 2_208_988_800);
}

/// Thirteen levels of directories, one module each: deeper than 3.8's default of 10.
pub fn deep(t: &mut Tree, _: &Interp) {
    let mut rel = PathBuf::from("proj");
    for level in 0..13 {
        t.file(rel.join("m.py"), format!("LEVEL = {level}\n"));
        rel.push(format!("d{level}"));
    }
}

/// Symlinked files and directories pointing inside and outside `proj/`.
pub fn symlinks(t: &mut Tree, _: &Interp) {
    let abs_target = t.root().join("proj/pkg/a.py");
    t.file("proj/pkg/a.py", "a = 1\n")
        .file("outside/o.py", "o = 1\n")
        .file("outside/sub/p.py", "p = 1\n")
        .symlink("proj/link_in.py", "pkg/a.py")
        .symlink("proj/link_abs.py", abs_target)
        .symlink("proj/link_out.py", "../outside/o.py")
        .symlink("proj/linkdir", "pkg")
        .symlink("proj/linkdir_out", "../outside")
        .symlink("proj/dangling.py", "nowhere.py");
}

/// Where the .pyc should go there is something else: a file named `__pycache__`, a directory or
/// a symlink named like the .pyc, a read-only `__pycache__` (root writes anyway), a directory
/// named `*.py`, a fifo named `*.py`, and a file named just `.py`.
pub fn obstacles(t: &mut Tree, interp: &Interp) {
    let tag = &interp.cache_tag;
    t.file("proj/a/m.py", "m = 1\n")
        .file("proj/a/__pycache__", "a file, not a directory\n")
        .file("proj/b/m.py", "m = 2\n")
        .dir(format!("proj/b/__pycache__/m.{tag}.pyc"))
        .file("proj/b/n.py", "n = 2\n")
        .file("proj/b/junk.pyc", "junk")
        .symlink(format!("proj/b/__pycache__/n.{tag}.pyc"), "../junk.pyc")
        .file("proj/c/m.py", "m = 3\n")
        .dir("proj/c/__pycache__")
        .chmod("proj/c/__pycache__", 0o555)
        .file("proj/d/pkg.py/inner.py", "inner = 1\n")
        .fifo("proj/d/fifo.py")
        .file("proj/d/.py", "dot = 1\n");
}

/// `proj/` with good modules and `pp/` (for `PYTHONPATH`) with a subdirectory that the no-path
/// mode must not enter.
pub fn sys_path(t: &mut Tree, _: &Interp) {
    t.file("proj/here.py", "here = 1\n")
        .file("proj/sub/below.py", "below = 1\n")
        .file("pp/extra.py", "extra = 1\n")
        .file("pp/pkg/inner.py", "inner = 1\n");
}

/// `sys_path` with a broken module in `pp/`: compileall stops after the first failing
/// `sys.path` entry.
pub fn sys_path_broken(t: &mut Tree, interp: &Interp) {
    sys_path(t, interp);
    t.file("pp/broken.py", "def (:\n");
}

/// `package` plus file lists for `-i`.
pub fn with_lists(t: &mut Tree, interp: &Interp) {
    package(t, interp);
    t.file(
        "list.txt",
        "proj/top.py\n  proj/pkg  \nproj/missing.py\nproj/README\n\nproj/x.pyw\n",
    );
}

fn os_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

/// Rewrites `proj/pkg/mod.py` with other bytes of another size but the same mtime: compileall
/// only compares magic, flags and mtime, so its .pyc stays.
pub fn rewrite_same_mtime(root: &Path, _: &Interp) {
    let path = root.join("proj/pkg/mod.py");
    let mtime = std::fs::metadata(&path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(&path, "CHANGED = 'but the mtime is the same'\n").unwrap();
    set_mtime(&path, mtime);
}

/// Moves the mtime of `proj/pkg/mod.py` forward: its .pyc is stale.
pub fn bump_mtime(root: &Path, _: &Interp) {
    set_mtime(
        &root.join("proj/pkg/mod.py"),
        super::tree::BASE_MTIME + 10_000,
    );
}

/// Appends junk to the .pyc of `proj/top.py`: the header still matches, so it is kept.
pub fn corrupt_pyc_tail(root: &Path, interp: &Interp) {
    let pyc = root.join(format!("proj/__pycache__/top.{}.pyc", interp.cache_tag));
    let mut bytes = std::fs::read(&pyc).unwrap();
    bytes.extend_from_slice(b"junk after the body");
    std::fs::write(&pyc, bytes).unwrap();
}

/// `package` plus `site/sitecustomize.py` making the interpreter report no cache tag
/// (`sys.implementation.cache_tag = None`), for `PYTHONPATH={root}/site`.
pub fn no_cache_tag_tree(t: &mut Tree, interp: &Interp) {
    package(t, interp);
    t.file(
        "site/sitecustomize.py",
        "import sys\nsys.implementation.cache_tag = None\n",
    );
}

/// `package` plus `site/sitecustomize.py` making the interpreter report Python 3.16 (a version
/// newer than pycache knows), for `PYTHONPATH={root}/site`.
pub fn newer_version(t: &mut Tree, interp: &Interp) {
    package(t, interp);
    t.file(
        "site/sitecustomize.py",
        "import sys\nsys.version_info = (3, 16, 0, 'alpha', 1)\n",
    );
}
