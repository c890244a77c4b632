use super::*;

fn entry(n: usize, fill: u8) -> Entry {
    let mut body = vec![0xe3];
    body.resize(n, fill);
    Entry::compiled(body, String::new())
}

fn key(i: u32) -> KeyDigest {
    KeyDigest(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

fn keys_present(cache: &LocalCache, keys: &[KeyDigest]) -> Vec<bool> {
    keys.iter()
        .map(|k| matches!(cache.get(k), Lookup::Hit(_)))
        .collect()
}

#[test]
fn round_trip_across_processes_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let k = KeyDigest([7; 32]);
    let e = Entry::compiled(vec![0xe3, 1, 2, 3], "w\n".into());
    {
        let cache = LocalCache::open(dir.path()).unwrap();
        assert!(matches!(cache.get(&k), Lookup::Miss));
        cache.put(&k, &e).unwrap();
        // Seen before it is written.
        assert!(matches!(cache.get(&k), Lookup::Hit(ref got) if *got == e));
        cache.finish(RunCounts::default()).unwrap();
    }
    let cache = LocalCache::open(dir.path()).unwrap();
    match cache.get(&k) {
        Lookup::Hit(got) => assert_eq!(got, e),
        other => panic!("expected a hit, got {other:?}"),
    }
    // Flip a bit of the stored body behind the cache's back.
    let conn = Connection::open(dir.path().join(STORE_FILE)).unwrap();
    conn.execute("UPDATE bodies SET data = zeroblob(length(data))", [])
        .unwrap();
    assert!(matches!(cache.get(&k), Lookup::Corrupt(_)));
    assert!(
        matches!(cache.get(&k), Lookup::Miss),
        "a corrupt entry is removed"
    );
}

#[test]
fn an_entry_under_another_key_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = LocalCache::open(dir.path()).unwrap();
    let (a, b) = (KeyDigest([1; 32]), KeyDigest([2; 32]));
    cache
        .put(&a, &Entry::compiled(vec![0xe3, 1], String::new()))
        .unwrap();
    cache
        .put(&b, &Entry::compiled(vec![0xe3, 2], String::new()))
        .unwrap();
    cache.finish(RunCounts::default()).unwrap();
    // Swap the two bodies: each is now stored under the other's key.
    let conn = Connection::open(dir.path().join(STORE_FILE)).unwrap();
    conn.execute_batch(
        "UPDATE bodies SET id = -1 WHERE id = 1; UPDATE bodies SET id = 1 WHERE id = 2;
         UPDATE bodies SET id = 2 WHERE id = -1;",
    )
    .unwrap();
    assert!(matches!(cache.get(&a), Lookup::Corrupt(_)));
    assert!(matches!(cache.get(&b), Lookup::Corrupt(_)));
}

#[test]
fn least_recently_used_entries_go_first_and_the_limit_holds() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 5 << 20;
    let opts = CacheOptions {
        size_limit: Some(limit),
        interpreter: Some("CPython 3.11.7".into()),
    };
    let keys: Vec<KeyDigest> = (0..6).map(key).collect();
    {
        let cache = LocalCache::open_with(dir.path(), opts.clone()).unwrap();
        for (i, k) in keys[..3].iter().enumerate() {
            cache.put(k, &entry(1 << 20, i as u8)).unwrap();
        }
        cache.finish(RunCounts::default()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    {
        // A later run uses the first entry: it becomes the most recently used.
        let cache = LocalCache::open_with(dir.path(), opts.clone()).unwrap();
        assert!(matches!(cache.get(&keys[0]), Lookup::Hit(_)));
        cache
            .finish(RunCounts {
                hits: 1,
                ..Default::default()
            })
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    {
        // Three more MiB overflow the 5 MiB limit; eviction goes down to 90% of it (4 entries):
        // keys 1 and 2 (oldest, unused) go, key 0 (used since) stays.
        let cache = LocalCache::open_with(dir.path(), opts.clone()).unwrap();
        for (i, k) in keys[3..].iter().enumerate() {
            cache.put(k, &entry(1 << 20, 10 + i as u8)).unwrap();
        }
        cache.finish(RunCounts::default()).unwrap();
        assert_eq!(
            keys_present(&cache, &keys),
            [true, false, false, true, true, true]
        );
        let disk = cache.disk_bytes();
        assert!(
            disk <= limit + limit / 10,
            "the store takes {disk} bytes on disk, limit {limit}"
        );
        let report = cache.report().unwrap();
        assert_eq!(report.entries, 4);
        assert_eq!(report.interpreters.len(), 1);
        assert_eq!(report.interpreters[0].evicted, 2);
        assert_eq!(report.interpreters[0].hits, 1);
        assert_eq!(report.interpreters[0].stored, 6);
    }
}

#[test]
fn a_file_that_is_not_a_database_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(STORE_FILE), vec![0x55; 8192]).unwrap();
    let cache = LocalCache::open(dir.path()).unwrap();
    cache.put(&key(1), &entry(100, 1)).unwrap();
    cache.finish(RunCounts::default()).unwrap();
    assert!(matches!(cache.get(&key(1)), Lookup::Hit(_)));
    assert!(dir.path().join(format!("{STORE_FILE}.corrupt")).exists());
}

