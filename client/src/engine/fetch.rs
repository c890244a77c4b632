//! Stage 2: one batched lookup at the server for everything the local cache lacks, streamed.
//!
//! The lookup runs on its own thread while the emit stage writes files: each miss is announced
//! as soon as the pack says what it is — a hit (its entry, relocated when it was compiled at
//! another path) or absent, when a later key's frame (the server answers in request order) or
//! the pack's end has passed it; an absent miss goes to the workers at once. So files are
//! written while the pack is still arriving, and compiles start before it ends. Every entry
//! found goes on to the local-cache sink.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use pycache_proto::{Entry, KeyDigest, Outcome};

use super::resolve::{relocated, Resolution};
use super::sinks::Sinks;
use super::{Compiler, RunConfig};
use crate::remote::{Rejected, RemoteTier};
use crate::workers::CompileJob;

/// What the server said about one miss: its entry, or `None` (compiling).
pub type Announcement = (u64, Option<Arc<Entry>>);

/// A miss the server is asked for.
#[derive(Debug)]
pub struct Asked {
    id: u64,
    own: KeyDigest,
    relocatable: Option<KeyDigest>,
    dfile: String,
    job: CompileJob,
    resolved: bool,
}

/// What the lookup did.
#[derive(Debug, Default)]
pub struct FetchReport {
    /// Misses the server had.
    pub remote_hits: u64,
    /// Of those, entries compiled at another path and rewritten.
    pub relocated_hits: u64,
    /// Entries that failed their digest or whose body is not a whole code object.
    pub corrupt: u64,
    /// Entries no trusted key signed (only with trusted keys set).
    pub untrusted: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Until the last frame.
    pub seconds: f64,
    /// The server failed and `--require-server` makes that fatal.
    pub error: Option<anyhow::Error>,
}

/// Takes the misses not handed to the workers yet out of `resolution`, to be asked for.
pub fn take_asked(resolution: &mut Resolution) -> Vec<Asked> {
    resolution
        .misses
        .iter_mut()
        .enumerate()
        .filter_map(|(id, miss)| {
            Some(Asked {
                id: id as u64,
                own: miss.digest,
                relocatable: miss.relocatable.as_ref().map(|(_, d)| *d),
                dfile: miss.key.dfile.clone(),
                job: miss.job.take()?,
                resolved: false,
            })
        })
        .collect()
}

/// Asks `remote` for every miss in `asked` and announces each on `announce`; absent ones are
/// submitted to `compiler` first. Every miss is announced exactly once, whatever happens.
pub fn stream(
    mut asked: Vec<Asked>,
    remote: &RemoteTier,
    cfg: &RunConfig,
    compiler: &dyn Compiler,
    sinks: &Sinks,
    announce: &Sender<Announcement>,
) -> FetchReport {
    let started = Instant::now();
    let mut report = FetchReport::default();
    // The request: each miss's relocatable key (a tree elsewhere), then its own; once each.
    let mut keys: Vec<KeyDigest> = Vec::new();
    let mut position: HashMap<KeyDigest, usize> = HashMap::new();
    let mut owners: HashMap<KeyDigest, Vec<usize>> = HashMap::new();
    // One lookup per miss, its keys the alternatives: the server counts it once.
    let lookups: Vec<Vec<KeyDigest>> = asked
        .iter()
        .map(|a| a.relocatable.into_iter().chain([a.own]).collect())
        .collect();
    for (i, a) in asked.iter().enumerate() {
        for key in a.relocatable.into_iter().chain([a.own]) {
            position.entry(key).or_insert_with(|| {
                keys.push(key);
                keys.len() - 1
            });
            owners.entry(key).or_default().push(i);
        }
    }
    // Misses before `cursor` are all announced.
    let mut cursor = 0;
    let mut on_frame = |key: KeyDigest, entry: Result<Entry, Rejected>| {
        let Some(&at) = position.get(&key) else {
            return;
        };
        let entry = match entry {
            Ok(entry) => Some(entry),
            Err(Rejected::Corrupt) => {
                report.corrupt += 1;
                None
            }
            Err(Rejected::Untrusted) => {
                report.untrusted += 1;
                None
            }
        };
        // A bad body or a failure is a miss: nothing of it is written or stored.
        let entry = entry.and_then(|entry| match usable(&entry, cfg) {
            Ok(()) => Some(entry),
            Err(Unusable::Failed) => {
                tracing::debug!(%key, "the server holds a failure; compiling locally");
                None
            }
            Err(Unusable::Body(why)) => {
                report.corrupt += 1;
                let dfile = owners
                    .get(&key)
                    .and_then(|o| o.first())
                    .map(|&i| asked[i].dfile.clone());
                remote.say_unusable(&key, dfile.as_deref(), &why);
                None
            }
        });
        if let Some(entry) = entry {
            let entry = Arc::new(entry);
            sinks.store_fetched(&key, &entry);
            for &i in owners.get(&key).into_iter().flatten() {
                let a = &mut asked[i];
                if a.resolved {
                    continue;
                }
                let hit = if a.relocatable == Some(key) {
                    relocated((*entry).clone(), cfg, &a.dfile).map(|(moved, rewritten)| {
                        report.relocated_hits += u64::from(rewritten);
                        Arc::new(moved)
                    })
                } else {
                    Some(Arc::clone(&entry))
                };
                if let Some(hit) = hit {
                    a.resolved = true;
                    report.remote_hits += 1;
                    let _ = announce.send((a.id, Some(hit)));
                }
            }
        }
        // Frames come in request order: a miss whose own key lies before this frame's is not
        // at the server.
        while cursor < asked.len() && (asked[cursor].resolved || position[&asked[cursor].own] < at)
        {
            absent(&mut asked[cursor], compiler, announce);
            cursor += 1;
        }
    };
    let interpreter = pycache_proto::api::interpreter_header(&cfg.cache_tag, &cfg.magic);
    match remote.fetch_lookups(&lookups, Some(&interpreter), &mut on_frame) {
        Ok(bytes) => report.bytes = bytes,
        Err(e) => report.error = Some(e),
    }
    for a in &mut asked[cursor..] {
        absent(a, compiler, announce);
    }
    if report.untrusted > 0 {
        remote.say_untrusted(report.untrusted);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Why an entry the server sent is not used.
#[derive(Debug)]
enum Unusable {
    /// A failed compile: a hint at most (a hostile writer could plant one to fail every
    /// reader's build), so the file is compiled here and this run's own result counts.
    Failed,
    /// A success whose body is not one whole code object for the target interpreter.
    Body(String),
}

/// Whether a server entry may become a .pyc: a success whose body parses completely as one
/// marshalled code object in the target's format (without a known format, one that at least
/// starts like a code object).
fn usable(entry: &Entry, cfg: &RunConfig) -> Result<(), Unusable> {
    let Outcome::Compiled { body } = &entry.outcome else {
        return Err(Unusable::Failed);
    };
    match cfg.body_format {
        Some(format) => {
            crate::marshal::check_code_body(body, format).map_err(|e| Unusable::Body(e.to_string()))
        }
        None if pycache_proto::entry::looks_like_code_object(body) => Ok(()),
        None => Err(Unusable::Body(
            "it does not start like a code object".into(),
        )),
    }
}

/// A miss the server does not have (or could not say): compiled, and announced as such.
fn absent(a: &mut Asked, compiler: &dyn Compiler, announce: &Sender<Announcement>) {
    if a.resolved {
        return;
    }
    a.resolved = true;
    compiler.submit(a.job.clone());
    let _ = announce.send((a.id, None));
}
