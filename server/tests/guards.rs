//! The server's guards on a real server: one token cannot hold every heavy slot and `/readyz`
//! says when all are taken; a database file deleted or read-only under the server refuses
//! writes instead of losing them; `--allowed-host` refuses other sites' host names; invented
//! HTTP methods cost no memory.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pycache_proto::api::{self, BatchPutResponse};
use pycache_proto::pack::{decode_pack, encode_pack, Frame, PACK_CONTENT_TYPE};
use pycache_proto::{Entry, ErrorResponse};
use support::proc::rss;
use support::process::{binary, create_token, Server};
use support::{compiled_frame, key, pg};

/// Status, headers and body of one raw HTTP/1.1 request sent with `host` as its `Host`.
fn raw_request(server: &Server, method: &str, path: &str, host: &str) -> (u16, String) {
    let addr = server.base.trim_start_matches("http://");
    let mut socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        socket,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

/// The JSON error at the end of a raw answer.
fn raw_error(answer: &str) -> ErrorResponse {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn put(
    http: &reqwest::blocking::Client,
    server: &Server,
    token: &str,
    frames: &[Frame],
) -> reqwest::blocking::Response {
    http.post(server.url(api::BATCH_PUT))
        .bearer_auth(token)
        .header("content-type", PACK_CONTENT_TYPE)
        .body(encode_pack(frames))
        .send()
        .unwrap()
}

fn get(
    http: &reqwest::blocking::Client,
    server: &Server,
    token: &str,
    frames: &[&Frame],
) -> reqwest::blocking::Response {
    let keys: Vec<String> = frames.iter().map(|f| f.key_digest().to_hex()).collect();
    http.post(server.url(api::BATCH_GET))
        .bearer_auth(token)
        .json(&serde_json::json!({ "keys": keys }))
        .send()
        .unwrap()
}

/// Asserts a JSON error has `want`'s status and code and names each of `mentions`.
fn assert_refusal((status, err): (u16, ErrorResponse), want: (u16, &str), mentions: &[&str]) {
    assert_eq!((status, err.code.as_str()), want, "{}", err.message);
    for mention in mentions {
        assert!(
            err.message.contains(mention),
            "{mention:?}: {}",
            err.message
        );
    }
}

fn error_of(response: reqwest::blocking::Response) -> (u16, ErrorResponse) {
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    let err = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {status} {text}"));
    (status, err)
}

// ---- 1. Heavy slots: one token's share, and /readyz saturation ------------------------------

/// Holds the row of one stored body locked in PostgreSQL, so every upload that brings a new
/// entry with that body waits inside the store — holding its heavy slot — until released.
struct BodyLock {
    runtime: tokio::runtime::Runtime,
    conn: Option<sqlx::PgConnection>,
}

impl BodyLock {
    fn take(url: &str, body_digest: &[u8]) -> BodyLock {
        use sqlx::Connection;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            let locked = sqlx::query("SELECT 1 FROM bodies WHERE digest = $1 FOR UPDATE")
                .bind(body_digest)
                .execute(&mut conn)
                .await
                .unwrap();
            assert_eq!(locked.rows_affected(), 1, "the body to lock is stored");
            conn
        });
        BodyLock {
            runtime,
            conn: Some(conn),
        }
    }

    fn release(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            self.runtime.block_on(async {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            });
        }
    }
}

/// An entry under key `n` whose body is `body`: many keys, one stored body.
fn frame_with_body(n: u32, body: &[u8]) -> Frame {
    Frame::new(key(n), &Entry::compiled(body.to_vec(), String::new()))
}

/// Uploads `frames` one per thread; each thread's status and error code come back on `done`.
fn puts_in_background(
    server: &Server,
    token: &str,
    frames: Vec<Frame>,
    done: &mpsc::Sender<(u16, String)>,
) -> Vec<std::thread::JoinHandle<()>> {
    frames
        .into_iter()
        .map(|frame| {
            let url = server.url(api::BATCH_PUT);
            let token = token.to_owned();
            let done = done.clone();
            std::thread::spawn(move || {
                let response = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap()
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", PACK_CONTENT_TYPE)
                    .body(encode_pack(&[frame]))
                    .send()
                    .unwrap();
                let status = response.status().as_u16();
                let text = response.text().unwrap_or_default();
                let code = serde_json::from_str::<ErrorResponse>(&text)
                    .map(|e| e.code)
                    .unwrap_or_default();
                let _ = done.send((status, code));
            })
        })
        .collect()
}

