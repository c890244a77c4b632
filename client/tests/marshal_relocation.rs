//! Measures the relocation rule against CPython itself, before anything trusts it.
//!
//! For every CPython 3.8+ found, the same sources (a spread of its standard library, all of it
//! with `PYCACHE_RELOCATION_FULL=1`, plus crafted cases) are compiled with the interpreter's own
//! `py_compile` at six recorded paths (`dfile`): a base path, another absolute path of another
//! length, a non-ASCII directory, a path longer than 255 bytes, a relative path, and one of the
//! same length as the base. Each side is one fresh process compiling the files in the same
//! order (`PYTHONHASHSEED=0`), as DESIGN.md §6 asks for comparable bytes. Then the body compiled
//! at one path is relocated to another and compared with the body compiled there:
//!
//! - exact: byte-identical;
//! - code-equal: different bytes but equal code objects, filenames included (accepted on
//!   3.8–3.10 only, where bytes depend on process history);
//! - refused: `relocate` said `NotRelocatable`;
//! - wrong: anything else. There must be none.
//!
//! The crafted cases must be refused exactly where the path is also a string constant.
//! One line per version goes to stdout and to `$CARGO_TARGET_TMPDIR/marshal_relocation.txt`.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use pycache_client::marshal::relocate;
use support::{interpreters, Interp};

const SIDES: usize = 6;
/// (from, to) side pairs that are measured.
const PAIRS: [(usize, usize); 9] = [
    (0, 1),
    (0, 2),
    (0, 3),
    (0, 4),
    (0, 5),
    (2, 0),
    (3, 4),
    (4, 2),
    (1, 3),
];
/// Standard library files compiled by default (all with `PYCACHE_RELOCATION_FULL=1`).
const DEFAULT_STDLIB_FILES: usize = 150;

/// The directory each side records its files under.
fn roots() -> [String; SIDES] {
    [
        "/tmp/a/proj/lib/".into(),
        "/srv/ci/builds/runner-7/another-project@2/lib/".into(),
        "/tmp/ünïcødé-ДИР/lib/".into(),
        format!("/tmp/{}/lib/", "long-directory-name-".repeat(14)),
        "lib/".into(),
        "/tmp/b/proj/lib/".into(),
    ]
}

/// One source and the path it is recorded under on each side.
struct Case {
    name: String,
    source: PathBuf,
    dfiles: [String; SIDES],
    /// Sides whose path this source also holds as a string constant: a relocation from or to
    /// one of them must be refused.
    path_in_source: Vec<usize>,
}

fn stdlib_sources(stdlib: &Path, full: bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![stdlib.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            let name = entry.file_name();
            if kind.is_dir() && name != "site-packages" && name != "__pycache__" {
                stack.push(path);
            } else if kind.is_file() && path.extension() == Some("py".as_ref()) {
                found.push(path);
            }
        }
    }
    found.sort();
    if !full {
        let step = (found.len() / DEFAULT_STDLIB_FILES).max(1);
        found = found.into_iter().step_by(step).collect();
    }
    found
}

/// Sources written for the edge cases, with their paths on each side.
fn crafted(dir: &Path) -> Vec<Case> {
    let roots = roots();
    let mut cases = Vec::new();
    let mut add = |name: &str, text: &str, dfiles: [String; SIDES], path_in_source: Vec<usize>| {
        let source = dir.join(format!("{name}.py"));
        std::fs::write(&source, text).unwrap();
        cases.push(Case {
            name: format!("crafted/{name}"),
            source,
            dfiles,
            path_in_source,
        });
    };
    let at_roots = |rel: &str| roots.clone().map(|r| format!("{r}{rel}"));
    for side in [0, 1, 2] {
        let rel = format!("crafted/own_path_{side}.py");
        let own = &at_roots(&rel)[side];
        let text = format!(
            "PATH = {own:?}\ndef where():\n    return {own:?}\nclass K:\n    p = lambda self: {own:?}\n"
        );
        add(
            &format!("own_path_{side}"),
            &text,
            at_roots(&rel),
            vec![side],
        );
    }
    // A name-like path: CPython interns such constants, and 3.13 interns co_filename too, so the
    // two can be one object.
    add(
        "name_like",
        "A = 'crafted_name_0'\ndef f():\n    return 'crafted_name_0', 'crafted_name_9'\n",
        std::array::from_fn(|i| format!("crafted_name_{i}")),
        vec![0],
    );
    // Around the one-byte length limit of short ASCII strings.
    let sized = |n: usize| {
        let head = "/tmp/";
        format!("{head}{}/b.py", "x".repeat(n - head.len() - 5))
    };
    add(
        "boundary",
        "def f():\n    def g():\n        return 1\n    return g\n",
        [
            sized(255),
            sized(256),
            format!("/tmp/é{}/b.py", "y".repeat(243)),
            sized(300),
            "b.py".into(),
            sized(254),
        ],
        vec![],
    );
    add("empty", "", at_roots("crafted/empty.py"), vec![]);
    add(
        "docstring_only",
        "'''Only a docstring.'''\n",
        at_roots("crafted/docstring_only.py"),
        vec![],
    );
    let base = &at_roots("crafted/nested.py")[0];
    add(
        "nested",
        &format!(
            "import os\nBYTES = b{base:?}\nINSIDE = 'see {base} here'\nS = frozenset({{'a', 'b'}})\n\
             class A:\n    class B:\n        def m(self, x=lambda: [i for i in range(3)]):\n            \
             async def inner():\n                return {{k: v for k, v in ()}}\n            return inner\n\
             def gen():\n    yield from (x * 2 for x in range(4))\n",
        ),
        at_roots("crafted/nested.py"),
        vec![],
    );
    add(
        "syntax_error",
        "def broken(:\n",
        at_roots("crafted/syntax_error.py"),
        vec![],
    );
    cases
}

