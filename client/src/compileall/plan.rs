//! compileall's walk and per-file decisions, replayed without Python.
//!
//! [`Planner`] follows `compileall.main()`, `compile_dir()`, `_walk_dir()` and `compile_file()`
//! of the target's version and produces, in compileall's order, the lines it prints before
//! compiling and one [`FileTask`] for every file compileall would compile (files that are up to
//! date, excluded or not `.py` produce nothing). The engine then resolves the tasks from the
//! caches or the workers and prints their results in the same order.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::pyc;
use crate::pyrepr::repr;

/// What the planner needs to know about the interpreter and the process.
#[derive(Clone, Debug)]
pub struct PlanContext {
    /// `sys.version_info[:2]`.
    pub version: (u32, u32),
    /// The magic number.
    pub magic: [u8; 4],
    /// `sys.implementation.cache_tag`.
    pub cache_tag: String,
    /// `sys.flags.optimize`.
    pub interp_optimize: u8,
    /// `sys.pycache_prefix`.
    pub pycache_prefix: Option<OsString>,
    /// `sys.getrecursionlimit()`.
    pub recursion_limit: i64,
    /// compileall `-j` can use a process pool; without one it compiles serially.
    pub process_pool: bool,
    /// The working directory.
    pub cwd: PathBuf,
}

/// `compile_file`'s parameters that stay the same for a whole run.
pub struct FileOptions {
    /// `-f`.
    pub force: bool,
    /// Number of `-q`.
    pub quiet: u32,
    /// `-b`.
    pub legacy: bool,
    /// `-x`: which paths the walk skips.
    pub rx: Option<Box<dyn Exclude + 'static>>,
    /// Optimization levels as compileall passes them (`-1` = the interpreter's).
    pub optimize: Vec<i64>,
    /// `-s` (3.9+).
    pub stripdir: Option<OsString>,
    /// `-p` (3.9+).
    pub prependdir: Option<OsString>,
    /// `-e`.
    pub limit_sl_dest: Option<OsString>,
    /// The run writes timestamp pycs (`--invalidation-mode timestamp`, the default): a pyc it
    /// wrote is up to date for a later visit of the same file in the same run.
    pub timestamp_pycs: bool,
    /// Names of directories the walk does not enter below the paths it was given, unless they
    /// are packages; with any, it does not enter virtual environments either (`sync`'s default
    /// excludes; compileall has none).
    pub skip_dirs: &'static [&'static str],
}

/// compileall's `rx.search(fullname)`: true when the walk skips `fullname`.
pub trait Exclude {
    /// Whether the pattern matches `fullname` (the path as compileall built it).
    fn excludes(&self, fullname: &OsStr) -> bool;
}

/// `sync --exclude`: a Rust regular expression over the path (lossily decoded).
impl Exclude for fancy_regex::Regex {
    fn excludes(&self, fullname: &OsStr) -> bool {
        let text = String::from_utf8_lossy(fullname.as_bytes());
        self.is_match(&text).unwrap_or(false)
    }
}

/// One optimization level of a file to compile.
#[derive(Clone, Debug)]
pub struct Level {
    /// The level compileall passes to py_compile (-1, 0, 1, 2).
    pub opt_level: i64,
    /// The level the code is really compiled with.
    pub effective: u8,
    /// Where the pyc goes.
    pub cfile: OsString,
    /// An earlier file task of this run writes this pyc too.
    pub planned_before: bool,
    /// The walk saw no `__pycache__` beside the source (pycs in the default place): there is
    /// no pyc to look at before writing it.
    pub known_absent: bool,
}

/// A file compileall would compile.
#[derive(Debug)]
pub struct FileTask {
    /// The path as compileall built it.
    pub fullname: OsString,
    /// The path recorded in the code object, when it differs from `fullname`.
    pub dfile: Option<OsString>,
    /// Levels in the order compileall compiles them.
    pub levels: Vec<Level>,
    /// A later visit of a file this run compiles already (overlapping arguments): compileall
    /// finds it up to date, and skips it silently, when the earlier visit wrote every level
    /// that is not up to date on disk.
    pub revisit: bool,
}

