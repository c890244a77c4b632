//! The HTTP client of the server's API: one method per endpoint the client uses. Every answer
//! is checked (status, JSON shape, pack frames and digests) and every request has a deadline;
//! what to do about a failure is `policy`'s business.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use pycache_proto::api::{self, BatchPutResponse, ServerInfo, StatsResponse};
use pycache_proto::pack::{Frame, PackDecoder, PACK_CONTENT_TYPE};
use pycache_proto::signature::TrustedKey;
use pycache_proto::{Entry, ErrorResponse, KeyDigest};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;

use crate::settings::{Secret, Transport, DEFAULT_CONNECT_TIMEOUT};

/// The zstd level of upload bodies. Uploads run beside the compiles, on the same cores, and
/// the server decompresses them to check each entry: level 1 is about three times as fast as
/// level 3 here (240 against 85 MB/s on .pyc bodies) for 15% more bytes on the wire.
const UPLOAD_LEVEL: i32 = 1;

/// Largest entry the client accepts from a server that does not say (or says more).
const MAX_ENTRY_BYTES: usize = 64 << 20;
/// What one frame of a pack may add to its entry's size (key, digest, lengths).
const FRAME_OVERHEAD: u64 = 8 << 10;

/// Why a server request did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No connection, a timeout, or a broken transfer.
    #[error("the server {url} could not be reached: {detail}")]
    Unreachable {
        /// The server.
        url: String,
        /// What happened.
        detail: String,
    },
    /// The token is missing, unknown or revoked (401), or lacks the scope or the namespace
    /// (403).
    #[error("the server {url} refused the request ({status}): {message}; check --token / PYCACHE_TOKEN and the token's scope{}", namespace_hint(.namespace.as_deref()))]
    Auth {
        /// The server.
        url: String,
        /// 401 or 403.
        status: u16,
        /// The server's message (control characters escaped).
        message: String,
        /// The namespace the client named, if any.
        namespace: Option<String>,
    },
    /// The token would cross a network in the clear.
    #[error(
        "not sending the token to {url} over plain http://: anyone on the network path could \
             read it and change the entries served. Use an https:// server (pycache-server \
             --tls-cert/--tls-key, or a TLS proxy in front of it; --ca-cert or SSL_CERT_FILE for a \
             private CA), or pass --allow-insecure-http (PYCACHE_ALLOW_INSECURE_HTTP=1) if this \
             network is trusted"
    )]
    Insecure {
        /// The server.
        url: String,
    },
    /// Any other non-success status.
    #[error("the server {url} answered {status}: {message}")]
    Status {
        /// The server.
        url: String,
        /// The status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The answer was not what the API promises (a truncated pack, bad JSON).
    #[error("the server {url} sent a malformed answer: {detail}")]
    Malformed {
        /// The server.
        url: String,
        /// What was wrong.
        detail: String,
    },
}

/// Refuses to send a token over plain `http://` to a host other than this machine, unless
/// `transport` allows it.
pub fn check_transport(
    transport: &Transport,
    url: &str,
    has_token: bool,
) -> Result<(), RemoteError> {
    let plain = url.starts_with("http://");
    if has_token && plain && !transport.allow_insecure_http && !is_loopback(url) {
        return Err(RemoteError::Insecure {
            url: url.to_owned(),
        });
    }
    Ok(())
}

/// Whether `url`'s host is this machine (`localhost`, `127.0.0.0/8`, `::1`).
///
/// ```
/// use pycache_client::remote::http::is_loopback;
/// assert!(is_loopback("http://127.0.0.1:8437") && is_loopback("http://[::1]:1/x"));
/// assert!(is_loopback("http://LOCALHOST/") && !is_loopback("http://cache.internal:8437"));
/// assert!(!is_loopback("http://127.0.0.1.nip.io/") && !is_loopback("not a url"));
/// ```
pub fn is_loopback(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = parsed.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}

/// Why a frame of a batch get is not used (a miss, compiled locally, never stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Its digest does not bind its bytes to its key, or the entry does not decode.
    Corrupt,
    /// Trusted keys are set and none of them signed this entry under this key.
    Untrusted,
}

/// Where a server entry lives and who wrote it, as `GET` of the entry says.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EntryProvenance {
    /// The namespace the entry was found in.
    pub namespace: Option<String>,
    /// The name of the token that wrote it (absent for entries from before provenance).
    pub written_by: Option<String>,
}

