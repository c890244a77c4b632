//! End to end: the real server binary on `127.0.0.1:0`, real HTTP, SQLite and PostgreSQL.

mod support;

use pycache_proto::api::{self, BatchPutResponse, ServerInfo, StatsResponse};
use pycache_proto::pack::{decode_pack, encode_pack, Frame};
use pycache_proto::ErrorResponse;
use serde_json::json;
use support::process::{create_token, run, Server};
use support::{compiled_frame, pg};

/// Client calls used by every scenario.
struct Api {
    http: reqwest::Client,
    token: String,
}

impl Api {
    fn new(token: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            token: token.to_owned(),
        }
    }

    async fn put(&self, server: &Server, frames: &[Frame]) -> BatchPutResponse {
        let response = self
            .http
            .post(server.url(api::BATCH_PUT))
            .bearer_auth(&self.token)
            .body(encode_pack(frames))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn get(&self, server: &Server, frames: &[Frame]) -> Vec<Frame> {
        let keys: Vec<String> = frames.iter().map(|f| f.key_digest().to_hex()).collect();
        let response = self
            .http
            .post(server.url(api::BATCH_GET))
            .bearer_auth(&self.token)
            .header("accept-encoding", "zstd")
            .json(&json!({ "keys": keys }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let zstd = response
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v == "zstd");
        let body = response.bytes().await.unwrap();
        let body = if zstd {
            zstd::decode_all(&body[..]).unwrap()
        } else {
            body.to_vec()
        };
        decode_pack(&body, 1 << 24).unwrap()
    }

    async fn stats(&self, server: &Server) -> StatsResponse {
        let response = self
            .http
            .get(server.url(api::STATS))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_server_serves_restarts_and_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let token = create_token(&["--data-dir", data_arg], "ci", "write");
    assert!(token.starts_with("pyc_"));
    let mut server = Server::start(&["--data-dir", data_arg], dir.path());
    let api = Api::new(&token);

    let info: ServerInfo = api
        .http
        .get(server.url(api::INFO))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info.scope, Some(api::Scope::Write));
    let frames: Vec<Frame> = (0..50).map(|n| compiled_frame(n, 2000)).collect();
    assert_eq!(api.put(&server, &frames).await.stored.len(), 50);
    assert_eq!(api.get(&server, &frames).await, frames);

    let single = api
        .http
        .get(server.url(&api::entry_path(&frames[3].key_digest())))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 200);
    assert_eq!(single.bytes().await.unwrap(), frames[3].entry_bytes);
    let anonymous = api.http.get(server.url(api::STATS)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let err: ErrorResponse = anonymous.json().await.unwrap();
    assert_eq!(err.code, "unauthorized");
    let metrics = api
        .http
        .get(server.url(api::METRICS))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("pycache_hits_total 51"), "{metrics}");

    assert!(
        server.signal_and_wait("TERM"),
        "SIGTERM should stop the server cleanly:\n{}",
        server.log()
    );
    let server = Server::start(&["--data-dir", data_arg], dir.path());
    assert_eq!(api.stats(&server).await.entries, 50);
    assert_eq!(api.get(&server, &frames[..2]).await, frames[..2].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_serve_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = pg::start();
    let url = cluster.create_database("shared");
    let token = create_token(&["--database-url", &url], "ci", "write");
    let a = Server::start(&["--database-url", &url], dir.path());
    let b = Server::start(&["--database-url", &url], dir.path());
    let api = Api::new(&token);

    let from_a: Vec<Frame> = (0..20).map(|n| compiled_frame(n, 500)).collect();
    api.put(&a, &from_a).await;
    assert_eq!(api.get(&b, &from_a).await, from_a);

    let from_b = compiled_frame(100, 300);
    let put = api
        .http
        .put(b.url(&api::entry_path(&from_b.key_digest())))
        .bearer_auth(&token)
        .body(encode_pack([&from_b]))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(
        api.get(&a, std::slice::from_ref(&from_b)).await,
        vec![from_b]
    );
    assert_eq!(api.stats(&a).await.entries, 21);
    let ready = api.http.get(b.url(api::READYZ)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_batch_put_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let token = create_token(&["--data-dir", data_arg], "ci", "write");
    let mut server = Server::start(&["--data-dir", data_arg], dir.path());
    let api = Api::new(&token);
    let kept: Vec<Frame> = (0..10).map(|n| compiled_frame(n, 1000)).collect();
    api.put(&server, &kept).await;

    // Stream half of a large pack, then kill the server while the request is open.
    let pack = encode_pack(
        &(1000..1400)
            .map(|n| compiled_frame(n, 20_000))
            .collect::<Vec<_>>(),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let request = api
        .http
        .post(server.url(api::BATCH_PUT))
        .bearer_auth(&token)
        .body(body)
        .send();
    let upload = tokio::spawn(request);
    for chunk in pack[..pack.len() / 2].chunks(64 * 1024) {
        tx.send(Ok(chunk.to_vec())).await.unwrap();
    }
    assert!(!server.signal_and_wait("KILL"));
    drop(tx);
    assert!(
        upload.await.unwrap().is_err(),
        "the interrupted upload cannot have succeeded"
    );

    let server = Server::start(&["--data-dir", data_arg], dir.path());
    let stats = api.stats(&server).await;
    assert_eq!(stats.entries, 10, "only the committed batch is there");
    let back = api.get(&server, &kept).await;
    assert_eq!(back, kept);
    for frame in back {
        frame.verify().expect("stored entries still verify");
    }
}

#[test]
fn cli_fails_fast_on_bad_databases_and_manages_tokens() {
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        "postgres://u:pw@127.0.0.1:1/db",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot open the database at postgres://u:***@127.0.0.1:1/db"),
        "{stderr}"
    );
    assert!(!stderr.contains("pw@"), "the password leaked: {stderr}");
    let out = run(&["migrate", "--database-url", "mysql://nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database URL"));

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let db = ["--data-dir", data.to_str().unwrap()];
    assert!(run(&[&["migrate"][..], &db].concat()).status.success());
    let token = create_token(&db, "laptop", "read");
    let listed = String::from_utf8(run(&[&["token", "list"][..], &db].concat()).stdout).unwrap();
    assert!(listed.contains("laptop") && listed.contains("read") && !listed.contains(&token));
    assert!(run(&[&["token", "revoke", "laptop"][..], &db].concat())
        .status
        .success());
    let again = run(&[&["token", "revoke", "laptop"][..], &db].concat());
    assert!(!again.status.success());
    let dup = run(&[
        &["token", "create", "--scope", "read", "--name", "laptop"][..],
        &db,
    ]
    .concat());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let bad_scope = run(&[
        &["token", "create", "--scope", "root", "--name", "x"][..],
        &db,
    ]
    .concat());
    assert_eq!(bad_scope.status.code(), Some(2));
}
