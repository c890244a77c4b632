//! A throwaway certificate authority and a server certificate it signed for `127.0.0.1` and
//! `localhost`, written as PEM files: what a team's own CA gives its cache server.

use std::path::{Path, PathBuf};

/// PEM files of a test CA and of a server certificate it issued.
pub struct TestCa {
    /// The CA certificate (what clients trust: `--ca-cert`, `SSL_CERT_FILE`).
    pub ca_cert: PathBuf,
    /// The server's certificate (`--tls-cert`).
    pub server_cert: PathBuf,
    /// The server's private key (`--tls-key`).
    pub server_key: PathBuf,
}

impl TestCa {
    /// Makes a CA and a server certificate in `dir`.
    pub fn new(dir: &Path) -> TestCa {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pycache test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let server_key = rcgen::KeyPair::generate().expect("server key");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        let server = params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server certificate");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        TestCa {
            ca_cert: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server-key.pem", server_key.serialize_pem()),
        }
    }
}
