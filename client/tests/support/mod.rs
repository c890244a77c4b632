//! Shared helpers of the parity suites: interpreter discovery, tree generation, running both
//! tools, and comparing what they printed and wrote.

// Each test binary uses a different part of these helpers.
#![allow(dead_code, unused_imports)]

pub mod case;
pub mod compare;
pub mod interp;
pub mod project;
pub mod run;
pub mod tree;
pub mod trees;

pub use case::{run_case, Case, Step};
pub use interp::{full_matrix, interpreters, Interp};
pub use run::Tool;
pub use tree::Tree;

/// Cases that test the host operating system rather than compileall, left out on Pyodide, whose
/// file system is Emscripten's: `obstacles_in_the_way` (errno numbers are Emscripten's, e.g.
/// ENOTDIR is 54, and it applies permission bits to root) and `no_path_hermetic` (the stdlib's
/// `sys.path` entries exist only inside the WebAssembly machine, so no host program lists them).
const HOST_ONLY: &[&str] = &["obstacles_in_the_way", "no_path_hermetic"];

/// Which interpreters a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every interpreter found.
    Core,
    /// Only the full-matrix interpreters (`interp::full_matrix`).
    Full,
}

/// Runs `case` on the interpreters of `scope` with `tool` against compileall, prints one line per
/// interpreter, and fails with every difference found.
pub fn check_with(case: &Case, scope: Scope, tool: Tool) {
    let mut problems = Vec::new();
    let mut ran = 0;
    for interp in interpreters() {
        if scope == Scope::Full && !full_matrix(interp) {
            continue;
        }
        if interp.pyodide && HOST_ONLY.contains(&case.name) {
            continue;
        }
        ran += 1;
        let report = run_case(case, interp, tool);
        println!(
            "parity {} {} ({:?}): {} problem(s); pyc {} compared, {} byte-identical, {} code-equal only, {} different",
            case.name,
            interp.label(),
            tool,
            report.problems.len(),
            report.pyc.files,
            report.pyc.byte_identical,
            report.pyc.code_equal,
            report.pyc.different
        );
        problems.extend(report.problems);
    }
    assert!(ran > 0, "case {} ran on no interpreter", case.name);
    assert!(
        problems.is_empty(),
        "case {}: {} difference(s) from python -m compileall:\n{}",
        case.name,
        problems.len(),
        problems.join("\n")
    );
}

/// `check_with` the client, target given by `PYCACHE_PYTHON`.
pub fn check(case: &Case, scope: Scope) {
    check_with(case, scope, Tool::Client);
}