impl FileTask {
    /// The string passed to `compile()` as the filename.
    pub fn recorded_name(&self) -> &OsStr {
        self.dfile.as_deref().unwrap_or(&self.fullname)
    }
}

/// Things compileall does, in order.
#[derive(Debug)]
pub enum Event {
    /// A line printed while walking (`Listing ...`, `Can't list ...`): with `-j` other than 1
    /// these all come before the directory's file results.
    WalkLine(String),
    /// A line printed by `compile_file` before compiling (the 3.13 stripdir warning).
    FileLine(String),
    /// A file to compile (prints `Compiling ...` unless quiet).
    File(FileTask),
    /// A sys.path entry ends: compileall stops at the first one that failed.
    StopIfFailed,
}

/// Walks the tree and decides, as compileall does.
pub struct Planner<'a> {
    ctx: &'a PlanContext,
    opts: &'a FileOptions,
    /// Events in order.
    pub events: Vec<Event>,
    /// Python files seen by the walk (compiled or up to date), for summaries.
    pub python_files: u64,
    /// Files compileall found up to date.
    pub up_to_date: u64,
    /// Every pyc an earlier task of this run writes (normalized paths).
    planned: std::collections::HashSet<PathBuf>,
    /// The walk is in a directory whose listing has no `__pycache__`: its pycs are missing, no
    /// need to try opening each.
    no_pycache_here: bool,
    /// The file about to be planned is a regular file, as its directory entry says (not a
    /// symlink): no stat is needed to know it, only to read its mtime.
    known_regular: bool,
    /// 3.8's up-to-date check packs the source mtime as a signed 32-bit number: from 2038 on
    /// (or before 1901) it raises `struct.error` and compileall stops with a traceback. Set
    /// when the walk reaches such a file; the run is then compileall's own.
    pub mtime_struct_error: bool,
    /// Called once, when the first file to compile is planned.
    first_file: Option<&'a dyn Fn()>,
}

impl<'a> Planner<'a> {
    /// A planner with no events yet.
    pub fn new(ctx: &'a PlanContext, opts: &'a FileOptions) -> Self {
        Planner {
            ctx,
            opts,
            events: Vec::new(),
            python_files: 0,
            up_to_date: 0,
            planned: Default::default(),
            no_pycache_here: false,
            known_regular: false,
            mtime_struct_error: false,
            first_file: None,
        }
    }

    /// Calls `hook` once, as soon as the walk plans a file to compile (the rest of the walk
    /// still to come).
    pub fn on_first_file(&mut self, hook: &'a dyn Fn()) {
        self.first_file = Some(hook);
    }

    fn at_least(&self, minor: u32) -> bool {
        self.ctx.version >= (3, minor)
    }

    /// `compile_dir(dir, maxlevels, ddir, ...)`; `parallel` is compileall's `workers != 1`
    /// (serial all the same where the interpreter has no process pool, as compileall falls back).
    pub fn compile_dir(
        &mut self,
        dir: &OsStr,
        maxlevels: i64,
        ddir: Option<&OsStr>,
        parallel: bool,
    ) {
        let start = self.events.len();
        let naming = if self.at_least(9) {
            match ddir {
                Some(d) => Naming::Strip {
                    stripdir: Some(dir.to_os_string()),
                    prependdir: Some(d.to_os_string()),
                },
                None => Naming::Strip {
                    stripdir: self.opts.stripdir.clone(),
                    prependdir: self.opts.prependdir.clone(),
                },
            }
        } else {
            Naming::Ddir(ddir.map(OsStr::to_os_string))
        };
        self.walk(dir, maxlevels, &naming);
        if parallel && self.ctx.process_pool {
            // The process pool consumes the whole walk before any file result is printed.
            let tail: Vec<Event> = self.events.drain(start..).collect();
            let (walk, rest): (Vec<Event>, Vec<Event>) = tail
                .into_iter()
                .partition(|e| matches!(e, Event::WalkLine(_)));
            self.events.extend(walk);
            self.events.extend(rest);
        }
    }

