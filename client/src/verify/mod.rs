//! `verify`'s audit: what the caches would serve for a tree, recompiled and compared.
//!
//! Each tier is checked on its own: for every level of every file, the local cache's entry and
//! the server's entry (under the file's own key, and under its relocatable key rewritten for
//! the file's path, as a hit would be) are compared with what the target interpreter's workers
//! compile now, through the same path as a miss. Equal bytes pass; differing bytes pass when
//! the interpreter finds equal code objects; a stored failure passes when the compile fails
//! with the same message. Nothing is written: no .pyc file, no cache entry.

mod code_equal;

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use pycache_proto::{Entry, KeyDigest, Outcome};
use serde::Serialize;

pub use code_equal::code_equal;

use crate::engine::resolve::{level_keys, read_source, relocated, tasks};
use crate::engine::RunConfig;
use crate::interpreter::Interpreter;
use crate::local_cache::{LocalCache, Lookup};
use crate::output::{Console, WarningKind};
use crate::pyc::InvalidationMode;
use crate::remote::{Rejected, RemoteTier};
use crate::workers::{CompileJob, CompileOutcome, WorkerPool};

/// A cache tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The local cache.
    Local,
    /// The server.
    Server,
}

impl Tier {
    /// Its name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Local => "local",
            Tier::Server => "server",
        }
    }
}

/// How one served entry compared with the fresh compile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// The same bytes.
    BytesEqual,
    /// Other bytes, equal code objects (process history, DESIGN §6).
    CodeEqual,
    /// A stored failure, and the compile fails with the same message.
    SameFailure,
    /// Anything else: the entry is not what this file compiles to.
    Mismatch(String),
    /// The file could not be compiled to compare with (it changed, a worker was lost).
    Unverified(String),
}

impl Verdict {
    /// Whether the entry passed.
    pub fn passed(&self) -> bool {
        matches!(
            self,
            Verdict::BytesEqual | Verdict::CodeEqual | Verdict::SameFailure
        )
    }

    /// A few words for a person.
    pub fn describe(&self) -> String {
        match self {
            Verdict::BytesEqual => "bytes equal".into(),
            Verdict::CodeEqual => "bytes differ, code equal".into(),
            Verdict::SameFailure => "the same compile error".into(),
            Verdict::Mismatch(why) | Verdict::Unverified(why) => why.clone(),
        }
    }
}

/// One served entry, checked.
#[derive(Clone, Debug, Serialize)]
pub struct Checked {
    /// The source, as the walk names it.
    pub file: String,
    /// Where the entry came from.
    pub tier: Tier,
    /// The key digest it is stored under.
    pub key: KeyDigest,
    /// The verdict (`verdict` and `reason` in JSON).
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// What an audit found.
#[derive(Debug, Default)]
pub struct Audit {
    /// Source files read.
    pub files: u64,
    /// Distinct entries checked per tier.
    pub entries: BTreeMap<Tier, u64>,
    /// Every check, in walk order (local before server for a file).
    pub checked: Vec<Checked>,
    /// Files that could not be read.
    pub unreadable: Vec<String>,
}

/// What an audit works with.
pub struct AuditInput<'a> {
    /// The run's values from the interpreter.
    pub cfg: &'a RunConfig,
    /// The target interpreter (for code-object equality).
    pub interpreter: &'a Interpreter,
    /// The local cache, unless disabled.
    pub local: Option<&'a LocalCache>,
    /// The server, when one is configured.
    pub remote: Option<&'a RemoteTier>,
    /// The compile workers.
    pub pool: &'a WorkerPool,
    /// Where warnings go.
    pub console: &'a Console,
}

/// A served entry waiting for its file's compile.
struct Served {
    file: String,
    tier: Tier,
    key: KeyDigest,
    /// `None`: the server's frame failed its digest.
    entry: Option<Entry>,
    job: usize,
}

/// A server lookup: the key, which job it is compared with, and the path a relocatable entry
/// is rewritten for.
struct Ask {
    key: KeyDigest,
    file: String,
    job: usize,
    relocate_to: Option<String>,
}

