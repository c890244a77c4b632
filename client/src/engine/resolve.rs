//! Stage 1: hash every source, build its keys, look them up in the local cache.
//!
//! The result is one [`FileRecord`] per file compileall would compile, in plan order, and one
//! [`Miss`] per distinct key the local cache lacks: two levels or files with the same key share
//! one compile job (a job's id is its index in [`Resolution::misses`]). Where results may be
//! relocated, files of identical source at other paths share it too ([`Slot::Shared`]): an
//! empty `__init__.py` or a vendored copy is compiled once a run.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::sync::Arc;

use pycache_proto::{CacheKey, Entry, KeyDigest};

use super::{Compiler, RunConfig, Summary};
use crate::compileall::plan::{Event, FileTask};
use crate::local_cache::{LocalCache, Lookup};
use crate::output::{Console, WarningKind};
use crate::pyc::InvalidationMode;
use crate::workers::CompileJob;

/// A source file as it was hashed.
#[derive(Debug)]
pub struct Source {
    /// Its metadata, taken right after reading it (as py_compile stats after reading).
    pub meta: fs::Metadata,
    /// Its bytes, kept only when a hash-based header needs them.
    pub bytes: Vec<u8>,
    /// blake3 of the bytes that were read.
    pub hash: [u8; 32],
}

/// Where one level of a file gets its entry.
#[derive(Debug, Clone)]
pub enum Slot {
    /// Found (local cache or server).
    Ready(Arc<Entry>),
    /// Waiting for the miss with this job id.
    Job(u64),
    /// The same source and level as the miss with this job id, at another path: its result,
    /// rewritten for this file's path (or, where that cannot be exact, a compile of its own).
    Shared(u64),
}

/// One file to emit.
#[derive(Debug)]
pub struct FileRecord {
    /// The source, or why it could not be read.
    pub source: Result<Source, io::Error>,
    /// One slot per level of the task (empty when the source could not be read).
    pub levels: Vec<Slot>,
}

/// A key the local cache lacks.
#[derive(Debug)]
pub struct Miss {
    /// The key the result is stored under.
    pub key: CacheKey,
    /// Its digest.
    pub digest: KeyDigest,
    /// The same key without dfile, when results may be relocated: a clean success is stored
    /// under it (with its dfile), so a tree elsewhere hits it.
    pub relocatable: Option<(CacheKey, KeyDigest)>,
    /// The source file, as compileall names it.
    pub fullname: std::ffi::OsString,
    /// The compile job, until it is handed to the workers.
    pub job: Option<CompileJob>,
}

/// One thing stage 1 found, in the order found: a miss always comes before the first record
/// that waits for it, and before its job is handed to the workers.
#[derive(Debug)]
pub enum Resolved {
    /// A new distinct miss; its job id is the number of misses before it.
    Miss(Miss),
    /// The next file's record.
    File(FileRecord),
}

/// Everything stage 1 found.
#[derive(Debug, Default)]
pub struct Resolution {
    /// One record per file task, in plan order.
    pub files: Vec<FileRecord>,
    /// Distinct misses; a job's id is its index here.
    pub misses: Vec<Miss>,
}

/// The file tasks of a plan, in order.
pub fn tasks(events: &[Event]) -> impl Iterator<Item = &FileTask> {
    events.iter().filter_map(|e| match e {
        Event::File(t) => Some(t),
        _ => None,
    })
}

/// Reads and hashes every source and looks its keys up in `local`; returns all it found (the
/// misses' jobs not handed on: a server is asked first).
pub fn resolve(
    events: &[Event],
    cfg: &RunConfig,
    local: Option<&LocalCache>,
    console: &Console,
    summary: &mut Summary,
) -> Resolution {
    let mut out = Resolution::default();
    let collect = &mut |found| match found {
        Resolved::Miss(miss) => out.misses.push(miss),
        Resolved::File(record) => out.files.push(record),
    };
    resolve_each(events, cfg, local, None, console, summary, collect);
    out
}

/// [`resolve`], handing each thing found to `found` as soon as it is known (so the emit stage
/// can run beside it). Misses' jobs go to `early` at once when given (no server to ask first).
pub fn resolve_each(
    events: &[Event],
    cfg: &RunConfig,
    local: Option<&LocalCache>,
    early: Option<&dyn Compiler>,
    console: &Console,
    summary: &mut Summary,
    found: &mut dyn FnMut(Resolved),
) {
    let mut misses = 0u64;
    let mut by_digest: std::collections::HashMap<KeyDigest, u64> = Default::default();
    // Misses by their key without dfile: the same source and level at another path.
    let mut by_source: std::collections::HashMap<KeyDigest, u64> = Default::default();
    for task in tasks(events) {
        let source = match read_source(&task.fullname, cfg.invalidation_mode) {
            Ok(source) => source,
            Err(e) => {
                found(Resolved::File(FileRecord {
                    source: Err(e),
                    levels: Vec::new(),
                }));
                continue;
            }
        };
        let mut levels = Vec::with_capacity(task.levels.len());
        for level in &task.levels {
            let (key, relocatable) = level_keys(task, level.effective, &source.hash, cfg);
            let digest = key.digest();
            if let Some(&id) = by_digest.get(&digest) {
                levels.push(Slot::Job(id));
                continue;
            }
            if let Some(&id) = relocatable.as_ref().and_then(|(_, d)| by_source.get(d)) {
                levels.push(Slot::Shared(id));
                continue;
            }
            let wanted = task.recorded_name().to_str();
            if let (Some((_, reloc_digest)), Some(cache), Some(wanted)) =
                (&relocatable, local, wanted)
            {
                let found = local_get(cache, reloc_digest, console, summary);
                if let Some((entry, moved)) = found.and_then(|e| relocated(e, cfg, wanted)) {
                    summary.local_hits += 1;
                    summary.relocated_hits += u64::from(moved);
                    levels.push(Slot::Ready(Arc::new(entry)));
                    continue;
                }
            }
            if let Some(entry) = local.and_then(|cache| local_get(cache, &digest, console, summary))
            {
                summary.local_hits += 1;
                levels.push(Slot::Ready(Arc::new(entry)));
                continue;
            }
            let id = misses;
            misses += 1;
            let job = CompileJob {
                id,
                source: task.fullname.clone(),
                dfile: task.dfile.clone(),
                optimize: level.opt_level as i32,
            };
            by_digest.insert(digest, id);
            if let Some((_, source_digest)) = &relocatable {
                by_source.insert(*source_digest, id);
            }
            let mut miss = Miss {
                key,
                digest,
                relocatable,
                fullname: task.fullname.clone(),
                job: Some(job),
            };
            // The miss is handed on before its job: a result never arrives ahead of its miss.
            let early_job = early.and_then(|_| miss.job.take());
            found(Resolved::Miss(miss));
            if let (Some(compiler), Some(job)) = (early, early_job) {
                compiler.submit(job);
            }
            levels.push(Slot::Job(id));
        }
        found(Resolved::File(FileRecord {
            source: Ok(source),
            levels,
        }));
    }
    tracing::debug!(misses, "local lookup done");
}

