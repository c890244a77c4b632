//! Helpers shared by the server's integration tests: sample keys, entries and packs, and an
//! app state over a temp SQLite file.
#![allow(dead_code, unused_imports)]

pub use pycache_testkit::pg;
pub use pycache_testkit::server as process;

use std::sync::Arc;

use pycache_proto::pack::{encode_pack, Frame};
use pycache_proto::{CacheKey, Entry};
use pycache_server::store::{SqliteStore, Store};
use pycache_server::{AppState, Config};

/// A distinct key per `n`, of a made-up interpreter: the server checks the bodies of CPython
/// keys as whole code objects (tests of that use real bodies), so the storage and routing tests
/// can use short synthetic ones under this tag.
pub const TEST_CACHE_TAG: &str = "testpy-311";

/// A distinct key per `n`.
pub fn key(n: u32) -> CacheKey {
    CacheKey {
        source_hash: *blake3::hash(&n.to_le_bytes()).as_bytes(),
        magic: [0xa7, 0x0d, b'\r', b'\n'],
        cache_tag: TEST_CACHE_TAG.into(),
        optimization: 0,
        settings: "w=default".into(),
        dfile: format!("pkg/mod{n}.py"),
    }
}

/// A successful compile for key `n` whose body is `size` bytes long.
pub fn compiled_frame(n: u32, size: usize) -> Frame {
    let mut body = vec![0xe3];
    body.extend((0..size.saturating_sub(1)).map(|i| (i as u32 ^ n) as u8));
    Frame::new(key(n), &Entry::compiled(body, String::new()))
}

/// A successful compile for key `n` whose `size`-byte body does not compress (stored as it
/// is, so stored sizes are entry sizes).
pub fn incompressible_frame(n: u32, size: usize) -> Frame {
    let mut body = vec![0xe3];
    let mut noise = blake3::Hasher::new();
    noise.update(&n.to_le_bytes());
    let mut rest = vec![0u8; size.saturating_sub(1)];
    noise.finalize_xof().fill(&mut rest);
    body.extend(rest);
    Frame::new(key(n), &Entry::compiled(body, String::new()))
}

/// A failed compile for key `n`.
pub fn failed_frame(n: u32) -> Frame {
    Frame::new(
        key(n),
        &Entry::failed("SyntaxError: invalid syntax\n".into(), "warn\n".into()),
    )
}

/// A frame whose body is not a code object (digest correct).
pub fn not_code_frame(n: u32) -> Frame {
    Frame::new(key(n), &Entry::compiled(b"hello".to_vec(), String::new()))
}

/// A pack of frames `0..count`, each `size` bytes.
pub fn pack_of(range: std::ops::Range<u32>, size: usize) -> Vec<u8> {
    let frames: Vec<Frame> = range.map(|n| compiled_frame(n, size)).collect();
    encode_pack(&frames)
}

/// A migrated SQLite store in `dir`.
pub async fn sqlite_store(dir: &std::path::Path) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.join("pycache.db").display());
    Arc::new(SqliteStore::connect(&url).await.expect("open sqlite store"))
}

/// A temp dir, state over a fresh SQLite store in it with `config`, and a write token.
pub async fn setup(config: Config) -> (tempfile::TempDir, AppState, String) {
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite_state(dir.path(), config).await;
    let write = router::token(&state, "writer", pycache_proto::api::Scope::Write).await;
    (dir, state, write)
}

/// [`Config::default`] with `--public-read`.
pub fn public_read() -> Config {
    Config {
        public_read: true,
        ..Config::default()
    }
}

/// State over a fresh SQLite store with `config`.
pub async fn sqlite_state(dir: &std::path::Path, config: Config) -> AppState {
    AppState::new(sqlite_store(dir).await, config)
}

/// Requests through the router in-process (`oneshot`), with JSON and pack helpers.
pub mod router {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use pycache_proto::api::Scope;
    use pycache_proto::ErrorResponse;
    use pycache_server::auth::{new_token, token_hash};
    use pycache_server::AppState;
    use tower::ServiceExt;

    /// A response's status, headers and whole body.
    pub struct Answer {
        /// Status.
        pub status: StatusCode,
        /// Headers.
        pub headers: axum::http::HeaderMap,
        /// Body bytes.
        pub body: Vec<u8>,
    }

    impl Answer {
        /// The body as JSON of type `T`.
        pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("{e}: body {:?}", String::from_utf8_lossy(&self.body)))
        }

        /// Asserts the body is an ErrorResponse with `status` and `code`.
        pub fn assert_error(&self, status: StatusCode, code: &str) -> ErrorResponse {
            let err: ErrorResponse = self.json();
            assert_eq!(
                (self.status, err.code.as_str()),
                (status, code),
                "{}",
                err.message
            );
            assert!(!err.message.is_empty());
            err
        }
    }

    /// Sends one request through a fresh router over `state`.
    pub async fn send(state: &AppState, request: Request<Body>) -> Answer {
        let response = pycache_server::app(state.clone())
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A request builder with an optional bearer token.
    pub fn request(method: &str, uri: &str, token: Option<&str>) -> axum::http::request::Builder {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b
    }

    /// A JSON POST.
    pub fn post_json(uri: &str, token: Option<&str>, json: &serde_json::Value) -> Request<Body> {
        request("POST", uri, token)
            .header("content-type", "application/json")
            .body(Body::from(json.to_string()))
            .unwrap()
    }

    /// A pack POST/PUT.
    pub fn send_pack(method: &str, uri: &str, token: Option<&str>, pack: Vec<u8>) -> Request<Body> {
        request(method, uri, token)
            .header("content-type", pycache_proto::pack::PACK_CONTENT_TYPE)
            .body(Body::from(pack))
            .unwrap()
    }

    /// A GET without body.
    pub fn get(uri: &str, token: Option<&str>) -> Request<Body> {
        request("GET", uri, token).body(Body::empty()).unwrap()
    }

    /// Creates a token with `scope` directly in the store.
    pub async fn token(state: &AppState, name: &str, scope: Scope) -> String {
        let token = new_token();
        let (writes, reads) = pycache_server::auth::default_grants(scope);
        let grant = pycache_server::store::NewToken {
            name: name.to_owned(),
            scope,
            writes,
            reads,
        };
        state
            .store
            .create_token(&token_hash(&token), &grant, 0)
            .await
            .unwrap();
        token
    }
}

/// What a server process costs, read from `/proc`, and clients that stop moving.
pub mod proc {
    use std::io::Write;
    use std::net::TcpStream;

    use pycache_proto::api;
    use pycache_testkit::server::Server;

    /// A `/proc/PID/status` field given in kB (`VmHWM`, `VmRSS` …), in bytes.
    pub fn status_bytes(pid: u32, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"));
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }

    /// The peak resident set size of process `pid` so far (`VmHWM`), in bytes.
    pub fn peak_rss(pid: u32) -> u64 {
        status_bytes(pid, "VmHWM")
    }

    /// The resident set size of process `pid` now (`VmRSS`), in bytes.
    pub fn rss(pid: u32) -> u64 {
        status_bytes(pid, "VmRSS")
    }

    /// A batch get of `keys` sent on a raw socket whose answer is never read.
    pub fn stalled_reader(server: &Server, token: &str, keys: &[String]) -> TcpStream {
        let addr = server.base.trim_start_matches("http://");
        let mut socket = TcpStream::connect(addr).unwrap();
        let body = serde_json::json!({ "keys": keys }).to_string();
        write!(
            socket,
            "POST {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            api::BATCH_GET,
            body.len()
        )
        .unwrap();
        socket
    }
}
