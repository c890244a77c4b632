//! The server under abuse and failure: a huge batch get or a zstd bomb costs no memory before it
//! is refused, a burst of large uploads gives its memory back, the binary key list works, and a
//! database that is down answers 503 quickly.

mod support;

use std::time::{Duration, Instant};

use pycache_proto::api::{self, BatchPutResponse};
use pycache_proto::pack::{decode_pack, encode_pack, Frame};
use pycache_proto::{ErrorResponse, KeyDigest};
use support::proc::{peak_rss, rss};
use support::process::{create_token, Server};
use support::{compiled_frame, pg};

fn stats(http: &reqwest::blocking::Client, server: &Server, token: &str) -> api::StatsResponse {
    http.get(server.url(api::STATS))
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap()
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

/// A zstd body of valid frames, one `compiled_frame` over and over, that decodes to `decoded`
/// bytes (no end marker: the server must refuse it before the end).
fn zstd_bomb(decoded: usize) -> Vec<u8> {
    use std::io::Write;
    let frame = encode_pack(&[compiled_frame(1, 60_000)]);
    // The pack without its end marker: magic, one frame.
    let frame = &frame[pycache_proto::pack::PACK_MAGIC.len()..frame.len() - 8];
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    encoder.write_all(pycache_proto::pack::PACK_MAGIC).unwrap();
    let mut written = 0;
    while written < decoded {
        encoder.write_all(frame).unwrap();
        written += frame.len();
    }
    encoder.finish().unwrap()
}

/// Sends `bomb` as a zstd batch put; the status and error body.
fn send_bomb(url: &str, token: &str, bomb: &[u8]) -> (u16, ErrorResponse) {
    let response = reqwest::blocking::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", pycache_proto::pack::PACK_CONTENT_TYPE)
        .header("content-encoding", "zstd")
        .body(bomb.to_vec())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    let err = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {status} {text}"));
    (status, err)
}

/// Waits up to 5 seconds for the resident size of `pid` to fall below `limit`; the last size.
fn rss_settles_below(pid: u32, limit: u64) -> u64 {
    let started = Instant::now();
    loop {
        let now = rss(pid);
        if now < limit || started.elapsed() > Duration::from_secs(5) {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_zstd_bomb_is_refused_without_taking_its_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) = sqlite_server(dir.path());
    let http = reqwest::blocking::Client::new();
    let info: api::ServerInfo = http
        .get(server.url(api::INFO))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let limit = usize::try_from(info.max_request_bytes).unwrap();
    let bomb = std::sync::Arc::new(zstd_bomb(limit + (16 << 20)));
    assert!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());
    let (idle_peak, idle) = (peak_rss(server.pid()), rss(server.pid()));
    let url = server.url(api::BATCH_PUT);

    let (status, err) = send_bomb(&url, &token, &bomb);
    assert_eq!((status, err.code.as_str()), (413, "payload_too_large"));
    assert!(err.message.contains("limit"), "{}", err.message);
    let one_peak = peak_rss(server.pid());
    let one_after = rss_settles_below(server.pid(), idle + (20 << 20));

    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (url, token, bomb) = (url.clone(), token.clone(), bomb.clone());
            std::thread::spawn(move || send_bomb(&url, &token, &bomb))
        })
        .collect();
    for thread in threads {
        let (status, err) = thread.join().unwrap();
        assert_eq!((status, err.code.as_str()), (413, "payload_too_large"));
    }
    let many_peak = peak_rss(server.pid());
    let many_after = rss_settles_below(server.pid(), idle + (20 << 20));

    let report = format!(
        "bomb {} KB; idle {} MB (peak {} MB); one bomb: peak {} MB, after {} MB; \
         16 at once: peak {} MB, after {} MB",
        bomb.len() >> 10,
        idle >> 20,
        idle_peak >> 20,
        one_peak >> 20,
        one_after >> 20,
        many_peak >> 20,
        many_after >> 20
    );
    eprintln!("{report}");
    assert!(many_peak < idle_peak + (100 << 20), "{report}");
    assert!(many_after < idle + (20 << 20), "{report}");
}

