//! Comparing what two runs left behind: output streams, exit status, and the whole tree.
//!
//! .pyc files: the 16-byte header must match exactly. Bodies must be byte-identical on CPython
//! 3.11+; elsewhere (3.8–3.10, PyPy) a body that differs must unmarshal, with the same
//! interpreter, to an equal code object with the same `co_filename` everywhere (DESIGN.md §6).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use regex::bytes::Regex;

use super::interp::Interp;
use super::run::{python, Outcome};

/// What a path in a tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file and its bytes.
    File(Vec<u8>),
    /// A symlink and its target, as stored.
    Symlink(PathBuf),
    /// A fifo, socket or device.
    Special,
}

/// One path of a tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its kind (and content).
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Hard link count.
    pub nlink: u64,
    /// Device and inode, to group hard links.
    pub inode: (u64, u64),
}

/// Every path under a root, relative to it, without following symlinks.
pub type Snapshot = BTreeMap<PathBuf, Node>;

/// Reads the whole tree under `root`.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut nodes = Snapshot::new();
    walk(root, Path::new(""), &mut nodes);
    nodes
}

fn walk(root: &Path, rel: &Path, nodes: &mut Snapshot) {
    let Ok(entries) = fs::read_dir(root.join(rel)) else {
        return;
    };
    for entry in entries.flatten() {
        let rel = rel.join(entry.file_name());
        let path = root.join(&rel);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let kind = if meta.file_type().is_symlink() {
            Kind::Symlink(fs::read_link(&path).unwrap())
        } else if meta.is_dir() {
            Kind::Dir
        } else if meta.is_file() {
            Kind::File(fs::read(&path).unwrap_or_default())
        } else {
            let ft = meta.file_type();
            assert!(ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device());
            Kind::Special
        };
        let is_dir = kind == Kind::Dir;
        nodes.insert(
            rel.clone(),
            Node {
                kind,
                mode: meta.mode() & 0o7777,
                nlink: meta.nlink(),
                inode: (meta.dev(), meta.ino()),
            },
        );
        if is_dir {
            walk(root, &rel, nodes);
        }
    }
}

/// How the .pyc files of two trees compared.
#[derive(Debug, Default, Clone)]
pub struct PycStats {
    /// .pyc files present in both trees.
    pub files: usize,
    /// Byte-identical.
    pub byte_identical: usize,
    /// Header identical, body different but the code objects equal.
    pub code_equal: usize,
    /// Neither: a real difference.
    pub different: usize,
    /// Paths whose bodies were only code-equal.
    pub code_equal_paths: Vec<PathBuf>,
}

fn is_pyc(path: &Path) -> bool {
    path.as_os_str().as_bytes().ends_with(b".pyc")
}

const CODE_EQUAL: &str = r#"
import marshal, sys
def walk(code, acc):
    acc.append((code.co_name, code.co_filename, code.co_firstlineno))
    for const in code.co_consts:
        if hasattr(const, 'co_code'):
            walk(const, acc)
    return acc
folder, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    with open('%s/%d.a' % (folder, i), 'rb') as f:
        a = f.read()
    with open('%s/%d.b' % (folder, i), 'rb') as f:
        b = f.read()
    try:
        ca, cb = marshal.loads(a[16:]), marshal.loads(b[16:])
        same = ca == cb and walk(ca, []) == walk(cb, [])
    except Exception:
        same = False
    print(1 if same else 0)
"#;

/// Asks `interp` which `(expected, actual)` .pyc pairs hold equal code objects.
pub fn code_equal(interp: &Interp, pairs: &[(&[u8], &[u8])], scratch: &Path) -> Vec<bool> {
    if pairs.is_empty() {
        return Vec::new();
    }
    let folder = tempfile::tempdir_in(scratch).unwrap();
    for (i, (a, b)) in pairs.iter().enumerate() {
        fs::write(folder.path().join(format!("{i}.a")), a).unwrap();
        fs::write(folder.path().join(format!("{i}.b")), b).unwrap();
    }
    let count = PathBuf::from(pairs.len().to_string());
    let out = python(interp, CODE_EQUAL, &[folder.path(), &count]);
    let verdicts: Vec<bool> = out.lines().map(|l| l == "1").collect();
    assert_eq!(verdicts.len(), pairs.len(), "code-equality checker output");
    verdicts
}

