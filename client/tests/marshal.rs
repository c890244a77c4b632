//! The marshal reader and writer against real .pyc files and bad input.
//!
//! - Every .pyc that each CPython 3.8+ found installed in its own standard library reads and
//!   writes back byte for byte.
//! - Relocation of real bodies to random paths and back gives the original bytes, with the
//!   string type code CPython picks for the new path.
//! - Truncated, mutated and random streams, bad references, deep nesting and huge lengths give an
//!   error or a tree that writes back the same bytes: never a panic, never a large allocation.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use pycache_client::marshal::{
    self, read, relocate, to_bytes, Format, MarshalError, NotRelocatable, Object, StrKind, Value,
    MAX_DEPTH,
};

/// A real .pyc body with what it was compiled for.
struct Sample {
    version: (u32, u32),
    body: Vec<u8>,
    dfile: String,
}

/// The native CPythons: their installed stdlib pycs are the corpus. (The Pyodide 3.14/3.15 test
/// commands carry sources only; relocation is not enabled for them.)
fn cpythons() -> impl Iterator<Item = &'static support::Interp> {
    support::interpreters()
        .iter()
        .filter(|i| i.implementation == "cpython" && i.version >= (3, 8, 0) && !i.pyodide)
}

fn format_of(interp: &support::Interp) -> Format {
    Format::for_python(interp.version.0, interp.version.1).expect("a supported version")
}

/// Every .pyc in the `__pycache__` directories of `stdlib`, `site-packages` left out.
fn installed_pycs(stdlib: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![stdlib.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && path.file_name() != Some("site-packages".as_ref()) {
                stack.push(path);
            } else if kind.is_file()
                && path.extension() == Some("pyc".as_ref())
                && dir.file_name() == Some("__pycache__".as_ref())
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The `co_filename` string: the first one written in full, in stream order (the module's
/// own field is often a reference to it, as nested code objects come first).
fn top_filename<'a>(tree: &Object<'a>) -> &'a [u8] {
    fn find<'a>(object: &Object<'a>) -> Option<&'a [u8]> {
        match &object.value {
            Value::Code(code) => code.objects.iter().enumerate().find_map(|(i, field)| {
                match (&field.value, i == code.layout.filename_index()) {
                    (Value::Str(s), true) => Some(s.data),
                    (_, false) => find(field),
                    _ => None,
                }
            }),
            Value::Tuple { items, .. } => items.iter().find_map(find),
            _ => None,
        }
    }
    find(tree).expect("a co_filename string")
}

/// Deepest nesting of a tree.
fn depth(object: &Object<'_>) -> usize {
    1 + match &object.value {
        Value::Code(code) => code
            .objects
            .iter()
            .chain(&code.tail)
            .map(depth)
            .max()
            .unwrap_or(0),
        Value::Tuple { items, .. }
        | Value::List(items)
        | Value::Set(items)
        | Value::FrozenSet(items) => items.iter().map(depth).max().unwrap_or(0),
        Value::Dict(pairs) => pairs
            .iter()
            .map(|(k, v)| depth(k).max(depth(v)))
            .max()
            .unwrap_or(0),
        Value::Slice(parts) => parts.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Up to 40 bodies per interpreter, spread over its standard library.
fn samples() -> &'static [Sample] {
    static SAMPLES: OnceLock<Vec<Sample>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let mut samples = Vec::new();
        for interp in cpythons() {
            let pycs = installed_pycs(&interp.stdlib);
            let step = (pycs.len() / 40).max(1);
            for path in pycs.iter().step_by(step) {
                let bytes = std::fs::read(path).unwrap();
                let body = bytes[16..].to_vec();
                let tree = read(&body, format_of(interp)).unwrap();
                let dfile = String::from_utf8(top_filename(&tree).to_vec()).unwrap();
                samples.push(Sample {
                    version: (interp.version.0, interp.version.1),
                    body,
                    dfile,
                });
            }
        }
        assert!(!samples.is_empty(), "no installed .pyc found");
        samples
    })
}

