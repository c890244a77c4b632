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
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use pycache_proto::pack::Frame;
use pycache_proto::{CacheKey, Entry, KeyDigest, Outcome};
use serde::Serialize;

use crate::compileall::plan::{Event, FileTask};
use crate::local_cache::{LocalCache, Lookup};
use crate::pyc::{self, InvalidationMode};
use crate::pyrepr::{backslashreplace, os_error_class, os_error_text, repr};
use crate::remote::Remote;
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
    /// The server, when one is configured.
    pub remote: Option<&'a RemoteTier<'a>>,
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
    /// Entries the server accepted from this run.
    pub uploaded: u64,
    /// Entries the server refused.
    pub upload_refused: u64,
    /// Bytes received from the server.
    pub bytes_down: u64,
    /// Bytes sent to the server.
    pub bytes_up: u64,
    /// Time spent hashing sources and reading the local cache.
    pub lookup_seconds: f64,
    /// Time spent waiting for the server's batch get.
    pub fetch_seconds: f64,
    /// Time spent compiling misses and writing .pyc files.
    pub emit_seconds: f64,
    /// Time spent waiting for uploads to finish after the last file.
    pub upload_wait_seconds: f64,
    /// Wall time.
    pub seconds: f64,
}

/// One level's state before printing.
enum Pending {
    Ready(Arc<Entry>),
    Miss(KeyDigest),
    Job(u64),
    SourceError(io::Error),
}

struct SourceInfo {
    meta: fs::Metadata,
    bytes: Vec<u8>,
}

/// Where job results land once they arrive.
enum Resolved {
    Entry(Arc<Entry>),
    Raised {
        class_name: String,
        text: String,
        warnings: String,
    },
}

/// A miss waiting for the server or the workers.
struct Miss {
    key: CacheKey,
    /// `None` once handed to the workers.
    job: Option<CompileJob>,
}

/// The server tier as the engine uses it.
pub struct RemoteTier<'a> {
    /// The server.
    pub remote: &'a Remote,
    /// Whether the token may write (uploads are skipped otherwise).
    pub can_write: bool,
    /// Keys per batch get (the server's advertised limit).
    pub max_batch_keys: usize,
    /// Encoded bytes per batch put (below the server's request limit).
    pub max_upload_bytes: usize,
}

