//! `pycache-client verify [PATH...]`: an operator's audit. Walks the tree as `sync` does,
//! recompiles what the local cache and the server would serve (`crate::verify`), says each
//! mismatch with its tier, key and, for the server, the entry's namespace and writer; with
//! `--purge-mismatches`, deletes them. Exit 0 when clean, 1 on any mismatch.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pycache_proto::api::{PurgeRequest, Scope};
use pycache_proto::KeyDigest;
use serde::Serialize;

use crate::cli::VerifyArgs;
use crate::commands::sync::{or_current_dir, plan_tree, TreeWalk};
use crate::engine::Style;
use crate::output::{human_bytes, is_closed_stdout};
use crate::remote::{EntryProvenance, RemoteConfig, RemoteTier};
use crate::session::Session;
use crate::verify::{audit, Audit, AuditInput, Checked, Tier, Verdict};

/// One line of the report: a check, with the server entry's provenance.
#[derive(Debug, Serialize)]
struct Finding<'a> {
    #[serde(flatten)]
    checked: &'a Checked,
    /// Where the server entry lives and who wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<&'a EntryProvenance>,
}

/// What `--purge-mismatches` removed.
#[derive(Debug, Serialize)]
struct Purged {
    tier: Tier,
    key: KeyDigest,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    /// Entries deleted (server) or 1 (local).
    entries: u64,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct VerifyReport<'a> {
    python: String,
    cache_tag: &'a str,
    clean: bool,
    files: u64,
    entries: &'a BTreeMap<Tier, u64>,
    passed: usize,
    code_equal: usize,
    mismatches: usize,
    unverified: usize,
    checked: Vec<Finding<'a>>,
    unreadable: &'a [String],
    purged: &'a [Purged],
    seconds: f64,
}

