//! Validated server settings, and the parsing of human sizes such as `10GiB`.

use std::time::Duration;

use crate::connections::ConnectionLimits;

/// What the running server enforces and advertises.
#[derive(Clone, Debug)]
pub struct Config {
    /// Anyone may read without a token.
    pub public_read: bool,
    /// The namespaces a caller without a token reads, in order (with `public_read`).
    pub public_namespaces: Vec<pycache_proto::namespace::NamespacePattern>,
    /// Largest encoded entry accepted, in bytes.
    pub max_entry_bytes: u64,
    /// Largest request body accepted, in bytes; also the most a compressed upload may decode
    /// to.
    pub max_request_bytes: u64,
    /// Most times its compressed size a zstd upload may decode to (past its first MiB); `0`
    /// means no such limit.
    pub max_compression_ratio: u64,
    /// Most keys in one batch get.
    pub max_batch_keys: u64,
    /// Total bytes of entries kept; least-recently-used entries are evicted past it.
    pub max_store_bytes: Option<u64>,
    /// How often hit counts are flushed and eviction runs.
    pub maintenance_interval: Duration,
    /// Heavy requests (batch get, uploads) served at once; more wait for a slot.
    pub max_heavy_requests: usize,
    /// Most heavy-request slots one caller holds at once (callers keyed by token name; all
    /// callers without a token share one key).
    pub max_heavy_per_token: usize,
    /// How long a request waits for a slot before it is answered 503 `busy`.
    pub slot_wait: Duration,
    /// Time a request body may take to arrive in full.
    pub body_timeout: Duration,
    /// Open connections, header and idle timeouts.
    pub connections: ConnectionLimits,
    /// Where uploads are spooled while they arrive (unnamed temporary files).
    pub spool_dir: std::path::PathBuf,
    /// When set, only requests whose `Host` is one of these (normalized:
    /// [`crate::routes::host::normalize_host`]) are answered; others get 421. `/healthz` and
    /// `/readyz` answer every host.
    pub allowed_hosts: Option<Vec<String>>,
    /// Serve HTTPS with this certificate and key (`--tls-cert`, `--tls-key`); plain HTTP
    /// without.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            public_read: false,
            public_namespaces: vec![pycache_proto::namespace::NamespacePattern::Exact(
                pycache_proto::namespace::DEFAULT_NAMESPACE.to_owned(),
            )],
            max_entry_bytes: 8 << 20,
            max_request_bytes: 256 << 20,
            max_compression_ratio: 32,
            max_batch_keys: 50_000,
            max_store_bytes: Some(10 << 30),
            maintenance_interval: Duration::from_secs(10),
            max_heavy_requests: DEFAULT_MAX_HEAVY_REQUESTS,
            max_heavy_per_token: default_heavy_per_token(DEFAULT_MAX_HEAVY_REQUESTS),
            slot_wait: Duration::from_secs(5),
            body_timeout: Duration::from_secs(60),
            connections: ConnectionLimits::default(),
            spool_dir: std::env::temp_dir(),
            allowed_hosts: None,
            tls: None,
        }
    }
}

/// Heavy requests served at once unless `--max-heavy-requests` says otherwise.
pub const DEFAULT_MAX_HEAVY_REQUESTS: usize = 16;

/// One caller's share of `slots` heavy-request slots unless `--max-heavy-per-token` says
/// otherwise: three quarters, at least one.
pub fn default_heavy_per_token(slots: usize) -> usize {
    (slots.max(1) * 3 / 4).max(1)
}

pub use pycache_proto::size::parse_size;

/// The TLS configuration of a PEM certificate chain and private key; errors name the file and
/// say what is wrong with it.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<rustls::ServerConfig>> {
    use anyhow::Context;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "cannot read the TLS certificate {}: give --tls-cert a PEM file (the server's \
                 certificate first, then any intermediates)",
                cert.display()
            )
        })?;
    anyhow::ensure!(
        !chain.is_empty(),
        "the TLS certificate file {} holds no certificate: give --tls-cert a PEM file",
        cert.display()
    );
    let private_key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read the TLS private key {}: give --tls-key a PEM file with one key \
             (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS set-up")?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .with_context(|| {
            format!(
                "the TLS key {} does not fit the certificate {}: check that they belong together",
                key.display(),
                cert.display()
            )
        })?;
    Ok(std::sync::Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5 KB").unwrap(), 1500);
        assert_eq!(parse_size("64kib").unwrap(), 65536);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn a_caller_gets_three_quarters_of_the_slots_by_default() {
        use super::default_heavy_per_token;
        assert_eq!(default_heavy_per_token(16), 12);
        assert_eq!(default_heavy_per_token(2), 1);
        assert_eq!(default_heavy_per_token(1), 1);
        assert_eq!(default_heavy_per_token(0), 1);
    }
}
