//! The local cache: a content-addressed directory of entries, the embedded default tier.
//!
//! Layout: `<root>/entries/<first two hex digits>/<key digest hex>`, each file the encoded
//! [`Entry`] followed by the blake3 digest of those bytes. Files are written to a unique
//! temporary name and renamed into place, so concurrent runs sharing one cache never see a
//! half-written entry (the last identical writer wins). A file that fails its digest or does not
//! decode is reported as corrupt, removed, and treated as a miss.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use pycache_proto::{Entry, EntryDigest, KeyDigest};

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

impl LocalCache {
    /// Opens (creating if needed) the cache under `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("entries"))?;
        Ok(LocalCache {
            root: root.to_path_buf(),
        })
    }

    /// The cache's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn entry_path(&self, key: &KeyDigest) -> PathBuf {
        let hex = key.to_hex();
        self.root.join("entries").join(&hex[..2]).join(hex)
    }

    /// Looks up one entry, verifying its digest.
    pub fn get(&self, key: &KeyDigest) -> Lookup {
        let path = self.entry_path(key);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(_) => return Lookup::Miss,
        };
        match verify(&data) {
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
        let mut data = Vec::with_capacity(encoded.len() + 32);
        data.extend_from_slice(encoded);
        data.extend_from_slice(&EntryDigest::of(encoded).0);
        let result = (|| {
            // The shard directory exists after the first entry in it: create it only then.
            let mut f = match fs::File::create(&tmp) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir_all(dir)?;
                    fs::File::create(&tmp)?
                }
                other => other?,
            };
            f.write_all(&data)?;
            drop(f);
            fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| data.len() as u64)
    }
}

fn verify(data: &[u8]) -> Result<Entry, String> {
    if data.len() < 32 {
        return Err("shorter than its digest".into());
    }
    let (encoded, digest) = data.split_at(data.len() - 32);
    if EntryDigest::of(encoded).0 != digest {
        return Err("its blake3 digest does not match its content".into());
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
}
