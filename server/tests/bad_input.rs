//! Bad input: malformed JSON, bad keys, truncated, oversized and corrupt packs. Each answers a
//! 4xx `ErrorResponse`, and nothing of a refused batch is stored.

mod support;

use axum::body::Body;
use axum::http::StatusCode;
use pycache_proto::api;
use pycache_proto::pack::{encode_pack, Frame};
use pycache_server::{AppState, Config};
use serde_json::json;
use support::router::{post_json, request, send, send_pack};
use support::{compiled_frame, pack_of, setup};

async fn assert_nothing_stored(state: &AppState) {
    assert_eq!(
        state.store.totals().await.unwrap().entries_and_bytes(),
        (0, 0)
    );
}

#[tokio::test]
async fn malformed_json_and_bad_keys_are_400() {
    let (_dir, state, t) = setup(Config::default()).await;
    for body in [
        "{",
        "[]",
        r#"{"keys": "x"}"#,
        r#"{"keys": ["abc"]}"#,
        r#"{"keys": [1]}"#,
    ] {
        let req = request("POST", api::BATCH_GET, Some(&t))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        send(&state, req)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "bad_json");
    }
    let no_type = request("POST", api::BATCH_GET, Some(&t))
        .body(Body::from("{}"))
        .unwrap();
    send(&state, no_type)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_json");
    for key in ["short", &"g".repeat(64), &"a".repeat(65)] {
        let req = request("GET", &format!("/api/v1/entries/{key}"), Some(&t))
            .body(Body::empty())
            .unwrap();
        send(&state, req)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "bad_key");
    }
}

#[tokio::test]
async fn truncated_packs_are_400_and_store_nothing() {
    let (_dir, state, t) = setup(Config::default()).await;
    let pack = pack_of(0..3, 100);
    for cut in [0, 5, 8, 20, pack.len() / 2, pack.len() - 9, pack.len() - 1] {
        let answer = send(
            &state,
            send_pack("POST", api::BATCH_PUT, Some(&t), pack[..cut].to_vec()),
        )
        .await;
        let err = answer.assert_error(StatusCode::BAD_REQUEST, "bad_pack");
        assert!(
            err.message.contains("nothing was stored"),
            "{}",
            err.message
        );
    }
    send(
        &state,
        send_pack(
            "POST",
            api::BATCH_PUT,
            Some(&t),
            b"GARBAGE!garbage".to_vec(),
        ),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "bad_pack");
    let mut trailing = pack.clone();
    trailing.push(1);
    send(
        &state,
        send_pack("POST", api::BATCH_PUT, Some(&t), trailing),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "bad_pack");
    // A frame whose key bytes are damaged: its key no longer decodes.
    let mut bad_key = pack;
    bad_key[8 + 4] ^= 0xff;
    send(&state, send_pack("POST", api::BATCH_PUT, Some(&t), bad_key))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_pack");
    assert_nothing_stored(&state).await;
}

#[tokio::test]
async fn a_wrong_digest_refuses_the_whole_batch() {
    let (_dir, state, t) = setup(Config::default()).await;
    let mut frames: Vec<Frame> = (0..3).map(|n| compiled_frame(n, 64)).collect();
    frames[2].entry_bytes[30] ^= 1;
    let answer = send(
        &state,
        send_pack("POST", api::BATCH_PUT, Some(&t), encode_pack(&frames)),
    )
    .await;
    answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch");
    let single = &frames[2];
    let path = api::entry_path(&single.key_digest());
    send(
        &state,
        send_pack("PUT", &path, Some(&t), encode_pack([single])),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch");
    assert_nothing_stored(&state).await;
}

#[tokio::test]
async fn oversized_entries_and_requests_are_413_and_store_nothing() {
    let config = Config {
        max_entry_bytes: 1000,
        max_request_bytes: 4000,
        ..Config::default()
    };
    let (_dir, state, t) = setup(config).await;
    // One entry over the per-entry limit, after one that fits.
    let frames = [compiled_frame(1, 100), compiled_frame(2, 2000)];
    send(
        &state,
        send_pack("POST", api::BATCH_PUT, Some(&t), encode_pack(&frames)),
    )
    .await
    .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Over the request limit, announced by Content-Length.
    let big = pack_of(0..10, 900);
    let req = request("POST", api::BATCH_PUT, Some(&t))
        .header("content-length", big.len().to_string())
        .body(Body::from(big.clone()))
        .unwrap();
    send(&state, req)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Over the request limit while streaming, with no Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(500).map(|c| Ok(c.to_vec())).collect();
    let streamed = request("POST", api::BATCH_PUT, Some(&t))
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    send(&state, streamed)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // An oversized JSON body too.
    let keys: Vec<String> = (0..100)
        .map(|n| compiled_frame(n, 1).key_digest().to_hex())
        .collect();
    send(
        &state,
        post_json(api::BATCH_GET, Some(&t), &json!({ "keys": keys })),
    )
    .await
    .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_nothing_stored(&state).await;
}
