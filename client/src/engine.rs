//! The engine: resolves compileall's plan from the local cache or the workers, writes the
//! .pyc files and prints what compileall prints, in compileall's order.
//!
//! Resolution runs ahead of printing: every key is looked up first and every miss is handed
//! to the worker pool at once, then events are printed in order, each file waiting only for its
//! own results. A known-bad file is a cached failure: reported, never compiled again.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use pycache_proto::{CacheKey, Entry, KeyDigest, Outcome};
use serde::Serialize;

use crate::compileall::plan::{Event, FileTask};
use crate::local_cache::{LocalCache, Lookup};
use crate::pyc::{self, InvalidationMode};
use crate::pyrepr::{backslashreplace, os_error_class, os_error_text, repr};
use crate::workers::{CompileJob, CompileOutcome, WorkerPool};

/// How results are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Exactly compileall's stdout, with its `-q` count.
    Compileall {
        /// Number of `-q`.
        quiet: u32,
    },
    /// `sync`: errors on stderr (compileall's `-q` form), an optional progress bar.
    Sync {
        /// Draw a progress bar on stderr.
        progress: bool,
    },
}

/// What the engine needs besides the plan.
pub struct EngineConfig<'a> {
    /// Output style.
    pub style: Style,
    /// Header kind to write.
    pub invalidation_mode: InvalidationMode,
    /// `--hardlink-dupes`.
    pub hardlink_dupes: bool,
    /// The interpreter's magic number.
    pub magic: [u8; 4],
    /// Its cache tag.
    pub cache_tag: &'a str,
    /// The settings fingerprint that goes into every key.
    pub settings: &'a str,
    /// SipHash-1-3 (3.11+) or 2-4 for hash-based headers.
    pub siphash13: bool,
    /// compileall's stdout encoding, for escaping error messages.
    pub stdout_encoding: &'a str,
    /// The local cache, unless disabled.
    pub local: Option<&'a LocalCache>,
}

/// Counts for the summary line and `--json`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    /// Python files considered.
    pub files: u64,
    /// Files whose pyc was already current.
    pub up_to_date: u64,
    /// Results taken from the local cache.
    pub local_hits: u64,
    /// Results taken from the server.
    pub remote_hits: u64,
    /// Results compiled by the workers.
    pub compiled: u64,
    /// .pyc files written.
    pub written: u64,
    /// Files that failed.
    pub errors: u64,
    /// Local cache entries found corrupt (and replaced).
    pub corrupt_entries: u64,
    /// Python worker processes started.
    pub workers_started: u64,
    /// Wall time.
    pub seconds: f64,
}

/// One level's state before printing.
enum Pending {
    Ready(Entry),
    Job(u64),
    SourceError(io::Error),
}

struct SourceInfo {
    meta: fs::Metadata,
    bytes: Vec<u8>,
}

/// Where job results land once they arrive.
enum Resolved {
    Entry(Entry),
    Raised {
        class_name: String,
        text: String,
        warnings: String,
    },
}

/// Runs the plan; returns whether everything succeeded (compileall's `success`).
pub fn run(
    events: Vec<Event>,
    cfg: &EngineConfig<'_>,
    pool: &WorkerPool,
    summary: &mut Summary,
) -> io::Result<bool> {
    let started = Instant::now();
    let tasks: Vec<&FileTask> = events
        .iter()
        .filter_map(|e| match e {
            Event::File(t) => Some(t),
            _ => None,
        })
        .collect();

    // Resolve: hash sources, look up the cache, send misses to the workers.
    let mut next_job = 0u64;
    let mut jobs_by_key: HashMap<KeyDigest, u64> = HashMap::new();
    let mut job_keys: HashMap<u64, KeyDigest> = HashMap::new();
    let mut sources: Vec<Option<SourceInfo>> = Vec::with_capacity(tasks.len());
    let mut pending: Vec<Vec<(Option<KeyDigest>, Pending)>> = Vec::with_capacity(tasks.len());
    for task in &tasks {
        let source = fs::read(&task.fullname).and_then(|bytes| {
            Ok(SourceInfo {
                meta: fs::metadata(&task.fullname)?,
                bytes,
            })
        });
        let mut levels = Vec::with_capacity(task.levels.len());
        match source {
            Err(e) => {
                levels.push((None, Pending::SourceError(e)));
                sources.push(None);
            }
            Ok(src) => {
                let source_hash = *blake3::hash(&src.bytes).as_bytes();
                for level in &task.levels {
                    let key = CacheKey {
                        source_hash,
                        magic: cfg.magic,
                        cache_tag: cfg.cache_tag.to_owned(),
                        optimization: level.effective,
                        settings: cfg.settings.to_owned(),
                        dfile: lossless_text(task.recorded_name()),
                    };
                    let digest = key.digest();
                    if let Some(&job) = jobs_by_key.get(&digest) {
                        levels.push((Some(digest), Pending::Job(job)));
                        continue;
                    }
                    let found = match cfg.local {
                        Some(cache) => cache.get(&digest),
                        None => Lookup::Miss,
                    };
                    match found {
                        Lookup::Hit(entry) => {
                            summary.local_hits += 1;
                            levels.push((Some(digest), Pending::Ready(entry)));
                        }
                        other => {
                            if let Lookup::Corrupt(why) = other {
                                summary.corrupt_entries += 1;
                                eprintln!("pycache: warning: a local cache entry was corrupt and is recompiled ({why})");
                            }
                            let id = next_job;
                            next_job += 1;
                            jobs_by_key.insert(digest, id);
                            job_keys.insert(id, digest);
                            pool.submit(CompileJob {
                                id,
                                source: lossless_text(&task.fullname),
                                dfile: task.dfile.as_deref().map(lossless_text),
                                optimize: level.opt_level as i32,
                            });
                            levels.push((Some(digest), Pending::Job(id)));
                        }
                    }
                }
                sources.push(Some(src));
            }
        }
        pending.push(levels);
    }

    // Print and write, in compileall's order.
    let mut out = Output::new(cfg.style, tasks.len() as u64);
    let mut resolved: HashMap<u64, Resolved> = HashMap::new();
    let mut success = true;
    let mut task_index = 0;
    for event in &events {
        match event {
            Event::WalkLine(line) | Event::FileLine(line) => out.line(line)?,
            Event::StopIfFailed => {
                if !success {
                    break;
                }
            }
            Event::File(task) => {
                let i = task_index;
                task_index += 1;
                out.compiling(&task.fullname)?;
                let ok = emit_file(
                    task,
                    &sources[i],
                    &mut pending[i],
                    cfg,
                    pool,
                    &mut resolved,
                    &job_keys,
                    &mut out,
                    summary,
                )?;
                if !ok {
                    success = false;
                    summary.errors += 1;
                }
                out.tick();
            }
        }
    }
    out.finish()?;
    summary.workers_started = pool.workers_started() as u64;
    summary.seconds += started.elapsed().as_secs_f64();
    Ok(success)
}