    /// Whether `sync`'s default excludes keep the walk out of directory `fullname`: a virtual
    /// environment (it holds a `pyvenv.cfg`, whatever its name), or a directory of one of the
    /// names skipped that is not a package (the standard library's `venv` and PyPA's `build`
    /// hold an `__init__.py`, and are compiled).
    fn skipped(&self, fullname: &OsStr, name: &OsStr) -> bool {
        if self.opts.skip_dirs.is_empty() {
            return false;
        }
        let dir = Path::new(fullname);
        if dir.join("pyvenv.cfg").exists() {
            return true;
        }
        self.opts
            .skip_dirs
            .iter()
            .any(|d| d.as_bytes() == name.as_bytes())
            && !dir.join("__init__.py").exists()
    }

    /// `_walk_dir` with each yielded file compiled at once, as compile_dir's loop does.
    fn walk(&mut self, dir: &OsStr, maxlevels: i64, naming: &Naming) {
        if self.opts.quiet == 0 {
            self.events
                .push(Event::WalkLine(format!("Listing {}...", repr(dir))));
        }
        let mut names = match list_dir(dir) {
            Some(n) => n,
            None => {
                if self.opts.quiet < 2 {
                    self.events
                        .push(Event::WalkLine(format!("Can't list {}", repr(dir))));
                }
                Vec::new()
            }
        };
        names.sort_by_cached_key(|(n, _)| crate::pyrepr::code_points(n));
        let no_pycache = !names.iter().any(|(n, _)| n.as_bytes() == b"__pycache__");
        for (name, kind) in names {
            if name.as_bytes() == b"__pycache__" {
                continue;
            }
            let fullname = os_path_join(dir, &name);
            // The directory entry's type says as much as a stat for files and directories; a
            // symlink (or an unknown type) is stat'ed, as `os.path.isdir` follows it.
            let is_dir = match kind {
                Some(kind) if kind.is_file() => false,
                Some(kind) if kind.is_dir() => true,
                _ => fs::metadata(&fullname).map(|m| m.is_dir()).unwrap_or(false),
            };
            if !is_dir {
                self.no_pycache_here = no_pycache;
                self.known_regular = kind.is_some_and(|k| k.is_file());
                match naming {
                    Naming::Strip {
                        stripdir,
                        prependdir,
                    } => self.compile_file(
                        &fullname,
                        None,
                        stripdir.as_deref(),
                        prependdir.as_deref(),
                    ),
                    Naming::Ddir(ddir) => self.compile_file(&fullname, ddir.as_deref(), None, None),
                }
                self.no_pycache_here = false;
                self.known_regular = false;
            } else if maxlevels > 0
                && name.as_bytes() != b"."
                && name.as_bytes() != b".."
                && !kind.map_or_else(|| is_symlink(&fullname), |k| k.is_symlink())
                && !self.skipped(&fullname, &name)
            {
                let sub = match naming {
                    Naming::Ddir(Some(d)) => Naming::Ddir(Some(os_path_join(d, &name))),
                    other => other.clone(),
                };
                self.walk(&fullname, maxlevels - 1, &sub);
            }
        }
    }

