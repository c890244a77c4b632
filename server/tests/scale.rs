//! The server at scale against a hostile client: answers of the largest entries, stores of a
//! gigabyte, keys made to take room, and uploads of a million frames. Memory follows bytes, a
//! write or a scrape reads what it needs and not the store, the size limit holds for what is
//! really on disk, and a huge upload never makes another writer's put fail.

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pycache_proto::api::{self, BatchPutResponse};
use pycache_proto::pack::{decode_pack, encode_pack, Frame};
use pycache_proto::{CacheKey, Entry, ErrorResponse};
use support::proc::{stalled_reader, status_bytes};
use support::process::{create_token, Server};
use support::{compiled_frame, key};

/// Bytes process `pid` has read through `read`-like calls so far (`rchar` of `/proc/PID/io`:
/// page-cache hits included, so a store that was just written counts as much as a cold one).
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/PID/io")
}

fn data_args(data: &std::path::Path) -> Vec<String> {
    vec!["--data-dir".into(), data.to_str().unwrap().into()]
}

fn start(data: &std::path::Path, extra: &[&str], log_dir: &std::path::Path) -> Server {
    let mut args = data_args(data);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args, log_dir)
}

fn put(http: &reqwest::blocking::Client, server: &Server, token: &str, frames: &[Frame]) -> u16 {
    http.post(server.url(api::BATCH_PUT))
        .bearer_auth(token)
        .body(encode_pack(frames))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// Case 3: batch gets of 32 entries of 8 MiB (the largest the server takes), four read at once
/// and four never read: the server holds about one entry per answer, not 32.
#[test]
fn batch_gets_of_the_largest_entries_hold_one_chunk_per_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&["--data-dir", data.to_str().unwrap()], "ci", "write");
    let http = reqwest::blocking::Client::new();
    let size = (8 << 20) - 64;
    let keys: Vec<String> = (0..32u32).map(|n| key(n).digest().to_hex()).collect();
    {
        let server = start(&data, &[], dir.path());
        for n in (0..32u32).step_by(4) {
            let frames: Vec<Frame> = (n..n + 4).map(|n| compiled_frame(n, size)).collect();
            assert_eq!(put(&http, &server, &token, &frames), 200);
        }
    }
    // A fresh process, so its peak is that of the reads alone.
    let server = start(&data, &["--send-timeout", "120"], dir.path());
    let ready = http.get(server.url(api::HEALTHZ)).send().unwrap();
    assert_eq!(ready.status(), 200);
    let idle = status_bytes(server.pid(), "VmRSS");
    let stalled: Vec<TcpStream> = (0..4)
        .map(|_| stalled_reader(&server, &token, &keys))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (url, token, keys) = (server.url(api::BATCH_GET), token.clone(), keys.clone());
            std::thread::spawn(move || {
                let mut response = reqwest::blocking::Client::new()
                    .post(url)
                    .bearer_auth(token)
                    .json(&serde_json::json!({ "keys": keys }))
                    .timeout(Duration::from_secs(120))
                    .send()
                    .unwrap();
                assert_eq!(response.status(), 200);
                let mut pack = Vec::new();
                response.read_to_end(&mut pack).map_err(|e| e.to_string())?;
                decode_pack(&pack, 8 << 20)
                    .map(|frames| frames.len())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for reader in readers {
        let read = reader.join().unwrap();
        assert_eq!(read, Ok(32), "server log:\n{}", server.log());
    }
    let peak = status_bytes(server.pid(), "VmHWM");
    drop(stalled);
    let report = format!(
        "4 read and 4 stalled batch gets of 32 × 8 MiB: idle {} MB, peak {} MB",
        idle >> 20,
        peak >> 20
    );
    eprintln!("{report}");
    assert!(peak < idle + (150 << 20), "{report}");
}

/// Fills the store in `data` (made by a server that has run once) with `entries` entries of
/// `size`-byte bodies straight through SQLite, keeping the running totals the server keeps.
fn fill_store(data: &std::path::Path, entries: u32, size: u32) {
    let script = r#"
import sqlite3, sys
db, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
con = sqlite3.connect(db)
con.executescript(f"""
BEGIN;
CREATE TEMP TABLE n AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) SELECT i FROM n;
INSERT INTO bodies (digest, size, entry) SELECT randomblob(32), {size}, randomblob({size}) FROM n;
INSERT INTO entries (namespace, key_digest, source_hash, magic, cache_tag, optimization, settings,
    dfile, success, body_digest, size, written_by, frame_digest, signatures, created_at,
    last_used_at, hits)
    SELECT 'default', randomblob(32), randomblob(32), X'a70d0d0a', 'testpy-311', 0,
        'v2;impl=cpython-3.11.7final0;py=3.11.7.final.0;ndr=0;w=0123456789abcdef;digits=4300;rl=1000',
        'site-packages/package/module' || b.rowid || '.py', 1, b.digest, {size}, 'ci',
        randomblob(32), NULL, 0, b.rowid, 0
    FROM bodies b;
UPDATE store_totals SET entries = (SELECT COUNT(*) FROM entries),
    bytes = (SELECT SUM(size) FROM bodies);
COMMIT;
""")
tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
if "interpreter_totals" in tables:
    con.execute("DELETE FROM interpreter_totals")
    con.execute("INSERT INTO interpreter_totals (cache_tag, magic, entries, bytes) "
                "SELECT cache_tag, magic, COUNT(*), SUM(size) FROM entries GROUP BY cache_tag, magic")
    con.commit()
con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
con.close()
"#;
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(data.join("pycache.db"))
        .arg(entries.to_string())
        .arg(size.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "filling the store failed");
}

/// Case 4: on a store of over a gigabyte (100,000 entries of 10 kB), one put, one `/metrics`
/// scrape and one `/api/v1/stats` read less than 1% of it: totals are kept, not counted.
#[test]
fn a_put_and_a_scrape_on_a_gigabyte_store_read_under_one_percent_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&["--data-dir", data.to_str().unwrap()], "ci", "write");
    let (entries, size) = (100_000u32, 10_500u32);
    let stored = u64::from(entries) * u64::from(size);
    fill_store(&data, entries, size);
    let server = start(&data, &["--max-size", "20GiB"], dir.path());
    let http = reqwest::blocking::Client::new();
    assert_eq!(
        http.get(server.url(api::HEALTHZ)).send().unwrap().status(),
        200
    );
    let before = bytes_read(server.pid());
    assert_eq!(
        put(&http, &server, &token, &[compiled_frame(7, 2_000)]),
        200
    );
    let metrics = http
        .get(server.url(api::METRICS))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().unwrap();
    let stats: api::StatsResponse = http
        .get(server.url(api::STATS))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let read = bytes_read(server.pid()) - before;
    let report =
        format!("one put, one scrape and one stats read {read} bytes of a {stored}-byte store");
    eprintln!("{report}");
    assert_eq!(stats.entries, u64::from(entries) + 1, "{report}");
    assert!(metrics.contains("pycache_entries 100001"), "{metrics}");
    let interpreter = stats
        .interpreters
        .iter()
        .find(|i| i.cache_tag == support::TEST_CACHE_TAG)
        .expect("the test interpreter in /stats");
    assert_eq!(interpreter.entries, u64::from(entries) + 1, "{report}");
    assert!(read < stored / 100, "{report}");
}