#[allow(clippy::too_many_arguments)]
fn emit_file(
    task: &FileTask,
    source: &Option<SourceInfo>,
    levels: &mut [(Option<KeyDigest>, Pending)],
    cfg: &EngineConfig<'_>,
    pool: &WorkerPool,
    resolved: &mut HashMap<u64, Resolved>,
    job_keys: &HashMap<u64, KeyDigest>,
    out: &mut Output,
    summary: &mut Summary,
) -> io::Result<bool> {
    let mut written: Vec<&OsStr> = Vec::new();
    for (index, level) in task.levels.iter().enumerate() {
        if let Err(e) = pyc::check_target(&level.cfile) {
            out.error_raised(&task.fullname, e.class_name, &e.text)?;
            return Ok(false);
        }
        let slot = &mut levels[index.min(levels.len() - 1)].1;
        let entry = match slot {
            Pending::SourceError(e) => {
                let (class, text) = (os_error_class(e), os_error_text(e, &task.fullname));
                out.error_raised(&task.fullname, class, &text)?;
                return Ok(false);
            }
            Pending::Ready(entry) => entry.clone(),
            Pending::Job(id) => {
                let id = *id;
                while !resolved.contains_key(&id) {
                    let (done, outcome) = pool.results().recv().map_err(|_| {
                        io::Error::other("the compile workers stopped unexpectedly")
                    })?;
                    let r = absorb(done, outcome, cfg, job_keys, summary);
                    resolved.insert(done, r);
                }
                match &resolved[&id] {
                    Resolved::Entry(e) => e.clone(),
                    Resolved::Raised {
                        class_name,
                        text,
                        warnings,
                    } => {
                        out.warnings(warnings)?;
                        out.error_raised(&task.fullname, class_name, text)?;
                        return Ok(false);
                    }
                }
            }
        };
        out.warnings(&entry.warnings)?;
        let body = match &entry.outcome {
            Outcome::Failed { message } => {
                out.error_compile(
                    &task.fullname,
                    &backslashreplace(message, cfg.stdout_encoding),
                )?;
                return Ok(false);
            }
            Outcome::Compiled { body } => body,
        };
        let src = source.as_ref().expect("a compiled entry has a source");
        let header = pyc::header(
            cfg.invalidation_mode,
            &pyc::HeaderInputs {
                magic: cfg.magic,
                siphash13: cfg.siphash13,
                source: &src.bytes,
                mtime: pyc::python_mtime(&src.meta),
                size: src.meta.size(),
            },
        );
        if let Err(e) = pyc::write_pyc(&level.cfile, Some(src.meta.mode()), &header, body) {
            out.error_raised(&task.fullname, e.class_name, &e.text)?;
            return Ok(false);
        }
        summary.written += 1;
        if cfg.hardlink_dupes && index > 0 {
            if let Err(e) = hardlink_if_same(written[index - 1], &level.cfile) {
                let text = os_error_text(&e, &level.cfile);
                out.error_raised(&task.fullname, os_error_class(&e), &text)?;
                return Ok(false);
            }
        }
        written.push(&level.cfile);
    }
    Ok(true)
}