    /// `compile_file(fullname, ddir, ..., stripdir=, prependdir=)`.
    pub fn compile_file(
        &mut self,
        fullname: &OsStr,
        ddir: Option<&OsStr>,
        stripdir: Option<&OsStr>,
        prependdir: Option<&OsStr>,
    ) {
        let name = basename(fullname);
        let mut dfile: Option<OsString> = ddir.map(|d| os_path_join(d, name));
        if let Some(stripdir) = stripdir {
            let full_parts: Vec<&[u8]> = fullname.as_bytes().split(|&b| b == b'/').collect();
            let strip_parts: Vec<&[u8]> = stripdir.as_bytes().split(|&b| b == b'/').collect();
            if self.at_least(13) {
                if full_parts.len() < strip_parts.len()
                    || strip_parts[..] != full_parts[..strip_parts.len()]
                {
                    if self.opts.quiet < 2 {
                        self.events.push(Event::FileLine(format!(
                            "The stripdir path {} is not a valid prefix for source path {}; ignoring",
                            repr(stripdir),
                            repr(fullname)
                        )));
                    }
                } else {
                    dfile = join_parts(&full_parts[strip_parts.len()..]);
                }
            } else {
                let mut ddir_parts = full_parts.clone();
                for (s, o) in strip_parts.iter().zip(full_parts.iter()) {
                    if s == o {
                        if let Some(pos) = ddir_parts.iter().position(|p| p == s) {
                            ddir_parts.remove(pos);
                        }
                    }
                }
                dfile = join_parts(&ddir_parts);
            }
        }
        if let Some(prependdir) = prependdir {
            dfile = Some(match &dfile {
                None => os_path_join(prependdir, fullname),
                Some(d) => os_path_join(prependdir, d),
            });
        }
        let mut optimize = self.opts.optimize.clone();
        optimize.sort_unstable();
        optimize.dedup();

        if let Some(rx) = &self.opts.rx {
            if rx.excludes(fullname) {
                return;
            }
        }
        if let Some(limit) = &self.opts.limit_sl_dest {
            if is_symlink(fullname) {
                let dest = resolve(Path::new(limit), &self.ctx.cwd);
                let target = resolve(Path::new(fullname), &self.ctx.cwd);
                if !target.ancestors().skip(1).any(|a| a == dest) {
                    return;
                }
            }
        }
        // (A file the directory listing showed as regular is stat'ed only for its mtime.)
        let known_regular = std::mem::take(&mut self.known_regular);
        let mut meta = None;
        if !known_regular {
            match fs::metadata(fullname) {
                Ok(m) if m.is_file() => meta = Some(m),
                _ => return,
            }
        }
        let nb = name.as_bytes();
        if nb.len() < 3 || &nb[nb.len() - 3..] != b".py" {
            return;
        }
        // Without a `__pycache__` beside the source (and pycs in the default place), there is
        // no pyc to open.
        let surely_missing =
            self.no_pycache_here && !self.opts.legacy && self.ctx.pycache_prefix.is_none();
        let levels: Vec<Level> = optimize
            .iter()
            .map(|&opt_level| {
                let effective = if opt_level < 0 {
                    self.ctx.interp_optimize
                } else {
                    opt_level as u8
                };
                let cfile = if self.opts.legacy {
                    let mut c = fullname.to_os_string();
                    c.push("c");
                    c
                } else {
                    pyc::cache_from_source(
                        fullname,
                        &self.ctx.cache_tag,
                        effective,
                        self.ctx.pycache_prefix.as_deref(),
                        &self.ctx.cwd,
                    )
                };
                let planned_before = self
                    .planned
                    .contains(&normalize(Path::new(&cfile), &self.ctx.cwd));
                Level {
                    opt_level,
                    effective,
                    cfile,
                    planned_before,
                    known_absent: surely_missing && !planned_before,
                }
            })
            .collect();
        // The up-to-date check reads the mtime, unless every pyc is surely missing (3.8 reads
        // it all the same: it packs it into a struct first).
        let needs_mtime =
            !self.opts.force && (!self.at_least(9) || levels.iter().any(|l| !l.known_absent));
        if needs_mtime && meta.is_none() {
            match fs::metadata(fullname) {
                Ok(m) if m.is_file() => meta = Some(m),
                _ => return,
            }
        }
        self.python_files += 1;
        let mut revisit = false;
        if let Some(meta) = meta.as_ref().filter(|_| needs_mtime) {
            let mtime = pyc::python_mtime(meta);
            if !self.at_least(9) && i32::try_from(mtime).is_err() {
                self.mtime_struct_error = true;
            }
            let expect = pyc::expected_timestamp_prefix(self.ctx.magic, mtime);
            // 3.8 checks its one pyc; 3.9+ every level's. A pyc this run writes counts as up to
            // date when the run writes timestamp pycs (the check happens after that write).
            let current: Vec<bool> = levels
                .iter()
                .map(|l| {
                    (l.planned_before && self.opts.timestamp_pycs)
                        || (!l.known_absent && pyc::starts_with(Path::new(&l.cfile), &expect))
                })
                .collect();
            if current.iter().all(|c| *c) {
                if !levels.iter().any(|l| l.planned_before) {
                    self.up_to_date += 1;
                    return;
                }
                revisit = true;
            }
        }
        for level in &levels {
            self.planned
                .insert(normalize(Path::new(&level.cfile), &self.ctx.cwd));
        }
        if let Some(hook) = self.first_file.take() {
            hook();
        }
        self.events.push(Event::File(FileTask {
            fullname: fullname.to_os_string(),
            dfile,
            levels,
            revisit,
        }));
    }

