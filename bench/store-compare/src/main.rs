//! Measures three candidate layouts for the client's local cache on this disk:
//!
//! * `files`  — one file per entry (today's layout: temp file + rename, read = open + read);
//! * `sqlite` — one SQLite file (WAL, synchronous=NORMAL, auto_vacuum=INCREMENTAL);
//! * `pack` / `pack-mmap` — an append-only data file plus an append-only index file, appended
//!   under an exclusive flock; reads by pread (`pack`) or through a shared mapping (`pack-mmap`).
//!
//! Every phase is one process (`store-compare <store> <phase> ...`); it prints one line of
//! `name=value` pairs that `run.py` collects. See RESULTS.md.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

type Key = [u8; 32];

const DIGEST: usize = 32;
const BATCH: usize = 64;

// ---------------------------------------------------------------------------------------------
// The workload

/// One entry: its key and its stored value (the .pyc bytes followed by their blake3 digest
/// keyed with the key, as in today's local cache).
struct Item {
    key: Key,
    value: Vec<u8>,
}

fn bound_digest(key: &Key, body: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(key, body).as_bytes()
}

fn verify(key: &Key, value: &[u8]) -> bool {
    value.len() >= DIGEST && {
        let (body, digest) = value.split_at(value.len() - DIGEST);
        bound_digest(key, body) == digest
    }
}

/// Walks a compiled source tree: every `x.py` with a `__pycache__/x.cpython-311.pyc` is one
/// entry, keyed by blake3 of the source (sources with identical bytes are one entry).
fn build_corpus(src: &Path, out: &Path) -> io::Result<()> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, found)?;
            } else if p.extension().is_some_and(|x| x == "py") {
                found.push(p);
            }
        }
        Ok(())
    }
    let mut sources = Vec::new();
    walk(src, &mut sources)?;
    sources.sort();
    let mut seen = std::collections::HashSet::new();
    let mut buf = Vec::new();
    let mut count = 0u32;
    for py in &sources {
        let stem = py.file_stem().unwrap().to_str().unwrap();
        let pyc = py.parent().unwrap().join("__pycache__").join(format!("{stem}.cpython-311.pyc"));
        let Ok(body) = fs::read(&pyc) else { continue };
        let key = *blake3::hash(&fs::read(py)?).as_bytes();
        if !seen.insert(key) {
            continue;
        }
        buf.extend_from_slice(&key);
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        buf.extend_from_slice(&body);
        count += 1;
    }
    let mut f = File::create(out)?;
    f.write_all(&count.to_le_bytes())?;
    f.write_all(&buf)?;
    println!("entries={count} sources={} body_bytes={}", sources.len(), buf.len() - count as usize * 36);
    Ok(())
}

