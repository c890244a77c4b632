//! An acknowledged write is durable: a full disk (SQLite on a small tmpfs) and concurrent
//! overlapping batches (PostgreSQL) never turn into a 200 for entries that are not stored, nor
//! into a 500.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pycache_proto::api::{self, BatchPutResponse};
use pycache_proto::pack::{decode_pack, encode_pack, Frame};
use pycache_proto::{ErrorResponse, KeyDigest};
use support::process::{create_token, Server};
use support::{compiled_frame, pg};

/// A tmpfs of a fixed size mounted on a temp dir; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("pycache-tmpfs-")
            .tempdir()
            .unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs needs root (the tests run as root in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Distinct, incompressible-ish frames `from..from+count` of `size` bytes.
fn frames(from: u32, count: u32, size: usize) -> Vec<Frame> {
    (from..from + count)
        .map(|n| {
            let mut frame = compiled_frame(n, size);
            // Make the body pseudo-random so pages do not compress or repeat.
            let body: Vec<u8> = std::iter::once(0xe3)
                .chain((1..size).map(|i| {
                    blake3::hash(&[n.to_le_bytes(), (i as u32).to_le_bytes()].concat()).as_bytes()
                        [0]
                }))
                .collect();
            frame = Frame::new(
                frame.key,
                &pycache_proto::Entry::compiled(body, String::new()),
            );
            frame
        })
        .collect()
}

fn put(
    http: &reqwest::blocking::Client,
    server: &Server,
    token: &str,
    frames: &[Frame],
) -> (u16, Vec<u8>) {
    let response = http
        .post(server.url(api::BATCH_PUT))
        .bearer_auth(token)
        .header("content-type", pycache_proto::pack::PACK_CONTENT_TYPE)
        .body(encode_pack(frames))
        .send()
        .expect("the server answers a batch put");
    let status = response.status().as_u16();
    (status, response.bytes().unwrap().to_vec())
}

fn get(
    http: &reqwest::blocking::Client,
    server: &Server,
    token: &str,
    keys: &[KeyDigest],
) -> Vec<Frame> {
    let hex: Vec<String> = keys.iter().map(KeyDigest::to_hex).collect();
    let response = http
        .post(server.url(api::BATCH_GET))
        .bearer_auth(token)
        .json(&serde_json::json!({ "keys": hex }))
        .send()
        .unwrap_or_else(|e| panic!("batch get: {e}\n{}", server.log()));
    let status = response.status();
    let body = response.bytes().unwrap();
    assert_eq!(
        status,
        200,
        "batch get: {}\n{}",
        String::from_utf8_lossy(&body),
        server.log()
    );
    decode_pack(&body, 1 << 24).unwrap()
}

#[test]
fn sqlite_disk_full_never_acknowledges_a_lost_write() {
    let fs = Tmpfs::mount("30m");
    let data: PathBuf = fs.path().join("data");
    let data_arg = data.to_str().unwrap();
    let token = create_token(&["--data-dir", data_arg], "ci", "write");
    let logs = tempfile::tempdir().unwrap();
    let args = [
        "--data-dir",
        data_arg,
        "--maintenance-interval",
        "0.2",
        "--max-size",
        "0",
    ];
    let mut server = Server::start(&args, logs.path());
    // Space that "returns" later: a filler file deleted once the disk is full.
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0x55u8; 8 << 20]).unwrap();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let mut acknowledged: Vec<KeyDigest> = Vec::new();
    let mut full_answers = 0;
    let mut next = 0u32;
    let mut freed = false;
    let mut after_free_ok = 0;
    for round in 0..400 {
        let batch = frames(next, 40, 24_000);
        next += 40;
        let (status, body) = put(&http, &server, &token, &batch);
        match status {
            200 => {
                let answer: BatchPutResponse = serde_json::from_slice(&body).unwrap();
                assert_eq!(answer.stored.len(), batch.len());
                acknowledged.extend(answer.stored);
                if freed {
                    after_free_ok += 1;
                }
            }
            507 => {
                let err: ErrorResponse = serde_json::from_slice(&body)
                    .unwrap_or_else(|e| panic!("507 without a JSON ErrorResponse ({e}): {body:?}"));
                assert_eq!(err.code, "insufficient_storage", "{}", err.message);
                full_answers += 1;
            }
            other => panic!(
                "batch put {round} answered {other} (want 200 or 507): {}\n{}",
                String::from_utf8_lossy(&body),
                server.log()
            ),
        }
        // Reads between writes, so hit flushes run while the disk is full.
        let probe: Vec<KeyDigest> = acknowledged.iter().rev().take(20).copied().collect();
        let found = get(&http, &server, &token, &probe);
        assert_eq!(
            found.len(),
            probe.len(),
            "an acknowledged entry is not served"
        );
        if full_answers >= 5 && !freed {
            std::fs::remove_file(&filler).unwrap();
            freed = true;
        }
        if after_free_ok >= 3 {
            break;
        }
    }
    assert!(full_answers >= 5, "the disk never filled up");
    assert!(
        after_free_ok >= 3,
        "writes did not commit again after space returned:\n{}",
        server.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let log = server.log();
    assert!(
        !log.contains("database is locked"),
        "a flush wedged:\n{log}"
    );

    let stop = Instant::now();
    assert!(
        server.signal_and_wait("TERM"),
        "SIGTERM should stop the server cleanly:\n{}",
        server.log()
    );
    assert!(
        stop.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        stop.elapsed()
    );

    let server = Server::start(&args, logs.path());
    let mut missing = BTreeSet::new();
    for chunk in acknowledged.chunks(500) {
        let found: BTreeSet<KeyDigest> = get(&http, &server, &token, chunk)
            .iter()
            .map(Frame::key_digest)
            .collect();
        missing.extend(chunk.iter().filter(|k| !found.contains(k)).copied());
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged entries were lost after a restart",
        missing.len(),
        acknowledged.len()
    );
}