#[test]
fn every_installed_stdlib_pyc_round_trips() {
    let mut seen = 0;
    for interp in cpythons() {
        let format = format_of(interp);
        let pycs = installed_pycs(&interp.stdlib);
        let mut failures = Vec::new();
        let mut deepest = 0;
        let (mut total, mut spent) = (0, std::time::Duration::ZERO);
        for path in &pycs {
            let bytes = std::fs::read(path).unwrap();
            let body = &bytes[16..];
            total += body.len();
            let started = std::time::Instant::now();
            let tree = read(body, format);
            let written = tree.as_ref().map(|t| to_bytes(t).unwrap());
            spent += started.elapsed();
            match tree {
                Ok(tree) if written.as_deref() == Ok(body) => deepest = deepest.max(depth(&tree)),
                Ok(_) => failures.push(format!("{}: written back differently", path.display())),
                Err(e) => failures.push(format!("{}: {e}", path.display())),
            }
        }
        println!(
            "marshal round trip {}: {} installed .pyc, {} failed, deepest nesting {deepest}, \
             read+write {:.0} MB/s",
            interp.label(),
            pycs.len(),
            failures.len(),
            total as f64 / spent.as_secs_f64() / 1e6
        );
        assert!(
            pycs.len() > 1000,
            "{}: only {} .pyc installed",
            interp.label(),
            pycs.len()
        );
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        seen += 1;
    }
    assert!(seen > 0, "no CPython 3.8+ found");
}

/// A path as compileall could record it: no NUL, at least two characters.
fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\u{0}]{2,40}",
        "/[a-zA-Z0-9_./-]{1,300}\\.py",
        "[a-z]{1,8}/[\u{e0}-\u{ff}\u{4e00}-\u{4e20}]{1,20}/x\\.py",
    ]
}

/// The type code of the filename string in a body.
fn filename_kind(body: &[u8], version: (u32, u32)) -> StrKind {
    let path =
        top_filename(&read(body, Format::for_python(version.0, version.1).unwrap()).unwrap());
    // The filename string is the one whose bytes start right after its length; find its code.
    let at = body.windows(path.len()).position(|w| w == path).unwrap();
    let kind = |code: u8| match code & 0x7f {
        b'z' => StrKind::ShortAscii,
        b'Z' => StrKind::ShortAsciiInterned,
        b'a' => StrKind::Ascii,
        b'A' => StrKind::AsciiInterned,
        b'u' => StrKind::Unicode,
        b't' => StrKind::Interned,
        other => panic!("type code {other:#x} before the filename"),
    };
    if at >= 2 && matches!(body[at - 2] & 0x7f, b'z' | b'Z') && body[at - 1] as usize == path.len()
    {
        kind(body[at - 2])
    } else {
        kind(body[at - 5])
    }
}

fn expected_kind(path: &str, version: (u32, u32)) -> StrKind {
    StrKind::for_content(path.as_bytes(), version.1 >= 13)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn relocation_to_any_path_and_back_is_exact(pick in any::<prop::sample::Index>(), path in any_path()) {
        let sample = pick.get(samples());
        prop_assume!(path != sample.dfile);
        match relocate(&sample.body, sample.version, &sample.dfile, &path) {
            Ok(moved) => {
                let format = Format::for_python(sample.version.0, sample.version.1).unwrap();
                let tree = read(&moved, format).unwrap();
                prop_assert_eq!(top_filename(&tree), path.as_bytes());
                prop_assert_eq!(filename_kind(&moved, sample.version), expected_kind(&path, sample.version));
                let back = relocate(&moved, sample.version, &path, &sample.dfile).unwrap();
                prop_assert!(back == sample.body, "relocating back changed the body");
            }
            // A random path can only be refused for equalling a string constant.
            Err(e) => prop_assert_eq!(e, NotRelocatable::PathInConstants),
        }
    }

    #[test]
    fn truncated_bodies_are_errors(pick in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
        let sample = pick.get(samples());
        let cut = cut.index(sample.body.len());
        let format = Format::for_python(sample.version.0, sample.version.1).unwrap();
        prop_assert!(read(&sample.body[..cut], format).is_err());
        prop_assert!(relocate(&sample.body[..cut], sample.version, &sample.dfile, "/x/y.py").is_err());
    }

    #[test]
    fn mutated_bodies_are_errors_or_round_trip(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let sample = pick.get(samples());
        let mut body = sample.body.clone();
        for (at, byte, op) in edits {
            let at = at.index(body.len().max(1));
            match op {
                0 if at < body.len() => body[at] = byte,
                1 => body.insert(at.min(body.len()), byte),
                _ if at < body.len() => { body.remove(at); }
                _ => {}
            }
        }
        let format = Format::for_python(sample.version.0, sample.version.1).unwrap();
        if let Ok(tree) = read(&body, format) {
            prop_assert!(to_bytes(&tree).unwrap() == body, "a read tree wrote back other bytes");
        }
        let _ = relocate(&body, sample.version, &sample.dfile, "/elsewhere/module.py");
    }

    #[test]
    fn random_streams_are_errors_or_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..512), minor in 8u32..16) {
        let format = Format::for_python(3, minor).unwrap();
        if let Ok(tree) = read(&bytes, format) {
            prop_assert!(to_bytes(&tree).unwrap() == bytes);
        }
        let _ = relocate(&bytes, (3, minor), "/a/b.py", "/c/d.py");
    }
}

