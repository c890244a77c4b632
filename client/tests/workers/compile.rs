//! Compile outcomes against `python -m compileall`, and pool lifecycle (lazy start, lost and hung
//! workers, a broken interpreter).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{interpreters, make_executable, probe};
use pycache_client::interpreter::Interpreter;
use pycache_client::workers::{CompileJob, CompileOutcome, PoolConfig, WorkerPool};

/// Source files of the parity cases, by name.
const CASES: &[(&str, &[u8])] = &[
    (
        "good.py",
        b"import os\n\nclass A:\n    '''doc'''\n    x = {'a', 'b'}\n    def f(self, y=1.5):\n        return [i * y for i in range(3)], f'{y!r}'\n",
    ),
    ("empty.py", b""),
    ("bad_syntax.py", b"def f(:\n    pass\n"),
    ("warn.py", b"x = '\\d'\nassert (x, 'always true')\n"),
    ("latin1.py", b"x = '\xe9'\n"),
    ("cookie.py", b"# -*- coding: latin-1 -*-\nx = '\xe9'\n"),
    ("nul.py", b"x = 1\0\n"),
];

fn pool(interp: &Interpreter, cwd: &Path, size: usize, timeout: Duration) -> WorkerPool {
    let config = PoolConfig {
        size,
        job_timeout: timeout,
        cwd: Some(cwd.to_path_buf()),
        start_gate: None,
    };
    WorkerPool::with_config(interp, config)
}

fn job(id: u64, source: &str) -> CompileJob {
    CompileJob {
        id,
        source: source.into(),
        dfile: None,
        optimize: -1,
    }
}

/// Runs one job and returns its outcome.
fn compile_one(pool: &WorkerPool, job: CompileJob) -> CompileOutcome {
    let id = job.id;
    pool.submit(job);
    let (got, outcome) = pool
        .results()
        .recv_timeout(Duration::from_secs(60))
        .unwrap();
    assert_eq!(got, id);
    outcome
}

/// What `python -m compileall -q [extra] pkg/<name>` does in `dir`: (pyc body, stdout, stderr).
fn compileall(
    exe: &Path,
    dir: &Path,
    extra: &[&str],
    name: &str,
    tag: &str,
) -> (Option<Vec<u8>>, String, String) {
    let out = Command::new(exe)
        .args(["-m", "compileall", "-q"])
        .args(extra)
        .arg(format!("pkg/{name}"))
        .current_dir(dir)
        .output()
        .unwrap();
    let stem = name.trim_end_matches(".py");
    let pyc = dir.join(format!("pkg/__pycache__/{stem}.{tag}.pyc"));
    let body = std::fs::read(&pyc).ok().map(|b| b[16..].to_vec());
    let _ = std::fs::remove_file(&pyc);
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (body, text(out.stdout), text(out.stderr))
}

/// Two identical trees of [`CASES`] under `pkg/`: one for the pool, one for compileall.
fn case_trees() -> (TempDir, TempDir) {
    let trees = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [trees.0.path(), trees.1.path()] {
        std::fs::create_dir_all(dir.join("pkg")).unwrap();
        for (name, text) in CASES {
            std::fs::write(dir.join("pkg").join(name), text).unwrap();
        }
    }
    trees
}

#[test]
fn outcomes_match_compileall_on_every_interpreter() {
    for exe in interpreters() {
        let interp = probe(&exe);
        let (ours, theirs) = case_trees();
        let pool = pool(&interp, ours.path(), 2, Duration::from_secs(60));
        for (n, (name, _)) in CASES.iter().enumerate() {
            let outcome = compile_one(&pool, job(n as u64, &format!("pkg/{name}")));
            let (body, stdout, stderr) =
                compileall(&exe, theirs.path(), &[], name, &interp.cache_tag);
            let context = format!("{} {name}: {outcome:?}", exe.display());
            match (&outcome, body) {
                (
                    CompileOutcome::Compiled {
                        body: ours,
                        warnings,
                        ..
                    },
                    Some(theirs),
                ) => {
                    assert!(ours == &theirs, "{context}: body differs from compileall's");
                    assert_eq!(warnings, &stderr, "{context}");
                    assert_eq!(stdout, "", "{context}");
                }
                (CompileOutcome::Failed { message, warnings }, None) => {
                    let expect = format!("*** Error compiling 'pkg/{name}'...\n{message}\n");
                    assert_eq!(stdout, expect, "{context}");
                    assert_eq!(warnings, &stderr, "{context}");
                }
                _ => panic!("{context}: compileall disagrees (stdout {stdout:?})"),
            }
        }
        let expect_failed = ["bad_syntax.py", "latin1.py", "nul.py"];
        for (n, (name, _)) in CASES.iter().enumerate() {
            let outcome = compile_one(&pool, job(100 + n as u64, &format!("pkg/{name}")));
            let failed = matches!(outcome, CompileOutcome::Failed { .. });
            assert_eq!(
                failed,
                expect_failed.contains(name),
                "{} {name}: {outcome:?}",
                exe.display()
            );
        }
        assert!((1..=2).contains(&pool.workers_started()));
        pool.shutdown();
    }
}

