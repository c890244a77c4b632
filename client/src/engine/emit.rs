//! Stage 4: the plan's events in compileall's order. Each file waits only for its own results;
//! its .pyc files are written as py_compile writes them (hard links for `--hardlink-dupes`)
//! and its lines printed as compileall prints them.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use anyhow::Result;
use crossbeam_channel::{Receiver, TryRecvError};
use pycache_proto::{Entry, Outcome};

use super::fetch::Announcement;
use super::resolve::{level_keys, relocated, FileRecord, Miss, Resolution, Resolved, Slot, Source};
use super::sinks::Sinks;
use super::writes;
use super::{Compiler, RunConfig, Style, Summary};
use crate::compileall::plan::{Event, FileTask, Level};
use crate::output::{escape_replayed, Console, WarningKind};
use crate::pyc;
use crate::pyrepr::{backslashreplace, os_error_class, os_error_text, repr};
use crate::workers::{CompileJob, CompileOutcome, SourceRead};

/// A finished compile job.
enum Finished {
    /// An entry; `changed` holds what was really compiled when the source changed between
    /// hashing and compiling (the entry was then not stored anywhere).
    Entry {
        entry: Arc<Entry>,
        changed: Option<SourceRead>,
    },
    Raised(Raised),
}

/// A compile that raised (an `OSError` reading the source, a lost worker): compileall prints
/// `<class_name>: <text>`.
#[derive(Clone)]
struct Raised {
    class_name: String,
    text: String,
    warnings: String,
}

/// A level's entry as the emit stage gets it.
struct Got {
    entry: Arc<Entry>,
    /// What was really compiled, when the source changed between hashing and compiling.
    changed: Option<SourceRead>,
    /// The entry came from a cache, so its text is escaped when shown.
    replayed: bool,
}

/// What a level gets: an entry, or the exception its compile raised.
enum Obtained {
    Entry(Got),
    Raised(Raised),
}

/// Ids of compile jobs the emit stage adds (a file that shares a result that cannot be
/// rewritten for its path is compiled on its own): far above any id of stage 1.
const LATE_IDS: u64 = 1 << 48;

/// Where results come from and where new ones go.
pub struct Feeds<'a> {
    /// The compile workers.
    pub compiler: &'a dyn Compiler,
    /// The local cache and the upload.
    pub sinks: &'a Sinks,
    /// The streaming server lookup's announcements, when there is one.
    pub announced: Option<Receiver<Announcement>>,
}

/// What stage 1 found, as the emit stage takes it.
pub enum Found {
    /// Everything, resolved before emitting started.
    All(Resolution),
    /// Arriving from the resolve stage, which runs beside emit.
    Streaming(Receiver<Resolved>),
}

/// Stage 1's findings as received so far.
struct Findings {
    /// Still receiving from the resolve stage.
    source: Option<Receiver<Resolved>>,
    misses: Vec<Miss>,
    files: VecDeque<FileRecord>,
    /// Slots still to emit per job, counted as records are received: a result is dropped
    /// once its last file is written (and no further record can ask for it), so a run holds
    /// only the results that wait for their turn, not every compile.
    uses: HashMap<u64, usize>,
}

impl Findings {
    fn new(found: Found) -> Findings {
        let mut findings = Findings {
            source: None,
            misses: Vec::new(),
            files: VecDeque::new(),
            uses: HashMap::new(),
        };
        match found {
            Found::All(resolution) => {
                findings.misses = resolution.misses;
                for record in resolution.files {
                    findings.receive(Resolved::File(record));
                }
            }
            Found::Streaming(rx) => findings.source = Some(rx),
        }
        findings
    }

    fn receive(&mut self, found: Resolved) {
        match found {
            Resolved::Miss(miss) => self.misses.push(miss),
            Resolved::File(record) => {
                for slot in &record.levels {
                    if let Slot::Job(id) | Slot::Shared(id) = slot {
                        *self.uses.entry(*id).or_default() += 1;
                    }
                }
                self.files.push_back(record);
            }
        }
    }