/// Audits the files of `events`.
pub fn audit(events: &[crate::compileall::plan::Event], input: &AuditInput<'_>) -> Result<Audit> {
    let cfg = input.cfg;
    let mut audit = Audit::default();
    let mut served: Vec<Served> = Vec::new();
    let mut asks: Vec<Ask> = Vec::new();
    let mut jobs: Vec<(CompileJob, [u8; 32])> = Vec::new();
    let mut job_of: HashMap<KeyDigest, usize> = HashMap::new();
    for task in tasks(events) {
        let file = crate::output::escape_replayed(&task.fullname.to_string_lossy()).into_owned();
        let source = match read_source(&task.fullname, InvalidationMode::Timestamp) {
            Ok(source) => source,
            Err(e) => {
                audit.unreadable.push(format!("{file}: {e}"));
                continue;
            }
        };
        audit.files += 1;
        for level in &task.levels {
            let (key, relocatable) = level_keys(task, level.effective, &source.hash, cfg);
            let own = key.digest();
            let job = *job_of.entry(own).or_insert_with(|| {
                let job = CompileJob {
                    id: jobs.len() as u64,
                    source: task.fullname.clone(),
                    dfile: task.dfile.clone(),
                    optimize: level.opt_level as i32,
                };
                jobs.push((job, source.hash));
                jobs.len() - 1
            });
            let wanted = task.recorded_name().to_str().map(str::to_owned);
            let lookups = relocatable
                .map(|(_, d)| (d, wanted.clone()))
                .into_iter()
                .chain([(own, None)]);
            for (digest, relocate_to) in lookups {
                if let Some(cache) = input.local {
                    let entry = match cache.get(&digest) {
                        Lookup::Hit(entry) => Some(entry),
                        Lookup::Miss => None,
                        Lookup::Corrupt(why) => {
                            input.console.warn(
                                WarningKind::CorruptLocalEntry,
                                &format!(
                                    "a local cache entry was corrupt and has been removed ({why})"
                                ),
                            );
                            None
                        }
                    };
                    if let Some(entry) = entry.and_then(|e| as_served(e, cfg, &relocate_to)) {
                        served.push(Served {
                            file: file.clone(),
                            tier: Tier::Local,
                            key: digest,
                            entry: Some(entry),
                            job,
                        });
                    }
                }
                if input.remote.is_some() {
                    asks.push(Ask {
                        key: digest,
                        file: file.clone(),
                        job,
                        relocate_to,
                    });
                }
            }
        }
    }
    if let Some(remote) = input.remote {
        ask_server(remote, cfg, &asks, &mut served)?;
    }
    compare_all(input, &jobs, served, &mut audit)?;
    Ok(audit)
}

/// The entry a hit would serve: relocated to `relocate_to` for a relocatable key (`None` when
/// a reader would not use it), as it is otherwise.
fn as_served(entry: Entry, cfg: &RunConfig, relocate_to: &Option<String>) -> Option<Entry> {
    match relocate_to {
        Some(wanted) => relocated(entry, cfg, wanted).map(|(entry, _)| entry),
        None => Some(entry),
    }
}

/// One batched lookup at the server for every ask; what it has becomes served entries.
fn ask_server(
    remote: &RemoteTier,
    cfg: &RunConfig,
    asks: &[Ask],
    served: &mut Vec<Served>,
) -> Result<()> {
    let mut keys: Vec<KeyDigest> = Vec::new();
    let mut owners: HashMap<KeyDigest, Vec<usize>> = HashMap::new();
    for (i, ask) in asks.iter().enumerate() {
        let owners = owners.entry(ask.key).or_default();
        if owners.is_empty() {
            keys.push(ask.key);
        }
        owners.push(i);
    }
    remote.fetch_each(&keys, &mut |key, entry| {
        for &i in owners.get(&key).into_iter().flatten() {
            let ask = &asks[i];
            let entry = match &entry {
                // A frame that fails its digest is checked (and fails): it is what is stored.
                Err(Rejected::Corrupt) => None,
                // With trusted keys set, an entry no trusted key signed is never served.
                Err(Rejected::Untrusted) => continue,
                Ok(entry) => match as_served(entry.clone(), cfg, &ask.relocate_to) {
                    Some(entry) => Some(entry),
                    None => continue,
                },
            };
            served.push(Served {
                file: ask.file.clone(),
                tier: Tier::Server,
                key,
                entry,
                job: ask.job,
            });
        }
    })?;
    Ok(())
}

