//! The client against servers that misbehave on purpose, over real TCP on 127.0.0.1: one that
//! drips its answer a byte at a time, one that streams frames without end. The client's
//! deadline is for the whole request and it accepts no more than the keys it asked for can
//! weigh: the run ends in time, compiles locally, and writes correct .pyc files.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT: &str = env!("CARGO_BIN_EXE_pycache-client");

/// How the fake server answers a batch get.
#[derive(Clone, Copy)]
enum Answer {
    /// One byte of a pack every 300 ms, forever.
    Drip,
    /// Valid 400 KiB frames, as fast as the socket takes them, forever.
    Flood,
    /// Nothing at all: not even the answer's head.
    Silent,
}

fn info_json() -> String {
    serde_json::json!({
        "version": "test",
        "max_entry_bytes": 512 * 1024,
        "max_request_bytes": 64 << 20,
        "max_batch_keys": 10000,
        "scope": "read",
        "public_read": true,
    })
    .to_string()
}

/// Reads one request's head and body; returns its path.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let path = first.split_whitespace().nth(1)?.to_owned();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(path)
}

/// One valid pack frame (without the pack header) of an entry of about 400 KiB.
fn big_frame() -> Vec<u8> {
    let key = pycache_proto::CacheKey {
        source_hash: [7; 32],
        magic: *b"\xa7\x0d\r\n",
        cache_tag: "cpython-311".into(),
        optimization: 0,
        settings: "flood".into(),
        dfile: "flood.py".into(),
    };
    let mut body = vec![0xe3u8];
    body.resize(400 * 1024, 0x4e);
    let entry = pycache_proto::Entry::compiled(body, String::new());
    let mut pack = pycache_proto::pack::PackWriter::new();
    pack.push(&pycache_proto::pack::Frame::new(key, &entry));
    let bytes = pack.finish();
    bytes[8..bytes.len() - 8].to_vec()
}

fn serve(listener: TcpListener, answer: Answer, sent: Arc<AtomicU64>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let sent = Arc::clone(&sent);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut out = stream;
            while let Some(path) = read_request(&mut reader) {
                if path.ends_with("/info") {
                    let body = info_json();
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    continue;
                }
                if let Answer::Silent = answer {
                    // Holds the connection until the client gives up on it.
                    let _ = reader.read_to_end(&mut Vec::new());
                    return;
                }
                let _ = out.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-pycache-pack\r\ncontent-length: 1000000000\r\n\r\nPYCPACK\x01",
                );
                match answer {
                    Answer::Drip => loop {
                        std::thread::sleep(Duration::from_millis(300));
                        if out.write_all(&[0]).is_err() {
                            return;
                        }
                    },
                    Answer::Silent => unreachable!("answered above"),
                    Answer::Flood => {
                        // Every frame is valid: the client can only stop by its own bound.
                        let frame = big_frame();
                        loop {
                            if out.write_all(&frame).is_err() {
                                return;
                            }
                            sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
}

fn run_against(answer: Answer) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    std::thread::spawn(move || serve(listener, answer, counter));
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..5 {
        std::fs::write(src.join(format!("m{i}.py")), format!("X = {i}\n")).unwrap();
    }
    let reference = tmp.path().join("reference");
    std::fs::create_dir_all(&reference).unwrap();
    Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&reference)
        .status()
        .unwrap();
    let started = Instant::now();
    let out = Command::new(CLIENT)
        .current_dir(tmp.path())
        .env("PYCACHE_CACHE_DIR", tmp.path().join("cache"))
        .env("PYCACHE_SERVER", &url)
        .env("PYCACHE_TIMEOUT", "2")
        .env_remove("PYCACHE_TOKEN")
        .env_remove("PYCACHE_PYTHON")
        .args(["compileall", "-q", "src"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        took < Duration::from_secs(15),
        "the run took {took:?} against a 2 s deadline: {stderr}"
    );
    assert!(
        stderr.contains(&url),
        "the warning names the server: {stderr}"
    );
    let status = Command::new("python3")
        .current_dir(&reference)
        .args(["-m", "compileall", "-q", "src"])
        .status()
        .unwrap();
    assert!(status.success());
    let pycs = |root: &Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(root.join("src/__pycache__"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(pycs(tmp.path()), pycs(&reference));
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        sent < 64 << 20,
        "the client took {sent} bytes for 5 keys of at most 512 KiB each"
    );
}

#[test]
fn a_server_that_drips_its_answer_is_given_up_at_the_deadline() {
    run_against(Answer::Drip);
}

#[test]
fn a_server_that_streams_without_end_is_cut_off_by_the_clients_bound() {
    run_against(Answer::Flood);
}

/// A server that accepts connections and reads requests, and never answers any.
fn black_hole(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            while read_request(&mut reader).is_some() {}
        });
    }
}

