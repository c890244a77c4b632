//! The server over TLS (`--tls-cert`, `--tls-key`): a client that trusts the CA talks to it;
//! plain HTTP and clients that do not trust the certificate get nothing.

mod support;

use pycache_testkit::tls::TestCa;
use support::process::{run, Server};

#[test]
fn the_server_speaks_tls_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--tls-cert",
            ca.server_cert.to_str().unwrap(),
            "--tls-key",
            ca.server_key.to_str().unwrap(),
        ],
        dir.path(),
    );
    let https = server.base.replace("http://", "https://");
    let root = reqwest::Certificate::from_pem(&std::fs::read(&ca.ca_cert).unwrap()).unwrap();
    let trusting = reqwest::blocking::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let answer = trusting.get(format!("{https}/healthz")).send().unwrap();
    assert_eq!(answer.status(), 200);
    // Also by name.
    let by_name = https.replace("127.0.0.1", "localhost");
    assert_eq!(
        trusting
            .get(format!("{by_name}/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );

    let untrusting = reqwest::blocking::Client::new();
    let err = untrusting
        .get(format!("{https}/healthz"))
        .send()
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    // Plain HTTP to a TLS port gets no answer.
    assert!(untrusting
        .get(format!("{}/healthz", server.base))
        .timeout(std::time::Duration::from_secs(15))
        .send()
        .is_err());
    // The server still serves TLS after those failed handshakes.
    assert_eq!(
        trusting
            .get(format!("{https}/readyz"))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn bad_tls_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let missing = dir.path().join("missing.pem");
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--tls-cert",
        missing.to_str().unwrap(),
        "--tls-key",
        ca.server_key.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("missing.pem") && stderr.contains("--tls-cert"),
        "{stderr}"
    );
    // A key that does not belong to the certificate.
    let other = TestCa::new(&{
        let d = dir.path().join("other");
        std::fs::create_dir_all(&d).unwrap();
        d
    });
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--tls-cert",
        ca.server_cert.to_str().unwrap(),
        "--tls-key",
        other.server_key.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("does not fit"), "{stderr}");
    // One without the other.
    let out = run(&["serve", "--tls-cert", ca.server_cert.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}
