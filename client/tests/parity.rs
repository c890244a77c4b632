//! Parity of `pycache-client compileall ARGS` with `python -m compileall ARGS`.
//!
//! Every case generates a tree, runs its command lines with compileall and then with the client
//! (same absolute path, same cwd, same environment), and compares after each step: exit status,
//! stdout, stderr (temporary root replaced by `<ROOT>`; py_compile's random `.pyc.<id>` suffix
//! in error messages masked; sorted lines for `-j N>1`, whose order compileall does not fix),
//! the set of paths, kinds, modes, symlink targets, hard-link groups and link counts, and every
//! byte (.pyc: header exact; body byte-identical on CPython 3.11+, code-object equality on older
//! interpreters — see `support::compare`).
//!
//! Interpreters: `Core` cases run on every interpreter found; `Full` cases on the default
//! `python3`, the oldest and newest CPython and PyPy (`PYCACHE_PARITY_FULL=1`: on all).
//! Options a version lacks (3.8 has no -s/-p/-o/-e/--hardlink-dupes) are still run there: the
//! client must then give argparse's usage error, like compileall.
//!
//! `harness_self_check_*` runs every case with compileall on both sides: it must always pass, and
//! proves that the harness does not report compileall's own nondeterminism as a difference.

mod support;

use support::trees::*;
use support::{check, check_with, interpreters, run_case, Case, Scope, Step, Tool};

fn case(name: &'static str, tree: support::case::TreeFn, steps: Vec<Step>) -> Case {
    Case { name, tree, steps }
}

fn plain() -> Case {
    // Second step: everything is up to date, nothing is written or printed but the listings.
    let s = Step::new(&["proj"]);
    case("plain", package, vec![s.clone(), s])
}

fn plain_dot_cwd() -> Case {
    case(
        "plain_dot_cwd",
        package,
        vec![Step::new(&["."]).cwd("proj")],
    )
}

fn plain_absolute() -> Case {
    let s = Step::new(&["{root}/proj"]);
    case("plain_absolute", package, vec![s.clone(), s])
}

fn deep_default() -> Case {
    case("deep_default", deep, vec![Step::new(&["proj"])])
}

fn recursion_limits() -> Case {
    let steps = [
        &["-r", "0", "proj"][..],
        &["-r", "1", "proj"],
        &["-r", "2", "proj"],
        &["-l", "proj"],
        &["-l", "-r", "2", "proj"],
    ]
    .iter()
    .map(|args| Step::new(args).fresh())
    .collect();
    case("recursion_limits", deep, steps)
}

fn force() -> Case {
    case(
        "force",
        package,
        vec![Step::new(&["-q", "proj"]), Step::new(&["-f", "proj"])],
    )
}

fn quiet() -> Case {
    case(
        "quiet",
        broken,
        vec![
            Step::new(&["-q", "proj"]),
            Step::new(&["-qq", "proj"]).fresh(),
            Step::new(&["-q", "proj"]).fresh().cwd("proj").env("X", "1"),
        ],
    )
}

fn broken_files() -> Case {
    // Failed files have no .pyc, so the second run compiles and reports them again.
    let s = Step::new(&["proj"]);
    case("broken_files", broken, vec![s.clone(), s])
}

fn compile_warnings() -> Case {
    case(
        "compile_warnings",
        warnings,
        vec![
            Step::new(&["proj"]),
            Step::new(&["proj"]).fresh().env("PYTHONWARNINGS", "error"),
            Step::new(&["-q", "proj"])
                .fresh()
                .env("PYTHONWARNINGS", "error::SyntaxWarning"),
        ],
    )
}

fn jobs() -> Case {
    case(
        "jobs",
        mixed,
        vec![
            Step::new(&["-j", "0", "proj"]).unordered(),
            Step::new(&["-j", "2", "proj"]).fresh().unordered(),
            Step::new(&["-j", "2", "-f", "proj"]).unordered(),
        ],
    )
}

