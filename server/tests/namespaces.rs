//! Namespaces, immutable entries, provenance and purges through the router: what a hostile
//! writer with a token of its own can and cannot change for the readers of a namespace.

mod support;

use axum::http::StatusCode;
use pycache_proto::api::{
    self, BatchPutResponse, PurgeResponse, ServerInfo, TokenCreated, REFUSED_CONFLICT,
};
use pycache_proto::pack::{decode_pack, encode_pack, Frame};
use pycache_proto::Entry;
use pycache_server::{AppState, Config};
use serde_json::json;
use support::router::{request, send, token, Answer};
use support::{compiled_frame, setup};

/// Creates a token through the admin API.
async fn create(
    state: &AppState,
    admin: &str,
    name: &str,
    scope: &str,
    writes: &[&str],
    reads: &[&str],
) -> String {
    let answer = send(
        state,
        support::router::post_json(
            api::TOKENS,
            Some(admin),
            &json!({ "name": name, "scope": scope, "writes": writes, "reads": reads }),
        ),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let created: TokenCreated = answer.json();
    assert_eq!(created.writes, writes);
    assert_eq!(created.reads, reads);
    created.token
}

fn with_namespace(
    builder: axum::http::request::Builder,
    namespace: Option<&str>,
) -> axum::http::request::Builder {
    match namespace {
        Some(ns) => builder.header(api::NAMESPACE_HEADER, ns),
        None => builder,
    }
}

async fn put(state: &AppState, token: &str, namespace: Option<&str>, frames: &[Frame]) -> Answer {
    let req = with_namespace(request("POST", api::BATCH_PUT, Some(token)), namespace)
        .header("content-type", pycache_proto::pack::PACK_CONTENT_TYPE)
        .body(axum::body::Body::from(encode_pack(frames)))
        .unwrap();
    send(state, req).await
}

async fn get(
    state: &AppState,
    token: &str,
    namespace: Option<&str>,
    frames: &[Frame],
) -> Vec<Frame> {
    let keys: Vec<String> = frames.iter().map(|f| f.key_digest().to_hex()).collect();
    let req = with_namespace(request("POST", api::BATCH_GET, Some(token)), namespace)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(json!({ "keys": keys }).to_string()))
        .unwrap();
    let answer = send(state, req).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    decode_pack(&answer.body, 1 << 20).unwrap()
}

/// Another body for the key of `honest`: what a hostile writer would upload.
fn poisoned(honest: &Frame) -> Frame {
    Frame::new(
        honest.key.clone(),
        &Entry::compiled(b"\xe3poisoned code object".to_vec(), String::new()),
    )
}

