//! Stage 2: one batched lookup at the server for everything the local cache lacks.
//!
//! A miss the server has becomes a ready slot in every record that waits for it, and its job is
//! dropped; the entries found are handed on to the local-cache sink.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use pycache_proto::{Entry, KeyDigest};

use super::resolve::{relocated, Resolution, Slot};
use super::{RunConfig, Summary};
use crate::remote::RemoteTier;

/// Asks `remote` for the misses of `resolution` that were not handed to the workers yet;
/// returns the entries found. An error only under `--require-server`.
pub fn fetch(
    resolution: &mut Resolution,
    remote: Option<&RemoteTier>,
    cfg: &RunConfig,
    summary: &mut Summary,
) -> Result<HashMap<KeyDigest, Arc<Entry>>> {
    let mut found: HashMap<KeyDigest, Arc<Entry>> = HashMap::new();
    let Some(remote) = remote.filter(|r| r.enabled()) else {
        return Ok(found);
    };
    // Each miss asks for its relocatable key (a tree elsewhere) and its own key.
    let wanted: Vec<KeyDigest> = resolution
        .misses
        .iter()
        .filter(|m| m.job.is_some())
        .flat_map(|m| {
            m.relocatable
                .as_ref()
                .map(|(_, d)| *d)
                .into_iter()
                .chain([m.digest])
        })
        .collect();
    if wanted.is_empty() {
        return Ok(found);
    }
    let answer = remote.fetch(&wanted)?;
    summary.bytes_down += answer.bytes;
    summary.corrupt_entries += answer.corrupt.len() as u64;
    found.extend(answer.entries.into_iter().map(|(k, e)| (k, Arc::new(e))));
    if found.is_empty() {
        return Ok(found);
    }
    let mut hit_of_job: HashMap<u64, Arc<Entry>> = HashMap::new();
    for (id, miss) in resolution.misses.iter_mut().enumerate() {
        if miss.job.is_none() {
            continue;
        }
        let moved = miss.relocatable.as_ref().and_then(|(_, d)| {
            let entry = found.get(d)?;
            let wanted = miss.key.dfile.as_str();
            relocated((**entry).clone(), cfg, wanted)
        });
        let hit = match moved {
            Some((entry, rewritten)) => {
                summary.relocated_hits += u64::from(rewritten);
                Some(Arc::new(entry))
            }
            None => found.get(&miss.digest).cloned(),
        };
        if let Some(entry) = hit {
            miss.job = None;
            summary.remote_hits += 1;
            hit_of_job.insert(id as u64, entry);
        }
    }
    for record in &mut resolution.files {
        for slot in &mut record.levels {
            if let Slot::Job(id) = slot {
                if let Some(entry) = hit_of_job.get(id) {
                    *slot = Slot::Ready(Arc::clone(entry));
                }
            }
        }
    }
    Ok(found)
}