fn jobs_broken() -> Case {
    case(
        "jobs_broken",
        broken,
        vec![Step::new(&["-j", "2", "-q", "proj"]).unordered()],
    )
}

fn optimize_levels() -> Case {
    case(
        "optimize_levels",
        package,
        vec![
            Step::new(&["-o", "0", "-o", "1", "-o", "2", "proj"]),
            Step::new(&["-o", "2", "-o", "0", "-o", "2", "proj"]).fresh(),
            Step::new(&["proj"]).fresh().env("PYTHONOPTIMIZE", "1"),
            Step::new(&["-o", "0", "-o", "1", "proj"])
                .fresh()
                .env("PYTHONOPTIMIZE", "2"),
            Step::new(&["-o", "-1", "proj"])
                .fresh()
                .env("PYTHONOPTIMIZE", "2"),
        ],
    )
}

fn invalidation_modes() -> Case {
    let mode = |m: &str| Step::new(&["--invalidation-mode", m, "proj"]);
    case(
        "invalidation_modes",
        package,
        vec![
            mode("checked-hash"),
            // Hash-based pycs are always rewritten.
            mode("checked-hash"),
            mode("unchecked-hash").fresh(),
            mode("timestamp").fresh(),
            // A timestamp pyc with a matching mtime is kept even when a hash mode is asked for.
            mode("checked-hash"),
        ],
    )
}

fn source_date_epoch() -> Case {
    case(
        "source_date_epoch",
        package,
        vec![
            Step::new(&["proj"]).env("SOURCE_DATE_EPOCH", "1"),
            Step::new(&["proj"]).env("SOURCE_DATE_EPOCH", "1"),
            Step::new(&["proj"]).fresh().env("SOURCE_DATE_EPOCH", ""),
            Step::new(&["--invalidation-mode", "timestamp", "proj"])
                .fresh()
                .env("SOURCE_DATE_EPOCH", "123"),
        ],
    )
}

fn pycache_prefix() -> Case {
    let s = Step::new(&["proj"]).env("PYTHONPYCACHEPREFIX", "{root}/prefix");
    let relative = Step::new(&["-b", "proj"])
        .fresh()
        .env("PYTHONPYCACHEPREFIX", "prefix");
    case("pycache_prefix", mixed, vec![s.clone(), s, relative])
}

fn file_arguments() -> Case {
    case(
        "file_arguments",
        broken,
        vec![
            Step::new(&["proj/ok.py", "proj/syntax.py", "proj/data.txt", "proj/x.PY"]),
            Step::new(&["-q", "proj/nul.py", "proj/missing.py", "proj/ok.py"]),
            Step::new(&["ok.py"]).cwd("proj"),
        ],
    )
}

fn missing_paths() -> Case {
    case(
        "missing_paths",
        package,
        vec![
            Step::new(&["missing"]),
            Step::new(&["missing/sub", "proj"]),
            Step::new(&["-q", "missing"]),
            Step::new(&["-qq", "missing"]),
        ],
    )
}

fn up_to_date_rules() -> Case {
    let s = Step::new(&["proj"]);
    case(
        "up_to_date_rules",
        package,
        vec![
            s.clone(),
            s.clone().change(rewrite_same_mtime),
            s.clone().change(bump_mtime),
            s.change(corrupt_pyc_tail),
        ],
    )
}

fn warm_cache() -> Case {
    // Second step: a fresh checkout of the same tree; for the client every file is a cache hit,
    // including the failures, which must be reported again with exit 1.
    let s = Step::new(&["proj"]);
    case(
        "warm_cache",
        mixed,
        vec![s.clone(), s.clone().fresh(), s.fresh()],
    )
}

fn cached_failures() -> Case {
    let s = Step::new(&["proj"]);
    let q = Step::new(&["-q", "proj"]);
    case(
        "cached_failures",
        broken,
        vec![s.clone(), s.fresh(), q.fresh()],
    )
}