/// Runs the plan; returns whether everything succeeded (compileall's `success`).
pub fn run(
    events: Vec<Event>,
    cfg: &EngineConfig<'_>,
    pool: &WorkerPool,
    summary: &mut Summary,
) -> Result<bool> {
    let started = Instant::now();
    let tasks: Vec<&FileTask> = events
        .iter()
        .filter_map(|e| match e {
            Event::File(t) => Some(t),
            _ => None,
        })
        .collect();

    // Hash sources and look up the local cache.
    let mut misses: Vec<Miss> = Vec::new();
    let mut job_keys: HashMap<u64, CacheKey> = HashMap::new();
    let mut miss_index: HashMap<KeyDigest, usize> = HashMap::new();
    let mut sources: Vec<Option<SourceInfo>> = Vec::with_capacity(tasks.len());
    let mut pending: Vec<Vec<Pending>> = Vec::with_capacity(tasks.len());
    for task in &tasks {
        let source = fs::read(&task.fullname).and_then(|bytes| {
            Ok(SourceInfo {
                meta: fs::metadata(&task.fullname)?,
                bytes,
            })
        });
        let src = match source {
            Err(e) => {
                pending.push(vec![Pending::SourceError(e)]);
                sources.push(None);
                continue;
            }
            Ok(src) => src,
        };
        let source_hash = *blake3::hash(&src.bytes).as_bytes();
        let mut src = src;
        if cfg.invalidation_mode == InvalidationMode::Timestamp {
            // Timestamp headers need only the metadata; don't hold every source in memory.
            src.bytes = Vec::new();
        }
        let mut levels = Vec::with_capacity(task.levels.len());
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
            if miss_index.contains_key(&digest) {
                levels.push(Pending::Miss(digest));
                continue;
            }
            let found = match cfg.local {
                Some(cache) => cache.get(&digest),
                None => Lookup::Miss,
            };
            match found {
                Lookup::Hit(entry) => {
                    summary.local_hits += 1;
                    levels.push(Pending::Ready(Arc::new(entry)));
                }
                other => {
                    if let Lookup::Corrupt(why) = other {
                        summary.corrupt_entries += 1;
                        eprintln!("pycache: warning: a local cache entry was corrupt and is recompiled ({why})");
                    }
                    miss_index.insert(digest, misses.len());
                    let job = CompileJob {
                        id: misses.len() as u64,
                        source: task.fullname.clone(),
                        dfile: task.dfile.clone(),
                        optimize: level.opt_level as i32,
                    };
                    // Without a server to ask first, the workers start on misses while the
                    // rest of the tree is still being hashed.
                    let job = if cfg.remote.is_none() {
                        job_keys.insert(job.id, key.clone());
                        pool.submit(job);
                        None
                    } else {
                        Some(job)
                    };
                    misses.push(Miss { key, job });
                    levels.push(Pending::Miss(digest));
                }
            }
        }
        sources.push(Some(src));
        pending.push(levels);
    }
    summary.lookup_seconds = started.elapsed().as_secs_f64();

    // One batched lookup at the server for everything the local cache lacks.
    let fetch_started = Instant::now();
    let mut fetched: HashMap<KeyDigest, Arc<Entry>> = HashMap::new();
    if let Some(tier) = cfg
        .remote
        .filter(|t| t.remote.enabled() && !misses.is_empty())
    {
        let digests: Vec<KeyDigest> = misses.iter().map(|m| m.key.digest()).collect();
        for chunk in digests.chunks(tier.max_batch_keys.max(1)) {
            if !tier.remote.enabled() {
                break;
            }
            match tier.remote.batch_get(chunk) {
                Ok(answer) => {
                    summary.bytes_down += answer.bytes;
                    for key in &answer.corrupt {
                        summary.corrupt_entries += 1;
                        eprintln!(
                            "pycache: warning: the server {} sent a corrupt entry for key {key} (digest mismatch); compiling it locally",
                            tier.remote.url()
                        );
                    }
                    fetched.extend(answer.entries.into_iter().map(|(k, e)| (k, Arc::new(e))));
                }
                Err(e) => tier
                    .remote
                    .absorb_failure("looking up entries at the server", e)?,
            }
        }
    }
    summary.remote_hits = fetched.len() as u64;
    summary.fetch_seconds = fetch_started.elapsed().as_secs_f64();

    // Compile what is left; results stream back while earlier files are written.
    for miss in misses {
        let Some(job) = miss.job else { continue };
        if !fetched.contains_key(&miss.key.digest()) {
            job_keys.insert(job.id, miss.key);
            pool.submit(job);
        }
    }
    for levels in &mut pending {
        for slot in levels.iter_mut() {
            if let Pending::Miss(digest) = slot {
                *slot = match fetched.get(digest) {
                    Some(entry) => Pending::Ready(Arc::clone(entry)),
                    None => Pending::Job(miss_index[digest] as u64),
                };
            }
        }
    }

    let upload_tier = cfg.remote.filter(|t| t.can_write);
    let (store_tx, store_rx) = crossbeam_channel::unbounded::<(KeyDigest, Arc<Entry>)>();
    // Bounded, so a slow server holds back printing rather than filling memory.
    let (upload_tx, upload_rx) = crossbeam_channel::bounded::<Frame>(1024);
    let emit_started = Instant::now();
    let result = std::thread::scope(|scope| -> Result<bool> {
        let uploader = upload_tier.map(|tier| scope.spawn(move || upload_all(tier, upload_rx)));
        // Server hits and new compiles go into the local cache off the printing thread.
        if let Some(cache) = cfg.local {
            let fetched = &fetched;
            scope.spawn(move || {
                for (key, entry) in fetched {
                    store_local(cache, key, entry);
                }
                for (key, entry) in store_rx {
                    store_local(cache, &key, &entry);
                }
            });
        }
        let sink = upload_tier.map(|_| &upload_tx);
        let mut out = Output::new(cfg.style, tasks.len() as u64);
        let mut resolved: HashMap<u64, Resolved> = HashMap::new();
        let mut success = true;
        let mut task_index = 0;
        let mut emit = || -> Result<()> {
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
                        let ctx = EmitContext {
                            cfg,
                            pool,
                            job_keys: &job_keys,
                            uploads: sink,
                            local_stores: cfg.local.map(|_| &store_tx),
                        };
                        let ok = emit_file(
                            task,
                            &sources[i],
                            &mut pending[i],
                            &ctx,
                            &mut resolved,
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
            Ok(())
        };
        let emitted = emit();
        drop(upload_tx);
        drop(store_tx);
        summary.emit_seconds = emit_started.elapsed().as_secs_f64();
        if let Some(handle) = uploader {
            let upload_started = Instant::now();
            let report = handle.join().unwrap_or_default();
            summary.uploaded = report.stored;
            summary.upload_refused = report.refused;
            summary.bytes_up = report.bytes;
            summary.upload_wait_seconds = upload_started.elapsed().as_secs_f64();
            if let Some(err) = report.error {
                return Err(err);
            }
        }
        emitted?;
        Ok(success)
    });
    summary.workers_started = pool.workers_started() as u64;
    summary.seconds += started.elapsed().as_secs_f64();
    result
}