#[test]
fn a_store_of_a_newer_schema_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    drop(LocalCache::open(dir.path()).unwrap());
    Connection::open(dir.path().join(STORE_FILE))
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = LocalCache::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("newer pycache-client"), "{err}");
}

#[test]
fn prune_and_clear_remove_legacy_directories() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("entries-v2").join("ab");
    fs::create_dir_all(&legacy).unwrap();
    fs::write(legacy.join("abcdef"), vec![1; 1000]).unwrap();
    let cache = LocalCache::open(dir.path()).unwrap();
    cache.put(&key(1), &entry(100, 1)).unwrap();
    cache.finish(RunCounts::default()).unwrap();
    assert_eq!(cache.legacy_bytes(), 1000);
    let pruned = cache.prune().unwrap();
    assert_eq!((pruned.entries, pruned.legacy_bytes), (0, 1000));
    assert!(!dir.path().join("entries-v2").exists());
    assert!(matches!(cache.get(&key(1)), Lookup::Hit(_)));
    let cleared = cache.clear().unwrap();
    assert_eq!(cleared.entries, 1);
    assert!(matches!(cache.get(&key(1)), Lookup::Miss));
}

#[test]
fn a_remembered_limit_holds_for_runs_that_set_none() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut cache = LocalCache::open(dir.path()).unwrap();
        assert_eq!(cache.size_limit(), DEFAULT_SIZE_LIMIT);
        cache.remember_size_limit(3 << 20).unwrap();
        assert_eq!(cache.size_limit(), 3 << 20);
    }
    assert_eq!(LocalCache::open(dir.path()).unwrap().size_limit(), 3 << 20);
    let set = CacheOptions {
        size_limit: Some(5 << 20),
        interpreter: None,
    };
    assert_eq!(
        LocalCache::open_with(dir.path(), set).unwrap().size_limit(),
        5 << 20
    );
}

#[test]
fn a_store_of_an_earlier_client_gets_the_remote_hits_column_and_keeps_its_statistics() {
    let dir = tempfile::tempdir().unwrap();
    drop(LocalCache::open(dir.path()).unwrap());
    let conn = Connection::open(dir.path().join(STORE_FILE)).unwrap();
    conn.execute_batch(
        "DROP TABLE settings; DROP TABLE stats;
         CREATE TABLE stats (day INTEGER NOT NULL, interpreter INTEGER,
             hits INTEGER NOT NULL DEFAULT 0, misses INTEGER NOT NULL DEFAULT 0,
             stored INTEGER NOT NULL DEFAULT 0, stored_bytes INTEGER NOT NULL DEFAULT 0,
             evicted INTEGER NOT NULL DEFAULT 0, evicted_bytes INTEGER NOT NULL DEFAULT 0,
             corrupt INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (day, interpreter));
         INSERT INTO stats (day, interpreter, hits, misses) VALUES (1, NULL, 4, 2);",
    )
    .unwrap();
    drop(conn);
    let cache = LocalCache::open(dir.path()).unwrap();
    cache
        .finish(RunCounts {
            hits: 1,
            misses: 3,
            remote_hits: 2,
        })
        .unwrap();
    let report = cache.report().unwrap();
    let all = &report.interpreters[0];
    assert_eq!(
        (all.hits, all.misses, all.remote_hits, all.compiled),
        (5, 5, 2, 3)
    );
    cache.zero_stats().unwrap();
    let report = cache.report().unwrap();
    assert!(report.interpreters.is_empty() && report.days.is_empty());
}
