//! The server tier: the HTTP client (`http`, one method per endpoint), the failure policy
//! (`policy`), and the batching of lookups and uploads by the limits the server advertises.

pub mod http;
pub mod policy;
mod zstd_frames;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use pycache_proto::api::{self, ServerInfo};
use pycache_proto::pack::Frame;
use pycache_proto::signature::{SigningKey, TrustedKey};
use pycache_proto::{Entry, KeyDigest};

pub use http::{check_transport, EntryProvenance, Rejected, RemoteError, ServerClient};
pub use policy::{FailurePolicy, MAX_FAILURES};

use crate::output::{escape_replayed, Console, WarningKind};
use crate::settings::{Secret, Transport};

/// How to reach the server: plain values from the settings.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// The server's URL.
    pub url: String,
    /// The bearer token.
    pub token: Option<Secret>,
    /// The namespace to write to and look in first; `None`: the token's own.
    pub namespace: Option<String>,
    /// Failures are errors (`--require-server`).
    pub require: bool,
    /// Deadline of one request.
    pub timeout: Duration,
    /// Bound of connecting and of the first answer (the server's limits).
    pub connect_timeout: Duration,
    /// CA certificates, and whether a token may go over plain http.
    pub transport: Transport,
    /// Signs every upload.
    pub signing_key: Option<Arc<SigningKey>>,
    /// A fetched entry is used only when one of these signed it (none: no check).
    pub trusted_keys: Arc<[TrustedKey]>,
}

/// A connected server, sized by its advertised limits, with this run's failure policy.
#[derive(Debug)]
pub struct RemoteTier {
    /// The HTTP client.
    pub client: ServerClient,
    /// What the server advertised.
    pub info: ServerInfo,
    /// The breaker.
    pub policy: FailurePolicy,
    /// Where warnings go.
    console: Console,
    /// Signs every upload.
    signing_key: Option<Arc<SigningKey>>,
    /// See [`RemoteTier::patience`].
    patience: Duration,
}

/// What the background uploader did.
#[derive(Debug, Default)]
pub struct UploadReport {
    /// Entries the server stored.
    pub stored: u64,
    /// Entries the server refused (conflicts included).
    pub refused: u64,
    /// Of those, entries whose key the namespace already holds with other bytes.
    pub conflicts: u64,
    /// Entries not sent because they are larger than the server accepts.
    pub too_large: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// A failure that must fail the run (`--require-server`).
    pub error: Option<anyhow::Error>,
}

/// What a failed upload means for the run, as its warning says.
pub const UPLOAD_FAILED_THEN: &str =
    "these results stay in the local cache and were not shared (the .pyc files are written)";

impl RemoteTier {
    /// Connects to the server and asks for its limits and our scope. `Ok(None)` when it cannot
    /// be used and the failure policy says go on.
    pub fn connect(config: &RemoteConfig, console: &Console) -> Result<Option<RemoteTier>> {
        let policy = FailurePolicy::new(config.require);
        if let Err(refused) =
            check_transport(&config.transport, &config.url, config.token.is_some())
        {
            policy.absorb(console, "using the server", refused)?;
            return Ok(None);
        }
        let mut client = ServerClient::with_transport(
            &config.url,
            config.token.clone(),
            config.timeout,
            &config.transport,
        )?
        .with_connect_timeout(config.connect_timeout)
        .with_namespace(config.namespace.clone())
        .with_trusted_keys(Arc::clone(&config.trusted_keys));
        match client.info() {
            Ok(info) => {
                client.limit_entries_to(info.max_entry_bytes);
                Ok(Some(RemoteTier {
                    client,
                    info,
                    policy,
                    console: console.clone(),
                    signing_key: config.signing_key.clone(),
                    patience: config.connect_timeout,
                }))
            }
            Err(e) => {
                policy.absorb(console, "asking the server for its limits", e)?;
                Ok(None)
            }
        }
    }

    /// How long a lookup may go without an answer before the run compiles instead of waiting
    /// (the connect timeout).
    pub fn patience(&self) -> Duration {
        self.patience
    }

    /// Where this run's messages go.
    pub fn console(&self) -> &Console {
        &self.console
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        self.client.url()
    }

    /// Whether the server is still being asked in this run.
    pub fn enabled(&self) -> bool {
        self.policy.enabled()
    }

    /// Whether this caller may upload: a write scope and a namespace the server says its
    /// uploads go to.
    pub fn can_write(&self) -> bool {
        self.info.scope.is_some_and(|s| s >= api::Scope::Write) && self.info.namespace.is_some()
    }

