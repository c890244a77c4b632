//! A warm run from the server writes files while the pack is still arriving: between the
//! client and a real `pycache-server` on 127.0.0.1, a proxy passes the answers on at about
//! 1 MB/s, and the first .pyc must appear well before the last byte of the batch get has
//! been passed on.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pycache_testkit::server::Server;

const CLIENT: &str = env!("CARGO_BIN_EXE_pycache-client");
const FILES: usize = 300;

/// Sources with 16 KiB of random text each: a pack of several MB that compresses poorly.
fn make_tree(root: &Path) {
    let pkg = root.join("src/pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..FILES {
        let mut text = String::new();
        for _ in 0..(16 * 1024 / 16) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(&format!("{state:016x}"));
        }
        std::fs::write(
            pkg.join(format!("m{i:03}.py")),
            format!("DATA = '{text}'\n\ndef f():\n    return {i}\n"),
        )
        .unwrap();
    }
}

/// When the proxy last passed bytes from the server to the client.
type LastByte = Arc<Mutex<Option<Instant>>>;

/// Relays one connection; server-to-client bytes go in 16 KiB steps, 16 ms apart, over one
/// link that every connection shares (`link`, held for each step): a client that opens
/// several connections gets no more than one would.
fn relay(client: TcpStream, upstream: &str, last: LastByte, link: Arc<Mutex<()>>) {
    let server = TcpStream::connect(upstream).unwrap();
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = c_read.read(&mut buf) {
            if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = s_read.read(&mut buf) {
        let _step = link.lock().unwrap();
        if n == 0 || c_write.write_all(&buf[..n]).is_err() {
            break;
        }
        *last.lock().unwrap() = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(16));
    }
    let _ = c_write.shutdown(Shutdown::Write);
}

fn start_proxy(upstream: String, last: LastByte) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let link = Arc::new(Mutex::new(()));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (up, last, link) = (upstream.clone(), Arc::clone(&last), Arc::clone(&link));
            std::thread::spawn(move || relay(conn, &up, last, link));
        }
    });
    format!("http://{addr}")
}

fn first_pyc(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| {
            d.any(|e| {
                e.map(|e| e.path().extension().is_some_and(|x| x == "pyc"))
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

fn sync(cwd: &Path, cache: &Path, server: &str, token: &str) -> std::process::Child {
    Command::new(CLIENT)
        .current_dir(cwd)
        .env("PYCACHE_CACHE_DIR", cache)
        .env("PYCACHE_PYTHON", "python3")
        .env("PYCACHE_SERVER", server)
        .env("PYCACHE_TOKEN", token)
        .env("PYCACHE_TIMEOUT", "60")
        .args(["sync", "--json", "src"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn files_are_written_while_the_pack_is_still_arriving() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()], tmp.path());
    let token = server.token("write", "ci");
    let (one, two): (PathBuf, PathBuf) = (tmp.path().join("one"), tmp.path().join("two"));
    make_tree(&one);
    make_tree(&two);

    // Fill the server (direct).
    let cold = sync(&one, &tmp.path().join("cache-one"), &server.url(""), &token)
        .wait_with_output()
        .unwrap();
    assert!(cold.status.success(), "{cold:?}");

    // Fetch it all through the slow proxy, with an empty local cache.
    let last: LastByte = Arc::default();
    let upstream = server.url("").trim_start_matches("http://").to_owned();
    let proxy = start_proxy(upstream, Arc::clone(&last));
    let started = Instant::now();
    let child = sync(&two, &tmp.path().join("cache-two"), &proxy, &token);
    let pycache = two.join("src/pkg/__pycache__");
    let mut first = None;
    while started.elapsed() < Duration::from_secs(120) {
        if first.is_none() && first_pyc(&pycache) {
            first = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["remote_hits"].as_u64(), Some(FILES as u64), "{json}");
    assert_eq!(json["compiled"], 0, "{json}");
    let first = first.expect("a .pyc appeared");
    let last = last.lock().unwrap().expect("the proxy passed bytes on");
    let transfer = last.duration_since(started);
    eprintln!(
        "first .pyc after {:.2}s, last byte after {:.2}s",
        first.duration_since(started).as_secs_f64(),
        transfer.as_secs_f64()
    );
    assert!(
        transfer > Duration::from_secs(2),
        "the pack must take a while to arrive for this test to mean anything: {transfer:?}"
    );
    assert!(
        first + Duration::from_secs(1) < last,
        "the first .pyc was written only {:?} before the pack's last byte arrived",
        last.saturating_duration_since(first)
    );
}
