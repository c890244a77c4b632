//! The run's ordering logic with a fake pool: results arrive in any order, yet files are
//! written and reported in compileall's order; one job per distinct key; hits never reach the
//! pool.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};

use super::*;
use crate::compileall::plan::{FileTask, Level};
use crate::output::Streams;
use crate::pyc::InvalidationMode;

/// A pool that answers submitted jobs in reverse order of submission, once all are in.
#[derive(Default)]
struct ReversingPool {
    submitted: Mutex<Vec<CompileJob>>,
    pending: Mutex<VecDeque<(u64, CompileOutcome)>>,
}

impl ReversingPool {
    fn outcome(job: &CompileJob) -> CompileOutcome {
        let name = job.source.to_string_lossy().into_owned();
        if name.contains("bad") {
            CompileOutcome::Failed {
                message: format!("  File \"{name}\", line 1\nSyntaxError: invalid syntax"),
                warnings: String::new(),
            }
        } else {
            CompileOutcome::Compiled {
                read: crate::workers::SourceRead {
                    bytes: std::fs::read(&job.source).unwrap(),
                    mtime: 0,
                    size: 0,
                },
                // A body that tells which job produced it.
                body: [
                    &[0xe3][..],
                    format!("body of {name} at -O{}", job.optimize).as_bytes(),
                ]
                .concat(),
                warnings: if name.contains("warn") {
                    format!("{name}:1: SyntaxWarning: test\n")
                } else {
                    String::new()
                },
            }
        }
    }
}

impl Compiler for ReversingPool {
    fn submit(&self, job: CompileJob) {
        self.submitted.lock().unwrap().push(job);
    }

    fn next_result(&self) -> Option<(u64, CompileOutcome)> {
        let mut pending = self.pending.lock().unwrap();
        if pending.is_empty() {
            let mut jobs = std::mem::take(&mut *self.submitted.lock().unwrap());
            jobs.reverse();
            pending.extend(jobs.iter().map(|j| (j.id, Self::outcome(j))));
        }
        pending.pop_front()
    }

    fn workers_started(&self) -> usize {
        0
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    events: Vec<Event>,
}

/// Files `names` in a temp dir, one event per file with one level per entry of `levels`, and a
/// walk line before them.
fn fixture(names: &[&str], levels: &[u8]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut events = vec![Event::WalkLine(format!(
        "Listing '{}'...",
        dir.path().display()
    ))];
    for name in names {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("x = {name:?}\n")).unwrap();
        let fullname = OsString::from(path.as_os_str());
        events.push(Event::File(FileTask {
            fullname: fullname.clone(),
            dfile: None,
            levels: levels
                .iter()
                .map(|&opt| Level {
                    opt_level: i64::from(opt),
                    effective: opt,
                    cfile: OsString::from(format!("{}.opt{opt}.pyc", path.display())),
                    planned_before: false,
                    known_absent: false,
                })
                .collect(),
            revisit: false,
        }));
    }
    Fixture { dir, events }
}

fn config(quiet: u32) -> RunConfig {
    RunConfig {
        style: Style::Compileall { quiet },
        invalidation_mode: InvalidationMode::Timestamp,
        hardlink_dupes: false,
        magic: *b"\xa7\x0d\r\n",
        cache_tag: "cpython-311".into(),
        settings: "test".into(),
        siphash13: true,
        stdout_encoding: "utf-8".into(),
        relocation: None,
        body_format: None,
    }
}

struct Captured {
    ok: bool,
    stdout: String,
    stderr: String,
    summary: Summary,
}

fn run_with(
    fx: &Fixture,
    cfg: &RunConfig,
    local: Option<&LocalCache>,
    pool: &dyn Compiler,
) -> Captured {
    let (out, err) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let console = Console::new(
        Streams::Buffers {
            stdout: Arc::clone(&out),
            stderr: Arc::clone(&err),
        },
        true,
    );
    let mut summary = Summary::default();
    let tiers = Tiers {
        local,
        remote: None,
    };
    let ok = run(&fx.events, cfg, tiers, pool, &console, &mut summary).unwrap();
    let text = |b: &Arc<Mutex<Vec<u8>>>| String::from_utf8(b.lock().unwrap().clone()).unwrap();
    Captured {
        ok,
        stdout: text(&out),
        stderr: text(&err),
        summary,
    }
}