const COMPILE: &str = r#"
import py_compile, sys
with open(sys.argv[1], encoding='utf-8') as jobs:
    for line in jobs:
        source, cfile, dfile = line.rstrip('\n').split('\t')
        try:
            py_compile.compile(source, cfile, dfile=dfile, doraise=True)
            print('ok', flush=True)
        except Exception:
            print('error', flush=True)
"#;

/// Compiles every case at its path for `side`, in one fresh process; true where a .pyc was made.
fn compile_side(interp: &Interp, cases: &[Case], side: usize, out: &Path) -> Vec<bool> {
    std::fs::create_dir_all(out).unwrap();
    let mut jobs = String::new();
    for (i, case) in cases.iter().enumerate() {
        let cfile = out.join(format!("{i}.pyc"));
        writeln!(
            jobs,
            "{}\t{}\t{}",
            case.source.display(),
            cfile.display(),
            case.dfiles[side]
        )
        .unwrap();
    }
    let job_file = out.join("jobs.txt");
    std::fs::write(&job_file, jobs).unwrap();
    let output = Command::new(&interp.path)
        .args(["-c", COMPILE])
        .arg(&job_file)
        .env("PYTHONHASHSEED", "0")
        .env_remove("PYTHONWARNINGS")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        interp.label(),
        String::from_utf8_lossy(&output.stderr)
    );
    let verdicts: Vec<bool> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| l == "ok")
        .collect();
    assert_eq!(verdicts.len(), cases.len());
    verdicts
}

#[derive(Default)]
struct Tally {
    rewrites: usize,
    exact: usize,
    code_equal: usize,
    refused: usize,
    refused_by_reason: BTreeMap<String, usize>,
    /// Refusals of standard library files (not crafted to be refused).
    stdlib_refused: usize,
    stdlib_rewrites: usize,
    code_equal_labels: Vec<String>,
    wrong: Vec<String>,
    crafted_problems: Vec<String>,
}