#[test]
fn postgres_concurrent_overlapping_batches_never_deadlock() {
    let cluster = pg::start();
    let url = cluster.create_database("deadlock");
    let token = create_token(&["--database-url", &url], "ci", "write");
    let logs = tempfile::tempdir().unwrap();
    let server = Server::start(&["--database-url", &url], logs.path());
    let all = frames(0, 300, 200);
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let mut order = all.clone();
            match t % 3 {
                0 => {}
                1 => order.reverse(),
                _ => {
                    // A fixed shuffle per thread (no rand dependency): sort by a keyed hash.
                    order.sort_by_key(|f| {
                        blake3::hash(&[&[t as u8][..], &f.key_digest().0].concat()).as_bytes()[..8]
                            .to_vec()
                    });
                }
            }
            let base = server.base.clone();
            let token = token.clone();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let mut statuses = Vec::new();
                for _ in 0..20 {
                    let response = http
                        .post(format!("{base}{}", api::BATCH_PUT))
                        .bearer_auth(&token)
                        .body(encode_pack(&order))
                        .send()
                        .unwrap();
                    let status = response.status().as_u16();
                    let body = response.text().unwrap();
                    statuses.push((status, body));
                }
                statuses
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in threads {
        for (status, body) in t.join().unwrap() {
            if status != 200 {
                failures.push(format!("{status}: {body}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 120 batch puts failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let http = reqwest::blocking::Client::new();
    let keys: Vec<KeyDigest> = all.iter().map(Frame::key_digest).collect();
    assert_eq!(get(&http, &server, &token, &keys), all);
}

/// Uploads are spooled to disk while they arrive: a spool directory that fills up refuses the
/// upload with a JSON 507 that says where, stores nothing of it, and the space comes back at
/// once (the spool file has no name), so the next upload that fits is stored.
#[test]
fn a_full_spool_directory_is_a_json_507_and_stores_nothing() {
    let fs = Tmpfs::mount("2m");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let token = create_token(&["--data-dir", data_arg], "ci", "write");
    let spool = fs.path().to_str().unwrap();
    let server = Server::start(&["--data-dir", data_arg, "--spool-dir", spool], dir.path());
    let http = reqwest::blocking::Client::new();

    let big = frames(0, 40, 100_000);
    let (status, body) = put(&http, &server, &token, &big);
    let error: ErrorResponse = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    assert_eq!((status, error.code.as_str()), (507, "insufficient_storage"));
    assert!(error.message.contains("spool"), "{}", error.message);
    // The server answered before reading the whole body, so it closes that connection.
    let http = reqwest::blocking::Client::new();
    let keys: Vec<KeyDigest> = big.iter().map(|f| f.key.digest()).collect();
    assert!(
        get(&http, &server, &token, &keys).is_empty(),
        "nothing of a refused upload is stored"
    );
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0);

    let small = frames(100, 5, 100_000);
    let (status, body) = put(&http, &server, &token, &small);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let stored: BatchPutResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(stored.stored.len(), 5);
    let keys: Vec<KeyDigest> = small.iter().map(|f| f.key.digest()).collect();
    assert_eq!(get(&http, &server, &token, &keys).len(), 5);
}