    /// Takes what has arrived (waiting for one item when `block`); returns whether the resolve
    /// stage just finished.
    fn pull(&mut self, block: bool) -> bool {
        while let Some(rx) = &self.source {
            let next = if block {
                rx.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                rx.try_recv()
            };
            match next {
                Ok(found) => {
                    self.receive(found);
                    if block {
                        return false;
                    }
                }
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => {
                    self.source = None;
                    return true;
                }
            }
        }
        false
    }

    fn complete(&self) -> bool {
        self.source.is_none()
    }
}

/// Collects worker results as they arrive, in any order, and hands each file its own.
struct Results<'a> {
    compiler: &'a dyn Compiler,
    console: &'a Console,
    findings: Findings,
    sinks: &'a Sinks,
    done: HashMap<u64, Finished>,
    /// What the streaming server lookup says about each job, when there is one.
    announced: Option<Receiver<Announcement>>,
    /// Announcements received: the server's entry, or `None` (the job is compiling).
    answers: HashMap<u64, Option<Arc<Entry>>>,
    /// The misses of jobs the emit stage added, by id.
    late: HashMap<u64, Miss>,
}

impl Results<'_> {
    /// Waits for job `id`, storing every result that arrives meanwhile.
    fn wait(&mut self, id: u64, summary: &mut Summary) -> io::Result<&Finished> {
        while !self.done.contains_key(&id) {
            let (job, outcome) = self
                .compiler
                .next_result()
                .ok_or_else(|| io::Error::other("the compile workers stopped unexpectedly"))?;
            let finished = self.absorb(job, outcome, summary);
            self.done.insert(job, finished);
        }
        Ok(&self.done[&id])
    }

    /// The server's entry for job `id`, if it has one (waiting for the lookup to say); `None`
    /// when the job is compiled.
    fn server_answer(&mut self, id: u64) -> io::Result<Option<Arc<Entry>>> {
        let Some(announced) = self.announced.as_ref().filter(|_| id < LATE_IDS) else {
            return Ok(None);
        };
        while !self.answers.contains_key(&id) {
            let (job, entry) = announced
                .recv()
                .map_err(|_| io::Error::other("the server lookup stopped unexpectedly"))?;
            self.answers.insert(job, entry);
        }
        Ok(self.answers[&id].clone())
    }

    /// The entry of job `id` (the server's, else the compile's), for one slot that waits for it.
    fn job_entry(&mut self, id: u64, summary: &mut Summary) -> io::Result<Obtained> {
        if let Some(entry) = self.server_answer(id)? {
            self.release(id);
            return Ok(Obtained::Entry(Got {
                entry,
                changed: None,
                replayed: true,
            }));
        }
        let obtained = match self.wait(id, summary)? {
            Finished::Entry { entry, changed } => Obtained::Entry(Got {
                entry: Arc::clone(entry),
                changed: changed.clone(),
                replayed: false,
            }),
            Finished::Raised(raised) => Obtained::Raised(raised.clone()),
        };
        self.release(id);
        Ok(obtained)
    }

    /// The entry of a level whose source and level job `id` has at another path: that job's
    /// clean result rewritten for this path (byte for byte what a compile here gives), else —
    /// a failure or warnings (whose text names the path), a source that changed, a rewrite
    /// that cannot be exact — a compile of its own.
    fn shared_entry(
        &mut self,
        id: u64,
        task: &FileTask,
        level: &Level,
        source: &Source,
        cfg: &RunConfig,
        summary: &mut Summary,
    ) -> io::Result<Obtained> {
        let origin = self.job_entry(id, summary)?;
        let recorded = self.miss(id).map(|m| m.key.dfile.clone());
        let moved = match (origin, recorded, task.recorded_name().to_str()) {
            (Obtained::Entry(got), Some(recorded), Some(wanted)) if got.changed.is_none() => {
                let entry = (*got.entry).clone().with_dfile(recorded);
                relocated(entry, cfg, wanted).map(|(entry, _)| (entry, got.replayed))
            }
            _ => None,
        };
        match moved {
            Some((entry, replayed)) => {
                if replayed {
                    summary.remote_hits += 1;
                    summary.relocated_hits += 1;
                } else {
                    summary.compiled += 1;
                    summary.shared += 1;
                }
                Ok(Obtained::Entry(Got {
                    entry: Arc::new(entry),
                    changed: None,
                    replayed,
                }))
            }
            None => {
                let id = self.compile_alone(task, level, source, cfg);
                self.job_entry(id, summary)
            }
        }
    }

    /// Submits a compile of one level of `task` as a job of its own; returns its id.
    fn compile_alone(
        &mut self,
        task: &FileTask,
        level: &Level,
        source: &Source,
        cfg: &RunConfig,
    ) -> u64 {
        let id = LATE_IDS + self.late.len() as u64;
        let (key, relocatable) = level_keys(task, level.effective, &source.hash, cfg);
        let job = CompileJob {
            id,
            source: task.fullname.clone(),
            dfile: task.dfile.clone(),
            optimize: level.opt_level as i32,
        };
        self.late.insert(
            id,
            Miss {
                digest: key.digest(),
                key,
                relocatable,
                fullname: task.fullname.clone(),
                job: None,
            },
        );
        *self.findings.uses.entry(id).or_default() += 1;
        self.compiler.submit(job);
        id
    }

    /// The next file's record (waiting for the resolve stage when it is behind).
    fn next_file(&mut self) -> Option<FileRecord> {
        loop {
            if let Some(record) = self.findings.files.pop_front() {
                return Some(record);
            }
            if self.findings.complete() {
                return None;
            }
            if self.findings.pull(true) {
                self.forget_unused();
            }
        }
    }

    /// The miss of job `id` (its miss always arrives before its result).
    fn miss(&mut self, id: u64) -> Option<&Miss> {
        while self.findings.misses.len() <= id as usize && !self.findings.complete() {
            if self.findings.pull(true) {
                self.forget_unused();
            }
        }
        self.findings.misses.get(id as usize)
    }

    /// One slot of job `id` has been emitted.
    fn release(&mut self, id: u64) {
        if self.findings.pull(false) {
            self.forget_unused();
        }
        if let Some(n) = self.findings.uses.get_mut(&id) {
            *n = n.saturating_sub(1);
            if *n == 0 && self.findings.complete() {
                self.findings.uses.remove(&id);
                self.done.remove(&id);
                self.answers.remove(&id);
            }
        }
    }

    /// Once every record is in, drops the results no record still waits for.
    fn forget_unused(&mut self) {
        let unused: Vec<u64> = self
            .findings
            .uses
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in unused {
            self.findings.uses.remove(&id);
            self.done.remove(&id);
            self.answers.remove(&id);
        }
    }

    /// Turns a worker result into an entry; deterministic ones are stored in the sinks.
    fn absorb(&mut self, job: u64, outcome: CompileOutcome, summary: &mut Summary) -> Finished {
        let miss = if job >= LATE_IDS {
            self.late.get(&job)
        } else {
            self.miss(job);
            self.findings.misses.get(job as usize)
        };
        let mut changed = None;
        let entry = match outcome {
            CompileOutcome::Compiled {
                body,
                warnings,
                read,
            } => {
                // The worker read the file again: store the result only if it compiled exactly
                // the bytes the key was hashed from.
                let hashed = miss.map(|m| m.key.source_hash);
                if hashed != Some(*blake3::hash(&read.bytes).as_bytes()) {
                    changed = Some(read);
                }
                Entry::compiled(body, warnings)
            }
            CompileOutcome::Failed { message, warnings } => Entry::failed(message, warnings),
            CompileOutcome::Raised {
                class_name,
                text,
                warnings,
            } => {
                return Finished::Raised(Raised {
                    class_name,
                    text,
                    warnings,
                })
            }
            CompileOutcome::WorkerLost { message } => {
                return Finished::Raised(Raised {
                    class_name: "pycache.WorkerLost".into(),
                    text: message,
                    warnings: String::new(),
                })
            }
        };
        summary.compiled += 1;
        let entry = Arc::new(entry);
        match (miss, &changed) {
            (Some(miss), None) => match &miss.relocatable {
                // A clean success serves any path: stored under the key without dfile, with
                // the dfile it was compiled with.
                Some((key, _)) if entry.is_success() && entry.warnings.is_empty() => {
                    let stored = (*entry).clone().with_dfile(miss.key.dfile.clone());
                    self.sinks.store(key, &Arc::new(stored));
                }
                _ => self.sinks.store(&miss.key, &entry),
            },
            (Some(miss), Some(_)) => self.console.warn(
                WarningKind::SourceChanged,
                &format!(
                    "{} changed while it was compiled; its result is not cached",
                    crate::pyrepr::repr(&miss.fullname)
                ),
            ),
            (None, _) => {}
        }
        Finished::Entry { entry, changed }
    }
}