#[test]
fn one_token_holds_at_most_its_share_of_the_slots_and_readyz_says_when_all_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = pg::start();
    let url = cluster.create_database("shares");
    let db = ["--database-url", url.as_str()];
    let stalled = create_token(&db, "stalled", "write");
    let other = create_token(&db, "other", "write");
    let third = create_token(&db, "third", "write");
    // Defaults: 16 slots, 12 per token.
    let server = Server::start(&["--database-url", &url, "--slot-wait", "2"], dir.path());
    let http = http();
    let body: Vec<u8> = std::iter::once(0xe3)
        .chain((0..4000).map(|i| i as u8))
        .collect();
    let seed = frame_with_body(0, &body);
    assert_eq!(
        put(&http, &server, &other, std::slice::from_ref(&seed)).status(),
        200
    );
    let mut lock = BodyLock::take(&url, &seed.entry_digest().0);

    // The stalled token sends 16 uploads that wait inside the store: it gets its 12 slots, and
    // the 4 past its share wait for the slot wait and are told why.
    let (done, results) = mpsc::channel();
    let stalled_frames = (1..=16).map(|n| frame_with_body(n, &body)).collect();
    let mut threads = puts_in_background(&server, &stalled, stalled_frames, &done);
    let mut busy = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while busy.len() < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        match results.recv_timeout(left) {
            Ok(result) => busy.push(result),
            Err(_) => panic!(
                "16 uploads of one token that all wait in the store: expected 4 answered 503 \
                 busy past the token's share of 12 slots, got {busy:?}"
            ),
        }
    }
    assert!(
        busy.iter()
            .all(|(status, code)| *status == 503 && code == "busy"),
        "{busy:?}"
    );

    // Another token is served at once, reads and writes.
    let started = Instant::now();
    let got = get(&http, &server, &other, &[&seed]);
    assert_eq!(got.status(), 200);
    assert_eq!(
        decode_pack(&got.bytes().unwrap(), 1 << 20).unwrap().len(),
        1
    );
    let fresh = compiled_frame(500, 300);
    let stored: BatchPutResponse = put(&http, &server, &other, std::slice::from_ref(&fresh))
        .json()
        .unwrap();
    assert_eq!(stored.stored, [fresh.key_digest()]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "another token's get and put took {:?} beside a stalled token",
        started.elapsed()
    );

    // The stalled token's next batch get waits for its share, then is told why.
    let answer = get(&http, &server, &stalled, &[&seed]);
    assert!(answer.headers().contains_key("retry-after"));
    let (status, err) = error_of(answer);
    assert_eq!(
        (status, err.code.as_str()),
        (503, "busy"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("this token holds 12 of its 12 slots"),
        "{}",
        err.message
    );

    // 4 slots are still free: ready. A third token takes them: saturated.
    let ready = http.get(server.url(api::READYZ)).send().unwrap();
    assert_eq!(ready.status(), 200);
    threads.extend(puts_in_background(
        &server,
        &third,
        (100..104).map(|n| frame_with_body(n, &body)).collect(),
        &done,
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, err) = loop {
        let (status, err) = error_of_or_ok(&http, &server);
        if status != 200 || Instant::now() > deadline {
            break (status, err);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 503, "/readyz with every slot taken");
    let err = err.unwrap();
    assert_eq!(err.code, "saturated", "{}", err.message);
    assert!(
        err.message.contains("free slots 0 of 16"),
        "{}",
        err.message
    );
    let started = Instant::now();
    assert_eq!(
        http.get(server.url(api::HEALTHZ)).send().unwrap().status(),
        200
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // Released: every waiting upload is stored and the server is ready again.
    lock.release();
    for thread in threads {
        thread.join().unwrap();
    }
    drop(done);
    let rest: Vec<(u16, String)> = results.iter().collect();
    assert_eq!(rest.len(), 16, "{rest:?}");
    assert!(rest.iter().all(|(status, _)| *status == 200), "{rest:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while error_of_or_ok(&http, &server).0 != 200 {
        assert!(Instant::now() < deadline, "/readyz stayed not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!server.log().contains("panicked"));
}

/// `/readyz`: its status, and its error when not 200.
fn error_of_or_ok(
    http: &reqwest::blocking::Client,
    server: &Server,
) -> (u16, Option<ErrorResponse>) {
    let answer = http.get(server.url(api::READYZ)).send().unwrap();
    let status = answer.status().as_u16();
    if status == 200 {
        return (status, None);
    }
    let text = answer.text().unwrap();
    (
        status,
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))),
    )
}

// ---- 2. The database file is watched ---------------------------------------------------------

#[test]
fn a_deleted_database_refuses_writes_instead_of_losing_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let token = create_token(&["--data-dir", data_arg], "ci", "write");
    let admin = create_token(&["--data-dir", data_arg], "root", "admin");
    let server = Server::start(&["--data-dir", data_arg], dir.path());
    let http = http();
    let before = compiled_frame(1, 300);
    assert_eq!(
        put(&http, &server, &token, std::slice::from_ref(&before)).status(),
        200
    );

    let file = data.join("pycache.db");
    std::fs::remove_file(&file).unwrap();
    let after = compiled_frame(2, 300);
    for _ in 0..3 {
        assert_refusal(
            error_of(put(&http, &server, &token, std::slice::from_ref(&after))),
            (503, "database_gone"),
            &[&file.to_string_lossy(), "restart the server"],
        );
    }
    let single = http
        .put(server.url(&format!("/api/v1/entries/{}", after.key_digest().to_hex())))
        .bearer_auth(&token)
        .header("content-type", PACK_CONTENT_TYPE)
        .body(encode_pack(std::slice::from_ref(&after)))
        .send()
        .unwrap();
    assert_eq!(error_of(single).0, 503);
    let create = http
        .post(server.url(api::TOKENS))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "name": "late", "scope": "read" }))
        .send()
        .unwrap();
    assert_eq!(error_of(create).0, 503);
    let purge = http
        .post(server.url(api::PURGE))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "written_by": "ci" }))
        .send()
        .unwrap();
    assert_eq!(error_of(purge).0, 503);
    let (status, ready) = error_of_or_ok(&http, &server);
    assert_eq!(status, 503);
    let ready = ready.unwrap();
    assert_eq!(ready.code, "database_gone");
    assert!(
        ready.message.contains(&*file.to_string_lossy()),
        "{}",
        ready.message
    );

    // The log says so once, loudly.
    let log = server.log();
    assert_eq!(
        log.matches("THE DATABASE CANNOT TAKE WRITES").count(),
        1,
        "one error line per change of state:\n{log}"
    );
    assert!(log.contains("ERROR"), "{log}");
    // Readers at once make the pool open new connections to the file.
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (url, token) = (server.url(api::STATS), token.clone());
            std::thread::spawn(move || {
                let answer = reqwest::blocking::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .unwrap();
                assert_ne!(answer.status(), 500, "{:?}", answer.text());
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    // Nothing was acknowledged: the entry is nowhere (reads of a deleted database may fail),
    // and no empty database took the file's place.
    // (A read that fails after its first chunk cuts the answer, before or after its head.)
    let keys = [before.key_digest().to_hex(), after.key_digest().to_hex()];
    let answer = http
        .post(server.url(api::BATCH_GET))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "keys": keys }))
        .send();
    if let Ok(pack) = answer.and_then(|a| a.bytes()) {
        if let Ok(found) = decode_pack(&pack, 1 << 20) {
            assert!(found.iter().all(|f| f.key_digest() != after.key_digest()));
        }
    }
    assert!(
        !file.exists(),
        "an empty database was made in the deleted one's place"
    );
    assert_eq!(
        http.get(server.url(api::HEALTHZ)).send().unwrap().status(),
        200
    );
}