fn pyc_body(fx: &Fixture, name: &str, opt: u8) -> Vec<u8> {
    let data = std::fs::read(fx.dir.path().join(format!("{name}.opt{opt}.pyc"))).unwrap();
    data[16..].to_vec()
}

#[test]
fn results_in_any_order_are_reported_in_plan_order() {
    let fx = fixture(&["a.py", "b_bad.py", "c_warn.py", "d.py"], &[0]);
    let pool = ReversingPool::default();
    let got = run_with(&fx, &config(0), None, &pool);
    let d = fx.dir.path().display();
    assert_eq!(
        got.stdout,
        format!(
            "Listing '{d}'...\nCompiling '{d}/a.py'...\nCompiling '{d}/b_bad.py'...\n***   File \"{d}/b_bad.py\", line 1\nSyntaxError: invalid syntax\nCompiling '{d}/c_warn.py'...\nCompiling '{d}/d.py'...\n"
        )
    );
    assert_eq!(
        got.stderr,
        format!("{d}/c_warn.py:1: SyntaxWarning: test\n")
    );
    assert!(!got.ok, "a failed file makes the run fail");
    assert_eq!(got.summary.compiled, 4);
    assert_eq!(got.summary.errors, 1);
    assert_eq!(got.summary.written, 3);
    for name in ["a.py", "c_warn.py", "d.py"] {
        let want = format!("body of {d}/{name} at -O0");
        assert_eq!(
            pyc_body(&fx, name, 0)[1..],
            *want.as_bytes(),
            "{name} got its own body"
        );
    }
}

#[test]
fn each_distinct_key_is_compiled_once() {
    // Two levels with the same effective optimization share one key, hence one job.
    let fx = fixture(&["a.py", "b.py"], &[0, 0, 1]);
    let pool = ReversingPool::default();
    let got = run_with(&fx, &config(1), None, &pool);
    assert!(got.ok);
    assert_eq!(got.summary.compiled, 4, "two files × two distinct levels");
    assert_eq!(got.summary.written, 6, "every level gets its file");
    assert_ne!(pyc_body(&fx, "a.py", 0), pyc_body(&fx, "a.py", 1));
}

#[test]
fn local_hits_never_reach_the_pool() {
    let fx = fixture(&["a.py", "b.py"], &[0]);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = LocalCache::open(cache_dir.path()).unwrap();
    let first = run_with(&fx, &config(1), Some(&cache), &ReversingPool::default());
    assert_eq!(first.summary.compiled, 2);
    let before = pyc_body(&fx, "b.py", 0);
    std::fs::remove_file(fx.dir.path().join("b.py.opt0.pyc")).unwrap();

    let pool = ReversingPool::default();
    let second = run_with(&fx, &config(1), Some(&cache), &pool);
    assert!(second.ok);
    assert_eq!(second.summary.local_hits, 2);
    assert_eq!(second.summary.compiled, 0);
    assert!(
        pool.submitted.lock().unwrap().is_empty(),
        "no job submitted"
    );
    assert_eq!(
        pyc_body(&fx, "b.py", 0),
        before,
        "the hit wrote the same bytes"
    );
}

#[test]
fn an_unreadable_source_is_reported_in_its_place() {
    let fx = fixture(&["a.py", "b.py", "c.py"], &[0]);
    std::fs::remove_file(fx.dir.path().join("b.py")).unwrap();
    let got = run_with(&fx, &config(1), None, &ReversingPool::default());
    let d = fx.dir.path().display();
    assert!(!got.ok);
    assert_eq!(
        got.stdout,
        format!(
            "Listing '{d}'...\n*** Error compiling '{d}/b.py'...\nFileNotFoundError: [Errno 2] No such file or directory: '{d}/b.py'\n"
        )
    );
    assert_eq!(got.summary.compiled, 2);
}

#[test]
fn stop_if_failed_ends_the_run_at_the_first_failed_entry() {
    let mut fx = fixture(&["a_bad.py", "b.py"], &[0]);
    // compile_path: stop after the first sys.path entry that failed.
    let second = fx.events.pop().unwrap();
    fx.events.push(Event::StopIfFailed);
    fx.events.push(second);
    let got = run_with(&fx, &config(1), None, &ReversingPool::default());
    assert!(!got.ok);
    assert!(!got.stdout.contains("b.py"), "{}", got.stdout);
    assert!(!fx.dir.path().join("b.py.opt0.pyc").exists());
}