fn usage_errors() -> Case {
    let steps = [
        &["--bogus", "proj"][..],
        &["-r", "x", "proj"],
        &["-j", "many", "proj"],
        &["--invalidation-mode", "bogus", "proj"],
        &["-o", "zero", "proj"],
        &["--help"],
        &["-h"],
        &["-j", "-1", "proj"],
    ]
    .iter()
    .map(|args| Step::new(args))
    .collect();
    case("usage_errors", package, steps)
}

fn no_path_short_circuit() -> Case {
    // sys.path[0] is the cwd under `-m`; pp/ fails, so compileall stops before the stdlib.
    case(
        "no_path_short_circuit",
        sys_path_broken,
        vec![Step::new(&[]).cwd("proj").env("PYTHONPATH", "{root}/pp")],
    )
}

fn no_path_hermetic() -> Case {
    // Every sys.path entry at depth 0, the stdlib too: PYTHONPYCACHEPREFIX keeps every .pyc
    // inside the case's root, so nothing outside it is written.
    let env = |s: Step| {
        s.cwd("proj")
            .env("PYTHONPATH", "{root}/pp")
            .env("PYTHONPYCACHEPREFIX", "{root}/prefix")
    };
    case(
        "no_path_hermetic",
        sys_path,
        vec![env(Step::new(&["-q"])), env(Step::new(&[]))],
    )
}

fn legacy() -> Case {
    let s = Step::new(&["-b", "proj"]);
    case("legacy", mixed, vec![s.clone(), s])
}

fn destdir() -> Case {
    case(
        "destdir",
        mixed,
        vec![
            Step::new(&["-d", "/dest", "proj"]),
            Step::new(&["-d", "rel/dest", "-f", "proj"]),
            Step::new(&["-d", "/dest", "proj/pkg/syntax.py"]),
        ],
    )
}

fn strip_and_prepend() -> Case {
    let steps = [
        &["-s", "proj", "proj"][..],
        &["-s", "{root}", "{root}/proj"],
        &["-s", "other/proj", "proj"],
        &["-s", "proj/pkg", "proj"],
        &["-p", "/pre", "proj"],
        &["-s", "proj", "-p", "/pre", "proj"],
        &["-p", "/pre", "{root}/proj"],
        &["-s", "proj", "proj/pkg/syntax.py"],
    ]
    .iter()
    .map(|args| Step::new(args).fresh())
    .collect();
    case("strip_and_prepend", mixed, steps)
}

fn destdir_with_strip() -> Case {
    case(
        "destdir_with_strip",
        package,
        vec![
            Step::new(&["-d", "x", "-s", "y", "proj"]),
            Step::new(&["-d", "x", "-p", "y", "proj"]),
        ],
    )
}

fn exclude_regex() -> Case {
    case(
        "exclude_regex",
        mixed,
        vec![
            Step::new(&["-x", r"sub|mod\.py$", "proj"]),
            Step::new(&["-x", "syntax", "proj"]).fresh(),
            Step::new(&["-x", "[", "proj"]).fresh(),
        ],
    )
}

fn exclude_python_re() -> Case {
    // The files -x skips are those the interpreter's `re` matches; patterns it rejects fail as
    // compileall fails (traceback, exit 1); its warnings are compileall's; `-x ''` crashes it.
    let steps = [
        &["-x", "[[:alpha:]]", "proj"][..],
        &["-x", "[a-z&&[^x]]", "proj"],
        &["-x", r"\s", "proj"],
        &["-x", r"q\w\.py$", "proj"],
        &["-x", r"\udcff", "proj"],
        &["-x", r"\p{L}", "proj"],
        &["-x", r"\z", "proj"],
        &["-x", "(?U)x", "proj"],
        &["-x", "p(?i)KG", "proj"],
        &["-x", "od++", "proj"],
        &["-x", "", "proj"],
        &["-q", "-x", "sub", "proj/pkg/sub/deep.py", "proj/top.py"],
    ]
    .iter()
    .map(|args| Step::new(args).fresh())
    .chain([Step::new(&["-q", "-x", "[[:alpha:]]", "proj"])
        .fresh()
        .env("PYTHONWARNINGS", "error")])
    .collect();
    case("exclude_python_re", regex_names, steps)
}

