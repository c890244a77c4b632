//! The local cache: a content-addressed directory of entries, the embedded default tier.
//!
//! Layout: `<root>/entries-v2/<first two hex digits>/<key digest hex>`, each file the encoded
//! [`Entry`] followed by its blake3 digest keyed with the key digest: an entry is bound to its
//! key, so a file moved or copied under another key's name is corrupt, never a wrong hit.
//! (`entries/`, the layout before entries were bound to keys, is ignored.) Files are written to a unique
//! temporary name and renamed into place, so concurrent runs sharing one cache never see a
//! half-written entry (the last identical writer wins). A file that fails its digest or does not
//! decode is reported as corrupt, removed, and treated as a miss.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use pycache_proto::{Entry, KeyDigest};

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A valid entry.
    Hit(Entry),
    /// No entry for the key.
    Miss,
    /// An entry that failed its digest or did not decode; it has been removed.
    Corrupt(String),
}

/// A content-addressed entry store in a directory.
#[derive(Debug, Clone)]
pub struct LocalCache {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The entries' directory under the cache root.
const ENTRIES: &str = "entries-v2";

/// The digest stored after an entry: blake3 of its bytes, keyed with its key's digest.
fn bound_digest(key: &KeyDigest, encoded: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(&key.0, encoded).as_bytes()
}

impl LocalCache {
    /// Opens (creating if needed) the cache under `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join(ENTRIES))?;
        let cache = LocalCache {
            root: root.to_path_buf(),
        };
        cache.sweep_now_and_then();
        Ok(cache)
    }

    /// Removes temporary files of killed writers, at most once an hour (a marker file's mtime
    /// says when it last happened).
    fn sweep_now_and_then(&self) {
        let marker = self.root.join("last-sweep");
        let due = fs::metadata(&marker)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age > std::time::Duration::from_secs(3600));
        if !due || fs::write(&marker, b"").is_err() {
            return;
        }
        let Ok(shards) = fs::read_dir(self.root.join(ENTRIES)) else {
            return;
        };
        for shard in shards.flatten() {
            crate::fsutil::sweep_abandoned(&shard.path(), temp_owner);
        }
    }

    /// The cache's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn entry_path(&self, key: &KeyDigest) -> PathBuf {
        let hex = key.to_hex();
        self.root.join(ENTRIES).join(&hex[..2]).join(hex)
    }

    /// Looks up one entry, verifying its digest.
    pub fn get(&self, key: &KeyDigest) -> Lookup {
        let path = self.entry_path(key);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(_) => return Lookup::Miss,
        };
        match verify(key, &data) {
            Ok(entry) => Lookup::Hit(entry),
            Err(why) => {
                let _ = fs::remove_file(&path);
                Lookup::Corrupt(format!("{}: {why}", path.display()))
            }
        }
    }

    /// Stores one entry atomically; returns the bytes written.
    pub fn put(&self, key: &KeyDigest, entry: &Entry) -> io::Result<u64> {
        self.put_encoded(key, &entry.encode())
    }

    /// Stores already-encoded entry bytes atomically.
    pub fn put_encoded(&self, key: &KeyDigest, encoded: &[u8]) -> io::Result<u64> {
        let path = self.entry_path(key);
        let dir = path.parent().expect("entry paths have a parent");
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let digest = bound_digest(key, encoded);
        crate::fsutil::write_atomic(&path, &tmp, 0o666, &[encoded, &digest])
            .map_err(|e| e.error)?;
        Ok((encoded.len() + digest.len()) as u64)
    }
}

/// The pid in a temporary entry name (`.tmp-<pid>-<n>`).
fn temp_owner(name: &str) -> Option<u32> {
    name.strip_prefix(".tmp-")?.split('-').next()?.parse().ok()
}

fn verify(key: &KeyDigest, data: &[u8]) -> Result<Entry, String> {
    if data.len() < 32 {
        return Err("shorter than its digest".into());
    }
    let (encoded, digest) = data.split_at(data.len() - 32);
    if bound_digest(key, encoded) != digest {
        return Err("its digest does not match its content and key".into());
    }
    Entry::decode(encoded).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let key = KeyDigest([7; 32]);
        assert!(matches!(cache.get(&key), Lookup::Miss));
        let entry = Entry::compiled(vec![0xe3, 1, 2, 3], "w\n".into());
        cache.put(&key, &entry).unwrap();
        match cache.get(&key) {
            Lookup::Hit(e) => assert_eq!(e, entry),
            other => panic!("expected a hit, got {other:?}"),
        }
        let path = cache.entry_path(&key);
        let mut data = fs::read(&path).unwrap();
        data[12] ^= 0x55;
        fs::write(&path, data).unwrap();
        assert!(matches!(cache.get(&key), Lookup::Corrupt(_)));
        assert!(!path.exists(), "a corrupt entry is removed");
        assert!(matches!(cache.get(&key), Lookup::Miss));
    }

    #[test]
    fn an_entry_under_another_key_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let (a, b) = (KeyDigest([1; 32]), KeyDigest([2; 32]));
        cache
            .put(&a, &Entry::compiled(vec![0xe3, 1], String::new()))
            .unwrap();
        fs::create_dir_all(cache.entry_path(&b).parent().unwrap()).unwrap();
        fs::copy(cache.entry_path(&a), cache.entry_path(&b)).unwrap();
        assert!(matches!(cache.get(&b), Lookup::Corrupt(_)));
        assert!(matches!(cache.get(&a), Lookup::Hit(_)));
    }
}
