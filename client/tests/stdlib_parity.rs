//! Parity on a real tree: each CPython's own standard library.
//!
//! For every CPython 3.8+ found, its `lib/pythonX.Y` is copied twice (modes and mtimes kept),
//! without `site-packages` (not the stdlib; whatever is installed there) and without the existing
//! `__pycache__` directories (so everything is compiled). Everything else stays, `test/`,
//! `lib2to3/tests/data` and `idlelib/idle_test` included: about 1,650–1,750 files, 8–15 s of
//! serial compileall per copy, and the deliberately broken files under `test/` and
//! `lib2to3/tests/data` exercise error and warning output at scale. CPython 3.14 and 3.15 run on
//! Pyodide, whose standard library is the `.py` files of its `python_stdlib.zip` (559 and 598 files,
//! extracted once, see `support::interp`).
//!
//! Copy A: serial `python -m compileall -q lib`; copy B: `pycache-client compileall -q lib`,
//! both from the copy's parent, so `co_filename` is the same relative path. Compared: exit
//! status, stdout, stderr, the whole tree (every .pyc: header exact, body byte-identical or
//! code-object equal). It fails on any file that is neither; on 3.11+ it also fails when more
//! than `TOLERANCE_PERCENT` of the .pyc are only code-equal (DESIGN.md §6: a few 3.11/3.12 files
//! change with compile order; on 3.13 modules compileall itself imports, like `argparse`).
//!
//! One line per version is printed and written to `$CARGO_TARGET_TMPDIR/stdlib_parity.txt`.

mod support;

use std::path::Path;
use std::sync::Mutex;

use support::compare::{compare_outcomes, compare_trees, snapshot, OutputRules};
use support::run::{Invocation, Tool};
use support::tree::copy_tree;
use support::{interpreters, Interp};

/// The share of .pyc files on CPython 3.11+ allowed to be code-equal but not byte-identical.
/// Measured: 0 on 3.11.7, 3.12.1 and 3.13.0 (compileall against itself and against the client);
/// the margin allows for the compile-order effects DESIGN.md §6 describes, about 4 files.
const TOLERANCE_PERCENT: f64 = 0.25;

fn skip(rel: &Path) -> bool {
    rel == Path::new("site-packages") || rel.file_name().is_some_and(|n| n == "__pycache__")
}

struct VersionReport {
    line: String,
    problems: Vec<String>,
}

fn run_side(interp: &Interp, tool: Tool, base: &Path) -> support::run::Outcome {
    copy_tree(&interp.stdlib, &base.join("lib"), &skip);
    Invocation {
        interp,
        tool,
        args: vec!["-q".into(), "lib".into()],
        cwd: base.to_path_buf(),
        env: Vec::new(),
        stdin: None,
        cache_dir: base.join("cache"),
    }
    .run()
}

fn check_version(interp: &Interp) -> VersionReport {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let expected = run_side(interp, Tool::Compileall, &a);
    // PYCACHE_PARITY_SELF_CHECK=1 puts compileall on both sides, to check the harness.
    let tool = match std::env::var_os("PYCACHE_PARITY_SELF_CHECK") {
        Some(_) => Tool::Compileall,
        None => Tool::Client,
    };
    let actual = run_side(interp, tool, &b);
    let mut problems = Vec::new();
    let rules = OutputRules {
        replace: vec![(a.as_path(), "<ROOT>"), (b.as_path(), "<ROOT>")],
        unordered: false,
    };
    compare_outcomes(&expected, &actual, &rules, &mut problems);
    let (want, got) = (snapshot(&a.join("lib")), snapshot(&b.join("lib")));
    let stats = compare_trees(interp, &want, &got, dir.path(), &mut problems);
    let mut line = format!(
        "stdlib parity {}: {} files, {} byte-identical, {} code-equal only, {} different \
         (compileall {:.1}s, client {:.1}s)",
        interp.label(),
        stats.files,
        stats.byte_identical,
        stats.code_equal,
        stats.different,
        expected.elapsed.as_secs_f64(),
        actual.elapsed.as_secs_f64()
    );
    if interp.bytes_must_match() && !stats.code_equal_paths.is_empty() {
        let names: Vec<String> = stats
            .code_equal_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        line.push_str(&format!("; code-equal only: {}", names.join(", ")));
        let allowed = stats.files as f64 * TOLERANCE_PERCENT / 100.0;
        if stats.code_equal as f64 > allowed {
            problems.push(format!(
                "{}: {} .pyc only code-equal, more than the {TOLERANCE_PERCENT}% tolerated",
                interp.label(),
                stats.code_equal
            ));
        }
    }
    if stats.files == 0 {
        problems.push(format!("{}: no .pyc compared", interp.label()));
    }
    const SHOWN: usize = 40;
    let total = problems.len();
    let mut problems: Vec<String> = problems
        .into_iter()
        .take(SHOWN)
        .map(|p| format!("[{}] {p}", interp.label()))
        .collect();
    if total > SHOWN {
        problems.push(format!(
            "[{}] ... and {} more",
            interp.label(),
            total - SHOWN
        ));
    }
    VersionReport { line, problems }
}

/// Every CPython found, two at a time (each side of a comparison is itself serial).
#[test]
fn stdlib_parity_every_cpython() {
    let targets: Vec<&Interp> = interpreters()
        .iter()
        .filter(|i| i.implementation == "cpython")
        .collect();
    assert!(!targets.is_empty(), "no CPython found");
    assert!(
        targets.iter().any(|i| i.is_default)
            || std::env::var_os("PYCACHE_PARITY_PYTHONS").is_some(),
        "the default python3 is not covered"
    );
    let queue = Mutex::new(targets.clone());
    let reports = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let Some(interp) = queue.lock().unwrap().pop() else {
                    break;
                };
                let report = check_version(interp);
                println!("{}", report.line);
                reports.lock().unwrap().push((interp.version, report));
            });
        }
    });
    let mut reports = reports.into_inner().unwrap();
    reports.sort_by_key(|(version, _)| *version);
    assert_eq!(reports.len(), targets.len(), "a version did not report");
    let lines: Vec<&str> = reports.iter().map(|(_, r)| r.line.as_str()).collect();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stdlib_parity.txt");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    println!("report written to {}", path.display());
    let problems: Vec<&String> = reports.iter().flat_map(|(_, r)| &r.problems).collect();
    assert!(
        problems.is_empty(),
        "stdlib parity:\n{}\n\ndifferences:\n{}",
        lines.join("\n"),
        problems
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
