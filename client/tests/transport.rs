//! How the client reaches a server: over TLS with a private CA (`--ca-cert`, `SSL_CERT_FILE`),
//! and never with its token in the clear across a network unless told to.
//!
//! Needs `target/<profile>/pycache-server`, which `cargo test --workspace` builds.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener};
use std::path::Path;
use std::process::Output;
use std::sync::mpsc;
use std::time::Duration;

use pycache_testkit::server::Server;
use pycache_testkit::tls::TestCa;

mod support;

use support::project::{json, sync as sync_in};

/// `sync` with the tree's .pyc files removed first (an up-to-date tree asks no server).
fn sync(cwd: &Path, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let _ = std::fs::remove_dir_all(cwd.join("src/__pycache__"));
    sync_in(cwd, cache, args, env)
}

fn make_tree(root: &Path) {
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.py"), "import os\nNAME = 'app'\n").unwrap();
    std::fs::write(src.join("util.py"), "def twice(x):\n    return 2 * x\n").unwrap();
}

/// An address of this machine that is not loopback: what a server across a network looks like
/// to the client's check, while a listener here still sees whether anything was sent.
fn non_loopback_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks the route's source address.
    socket.connect("192.0.2.200:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A listener that reports the request headers of the first connection and answers 503.
fn recording_listener(ip: IpAddr) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let _ = tx.send(head);
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (url, rx)
}

#[test]
fn the_token_never_crosses_a_network_over_plain_http() {
    let Some(ip) = non_loopback_ip() else {
        panic!("this machine has no non-loopback address to test with");
    };
    let tmp = tempfile::tempdir().unwrap();
    make_tree(tmp.path());
    let (url, requests) = recording_listener(ip);

    let out = sync(
        tmp.path(),
        &tmp.path().join("cache-1"),
        &["--server", &url, "--token", "pyc_secret_token"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("not sending the token") && stderr.contains("--allow-insecure-http"),
        "{stderr}"
    );
    assert_eq!(json(&out)["compiled"], 2);
    assert!(
        requests.recv_timeout(Duration::from_millis(500)).is_err(),
        "the client connected to a plain-http server across a network with a token"
    );
    // --require-server makes it fatal.
    let out = sync(
        tmp.path(),
        &tmp.path().join("cache-2"),
        &[
            "--server",
            &url,
            "--token",
            "pyc_secret_token",
            "--require-server",
        ],
        &[],
    );
    assert_ne!(out.status.code(), Some(0));

    // Without a token there is nothing to leak: the server is asked.
    let _ = sync(
        tmp.path(),
        &tmp.path().join("cache-3"),
        &["--server", &url],
        &[],
    );
    let head = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("authorization"),
        "{head}"
    );

    // Allowed explicitly, the token goes.
    let _ = sync(
        tmp.path(),
        &tmp.path().join("cache-4"),
        &["--server", &url, "--token", "pyc_secret_token"],
        &[("PYCACHE_ALLOW_INSECURE_HTTP", "1")],
    );
    let head = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(head.contains("pyc_secret_token"), "{head}");
}

#[test]
fn a_tls_server_with_a_private_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let ca = TestCa::new(base);
    let data = base.join("data");
    let server = Server::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--tls-cert",
            ca.server_cert.to_str().unwrap(),
            "--tls-key",
            ca.server_key.to_str().unwrap(),
        ],
        base,
    );
    let write = server.token("write", "ci");
    let https = server.base.replace("http://", "https://");
    let ca_file = ca.ca_cert.to_str().unwrap();

    let writer = base.join("writer");
    make_tree(&writer);
    let out = sync(
        &writer,
        &base.join("cache-w"),
        &["--server", &https, "--token", &write, "--ca-cert", ca_file],
        &[],
    );
    assert_eq!(
        json(&out)["uploaded"],
        2,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A reader trusting the CA through SSL_CERT_FILE gets every entry.
    let reader = base.join("reader");
    make_tree(&reader);
    let out = sync(
        &reader,
        &base.join("cache-r"),
        &["--server", &https, "--token", &write],
        &[("SSL_CERT_FILE", ca_file)],
    );
    assert_eq!(
        json(&out)["remote_hits"],
        2,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Not trusting it: a warning, a local compile, exit 0.
    let stranger = base.join("stranger");
    make_tree(&stranger);
    let out = sync(
        &stranger,
        &base.join("cache-s"),
        &["--server", &https, "--token", &write],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(json(&out)["compiled"], 2);
    assert!(stderr.contains(&https), "{stderr}");

    // A CA file that is not one is a clear error naming it.
    let bogus = base.join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let out = sync(
        &stranger,
        &base.join("cache-b"),
        &["--server", &https, "--ca-cert", bogus.to_str().unwrap()],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bogus.pem"), "{stderr}");
}