/// What the background uploader did.
#[derive(Default)]
struct UploadReport {
    stored: u64,
    refused: u64,
    bytes: u64,
    error: Option<anyhow::Error>,
}

/// Sends new entries to the server in batches as they arrive.
fn upload_all(tier: &RemoteTier<'_>, frames: crossbeam_channel::Receiver<Frame>) -> UploadReport {
    let mut report = UploadReport::default();
    let mut batch: Vec<Frame> = Vec::new();
    let mut batch_bytes = 0usize;
    let flush = |batch: &mut Vec<Frame>, report: &mut UploadReport| {
        if batch.is_empty() || !tier.remote.enabled() || report.error.is_some() {
            batch.clear();
            return;
        }
        match tier.remote.batch_put(batch) {
            Ok((answer, sent)) => {
                report.stored += answer.stored.len() as u64;
                report.refused += answer.refused.len() as u64;
                report.bytes += sent;
                if let Some(first) = answer.refused.first() {
                    eprintln!(
                        "pycache: warning: the server {} refused {} uploaded entries (first: {}: {})",
                        tier.remote.url(),
                        answer.refused.len(),
                        first.key,
                        first.reason
                    );
                }
            }
            Err(e) => {
                if let Err(fatal) = tier
                    .remote
                    .absorb_failure("uploading entries to the server", e)
                {
                    report.error = Some(fatal);
                }
            }
        }
        batch.clear();
    };
    for frame in frames {
        batch_bytes += frame.entry_bytes.len() + 512;
        batch.push(frame);
        if batch_bytes >= tier.max_upload_bytes {
            flush(&mut batch, &mut report);
            batch_bytes = 0;
        }
    }
    flush(&mut batch, &mut report);
    report
}

fn store_local(cache: &LocalCache, key: &KeyDigest, entry: &Entry) {
    if let Err(e) = cache.put(key, entry) {
        eprintln!(
            "pycache: warning: could not store an entry in the local cache {}: {e}",
            cache.root().display()
        );
    }
}

/// What emitting a file needs besides the file.
struct EmitContext<'a, 'b> {
    cfg: &'a EngineConfig<'b>,
    pool: &'a WorkerPool,
    job_keys: &'a HashMap<u64, CacheKey>,
    uploads: Option<&'a crossbeam_channel::Sender<Frame>>,
    local_stores: Option<&'a crossbeam_channel::Sender<(KeyDigest, Arc<Entry>)>>,
}

fn emit_file(
    task: &FileTask,
    source: &Option<SourceInfo>,
    levels: &mut [Pending],
    ctx: &EmitContext<'_, '_>,
    resolved: &mut HashMap<u64, Resolved>,
    out: &mut Output,
    summary: &mut Summary,
) -> io::Result<bool> {
    let cfg = ctx.cfg;
    let mut written: Vec<&OsStr> = Vec::new();
    for (index, level) in task.levels.iter().enumerate() {
        if let Err(e) = pyc::check_target(&level.cfile) {
            out.error_raised(&task.fullname, e.class_name, &e.text)?;
            return Ok(false);
        }
        let slot = &mut levels[index.min(levels.len() - 1)];
        let entry = match slot {
            Pending::SourceError(e) => {
                let (class, text) = (os_error_class(e), os_error_text(e, &task.fullname));
                out.error_raised(&task.fullname, class, &text)?;
                return Ok(false);
            }
            Pending::Ready(entry) => Arc::clone(entry),
            Pending::Miss(_) => unreachable!("misses become jobs or hits before printing"),
            Pending::Job(id) => {
                let id = *id;
                while !resolved.contains_key(&id) {
                    let (done, outcome) = ctx.pool.results().recv().map_err(|_| {
                        io::Error::other("the compile workers stopped unexpectedly")
                    })?;
                    let r = absorb(done, outcome, ctx, summary);
                    resolved.insert(done, r);
                }
                match &resolved[&id] {
                    Resolved::Entry(e) => Arc::clone(e),
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
    ctx: &EmitContext<'_, '_>,
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
    let entry = Arc::new(entry);
    if let Some(key) = ctx.job_keys.get(&id) {
        if let Some(stores) = ctx.local_stores {
            let _ = stores.send((key.digest(), Arc::clone(&entry)));
        }
        if let Some(uploads) = ctx.uploads {
            let _ = uploads.send(Frame::new(key.clone(), &entry));
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
