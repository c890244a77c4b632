//! Uploads spooled to disk. The entries an upload carries are written to an unnamed temporary
//! file as they are decoded and checked, and read back one at a time while the store writes
//! them: the server holds an upload's index (keys, digests, offsets), never its bytes, so the
//! memory of concurrent uploads does not grow with their size. The file has no name from the
//! start (`O_TMPFILE` or create-and-unlink), so nothing is left behind by a failed request or a
//! killed server.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use pycache_proto::pack::FrameDigest;
use pycache_proto::signature::EntrySignature;
use pycache_proto::{CacheKey, EntryDigest, KeyDigest};

use pycache_proto::pack::Frame;

use crate::store::{EntrySource, NewEntry, StoreError, StoredEntry};

/// One spooled entry: everything but its bytes, and where they are in the file.
#[derive(Debug)]
struct Spooled {
    key: CacheKey,
    key_digest: KeyDigest,
    digest: EntryDigest,
    frame_digest: FrameDigest,
    signatures: Vec<EntrySignature>,
    success: bool,
    offset: u64,
    len: usize,
}

/// The accepted entries of one upload, in upload order, their bytes in a temporary file.
#[derive(Debug)]
pub struct Spool {
    file: BufWriter<File>,
    index: Vec<Spooled>,
    written: u64,
}

impl Spool {
    /// An empty spool in `dir`.
    pub fn new(dir: &Path) -> Result<Spool, StoreError> {
        let file = tempfile::tempfile_in(dir).map_err(|e| spool_error(dir, e))?;
        Ok(Spool {
            file: BufWriter::with_capacity(64 << 10, file),
            index: Vec::new(),
            written: 0,
        })
    }

    /// Appends the entry of a checked frame.
    pub fn push(&mut self, frame: Frame, success: bool) -> Result<(), StoreError> {
        let bytes = &frame.entry_bytes;
        self.file.write_all(bytes).map_err(StoreError::Spool)?;
        self.index.push(Spooled {
            key_digest: frame.key.digest(),
            digest: frame.entry_digest(),
            frame_digest: frame.digest,
            offset: self.written,
            len: bytes.len(),
            key: frame.key,
            signatures: frame.signatures,
            success,
        });
        self.written += frame.entry_bytes.len() as u64;
        Ok(())
    }

    /// Entries spooled.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing was spooled.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of the spooled entries.
    pub fn bytes(&self) -> u64 {
        self.written
    }

    /// The key digests, in upload order.
    pub fn keys(&self) -> impl Iterator<Item = KeyDigest> + '_ {
        self.index.iter().map(|s| s.key_digest)
    }

    /// The entries for the store, in the order every writer locks rows in: by key digest, each
    /// key once (the first upload of a key counts: entries never change once stored).
    pub fn into_source(self) -> Result<SpoolSource, StoreError> {
        let Spool {
            file, mut index, ..
        } = self;
        let file = file
            .into_inner()
            .map_err(|e| StoreError::Spool(e.into_error()))?;
        // Stable, so equal keys keep their upload order and the first one survives `dedup`.
        index.sort_by_key(|s| s.key_digest);
        index.dedup_by(|next, kept| next.key_digest == kept.key_digest);
        Ok(SpoolSource {
            file,
            entries: index.into_iter(),
        })
    }
}

/// A spool being read back, one entry at a time.
pub struct SpoolSource {
    file: File,
    entries: std::vec::IntoIter<Spooled>,
}

impl EntrySource for SpoolSource {
    fn next_entry(&mut self) -> Result<Option<NewEntry>, StoreError> {
        let Some(spooled) = self.entries.next() else {
            return Ok(None);
        };
        let mut entry_bytes = vec![0; spooled.len];
        self.file
            .read_exact_at(&mut entry_bytes, spooled.offset)
            .map_err(StoreError::Spool)?;
        Ok(Some(NewEntry {
            stored: StoredEntry {
                key: spooled.key,
                entry_bytes,
                digest: spooled.digest,
            },
            success: spooled.success,
            frame_digest: spooled.frame_digest,
            signatures: spooled.signatures,
        }))
    }
}

/// Checks at start-up that uploads can be spooled in `dir`, creating it if missing.
pub fn check_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the spool directory {}: {e}; create it or pass --spool-dir",
            dir.display()
        )
    })?;
    tempfile::tempfile_in(dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create temporary files in the spool directory {}: {e}; make it writable \
             or pass --spool-dir",
            dir.display()
        )
    })?;
    Ok(dir.to_path_buf())
}

fn spool_error(dir: &Path, err: std::io::Error) -> StoreError {
    tracing::warn!(dir = %dir.display(), error = %err, "could not create an upload spool file");
    StoreError::Spool(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pycache_proto::Entry;

    fn key(n: u8) -> CacheKey {
        CacheKey {
            source_hash: [n; 32],
            magic: [0xa7, 0x0d, 0x0d, 0x0a],
            cache_tag: "cpython-311".into(),
            optimization: 0,
            settings: String::new(),
            dfile: format!("m{n}.py"),
        }
    }

    #[test]
    fn entries_come_back_in_lock_order_each_key_once_the_first_upload_counting() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path()).unwrap();
        let bodies: Vec<Vec<u8>> = (0..5u8)
            .map(|n| Entry::compiled(vec![0xe3, n, n, n], String::new()).encode())
            .collect();
        for (n, body) in bodies.iter().enumerate() {
            let k = key((n % 4) as u8);
            spool
                .push(Frame::from_encoded(k, body.clone()), true)
                .unwrap();
        }
        assert_eq!(spool.len(), 5);
        assert_eq!(spool.keys().next(), Some(key(0).digest()));
        let total: usize = bodies.iter().map(Vec::len).sum();
        assert_eq!(spool.bytes(), total as u64);
        let mut source = spool.into_source().unwrap();
        let mut got = Vec::new();
        while let Some(entry) = source.next_entry().unwrap() {
            got.push(entry);
        }
        assert_eq!(got.len(), 4, "key 0 twice, stored once");
        let digests: Vec<KeyDigest> = got.iter().map(|e| e.stored.key.digest()).collect();
        let mut sorted = digests.clone();
        sorted.sort();
        assert_eq!(digests, sorted);
        let zero = got.iter().find(|e| e.stored.key == key(0)).unwrap();
        assert_eq!(
            zero.stored.entry_bytes, bodies[0],
            "the first upload of a key counts"
        );
        assert_eq!(
            zero.frame_digest,
            Frame::from_encoded(key(0), bodies[0].clone()).digest
        );
        for entry in &got {
            assert_eq!(
                EntryDigest::of(&entry.stored.entry_bytes),
                entry.stored.digest
            );
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the spool file has no name"
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let err = check_dir(Path::new("/proc/no/such/dir")).unwrap_err();
        assert!(err.to_string().contains("/proc/no/such/dir"), "{err}");
    }
}
