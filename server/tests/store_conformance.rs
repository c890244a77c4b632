//! One conformance suite for the `Store` trait, run against SQLite (a temp file) and against a
//! real PostgreSQL 15 cluster the test starts itself.

mod support;

use std::sync::Arc;

use pycache_proto::api::Scope;
use pycache_proto::pack::Frame;
use pycache_server::store::{self, NewEntry, Store, StoreError, StoredEntry, Usage};
use support::{compiled_frame, failed_frame};

fn new_entry(frame: &Frame) -> NewEntry {
    NewEntry {
        success: frame.verify().expect("valid frame").is_success(),
        stored: StoredEntry {
            key: frame.key.clone(),
            entry_bytes: frame.entry_bytes.clone(),
            digest: frame.digest,
        },
    }
}

async fn entries_round_trip(store: &dyn Store) {
    let frames = [compiled_frame(1, 100), failed_frame(2)];
    let entries: Vec<NewEntry> = frames.iter().map(new_entry).collect();
    assert_eq!(store.put_many(&entries, 1_000).await.unwrap(), 2);
    // Storing again is not an error and inserts nothing.
    assert_eq!(store.put_many(&entries, 2_000).await.unwrap(), 0);
    let keys = [
        frames[0].key_digest(),
        compiled_frame(99, 1).key_digest(),
        frames[1].key_digest(),
    ];
    let mut found = store.get_many(&keys).await.unwrap();
    found.sort_by_key(|e| e.key.dfile.clone());
    let expected: Vec<StoredEntry> = entries.iter().map(|e| e.stored.clone()).collect();
    assert_eq!(found, expected);
    assert_eq!(
        store.totals().await.unwrap(),
        (2, expected.iter().map(|e| e.entry_bytes.len() as u64).sum())
    );
    let by_interpreter = store.usage_by_interpreter().await.unwrap();
    assert_eq!(by_interpreter.len(), 1);
    assert_eq!(by_interpreter[0].cache_tag, "cpython-311");
    assert_eq!(by_interpreter[0].entries, 2);
    // Different bytes for a stored key replace its entry (the newest upload wins).
    let newer = new_entry(&compiled_frame(1, 120));
    assert_eq!(
        store
            .put_many(std::slice::from_ref(&newer), 3_000)
            .await
            .unwrap(),
        1
    );
    let found = store.get_many(&[frames[0].key_digest()]).await.unwrap();
    assert_eq!(found, vec![newer.stored]);
    store.put_many(&entries[..1], 4_000).await.unwrap();
}

async fn large_batches_respect_bind_limits(store: &dyn Store) {
    let frames: Vec<Frame> = (1000..3200).map(|n| compiled_frame(n, 8)).collect();
    let entries: Vec<NewEntry> = frames.iter().map(new_entry).collect();
    assert_eq!(store.put_many(&entries, 5).await.unwrap(), 2200);
    let keys: Vec<_> = frames.iter().map(Frame::key_digest).collect();
    assert_eq!(store.get_many(&keys).await.unwrap().len(), 2200);
}

async fn eviction_takes_least_recently_used(store: &dyn Store) {
    let (_, before) = store.totals().await.unwrap();
    store.evict_lru(before).await.unwrap();
    assert_eq!(store.totals().await.unwrap(), (0, 0));
    let frames: Vec<Frame> = (0..4).map(|n| compiled_frame(n, 1000)).collect();
    for (i, f) in frames.iter().enumerate() {
        store
            .put_many(&[new_entry(f)], 10 + i as i64)
            .await
            .unwrap();
    }
    // Entry 0 is the oldest, but was used last: entry 1 goes first.
    store
        .record_usage(&[Usage {
            key: frames[0].key_digest(),
            hits: 3,
            last_used_at: 100,
        }])
        .await
        .unwrap();
    let size = frames[1].entry_bytes.len() as u64;
    let evicted = store.evict_lru(size).await.unwrap();
    assert_eq!((evicted.entries, evicted.bytes), (1, size));
    let keys: Vec<_> = frames.iter().map(Frame::key_digest).collect();
    let left: Vec<_> = store
        .get_many(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key.digest())
        .collect();
    assert!(!left.contains(&keys[1]) && left.contains(&keys[0]) && left.len() == 3);
    let all = store.evict_lru(u64::MAX).await.unwrap();
    assert_eq!(all.entries, 3);
    assert_eq!(store.evict_lru(1).await.unwrap().entries, 0);
}

async fn tokens_are_hashed_scoped_and_revocable(store: &dyn Store) {
    let hash = [7u8; 32];
    store
        .create_token(&hash, "ci", Scope::Write, 1)
        .await
        .unwrap();
    assert!(matches!(
        store.create_token(&[8u8; 32], "ci", Scope::Read, 2).await,
        Err(StoreError::DuplicateTokenName(_))
    ));
    assert_eq!(store.token_scope(&hash).await.unwrap(), Some(Scope::Write));
    assert_eq!(store.token_scope(&[9u8; 32]).await.unwrap(), None);
    assert!(store.revoke_token("ci", 3).await.unwrap());
    assert!(!store.revoke_token("ci", 4).await.unwrap());
    assert_eq!(store.token_scope(&hash).await.unwrap(), None);
    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].revoked_at),
        ("ci", Some(3))
    );
}

async fn concurrent_writers_do_not_fail(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8u32)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let frames: Vec<Frame> = (0..50)
                    .map(|n| compiled_frame(10_000 + t * 100 + n, 64))
                    .collect();
                let entries: Vec<NewEntry> = frames.iter().map(new_entry).collect();
                store.put_many(&entries, 1).await.unwrap()
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 400);
}

/// The suite: every check, in order, on one store.
async fn conformance(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    entries_round_trip(store.as_ref()).await;
    large_batches_respect_bind_limits(store.as_ref()).await;
    eviction_takes_least_recently_used(store.as_ref()).await;
    tokens_are_hashed_scoped_and_revocable(store.as_ref()).await;
    concurrent_writers_do_not_fail(store.clone()).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(support::sqlite_store(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    let pg = support::pg::start();
    let store = store::connect(&pg.url())
        .await
        .expect("connect to the test cluster");
    conformance(store).await;
}

#[tokio::test]
async fn unreachable_and_unknown_databases_fail_clearly() {
    let err = store::connect("mysql://x").await.err().unwrap().to_string();
    assert!(err.contains("unsupported database URL"), "{err}");
    let err = store::connect("postgres://u:secret@127.0.0.1:1/db")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cannot open the database") && !err.contains("secret"),
        "{err}"
    );
}