    /// Keys per batch get and entries per batch put (the server's advertised limit).
    pub fn max_batch_keys(&self) -> usize {
        usize::try_from(self.info.max_batch_keys)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// Encoded bytes per batch put: half the server's request limit, at most 4 MiB (a batch
    /// is held three times while it is sent — frames, pack, compressed pack — so larger ones
    /// cost the client memory and gain little: a cold run of the bench corpus peaked at
    /// 94 MB with 8 MiB batches).
    pub fn max_upload_bytes(&self) -> usize {
        usize::try_from(self.info.max_request_bytes / 2)
            .unwrap_or(4 << 20)
            .clamp(64 << 10, 4 << 20)
    }

    /// [`fetch_lookups`](Self::fetch_lookups) of `keys`, each its own lookup, for no
    /// interpreter in particular.
    pub fn fetch_each(
        &self,
        keys: &[KeyDigest],
        on_frame: &mut dyn FnMut(KeyDigest, Result<Entry, Rejected>),
    ) -> Result<u64> {
        let lookups: Vec<Vec<KeyDigest>> = keys.iter().map(|k| vec![*k]).collect();
        self.fetch_lookups(&lookups, None, on_frame)
    }

    /// Looks up `lookups` (each the alternative keys of one file, which the server counts as
    /// one lookup when it says it takes lookup lists) in as many batch gets as the server's
    /// limit needs, handing each frame to `on_frame` as it arrives (an error: a miss, see
    /// [`Rejected`]); `interpreter` ([`api::interpreter_header`]) lets the server count misses
    /// per interpreter. Failures go through the policy (an error only with
    /// `--require-server`); corrupt entries are said once. Returns the bytes received.
    pub fn fetch_lookups(
        &self,
        lookups: &[Vec<KeyDigest>],
        interpreter: Option<&str>,
        on_frame: &mut dyn FnMut(KeyDigest, Result<Entry, Rejected>),
    ) -> Result<u64> {
        let mut bytes = 0;
        for chunk in batches(lookups, self.max_batch_keys()) {
            if !self.enabled() {
                break;
            }
            let mut first_corrupt = None;
            let grouped = self.info.lookups;
            let answer =
                self.client
                    .batch_get_each(chunk, grouped, interpreter, &mut |key, entry| {
                        if entry == Err(Rejected::Corrupt) && first_corrupt.is_none() {
                            first_corrupt = Some(key);
                        }
                        on_frame(key, entry);
                    });
            if let Some(first) = first_corrupt {
                self.console.warn(
                    WarningKind::CorruptRemoteEntry,
                    &format!(
                        "the server {} sent a corrupt entry for key {first} (digest mismatch); compiling it locally",
                        self.url()
                    ),
                );
            }
            match answer {
                Ok(n) => bytes += n,
                Err(e) => {
                    self.policy
                        .absorb(&self.console, "looking up entries at the server", e)?
                }
            }
        }
        Ok(bytes)
    }

    /// Says (once a run) that the entry the server sent for `key` is not a whole code object
    /// and was compiled locally instead; `dfile` names the file it was asked for.
    pub fn say_unusable(&self, key: &KeyDigest, dfile: Option<&str>, why: &str) {
        let file = dfile.map_or_else(String::new, |f| format!(" ({})", escape_replayed(f)));
        self.console.warn(
            WarningKind::UnusableRemoteEntry,
            &format!(
                "the server {} sent an entry for key {key}{file} whose body is not a whole code object ({why}); it was compiled locally instead and nothing of it was written or cached",
                self.url()
            ),
        );
    }

    /// Says (once a run) how many entries the server sent that no trusted key signed under
    /// their keys; they were compiled locally and not cached.
    pub fn say_untrusted(&self, count: u64) {
        self.console.warn(
            WarningKind::UntrustedRemoteEntry,
            &format!(
                "{count} entries the server {} sent were not signed by a trusted key (trusted-keys); they were compiled locally instead and nothing of them was written or cached",
                self.url()
            ),
        );
    }

    /// Sends new entries in batches of at most [`max_upload_bytes`](Self::max_upload_bytes) and
    /// [`max_batch_keys`](Self::max_batch_keys) entries as they arrive, until the channel closes. An entry larger than the server accepts is
    /// skipped (said once); the rest still go.
    pub fn upload(&self, frames: crossbeam_channel::Receiver<Frame>) -> UploadReport {
        let mut report = UploadReport::default();
        let mut batch: Vec<Frame> = Vec::new();
        let mut batch_bytes = 0usize;
        let max_entry = self.info.max_entry_bytes;
        // One upload per key: files of identical source share a key where the path leaves it
        // (CPython 3.8–3.13), and the server keeps the first entry of a key anyway.
        let mut sent = std::collections::HashSet::new();
        for mut frame in frames {
            if !sent.insert(frame.key_digest()) {
                continue;
            }
            if frame.entry_bytes.len() as u64 > max_entry {
                report.too_large += 1;
                self.console.warn(
                    WarningKind::EntryTooLarge,
                    &format!(
                        "an entry of {} bytes is larger than the server {} accepts ({max_entry} bytes) and is not uploaded; it stays in the local cache",
                        frame.entry_bytes.len(),
                        self.url()
                    ),
                );
                continue;
            }
            // Signed here, on the upload thread, where the entry was compiled.
            if let Some(key) = &self.signing_key {
                frame
                    .signatures
                    .push(key.sign(&frame.key_digest(), &frame.entry_digest()));
            }
            batch_bytes += frame.entry_bytes.len() + 512;
            batch.push(frame);
            if batch_bytes >= self.max_upload_bytes() || batch.len() >= self.max_batch_keys() {
                self.flush(&mut batch, &mut report);
                batch_bytes = 0;
            }
        }
        self.flush(&mut batch, &mut report);
        report
    }

    fn flush(&self, batch: &mut Vec<Frame>, report: &mut UploadReport) {
        if batch.is_empty() || !self.enabled() || report.error.is_some() {
            batch.clear();
            return;
        }
        match self.client.batch_put(batch) {
            Ok((answer, sent)) => {
                report.stored += answer.stored.len() as u64;
                report.refused += answer.refused.len() as u64;
                report.bytes += sent;
                let (conflicts, invalid): (Vec<_>, Vec<_>) = answer
                    .refused
                    .iter()
                    .partition(|r| r.code == api::REFUSED_CONFLICT);
                report.conflicts += conflicts.len() as u64;
                if let Some(first) = conflicts.first() {
                    self.console.warn(
                        WarningKind::UploadConflict,
                        &format!(
                            "the server {} refused {} uploaded entries as conflicts (first: key {}): the namespace {} already holds other bytes for those keys, and entries never change once stored. The same source compiled to different bytes: nondeterministic compilation (CPython before 3.11, PyPy), a copy of the file at another path whose stored entry could not be relocated here, or an attack on the cache",
                            self.url(),
                            conflicts.len(),
                            first.key,
                            escape_replayed(answer.namespace.as_str()),
                        ),
                    );
                }
                if let Some(first) = invalid.first() {
                    self.console.warn(
                        WarningKind::UploadRefused,
                        &format!(
                            "the server {} refused {} uploaded entries (first: {}: {})",
                            self.url(),
                            invalid.len(),
                            first.key,
                            escape_replayed(&first.reason)
                        ),
                    );
                }
            }
            Err(e) => {
                if let Err(fatal) = self.policy.absorb_then(
                    &self.console,
                    "uploading entries to the server",
                    e,
                    UPLOAD_FAILED_THEN,
                ) {
                    report.error = Some(fatal);
                }
            }
        }
        batch.clear();
    }
}

/// `lookups` in consecutive batches of at most `max_keys` keys (a lookup is never split; one
/// larger than that is a batch alone).
fn batches(lookups: &[Vec<KeyDigest>], max_keys: usize) -> Vec<&[Vec<KeyDigest>]> {
    let mut out = Vec::new();
    let (mut start, mut keys) = (0, 0);
    for (i, lookup) in lookups.iter().enumerate() {
        if i > start && keys + lookup.len() > max_keys {
            out.push(&lookups[start..i]);
            (start, keys) = (i, 0);
        }
        keys += lookup.len();
    }
    if start < lookups.len() {
        out.push(&lookups[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_to_the_key_limit_and_never_split_a_lookup() {
        let k = |n: u8| KeyDigest([n; 32]);
        let lookups = vec![
            vec![k(1), k(2)],
            vec![k(3)],
            vec![k(4), k(5)],
            vec![k(6), k(7)],
        ];
        let sizes =
            |max| -> Vec<usize> { batches(&lookups, max).iter().map(|b| b.len()).collect() };
        assert_eq!(sizes(3), vec![2, 1, 1]);
        assert_eq!(sizes(4), vec![2, 2]);
        assert_eq!(
            sizes(1),
            vec![1, 1, 1, 1],
            "a lookup over the limit goes alone"
        );
        assert_eq!(sizes(100), vec![4]);
        assert!(batches(&[], 3).is_empty());
    }
}