/// Emits every event; returns compileall's `success`. An error is an output failure (a
/// closed stdout) or workers that vanished.
pub fn emit(
    events: &[Event],
    found: Found,
    cfg: &RunConfig,
    feeds: Feeds<'_>,
    console: &Console,
    summary: &mut Summary,
) -> Result<bool> {
    let Feeds {
        compiler,
        sinks,
        announced,
    } = feeds;
    if let Style::Sync { progress: true, .. } = cfg.style {
        console.start_progress(super::resolve::tasks(events).count() as u64);
    }
    let mut printer = Printer::new(cfg, console);
    let mut results = Results {
        compiler,
        console,
        findings: Findings::new(found),
        sinks,
        done: HashMap::new(),
        announced,
        answers: HashMap::new(),
        late: HashMap::new(),
    };
    // `sync` writes on threads of its own (see `writes`); compileall mode in line.
    let threads = match cfg.style {
        Style::Sync { .. } if !cfg.hardlink_dupes => {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
        }
        _ => 0,
    };
    let (written, success) = std::thread::scope(|scope| -> io::Result<_> {
        let mut tally = Tally {
            written: HashSet::new(),
            success: true,
            writes: writes::start(scope, threads),
        };
        for event in events {
            match event {
                Event::WalkLine(line) | Event::FileLine(line) => printer.line(line)?,
                Event::StopIfFailed => {
                    tally.settle(0, &mut printer, summary)?;
                    if !tally.success {
                        break;
                    }
                }
                Event::File(task) => {
                    let record = results
                        .next_file()
                        .expect("resolve makes one record per file task");
                    if task.revisit {
                        tally.settle(0, &mut printer, summary)?;
                    }
                    let earlier_wrote_it = task
                        .levels
                        .iter()
                        .all(|l| !l.planned_before || tally.written.contains(l.cfile.as_os_str()));
                    if task.revisit && earlier_wrote_it {
                        summary.up_to_date += 1;
                        console.tick();
                        continue;
                    }
                    printer.compiling(&task.fullname)?;
                    let emitted = emit_file(
                        task,
                        &record,
                        cfg,
                        &mut results,
                        &mut printer,
                        summary,
                        tally.writes.as_mut(),
                    )?;
                    let error =
                        (!emitted.ok).then(|| printer.last_error.take().unwrap_or_default());
                    match tally.writes.as_mut() {
                        Some(w) if !emitted.handed_over.is_empty() => {
                            w.file_done((task, error), emitted.handed_over);
                        }
                        _ => tally.file(task, error, summary),
                    }
                    console.tick();
                    tally.settle(writes::IN_FLIGHT - 1, &mut printer, summary)?;
                }
            }
        }
        tally.settle(0, &mut printer, summary)?;
        // (The writer threads end as `tally.writes` is dropped here.)
        Ok((tally.written, tally.success))
    })?;
    console.finish_progress();
    console.flush()?;
    // Temporary pycs of killed runs, in the directories this run wrote to.
    let dirs: HashSet<&std::path::Path> = written
        .iter()
        .filter_map(|c| std::path::Path::new(c).parent())
        .collect();
    for dir in dirs {
        crate::fsutil::sweep_abandoned(dir, pyc::temp_owner);
    }
    Ok(success)
}