/// `sync` of `files` fresh files in a new directory under `base`, with `server` or none;
/// returns how long it took and its stderr.
fn timed_cold_sync(
    base: &Path,
    name: &str,
    server: Option<&str>,
    files: usize,
) -> (Duration, String) {
    let root = base.join(name);
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        let body = format!("import os\n\ndef f{i}(x):\n    return [x * {i} for _ in range(3)]\n");
        std::fs::write(src.join(format!("m{i}.py")), body).unwrap();
    }
    let mut cmd = Command::new(CLIENT);
    cmd.current_dir(&root)
        .env("PYCACHE_CACHE_DIR", root.join("cache"))
        .env_remove("PYCACHE_TOKEN")
        .env_remove("PYCACHE_PYTHON")
        .env_remove("PYCACHE_TIMEOUT")
        .env_remove("PYCACHE_CONNECT_TIMEOUT")
        .env_remove("PYCACHE_SERVER")
        .args(["sync", "--json", "src"]);
    if let Some(url) = server {
        cmd.env("PYCACHE_SERVER", url);
    }
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["compiled"], files as u64, "{summary}");
    (took, stderr)
}

#[test]
fn a_server_that_never_answers_costs_the_connect_timeout_not_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || black_hole(listener));
    let tmp = tempfile::tempdir().unwrap();
    let (alone, _) = timed_cold_sync(tmp.path(), "alone", None, 200);
    // The request deadline is 10 s by default: a run that waited for it would take that long.
    let (with_server, stderr) = timed_cold_sync(tmp.path(), "black-hole", Some(&url), 200);
    assert!(
        with_server < alone + Duration::from_secs(3),
        "the run took {with_server:?} against a server that never answers, {alone:?} without one: {stderr}"
    );
    assert!(
        stderr.contains(&url) && stderr.contains("PYCACHE_CONNECT_TIMEOUT"),
        "the warning names the server and the setting: {stderr}"
    );
}

/// A server that answers the first request and then never answers a lookup: the misses are
/// compiled while the lookup is still out (past the connect timeout, 2 s by default), not
/// after its deadline.
#[test]
fn misses_compile_while_a_silent_lookup_is_still_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || serve(listener, Answer::Silent, Arc::default()));
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("m{i}.py")), format!("X = {i}\n")).unwrap();
    }
    let started = Instant::now();
    let child = Command::new(CLIENT)
        .current_dir(tmp.path())
        .env("PYCACHE_CACHE_DIR", tmp.path().join("cache"))
        .env("PYCACHE_SERVER", &url)
        .env("PYCACHE_TIMEOUT", "8")
        .env_remove("PYCACHE_CONNECT_TIMEOUT")
        .env_remove("PYCACHE_TOKEN")
        .env_remove("PYCACHE_PYTHON")
        .args(["sync", "--json", "src"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pycache = src.join("__pycache__");
    let mut first = None;
    while started.elapsed() < Duration::from_secs(20) {
        let written = std::fs::read_dir(&pycache).map_or(0, |d| d.count());
        if written > 0 {
            first = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let first = first.expect("a .pyc was written");
    assert!(
        first < Duration::from_secs(5),
        "the first .pyc came {first:?} after the start: the run waited for the 8 s deadline \
         of a lookup that never answers: {stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["compiled"], 50, "{summary}");
    assert!(
        stderr.contains(&url),
        "the warning names the server: {stderr}"
    );
}