/// A key as large as the server accepts: a long cache tag, settings and path.
fn hostile_key(n: u32) -> CacheKey {
    let mut k = key(n);
    k.cache_tag = format!("testpy-311-{}", "x".repeat(53));
    k.settings = format!("{n};{}", "s".repeat(500));
    k.dfile = format!("{n}/{}", "d".repeat(4000));
    k
}

/// Case 5: entries with tiny bodies and keys made as large as accepted: the size limit holds
/// for the files on disk (rows, keys, indexes and the WAL), not for body bytes alone.
#[test]
fn max_size_holds_for_the_files_on_disk_with_hostile_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&["--data-dir", data.to_str().unwrap()], "ci", "write");
    let limit: u64 = 8 << 20;
    let server = start(
        &data,
        &["--max-size", "8MiB", "--maintenance-interval", "0.5"],
        dir.path(),
    );
    let http = reqwest::blocking::Client::new();
    for round in 0..10u32 {
        let frames: Vec<Frame> = (0..500)
            .map(|n| {
                let mut body = vec![0xe3];
                body.extend((round * 500 + n).to_le_bytes());
                Frame::new(
                    hostile_key(round * 500 + n),
                    &Entry::compiled(body, String::new()),
                )
            })
            .collect();
        let response = http
            .post(server.url(api::BATCH_PUT))
            .bearer_auth(&token)
            .body(encode_pack(&frames))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: BatchPutResponse = response.json().unwrap();
        assert_eq!(answer.stored.len(), 500, "{:?}", answer.refused.first());
    }
    // A maintenance round or two later.
    std::thread::sleep(Duration::from_secs(2));
    let on_disk: u64 = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let report =
        format!("{on_disk} bytes on disk for --max-size {limit} after 5,000 keys of 4.5 kB");
    eprintln!("{report}");
    assert!(on_disk <= limit + limit / 10, "{report}");
    assert!(
        on_disk >= limit / 4,
        "eviction removed far more than needed: {report}"
    );
}