/// A pycache server, spoken to over HTTP.
#[derive(Debug)]
pub struct ServerClient {
    client: Client,
    base: String,
    token: Option<Secret>,
    namespace: Option<String>,
    deadline: Duration,
    /// Bound of the first request (connecting included).
    first_answer: Duration,
    max_entry_bytes: usize,
    trusted_keys: Arc<[TrustedKey]>,
}

impl ServerClient {
    /// A client for `url`; `deadline` bounds every request as a whole (connect, headers, body).
    pub fn new(url: &str, token: Option<Secret>, deadline: Duration) -> Result<Self> {
        Self::with_transport(url, token, deadline, &Transport::default())
    }

    /// [`ServerClient::new`] trusting `transport`'s CA certificates, and refusing to send a
    /// token over plain `http://` across a network unless it allows that.
    pub fn with_transport(
        url: &str,
        token: Option<Secret>,
        deadline: Duration,
        transport: &Transport,
    ) -> Result<Self> {
        check_transport(transport, url, token.is_some())?;
        // Answers are decoded here, not by the HTTP client: a zstd batch get frame by frame.
        let mut builder = Client::builder()
            .no_zstd()
            .connect_timeout(deadline.min(Duration::from_secs(5)))
            .timeout(deadline)
            .user_agent(concat!("pycache-client/", env!("CARGO_PKG_VERSION")));
        for file in &transport.ca_certs {
            let pem = std::fs::read(file).map_err(|e| {
                anyhow!(
                    "cannot read the CA certificate file {}: {e} (check --ca-cert / PYCACHE_CA_CERT and SSL_CERT_FILE)",
                    file.display()
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow!(
                    "{} holds no PEM certificate: {e} (check --ca-cert / PYCACHE_CA_CERT and SSL_CERT_FILE)",
                    file.display()
                )
            })?;
            if certs.is_empty() {
                return Err(anyhow!(
                    "{} holds no PEM certificate (check --ca-cert / PYCACHE_CA_CERT and SSL_CERT_FILE)",
                    file.display()
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| anyhow!("could not set up the HTTP client: {e}"))?;
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(anyhow!(
                "the server URL {url:?} must start with http:// or https:// (check --server / PYCACHE_SERVER)"
            ));
        }
        Ok(ServerClient {
            client,
            base,
            token,
            namespace: None,
            deadline,
            first_answer: deadline.min(DEFAULT_CONNECT_TIMEOUT),
            max_entry_bytes: MAX_ENTRY_BYTES,
            trusted_keys: Arc::from([]),
        })
    }

    /// Bounds the first request, [`ServerClient::info`], by `timeout` (never past the deadline):
    /// a server that accepts connections and never answers is given up on after it.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.first_answer = timeout.min(self.deadline);
        self
    }

    /// Uses a fetched entry only when one of `trusted_keys` signed it under its key; none: no
    /// signature is asked for.
    pub fn with_trusted_keys(mut self, trusted_keys: Arc<[TrustedKey]>) -> Self {
        self.trusted_keys = trusted_keys;
        self
    }

    /// The entry of a fetched frame, when its digest binds it to its key and, with trusted
    /// keys, a trusted signature verifies for that key and entry.
    fn accept(&self, frame: &Frame) -> Result<Entry, Rejected> {
        let entry = frame.verify().map_err(|_| Rejected::Corrupt)?;
        if !self.trusted_keys.is_empty() {
            let signer = pycache_proto::signature::verify(
                &self.trusted_keys,
                &frame.signatures,
                &frame.key_digest(),
                &frame.entry_digest(),
            );
            if signer.is_none() {
                return Err(Rejected::Untrusted);
            }
        }
        Ok(entry)
    }

    /// Names the namespace every request writes to and looks in first (the server's default
    /// for the token when `None`).
    pub fn with_namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }

    /// The namespace this client names, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Accept entries up to the server's advertised limit (never more than the client's own).
    pub fn limit_entries_to(&mut self, max_entry_bytes: u64) {
        self.max_entry_bytes = usize::try_from(max_entry_bytes)
            .unwrap_or(MAX_ENTRY_BYTES)
            .min(MAX_ENTRY_BYTES);
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(&token.0);
        }
        if let Some(namespace) = &self.namespace {
            req = req.header(api::NAMESPACE_HEADER, namespace);
        }
        req
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Result<Response, RemoteError> {
        let resp = req.send().map_err(|e| RemoteError::Unreachable {
            url: self.base.clone(),
            detail: error_chain(&e),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let message = resp
            .json::<ErrorResponse>()
            // The server's words reach a terminal: no control characters from the network.
            .map(|e| crate::output::escape_replayed(&e.message).into_owned())
            .unwrap_or_else(|_| status.canonical_reason().unwrap_or("error").to_owned());
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RemoteError::Auth {
                url: self.base.clone(),
                status: status.as_u16(),
                message,
                namespace: self.namespace.clone(),
            },
            _ => RemoteError::Status {
                url: self.base.clone(),
                status: status.as_u16(),
                message,
            },
        })
    }

    /// `GET /api/v1/info`: limits and the caller's scope. The first request of a run, so it
    /// keeps to the connect timeout (see [`ServerClient::with_connect_timeout`]).
    pub fn info(&self) -> Result<ServerInfo, RemoteError> {
        let req = self
            .request(reqwest::Method::GET, api::INFO)
            .timeout(self.first_answer);
        let resp = self.send(req).map_err(|e| match e {
            RemoteError::Unreachable { url, detail } if detail.contains("timed out") => {
                RemoteError::Unreachable {
                    url,
                    detail: format!(
                        "no answer within {:.1}s (--connect-timeout / PYCACHE_CONNECT_TIMEOUT): {detail}",
                        self.first_answer.as_secs_f64()
                    ),
                }
            }
            other => other,
        })?;
        resp.json().map_err(|e| RemoteError::Malformed {
            url: self.base.clone(),
            detail: e.to_string(),
        })
    }

    /// `GET /api/v1/stats`.
    pub fn stats(&self) -> Result<StatsResponse, RemoteError> {
        let resp = self.send(self.request(reqwest::Method::GET, api::STATS))?;
        resp.json().map_err(|e| RemoteError::Malformed {
            url: self.base.clone(),
            detail: e.to_string(),
        })
    }

    /// `POST /api/v1/batch/get`: each frame is handed to `on_frame` as it arrives (the entry,
    /// or why it is not used: see [`Rejected`]), so files can be written while the pack is still
    /// coming. Returns the bytes received. The whole request keeps to the deadline, and the
    /// answer may weigh no more than the keys asked for can. `grouped`: the request is a
    /// lookup list (the server counts each lookup once), else a key list of the same keys,
    /// each once; `interpreter` names the client's interpreter for the server's counts.
    pub fn batch_get_each(
        &self,
        lookups: &[Vec<KeyDigest>],
        grouped: bool,
        interpreter: Option<&str>,
        on_frame: &mut dyn FnMut(KeyDigest, Result<Entry, Rejected>),
    ) -> Result<u64, RemoteError> {
        let started = Instant::now();
        let mut seen = std::collections::HashSet::new();
        let keys: Vec<KeyDigest> = lookups
            .iter()
            .flatten()
            .copied()
            .filter(|k| seen.insert(*k))
            .collect();
        // Binary: 32 bytes a key (and a count byte a lookup) instead of about 70 of JSON.
        let (content_type, body) = if grouped {
            (
                api::LOOKUPS_CONTENT_TYPE,
                api::encode_lookups(lookups.iter().map(Vec::as_slice)),
            )
        } else {
            (api::KEY_LIST_CONTENT_TYPE, api::encode_key_list(&keys))
        };
        let mut request = self
            .request(reqwest::Method::POST, api::BATCH_GET)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::ACCEPT_ENCODING, "zstd");
        if let Some(interpreter) = interpreter {
            request = request.header(api::INTERPRETER_HEADER, interpreter);
        }
        let mut resp = self.send(request.body(body))?;
        // A zstd answer is the server's bodies as it stores them, each its own frame.
        let mut frames = resp
            .headers()
            .get(reqwest::header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"zstd"))
            .then(|| {
                // One entry, or the heads and small entries of one of the server's chunks.
                let frame = (self.max_entry_bytes as u64).max(64 << 20) + FRAME_OVERHEAD;
                super::zstd_frames::FrameDecoder::new(frame)
            });
        let most = (keys.len() as u64).saturating_mul(self.max_entry_bytes as u64 + FRAME_OVERHEAD)
            + FRAME_OVERHEAD;
        // What the frames decode to keeps to the same bound as a plain answer.
        let mut decoded = 0u64;
        let mut decoder = PackDecoder::new(self.max_entry_bytes);
        let mut bytes = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n =
                std::io::Read::read(&mut resp, &mut buf).map_err(|e| RemoteError::Unreachable {
                    url: self.base.clone(),
                    detail: e.to_string(),
                })?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            if bytes > most {
                return Err(self.malformed(format!(
                    "the answer to {} keys passed {most} bytes, more than those entries can weigh",
                    keys.len()
                )));
            }
            if started.elapsed() > self.deadline {
                return Err(RemoteError::Unreachable {
                    url: self.base.clone(),
                    detail: format!(
                        "the answer took longer than the deadline of {:.1}s (PYCACHE_TIMEOUT)",
                        self.deadline.as_secs_f64()
                    ),
                });
            }
            match frames.as_mut() {
                None => decoder.feed(&buf[..n]),
                Some(frames) => {
                    frames.feed(&buf[..n]);
                    while let Some(frame) = frames.next().map_err(|e| self.malformed(e))? {
                        let len = match &frame {
                            super::zstd_frames::Decoded::Bytes(bytes) => bytes.len(),
                            super::zstd_frames::Decoded::Damaged(len) => *len,
                        };
                        decoded += len as u64;
                        if decoded > most {
                            return Err(self.malformed(format!(
                                "the answer to {} keys decodes to more than {most} bytes, more than those entries can weigh",
                                keys.len()
                            )));
                        }
                        match frame {
                            super::zstd_frames::Decoded::Bytes(bytes) => decoder.feed(&bytes),
                            // The entry it held fails its digest and is compiled here.
                            super::zstd_frames::Decoded::Damaged(len) => {
                                decoder.feed(&vec![0u8; len])
                            }
                        }
                    }
                }
            }
            while let Some(frame) = decoder.next_frame().map_err(|e| self.malformed(e))? {
                on_frame(frame.key_digest(), self.accept(&frame));
            }
        }
        if frames.as_ref().is_some_and(|f| !f.is_clean_end()) {
            return Err(self.malformed("the zstd answer ends inside a frame"));
        }
        decoder.finish().map_err(|e| self.malformed(e))?;
        Ok(bytes)
    }

    /// `GET /api/v1/entries/{key}`: where the entry the server would serve for `key` was
    /// found and who wrote it (`None`: the server has none). The body is not kept.
    pub fn entry_provenance(
        &self,
        key: &KeyDigest,
    ) -> Result<Option<EntryProvenance>, RemoteError> {
        let answer = self.send(self.request(reqwest::Method::GET, &api::entry_path(key)));
        let resp = match answer {
            Ok(resp) => resp,
            Err(RemoteError::Status { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Names from the network reach a terminal: no control characters.
        let header = |name: &str| {
            resp.headers().get(name).map(|v| {
                crate::output::escape_replayed(&String::from_utf8_lossy(v.as_bytes())).into_owned()
            })
        };
        Ok(Some(EntryProvenance {
            namespace: header(api::ENTRY_NAMESPACE_HEADER),
            written_by: header(api::ENTRY_WRITER_HEADER),
        }))
    }

    /// `POST /api/v1/purge` (admin): deletes the entries `request` names.
    pub fn purge(&self, request: &api::PurgeRequest) -> Result<api::PurgeResponse, RemoteError> {
        let resp = self.send(
            self.request(reqwest::Method::POST, api::PURGE)
                .json(request),
        )?;
        resp.json().map_err(|e| RemoteError::Malformed {
            url: self.base.clone(),
            detail: e.to_string(),
        })
    }

    /// `POST /api/v1/batch/put`: one pack, zstd-compressed (see [`UPLOAD_LEVEL`]).
    pub fn batch_put(&self, frames: &[Frame]) -> Result<(BatchPutResponse, u64), RemoteError> {
        let pack = pycache_proto::pack::encode_pack(frames);
        let body = zstd::bulk::compress(&pack, UPLOAD_LEVEL).unwrap_or_else(|_| pack.clone());
        let compressed = body.len() < pack.len();
        let sent = body.len() as u64;
        let mut req = self
            .request(reqwest::Method::POST, api::BATCH_PUT)
            .header(reqwest::header::CONTENT_TYPE, PACK_CONTENT_TYPE);
        req = if compressed {
            req.header(reqwest::header::CONTENT_ENCODING, "zstd")
                .body(body)
        } else {
            req.body(pack)
        };
        let resp = self.send(req)?;
        let answer = resp.json().map_err(|e| RemoteError::Malformed {
            url: self.base.clone(),
            detail: e.to_string(),
        })?;
        Ok((answer, sent))
    }

    fn malformed(&self, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::Malformed {
            url: self.base.clone(),
            detail: e.to_string(),
        }
    }
}

/// The end of an auth error's text when the client named a namespace: a 403 may be about it.
fn namespace_hint(namespace: Option<&str>) -> String {
    namespace.map_or_else(String::new, |ns| {
        format!(", and whether it may use the namespace {ns:?} (--namespace / PYCACHE_NAMESPACE)")
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
