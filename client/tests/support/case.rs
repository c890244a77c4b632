//! A parity case: a generated tree and a sequence of compileall command lines, run once with
//! `python -m compileall` and once with the tool under test, then compared step by step.
//!
//! Both runs happen at the same absolute path (`<tmp>/work`, rebuilt from scratch in between), so
//! absolute paths in arguments, output and `co_filename` are the same for both and need no
//! rewriting. Trees are generated twice rather than copied: the builder is deterministic
//! (fixed mtimes, modes, link targets), which is what a copy preserving mtimes would give.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::compare::{compare_outcomes, compare_trees, snapshot, OutputRules, PycStats, Snapshot};
use super::interp::Interp;
use super::run::{Invocation, Outcome, Tool};
use super::tree::Tree;

/// Writes a case's tree; it may depend on the interpreter (cache tag in file names).
pub type TreeFn = fn(&mut Tree, &Interp);

/// What happens to the tree before a step runs.
#[derive(Clone, Copy)]
pub enum Prep {
    /// Nothing: the step sees what the previous one left.
    Keep,
    /// The tree is deleted and generated again (a fresh checkout; the client's cache stays).
    Fresh,
    /// A custom change, given the root.
    Change(fn(&Path, &Interp)),
}

/// One command line of a case. `{root}` in arguments and environment values stands for the
/// absolute path of the tree.
#[derive(Clone)]
pub struct Step {
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    cwd: String,
    prep: Prep,
    unordered: bool,
}

impl Step {
    /// A step running `compileall ARGS` in the tree's root.
    pub fn new(args: &[&str]) -> Step {
        Step {
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            stdin: None,
            cwd: String::new(),
            prep: Prep::Keep,
            unordered: false,
        }
    }