fn f311() -> Format {
    Format::for_python(3, 11).unwrap()
}

#[test]
fn nesting_is_bounded() {
    // Run where the stack is the default size of a spawned thread, as the client's are.
    std::thread::spawn(|| {
        let nested = |depth: usize| {
            let mut s = b")\x01".repeat(depth - 1);
            s.push(b'N');
            s
        };
        let ok = nested(MAX_DEPTH);
        let tree = read(&ok, f311()).expect("CPython's own depth limit is accepted");
        assert_eq!(to_bytes(&tree).unwrap(), ok);
        assert!(matches!(
            read(&nested(MAX_DEPTH + 1), f311()),
            Err(MarshalError::TooDeep { .. })
        ));
        assert!(matches!(
            read(&nested(1_000_000), f311()),
            Err(MarshalError::TooDeep { .. })
        ));
    })
    .join()
    .unwrap();
}

#[test]
fn huge_lengths_are_refused_before_allocating() {
    for code in [b's', b'a', b'u', b't', b'(', b'[', b'<', b'>'] {
        let mut s = vec![code];
        s.extend_from_slice(&i32::MAX.to_le_bytes());
        s.extend_from_slice(b"abc");
        assert!(
            matches!(read(&s, f311()), Err(MarshalError::Truncated { .. })),
            "type {}",
            code as char
        );
        let mut s = vec![code];
        s.extend_from_slice(&(-1i32).to_le_bytes());
        assert!(matches!(
            read(&s, f311()),
            Err(MarshalError::BadLength { .. })
        ));
    }
    let mut long = vec![b'l'];
    long.extend_from_slice(&i32::MAX.to_le_bytes());
    assert!(matches!(
        read(&long, f311()),
        Err(MarshalError::Truncated { .. })
    ));
    let mut long = vec![b'l'];
    long.extend_from_slice(&i32::MIN.to_le_bytes());
    assert!(matches!(
        read(&long, f311()),
        Err(MarshalError::BadLength { .. })
    ));
    // A dict that never ends.
    assert!(matches!(
        read(b"{NNNN", f311()),
        Err(MarshalError::Truncated { .. })
    ));
}

#[test]
fn bad_references_are_refused() {
    // Nothing in the table yet.
    assert!(matches!(
        read(b"r\x00\x00\x00\x00", f311()),
        Err(MarshalError::BadRef { index: 0, .. })
    ));
    // A flagged string is slot 0; slot 1 does not exist.
    let mut s = b")\x02\xfa\x01xr".to_vec();
    s.extend_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        read(&s, f311()),
        Err(MarshalError::BadRef { index: 1, .. })
    ));
    let mut s = b")\x02\xfa\x01xr".to_vec();
    s.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(to_bytes(&read(&s, f311()).unwrap()).unwrap(), s);
    // A flag on a singleton takes no slot.
    let mut s = b")\x02\xcer".to_vec();
    s.extend_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        read(&s, f311()),
        Err(MarshalError::BadRef { index: 0, .. })
    ));
    // A frozenset is registered only once complete: a reference to it from inside is invalid.
    let mut s = b"\xbe\x01\x00\x00\x00r".to_vec();
    s.extend_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        read(&s, f311()),
        Err(MarshalError::BadRef { index: 0, .. })
    ));
}

#[test]
fn other_malformed_streams_are_errors() {
    assert!(matches!(
        read(b"", f311()),
        Err(MarshalError::Truncated { offset: 0 })
    ));
    assert!(matches!(
        read(b"?", f311()),
        Err(MarshalError::UnknownType { code: b'?', .. })
    ));
    // Slices are marshal version 5 (3.14); 3.11 has none.
    assert!(matches!(
        read(b":NNN", f311()),
        Err(MarshalError::UnknownType { code: b':', .. })
    ));
    let f314 = Format::for_python(3, 14).unwrap();
    assert_eq!(to_bytes(&read(b":NNN", f314).unwrap()).unwrap(), b":NNN");
    assert!(matches!(
        read(b")\x010", f311()),
        Err(MarshalError::Null { .. })
    ));
    assert!(matches!(
        read(b"NN", f311()),
        Err(MarshalError::TrailingBytes { extra: 1 })
    ));
    // 3.15's frozendict is not known: refused, not guessed.
    let f315 = Format::for_python(3, 15).unwrap();
    assert!(read(b"}0", f315).is_err());
    assert_eq!(marshal::Format::for_python(3, 7), None);
}