/// A command that runs the server as an unprivileged user when the tests run as root (root
/// writes read-only files regardless of their mode), with `dir` handed over to that user.
fn unprivileged_server_command(dir: &Path) -> std::process::Command {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(binary());
    // `/proc/self` belongs to the process's effective user.
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        const NOBODY: u32 = 65534;
        for entry in walk(dir) {
            std::os::unix::fs::lchown(&entry, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        command.uid(NOBODY).gid(NOBODY);
    }
    command
}

/// `dir` and everything under it.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![dir.to_owned()];
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            all.extend(walk(&entry.unwrap().path()));
        }
    }
    all
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_read_only_database_is_not_ready_and_refuses_writes_cleanly() {
    // The file read-only; then its directory too (where SQLite makes its -wal and -shm files).
    for read_only_dir in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        let data = dir.path().join("data");
        let data_arg = data.to_str().unwrap();
        let token = create_token(&["--data-dir", data_arg], "ci", "write");
        let file = data.join("pycache.db");
        let command = unprivileged_server_command(&data);
        set_mode(&file, 0o400);
        if read_only_dir {
            set_mode(&data, 0o500);
        }
        // Where SQLite must create its -wal and -shm files in a read-only directory it cannot
        // open the file at all: then the start stops with a message saying what to do.
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Server::start_with(command, &["--data-dir", data_arg], dir.path())
        }));
        let server = match started {
            Ok(server) => server,
            Err(refusal) if read_only_dir => {
                let message = refusal
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_default();
                assert!(message.contains("exited before listening"), "{message}");
                assert!(message.contains(&*file.to_string_lossy()), "{message}");
                assert!(message.contains("writable by the user"), "{message}");
                assert!(!message.contains("panicked at"), "{message}");
                set_mode(&data, 0o700);
                continue;
            }
            Err(refusal) => std::panic::resume_unwind(refusal),
        };
        let http = http();

        assert_refusal(
            error_of(put(&http, &server, &token, &[compiled_frame(1, 300)])),
            (507, "database_read_only"),
            &[&file.to_string_lossy(), "writable by the user"],
        );
        let (status, ready) = error_of_or_ok(&http, &server);
        assert_eq!(status, 503);
        assert_eq!(ready.unwrap().code, "database_read_only");
        // Reads still work.
        let got = get(&http, &server, &token, &[&compiled_frame(1, 300)]);
        assert_eq!(got.status(), 200);
        let log = server.log();
        assert!(log.contains("THE DATABASE CANNOT TAKE WRITES"), "{log}");
        assert!(!log.contains("panicked"), "{log}");
        drop(server);
        set_mode(&data, 0o700);
    }
}

