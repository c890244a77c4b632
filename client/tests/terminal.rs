//! `sync` on a real terminal (tmux): the progress bar and pycache's warnings share stderr
//! through one owner, so a warning raised on a background thread while the bar is drawn
//! leaves both intact, and is said once, not once per file.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENT: &str = env!("CARGO_BIN_EXE_pycache-client");

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is needed for the terminal tests (apt-get install tmux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_warning_during_the_progress_bar_leaves_it_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..600 {
        std::fs::write(
            src.join(format!("m{i:04}.py")),
            format!("def f(x):\n    return [x * {i} for _ in range(3)]\n"),
        )
        .unwrap();
    }
    // The local cache refuses every new entry (a trigger in its database): storing fails, on
    // the background thread that writes the cache, while the bar is drawn.
    let cache = tmp.path().join("cache");
    // (`cache stats` creates no store; `cache prune` given a limit makes one to keep it in.)
    let created = Command::new(CLIENT)
        .args(["--cache-size", "2GiB", "cache", "prune"])
        .env("PYCACHE_CACHE_DIR", &cache)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    rusqlite::Connection::open(cache.join("store.db"))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON bodies
             BEGIN SELECT RAISE(ABORT, 'the test refuses every entry'); END;",
        )
        .unwrap();
    let done = tmp.path().join("done");
    let script = format!(
        "cd {} && env -u PYCACHE_SERVER PYCACHE_CACHE_DIR={} {} sync src; touch {}; sleep 60",
        tmp.path().display(),
        cache.display(),
        CLIENT,
        done.display()
    );
    let session = format!("pycache-term-{}", std::process::id());
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "150",
        "-y",
        "40",
        &script,
    ]);
    let started = Instant::now();
    while !done.exists() && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let screen = tmux(&["capture-pane", "-p", "-t", &session]);
    tmux(&["kill-session", "-t", &session]);
    assert!(done.exists(), "sync did not finish: {screen}");
    assert!(Path::new(&src.join("__pycache__")).is_dir(), "{screen}");
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    let warnings: Vec<&&str> = lines.iter().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 1, "one warning, said once:\n{screen}");
    assert!(
        warnings[0].starts_with("pycache: warning: could not store an entry in the local cache"),
        "the warning line is intact:\n{screen}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("files") && l.contains('[')),
        "no bar fragment is left on the screen:\n{screen}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("pycache: 600 files:")),
        "the summary line is intact:\n{screen}"
    );
}