    /// `compile_path()`: compileall with no paths.
    pub fn compile_path(&mut self, sys_path: &[OsString]) {
        for dir in sys_path {
            if dir.is_empty() || dir.as_bytes() == b"." {
                if self.opts.quiet < 2 {
                    self.events
                        .push(Event::WalkLine("Skipping current directory".into()));
                }
            } else {
                self.compile_dir(dir, 0, None, false);
                self.events.push(Event::StopIfFailed);
            }
        }
    }
}

/// How a directory's files get their `dfile`.
#[derive(Clone, Debug)]
enum Naming {
    /// 3.8: `ddir` joined along the walk.
    Ddir(Option<OsString>),
    /// 3.9+: stripdir / prependdir.
    Strip {
        stripdir: Option<OsString>,
        prependdir: Option<OsString>,
    },
}

/// `os.listdir`, with each entry's type where the directory says it (no stat).
fn list_dir(dir: &OsStr) -> Option<Vec<(OsString, Option<fs::FileType>)>> {
    let rd = fs::read_dir(if dir.is_empty() { OsStr::new("") } else { dir }).ok()?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.ok()?;
        names.push((e.file_name(), e.file_type().ok()));
    }
    Some(names)
}

fn is_symlink(p: &OsStr) -> bool {
    fs::symlink_metadata(p)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}

/// `os.path.basename`.
fn basename(p: &OsStr) -> &OsStr {
    let b = p.as_bytes();
    match b.iter().rposition(|&c| c == b'/') {
        Some(i) => OsStr::from_bytes(&b[i + 1..]),
        None => p,
    }
}

/// `os.path.join(a, b)` on POSIX.
pub fn os_path_join(a: &OsStr, b: &OsStr) -> OsString {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if b.starts_with(b"/") {
        return OsString::from_vec(b.to_vec());
    }
    let mut out = a.to_vec();
    if !out.is_empty() && !out.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(b);
    OsString::from_vec(out)
}

/// `os.path.join(*parts)`; `None` when there are no parts (Python raises there; compileall
/// then has nothing sensible to record, so the source path is used).
fn join_parts(parts: &[&[u8]]) -> Option<OsString> {
    let (first, rest) = parts.split_first()?;
    let mut acc = OsString::from_vec(first.to_vec());
    for p in rest {
        acc = os_path_join(&acc, OsStr::from_bytes(p));
    }
    Some(acc)
}

/// `pathlib.Path(p).resolve()` (non-strict): absolute, symlinks resolved as far as they exist.
fn resolve(p: &Path, cwd: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    if let Ok(c) = fs::canonicalize(&abs) {
        return c;
    }
    // Resolve the longest existing prefix, then append the rest lexically.
    let mut existing = abs.clone();
    let mut tail = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(OsStr::to_os_string),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = fs::canonicalize(&existing).unwrap_or(existing);
    for name in tail.into_iter().rev() {
        if name == ".." {
            out.pop();
        } else if name != "." {
            out.push(name);
        }
    }
    out
}

/// `path` made absolute against `cwd` with `.` and `..` resolved lexically: two spellings of one
/// pyc path compare equal.
fn normalize(path: &Path, cwd: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in cwd.join(path).components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_follows_posixpath() {
        assert_eq!(os_path_join(OsStr::new("a"), OsStr::new("b")), "a/b");
        assert_eq!(os_path_join(OsStr::new("a/"), OsStr::new("b")), "a/b");
        assert_eq!(os_path_join(OsStr::new(""), OsStr::new("b")), "b");
        assert_eq!(os_path_join(OsStr::new("a"), OsStr::new("/b")), "/b");
        assert_eq!(basename(OsStr::new("x/y.py")), "y.py");
    }
}