// ---- 3. --allowed-host ------------------------------------------------------------------------

#[test]
fn a_public_read_server_on_loopback_answers_only_loopback_host_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &["--data-dir", data.to_str().unwrap(), "--public-read"],
        dir.path(),
    );
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    for host in [
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_owned(),
    ] {
        let (status, answer) = raw_request(&server, "GET", api::STATS, &host);
        assert_eq!(status, 200, "{host}: {answer}");
    }
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        format!("localhost.evil.example:{port}"),
        format!("[::2]:{port}"),
    ] {
        let (status, answer) = raw_request(&server, "GET", api::STATS, &host);
        assert_eq!(status, 421, "{host}: {answer}");
        let err = raw_error(&answer);
        assert_eq!(err.code, "misdirected_request");
        assert!(err.message.contains(&host), "{}", err.message);
        assert!(err.message.contains("--allowed-host"), "{}", err.message);
        // Unknown routes too: the check comes first.
        assert_eq!(raw_request(&server, "GET", "/nothing", &host).0, 421);
        // Probes address servers by IP or any name: they stay open.
        assert_eq!(raw_request(&server, "GET", api::HEALTHZ, &host).0, 200);
        assert_eq!(raw_request(&server, "GET", api::READYZ, &host).0, 200);
    }
}

