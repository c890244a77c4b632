//! One conformance suite for the `Store` trait, run against SQLite (a temp file) and against a
//! real PostgreSQL 15 cluster the test starts itself.

mod support;

use std::sync::Arc;

use pycache_proto::api::Scope;
use pycache_proto::namespace::{join_patterns, parse_patterns};
use pycache_proto::pack::Frame;
use pycache_server::store::{
    self, NewEntry, NewToken, PurgeFilter, PutOutcome, Store, StoreError, StoredEntry, Usage,
};
use support::{compiled_frame, failed_frame, incompressible_frame};

fn new_entry(frame: &Frame) -> NewEntry {
    let success = frame.verify().expect("valid frame").is_success();
    NewEntry::from_frame(frame.clone(), success)
}

const MAIN: &str = "main";

fn main_only() -> Vec<String> {
    vec![MAIN.to_owned()]
}

fn grant(writes: &str, reads: &str, name: &str, scope: Scope) -> NewToken {
    NewToken {
        name: name.to_owned(),
        scope,
        writes: parse_patterns(writes).unwrap(),
        reads: parse_patterns(reads).unwrap(),
    }
}

async fn entries_round_trip(store: &dyn Store) {
    let frames = [compiled_frame(1, 100), failed_frame(2)];
    let entries: Vec<NewEntry> = frames.iter().map(new_entry).collect();
    let put = store
        .put_many(MAIN, Some("ci"), &entries, 1_000)
        .await
        .unwrap();
    assert_eq!(
        put,
        PutOutcome {
            inserted: 2,
            ..PutOutcome::default()
        }
    );
    // Storing again is not an error and inserts nothing.
    let again = store
        .put_many(MAIN, Some("ci"), &entries, 2_000)
        .await
        .unwrap();
    assert_eq!(again, PutOutcome::default());
    let keys = [
        frames[0].key_digest(),
        compiled_frame(99, 1).key_digest(),
        frames[1].key_digest(),
    ];
    let mut found = store.get_many(&main_only(), &keys).await.unwrap();
    found.sort_by_key(|e| e.stored.key.dfile.clone());
    let expected: Vec<StoredEntry> = entries.iter().map(|e| e.stored.clone()).collect();
    assert_eq!(
        found.iter().map(|f| f.stored.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(found
        .iter()
        .all(|f| f.namespace == MAIN && f.written_by.as_deref() == Some("ci")));
    // The frame digest and signatures come back as the writer sent them, never recomputed.
    for f in &found {
        let sent = frames.iter().find(|fr| fr.key == f.stored.key).unwrap();
        assert_eq!(
            (f.frame_digest, &f.signatures),
            (sent.digest, &sent.signatures)
        );
    }
    let signer = pycache_proto::signature::SigningKey::from_seed("ci-key", [5; 32]).unwrap();
    let mut signed = compiled_frame(4, 64);
    signed.signatures = vec![signer.sign(&signed.key_digest(), &signed.entry_digest())];
    let mut entry = new_entry(&signed);
    entry.frame_digest = pycache_proto::pack::FrameDigest([0xab; 32]);
    store
        .put_many(MAIN, None, &[entry.clone()], 1_500)
        .await
        .unwrap();
    let back = store
        .get_many(&main_only(), &[signed.key_digest()])
        .await
        .unwrap();
    assert_eq!(back[0].frame_digest, entry.frame_digest);
    assert_eq!(back[0].signatures, signed.signatures);
    store
        .purge(&PurgeFilter {
            key: Some(signed.key_digest()),
            ..PurgeFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.totals().await.unwrap().entries_and_bytes(),
        (2, expected.iter().map(|e| e.entry_bytes.len() as u64).sum())
    );
    let by_interpreter = store.usage_by_interpreter().await.unwrap();
    assert_eq!(by_interpreter.len(), 1);
    assert_eq!(by_interpreter[0].cache_tag, support::TEST_CACHE_TAG);
    assert_eq!(by_interpreter[0].entries, 2);
    // Not found in a namespace that does not hold it.
    assert!(store
        .get_many(&["pr/1".to_owned()], &keys)
        .await
        .unwrap()
        .is_empty());
}

async fn entries_never_change_once_stored(store: &dyn Store) {
    let original = new_entry(&compiled_frame(1, 100));
    let other = new_entry(&compiled_frame(1, 120));
    assert_eq!(original.stored.key, other.stored.key);
    // Different bytes for a stored key are a conflict: the stored entry stands.
    let put = store
        .put_many(MAIN, Some("pr-job"), std::slice::from_ref(&other), 3_000)
        .await
        .unwrap();
    assert_eq!(
        put,
        PutOutcome {
            conflicts: vec![other.stored.key.digest()],
            ..PutOutcome::default()
        }
    );
    let found = store
        .get_many(&main_only(), &[original.stored.key.digest()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].stored, original.stored);
    assert_eq!(found[0].written_by.as_deref(), Some("ci"));
    // Within one batch the first upload of a key counts.
    let fresh = new_entry(&compiled_frame(3, 100));
    let fresh_other = new_entry(&compiled_frame(3, 130));
    let put = store
        .put_many(MAIN, None, &[fresh.clone(), fresh_other], 3_000)
        .await
        .unwrap();
    assert_eq!(put.inserted, 1);
    let found = store
        .get_many(&main_only(), &[fresh.stored.key.digest()])
        .await
        .unwrap();
    assert_eq!(found[0].stored, fresh.stored);
    assert_eq!(found[0].written_by, None);
}

async fn namespaces_are_apart_and_share_bodies(store: &dyn Store) {
    let (_, bytes_before) = store.totals().await.unwrap().entries_and_bytes();
    let original = new_entry(&compiled_frame(1, 100));
    let poison = new_entry(&compiled_frame(1, 140));
    let key = original.stored.key.digest();
    // A PR namespace may hold other bytes for a key main holds; main's readers never see them.
    let put = store
        .put_many("pr/7", Some("pr"), std::slice::from_ref(&poison), 4_000)
        .await
        .unwrap();
    assert_eq!(put.inserted, 1);
    let main_view = store.get_many(&main_only(), &[key]).await.unwrap();
    assert_eq!(main_view[0].stored, original.stored);
    // The PR reads its own namespace first, then main.
    let pr_order = vec!["pr/7".to_owned(), MAIN.to_owned()];
    let pr_view = store.get_many(&pr_order, &[key]).await.unwrap();
    assert_eq!(
        (pr_view[0].namespace.as_str(), &pr_view[0].stored),
        ("pr/7", &poison.stored)
    );
    let main_first = vec![MAIN.to_owned(), "pr/7".to_owned()];
    assert_eq!(
        store.get_many(&main_first, &[key]).await.unwrap()[0].stored,
        original.stored
    );
    // The same bytes in another namespace are stored once.
    let (_, bytes_mid) = store.totals().await.unwrap().entries_and_bytes();
    assert_eq!(
        bytes_mid,
        bytes_before + poison.stored.entry_bytes.len() as u64
    );
    let put = store
        .put_many(
            "release",
            Some("rel"),
            std::slice::from_ref(&original),
            4_500,
        )
        .await
        .unwrap();
    assert_eq!(put.inserted, 1);
    assert_eq!(
        store.totals().await.unwrap().entries_and_bytes().1,
        bytes_mid,
        "a body shared is stored once"
    );
    // Purging one holder of a shared body keeps the body for the other.
    let purged = store
        .purge(&PurgeFilter {
            namespace: Some("release".into()),
            ..PurgeFilter::default()
        })
        .await
        .unwrap();
    assert_eq!((purged.entries, purged.bytes), (1, 0));
    assert_eq!(store.get_many(&main_only(), &[key]).await.unwrap().len(), 1);
}

async fn purges_by_writer_namespace_key_and_time(store: &dyn Store) {
    let pr_frames: Vec<Frame> = (500..510).map(|n| compiled_frame(n, 50)).collect();
    let pr_entries: Vec<NewEntry> = pr_frames.iter().map(new_entry).collect();
    store
        .put_many("pr/8", Some("pr"), &pr_entries[..5], 10_000)
        .await
        .unwrap();
    store
        .put_many("pr/9", Some("pr"), &pr_entries[5..], 20_000)
        .await
        .unwrap();
    let (entries_before, bytes_before) = store.totals().await.unwrap().entries_and_bytes();
    // No condition: nothing.
    assert_eq!(
        store.purge(&PurgeFilter::default()).await.unwrap().entries,
        0
    );
    // By writer and time: only pr/9's five.
    let purged = store
        .purge(&PurgeFilter {
            written_by: Some("pr".into()),
            since: Some(15_000),
            ..PurgeFilter::default()
        })
        .await
        .unwrap();
    let pr9_bytes: u64 = pr_entries[5..]
        .iter()
        .map(|e| e.stored.entry_bytes.len() as u64)
        .sum();
    assert_eq!((purged.entries, purged.bytes), (5, pr9_bytes));
    // By key.
    let purged = store
        .purge(&PurgeFilter {
            key: Some(pr_frames[0].key_digest()),
            ..PurgeFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(purged.entries, 1);
    // By writer: the rest of what "pr" wrote (pr/8's four and pr/7's one), nothing of main's.
    let purged = store
        .purge(&PurgeFilter {
            written_by: Some("pr".into()),
            ..PurgeFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(purged.entries, 5);
    let (entries_after, bytes_after) = store.totals().await.unwrap().entries_and_bytes();
    assert_eq!(entries_after, entries_before - 11);
    assert!(bytes_after < bytes_before);
    let main_keys = [
        compiled_frame(1, 100).key_digest(),
        failed_frame(2).key_digest(),
    ];
    assert_eq!(
        store
            .get_many(&main_only(), &main_keys)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn large_batches_respect_bind_limits(store: &dyn Store) {
    let frames: Vec<Frame> = (1000..3200).map(|n| compiled_frame(n, 8)).collect();
    let entries: Vec<NewEntry> = frames.iter().map(new_entry).collect();
    assert_eq!(
        store
            .put_many(MAIN, None, &entries, 5)
            .await
            .unwrap()
            .inserted,
        2200
    );
    let keys: Vec<_> = frames.iter().map(Frame::key_digest).collect();
    assert_eq!(
        store.get_many(&main_only(), &keys).await.unwrap().len(),
        2200
    );
}

async fn eviction_takes_least_recently_used(store: &dyn Store) {
    let before = store.totals().await.unwrap().accounted();
    store.evict_lru(before).await.unwrap();
    assert_eq!(
        store.totals().await.unwrap(),
        pycache_server::store::Totals::default()
    );
    // Bodies that do not compress: stored sizes are entry sizes.
    let frames: Vec<Frame> = (0..4).map(|n| incompressible_frame(n, 1000)).collect();
    for (i, f) in frames.iter().enumerate() {
        store
            .put_many(MAIN, None, &[new_entry(f)], 10 + i as i64)
            .await
            .unwrap();
    }
    // Entry 0 is the oldest, but was used last: entry 1 goes first.
    store
        .record_usage(&[Usage {
            namespace: MAIN.to_owned(),
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
        .get_many(&main_only(), &keys)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.stored.key.digest())
        .collect();
    assert!(!left.contains(&keys[1]) && left.contains(&keys[0]) && left.len() == 3);
    let all = store.evict_lru(u64::MAX).await.unwrap();
    assert_eq!(all.entries, 3);
    assert_eq!(store.evict_lru(1).await.unwrap().entries, 0);
    assert_eq!(
        store.totals().await.unwrap().entries_and_bytes(),
        (0, 0),
        "no body outlives its entries"
    );
}

async fn tokens_are_hashed_scoped_and_revocable(store: &dyn Store) {
    let hash = [7u8; 32];
    store
        .create_token(&hash, &grant("pr/*", "main,default", "ci", Scope::Write), 1)
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_token(&[8u8; 32], &grant("", "main", "ci", Scope::Read), 2)
            .await,
        Err(StoreError::DuplicateTokenName(_))
    ));
    let record = store.token_grant(&hash).await.unwrap().unwrap();
    assert_eq!(record.scope, Scope::Write);
    assert_eq!(join_patterns(&record.writes), "pr/*");
    assert_eq!(join_patterns(&record.reads), "main,default");
    assert_eq!(store.token_grant(&[9u8; 32]).await.unwrap(), None);
    assert!(store.revoke_token("ci", 3).await.unwrap());
    assert!(!store.revoke_token("ci", 4).await.unwrap());
    assert_eq!(store.token_grant(&hash).await.unwrap(), None);
    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].revoked_at),
        ("ci", Some(3))
    );
}

async fn concurrent_writers_do_not_fail(store: Arc<dyn Store>) {
    // Eight writers, half of them racing on the same keys with other bytes in one namespace,
    // the rest in namespaces of their own: every key ends with exactly one entry per
    // namespace, and every refused upload is counted as a conflict.
    let tasks: Vec<_> = (0..8u32)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let frames: Vec<Frame> = (0..50)
                    .map(|n| compiled_frame(10_000 + (t % 2) * 100 + n, 64 + t as usize))
                    .collect();
                let entries: Vec<NewEntry> = frames.iter().map(new_entry).collect();
                let namespace = if t < 4 {
                    MAIN.to_owned()
                } else {
                    format!("pr/{t}")
                };
                store.put_many(&namespace, None, &entries, 1).await.unwrap()
            })
        })
        .collect();
    let mut inserted = 0;
    let mut conflicts = 0;
    for t in tasks {
        let outcome = t.await.unwrap();
        inserted += outcome.inserted;
        conflicts += outcome.conflicts.len() as u64;
    }
    // main: 2 × 50 distinct keys, 4 writers each 50 → 100 stored, 100 conflicts.
    // pr/4..pr/7: 50 each.
    assert_eq!((inserted, conflicts), (100 + 200, 100));
}

/// The suite: every check, in order, on one store.
async fn conformance(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    entries_round_trip(store.as_ref()).await;
    entries_never_change_once_stored(store.as_ref()).await;
    namespaces_are_apart_and_share_bodies(store.as_ref()).await;
    purges_by_writer_namespace_key_and_time(store.as_ref()).await;
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

/// The first migration alone: the schema of a store written before namespaces.
async fn first_migration(dialect: &str) -> sqlx::migrate::Migrator {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(dialect);
    let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
    let first = migrator.migrations[0].clone();
    assert_eq!(first.version, 1);
    migrator.migrations = std::borrow::Cow::Owned(vec![first]);
    migrator
}

/// Rows as the server wrote them before namespaces: a compiled and a failed entry, a write and
/// a read token.
const OLD_ENTRY: &str = "INSERT INTO entries (key_digest, source_hash, magic, cache_tag, \
     optimization, settings, dfile, success, entry, entry_digest, size, created_at, \
     last_used_at, hits) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 5, 5, 0)";
const OLD_TOKEN: &str =
    "INSERT INTO tokens (token_hash, name, scope, created_at) VALUES ($1, $2, $3, 1)";

/// Three entries of the old store; the first and the third have the same bytes.
fn old_frames() -> [Frame; 3] {
    let first = compiled_frame(1, 300);
    let third = Frame::from_encoded(support::key(3), first.entry_bytes.clone());
    [first, failed_frame(2), third]
}

macro_rules! write_old_rows {
    ($pool:expr) => {{
        for frame in old_frames() {
            let key = &frame.key;
            sqlx::query(OLD_ENTRY)
                .bind(&frame.key_digest().0[..])
                .bind(&key.source_hash[..])
                .bind(&key.magic[..])
                .bind(&key.cache_tag)
                .bind(i32::from(key.optimization))
                .bind(&key.settings)
                .bind(&key.dfile)
                .bind(frame.verify().unwrap().is_success())
                .bind(&frame.entry_bytes)
                .bind(&frame.entry_digest().0[..])
                .bind(frame.entry_bytes.len() as i64)
                .execute($pool)
                .await
                .unwrap();
        }
        for (hash, name, scope) in [([1u8; 32], "ci", "write"), ([2u8; 32], "laptop", "read")] {
            sqlx::query(OLD_TOKEN)
                .bind(&hash[..])
                .bind(name)
                .bind(scope)
                .execute($pool)
                .await
                .unwrap();
        }
    }};
}

/// What a migrated store must do: its entries are in `default`, its tokens read `default` and
/// write tokens write it, and it takes new entries.
async fn old_store_works_as_before(store: Arc<dyn Store>) {
    let frames = old_frames();
    let keys: Vec<_> = frames.iter().map(Frame::key_digest).collect();
    let default = vec![pycache_proto::namespace::DEFAULT_NAMESPACE.to_owned()];
    let found = store.get_many(&default, &keys).await.unwrap();
    assert_eq!(found.len(), 3);
    for f in &found {
        assert_eq!(f.written_by, None);
        let frame = frames.iter().find(|fr| fr.key == f.stored.key).unwrap();
        assert_eq!(f.stored.entry_bytes, frame.entry_bytes);
        assert_eq!(f.stored.digest, frame.entry_digest());
        assert_eq!(
            f.frame_digest, frame.digest,
            "computed for entries from before"
        );
    }
    // Entries 1 and 3 have the same bytes: stored once now.
    assert_eq!(
        store.totals().await.unwrap().entries_and_bytes(),
        (
            3,
            (frames[0].entry_bytes.len() + frames[1].entry_bytes.len()) as u64
        )
    );
    let write = store.token_grant(&[1u8; 32]).await.unwrap().unwrap();
    assert_eq!(
        (
            join_patterns(&write.writes).as_str(),
            join_patterns(&write.reads).as_str()
        ),
        ("default", "default")
    );
    let read = store.token_grant(&[2u8; 32]).await.unwrap().unwrap();
    assert_eq!(
        (
            join_patterns(&read.writes).as_str(),
            join_patterns(&read.reads).as_str()
        ),
        ("", "default")
    );
    let put = store
        .put_many(
            "default",
            Some("ci"),
            &[new_entry(&compiled_frame(1, 310))],
            9,
        )
        .await
        .unwrap();
    assert_eq!(
        put.conflicts,
        vec![keys[0]],
        "a stored entry still never changes"
    );
    let put = store
        .put_many(
            "default",
            Some("ci"),
            &[new_entry(&compiled_frame(4, 310))],
            9,
        )
        .await
        .unwrap();
    assert_eq!(put.inserted, 1);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_from_before_namespaces_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        first_migration("sqlite").await.run(&pool).await.unwrap();
        write_old_rows!(&pool);
        pool.close().await;
    }
    old_store_works_as_before(store::connect(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_from_before_namespaces_migrates() {
    let pg = support::pg::start();
    {
        let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
        first_migration("postgres").await.run(&pool).await.unwrap();
        write_old_rows!(&pool);
        pool.close().await;
    }
    old_store_works_as_before(store::connect(&pg.url()).await.unwrap()).await;
}
