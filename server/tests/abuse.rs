//! The server under abuse and failure: a huge batch get costs no memory before it is refused,
//! the binary key list works, and a database that is down answers 503 quickly.

mod support;

use std::time::{Duration, Instant};

use pycache_proto::api::{self, BatchPutResponse};
use pycache_proto::pack::{decode_pack, encode_pack, Frame};
use pycache_proto::{ErrorResponse, KeyDigest};
use support::process::{create_token, Server};
use support::{compiled_frame, pg};

/// The peak resident set size of process `pid` so far (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

fn sqlite_server(dir: &std::path::Path) -> (Server, String) {
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap();
    let token = create_token(&["--data-dir", data_arg], "ci", "write");
    (Server::start(&["--data-dir", data_arg], dir), token)
}

#[test]
fn a_million_key_batch_get_is_refused_without_taking_its_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) = sqlite_server(dir.path());
    let http = reqwest::blocking::Client::new();
    // Warm the server up a little so its idle size is measured after start-up allocations.
    let ok = http.get(server.url(api::HEALTHZ)).send().unwrap();
    assert_eq!(ok.status(), 200);
    let idle = peak_rss(server.pid());

    let keys: Vec<String> = (0..1_000_000u32)
        .map(|n| hex::encode(blake3::hash(&n.to_le_bytes()).as_bytes()))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap();
    assert!(body.len() > 60 << 20);
    let mut threads = Vec::new();
    let body = std::sync::Arc::new(body);
    for _ in 0..4 {
        let body = body.clone();
        let url = server.url(api::BATCH_GET);
        let token = token.clone();
        threads.push(std::thread::spawn(move || {
            let response = reqwest::blocking::Client::new()
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send();
            // The server may answer 413 and close before the whole body is sent.
            match response {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().unwrap_or_default();
                    let code = serde_json::from_str::<ErrorResponse>(&text)
                        .map_or_else(|e| format!("{e}: {text}"), |err| err.code);
                    (status, code)
                }
                Err(e) => (0, e.to_string()),
            }
        }));
    }
    for t in threads {
        let (status, code) = t.join().unwrap();
        // The answer is 413 (its JSON body may be lost when the server closes the connection
        // before the client has sent everything), or the send itself fails for that reason.
        assert!(status == 413 || status == 0, "{status} {code}");
    }
    let peak = peak_rss(server.pid());
    assert!(
        peak < idle + (100 << 20),
        "peak RSS {} MB, idle {} MB",
        peak >> 20,
        idle >> 20
    );
}

#[test]
fn batch_get_takes_a_binary_key_list() {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) = sqlite_server(dir.path());
    let http = reqwest::blocking::Client::new();
    let frames: Vec<Frame> = (0..20).map(|n| compiled_frame(n, 300)).collect();
    let stored: BatchPutResponse = http
        .post(server.url(api::BATCH_PUT))
        .bearer_auth(&token)
        .body(encode_pack(&frames))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stored.stored.len(), 20);
    let mut keys: Vec<KeyDigest> = frames.iter().map(Frame::key_digest).collect();
    keys.push(KeyDigest([7; 32]));
    let response = http
        .post(server.url(api::BATCH_GET))
        .bearer_auth(&token)
        .header("content-type", api::KEY_LIST_CONTENT_TYPE)
        .body(api::encode_key_list(&keys))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        decode_pack(&response.bytes().unwrap(), 1 << 20).unwrap(),
        frames
    );
    let partial = http
        .post(server.url(api::BATCH_GET))
        .bearer_auth(&token)
        .header("content-type", api::KEY_LIST_CONTENT_TYPE)
        .body(vec![0u8; 33])
        .send()
        .unwrap();
    assert_eq!(partial.status(), 400);
    assert_eq!(partial.json::<ErrorResponse>().unwrap().code, "bad_key");
}