/// The keys one level of a file is looked up under: its own key, and the same key without
/// dfile when results may be relocated (and the path is text), with that key's digest.
pub fn level_keys(
    task: &FileTask,
    optimization: u8,
    source_hash: &[u8; 32],
    cfg: &RunConfig,
) -> (CacheKey, Option<(CacheKey, KeyDigest)>) {
    let key = CacheKey {
        source_hash: *source_hash,
        magic: cfg.magic,
        cache_tag: cfg.cache_tag.clone(),
        optimization,
        settings: cfg.settings.clone(),
        dfile: lossless_text(task.recorded_name()),
    };
    let relocatable = cfg
        .relocation
        .and(task.recorded_name().to_str())
        .map(|_| key.clone().without_dfile())
        .map(|k| {
            let d = k.digest();
            (k, d)
        });
    (key, relocatable)
}

/// One local lookup: a corrupt entry is counted and said (once a run), and is a miss.
fn local_get(
    cache: &LocalCache,
    digest: &KeyDigest,
    console: &Console,
    summary: &mut Summary,
) -> Option<Entry> {
    match cache.get(digest) {
        Lookup::Hit(entry) => Some(entry),
        Lookup::Corrupt(why) => {
            summary.corrupt_entries += 1;
            console.warn(
                WarningKind::CorruptLocalEntry,
                &format!("a local cache entry was corrupt and is recompiled ({why})"),
            );
            None
        }
        Lookup::Miss => None,
    }
}

/// A relocatable entry served for `wanted`: a clean success (no warnings, whose text would
/// name the old path) recording its dfile, rewritten when that dfile is another path. `None`
/// when it cannot be served exactly (then the key with dfile decides). The flag says whether
/// the body was rewritten.
pub fn relocated(entry: Entry, cfg: &RunConfig, wanted: &str) -> Option<(Entry, bool)> {
    match relocation(&entry, cfg, wanted)? {
        Relocation::Same => Some((entry, false)),
        Relocation::Moved(moved) => Some((moved, true)),
    }
}

/// What serving a relocatable entry at another path takes.
pub enum Relocation {
    /// Nothing: it was compiled at that path.
    Same,
    /// Its body rewritten for the new path. The rewrite parsed the whole body in the target's
    /// format, so the entry it came from is proven one whole code object.
    Moved(Entry),
}

/// [`relocated`] without taking the entry (a fetched entry is also kept as it came).
pub fn relocation(entry: &Entry, cfg: &RunConfig, wanted: &str) -> Option<Relocation> {
    let version = cfg.relocation?;
    let recorded = entry.dfile.as_deref()?;
    if !entry.warnings.is_empty() {
        return None;
    }
    let pycache_proto::Outcome::Compiled { body } = &entry.outcome else {
        return None;
    };
    if recorded == wanted {
        return Some(Relocation::Same);
    }
    match crate::marshal::relocate(body, version, recorded, wanted) {
        Ok(body) => Some(Relocation::Moved(
            Entry::compiled(body, String::new()).with_dfile(wanted.to_owned()),
        )),
        Err(why) => {
            tracing::debug!(%why, recorded, wanted, "an entry could not be relocated");
            None
        }
    }
}

/// Reads and hashes one source (compileall's `fullname`); the bytes are dropped unless a
/// hash-based header needs them.
pub fn read_source(path: &OsStr, mode: InvalidationMode) -> io::Result<Source> {
    use std::io::Read as _;
    let mut file = fs::File::open(path)?;
    // Read into a buffer that grows, not one sized by a stat first: the stat that counts is
    // the one after reading, and one stat a file is enough.
    let mut bytes = vec![0u8; 32 * 1024];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            bytes.resize(len * 2, 0);
        }
        match file.read(&mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(len);
    // The stat of the file that was read, taken after reading it.
    let meta = file.metadata()?;
    let hash = *blake3::hash(&bytes).as_bytes();
    let bytes = match mode {
        // Timestamp headers need only the metadata; don't hold every source in memory.
        InvalidationMode::Timestamp => Vec::new(),
        _ => bytes,
    };
    Ok(Source { meta, bytes, hash })
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