/// What the files emitted so far came to.
struct Tally<'e> {
    /// The .pyc files of files that succeeded: a revisit finds them up to date.
    written: HashSet<&'e OsStr>,
    /// Whether every file succeeded (compileall's `success`).
    success: bool,
    /// The writer threads (`sync`), with the files whose writes are still out.
    writes: Option<writes::Writes<(&'e FileTask, Option<String>)>>,
}

impl<'e> Tally<'e> {
    /// Counts a file that is done: a success, or a failure with the error it reported (listed
    /// for `sync --json`).
    fn file(&mut self, task: &'e FileTask, error: Option<String>, summary: &mut Summary) {
        let Some(error) = error else {
            self.written
                .extend(task.levels.iter().map(|l| l.cfile.as_os_str()));
            return;
        };
        self.success = false;
        summary.errors += 1;
        summary.failed.push(super::FailedFile {
            path: String::from_utf8_lossy(task.fullname.as_encoded_bytes()).into_owned(),
            error,
        });
    }

    /// Counts each file whose writes are done, in plan order, reporting a write that failed;
    /// waits until at most `keep` writes are out.
    fn settle(
        &mut self,
        keep: usize,
        printer: &mut Printer<'_>,
        summary: &mut Summary,
    ) -> io::Result<()> {
        let Some(writes) = self.writes.as_mut() else {
            return Ok(());
        };
        for done in writes.settle(keep) {
            let (task, mut error) = done.file;
            summary.written += done.written as u64;
            // A file that failed before its writes has said its error already.
            if let (None, Some(e)) = (&error, done.error) {
                printer.error_raised(&task.fullname, e.class_name, &e.text)?;
                error = Some(printer.last_error.take().unwrap_or_default());
            }
            self.file(task, error, summary);
        }
        Ok(())
    }
}