#[test]
fn postgres_down_is_a_quick_503() {
    let cluster = pg::start();
    let url = cluster.create_database("down");
    let token = create_token(&["--database-url", &url], "ci", "read");
    let logs = tempfile::tempdir().unwrap();
    let server = Server::start(&["--database-url", &url], logs.path());
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    assert_eq!(
        http.get(server.url(api::READYZ)).send().unwrap().status(),
        200
    );

    cluster.stop();
    let started = Instant::now();
    let ready = http.get(server.url(api::READYZ)).send().unwrap();
    let took = started.elapsed();
    assert_eq!(ready.status(), 503);
    assert!(took < Duration::from_secs(1), "/readyz took {took:?}");
    assert_eq!(ready.json::<ErrorResponse>().unwrap().code, "unavailable");

    let started = Instant::now();
    let get = http
        .post(server.url(api::BATCH_GET))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "keys": [KeyDigest([1; 32]).to_hex()] }))
        .send()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(get.status(), 503);
    assert_eq!(get.json::<ErrorResponse>().unwrap().code, "unavailable");
    assert!(took < Duration::from_secs(4), "batch get took {took:?}");
}

/// A server whose process may open at most 1,024 files (systemd's default soft limit).
fn server_with_fd_limit(dir: &std::path::Path, extra: &[&str]) -> Server {
    let data = dir.join("data");
    let mut command = std::process::Command::new("sh");
    command.args(["-c", "ulimit -n 1024 && exec \"$0\" \"$@\""]);
    command.arg(pycache_testkit::server::binary());
    let mut args = vec!["--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start_with(command, &args, dir)
}

#[test]
fn healthz_answers_within_a_second_beside_1100_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_fd_limit(dir.path(), &["--header-timeout", "60"]);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let idle: Vec<std::net::TcpStream> = (0..1100)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect an idle socket"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for round in 0..5 {
        let started = Instant::now();
        let answer = http.get(server.url(api::HEALTHZ)).send();
        let took = started.elapsed();
        let status = answer.map(|r| r.status().as_u16());
        assert!(
            matches!(status, Ok(200)) && took < Duration::from_secs(1),
            "round {round}: /healthz {status:?} after {took:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(idle);
    assert!(
        !server.log().contains("Too many open files"),
        "{}",
        server.log()
    );
}

#[test]
fn slowloris_headers_are_cut_after_the_header_timeout() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_fd_limit(dir.path(), &["--header-timeout", "1"]);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut socket = std::net::TcpStream::connect(&addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let started = Instant::now();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let closed_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a connection dripping its headers is still open after {:?}",
            started.elapsed()
        );
        let mut buf = [0u8; 256];
        match socket.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break started.elapsed(),
        }
        if socket.write_all(b"X").is_err() {
            break started.elapsed();
        }
    };
    assert!(
        closed_after >= Duration::from_millis(900),
        "{closed_after:?}"
    );
}

#[test]
fn max_size_holds_at_every_write_and_space_returns_to_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let token = create_token(&["--data-dir", data_arg], "ci", "write");
    let limit: u64 = 5 << 20;
    let server = Server::start(
        &[
            "--data-dir",
            data_arg,
            "--max-size",
            "5MiB",
            "--maintenance-interval",
            "0.5",
        ],
        dir.path(),
    );
    let http = reqwest::blocking::Client::new();
    for round in 0..40u32 {
        let frames: Vec<Frame> = (0..50)
            .map(|n| compiled_frame(round * 50 + n, 20_000))
            .collect();
        let response = http
            .post(server.url(api::BATCH_PUT))
            .bearer_auth(&token)
            .body(encode_pack(&frames))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        let stats: api::StatsResponse = http
            .get(server.url(api::STATS))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(
            stats.bytes <= limit + limit / 10,
            "after batch {round} the store holds {} bytes, over 5 MiB + 10%",
            stats.bytes
        );
    }
    // One maintenance round later the files hold about what the store holds.
    std::thread::sleep(Duration::from_millis(1500));
    let on_disk: u64 = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        on_disk < limit + limit / 2,
        "{on_disk} bytes on disk for a 5 MiB store after 40 MB went through it"
    );
}

#[test]
fn too_many_headers_is_a_json_431() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _token) = sqlite_server(dir.path());
    let mut request = reqwest::blocking::Client::new().get(server.url(api::HEALTHZ));
    for n in 0..200 {
        request = request.header(format!("x-filler-{n}"), "y".repeat(40));
    }
    let response = request.send().unwrap();
    assert_eq!(response.status(), 431);
    let err: ErrorResponse = response.json().expect("a JSON ErrorResponse");
    assert_eq!(err.code, "headers_too_large");
}