#[test]
fn dfile_and_optimization_levels_match_compileall() {
    for exe in interpreters() {
        let interp = probe(&exe);
        let (ours, theirs) = case_trees();
        let pool = pool(&interp, ours.path(), 1, Duration::from_secs(60));
        let with_dfile = CompileJob {
            dfile: Some("/ddir/good.py".into()),
            ..job(1, "pkg/good.py")
        };
        let (body, ..) = compileall(
            &exe,
            theirs.path(),
            &["-d", "/ddir"],
            "good.py",
            &interp.cache_tag,
        );
        let outcome = compile_one(&pool, with_dfile);
        assert!(
            matches!(&outcome, CompileOutcome::Compiled { body: b, .. } if Some(b) == body.as_ref()),
            "{exe:?}"
        );
        if interp.version >= (3, 9, 0) && interp.implementation == "cpython" {
            let tag = format!("{}.opt-2", interp.cache_tag);
            let (body, ..) = compileall(&exe, theirs.path(), &["-o", "2"], "good.py", &tag);
            let outcome = compile_one(
                &pool,
                CompileJob {
                    optimize: 2,
                    ..job(2, "pkg/good.py")
                },
            );
            let CompileOutcome::Compiled { body: ours, .. } = outcome else {
                panic!("{outcome:?}")
            };
            assert_eq!(Some(&ours), body.as_ref(), "{exe:?}");
            let plain = compile_one(&pool, job(3, "pkg/good.py"));
            assert!(
                !matches!(plain, CompileOutcome::Compiled { body, .. } if body == ours),
                "-o 2 drops the docstring"
            );
        }
    }
}

#[test]
fn unreadable_sources_are_raised_not_failed() {
    let interp = probe(&interpreters().pop().unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dir.py")).unwrap();
    std::os::unix::fs::symlink("missing-target.py", dir.path().join("dangling.py")).unwrap();
    let pool = pool(&interp, dir.path(), 1, Duration::from_secs(60));
    let outcome = compile_one(&pool, job(1, "dir.py"));
    let expect = CompileOutcome::Raised {
        class_name: "IsADirectoryError".into(),
        text: "[Errno 21] Is a directory: 'dir.py'".into(),
        warnings: String::new(),
    };
    assert_eq!(outcome, expect);
    let outcome = compile_one(&pool, job(2, "dangling.py"));
    assert!(
        matches!(&outcome, CompileOutcome::Raised { class_name, text, .. }
        if class_name == "FileNotFoundError" && text.contains("dangling.py")),
        "{outcome:?}"
    );
    assert_eq!(
        pool.workers_started(),
        1,
        "an exception in a job does not cost the worker"
    );
}

#[test]
fn no_worker_starts_without_a_job() {
    let interp = probe(&interpreters().pop().unwrap());
    let pool = WorkerPool::new(&interp, 4);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(pool.workers_started(), 0);
    pool.shutdown();
}

#[test]
fn several_workers_answer_every_job() {
    let interp = probe(&interpreters().pop().unwrap());
    let dir = tempfile::tempdir().unwrap();
    for n in 0..40 {
        std::fs::write(dir.path().join(format!("m{n}.py")), format!("x = {n}\n")).unwrap();
    }
    let pool = pool(&interp, dir.path(), 3, Duration::from_secs(60));
    for n in 0..40 {
        pool.submit(job(n, &format!("m{n}.py")));
    }
    let mut ids: Vec<u64> = (0..40).map(|_| pool.results().recv().unwrap().0).collect();
    ids.sort();
    assert_eq!(ids, (0..40).collect::<Vec<_>>());
    assert!((1..=3).contains(&pool.workers_started()));
}

/// Pids of our child processes whose working directory is `cwd`.
fn workers_in(cwd: &Path) -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .nth(1)
                .unwrap_or("");
            ppid == me
                && std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .ok()
                    .as_deref()
                    == Some(cwd)
        })
        .collect()
}