/// Compares two trees; every difference goes to `problems`, described for a human.
pub fn compare_trees(
    interp: &Interp,
    expected: &Snapshot,
    actual: &Snapshot,
    scratch: &Path,
    problems: &mut Vec<String>,
) -> PycStats {
    let mut stats = PycStats::default();
    let mut body_pairs: Vec<(&PathBuf, &[u8], &[u8])> = Vec::new();
    for (path, want) in expected {
        let Some(got) = actual.get(path) else {
            problems.push(format!("missing (compileall wrote it): {}", path.display()));
            continue;
        };
        if want.mode != got.mode {
            problems.push(format!(
                "mode of {}: compileall {:o}, client {:o}",
                path.display(),
                want.mode,
                got.mode
            ));
        }
        match (&want.kind, &got.kind) {
            (Kind::File(a), Kind::File(b)) if is_pyc(path) => {
                stats.files += 1;
                if a == b {
                    stats.byte_identical += 1;
                } else if a.len() < 16 || b.len() < 16 || a[..16] != b[..16] {
                    stats.different += 1;
                    problems.push(format!(
                        "pyc header of {}: compileall {}, client {}",
                        path.display(),
                        hex16(a),
                        hex16(b)
                    ));
                } else if interp.bytes_must_match() {
                    stats.different += 1;
                    problems.push(format!(
                        "pyc body of {} differs ({} vs {} bytes; {} must be byte-identical)",
                        path.display(),
                        a.len(),
                        b.len(),
                        interp.label()
                    ));
                } else {
                    body_pairs.push((path, a, b));
                }
            }
            (Kind::File(a), Kind::File(b)) if a != b => problems.push(format!(
                "content of {}: compileall {:?}, client {:?}",
                path.display(),
                String::from_utf8_lossy(&a[..a.len().min(200)]),
                String::from_utf8_lossy(&b[..b.len().min(200)])
            )),
            (a, b) if std::mem::discriminant(a) != std::mem::discriminant(b) => {
                problems.push(format!(
                    "kind of {}: compileall {}, client {}",
                    path.display(),
                    kind_name(a),
                    kind_name(b)
                ))
            }
            (Kind::Symlink(a), Kind::Symlink(b)) if a != b => problems.push(format!(
                "symlink {}: compileall -> {}, client -> {}",
                path.display(),
                a.display(),
                b.display()
            )),
            _ => {}
        }
        if matches!(want.kind, Kind::File(_)) && matches!(got.kind, Kind::File(_)) {
            let (want_links, got_links) = (links(expected, path), links(actual, path));
            if want.nlink != got.nlink || want_links != got_links {
                problems.push(format!(
                    "hard links of {}: compileall nlink {} shared with {:?}, client nlink {} shared with {:?}",
                    path.display(),
                    want.nlink,
                    want_links,
                    got.nlink,
                    got_links
                ));
            }
        }
    }
    for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
        problems.push(format!(
            "extra (compileall did not write it): {}",
            path.display()
        ));
    }
    let pairs: Vec<(&[u8], &[u8])> = body_pairs.iter().map(|(_, a, b)| (*a, *b)).collect();
    for ((path, _, _), same) in body_pairs.iter().zip(code_equal(interp, &pairs, scratch)) {
        if same {
            stats.code_equal += 1;
            stats.code_equal_paths.push((*path).clone());
        } else {
            stats.different += 1;
            problems.push(format!(
                "pyc body of {} differs and the code objects are not equal",
                path.display()
            ));
        }
    }
    stats
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Dir => "directory",
        Kind::File(_) => "file",
        Kind::Symlink(_) => "symlink",
        Kind::Special => "special file",
    }
}

fn hex16(bytes: &[u8]) -> String {
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn links(snapshot: &Snapshot, path: &Path) -> Vec<PathBuf> {
    let inode = snapshot[path].inode;
    snapshot
        .iter()
        .filter(|(p, n)| n.inode == inode && p.as_path() != path)
        .map(|(p, _)| p.clone())
        .collect()
}

/// How output streams are normalised before comparing.
pub struct OutputRules<'a> {
    /// Paths replaced by a placeholder (the run's temporary root, the client's cache dir).
    pub replace: Vec<(&'a Path, &'a str)>,
    /// Compare sorted lines: compileall `-j N>1` prints in a nondeterministic order.
    pub unordered: bool,
}

/// Applies the rules: placeholders, py_compile's random temporary-file suffix
/// (`x.pyc.<id(path)>`), and, when the order is not deterministic, the line of
/// `Future.result()` in a traceback and sorting.
pub fn normalize(bytes: &[u8], rules: &OutputRules) -> Vec<u8> {
    let mut text = bytes.to_vec();
    for (path, placeholder) in &rules.replace {
        text = replace_all(&text, path.as_os_str().as_bytes(), placeholder.as_bytes());
    }
    let tmp_suffix = Regex::new(r"\.pyc\.\d+").unwrap();
    let mut text = tmp_suffix
        .replace_all(&text, &b".pyc.<ID>"[..])
        .into_owned();
    if rules.unordered {
        // `Future.result()` returns from one line when the future is done before it is asked
        // and from another after waiting: a race inside compileall's own process pool.
        let future_result =
            Regex::new(r#"(concurrent/futures/_base\.py", line )\d+(, in result)"#).unwrap();
        text = future_result
            .replace_all(&text, &b"${1}<N>${2}"[..])
            .into_owned();
        let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        lines.sort();
        text = lines.join(&b'\n');
    }
    text
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Compares exit status and both streams; each difference goes to `problems`.
pub fn compare_outcomes(
    expected: &Outcome,
    actual: &Outcome,
    rules: &OutputRules,
    problems: &mut Vec<String>,
) {
    if actual.timed_out {
        problems.push("client hung: killed after the timeout".to_string());
    }
    if expected.status != actual.status {
        problems.push(format!(
            "exit status: compileall {:?}, client {:?}",
            expected.status, actual.status
        ));
    }
    for (name, want, got) in [
        ("stdout", &expected.stdout, &actual.stdout),
        ("stderr", &expected.stderr, &actual.stderr),
    ] {
        let (want, got) = (normalize(want, rules), normalize(got, rules));
        if want != got {
            problems.push(describe_text_diff(name, &want, &got));
        }
    }
}

fn describe_text_diff(name: &str, want: &[u8], got: &[u8]) -> String {
    let want_text = String::from_utf8_lossy(want);
    let got_text = String::from_utf8_lossy(got);
    let first = want_text
        .lines()
        .zip(got_text.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| want_text.lines().count().min(got_text.lines().count()));
    let mut out = format!("{name} differs (first at line {}):\n", first + 1);
    let _ = writeln!(out, "  --- compileall:\n{}", indent(&want_text));
    let _ = write!(out, "  --- client:\n{}", indent(&got_text));
    out
}

fn indent(text: &str) -> String {
    const LIMIT: usize = 3000;
    let cut: String = text.chars().take(LIMIT).collect();
    let mut out: String = cut.lines().map(|l| format!("    |{l}\n")).collect();
    if text.len() > LIMIT {
        out.push_str("    |...(truncated)\n");
    }
    out
}