fn narrow_stdout() -> Case {
    // A stdout codec that cannot encode a path: compileall fails with UnicodeEncodeError (exit
    // 1) at the line printing it, after compiling what came before; encodable non-ASCII paths
    // are printed in that codec, not in UTF-8.
    let io =
        |args: &[&str], encoding: &str| Step::new(args).fresh().env("PYTHONIOENCODING", encoding);
    case(
        "narrow_stdout",
        wide_names,
        vec![
            io(&["proj"], "latin-1"),
            io(&["proj"], "ascii"),
            io(&["proj"], "latin-1:replace"),
            io(&["-q", "proj"], "latin-1"),
            io(&["-q", "proj"], "ascii"),
            io(&["-qq", "proj"], "ascii"),
            io(&["proj/pkg"], "latin-1"),
            io(&["proj/top.py", "proj/pkg/mod.py"], "ascii"),
            // The list was read from stdin before the run was handed to compileall.
            io(&["-i", "-"], "latin-1").stdin(b"proj/top.py\nproj/pkg\n"),
        ],
    )
}

fn parser_overflow() -> Case {
    // 3.8's parser (3.9's with PYTHONOLDPARSER) prints `s_push: parser stack overflow` on
    // stderr; the line belongs to the compile and comes back from the cache.
    let s = Step::new(&["proj"]);
    case(
        "parser_overflow",
        deep_nesting,
        vec![
            s.clone(),
            s.clone().fresh(),
            Step::new(&["-q", "proj"])
                .fresh()
                .env("PYTHONOLDPARSER", "1"),
        ],
    )
}

fn mtime_past_2038() -> Case {
    // 3.8 packs the mtime as a signed 32-bit number in its up-to-date check: struct.error,
    // traceback, exit 1, after compiling what came before; -f skips the check.
    case(
        "mtime_past_2038",
        far_mtimes,
        vec![
            Step::new(&["proj"]),
            Step::new(&["-q", "proj"]),
            Step::new(&["-f", "proj"]).fresh(),
            Step::new(&["proj/c_1960.py", "proj/b_2040.py"]).fresh(),
        ],
    )
}

fn file_lists() -> Case {
    case(
        "file_lists",
        with_lists,
        vec![
            Step::new(&["-i", "list.txt"]),
            Step::new(&["-i", "-"])
                .fresh()
                .stdin(b"proj/plain.py\nproj/pkg/sub\n"),
            Step::new(&["-i", "-", "proj/top.py"]).fresh().stdin(b""),
            Step::new(&["-i", "missing.txt", "proj"]).fresh(),
            Step::new(&["-qq", "-i", "missing.txt", "proj"]).fresh(),
        ],
    )
}

fn symlinked_paths() -> Case {
    let steps = [
        &["proj"][..],
        &["-e", "{root}/proj", "proj"],
        &["-e", "proj", "proj"],
        &["-e", "", "proj"],
        &[
            "-e",
            "{root}/outside",
            "proj/link_out.py",
            "proj/link_in.py",
        ],
    ]
    .iter()
    .map(|args| Step::new(args).fresh())
    .collect();
    case("symlinked_paths", symlinks, steps)
}

fn hardlink_dupes() -> Case {
    let s = Step::new(&["--hardlink-dupes", "-o", "0", "-o", "1", "-o", "2", "proj"]);
    case(
        "hardlink_dupes",
        package,
        vec![
            s.clone(),
            s,
            Step::new(&["--hardlink-dupes", "-f", "-o", "1", "-o", "2", "proj"]),
            Step::new(&["--hardlink-dupes", "proj"]).fresh(),
            Step::new(&["--hardlink-dupes", "-o", "1", "proj"]).fresh(),
        ],
    )
}