/// Turns a worker result into an entry, storing cacheable ones.
fn absorb(
    id: u64,
    outcome: CompileOutcome,
    cfg: &EngineConfig<'_>,
    job_keys: &HashMap<u64, KeyDigest>,
    summary: &mut Summary,
) -> Resolved {
    let entry = match outcome {
        CompileOutcome::Compiled { body, warnings } => Entry::compiled(body, warnings),
        CompileOutcome::Failed { message, warnings } => Entry::failed(message, warnings),
        CompileOutcome::Raised {
            class_name,
            text,
            warnings,
        } => {
            return Resolved::Raised {
                class_name,
                text,
                warnings,
            };
        }
        CompileOutcome::WorkerLost { message } => {
            return Resolved::Raised {
                class_name: "pycache.WorkerLost".into(),
                text: message,
                warnings: String::new(),
            };
        }
    };
    summary.compiled += 1;
    if let (Some(cache), Some(key)) = (cfg.local, job_keys.get(&id)) {
        if let Err(e) = cache.put(key, &entry) {
            eprintln!(
                "pycache: warning: could not store an entry in the local cache {}: {e}",
                cache.root().display()
            );
        }
    }
    Resolved::Entry(entry)
}

/// compileall's `--hardlink-dupes`: when two levels' files are equal, link the second to the
/// first.
fn hardlink_if_same(previous: &OsStr, current: &OsStr) -> io::Result<()> {
    if fs::read(previous)? == fs::read(current)? {
        fs::remove_file(current)?;
        fs::hard_link(previous, current)?;
    }
    Ok(())
}

/// A path as text for keys and job requests: UTF-8 when it is, else `surrogateescape`-style
/// escapes that keep distinct byte strings distinct.
pub fn lossless_text(p: &OsStr) -> String {
    match p.to_str() {
        Some(s) => s.to_owned(),
        None => crate::pyrepr::code_points(p)
            .into_iter()
            .map(|cp| {
                char::from_u32(cp).map_or_else(|| format!("\\udc{:02x}", cp - 0xDC00), String::from)
            })
            .collect(),
    }
}

/// compileall's stdout (or sync's stderr reporting), buffered as Python buffers it.
struct Output {
    style: Style,
    stdout: io::BufWriter<io::Stdout>,
    tty: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl Output {
    fn new(style: Style, total: u64) -> Self {
        let tty = io::stdout().is_terminal();
        let bar = match style {
            Style::Sync { progress: true } => {
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} [{bar:30}] {pos}/{len} files {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                Some(bar)
            }
            _ => None,
        };
        Output {
            style,
            stdout: io::BufWriter::with_capacity(8192, io::stdout()),
            tty,
            bar,
        }
    }

    fn quiet(&self) -> u32 {
        match self.style {
            Style::Compileall { quiet } => quiet,
            Style::Sync { .. } => 1,
        }
    }

    fn line(&mut self, line: &str) -> io::Result<()> {
        if let Style::Compileall { .. } = self.style {
            writeln!(self.stdout, "{line}")?;
            if self.tty {
                self.stdout.flush()?;
            }
        }
        Ok(())
    }

    fn compiling(&mut self, fullname: &OsStr) -> io::Result<()> {
        if self.quiet() == 0 {
            self.line(&format!("Compiling {}...", repr(fullname)))?;
        }
        Ok(())
    }

    fn warnings(&mut self, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        if self.tty {
            self.stdout.flush()?;
        }
        match &self.bar {
            Some(bar) => bar.suspend(|| io::stderr().write_all(text.as_bytes())),
            None => io::stderr().write_all(text.as_bytes()),
        }
    }

    fn error_prefix(&mut self, fullname: &OsStr) -> String {
        match self.quiet() {
            0 => "*** ".to_owned(),
            _ => format!("*** Error compiling {}...\n", repr(fullname)),
        }
    }

    fn error_text(&mut self, fullname: &OsStr, text: &str) -> io::Result<()> {
        if self.quiet() >= 2 {
            return Ok(());
        }
        let prefix = self.error_prefix(fullname);
        match self.style {
            Style::Compileall { .. } => {
                writeln!(self.stdout, "{prefix}{text}")?;
                if self.tty {
                    self.stdout.flush()?;
                }
                Ok(())
            }
            Style::Sync { .. } => {
                let msg = format!("{prefix}{text}\n");
                match &self.bar {
                    Some(bar) => bar.suspend(|| io::stderr().write_all(msg.as_bytes())),
                    None => io::stderr().write_all(msg.as_bytes()),
                }
            }
        }
    }

    fn error_compile(&mut self, fullname: &OsStr, message: &str) -> io::Result<()> {
        self.error_text(fullname, message)
    }

    fn error_raised(&mut self, fullname: &OsStr, class_name: &str, text: &str) -> io::Result<()> {
        self.error_text(fullname, &format!("{class_name}: {text}"))
    }

    fn tick(&mut self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.stdout.flush()
    }
}

/// Whether `path` exists as a regular file (used by callers choosing file vs directory).
pub fn is_file(path: &Path) -> bool {
    fs::metadata(path).map(|m| m.is_file()).unwrap_or(false)
}
