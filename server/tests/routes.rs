//! Router tests: every endpoint through `app(state).oneshot(..)`, over a temp SQLite store.

mod support;

use axum::body::Body;
use axum::http::StatusCode;
use pycache_proto::api::{
    self, BatchPutResponse, Scope, ServerInfo, StatsResponse, TokenCreated, TokenListResponse,
};
use pycache_proto::pack::{decode_pack, encode_pack, Frame};
use pycache_proto::{Entry, EntryDigest};
use pycache_server::{maintenance, Config};
use serde_json::json;
use support::router::{get, post_json, request, send, send_pack, token};
use support::{compiled_frame, failed_frame, not_code_frame, setup};

fn keys_json(frames: &[Frame]) -> serde_json::Value {
    json!({ "keys": frames.iter().map(|f| f.key_digest().to_hex()).collect::<Vec<_>>() })
}

#[tokio::test]
async fn batch_put_then_batch_get_returns_the_entries_in_request_order() {
    let (_dir, state, t) = setup(Config::default()).await;
    let frames = vec![
        compiled_frame(1, 300),
        failed_frame(2),
        compiled_frame(3, 10),
    ];
    let put = send(
        &state,
        send_pack("POST", api::BATCH_PUT, Some(&t), encode_pack(&frames)),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    let stored: BatchPutResponse = put.json();
    assert_eq!(stored.stored.len(), 3);
    assert!(stored.refused.is_empty());

    let mut asked = vec![
        frames[2].clone(),
        compiled_frame(77, 5),
        frames[0].clone(),
        frames[1].clone(),
    ];
    let got = send(
        &state,
        post_json(api::BATCH_GET, Some(&t), &keys_json(&asked)),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.headers["content-type"],
        pycache_proto::pack::PACK_CONTENT_TYPE
    );
    asked.remove(1);
    let back = decode_pack(&got.body, 1 << 20).unwrap();
    assert_eq!(back, asked);
    for f in &back {
        f.verify().unwrap();
    }
    let none = send(
        &state,
        post_json(api::BATCH_GET, Some(&t), &json!({"keys": []})),
    )
    .await;
    assert_eq!(decode_pack(&none.body, 10).unwrap(), vec![]);
}

/// A file is one lookup in the server's counts (issue 23): a lookup list groups the keys that
/// are alternatives for one file and is counted once, a hit when any of them is served (under
/// the served entry's interpreter), else a miss (under the interpreter the request names);
/// JSON `lookups` does the same; a plain key list (older clients) counts each key. The answer
/// holds each key found once, in request order, whatever the form.
#[tokio::test]
async fn batch_get_counts_a_lookup_once_whatever_its_alternatives() {
    let (_dir, state, t) = setup(Config {
        max_batch_keys: 8,
        ..Config::default()
    })
    .await;
    let stored = [compiled_frame(1, 50), compiled_frame(2, 50)];
    send(
        &state,
        send_pack("POST", api::BATCH_PUT, Some(&t), encode_pack(&stored)),
    )
    .await;
    let k = |n: u32| support::key(n).digest();
    let post = |content_type: &str, body: Vec<u8>, interpreter: Option<&str>| {
        let mut b = request("POST", api::BATCH_GET, Some(&t)).header("content-type", content_type);
        if let Some(i) = interpreter {
            b = b.header(api::INTERPRETER_HEADER, i);
        }
        b.body(Body::from(body)).unwrap()
    };
    // Four files: the first and third served (k1 twice, k2), the second and fourth not.
    let lookups = [
        vec![k(3), k(1)],
        vec![k(4)],
        vec![k(1), k(2)],
        vec![k(5), k(6)],
    ];
    let got = send(
        &state,
        post(
            api::LOOKUPS_CONTENT_TYPE,
            api::encode_lookups(lookups.iter().map(Vec::as_slice)),
            Some("cpython-311 a70d0d0a"),
        ),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(decode_pack(&got.body, 1 << 20).unwrap(), stored.to_vec());
    let stats: StatsResponse = send(&state, get(api::STATS, Some(&t))).await.json();
    assert_eq!((stats.hits, stats.misses), (2, 2), "{stats:?}");

    // JSON: each of `keys` a lookup, then `lookups`.
    let hex = |n: u32| k(n).to_hex();
    let got = send(
        &state,
        post_json(
            api::BATCH_GET,
            Some(&t),
            &json!({"keys": [hex(1)], "lookups": [[hex(5), hex(2)]]}),
        ),
    )
    .await;
    assert_eq!(decode_pack(&got.body, 1 << 20).unwrap(), stored.to_vec());
    // A key list: each key a lookup.
    let got = send(
        &state,
        post(
            api::KEY_LIST_CONTENT_TYPE,
            api::encode_key_list(&[k(5), k(6)]),
            None,
        ),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);

    let stats: StatsResponse = send(&state, get(api::STATS, Some(&t))).await.json();
    assert_eq!((stats.hits, stats.misses), (4, 4), "{stats:?}");
    assert_eq!(stats.hit_rate, Some(0.5));
    let by_interpreter: Vec<(&str, &str, u64, u64)> = stats
        .lookups_by_interpreter
        .iter()
        .map(|i| (i.cache_tag.as_str(), i.magic.as_str(), i.hits, i.misses))
        .collect();
    assert_eq!(
        by_interpreter,
        vec![
            ("cpython-311", "a70d0d0a", 0, 2),
            (support::TEST_CACHE_TAG, "a70d0d0a", 4, 0),
            ("unknown", "", 0, 2),
        ]
    );
    assert_eq!(stats.lookups_by_namespace.len(), 1);
    assert_eq!(stats.lookups_by_namespace[0].namespace, "default");
    assert_eq!(stats.lookups_by_namespace[0].hit_rate, Some(0.5));
    let text = String::from_utf8(send(&state, get(api::METRICS, None)).await.body).unwrap();
    for line in [
        "pycache_hits_total 4",
        "pycache_misses_total 4",
        "pycache_hit_rate 0.5",
        "pycache_lookups_total{namespace=\"default\",cache_tag=\"cpython-311\",magic=\"a70d0d0a\",result=\"miss\"} 2",
        "pycache_lookups_total{namespace=\"default\",cache_tag=\"testpy-311\",magic=\"a70d0d0a\",result=\"hit\"} 4",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }

    // Malformed lookups are 400s; more keys than the limit (repeats counted) a 413.
    send(&state, post(api::LOOKUPS_CONTENT_TYPE, vec![0], None))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_key");
    send(
        &state,
        post(api::LOOKUPS_CONTENT_TYPE, vec![2; 1 + 32], None),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "bad_key");
    send(
        &state,
        post_json(api::BATCH_GET, Some(&t), &json!({"lookups": [[]]})),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "bad_json");
    let nine: Vec<Vec<pycache_proto::KeyDigest>> = (0..3).map(|n| vec![k(n); 3]).collect();
    send(
        &state,
        post(
            api::LOOKUPS_CONTENT_TYPE,
            api::encode_lookups(nine.iter().map(Vec::as_slice)),
            None,
        ),
    )
    .await
    .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let info: ServerInfo = send(&state, get(api::INFO, Some(&t))).await.json();
    assert!(info.lookups, "the server says it takes lookup lists");
}

#[tokio::test]
async fn batch_get_is_zstd_compressed_when_accepted_and_streams_many_chunks() {
    let (_dir, state, t) = setup(Config::default()).await;
    let frames: Vec<Frame> = (0..1200).map(|n| compiled_frame(n, 200)).collect();
    let put = send(
        &state,
        send_pack("POST", api::BATCH_PUT, Some(&t), encode_pack(&frames)),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    let req = request("POST", api::BATCH_GET, Some(&t))
        .header("content-type", "application/json")
        .header("accept-encoding", "zstd")
        .body(Body::from(keys_json(&frames).to_string()))
        .unwrap();
    let got = send(&state, req).await;
    assert_eq!(got.headers["content-encoding"], "zstd");
    let plain = zstd::decode_all(&got.body[..]).unwrap();
    assert_eq!(decode_pack(&plain, 1 << 20).unwrap(), frames);
}

#[tokio::test]
async fn batch_put_accepts_zstd_bodies_and_refuses_bad_entries_one_by_one() {
    let (_dir, state, t) = setup(Config::default()).await;
    let pack = encode_pack(&[compiled_frame(1, 50), not_code_frame(2)]);
    let req = request("POST", api::BATCH_PUT, Some(&t))
        .header("content-encoding", "zstd")
        .body(Body::from(zstd::encode_all(&pack[..], 3).unwrap()))
        .unwrap();
    let put = send(&state, req).await;
    assert_eq!(put.status, StatusCode::OK);
    let answer: BatchPutResponse = put.json();
    assert_eq!(answer.stored, vec![compiled_frame(1, 50).key_digest()]);
    assert_eq!(answer.refused.len(), 1);
    assert_eq!(answer.refused[0].key, not_code_frame(2).key_digest());
    assert!(answer.refused[0].reason.contains("code object"));
}

#[tokio::test]
async fn an_unsupported_content_encoding_is_a_json_415_and_stores_nothing() {
    let (_dir, state, t) = setup(Config::default()).await;
    let pack = encode_pack(&[compiled_frame(3, 50)]);
    let req = request("POST", api::BATCH_PUT, Some(&t))
        .header("content-encoding", "br")
        .body(Body::from(pack))
        .unwrap();
    let put = send(&state, req).await;
    assert_eq!(put.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let err: pycache_proto::ErrorResponse = put.json();
    assert_eq!(err.code, "unsupported_media_type");
    assert!(err.message.contains("zstd"), "{}", err.message);
    let stats = send(&state, get(api::STATS, Some(&t))).await;
    let stats: serde_json::Value = stats.json();
    assert_eq!(stats["entries"], 0);
}

#[tokio::test]
async fn single_entry_get_head_put() {
    let (_dir, state, t) = setup(Config::default()).await;
    let frame = compiled_frame(5, 40);
    let path = api::entry_path(&frame.key_digest());
    let pack = encode_pack([&frame]);
    let put = send(&state, send_pack("PUT", &path, Some(&t), pack.clone())).await;
    assert_eq!(put.status, StatusCode::CREATED);
    let again = send(&state, send_pack("PUT", &path, Some(&t), pack.clone())).await;
    assert_eq!(again.status, StatusCode::OK);

    let got = send(&state, get(&path, Some(&t))).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, frame.entry_bytes);
    assert_eq!(
        got.headers[api::ENTRY_DIGEST_HEADER],
        EntryDigest::of(&got.body).to_hex()
    );
    assert_eq!(got.headers["content-type"], api::ENTRY_CONTENT_TYPE);
    assert!(Entry::decode(&got.body).unwrap().is_success());

    let head = send(
        &state,
        request("HEAD", &path, Some(&t))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(
        head.headers["content-length"],
        frame.entry_bytes.len().to_string()
    );

    let missing = api::entry_path(&compiled_frame(6, 1).key_digest());
    send(&state, get(&missing, Some(&t)))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let head = send(
        &state,
        request("HEAD", &missing, Some(&t))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    send(&state, get("/api/v1/entries/not-a-key", Some(&t)))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_key");
    // The body's key must be the path's key.
    send(&state, send_pack("PUT", &missing, Some(&t), pack))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "key_mismatch");
    let bad = not_code_frame(7);
    send(
        &state,
        send_pack(
            "PUT",
            &api::entry_path(&bad.key_digest()),
            Some(&t),
            encode_pack([&bad]),
        ),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_entry");
}

#[tokio::test]
async fn info_stats_metrics_health_and_openapi() {
    let (_dir, state, t) = setup(Config {
        max_batch_keys: 3,
        ..Config::default()
    })
    .await;
    let info: ServerInfo = send(&state, get(api::INFO, None)).await.json();
    assert_eq!(
        (info.scope, info.max_batch_keys, info.public_read),
        (None, 3, false)
    );
    let info: ServerInfo = send(&state, get(api::INFO, Some(&t))).await.json();
    assert_eq!(info.scope, Some(Scope::Write));

    let frames = [compiled_frame(1, 100), compiled_frame(2, 100)];
    send(
        &state,
        send_pack("POST", api::BATCH_PUT, Some(&t), encode_pack(&frames)),
    )
    .await;
    let asked = [frames[0].clone(), compiled_frame(3, 1)];
    send(
        &state,
        post_json(api::BATCH_GET, Some(&t), &keys_json(&asked)),
    )
    .await;
    let too_many: Vec<Frame> = (0..4).map(|n| compiled_frame(n, 1)).collect();
    send(
        &state,
        post_json(api::BATCH_GET, Some(&t), &keys_json(&too_many)),
    )
    .await
    .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let stats: StatsResponse = send(&state, get(api::STATS, Some(&t))).await.json();
    assert_eq!((stats.entries, stats.hits, stats.misses), (2, 1, 1));
    assert_eq!(stats.interpreters[0].magic, "a70d0d0a");
    assert_eq!(
        stats.bytes,
        frames
            .iter()
            .map(|f| f.entry_bytes.len() as u64)
            .sum::<u64>()
    );

    let metrics = send(&state, get(api::METRICS, None)).await;
    let text = String::from_utf8(metrics.body).unwrap();
    for line in [
        "pycache_hits_total 1",
        "pycache_misses_total 1",
        "pycache_entries 2",
        "pycache_stored_total 2",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(
        text.contains("route=\"/api/v1/batch/get\",status=\"200\""),
        "{text}"
    );

    assert_eq!(
        send(&state, get(api::HEALTHZ, None)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&state, get(api::READYZ, None)).await.status,
        StatusCode::OK
    );

    let doc: serde_json::Value = send(&state, get(api::OPENAPI, None)).await.json();
    for path in [
        api::BATCH_GET,
        api::BATCH_PUT,
        api::ENTRY,
        api::INFO,
        api::STATS,
        api::TOKENS,
        api::TOKEN,
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorResponse"].is_object());

    state.store.close().await;
    send(&state, get(api::READYZ, None))
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let (_dir, state, _) = setup(Config::default()).await;
    send(&state, get("/api/v2/nothing", None))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    send(
        &state,
        request("DELETE", api::STATS, None)
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    send(&state, get(api::BATCH_GET, None))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn admin_manages_tokens_over_http() {
    let (_dir, state, _) = setup(Config::default()).await;
    let admin = token(&state, "root", Scope::Admin).await;
    let created = send(
        &state,
        post_json(
            api::TOKENS,
            Some(&admin),
            &json!({"name": "pr", "scope": "read"}),
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let created: TokenCreated = created.json();
    let info: ServerInfo = send(&state, get(api::INFO, Some(&created.token)))
        .await
        .json();
    assert_eq!(info.scope, Some(Scope::Read));
    send(
        &state,
        post_json(
            api::TOKENS,
            Some(&admin),
            &json!({"name": "pr", "scope": "read"}),
        ),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "conflict");
    send(
        &state,
        post_json(
            api::TOKENS,
            Some(&admin),
            &json!({"name": "x", "scope": "god"}),
        ),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "bad_json");
    let list: TokenListResponse = send(&state, get(api::TOKENS, Some(&admin))).await.json();
    let names: Vec<_> = list.tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert!(!String::from_utf8_lossy(&serde_json::to_vec(&list).unwrap()).contains(&created.token));
    let revoke = request("DELETE", "/api/v1/tokens/pr", Some(&admin))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&state, revoke).await.status, StatusCode::NO_CONTENT);
    send(&state, get(api::INFO, Some(&created.token)))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let again = request("DELETE", "/api/v1/tokens/pr", Some(&admin))
        .body(Body::empty())
        .unwrap();
    send(&state, again)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn maintenance_flushes_hits_and_evicts_least_recently_used() {
    // Bodies that do not compress: stored sizes are entry sizes.
    let frames: Vec<Frame> = (0..10)
        .map(|n| support::incompressible_frame(n, 1000))
        .collect();
    let size: u64 = frames[0].entry_bytes.len() as u64;
    // The limit counts each entry's row (about 600 bytes here) beside its body.
    let config = Config {
        max_store_bytes: Some((size + 600) * 8),
        ..Config::default()
    };
    let (_dir, state, t) = setup(config).await;
    send(
        &state,
        send_pack("POST", api::BATCH_PUT, Some(&t), encode_pack(&frames[..5])),
    )
    .await;
    // Use the first entry; the maintenance round writes that hit (nothing to evict yet).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    send(
        &state,
        post_json(api::BATCH_GET, Some(&t), &keys_json(&frames[..1])),
    )
    .await;
    let flushed = maintenance::maintain(&state).await.unwrap();
    assert_eq!(flushed.entries, 0, "{flushed:?}");
    // Five more would take the store to 10 entries, past its limit of 8: the write evicts the
    // least-recently-used entries first.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    send(
        &state,
        send_pack("POST", api::BATCH_PUT, Some(&t), encode_pack(&frames[5..])),
    )
    .await;
    let evicted = pycache_server::store::Evicted {
        entries: state
            .metrics
            .evicted_entries
            .load(std::sync::atomic::Ordering::Relaxed),
        bytes: state
            .metrics
            .evicted_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        row_bytes: 0,
    };
    assert!(evicted.entries >= 2, "{evicted:?}");
    let (entries, bytes) = state.store.totals().await.unwrap().entries_and_bytes();
    assert!(bytes <= size * 8, "{bytes}");
    let left = state
        .store
        .get_many(
            &[pycache_proto::namespace::DEFAULT_NAMESPACE.to_owned()],
            &frames.iter().map(Frame::key_digest).collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!(left.len() as u64, entries);
    assert!(
        left.iter().any(|e| e.stored.key == frames[0].key),
        "the entry used recently was evicted"
    );
    let metrics = String::from_utf8(send(&state, get(api::METRICS, None)).await.body).unwrap();
    assert!(metrics.contains(&format!(
        "pycache_evicted_entries_total {}",
        evicted.entries
    )));
}