/// An interpreter pycache does not know is handed to its own compileall, whose output and files
/// the client must then reproduce exactly (3.15 prints "No cache tag ...", older ones raise).
fn handed_over(name: &'static str, tree: support::case::TreeFn) -> Case {
    let env = |s: Step| {
        s.env("PYTHONPATH", "{root}/site")
            .env("PYTHONDONTWRITEBYTECODE", "1")
    };
    case(
        name,
        tree,
        vec![
            env(Step::new(&["proj"])),
            env(Step::new(&["-q", "-b", "proj"])),
            env(Step::new(&["-j", "2", "proj"]).fresh().unordered()),
        ],
    )
}

fn no_cache_tag() -> Case {
    handed_over("no_cache_tag", no_cache_tag_tree)
}

fn newer_than_known() -> Case {
    handed_over("newer_than_known", newer_version)
}

fn obstacles_in_the_way() -> Case {
    let s = Step::new(&["proj"]);
    case("obstacles_in_the_way", obstacles, vec![s.clone(), s])
}

macro_rules! cases {
    ($($name:ident => $scope:ident,)*) => {
        /// One test per case, on the client.
        mod parity {
            $(
                #[test]
                fn $name() {
                    $crate::support::check(&super::$name(), $crate::support::Scope::$scope);
                }
            )*
        }

        /// Every case with its scope.
        const ALL_CASES: &[(fn() -> Case, Scope)] = &[$(($name as fn() -> Case, Scope::$scope)),*];
    };
}

cases! {
    plain => Core,
    plain_dot_cwd => Core,
    plain_absolute => Core,
    deep_default => Core,
    recursion_limits => Core,
    force => Core,
    quiet => Core,
    broken_files => Core,
    compile_warnings => Core,
    jobs => Core,
    jobs_broken => Full,
    optimize_levels => Core,
    invalidation_modes => Core,
    source_date_epoch => Core,
    pycache_prefix => Core,
    file_arguments => Core,
    missing_paths => Core,
    up_to_date_rules => Core,
    warm_cache => Core,
    cached_failures => Core,
    usage_errors => Full,
    no_path_short_circuit => Core,
    no_path_hermetic => Full,
    legacy => Full,
    destdir => Full,
    strip_and_prepend => Full,
    destdir_with_strip => Full,
    exclude_regex => Full,
    exclude_python_re => Core,
    narrow_stdout => Core,
    parser_overflow => Core,
    mtime_past_2038 => Core,
    file_lists => Full,
    symlinked_paths => Full,
    hardlink_dupes => Full,
    obstacles_in_the_way => Full,
    no_cache_tag => Core,
    newer_than_known => Core,
}

/// The target given with `--python PATH` instead of `PYCACHE_PYTHON`.
#[test]
fn python_flag_form() {
    check_with(&plain(), Scope::Core, Tool::ClientFlag);
    check(&plain_dot_cwd(), Scope::Full);
}

fn self_check(pick: impl Fn(&support::Interp) -> bool) {
    let mut problems = Vec::new();
    let mut runs = 0;
    for interp in interpreters().iter().filter(|i| pick(i)) {
        for (make, _) in ALL_CASES {
            let case = make();
            runs += 1;
            problems.extend(run_case(&case, interp, Tool::Compileall).problems);
        }
    }
    assert!(runs > 0, "the self-check ran nothing");
    assert!(
        problems.is_empty(),
        "compileall against itself must compare equal; the harness is wrong:\n{}",
        problems.join("\n")
    );
}

/// compileall against compileall on the default python3: proves the harness.
#[test]
fn harness_self_check_default() {
    self_check(|i| i.is_default);
}