/// What emitting one file did.
struct Emitted {
    /// Whether compileall would call it a success so far (its writes handed over may fail).
    ok: bool,
    /// Writes handed to the writer threads, whose outcome settles the file.
    handed_over: Vec<u64>,
}

/// Writes one file's .pyc files (or hands them to `writes`); says whether compileall would
/// call it a success.
fn emit_file(
    task: &FileTask,
    record: &FileRecord,
    cfg: &RunConfig,
    results: &mut Results<'_>,
    out: &mut Printer<'_>,
    summary: &mut Summary,
    writes: Option<&mut writes::Writes<(&FileTask, Option<String>)>>,
) -> io::Result<Emitted> {
    let mut handed_over = Vec::new();
    let ok = emit_levels(
        task,
        record,
        cfg,
        results,
        out,
        summary,
        writes,
        &mut handed_over,
    )?;
    Ok(Emitted { ok, handed_over })
}

/// [`emit_file`]'s work: false at the first failure.
#[allow(clippy::too_many_arguments)]
fn emit_levels(
    task: &FileTask,
    record: &FileRecord,
    cfg: &RunConfig,
    results: &mut Results<'_>,
    out: &mut Printer<'_>,
    summary: &mut Summary,
    mut writes: Option<&mut writes::Writes<(&FileTask, Option<String>)>>,
    handed_over: &mut Vec<u64>,
) -> io::Result<bool> {
    let source = match &record.source {
        Ok(source) => source,
        Err(e) => {
            let (class, text) = (os_error_class(e), os_error_text(e, &task.fullname));
            out.error_raised(&task.fullname, class, &text)?;
            return Ok(false);
        }
    };
    let mut written: Vec<&OsStr> = Vec::new();
    for (index, (level, slot)) in task.levels.iter().zip(&record.levels).enumerate() {
        // (No look when the walk saw no `__pycache__` there: nothing can be in the way.)
        let checked = if level.known_absent {
            Ok(())
        } else {
            pyc::check_target(&level.cfile)
        };
        if let Err(e) = checked {
            out.error_raised(&task.fullname, e.class_name, &e.text)?;
            return Ok(false);
        }
        // `replayed`: the entry came from a cache, so its text is escaped when shown.
        let (entry, changed, replayed) = match slot {
            Slot::Ready(entry) => (Arc::clone(entry), None, true),
            Slot::Job(id) => match results.job_entry(*id, summary)? {
                Obtained::Entry(got) => (got.entry, got.changed, got.replayed),
                Obtained::Raised(raised) => {
                    out.raised(&task.fullname, &raised)?;
                    return Ok(false);
                }
            },
            Slot::Shared(id) => {
                match results.shared_entry(*id, task, level, source, cfg, summary)? {
                    Obtained::Entry(got) => (got.entry, got.changed, got.replayed),
                    Obtained::Raised(raised) => {
                        out.raised(&task.fullname, &raised)?;
                        return Ok(false);
                    }
                }
            }
        };
        out.warnings(&shown(&entry.warnings, replayed));
        let body = match &entry.outcome {
            Outcome::Failed { message } => {
                let message = backslashreplace(message, &cfg.stdout_encoding);
                out.error_text(&task.fullname, &shown(&message, replayed))?;
                return Ok(false);
            }
            Outcome::Compiled { body } => body,
        };
        // The header describes the bytes that were compiled: those hashed, or, when the file
        // changed in between, what py_compile read and the stat it took after reading.
        let inputs = match &changed {
            None => pyc::HeaderInputs {
                magic: cfg.magic,
                siphash13: cfg.siphash13,
                source: &source.bytes,
                mtime: pyc::python_mtime(&source.meta),
                size: source.meta.size(),
            },
            Some(read) => pyc::HeaderInputs {
                magic: cfg.magic,
                siphash13: cfg.siphash13,
                source: &read.bytes,
                mtime: i64::from(read.mtime),
                size: u64::from(read.size),
            },
        };
        let header = pyc::header(cfg.invalidation_mode, &inputs);
        if let Some(writes) = writes.as_deref_mut() {
            let mode = source.meta.mode();
            handed_over.push(writes.write(&level.cfile, mode, header, Arc::clone(&entry)));
            continue;
        }
        if let Err(e) = pyc::write_pyc(&level.cfile, Some(source.meta.mode()), &header, body) {
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

/// An entry's text as shown: escaped when it was replayed from a cache (stored text must not
/// drive the terminal), verbatim when this run compiled it (compileall's own bytes).
fn shown(text: &str, replayed: bool) -> Cow<'_, str> {
    if replayed {
        escape_replayed(text)
    } else {
        Cow::Borrowed(text)
    }
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

/// compileall's lines (or sync's error reports), through the console.
struct Printer<'a> {
    style: Style,
    console: &'a Console,
    /// The last error reported (shown or not), for the summary's list of failed files.
    last_error: Option<String>,
}

impl<'a> Printer<'a> {
    fn new(cfg: &RunConfig, console: &'a Console) -> Self {
        Printer {
            style: cfg.style,
            console,
            last_error: None,
        }
    }

    fn quiet(&self) -> u32 {
        match self.style {
            Style::Compileall { quiet } => quiet,
            Style::Sync { errors: true, .. } => 1,
            Style::Sync { errors: false, .. } => 2,
        }
    }

    fn line(&mut self, line: &str) -> io::Result<()> {
        match self.style {
            Style::Compileall { .. } => self.console.stdout_line(line),
            Style::Sync { .. } => Ok(()),
        }
    }

    fn compiling(&mut self, fullname: &OsStr) -> io::Result<()> {
        if self.quiet() == 0 {
            self.line(&format!("Compiling {}...", repr(fullname)))?;
        }
        Ok(())
    }

    /// A compile's own warnings (`SyntaxWarning`, ...) on stderr, as given (escaped already
    /// when they come from a cache).
    fn warnings(&mut self, text: &str) {
        self.console.stderr_text(text);
    }

    /// compileall's error report: after `Compiling ...` (not quiet) the text follows `*** `;
    /// quiet, it names the file first.
    fn error_text(&mut self, fullname: &OsStr, text: &str) -> io::Result<()> {
        self.last_error = Some(text.to_owned());
        if self.quiet() >= 2 {
            return Ok(());
        }
        let prefix = match self.quiet() {
            0 => "*** ".to_owned(),
            _ => format!("*** Error compiling {}...\n", repr(fullname)),
        };
        match self.style {
            Style::Compileall { .. } => self.console.stdout_line(&format!("{prefix}{text}")),
            Style::Sync { .. } => {
                self.console.stderr_text(&format!("{prefix}{text}\n"));
                Ok(())
            }
        }
    }

    fn error_raised(&mut self, fullname: &OsStr, class_name: &str, text: &str) -> io::Result<()> {
        self.error_text(fullname, &format!("{class_name}: {text}"))
    }

    /// A compile that raised: its warnings, then compileall's report.
    fn raised(&mut self, fullname: &OsStr, raised: &Raised) -> io::Result<()> {
        self.warnings(&raised.warnings);
        self.error_raised(fullname, &raised.class_name, &raised.text)
    }
}