/// Case 6: an upload of a million tiny frames beside small puts: the upload is refused as soon
/// as it passes the frame limit (a JSON 413), one at the limit is stored, and no small put
/// beside either fails or waits long.
#[test]
fn a_million_frame_upload_never_fails_another_put() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&["--data-dir", data.to_str().unwrap()], "ci", "write");
    let server = start(&data, &[], dir.path());
    let http = reqwest::blocking::Client::new();
    let info: api::ServerInfo = http
        .get(server.url(api::INFO))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let cap = info.max_batch_keys as u32;
    assert!(cap <= 100_000, "a batch may hold {cap} frames");
    let tiny = |n: u32| {
        let mut body = vec![0xe3];
        body.extend(n.to_le_bytes());
        Frame::new(key(n), &Entry::compiled(body, String::new()))
    };
    let million = encode_pack(&(1_000_000..2_000_000).map(tiny).collect::<Vec<_>>());
    let at_cap = encode_pack(&(3_000_000..3_000_000 + cap).map(tiny).collect::<Vec<_>>());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let small_puts = {
        let (url, token, stop) = (server.url(api::BATCH_PUT), token.clone(), stop.clone());
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            let mut slowest = Duration::ZERO;
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let frames: Vec<Frame> =
                    (0..10).map(|i| compiled_frame(n * 10 + i, 2_000)).collect();
                let started = Instant::now();
                let response = http
                    .post(&url)
                    .bearer_auth(&token)
                    .body(encode_pack(&frames))
                    .send()
                    .unwrap();
                slowest = slowest.max(started.elapsed());
                let status = response.status().as_u16();
                assert!(
                    status == 200,
                    "a small put beside a huge upload answered {status}: {}",
                    response.text().unwrap_or_default()
                );
                n += 1;
            }
            (n, slowest)
        })
    };
    let refused = http
        .post(server.url(api::BATCH_PUT))
        .bearer_auth(&token)
        .body(million)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 413);
    let err: ErrorResponse = refused.json().unwrap();
    assert!(err.message.contains("frames"), "{}", err.message);
    let stored = http
        .post(server.url(api::BATCH_PUT))
        .bearer_auth(&token)
        .body(at_cap)
        .timeout(Duration::from_secs(300))
        .send()
        .unwrap();
    assert_eq!(stored.status(), 200);
    let answer: BatchPutResponse = stored.json().unwrap();
    assert_eq!(answer.stored.len(), cap as usize);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (puts, slowest) = small_puts.join().unwrap();
    eprintln!("{puts} small puts beside, the slowest took {slowest:?}");
    assert!(puts > 0);
    assert!(
        slowest < Duration::from_secs(5),
        "a small put took {slowest:?}"
    );
}

/// Bodies are compressed once when stored and sent as stored: the database holds zstd frames
/// smaller than the entries, and a zstd answer is those frames between raw ones, decoding to
/// exactly the plain answer.
#[test]
fn bodies_are_compressed_at_rest_and_served_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&["--data-dir", data.to_str().unwrap()], "ci", "write");
    let server = start(&data, &[], dir.path());
    // An HTTP client that leaves the answer's encoding alone.
    let http = reqwest::blocking::Client::builder()
        .no_zstd()
        .build()
        .unwrap();
    let frames: Vec<Frame> = (0..200).map(|n| compiled_frame(n, 5_000)).collect();
    assert_eq!(put(&http, &server, &token, &frames), 200);
    let entry_bytes: usize = frames.iter().map(|f| f.entry_bytes.len()).sum();
    let at_rest = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; print(*sqlite3.connect(sys.argv[1]).execute(\
             'SELECT COUNT(*), SUM(size), SUM(LENGTH(entry)) FROM bodies WHERE zstd').fetchone())",
        ])
        .arg(data.join("pycache.db"))
        .output()
        .unwrap();
    let at_rest = String::from_utf8(at_rest.stdout).unwrap();
    let numbers: Vec<usize> = at_rest
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(numbers[0], 200, "bodies stored compressed: {at_rest}");
    assert_eq!(numbers[1], numbers[2], "size is the stored size");
    assert!(
        numbers[1] < entry_bytes / 2,
        "{at_rest} for {entry_bytes} entry bytes"
    );

    let keys: Vec<String> = frames.iter().map(|f| f.key.digest().to_hex()).collect();
    let ask = |zstd: bool| {
        let mut request = http
            .post(server.url(api::BATCH_GET))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "keys": keys }));
        if zstd {
            request = request.header("accept-encoding", "zstd");
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 200);
        let encoding = response
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        (encoding, response.bytes().unwrap().to_vec())
    };
    let (plain_encoding, plain) = ask(false);
    assert_eq!(plain_encoding, None);
    let (encoding, compressed) = ask(true);
    assert_eq!(encoding.as_deref(), Some("zstd"));
    let decoded = zstd::stream::decode_all(&compressed[..]).unwrap();
    let first_difference = decoded.iter().zip(&plain).position(|(a, b)| a != b);
    assert!(
        decoded == plain,
        "the zstd answer decodes to {} bytes, the plain one is {}; first difference at {:?}: {:?} / {:?}",
        decoded.len(),
        plain.len(),
        first_difference,
        first_difference.map(|at| &decoded[at..(at + 16).min(decoded.len())]),
        first_difference.map(|at| &plain[at..(at + 16).min(plain.len())]),
    );
    assert!(compressed.len() < plain.len() / 2);
    let served = decode_pack(&plain, 1 << 20).unwrap();
    assert_eq!(served.len(), frames.len());
    for (served, sent) in served.iter().zip(&frames) {
        assert_eq!(served.key, sent.key);
        assert_eq!(served.entry_bytes, sent.entry_bytes);
        assert_eq!(served.digest, sent.digest);
    }
}