/// Runs verify; returns the exit status.
pub fn run(session: &Session, args: &VerifyArgs, started: Instant) -> Result<i32> {
    let settings = &session.settings;
    let paths = or_current_dir(&args.paths);
    let walk = TreeWalk {
        paths: &paths,
        exclude: &args.exclude,
        default_excludes: !args.no_default_excludes,
        optimize: &args.optimize,
        timestamp_pycs: true,
        force: true,
    };
    let planned = plan_tree(session, &walk)?;
    let cfg = session.run_config(
        Style::Sync {
            progress: false,
            errors: true,
        },
        session.default_invalidation_mode(),
        false,
    );
    // An audit that cannot ask the server it is configured with is no audit: failures are
    // errors here.
    let remote = match &settings.server {
        Some(url) => RemoteTier::connect(
            &RemoteConfig {
                require: true,
                ..session.remote_config(url)
            },
            &session.console,
        )?,
        None => None,
    };
    if let (true, Some(remote)) = (args.purge_mismatches, &remote) {
        if remote.info.scope != Some(Scope::Admin) {
            bail!(
                "--purge-mismatches deletes entries from the server {} and needs an admin token; the token given has {} scope (create one with `pycache-server token create --scope admin NAME` and pass it with --token or PYCACHE_TOKEN)",
                remote.url(),
                remote.info.scope.map_or("no", Scope::as_str)
            );
        }
    }
    let local = session.open_local_cache();
    let pool = session.worker_pool();
    let input = AuditInput {
        cfg: &cfg,
        interpreter: &session.interpreter,
        local: local.as_ref(),
        remote: remote.as_ref(),
        pool: &pool,
        console: &session.console,
    };
    let found = audit(&planned.events, &input);
    pool.shutdown();
    let found = found?;
    let provenance = server_provenance(&found, remote.as_ref(), session);
    let mut purged = Vec::new();
    if args.purge_mismatches {
        purged = purge(&found, &provenance, remote.as_ref(), local.as_ref())?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let count = |f: fn(&Verdict) -> bool| found.checked.iter().filter(|c| f(&c.verdict)).count();
    let mismatches = count(|v| matches!(v, Verdict::Mismatch(_)));
    let unverified = count(|v| matches!(v, Verdict::Unverified(_)));
    let clean = mismatches == 0 && unverified == 0 && found.unreadable.is_empty();
    let findings = found.checked.iter().map(|checked| Finding {
        checked,
        provenance: (checked.tier == Tier::Server)
            .then(|| provenance.get(&checked.key))
            .flatten(),
    });
    let console = &session.console;
    let mut lines = Vec::new();
    if args.json {
        let report = VerifyReport {
            python: session.interpreter.executable.display().to_string(),
            cache_tag: &session.interpreter.cache_tag,
            clean,
            files: found.files,
            entries: &found.entries,
            passed: count(Verdict::passed),
            code_equal: count(|v| *v == Verdict::CodeEqual),
            mismatches,
            unverified,
            checked: findings.collect(),
            unreadable: &found.unreadable,
            purged: &purged,
            seconds,
        };
        lines.push(serde_json::to_string_pretty(&report)?);
    } else {
        for finding in findings.filter(|f| args.verbose || !f.checked.verdict.passed()) {
            lines.push(finding_line(&finding));
        }
        for file in &found.unreadable {
            lines.push(format!("pycache: unreadable: {file}"));
        }
        for p in &purged {
            lines.push(purged_line(p));
        }
        let entries = |tier| found.entries.get(&tier).copied().unwrap_or(0);
        lines.push(format!(
            "pycache: verify: {} files, {} local entries and {} server entries checked: {mismatches} mismatches, {unverified} unverified; {seconds:.2}s",
            found.files,
            entries(Tier::Local),
            entries(Tier::Server),
        ));
    }
    let written = lines
        .iter()
        .try_for_each(|line| console.stdout_line(line))
        .and_then(|()| console.flush());
    match written {
        // A reader that stopped reading (`| head`) does not change the verdict.
        Err(e) if is_closed_stdout(&e) => {}
        other => other.context("could not write the report")?,
    }
    Ok(if clean { 0 } else { 1 })
}

/// One check for people: the file, the tier, the key and, for the server, where the entry
/// lives and who wrote it.
fn finding_line(finding: &Finding<'_>) -> String {
    let c = finding.checked;
    let label = match &c.verdict {
        Verdict::Mismatch(_) => "mismatch",
        Verdict::Unverified(_) => "unverified",
        _ => "ok",
    };
    let whence = match finding.provenance {
        Some(p) => format!(
            " (namespace {}, written by {})",
            p.namespace.as_deref().unwrap_or("unknown"),
            p.written_by.as_deref().unwrap_or("unknown")
        ),
        None => String::new(),
    };
    format!(
        "pycache: {label}: {}: {} entry {}{whence}: {}",
        c.file,
        c.tier.as_str(),
        c.key,
        c.verdict.describe()
    )
}

fn purged_line(p: &Purged) -> String {
    match (p.tier, &p.namespace) {
        (Tier::Server, Some(namespace)) => format!(
            "pycache: purged: server entry {} from namespace {namespace} ({} entries)",
            p.key, p.entries
        ),
        _ => format!("pycache: purged: {} entry {}", p.tier.as_str(), p.key),
    }
}

/// The namespace and writer of every mismatching server entry, from a single-entry `GET` each
/// (a failure is said and leaves the entry's provenance unknown).
fn server_provenance(
    found: &Audit,
    remote: Option<&RemoteTier>,
    session: &Session,
) -> HashMap<KeyDigest, EntryProvenance> {
    let mut out = HashMap::new();
    let Some(remote) = remote else { return out };
    for c in &found.checked {
        if c.tier != Tier::Server || c.verdict.passed() || out.contains_key(&c.key) {
            continue;
        }
        match remote.client.entry_provenance(&c.key) {
            Ok(Some(p)) => {
                out.insert(c.key, p);
            }
            Ok(None) => {}
            Err(e) => session.console.stderr_text(&format!(
                "pycache: warning: could not ask the server who wrote entry {}: {e}\n",
                c.key
            )),
        }
    }
    out
}

/// Deletes each mismatching entry once: from the server (by key and namespace) and from the
/// local cache. Entries only unverified are kept.
fn purge(
    found: &Audit,
    provenance: &HashMap<KeyDigest, EntryProvenance>,
    remote: Option<&RemoteTier>,
    local: Option<&crate::local_cache::LocalCache>,
) -> Result<Vec<Purged>> {
    let mut done = std::collections::HashSet::new();
    let mut purged = Vec::new();
    for c in &found.checked {
        if !matches!(c.verdict, Verdict::Mismatch(_)) || !done.insert((c.tier, c.key)) {
            continue;
        }
        match (c.tier, remote, local) {
            (Tier::Server, Some(remote), _) => {
                // Without its namespace a purge by key would reach every namespace.
                let Some(namespace) = provenance.get(&c.key).and_then(|p| p.namespace.clone())
                else {
                    continue;
                };
                let answer = remote
                    .client
                    .purge(&PurgeRequest {
                        written_by: None,
                        namespace: Some(namespace.clone()),
                        key: Some(c.key),
                        since: None,
                    })
                    .with_context(|| format!("could not purge server entry {}", c.key))?;
                tracing::debug!(key = %c.key, bytes = %human_bytes(answer.bytes), "purged");
                purged.push(Purged {
                    tier: Tier::Server,
                    key: c.key,
                    namespace: Some(namespace),
                    entries: answer.entries,
                });
            }
            (Tier::Local, _, Some(cache)) => {
                let removed = cache
                    .remove(&c.key)
                    .with_context(|| format!("could not remove local entry {}", c.key))?;
                if removed {
                    purged.push(Purged {
                        tier: Tier::Local,
                        key: c.key,
                        namespace: None,
                        entries: 1,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(purged)
}