fn metric(state: &AppState, name: &str) -> u64 {
    let text = state.metrics.render(0, 0);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_pull_request_token_cannot_change_what_main_readers_get() {
    let (_dir, state, _default_writer) = setup(Config::default()).await;
    let admin = token(&state, "admin", api::Scope::Admin).await;
    let main = create(&state, &admin, "ci-main", "write", &["main"], &["main"]).await;
    let pr = create(&state, &admin, "ci-pr", "write", &["pr/*"], &["main"]).await;
    let laptop = create(&state, &admin, "laptop", "read", &[], &["main"]).await;

    let honest: Vec<Frame> = (0..4).map(|n| compiled_frame(n, 200)).collect();
    // main stores the first three; the fourth it has not stored yet.
    let answer = put(&state, &main, None, &honest[..3]).await;
    let stored: BatchPutResponse = answer.json();
    assert_eq!(
        (stored.namespace.as_str(), stored.stored.len()),
        ("main", 3)
    );

    // The PR job may not write main, nor write without naming its namespace.
    put(&state, &pr, Some("main"), &[poisoned(&honest[0])])
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    put(&state, &pr, None, &[poisoned(&honest[0])])
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    // In its own namespace it stores what it likes, including keys main has not stored yet.
    let poison: Vec<Frame> = honest.iter().map(poisoned).collect();
    let answer = put(&state, &pr, Some("pr/1234"), &poison[..]).await;
    let stored: BatchPutResponse = answer.json();
    assert_eq!(
        (stored.namespace.as_str(), stored.stored.len()),
        ("pr/1234", 4)
    );
    // main then stores the fourth: its own bytes, not the PR's.
    put(&state, &main, None, &honest[3..]).await;

    // main's readers get main's bytes, every one.
    for reader in [&laptop, &main] {
        assert_eq!(get(&state, reader, None, &honest).await, honest);
    }
    // A reader may not name a namespace its token does not read.
    let req = with_namespace(request("GET", api::INFO, Some(&laptop)), Some("pr/1234"))
        .body(axum::body::Body::empty())
        .unwrap();
    send(&state, req)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    // The PR job reads its own entries first, then main's.
    let fresh = compiled_frame(9, 100);
    put(&state, &main, None, std::slice::from_ref(&fresh)).await;
    let mut asked = honest.clone();
    asked.push(fresh.clone());
    let mut expected = poison.clone();
    expected.push(fresh);
    assert_eq!(get(&state, &pr, Some("pr/1234"), &asked).await, expected);

    // info says where each caller writes and reads.
    let req = with_namespace(request("GET", api::INFO, Some(&pr)), Some("pr/1234"))
        .body(axum::body::Body::empty())
        .unwrap();
    let info: ServerInfo = send(&state, req).await.json();
    assert_eq!(info.namespace.as_deref(), Some("pr/1234"));
    assert_eq!(info.reads, ["pr/1234", "main"]);
    let req = request("GET", api::INFO, Some(&laptop))
        .body(axum::body::Body::empty())
        .unwrap();
    let info: ServerInfo = send(&state, req).await.json();
    assert_eq!(
        (info.namespace, info.reads),
        (None, vec!["main".to_owned()])
    );
    // A malformed namespace is a 400 that says what a namespace is.
    let req = with_namespace(request("GET", api::INFO, Some(&pr)), Some("../etc"))
        .body(axum::body::Body::empty())
        .unwrap();
    let err = send(&state, req)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_namespace");
    assert!(err.message.contains("pr/1234"), "{}", err.message);
}

#[tokio::test]
async fn a_stored_entry_never_changes_and_conflicts_are_counted() {
    let (_dir, state, _) = setup(Config::default()).await;
    let admin = token(&state, "admin", api::Scope::Admin).await;
    let first = create(&state, &admin, "ci-a", "write", &["main"], &["main"]).await;
    let second = create(&state, &admin, "ci-b", "write", &["main"], &["main"]).await;
    let honest = compiled_frame(1, 200);
    put(&state, &first, None, std::slice::from_ref(&honest)).await;

    // Other bytes under the stored key, by another token of the same namespace: refused.
    let answer = put(
        &state,
        &second,
        None,
        &[poisoned(&honest), compiled_frame(2, 50)],
    )
    .await;
    let outcome: BatchPutResponse = answer.json();
    assert_eq!(outcome.stored, vec![compiled_frame(2, 50).key_digest()]);
    assert_eq!(outcome.refused.len(), 1);
    assert_eq!(outcome.refused[0].code, REFUSED_CONFLICT);
    assert_eq!(outcome.refused[0].key, honest.key_digest());
    // The single-entry PUT says 409.
    let req = request("PUT", &api::entry_path(&honest.key_digest()), Some(&second))
        .header("content-type", pycache_proto::pack::PACK_CONTENT_TYPE)
        .body(axum::body::Body::from(encode_pack(&[poisoned(&honest)])))
        .unwrap();
    send(&state, req)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    // The same bytes again are a no-op, not a conflict.
    let outcome: BatchPutResponse = put(&state, &second, None, std::slice::from_ref(&honest))
        .await
        .json();
    assert_eq!((outcome.stored.len(), outcome.refused.len()), (1, 0));
    assert_eq!(metric(&state, "pycache_conflicts_total"), 2);

    // The original is what is served, with who wrote it.
    assert_eq!(
        get(&state, &first, None, std::slice::from_ref(&honest)).await,
        vec![honest.clone()]
    );
    let one = send(
        &state,
        support::router::get(&api::entry_path(&honest.key_digest()), Some(&second)),
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body, honest.entry_bytes);
    assert_eq!(one.headers[api::ENTRY_NAMESPACE_HEADER], "main");
    assert_eq!(one.headers[api::ENTRY_WRITER_HEADER], "ci-a");
}

#[tokio::test]
async fn purges_remove_what_they_name_and_only_admins_purge() {
    let (_dir, state, _) = setup(Config::default()).await;
    let admin = token(&state, "admin", api::Scope::Admin).await;
    let main = create(&state, &admin, "ci-main", "write", &["main"], &["main"]).await;
    let rogue = create(
        &state,
        &admin,
        "rogue",
        "write",
        &["main", "pr/*"],
        &["main"],
    )
    .await;
    let main_frames: Vec<Frame> = (0..3).map(|n| compiled_frame(n, 100)).collect();
    let rogue_frames: Vec<Frame> = (10..14).map(|n| compiled_frame(n, 100)).collect();
    put(&state, &main, None, &main_frames).await;
    put(&state, &rogue, None, &rogue_frames[..2]).await;
    put(&state, &rogue, Some("pr/5"), &rogue_frames[2..]).await;

    let purge = |token: String, body: serde_json::Value| {
        let state = state.clone();
        async move {
            send(
                &state,
                support::router::post_json(api::PURGE, Some(&token), &body),
            )
            .await
        }
    };
    purge(main.clone(), json!({ "namespace": "pr/5" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    purge(admin.clone(), json!({}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "empty_purge");
    let purged: PurgeResponse = purge(admin.clone(), json!({ "namespace": "pr/5" }))
        .await
        .json();
    assert_eq!(purged.entries, 2);

    // Revoking with purge removes exactly what the token wrote.
    let req = request("DELETE", "/api/v1/tokens/rogue?purge=true", Some(&admin))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(send(&state, req).await.status, StatusCode::NO_CONTENT);
    let mut all = main_frames.clone();
    all.extend(rogue_frames.iter().cloned());
    assert_eq!(get(&state, &main, None, &all).await, main_frames);
    assert_eq!(metric(&state, "pycache_purged_entries_total"), 4);
    let (entries, _) = state.store.totals().await.unwrap().entries_and_bytes();
    assert_eq!(entries, 3);
}