/// Compiles every file something was served for and gives each served entry its verdict.
fn compare_all(
    input: &AuditInput<'_>,
    jobs: &[(CompileJob, [u8; 32])],
    mut served: Vec<Served>,
    audit: &mut Audit,
) -> Result<()> {
    // Local before server for each file, files in walk order.
    served.sort_by_key(|s| (s.job, s.tier));
    let mut wanted: Vec<usize> = served.iter().map(|s| s.job).collect();
    wanted.dedup();
    for &job in &wanted {
        input.pool.submit(jobs[job].0.clone());
    }
    let mut outcomes: HashMap<usize, CompileOutcome> = HashMap::new();
    while outcomes.len() < wanted.len() {
        let Ok((id, outcome)) = input.pool.results().recv() else {
            anyhow::bail!("the compile workers stopped before every file was compiled");
        };
        outcomes.insert(id as usize, outcome);
    }
    let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(served.len());
    let mut pairs: Vec<(usize, &[u8], &[u8])> = Vec::new();
    for (i, s) in served.iter().enumerate() {
        let verdict = match compare(s, &outcomes[&s.job], &jobs[s.job].1, input.cfg) {
            Comparison::Decided(verdict) => Some(verdict),
            Comparison::CodeObjects(stored, fresh) => {
                pairs.push((i, stored, fresh));
                None
            }
        };
        verdicts.push(verdict);
    }
    let equal = code_equal_each(
        input.interpreter,
        &pairs.iter().map(|&(_, a, b)| (a, b)).collect::<Vec<_>>(),
    );
    for (&(i, _, _), same) in pairs.iter().zip(equal) {
        verdicts[i] = Some(match same {
            Ok(true) => Verdict::CodeEqual,
            Ok(false) => Verdict::Mismatch("a different code object".into()),
            Err(e) => Verdict::Mismatch(format!("the body could not be compared: {e:#}")),
        });
    }
    let mut counted: std::collections::HashSet<(Tier, KeyDigest)> = Default::default();
    for (s, verdict) in served.into_iter().zip(verdicts) {
        if counted.insert((s.tier, s.key)) {
            *audit.entries.entry(s.tier).or_default() += 1;
        }
        audit.checked.push(Checked {
            file: s.file,
            tier: s.tier,
            key: s.key,
            verdict: verdict.expect("every entry has a verdict"),
        });
    }
    Ok(())
}

/// What comparing bytes decides.
enum Comparison<'a> {
    /// The verdict.
    Decided(Verdict),
    /// The stored and the fresh body differ: their code objects decide.
    CodeObjects(&'a [u8], &'a [u8]),
}

/// The verdict of one served entry against the fresh compile, or the two bodies whose code
/// objects must be compared.
fn compare<'a>(
    served: &'a Served,
    fresh: &'a CompileOutcome,
    source_hash: &[u8; 32],
    cfg: &RunConfig,
) -> Comparison<'a> {
    let Some(entry) = &served.entry else {
        return Comparison::Decided(Verdict::Mismatch(
            "the server's frame fails its digest".into(),
        ));
    };
    let verdict = match (&entry.outcome, fresh) {
        (Outcome::Compiled { body: stored }, CompileOutcome::Compiled { body, read, .. }) => {
            if blake3::hash(&read.bytes).as_bytes() != source_hash {
                Verdict::Unverified("the source changed while it was verified".into())
            } else if stored == body {
                Verdict::BytesEqual
            } else if let Err(why) = whole_code_object(stored, cfg) {
                Verdict::Mismatch(format!("the body is not a whole code object ({why})"))
            } else {
                return Comparison::CodeObjects(stored, body);
            }
        }
        (Outcome::Failed { message: stored }, CompileOutcome::Failed { message, .. }) => {
            if stored == message {
                Verdict::SameFailure
            } else {
                Verdict::Mismatch("a stored compile error other than this file's".into())
            }
        }
        (Outcome::Failed { .. }, CompileOutcome::Compiled { .. }) => {
            Verdict::Mismatch("a stored compile error, but the file compiles".into())
        }
        (Outcome::Compiled { .. }, CompileOutcome::Failed { .. }) => {
            Verdict::Mismatch("a stored body, but the file does not compile".into())
        }
        (
            _,
            CompileOutcome::Raised {
                class_name, text, ..
            },
        ) => Verdict::Unverified(format!(
            "the file could not be compiled: {class_name}: {}",
            crate::output::escape_replayed(text)
        )),
        (_, CompileOutcome::WorkerLost { message }) => Verdict::Unverified(message.clone()),
    };
    Comparison::Decided(verdict)
}

/// Whether `body` parses completely as one code object in the target's marshal format (a
/// loader ignores trailing bytes, so equal code objects alone would not say it).
fn whole_code_object(body: &[u8], cfg: &RunConfig) -> Result<(), String> {
    match cfg.body_format {
        Some(format) => crate::marshal::check_code_body(body, format).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// [`code_equal`] for all pairs in one run; when that run fails (a hostile body can crash a
/// loader), pair by pair, so one bad body does not hide the verdicts of the others.
fn code_equal_each(interp: &Interpreter, pairs: &[(&[u8], &[u8])]) -> Vec<Result<bool>> {
    match code_equal(interp, pairs) {
        Ok(verdicts) => verdicts.into_iter().map(Ok).collect(),
        Err(e) if pairs.len() == 1 => vec![Err(e)],
        Err(_) => pairs
            .iter()
            .map(|pair| code_equal(interp, std::slice::from_ref(pair)).map(|v| v[0]))
            .collect(),
    }
}