#[test]
fn a_killed_worker_is_replaced_and_the_job_retried() {
    let interp = probe(&interpreters().pop().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    std::fs::write(cwd.join("a.py"), "a = 1\n").unwrap();
    let pool = pool(&interp, &cwd, 1, Duration::from_secs(60));
    assert!(matches!(
        compile_one(&pool, job(1, "a.py")),
        CompileOutcome::Compiled { .. }
    ));
    let pids = workers_in(&cwd);
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert!(Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap()
        .success());
    let outcome = compile_one(&pool, job(2, "a.py"));
    assert!(
        matches!(outcome, CompileOutcome::Compiled { .. }),
        "{outcome:?}"
    );
    assert_eq!(pool.workers_started(), 2);
    assert_ne!(workers_in(&cwd), pids);
}

/// A source whose reading blocks forever: a FIFO that nobody writes.
fn hanging_source(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

#[test]
fn a_hanging_job_times_out_and_is_reported() {
    let interp = probe(&interpreters().pop().unwrap());
    let dir = tempfile::tempdir().unwrap();
    hanging_source(&dir.path().join("fifo.py"));
    std::fs::write(dir.path().join("ok.py"), "ok = 1\n").unwrap();
    let pool = pool(&interp, dir.path(), 1, Duration::from_millis(1500));
    let start = Instant::now();
    let outcome = compile_one(&pool, job(1, "fifo.py"));
    let CompileOutcome::WorkerLost { message } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(message.contains("no answer within 1.5 s"), "{message}");
    assert!(
        message.contains("fifo.py") && message.contains(&*interp.executable.to_string_lossy()),
        "{message}"
    );
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(
        pool.workers_started(),
        2,
        "the job was retried once on a fresh worker"
    );
    assert!(matches!(
        compile_one(&pool, job(2, "ok.py")),
        CompileOutcome::Compiled { .. }
    ));
    assert_eq!(pool.workers_started(), 3);
}

/// Jobs wait in a worker's pipe behind the one it compiles: when that one hangs, the worker
/// is killed, the hanging job alone is charged (and retried once), and the jobs queued behind
/// it are compiled by the next worker.
#[test]
fn jobs_queued_behind_a_hanging_one_are_compiled_by_the_next_worker() {
    let interp = probe(&interpreters().pop().unwrap());
    let dir = tempfile::tempdir().unwrap();
    hanging_source(&dir.path().join("fifo.py"));
    for n in 0..6 {
        std::fs::write(dir.path().join(format!("m{n}.py")), format!("x = {n}\n")).unwrap();
    }
    let pool = pool(&interp, dir.path(), 1, Duration::from_millis(1500));
    pool.submit(job(100, "fifo.py"));
    for n in 0..6 {
        pool.submit(job(n, &format!("m{n}.py")));
    }
    let mut outcomes: Vec<(u64, CompileOutcome)> = (0..7)
        .map(|_| {
            pool.results()
                .recv_timeout(Duration::from_secs(60))
                .unwrap()
        })
        .collect();
    outcomes.sort_by_key(|(id, _)| *id);
    for (id, outcome) in &outcomes[..6] {
        assert!(
            matches!(outcome, CompileOutcome::Compiled { .. }),
            "job {id}: {outcome:?}"
        );
    }
    let (id, outcome) = &outcomes[6];
    assert_eq!(*id, 100);
    assert!(
        matches!(outcome, CompileOutcome::WorkerLost { message } if message.contains("no answer within 1.5 s")),
        "{outcome:?}"
    );
    assert_eq!(
        pool.workers_started(),
        3,
        "two tries of the hanging job, then a worker for the rest"
    );
}

#[test]
fn a_missing_interpreter_is_reported_through_the_results() {
    let mut interp = probe(&interpreters().pop().unwrap());
    interp.executable = PathBuf::from("/nonexistent/bin/python3");
    interp.real_executable = interp.executable.clone();
    let pool = WorkerPool::new(&interp, 2);
    for id in 1..=3 {
        let outcome = compile_one(&pool, job(id, "x.py"));
        let CompileOutcome::WorkerLost { message } = outcome else {
            panic!("{outcome:?}")
        };
        assert!(
            message.contains("could not start the Python interpreter /nonexistent/bin/python3"),
            "{message}"
        );
    }
    assert_eq!(pool.workers_started(), 0);
}

#[test]
fn stray_output_before_the_worker_starts_is_ignored() {
    let real = interpreters().pop().unwrap();
    let interp = probe(&real);
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("noisy-python");
    let script = format!(
        "#!/bin/sh\necho 'noise on stdout'\nprintf '\\0\\0\\0\\0'\nexec {} \"$@\"\n",
        real.display()
    );
    std::fs::write(&wrapper, script).unwrap();
    make_executable(&wrapper);
    std::fs::write(dir.path().join("a.py"), "a = 1\n").unwrap();
    let noisy = Interpreter {
        executable: wrapper,
        ..interp.clone()
    };
    let pool = pool(&noisy, dir.path(), 1, Duration::from_secs(60));
    let outcome = compile_one(&pool, job(1, "a.py"));
    let quiet = pool_body(&interp, dir.path());
    assert_eq!(outcome, quiet);
}

fn pool_body(interp: &Interpreter, dir: &Path) -> CompileOutcome {
    compile_one(
        &pool(interp, dir, 1, Duration::from_secs(60)),
        job(1, "a.py"),
    )
}
