//! The server tier: one method per endpoint the client uses, and the failure policy that keeps
//! the cache from ever breaking a build.
//!
//! A server that is down, slow past the timeout, answering 5xx, or sending a corrupt entry
//! costs one warning on stderr and a local compile. 401/403 is said loudly, once. After
//! [`MAX_FAILURES`] failures the server is not asked again in this run. With
//! `--require-server`, every such failure is an error instead.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Result};
use pycache_proto::api::{self, BatchGetRequest, BatchPutResponse, ServerInfo, StatsResponse};
use pycache_proto::pack::{Frame, PackDecoder, PACK_CONTENT_TYPE};
use pycache_proto::{Entry, ErrorResponse, KeyDigest};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;

use crate::settings::Secret;

/// Failures after which the server is left alone for the rest of the run.
pub const MAX_FAILURES: u32 = 3;

/// Largest entry the client accepts from a server.
const MAX_ENTRY_BYTES: usize = 64 << 20;

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
    /// The token is missing, unknown or revoked (401), or lacks the scope (403).
    #[error("the server {url} refused the request ({status}): {message}; check --token / PYCACHE_TOKEN and the token's scope")]
    Auth {
        /// The server.
        url: String,
        /// 401 or 403.
        status: u16,
        /// The server's message.
        message: String,
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

/// Entries a batch get brought back.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Verified entries by key.
    pub entries: Vec<(KeyDigest, Entry)>,
    /// Keys whose entry failed its digest or did not decode (treated as misses).
    pub corrupt: Vec<KeyDigest>,
    /// Bytes received (after decompression).
    pub bytes: u64,
}

/// A pycache server, spoken to over HTTP.
#[derive(Debug)]
pub struct Remote {
    client: Client,
    base: String,
    token: Option<Secret>,
    require: bool,
    failures: AtomicU32,
    warned: AtomicBool,
    auth_warned: AtomicBool,
    disabled: AtomicBool,
}

impl Remote {
    /// A client for `url`; `timeout` bounds every request.
    pub fn new(url: &str, token: Option<Secret>, require: bool, timeout: Duration) -> Result<Self> {
        let client = Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .user_agent(concat!("pycache-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow!("could not set up the HTTP client: {e}"))?;
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(anyhow!(
                "the server URL {url:?} must start with http:// or https:// (check --server / PYCACHE_SERVER)"
            ));
        }
        Ok(Remote {
            client,
            base,
            token,
            require,
            failures: AtomicU32::new(0),
            warned: AtomicBool::new(false),
            auth_warned: AtomicBool::new(false),
            disabled: AtomicBool::new(false),
        })
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Whether the server is still being asked in this run.
    pub fn enabled(&self) -> bool {
        !self.disabled.load(Ordering::Relaxed)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(&token.0);
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
            .map(|e| e.message)
            .unwrap_or_else(|_| status.canonical_reason().unwrap_or("error").to_owned());
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RemoteError::Auth {
                url: self.base.clone(),
                status: status.as_u16(),
                message,
            },
            _ => RemoteError::Status {
                url: self.base.clone(),
                status: status.as_u16(),
                message,
            },
        })
    }

    /// `GET /api/v1/info`: limits and the caller's scope.
    pub fn info(&self) -> Result<ServerInfo, RemoteError> {
        let resp = self.send(self.request(reqwest::Method::GET, api::INFO))?;
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

    /// `POST /api/v1/batch/get`: every key in one request (the caller splits past the server's
    /// advertised limit), every entry's digest verified.
    pub fn batch_get(&self, keys: &[KeyDigest]) -> Result<Fetched, RemoteError> {
        let body = BatchGetRequest {
            keys: keys.to_vec(),
        };
        let mut resp = self.send(
            self.request(reqwest::Method::POST, api::BATCH_GET)
                .json(&body),
        )?;
        let mut decoder = PackDecoder::new(MAX_ENTRY_BYTES);
        let mut out = Fetched::default();
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
            out.bytes += n as u64;
            decoder.feed(&buf[..n]);
            while let Some(frame) = decoder.next_frame().map_err(|e| self.malformed(e))? {
                let key = frame.key_digest();
                match frame.verify() {
                    Ok(entry) => out.entries.push((key, entry)),
                    Err(_) => out.corrupt.push(key),
                }
            }
        }
        decoder.finish().map_err(|e| self.malformed(e))?;
        Ok(out)
    }

    /// `POST /api/v1/batch/put`: one pack, zstd-compressed.
    pub fn batch_put(&self, frames: &[Frame]) -> Result<(BatchPutResponse, u64), RemoteError> {
        let pack = pycache_proto::pack::encode_pack(frames);
        let body = zstd::bulk::compress(&pack, 3).unwrap_or_else(|_| pack.clone());
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

    /// Applies the failure policy to a failed request: an error to return with
    /// `--require-server`, otherwise a warning (loud and once for auth) and `Ok`.
    pub fn absorb_failure(&self, what: &str, err: RemoteError) -> Result<()> {
        if self.require {
            return Err(anyhow!("{what} failed: {err} (--require-server is set)"));
        }
        match &err {
            RemoteError::Auth { .. } => {
                if !self.auth_warned.swap(true, Ordering::Relaxed) {
                    eprintln!("pycache: WARNING: {err}. Continuing without the server.");
                }
                self.disabled.store(true, Ordering::Relaxed);
            }
            _ => {
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if !self.warned.swap(true, Ordering::Relaxed) {
                    eprintln!("pycache: warning: {what} failed: {err}; compiling locally instead");
                }
                if n >= MAX_FAILURES {
                    self.disabled.store(true, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }
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

/// A server ready for the engine: the client, and what its `info` said.
#[derive(Debug)]
pub struct Connected {
    /// The server.
    pub remote: Remote,
    /// What the server advertised.
    pub info: ServerInfo,
}

impl Connected {
    /// Whether this token may upload.
    pub fn can_write(&self) -> bool {
        self.info.scope.is_some_and(|s| s >= api::Scope::Write)
    }
}

/// Per-request timeout: `PYCACHE_TIMEOUT` seconds, default 10.
pub fn timeout_from_env() -> Duration {
    std::env::var("PYCACHE_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(10), Duration::from_secs_f64)
}

/// Connects to the configured server and asks for its limits and our scope. `Ok(None)` when
/// no server is configured, or when it cannot be used and the failure policy says go on.
pub fn connect(settings: &crate::settings::Settings) -> Result<Option<Connected>> {
    let Some(url) = &settings.server else {
        return Ok(None);
    };
    let remote = Remote::new(
        url,
        settings.token.clone(),
        settings.require_server,
        timeout_from_env(),
    )?;
    match remote.info() {
        Ok(info) => Ok(Some(Connected { remote, info })),
        Err(e) => {
            remote.absorb_failure("asking the server for its limits", e)?;
            Ok(None)
        }
    }
}