/// Sixteen uploads of 15 MB at once: the server spools each to disk as it arrives and stores
/// it entry by entry, so its peak memory does not grow with their total (240 MB); afterwards
/// what the requests used goes back to the system.
#[test]
fn sixteen_large_uploads_at_once_neither_hold_nor_keep_their_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spool = dir.path().join("spool");
    let token = create_token(&["--data-dir", data.to_str().unwrap()], "ci", "write");
    let server = Server::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--spool-dir",
            spool.to_str().unwrap(),
        ],
        dir.path(),
    );
    let frames: Vec<Frame> = (0..320).map(|n| compiled_frame(n, 50_000)).collect();
    let pack = std::sync::Arc::new(encode_pack(&frames));
    drop(frames);
    let url = server.url(api::BATCH_PUT);
    let http = reqwest::blocking::Client::new();
    assert_eq!(
        http.get(server.url(api::HEALTHZ)).send().unwrap().status(),
        200
    );
    let idle = rss(server.pid());
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (url, token, pack) = (url.clone(), token.clone(), pack.clone());
            std::thread::spawn(move || {
                reqwest::blocking::Client::new()
                    .post(url)
                    .bearer_auth(token)
                    .body(pack.to_vec())
                    .send()
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 200);
    }
    let peak = peak_rss(server.pid());
    let after = rss_settles_below(server.pid(), idle + (40 << 20));
    let report = format!(
        "16 uploads of {} MB: idle {} MB, peak {} MB, after {} MB",
        pack.len() >> 20,
        idle >> 20,
        peak >> 20,
        after >> 20
    );
    eprintln!("{report}");
    assert!(peak < idle + (64 << 20), "{report}");
    assert!(after < idle + (40 << 20), "{report}");
    // Every entry was stored (the 16 uploads carry the same 320).
    assert_eq!(stats(&http, &server, &token).entries, 320);
    let leftovers = std::fs::read_dir(dir.path().join("spool")).unwrap().count();
    assert_eq!(leftovers, 0, "the spool directory is left empty");
}

/// Sixteen batch gets at once, each for 1,000 entries of 20 kB (20 MB of answer each, read
/// slowly): the server streams each answer in chunks of about 512 KiB of entries and copies
/// nothing twice, so its peak memory stays far below the 320 MB the answers add up to.
#[test]
fn sixteen_large_batch_gets_at_once_stream_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) = sqlite_server(dir.path());
    let http = reqwest::blocking::Client::new();
    let frames: Vec<Frame> = (0..1000).map(|n| compiled_frame(n, 20_000)).collect();
    let keys: Vec<String> = frames.iter().map(|f| f.key.digest().to_hex()).collect();
    for batch in frames.chunks(250) {
        let response = http
            .post(server.url(api::BATCH_PUT))
            .bearer_auth(&token)
            .body(encode_pack(batch))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    drop(frames);
    let idle = rss(server.pid());
    let body = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (url, token, body) = (server.url(api::BATCH_GET), token.clone(), body.clone());
            std::thread::spawn(move || {
                let mut response = reqwest::blocking::Client::new()
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .unwrap();
                assert_eq!(response.status(), 200);
                // A slow reader: the server must not queue the whole answer for it.
                let mut pack = Vec::new();
                let mut buf = [0u8; 64 << 10];
                loop {
                    let n = std::io::Read::read(&mut response, &mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    pack.extend_from_slice(&buf[..n]);
                    std::thread::sleep(Duration::from_millis(2));
                }
                decode_pack(&pack, 1 << 24).unwrap().len()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 1000);
    }
    let peak = peak_rss(server.pid());
    let report = format!(
        "16 batch gets of 20 MB: idle {} MB, peak {} MB",
        idle >> 20,
        peak >> 20
    );
    eprintln!("{report}");
    assert!(peak < idle + (120 << 20), "{report}");
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
        let stats = stats(&http, &server, &token);
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
