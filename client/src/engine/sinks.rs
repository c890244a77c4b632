//! Stage 5: where results go besides the .pyc files, on background threads while the printing
//! thread writes files — server hits and new compiles into the local cache, new compiles to
//! the server (a bounded queue, so a slow server holds back printing rather than filling
//! memory).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::Sender;
use pycache_proto::pack::Frame;
use pycache_proto::{CacheKey, Entry, KeyDigest};

use super::Tiers;
use crate::local_cache::LocalCache;
use crate::output::{Console, WarningKind};
use crate::remote::UploadReport;

/// Frames queued for upload before the printing thread waits.
const UPLOAD_QUEUE: usize = 1024;
/// Entries handed to the local-cache thread at once (one wake-up of that thread each).
const LOCAL_BATCH: usize = 64;

/// Entries for the local cache.
type LocalBatch = Vec<(KeyDigest, Arc<Entry>)>;

/// The open sinks of a run, handed to the emit stage.
#[derive(Default)]
pub struct Sinks {
    local: Option<Sender<LocalBatch>>,
    /// Entries not yet handed to the local-cache thread.
    local_batch: Mutex<LocalBatch>,
    upload: Option<Sender<Frame>>,
}

impl Sinks {
    /// Stores an entry the server sent in the local cache.
    pub fn store_fetched(&self, key: &KeyDigest, entry: &Arc<Entry>) {
        self.store_local(*key, entry);
    }

    /// Stores a new compile under `key`: in the local cache and at the server, where open.
    pub fn store(&self, key: &CacheKey, entry: &Arc<Entry>) {
        self.store_local(key.digest(), entry);
        if let Some(upload) = &self.upload {
            let _ = upload.send(Frame::new(key.clone(), entry));
        }
    }

    fn store_local(&self, key: KeyDigest, entry: &Arc<Entry>) {
        let Some(local) = &self.local else {
            return;
        };
        let mut batch = self.local_batch.lock().unwrap_or_else(|e| e.into_inner());
        batch.push((key, Arc::clone(entry)));
        if batch.len() >= LOCAL_BATCH {
            let _ = local.send(std::mem::take(&mut *batch));
        }
    }
}

impl Drop for Sinks {
    /// Hands the last entries on.
    fn drop(&mut self) {
        let batch = std::mem::take(
            self.local_batch
                .get_mut()
                .unwrap_or_else(|e| e.into_inner()),
        );
        if let (Some(local), false) = (&self.local, batch.is_empty()) {
            let _ = local.send(batch);
        }
    }
}

/// What the uploader did, and how long the run waited for it after the last file.
pub struct UploadOutcome {
    /// The uploader's report.
    pub report: UploadReport,
    /// Seconds spent waiting for it once emitting was done.
    pub wait_seconds: f64,
}

/// Runs `emit` with the sinks of `tiers` open. Returns `emit`'s result and, when there was an
/// uploader, its outcome.
pub fn with_sinks<T>(
    tiers: Tiers<'_>,
    console: &Console,
    emit: impl FnOnce(&Sinks) -> T,
) -> (T, Option<UploadOutcome>) {
    let upload_tier = tiers.remote.filter(|r| r.can_write());
    std::thread::scope(|scope| {
        let mut sinks = Sinks::default();
        if let Some(cache) = tiers.local {
            let (tx, rx) = crossbeam_channel::unbounded::<LocalBatch>();
            sinks.local = Some(tx);
            scope.spawn(move || {
                for (key, entry) in rx.into_iter().flatten() {
                    store_local(cache, &key, &entry, console);
                }
            });
        }
        let uploader = upload_tier.map(|tier| {
            let (tx, rx) = crossbeam_channel::bounded::<Frame>(UPLOAD_QUEUE);
            sinks.upload = Some(tx);
            scope.spawn(move || tier.upload(rx))
        });
        let result = emit(&sinks);
        drop(sinks);
        let outcome = uploader.map(|handle| {
            let waited = Instant::now();
            let report = handle.join().unwrap_or_else(|_| UploadReport {
                error: Some(anyhow::anyhow!("the upload thread panicked")),
                ..Default::default()
            });
            UploadOutcome {
                report,
                wait_seconds: waited.elapsed().as_secs_f64(),
            }
        });
        (result, outcome)
    })
}

fn store_local(cache: &LocalCache, key: &KeyDigest, entry: &Entry, console: &Console) {
    if let Err(e) = cache.put(key, entry) {
        console.warn(
            WarningKind::LocalCache,
            &format!(
                "could not store an entry in the local cache {}: {e}",
                cache.root().display()
            ),
        );
    }
}
