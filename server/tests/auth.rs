//! The auth matrix: no token, malformed header, unknown and revoked tokens, each scope on each
//! kind of route, and `--public-read`.

mod support;

use axum::http::StatusCode;
use pycache_proto::api::{self, Scope};
use pycache_proto::pack::encode_pack;
use pycache_server::auth::token_hash;
use pycache_server::Config;
use serde_json::json;
use support::router::{get, post_json, request, send, send_pack, token};
use support::{compiled_frame, public_read, sqlite_state};

/// What a caller gets from a read, a write and an admin route.
async fn outcomes(state: &pycache_server::AppState, token: Option<&str>) -> [StatusCode; 3] {
    let frame = compiled_frame(1, 20);
    let read = send(
        state,
        post_json(
            api::BATCH_GET,
            token,
            &json!({"keys": [frame.key_digest()]}),
        ),
    )
    .await;
    let write = send(
        state,
        send_pack("POST", api::BATCH_PUT, token, encode_pack([&frame])),
    )
    .await;
    let admin = send(state, get(api::TOKENS, token)).await;
    [read.status, write.status, admin.status]
}

#[tokio::test]
async fn scopes_read_write_admin_and_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite_state(dir.path(), Config::default()).await;
    let read = token(&state, "r", Scope::Read).await;
    let write = token(&state, "w", Scope::Write).await;
    let admin = token(&state, "a", Scope::Admin).await;
    use StatusCode as S;
    assert_eq!(outcomes(&state, None).await, [S::UNAUTHORIZED; 3]);
    assert_eq!(
        outcomes(&state, Some(&read)).await,
        [S::OK, S::FORBIDDEN, S::FORBIDDEN]
    );
    assert_eq!(
        outcomes(&state, Some(&write)).await,
        [S::OK, S::OK, S::FORBIDDEN]
    );
    assert_eq!(outcomes(&state, Some(&admin)).await, [S::OK, S::OK, S::OK]);

    // Error bodies say what is needed.
    let forbidden = send(
        &state,
        send_pack(
            "POST",
            api::BATCH_PUT,
            Some(&read),
            encode_pack([&compiled_frame(2, 5)]),
        ),
    )
    .await
    .assert_error(S::FORBIDDEN, "forbidden");
    assert!(forbidden.message.contains("write"), "{}", forbidden.message);
    send(&state, get(api::STATS, None))
        .await
        .assert_error(S::UNAUTHORIZED, "unauthorized");
    let path = api::entry_path(&compiled_frame(1, 20).key_digest());
    send(&state, get(&path, None))
        .await
        .assert_error(S::UNAUTHORIZED, "unauthorized");
    send(
        &state,
        send_pack(
            "PUT",
            &path,
            Some(&read),
            encode_pack([&compiled_frame(1, 20)]),
        ),
    )
    .await
    .assert_error(S::FORBIDDEN, "forbidden");
    let revoke = request("DELETE", "/api/v1/tokens/r", Some(&write))
        .body(axum::body::Body::empty())
        .unwrap();
    send(&state, revoke)
        .await
        .assert_error(S::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn unknown_revoked_and_malformed_tokens_are_401_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite_state(dir.path(), public_read()).await;
    let write = token(&state, "w", Scope::Write).await;
    assert!(state.store.revoke_token("w", 1).await.unwrap());
    for bad in [Some(write.as_str()), Some("pyc_nonsense")] {
        assert_eq!(outcomes(&state, bad).await, [StatusCode::UNAUTHORIZED; 3]);
        send(&state, get(api::INFO, bad))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let basic = request("GET", api::INFO, None)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(axum::body::Body::empty())
        .unwrap();
    send(&state, basic)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // The token text is never stored: only its hash finds it.
    let listed = state.store.list_tokens().await.unwrap();
    assert_eq!(listed[0].name, "w");
    assert!(state
        .store
        .token_grant(&token_hash(&write))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn public_read_opens_reads_but_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite_state(dir.path(), public_read()).await;
    use StatusCode as S;
    assert_eq!(
        outcomes(&state, None).await,
        [S::OK, S::UNAUTHORIZED, S::UNAUTHORIZED]
    );
    assert_eq!(send(&state, get(api::STATS, None)).await.status, S::OK);
    let info: pycache_proto::api::ServerInfo = send(&state, get(api::INFO, None)).await.json();
    assert!(info.public_read && info.scope.is_none());
}