/// The corpus' first `n` entries (all of them if `n` is 0); beyond the corpus its entries are
/// repeated under keys derived from the original key and a counter.
fn load_corpus(path: &Path, n: usize) -> io::Result<Vec<Item>> {
    let data = fs::read(path)?;
    let count = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
    let mut base = Vec::with_capacity(count);
    let mut at = 4;
    for _ in 0..count {
        let key: Key = data[at..at + 32].try_into().unwrap();
        let len = u32::from_le_bytes(data[at + 32..at + 36].try_into().unwrap()) as usize;
        base.push((key, &data[at + 36..at + 36 + len]));
        at += 36 + len;
    }
    let n = if n == 0 { count } else { n };
    Ok((0..n)
        .map(|i| {
            let (k, body) = base[i % count];
            let round = (i / count) as u64;
            let key = if round == 0 {
                k
            } else {
                let mut h = blake3::Hasher::new();
                h.update(&k).update(&round.to_le_bytes());
                *h.finalize().as_bytes()
            };
            let mut value = Vec::with_capacity(body.len() + DIGEST);
            value.extend_from_slice(body);
            value.extend_from_slice(&bound_digest(&key, body));
            Item { key, value }
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// The stores

trait Store {
    /// Stores a batch of entries (a no-op for keys already present).
    fn put_batch(&mut self, batch: &[&Item]) -> io::Result<()>;
    /// The stored value of a key, unverified.
    fn get(&mut self, key: &Key) -> io::Result<Option<Vec<u8>>>;
    /// Called once at the end of a run with the keys that were hits (LRU bookkeeping).
    fn touch(&mut self, _hits: &[Key]) -> io::Result<()> {
        Ok(())
    }
    /// Removes the entries for which `doomed` is true and gives their space back.
    fn evict(&mut self, doomed: &dyn Fn(&Key) -> bool) -> io::Result<u64>;
}

fn open_store(kind: &str, root: &Path) -> io::Result<Box<dyn Store>> {
    Ok(match kind {
        "files" => Box::new(Files::open(root, false)?),
        "files-skip" => Box::new(Files::open(root, true)?),
        "sqlite" => Box::new(Sqlite::open(root, false).map_err(io::Error::other)?),
        "sqlite-mmap" => Box::new(Sqlite::open(root, true).map_err(io::Error::other)?),
        "pack" => Box::new(Pack::open(root, false)?),
        "pack-mmap" => Box::new(Pack::open(root, true)?),
        _ => return Err(io::Error::other(format!("unknown store {kind}"))),
    })
}

fn hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

// (a) One file per entry -----------------------------------------------------------------------

struct Files {
    dir: PathBuf,
    counter: u64,
    /// Skips a put whose file already exists (one stat) instead of replacing it, as today.
    skip_existing: bool,
}

impl Files {
    fn open(root: &Path, skip_existing: bool) -> io::Result<Self> {
        let dir = root.join("entries-v2");
        fs::create_dir_all(&dir)?;
        Ok(Files { dir, counter: 0, skip_existing })
    }

    fn path(&self, key: &Key) -> PathBuf {
        let h = hex(key);
        self.dir.join(&h[..2]).join(h)
    }
}

impl Store for Files {
    fn put_batch(&mut self, batch: &[&Item]) -> io::Result<()> {
        for item in batch {
            let path = self.path(&item.key);
            if self.skip_existing && fs::symlink_metadata(&path).is_ok() {
                continue;
            }
            let shard = path.parent().unwrap();
            self.counter += 1;
            let tmp = shard.join(format!(".tmp-{}-{}", std::process::id(), self.counter));
            let open = || {
                OpenOptions::new().write(true).create_new(true).mode(0o666).open(&tmp)
            };
            let mut f = match open() {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir_all(shard)?;
                    open()?
                }
                other => other?,
            };
            f.write_all(&item.value)?;
            drop(f);
            fs::rename(&tmp, &path)?;
        }
        Ok(())
    }

    fn get(&mut self, key: &Key) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(key)) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn evict(&mut self, doomed: &dyn Fn(&Key) -> bool) -> io::Result<u64> {
        // An LRU policy would stat every file for its atime/mtime; here the victims are given,
        // but the directory scan that finds the entries is part of the cost.
        let mut removed = 0;
        for shard in fs::read_dir(&self.dir)? {
            for e in fs::read_dir(shard?.path())? {
                let e = e?;
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let mut key = [0u8; 32];
                if name.len() != 64 {
                    continue;
                }
                for i in 0..32 {
                    key[i] = u8::from_str_radix(&name[2 * i..2 * i + 2], 16).unwrap_or(0);
                }
                if doomed(&key) {
                    fs::remove_file(e.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

// (b) SQLite ---------------------------------------------------------------------------------

struct Sqlite {
    db: rusqlite::Connection,
    hit_ids: Vec<i64>,
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

impl Sqlite {
    fn open(root: &Path, mmap: bool) -> rusqlite::Result<Self> {
        fs::create_dir_all(root).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        let db = rusqlite::Connection::open(root.join("cache.db"))?;
        db.busy_timeout(std::time::Duration::from_secs(30))?;
        // Only takes effect before the first table is created (and before the switch to WAL
        // writes the header). Only on a new database: on an existing one the pragma is a write
        // transaction (two fsyncs of a new WAL and one of the directory, ~20 ms here).
        if db.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))? == 0 {
            db.execute_batch("PRAGMA auto_vacuum=INCREMENTAL")?;
        }
        // journal_mode=WAL is persistent; switching a new database to it needs an exclusive
        // lock, which does not wait on the busy handler: several first openers retry.
        let mut tries = 0;
        loop {
            match db.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
                Ok(_) => break,
                Err(e) if tries < 200 => {
                    let _ = e;
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
        db.execute_batch(
            "PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS entries(id INTEGER PRIMARY KEY, key BLOB UNIQUE NOT NULL,
                                                size INTEGER NOT NULL, last_use INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS bodies(id INTEGER PRIMARY KEY, data BLOB NOT NULL);",
        )?;
        if mmap {
            // Reads of pages not in the WAL go through a shared mapping instead of pread.
            db.query_row("PRAGMA mmap_size=4294967296", [], |_| Ok(()))?;
        }
        Ok(Sqlite { db, hit_ids: Vec::new() })
    }
}

fn sql_err(e: rusqlite::Error) -> io::Error {
    io::Error::other(e)
}

impl Store for Sqlite {
    fn put_batch(&mut self, batch: &[&Item]) -> io::Result<()> {
        let now = now_secs();
        let tx = rusqlite::Transaction::new(&mut self.db, rusqlite::TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO entries(key, size, last_use) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO NOTHING RETURNING id",
                )
                .map_err(sql_err)?;
            let mut body = tx
                .prepare_cached("INSERT INTO bodies(id, data) VALUES (?1, ?2)")
                .map_err(sql_err)?;
            for item in batch {
                let id: Option<i64> = {
                    let mut rows = ins
                        .query(rusqlite::params![&item.key[..], item.value.len() as i64, now])
                        .map_err(sql_err)?;
                    match rows.next().map_err(sql_err)? {
                        Some(r) => Some(r.get(0).map_err(sql_err)?),
                        None => None,
                    }
                };
                if let Some(id) = id {
                    body.execute(rusqlite::params![id, &item.value[..]]).map_err(sql_err)?;
                }
            }
        }
        tx.commit().map_err(sql_err)
    }

    fn get(&mut self, key: &Key) -> io::Result<Option<Vec<u8>>> {
        let mut q = self
            .db
            .prepare_cached(
                "SELECT e.id, b.data FROM entries e JOIN bodies b ON b.id = e.id WHERE e.key = ?1",
            )
            .map_err(sql_err)?;
        let mut rows = q.query([&key[..]]).map_err(sql_err)?;
        match rows.next().map_err(sql_err)? {
            Some(r) => {
                let id: i64 = r.get(0).map_err(sql_err)?;
                let data = r.get_ref(1).map_err(sql_err)?.as_blob().map_err(|e| io::Error::other(e))?.to_vec();
                self.hit_ids.push(id);
                Ok(Some(data))
            }
            None => Ok(None),
        }
    }

    fn touch(&mut self, _hits: &[Key]) -> io::Result<()> {
        let now = now_secs();
        let tx = rusqlite::Transaction::new(&mut self.db, rusqlite::TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        {
            let mut up = tx
                .prepare_cached("UPDATE entries SET last_use = ?1 WHERE id = ?2")
                .map_err(sql_err)?;
            for id in &self.hit_ids {
                up.execute([now, *id]).map_err(sql_err)?;
            }
        }
        tx.commit().map_err(sql_err)?;
        self.hit_ids.clear();
        Ok(())
    }

    fn evict(&mut self, doomed: &dyn Fn(&Key) -> bool) -> io::Result<u64> {
        // A real policy: SELECT id FROM entries ORDER BY last_use LIMIT n (a table scan without an
        // index on last_use), then the same deletes and incremental_vacuum.
        let victims: Vec<i64> = {
            let mut q = self.db.prepare("SELECT id, key FROM entries").map_err(sql_err)?;
            let rows = q
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
                .map_err(sql_err)?;
            let mut v = Vec::new();
            for r in rows {
                let (id, key) = r.map_err(sql_err)?;
                if doomed(&key[..].try_into().unwrap()) {
                    v.push(id);
                }
            }
            v
        };
        for chunk in victims.chunks(BATCH * 4) {
            let tx = rusqlite::Transaction::new(&mut self.db, rusqlite::TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            for id in chunk {
                tx.execute("DELETE FROM entries WHERE id = ?1", [id]).map_err(sql_err)?;
                tx.execute("DELETE FROM bodies WHERE id = ?1", [id]).map_err(sql_err)?;
            }
            tx.commit().map_err(sql_err)?;
        }
        // incremental_vacuum frees one page per step: step it to the end.
        {
            let mut q = self.db.prepare("PRAGMA incremental_vacuum").map_err(sql_err)?;
            let mut rows = q.query([]).map_err(sql_err)?;
            while rows.next().map_err(sql_err)?.is_some() {}
        }
        self.db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(sql_err)?;
        Ok(victims.len() as u64)
    }
}

// (c) Append-only pack + index ----------------------------------------------------------------
//
// pack.data: records `key (32) | len (u32 LE) | value (len bytes)`; the value ends with its
//            digest keyed with the key, which is the record's checksum.
// pack.idx:  records `key (32) | offset (u64 LE) | len (u32 LE) | check (u32 LE)`, 48 bytes,
//            `check` = the first 4 bytes of blake3 of the preceding 44.
// pack.lock: flocked exclusively by writers (and by compaction, which renames new files in).
//
// A writer, under the lock: reads the index records appended since it last looked, drops a
// torn index tail (a writer killed mid-append), skips keys already present, appends its data
// records at the data file's end, then their index records. Data written without its index
// record (a writer killed in between) is unreachable garbage, reclaimed by compaction. Readers
// take no lock: they read the index at open (and its new tail on a miss); an index record whose
// check fails, or whose data record's key, length or digest does not match, is a miss.

const IDX: usize = 48;
const HDR: usize = 36;

struct Pack {
    root: PathBuf,
    lock: File,
    data: File,
    idx: File,
    idx_len: u64,
    map: HashMap<Key, (u64, u32)>,
    mmap: Option<memmap2::Mmap>,
    use_mmap: bool,
}

fn idx_record(key: &Key, offset: u64, len: u32) -> [u8; IDX] {
    let mut r = [0u8; IDX];
    r[..32].copy_from_slice(key);
    r[32..40].copy_from_slice(&offset.to_le_bytes());
    r[40..44].copy_from_slice(&len.to_le_bytes());
    let check: [u8; 4] = blake3::hash(&r[..44]).as_bytes()[..4].try_into().unwrap();
    r[44..].copy_from_slice(&check);
    r
}

fn flock(f: &File, op: i32) -> io::Result<()> {
    loop {
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Pack {
    fn open(root: &Path, use_mmap: bool) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        let rw = |name: &str| {
            OpenOptions::new().read(true).append(false).write(true).create(true).open(root.join(name))
        };
        let lock = rw("pack.lock")?;
        let data = rw("pack.data")?;
        let idx = rw("pack.idx")?;
        let mut p = Pack {
            root: root.to_path_buf(),
            lock,
            data,
            idx,
            idx_len: 0,
            map: HashMap::new(),
            mmap: None,
            use_mmap,
        };
        p.read_index_tail()?;
        if use_mmap {
            p.remap()?;
        }
        Ok(p)
    }

    /// Reads the whole index records appended since the last look.
    fn read_index_tail(&mut self) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut f = &self.idx;
        use std::io::Seek;
        f.seek(io::SeekFrom::Start(self.idx_len))?;
        f.read_to_end(&mut buf)?;
        let whole = buf.len() / IDX * IDX;
        for r in buf[..whole].chunks_exact(IDX) {
            let key: Key = r[..32].try_into().unwrap();
            let offset = u64::from_le_bytes(r[32..40].try_into().unwrap());
            let len = u32::from_le_bytes(r[40..44].try_into().unwrap());
            if idx_record(&key, offset, len) == *r {
                self.map.entry(key).or_insert((offset, len));
            }
        }
        self.idx_len += whole as u64;
        Ok(())
    }

    fn remap(&mut self) -> io::Result<()> {
        self.mmap = if self.data.metadata()?.len() == 0 {
            None
        } else {
            Some(unsafe { memmap2::Mmap::map(&self.data)? })
        };
        Ok(())
    }

    /// Under the lock: reopens the files if compaction replaced them.
    fn follow_compaction(&mut self) -> io::Result<()> {
        let on_disk = fs::metadata(self.root.join("pack.data"))?;
        let ours = self.data.metadata()?;
        if on_disk.ino() != ours.ino() || on_disk.dev() != ours.dev() {
            let fresh = Pack::open(&self.root, self.use_mmap)?;
            self.data = fresh.data;
            self.idx = fresh.idx;
            self.idx_len = fresh.idx_len;
            self.map = fresh.map;
            self.mmap = fresh.mmap;
        }
        Ok(())
    }

    fn record_at(&mut self, key: &Key, offset: u64, len: u32) -> io::Result<Option<Vec<u8>>> {
        let total = HDR + len as usize;
        let mut rec;
        let bytes: &[u8] = if self.use_mmap {
            if self.mmap.as_ref().is_none_or(|m| (m.len() as u64) < offset + total as u64) {
                self.remap()?;
            }
            match &self.mmap {
                Some(m) if m.len() as u64 >= offset + total as u64 => {
                    &m[offset as usize..offset as usize + total]
                }
                _ => return Ok(None),
            }
        } else {
            rec = vec![0u8; total];
            match self.data.read_exact_at(&mut rec, offset) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
            &rec[..]
        };
        if bytes[..32] != key[..] || bytes[32..36] != len.to_le_bytes() {
            return Ok(None);
        }
        Ok(Some(bytes[HDR..].to_vec()))
    }
}

impl Store for Pack {
    fn put_batch(&mut self, batch: &[&Item]) -> io::Result<()> {
        flock(&self.lock, libc::LOCK_EX)?;
        let result = (|| {
            self.follow_compaction()?;
            self.read_index_tail()?;
            if self.idx.metadata()?.len() != self.idx_len {
                self.idx.set_len(self.idx_len)?; // a torn tail of a killed writer
            }
            let mut offset = self.data.metadata()?.len();
            let mut data = Vec::new();
            let mut index = Vec::new();
            let mut added = Vec::new();
            for item in batch {
                if self.map.contains_key(&item.key) || added.iter().any(|(k, _, _)| k == &item.key) {
                    continue;
                }
                let len = item.value.len() as u32;
                data.extend_from_slice(&item.key);
                data.extend_from_slice(&len.to_le_bytes());
                data.extend_from_slice(&item.value);
                index.extend_from_slice(&idx_record(&item.key, offset, len));
                added.push((item.key, offset, len));
                offset += (HDR + item.value.len()) as u64;
            }
            if added.is_empty() {
                return Ok(());
            }
            let start = offset - data.len() as u64;
            self.data.write_all_at(&data, start)?;
            self.idx.write_all_at(&index, self.idx_len)?;
            self.idx_len += index.len() as u64;
            for (k, o, l) in added {
                self.map.insert(k, (o, l));
            }
            Ok(())
        })();
        flock(&self.lock, libc::LOCK_UN)?;
        result
    }

    fn get(&mut self, key: &Key) -> io::Result<Option<Vec<u8>>> {
        let found = match self.map.get(key) {
            Some(&v) => Some(v),
            None => {
                self.read_index_tail()?;
                self.map.get(key).copied()
            }
        };
        match found {
            Some((offset, len)) => self.record_at(key, offset, len),
            None => Ok(None),
        }
    }

    fn evict(&mut self, doomed: &dyn Fn(&Key) -> bool) -> io::Result<u64> {
        // Compaction: under the lock, copy the surviving records into new files and rename them
        // over the old ones (data first; a reader that pairs the new data with the old index
        // finds mismatching record headers and takes a miss). Readers with the old files open
        // keep reading the old inodes; writers notice the new inode under the lock and reopen.
        flock(&self.lock, libc::LOCK_EX)?;
        let result = (|| {
            self.follow_compaction()?;
            self.read_index_tail()?;
            let mut live: Vec<(Key, u64, u32)> =
                self.map.iter().filter(|(k, _)| !doomed(k)).map(|(k, &(o, l))| (*k, o, l)).collect();
            live.sort_by_key(|e| e.1);
            let removed = (self.map.len() - live.len()) as u64;
            let mut nd = File::create(self.root.join("pack.data.new"))?;
            let mut ni = File::create(self.root.join("pack.idx.new"))?;
            let mut data = Vec::new();
            let mut index = Vec::new();
            let mut at = 0u64;
            for (key, offset, len) in live {
                let mut rec = vec![0u8; HDR + len as usize];
                self.data.read_exact_at(&mut rec, offset)?;
                if !verify(&key, &rec[HDR..]) {
                    continue;
                }
                data.extend_from_slice(&rec);
                index.extend_from_slice(&idx_record(&key, at, len));
                at += rec.len() as u64;
                if data.len() > 8 << 20 {
                    nd.write_all(&data)?;
                    data.clear();
                }
            }
            nd.write_all(&data)?;
            ni.write_all(&index)?;
            nd.sync_all()?;
            ni.sync_all()?;
            fs::rename(self.root.join("pack.data.new"), self.root.join("pack.data"))?;
            fs::rename(self.root.join("pack.idx.new"), self.root.join("pack.idx"))?;
            self.follow_compaction()?;
            Ok(removed)
        })();
        flock(&self.lock, libc::LOCK_UN)?;
        result
    }
}

// ---------------------------------------------------------------------------------------------
// The phases

fn disk_usage(path: &Path) -> io::Result<(u64, u64, u64)> {
    // (allocated bytes, apparent bytes, inodes)
    let m = fs::symlink_metadata(path)?;
    let mut t = (m.blocks() * 512, m.len(), 1);
    if m.is_dir() {
        for e in fs::read_dir(path)? {
            let (a, b, c) = disk_usage(&e?.path())?;
            t = (t.0 + a, t.1 + b, t.2 + c);
        }
    }
    Ok(t)
}

fn ms(t: Instant) -> String {
    format!("{:.3}", t.elapsed().as_secs_f64() * 1e3)
}

fn fill(store: &mut dyn Store, items: &[Item], part: usize, parts: usize) -> io::Result<()> {
    // Writer `part` of `parts` starts a `part/parts` of the way into the corpus and wraps
    // around: concurrent writers race on every key, at different times.
    let start = items.len() * part / parts;
    let order: Vec<&Item> = items[start..].iter().chain(&items[..start]).collect();
    for batch in order.chunks(BATCH) {
        store.put_batch(batch)?;
    }
    Ok(())
}

fn run(args: &[String]) -> io::Result<ExitCode> {
    let get = |name: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
    };
    if args.first().map(String::as_str) == Some("corpus") {
        build_corpus(Path::new(&args[1]), Path::new(&args[2]))?;
        return Ok(ExitCode::SUCCESS);
    }
    let (kind, phase) = (&args[0], &args[1]);
    let root = PathBuf::from(get("--root").expect("--root DIR"));
    let corpus = PathBuf::from(get("--corpus").expect("--corpus FILE"));
    let n: usize = get("--n").map_or(0, |s| s.parse().unwrap());
    match phase.as_str() {
        "fill" => {
            let part: usize = get("--part").map_or(0, |s| s.parse().unwrap());
            let parts: usize = get("--parts").map_or(1, |s| s.parse().unwrap());
            let items = load_corpus(&corpus, n)?;
            let t = Instant::now();
            let mut store = open_store(kind, &root)?;
            fill(store.as_mut(), &items, part, parts)?;
            drop(store);
            println!("fill_ms={} entries={}", ms(t), items.len());
        }
        "read" => {
            let items = load_corpus(&corpus, n)?;
            let keys: Vec<Key> = items.iter().map(|i| i.key).collect();
            drop(items);
            let t = Instant::now();
            let mut store = open_store(kind, &root)?;
            let open_ms = ms(t);
            let (mut hits, mut bad, mut bytes) = (Vec::with_capacity(keys.len()), 0, 0);
            for key in &keys {
                match store.get(key)? {
                    Some(v) if verify(key, &v) => {
                        bytes += v.len();
                        hits.push(*key);
                    }
                    Some(_) => bad += 1,
                    None => {}
                }
            }
            let get_ms = ms(t);
            store.touch(&hits)?;
            drop(store);
            println!(
                "read_ms={} open_ms={open_ms} gets_done_ms={get_ms} hits={} corrupt={bad} misses={} bytes={bytes}",
                ms(t),
                hits.len(),
                keys.len() - hits.len() - bad
            );
            if hits.len() != keys.len() {
                return Ok(ExitCode::FAILURE);
            }
        }
        "open" => {
            let items = load_corpus(&corpus, 1)?;
            let t = Instant::now();
            let mut store = open_store(kind, &root)?;
            let open_ms = ms(t);
            let t2 = Instant::now();
            let v = store.get(&items[0].key)?;
            let hit = v.as_deref().is_some_and(|v| verify(&items[0].key, v));
            println!("open_ms={open_ms} first_get_ms={} hit={hit}", ms(t2));
        }
        "concurrent" => {
            let parts: usize = get("--parts").map_or(4, |s| s.parse().unwrap());
            let exe = std::env::current_exe()?;
            let t = Instant::now();
            let children: Vec<_> = (0..parts)
                .map(|p| {
                    Command::new(&exe)
                        .args([kind, "fill", "--root"])
                        .arg(&root)
                        .arg("--corpus")
                        .arg(&corpus)
                        .args(["--n", &n.to_string(), "--part", &p.to_string(), "--parts", &parts.to_string()])
                        .stdout(std::process::Stdio::null())
                        .spawn()
                })
                .collect::<io::Result<_>>()?;
            let mut ok = true;
            for mut c in children {
                ok &= c.wait()?.success();
            }
            println!("concurrent_ms={} writers={parts} all_exited_ok={ok}", ms(t));
        }
        "evict" => {
            // Removes the entries whose key starts with a byte below 64 (a quarter of them).
            let t = Instant::now();
            let mut store = open_store(kind, &root)?;
            let removed = store.evict(&|k: &Key| k[0] < 64)?;
            drop(store);
            println!("evict_ms={} removed={removed}", ms(t));
        }
        "baseline" => {
            // What every `read` process does besides the store: load the key list.
            let items = load_corpus(&corpus, n)?;
            let keys: Vec<Key> = items.iter().map(|i| i.key).collect();
            println!("keys={}", keys.len());
        }
        "size" => {
            let (alloc, apparent, inodes) = disk_usage(&root)?;
            println!("alloc_bytes={alloc} apparent_bytes={apparent} inodes={inodes}");
        }
        other => return Err(io::Error::other(format!("unknown phase {other}"))),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!(
            "usage: store-compare corpus SRC_TREE OUT\n       \
             store-compare files|files-skip|sqlite|sqlite-mmap|pack|pack-mmap fill|read|open|concurrent|evict|size \
             --root DIR --corpus FILE [--n N] [--part P --parts K]"
        );
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