/// compileall against compileall on the oldest CPython, where bodies depend on the hash seed:
/// proves the code-equality fallback.
#[test]
fn harness_self_check_oldest() {
    let oldest = interpreters()
        .iter()
        .filter(|i| i.implementation == "cpython")
        .map(|i| i.version)
        .min()
        .expect("no CPython found");
    self_check(|i| i.implementation == "cpython" && i.version == oldest);
}

/// A change made to a snapshot to check that the comparison notices it.
type Mutation<'a> = Box<dyn Fn(&mut support::compare::Snapshot) + 'a>;

/// The comparison must see real differences: a changed .pyc body, header, mode, an extra file,
/// a missing file, and different output.
#[test]
fn harness_detects_differences() {
    use support::compare::{compare_outcomes, compare_trees, snapshot, Kind, OutputRules};
    let pick = |want_bytes: bool| {
        interpreters()
            .iter()
            .find(|i| i.bytes_must_match() == want_bytes)
    };
    let mut checked = 0;
    for interp in [pick(true), pick(false)].into_iter().flatten() {
        checked += 1;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("work");
        package(&mut support::Tree::new(&root), interp);
        let outcome = support::run::Invocation {
            interp,
            tool: Tool::Compileall,
            args: vec!["-q".into(), "proj".into()],
            cwd: root.clone(),
            env: Vec::new(),
            stdin: None,
            cache_dir: dir.path().join("cache"),
        }
        .run();
        assert_eq!(outcome.status, Some(0), "{outcome:?}");
        let expected = snapshot(&root);
        let pyc = format!("proj/__pycache__/top.{}.pyc", interp.cache_tag);
        let body_of =
            |snap: &support::compare::Snapshot| match &snap[std::path::Path::new(&pyc)].kind {
                Kind::File(bytes) => bytes.clone(),
                other => panic!("{pyc} is {other:?}"),
            };
        let mutations: Vec<(&str, Mutation)> = vec![
            (
                "pyc body",
                Box::new(|s| {
                    // A different constant: neither byte-identical nor code-equal.
                    let mut bytes = body_of(s);
                    let at = bytes
                        .windows(2)
                        .position(|w| w == b"no")
                        .expect("the 'no' constant");
                    bytes[at] = b'N';
                    s.get_mut(std::path::Path::new(&pyc)).unwrap().kind = Kind::File(bytes);
                }),
            ),
            (
                "pyc header",
                Box::new(|s| {
                    let mut bytes = body_of(s);
                    bytes[8] ^= 1;
                    s.get_mut(std::path::Path::new(&pyc)).unwrap().kind = Kind::File(bytes);
                }),
            ),
            (
                "mode of",
                Box::new(|s| s.get_mut(std::path::Path::new(&pyc)).unwrap().mode ^= 0o020),
            ),
            (
                "missing",
                Box::new(|s| {
                    s.remove(std::path::Path::new(&pyc));
                }),
            ),
            (
                "extra",
                Box::new(|s| {
                    let node = s[std::path::Path::new(&pyc)].clone();
                    s.insert("proj/extra.pyc".into(), node);
                }),
            ),
        ];
        for (what, mutate) in mutations {
            let mut actual = expected.clone();
            mutate(&mut actual);
            let mut problems = Vec::new();
            compare_trees(interp, &expected, &actual, dir.path(), &mut problems);
            assert!(
                problems.iter().any(|p| p.contains(what)),
                "{}: a changed {what} went unnoticed: {problems:?}",
                interp.label()
            );
        }
        let mut problems = Vec::new();
        let mut other = outcome.clone();
        other.stdout.extend_from_slice(b"extra line\n");
        other.status = Some(1);
        let rules = OutputRules {
            replace: Vec::new(),
            unordered: false,
        };
        compare_outcomes(&outcome, &other, &rules, &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
    assert!(checked > 0);
}