fn measure(interp: &Interp, full: bool) -> (String, Tally) {
    let scratch = tempfile::tempdir().unwrap();
    let crafted_dir = scratch.path().join("crafted");
    std::fs::create_dir_all(&crafted_dir).unwrap();
    let roots = roots();
    let mut cases: Vec<Case> = stdlib_sources(&interp.stdlib, full)
        .into_iter()
        .map(|source| {
            let rel = source
                .strip_prefix(&interp.stdlib)
                .unwrap()
                .display()
                .to_string();
            Case {
                name: rel.clone(),
                dfiles: roots.clone().map(|r| format!("{r}{rel}")),
                source,
                path_in_source: vec![],
            }
        })
        .collect();
    let stdlib_count = cases.len();
    cases.extend(crafted(&crafted_dir));
    let compiled: Vec<Vec<bool>> = (0..SIDES)
        .map(|side| {
            compile_side(
                interp,
                &cases,
                side,
                &scratch.path().join(format!("side{side}")),
            )
        })
        .collect();
    let pyc = |side: usize, i: usize| {
        std::fs::read(scratch.path().join(format!("side{side}/{i}.pyc"))).unwrap()
    };
    let version = (interp.version.0, interp.version.1);
    let mut tally = Tally::default();
    let mut mismatches: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        for (from, to) in PAIRS {
            if !(compiled[from][i] && compiled[to][i]) {
                continue;
            }
            let (a, b) = (pyc(from, i), pyc(to, i));
            tally.rewrites += 1;
            tally.stdlib_rewrites += usize::from(i < stdlib_count);
            let must_refuse =
                case.path_in_source.contains(&from) || case.path_in_source.contains(&to);
            let label = format!("{} side {from}->{to}", case.name);
            match relocate(&a[16..], version, &case.dfiles[from], &case.dfiles[to]) {
                Err(e) => {
                    tally.refused += 1;
                    *tally
                        .refused_by_reason
                        .entry(
                            format!("{e:?}")
                                .split('(')
                                .next()
                                .unwrap()
                                .split(' ')
                                .next()
                                .unwrap()
                                .to_string(),
                        )
                        .or_default() += 1;
                    tally.stdlib_refused += usize::from(i < stdlib_count);
                    if i >= stdlib_count && !must_refuse {
                        tally
                            .crafted_problems
                            .push(format!("{label}: refused ({e})"));
                    }
                }
                Ok(moved) => {
                    if must_refuse {
                        tally.crafted_problems.push(format!("{label}: not refused"));
                    }
                    if moved == b[16..] {
                        tally.exact += 1;
                    } else {
                        let mut full_pyc = b[..16].to_vec();
                        full_pyc.extend_from_slice(&moved);
                        mismatches.push((label, full_pyc, b));
                    }
                }
            }
        }
    }
    if !mismatches.is_empty() {
        let pairs: Vec<(&[u8], &[u8])> = mismatches
            .iter()
            .map(|(_, m, b)| (m.as_slice(), b.as_slice()))
            .collect();
        let verdicts = support::compare::code_equal(interp, &pairs, scratch.path());
        for ((label, _, _), same) in mismatches.iter().zip(verdicts) {
            if same && !interp.bytes_must_match() {
                tally.code_equal += 1;
                tally.code_equal_labels.push(label.clone());
            } else {
                let what = if same {
                    "code-equal only"
                } else {
                    "different code"
                };
                tally.wrong.push(format!("{label}: {what}"));
            }
        }
    }
    let share = |n: usize| 100.0 * n as f64 / tally.rewrites.max(1) as f64;
    let line = format!(
        "relocation {} ({} stdlib + {} crafted sources, {} pairs): {} rewrites, {} exact ({:.2}%), \
         {} code-equal only ({:.2}%), {} refused ({:.2}%: {:?}), {} wrong",
        interp.label(),
        stdlib_count,
        cases.len() - stdlib_count,
        PAIRS.len(),
        tally.rewrites,
        tally.exact,
        share(tally.exact),
        tally.code_equal,
        share(tally.code_equal),
        tally.refused,
        share(tally.refused),
        tally.refused_by_reason,
        tally.wrong.len(),
    );
    (line, tally)
}

#[test]
fn relocation_reproduces_a_compile_at_the_other_path() {
    let full = std::env::var_os("PYCACHE_RELOCATION_FULL").is_some();
    let interps: Vec<&Interp> = interpreters()
        .iter()
        .filter(|i| i.implementation == "cpython" && i.version >= (3, 8, 0) && !i.pyodide)
        .collect();
    assert!(!interps.is_empty(), "no CPython 3.8+ found");
    let results: Vec<(String, Tally)> = std::thread::scope(|scope| {
        let handles: Vec<_> = interps
            .iter()
            .map(|interp| scope.spawn(move || measure(interp, full)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut report = String::new();
    let mut problems = Vec::new();
    for (line, tally) in &results {
        println!("{line}");
        report.push_str(line);
        report.push('\n');
        problems.extend(tally.wrong.iter().cloned());
        problems.extend(tally.crafted_problems.iter().cloned());
        assert!(tally.exact > 0, "{line}");
        if !tally.code_equal_labels.is_empty() {
            println!("  code-equal only: {}", tally.code_equal_labels.join(", "));
        }
        // Real sources hold their own path as a constant very rarely: refusing more than 1% of
        // them means the rule refuses what it should rewrite.
        assert!(
            tally.stdlib_refused * 100 <= tally.stdlib_rewrites,
            "{line}: {} of {} standard library rewrites refused",
            tally.stdlib_refused,
            tally.stdlib_rewrites
        );
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("marshal_relocation.txt");
    std::fs::write(out, report).unwrap();
    assert!(
        problems.is_empty(),
        "{} relocation problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