    /// Sets an environment variable for both tools.
    pub fn env(mut self, key: &str, value: &str) -> Step {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Feeds `bytes` on stdin.
    pub fn stdin(mut self, bytes: &[u8]) -> Step {
        self.stdin = Some(bytes.to_vec());
        self
    }

    /// Runs in `rel` under the root instead of the root.
    pub fn cwd(mut self, rel: &str) -> Step {
        self.cwd = rel.to_string();
        self
    }

    /// Regenerates the tree before running (the cache of the client survives).
    pub fn fresh(mut self) -> Step {
        self.prep = Prep::Fresh;
        self
    }

    /// Changes the tree before running.
    pub fn change(mut self, change: fn(&Path, &Interp)) -> Step {
        self.prep = Prep::Change(change);
        self
    }

    /// Output order is not deterministic (compileall -j N>1): compare sorted lines.
    pub fn unordered(mut self) -> Step {
        self.unordered = true;
        self
    }

    fn describe(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.env {
            out.push_str(&format!("{k}={v} "));
        }
        out.push_str("compileall");
        for a in &self.args {
            out.push(' ');
            out.push_str(a);
        }
        if !self.cwd.is_empty() {
            out.push_str(&format!("  (cwd {})", self.cwd));
        }
        if self.stdin.is_some() {
            out.push_str("  (stdin)");
        }
        out
    }
}

/// A named tree and the steps run on it.
pub struct Case {
    /// Shown in reports.
    pub name: &'static str,
    /// The tree.
    pub tree: TreeFn,
    /// The command lines, in order.
    pub steps: Vec<Step>,
}

struct StepRun {
    outcome: Outcome,
    tree: Snapshot,
}

/// The .pyc files that the import system of the compiling processes themselves writes into a
/// `PYTHONPYCACHEPREFIX` inside the root (`prefix/<stdlib path>/...`): compileall's process
/// caches what it imports (argparse, py_compile, ...), the client's workers what they import.
/// Those are side effects of running Python, not results of the compile, so they are left out
/// of the comparison; the stdlib's own bytes are compared by `stdlib_parity.rs`. This also
/// removes the stdlib half of `no_path_hermetic`'s tree (its output is still compared). The
/// directories leading to the stdlib's place in the prefix (`prefix/root/.pyenv/...`) are left
/// out with it: only those imports make them (the client asks its interpreter questions with
/// `-B`, so they write nothing there; compileall's own process does).
fn import_side_effect(path: &Path, interp: &Interp) -> bool {
    let stdlib = interp.stdlib.strip_prefix("/").unwrap_or(&interp.stdlib);
    let cached = Path::new("prefix").join(stdlib);
    path.starts_with(&cached) || (path.starts_with("prefix") && cached.starts_with(path))
}

fn expand(text: &str, root: &Path) -> String {
    text.replace("{root}", &root.to_string_lossy())
}

fn run_all(case: &Case, interp: &Interp, tool: Tool, base: &Path) -> Vec<StepRun> {
    let root = base.join("work");
    let cache_dir = base.join("cache");
    let build = |root: &Path| {
        if root.exists() {
            fs::remove_dir_all(root).unwrap();
        }
        (case.tree)(&mut Tree::new(root), interp);
    };
    build(&root);
    let mut runs = Vec::new();
    for step in &case.steps {
        match step.prep {
            Prep::Keep => {}
            Prep::Fresh => build(&root),
            Prep::Change(change) => change(&root, interp),
        }
        let invocation = Invocation {
            interp,
            tool,
            args: step
                .args
                .iter()
                .map(|a| OsString::from(expand(a, &root)))
                .collect(),
            cwd: root.join(&step.cwd),
            env: step
                .env
                .iter()
                .map(|(k, v)| (k.clone(), OsString::from(expand(v, &root))))
                .collect(),
            stdin: step.stdin.clone(),
            cache_dir: cache_dir.clone(),
        };
        let outcome = invocation.run();
        let mut tree = snapshot(&root);
        tree.retain(|path, _| !import_side_effect(path, interp));
        runs.push(StepRun { outcome, tree });
    }
    fs::remove_dir_all(&root).unwrap();
    runs
}

/// The result of one case on one interpreter.
pub struct CaseReport {
    /// Every difference found, described for a human; empty means parity.
    pub problems: Vec<String>,
    /// .pyc statistics over all steps.
    pub pyc: PycStats,
}

/// Runs `case` with compileall and with `tool`, and compares every step.
pub fn run_case(case: &Case, interp: &Interp, tool: Tool) -> CaseReport {
    let base = tempfile::tempdir().unwrap();
    let base_path: PathBuf = base.path().to_path_buf();
    let expected = run_all(case, interp, Tool::Compileall, &base_path);
    let actual = run_all(case, interp, tool, &base_path);
    let root = base_path.join("work");
    let cache_dir = base_path.join("cache");
    let rules_base = vec![(root.as_path(), "<ROOT>"), (cache_dir.as_path(), "<CACHE>")];
    let mut problems = Vec::new();
    let mut pyc = PycStats::default();
    for (index, ((step, want), got)) in case.steps.iter().zip(&expected).zip(&actual).enumerate() {
        let mut step_problems = Vec::new();
        let rules = OutputRules {
            replace: rules_base.clone(),
            // Without a process pool compileall -j is serial, so its order is fixed again.
            unordered: step.unordered && interp.has_subprocesses(),
        };
        compare_outcomes(&want.outcome, &got.outcome, &rules, &mut step_problems);
        let stats = compare_trees(
            interp,
            &want.tree,
            &got.tree,
            base.path(),
            &mut step_problems,
        );
        pyc.files += stats.files;
        pyc.byte_identical += stats.byte_identical;
        pyc.code_equal += stats.code_equal;
        pyc.different += stats.different;
        const SHOWN: usize = 25;
        let hidden = step_problems.len().saturating_sub(SHOWN);
        if hidden > 0 {
            step_problems.truncate(SHOWN);
            step_problems.push(format!("... and {hidden} more difference(s) in this step"));
        }
        for problem in step_problems {
            problems.push(format!(
                "[{} | {} | step {}: {}]\n  {}",
                interp.label(),
                case.name,
                index + 1,
                step.describe(),
                problem
            ));
        }
    }
    CaseReport { problems, pyc }
}
