//! Stage 2: one batched lookup at the server for everything the local cache lacks, streamed.
//!
//! The lookup runs on its own thread while the emit stage writes files: each miss is announced
//! as soon as the pack says what it is — a hit (its entry, relocated when it was compiled at
//! another path) or absent, when a later key's frame (the server answers in request order) or
//! the pack's end has passed it; an absent miss goes to the workers at once. So files are
//! written while the pack is still arriving, and compiles start before it ends. Every entry
//! found goes on to the local-cache sink.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use pycache_proto::{Entry, KeyDigest, Outcome};

use super::resolve::{relocation, Relocation, Resolution};
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

impl FetchReport {
    /// Adds what another part of a split lookup did (its time: the longer of the two).
    pub fn merge(&mut self, other: FetchReport) {
        self.remote_hits += other.remote_hits;
        self.relocated_hits += other.relocated_hits;
        self.corrupt += other.corrupt;
        self.untrusted += other.untrusted;
        self.bytes += other.bytes;
        self.seconds = self.seconds.max(other.seconds);
        if self.error.is_none() {
            self.error = other.error;
        }
    }
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

/// Misses per stripe of a split lookup: consecutive misses (files of one directory, written
/// one after another) stay in one part.
const STRIPE: usize = 64;

/// Splits the misses into at most `parts` lookups run side by side, each its own request on
/// its own thread: decoding, checking and relocating entries is most of a warm run's work, and
/// one thread cannot keep up with the server. Stripes of [`STRIPE`] misses alternate between
/// the parts, so each part's answers come in about the order the files are written; misses
/// that share a key (identical sources) stay in one part, where the key is asked for once.
pub fn split(asked: Vec<Asked>, parts: usize) -> Vec<Vec<Asked>> {
    let parts = parts.clamp(1, asked.len().div_ceil(STRIPE).max(1));
    if parts == 1 {
        return vec![asked];
    }
    let mut part_of_key: HashMap<KeyDigest, usize> = HashMap::new();
    let mut split: Vec<Vec<Asked>> = (0..parts).map(|_| Vec::new()).collect();
    for (i, a) in asked.into_iter().enumerate() {
        let group = a.relocatable.unwrap_or(a.own);
        let part = *part_of_key.entry(group).or_insert((i / STRIPE) % parts);
        split[part].push(a);
    }
    split
}

/// Asks `remote` for every miss in `asked` and announces each on `announce`; absent ones are
/// submitted to `compiler` first. Every miss is announced exactly once, whatever happens.
pub fn stream(
    asked: Vec<Asked>,
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
    // Misses before `cursor` are all announced. Behind a lock: past the patience the waiting
    // thread compiles every miss not answered yet (see `waiting_shown`).
    let misses = Mutex::new(Misses { asked, cursor: 0 });
    let mut on_frame = |key: KeyDigest, entry: Result<Entry, Rejected>| {
        let Some(&at) = position.get(&key) else {
            return;
        };
        let mut misses = misses.lock().unwrap_or_else(PoisonError::into_inner);
        let Misses { asked, cursor } = &mut *misses;
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
        if let Some(entry) = entry {
            // Each owner's hit: the entry as it came, or rewritten for the owner's path. A
            // rewrite parses the whole body in the target's format, so a body rewritten at
            // least once needs no separate check (that check is a second parse of every body).
            let mut hits = Vec::new();
            let mut proven = false;
            for &i in owners.get(&key).into_iter().flatten() {
                let a = &asked[i];
                if a.resolved {
                    continue;
                }
                if a.relocatable != Some(key) {
                    hits.push((i, None));
                    continue;
                }
                match relocation(&entry, cfg, &a.dfile) {
                    Some(Relocation::Same) => hits.push((i, None)),
                    Some(Relocation::Moved(moved)) => {
                        proven = true;
                        hits.push((i, Some(Arc::new(moved))));
                    }
                    None => {}
                }
            }
            // A bad body or a failure is a miss: nothing of it is written or stored.
            let checked = if proven { Ok(()) } else { usable(&entry, cfg) };
            match checked {
                Ok(()) => {
                    let entry = Arc::new(entry);
                    sinks.store_fetched(&key, &entry);
                    for (i, moved) in hits {
                        let a = &mut asked[i];
                        report.relocated_hits += u64::from(moved.is_some());
                        a.resolved = true;
                        report.remote_hits += 1;
                        let hit = moved.unwrap_or_else(|| Arc::clone(&entry));
                        let _ = announce.send((a.id, Some(hit)));
                    }
                }
                Err(Unusable::Failed) => {
                    tracing::debug!(%key, "the server holds a failure; compiling locally");
                }
                Err(Unusable::Body(why)) => {
                    report.corrupt += 1;
                    let dfile = owners
                        .get(&key)
                        .and_then(|o| o.first())
                        .map(|&i| asked[i].dfile.clone());
                    remote.say_unusable(&key, dfile.as_deref(), &why);
                }
            }
        }
        // Frames come in request order: a miss whose own key lies before this frame's is not
        // at the server.
        while *cursor < asked.len()
            && (asked[*cursor].resolved || position[&asked[*cursor].own] < at)
        {
            absent(&mut asked[*cursor], compiler, announce);
            *cursor += 1;
        }
    };
    let interpreter = pycache_proto::api::interpreter_header(&cfg.cache_tag, &cfg.magic);
    let fetched = std::thread::scope(|scope| {
        let answered = waiting_shown(scope, remote, || {
            let mut misses = misses.lock().unwrap_or_else(PoisonError::into_inner);
            misses.give_up(compiler, announce);
        });
        let mut answered = Some(answered);
        let mut on_frame = |key, entry| {
            answered.take();
            on_frame(key, entry);
        };
        remote.fetch_lookups(&lookups, Some(&interpreter), &mut on_frame)
    });
    match fetched {
        Ok(bytes) => report.bytes = bytes,
        Err(e) => report.error = Some(e),
    }
    let mut misses = misses.into_inner().unwrap_or_else(PoisonError::into_inner);
    misses.give_up(compiler, announce);
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// The misses of one lookup, and how far they are announced.
struct Misses {
    asked: Vec<Asked>,
    /// Misses before it are all announced.
    cursor: usize,
}

impl Misses {
    /// Compiles every miss not announced yet: the server did not answer (in time).
    fn give_up(&mut self, compiler: &dyn Compiler, announce: &Sender<Announcement>) {
        for a in &mut self.asked[self.cursor..] {
            absent(a, compiler, announce);
        }
        self.cursor = self.asked.len();
    }
}

/// How long the lookup may go without a frame before the progress line says it is waiting.
const SLOW_ANSWER: Duration = Duration::from_secs(1);

/// Says on the progress line, from [`SLOW_ANSWER`] on until the returned sender is dropped
/// (the first frame arrived, or the lookup ended), that the run waits for the server; past the
/// server's patience (its connect timeout) runs `give_up` once, which compiles the misses while
/// the lookup is still out (an answer that comes later is kept in the local cache only).
fn waiting_shown<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    remote: &'scope RemoteTier,
    give_up: impl FnOnce() + Send + 'scope,
) -> Sender<()> {
    let (answered, waiting) = crossbeam_channel::bounded::<()>(0);
    let patience = remote.patience();
    scope.spawn(move || {
        let started = Instant::now();
        let mut shown = false;
        let mut give_up = Some(give_up);
        while let Err(RecvTimeoutError::Timeout) = waiting.recv_timeout(if shown {
            Duration::from_millis(500)
        } else {
            SLOW_ANSWER.min(patience)
        }) {
            shown = true;
            let waited = started.elapsed();
            let doing = if waited >= patience {
                if let Some(give_up) = give_up.take() {
                    tracing::debug!(?waited, "no answer from the server yet; compiling");
                    give_up();
                }
                "compiling meanwhile"
            } else {
                "waiting"
            };
            remote.console().progress_message(&format!(
                "(no answer from the server {} for {:.0}s: {doing})",
                remote.url(),
                waited.as_secs_f64(),
            ));
        }
        if shown {
            remote.console().progress_message("");
        }
    });
    answered
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