#[test]
fn allowed_hosts_come_from_the_command_line_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let server = Server::start(
        &[
            "--data-dir",
            data_arg,
            "--allowed-host",
            "Cache.Example.com",
            "--allowed-host",
            "10.1.2.3",
        ],
        dir.path(),
    );
    assert_eq!(
        raw_request(&server, "GET", api::INFO, "cache.example.com:8437").0,
        200
    );
    assert_eq!(raw_request(&server, "GET", api::INFO, "10.1.2.3").0, 200);
    assert_eq!(raw_request(&server, "GET", api::INFO, "localhost").0, 421);
    drop(server);

    let mut command = std::process::Command::new(binary());
    command.env("PYCACHE_ALLOWED_HOSTS", "a.example,b.example");
    let server = Server::start_with(command, &["--data-dir", data_arg], dir.path());
    assert_eq!(raw_request(&server, "GET", api::INFO, "b.example").0, 200);
    assert_eq!(raw_request(&server, "GET", api::INFO, "c.example").0, 421);
    drop(server);

    // An empty list is no list: a public-read server on loopback answers the loopback names.
    let mut command = std::process::Command::new(binary());
    command.env("PYCACHE_ALLOWED_HOSTS", "");
    let server = Server::start_with(
        command,
        &["--data-dir", data_arg, "--public-read"],
        dir.path(),
    );
    assert_eq!(raw_request(&server, "GET", api::INFO, "localhost").0, 200);
    assert_eq!(raw_request(&server, "GET", api::INFO, "b.example").0, 421);
    drop(server);

    // Without --public-read and without a list, every host is answered (tokens guard it).
    let server = Server::start(&["--data-dir", data_arg], dir.path());
    assert_eq!(
        raw_request(&server, "GET", api::INFO, "anything.example").0,
        200
    );
}

#[test]
fn a_public_read_server_on_every_address_warns_without_a_host_list() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut command = std::process::Command::new(binary());
    // `serve --listen 127.0.0.1:0` comes after: put this server on every address instead.
    command.env("PYCACHE_LISTEN", "0.0.0.0:0");
    let mut child = command
        .args([
            "serve",
            "--public-read",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.starts_with("listening on 0.0.0.0:"), "{line}");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("WARN") && log.contains("--allowed-host") && log.contains("DNS rebinding"),
        "{log}"
    );
}

// ---- 4. Invented HTTP methods ---------------------------------------------------------------

#[test]
fn a_hundred_thousand_invented_methods_cost_no_memory_and_no_metrics() {
    const SOCKETS: usize = 4;
    const PER_SOCKET: usize = 25_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()], dir.path());
    let addr = server.base.trim_start_matches("http://").to_owned();
    let http = http();
    for _ in 0..20 {
        http.get(server.url(api::METRICS)).send().unwrap();
    }
    let before = rss(server.pid());

    let started = Instant::now();
    let clients: Vec<_> = (0..SOCKETS)
        .map(|s| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let socket = TcpStream::connect(&addr).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_secs(120)))
                    .unwrap();
                let mut reader = socket.try_clone().unwrap();
                let counter = std::thread::spawn(move || {
                    let mut answers = 0usize;
                    let mut tail = Vec::new();
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        match reader.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                tail.extend_from_slice(&buf[..n]);
                                answers += count(&tail, b"HTTP/1.1 ");
                                // Shorter than the status line's start, so a match that
                                // straddles two reads is counted once.
                                let keep = tail.len().min(8);
                                tail.drain(..tail.len() - keep);
                            }
                        }
                    }
                    answers
                });
                let mut writer = std::io::BufWriter::with_capacity(1 << 16, socket);
                for n in 0..PER_SOCKET {
                    let close = if n + 1 == PER_SOCKET {
                        "Connection: close\r\n"
                    } else {
                        ""
                    };
                    write!(
                        writer,
                        "X{s}M{n} {} HTTP/1.1\r\nHost: {addr}\r\n{close}\r\n",
                        api::HEALTHZ
                    )
                    .unwrap();
                }
                writer.flush().unwrap();
                counter.join().unwrap()
            })
        })
        .collect();
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let took = started.elapsed();
    assert_eq!(
        answered,
        SOCKETS * PER_SOCKET,
        "answers to pipelined requests"
    );

    let grown = rss(server.pid()).saturating_sub(before);
    let metrics = http
        .get(server.url(api::METRICS))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        grown < 20 << 20,
        "RSS grew by {} MB after {} requests with invented methods ({took:?})",
        grown >> 20,
        SOCKETS * PER_SOCKET
    );
    assert!(
        metrics.len() < 8 << 10,
        "/metrics is {} bytes after invented methods",
        metrics.len()
    );
    assert!(
        !metrics.contains("X0M1"),
        "an invented method became a label"
    );
}

/// Occurrences of `needle` in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}
