//! Relocation: the body a compile at one path gives, rewritten into the body a compile of the
//! same source at another path gives.
//!
//! The only place the path (compileall's `dfile`) reaches the body is `co_filename`: one string
//! object that the module's code object and every nested one share, written once in full with
//! `FLAG_REF` and then as references to it. The rewrite replaces that string's bytes, picks the
//! type code CPython picks for the new string (one-byte or four-byte length, ASCII or UTF-8,
//! interned as the old one was: never on 3.8–3.12, always on 3.13) and keeps every flag and
//! reference, so the reference numbering is unchanged.
//!
//! It refuses whenever it cannot be sure the result is what CPython would write: a stream it
//! cannot read, a version it was not measured on, a `co_filename` that is not the expected path,
//! the filename object also used as something else (a reference to it outside `co_filename`), or
//! any other string equal to the old or the new path (a constant CPython might have shared with
//! the filename at either path).

use super::object::{Object, StrKind, Value};
use super::read::MarshalError;
use super::{read, to_bytes, Format};

/// Why a body cannot be served for another path; the entry then serves only its own path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRelocatable {
    /// Relocation was not measured on this interpreter version.
    #[error("relocation is not proven for Python {0}.{1}")]
    UnprovenVersion(u32, u32),
    /// The body is not a marshal stream this reader accepts.
    #[error("the body cannot be read: {0}")]
    Unparseable(#[from] MarshalError),
    /// The body is not a code object.
    #[error("the body is not a code object")]
    NotCode,
    /// A path CPython cannot record, or one of one character or less (CPython shares such
    /// strings with every other equal one).
    #[error("the path {0:?} cannot be relocated")]
    UnusablePath(String),
    /// A `co_filename` is not the old path.
    #[error("a co_filename is {found:?}, not the path the entry was compiled with")]
    OtherFilename {
        /// What it holds, lossily decoded.
        found: String,
    },
    /// A `co_filename` is not a string, or not written with the type code this version picks
    /// for it (interned or not, length form, ASCII or not).
    #[error("a co_filename is not written the way this Python version writes it")]
    UnexpectedFilename,
    /// The filename object is referenced from outside a `co_filename`, or a `co_filename`
    /// references a string first written elsewhere.
    #[error("the filename object is shared with another object")]
    SharedFilename,
    /// Another string equals the old or the new path.
    #[error("a string constant equals the path")]
    PathInConstants,
}

/// Whether relocation was measured exact on CPython `major.minor`
/// (`client/tests/marshal_relocation.rs`); the key leaves `dfile` out exactly there.
pub fn is_proven(major: u32, minor: u32) -> bool {
    pycache_proto::key::dfile_leaves_key("cpython", (major, minor))
}

/// Whether CPython `major.minor` interns `co_filename` (3.13 does; 3.8–3.12 do not).
fn interns_filename(minor: u32) -> bool {
    minor >= 13
}

/// Rewrites `body` (a .pyc body compiled by CPython `version` with `old_dfile` as the recorded
/// path) into the body the same compile with `new_dfile` gives. The same path gives the body
/// back unchanged.
pub fn relocate(
    body: &[u8],
    version: (u32, u32),
    old_dfile: &str,
    new_dfile: &str,
) -> Result<Vec<u8>, NotRelocatable> {
    let (major, minor) = version;
    let format = Format::for_python(major, minor)
        .filter(|_| is_proven(major, minor))
        .ok_or(NotRelocatable::UnprovenVersion(major, minor))?;
    for path in [old_dfile, new_dfile] {
        if path.chars().nth(1).is_none() || path.contains('\0') {
            return Err(NotRelocatable::UnusablePath(path.to_owned()));
        }
    }
    if old_dfile == new_dfile {
        return Ok(body.to_vec());
    }
    let mut top = read(body, format)?;
    if !matches!(top.value, Value::Code(_)) {
        return Err(NotRelocatable::NotCode);
    }
    let mut rewrite = Rewrite {
        old: old_dfile.as_bytes(),
        new: new_dfile.as_bytes(),
        interned: interns_filename(minor),
        refs: Vec::new(),
    };
    rewrite.visit(&mut top, Role::Other)?;
    to_bytes(&top).map_err(|_| NotRelocatable::UnexpectedFilename)
}

/// Where an object sits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A code object's `co_filename` field.
    Filename,
    /// Anywhere else.
    Other,
}

struct Rewrite<'p> {
    old: &'p [u8],
    new: &'p [u8],
    interned: bool,
    /// For each reference-table slot, in CPython's numbering: is it a filename string?
    refs: Vec<bool>,
}

impl<'p> Rewrite<'p> {
    fn visit<'t>(&mut self, object: &mut Object<'t>, role: Role) -> Result<(), NotRelocatable>
    where
        'p: 't,
    {
        // Same slot numbering as the reader: a slot is taken when the type byte is read.
        let slot = (object.flag_ref && object.value.registers_ref()).then(|| {
            self.refs.push(false);
            self.refs.len() - 1
        });
        match (&mut object.value, role) {
            (Value::Str(s), Role::Filename) => {
                if s.data != self.old {
                    return Err(NotRelocatable::OtherFilename {
                        found: String::from_utf8_lossy(s.data).into_owned(),
                    });
                }
                if s.kind != StrKind::for_content(self.old, self.interned) {
                    return Err(NotRelocatable::UnexpectedFilename);
                }
                s.kind = StrKind::for_content(self.new, self.interned);
                s.data = self.new;
                if let Some(slot) = slot {
                    self.refs[slot] = true;
                }
            }
            (Value::Ref(index), role) => {
                // The reader checked the index against the same numbering; a miss here would be
                // a bug, refused rather than trusted.
                let is_filename = self.refs.get(*index as usize).copied();
                if is_filename != Some(role == Role::Filename) {
                    return Err(NotRelocatable::SharedFilename);
                }
            }
            (_, Role::Filename) => return Err(NotRelocatable::UnexpectedFilename),
            (Value::Str(s), Role::Other) if s.data == self.old || s.data == self.new => {
                return Err(NotRelocatable::PathInConstants);
            }
            (Value::Code(code), Role::Other) => {
                let filename = code.layout.filename_index();
                for (i, field) in code.objects.iter_mut().enumerate() {
                    let role = if i == filename {
                        Role::Filename
                    } else {
                        Role::Other
                    };
                    self.visit(field, role)?;
                }
                for field in &mut code.tail {
                    self.visit(field, Role::Other)?;
                }
            }
            (Value::Tuple { items, .. }, _)
            | (Value::List(items), _)
            | (Value::Set(items), _)
            | (Value::FrozenSet(items), _) => {
                for item in items {
                    self.visit(item, Role::Other)?;
                }
            }
            (Value::Dict(pairs), _) => {
                for (key, value) in pairs {
                    self.visit(key, Role::Other)?;
                    self.visit(value, Role::Other)?;
                }
            }
            (Value::Slice(parts), _) => {
                for part in parts.iter_mut() {
                    self.visit(part, Role::Other)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_DEPTH;

    const EMPTY_BYTES: &[u8] = b"s\x00\x00\x00\x00";
    const EMPTY_TUPLE: &[u8] = b")\x00";

    /// A flagged, non-interned short ASCII string (slot `n` when `n` slots came before).
    fn short_str(s: &str, flag: bool) -> Vec<u8> {
        let mut out = vec![if flag { b'z' | 0x80 } else { b'z' }, s.len() as u8];
        out.extend_from_slice(s.as_bytes());
        out
    }

    fn reference(index: u32) -> Vec<u8> {
        let mut out = vec![b'r'];
        out.extend_from_slice(&index.to_le_bytes());
        out
    }

    /// A 3.11-layout code object with these constants and this filename field.
    fn code311(consts: &[u8], filename: &[u8]) -> Vec<u8> {
        let mut out = vec![b'c'];
        out.extend_from_slice(&[0; 20]);
        out.extend_from_slice(EMPTY_BYTES);
        out.extend_from_slice(consts);
        out.extend_from_slice(EMPTY_TUPLE);
        out.extend_from_slice(EMPTY_TUPLE);
        out.extend_from_slice(EMPTY_BYTES);
        out.extend_from_slice(filename);
        out.extend_from_slice(b"z\x01m");
        out.extend_from_slice(b"z\x01m");
        out.extend_from_slice(&1i32.to_le_bytes());
        out.extend_from_slice(EMPTY_BYTES);
        out.extend_from_slice(EMPTY_BYTES);
        out
    }

    fn tuple(items: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![b')', items.len() as u8];
        for item in items {
            out.extend_from_slice(item);
        }
        out
    }

    /// A module with one nested function, as CPython writes it: the nested code object comes
    /// first, so it holds the filename in full and the module refers to it.
    fn module(path: &str, extra_const: &[u8]) -> Vec<u8> {
        let inner = code311(EMPTY_TUPLE, &short_str(path, true));
        code311(&tuple(&[&inner, extra_const]), &reference(0))
    }

    #[test]
    fn rewrites_every_filename_and_keeps_references() {
        let moved = relocate(&module("/a/x.py", b"N"), (3, 11), "/a/x.py", "/bb/x.py").unwrap();
        assert_eq!(moved, module("/bb/x.py", b"N"));
    }

    #[test]
    fn the_same_path_gives_the_body_back() {
        // Even where another path would be refused.
        let body = module("/a/x.py", &short_str("/a/x.py", false));
        assert_eq!(relocate(&body, (3, 11), "/a/x.py", "/a/x.py"), Ok(body));
    }

    #[test]
    fn picks_the_type_code_cpython_picks() {
        let long = format!("/{}.py", "d".repeat(300));
        let moved = relocate(&module("/a/x.py", b"N"), (3, 11), "/a/x.py", &long).unwrap();
        let mut want = vec![b'a' | 0x80];
        want.extend_from_slice(&(long.len() as i32).to_le_bytes());
        want.extend_from_slice(long.as_bytes());
        assert!(
            moved.windows(want.len()).any(|w| w == want),
            "four-byte ASCII form"
        );
        let moved = relocate(&module("/a/x.py", b"N"), (3, 11), "/a/x.py", "/é/x.py").unwrap();
        let mut want = vec![b'u' | 0x80, 8, 0, 0, 0];
        want.extend_from_slice("/é/x.py".as_bytes());
        assert!(moved.windows(want.len()).any(|w| w == want), "UTF-8 form");
        // Exactly 255 characters still has the one-byte length.
        let edge = format!("/{}.py", "e".repeat(251));
        let moved = relocate(&module("/a/x.py", b"N"), (3, 11), "/a/x.py", &edge).unwrap();
        assert_eq!(moved, module(&edge, b"N"));
    }

    #[test]
    fn keeps_interning_on_3_13() {
        let interned = |path: &str| {
            let mut s = short_str(path, true);
            s[0] = b'Z' | 0x80;
            code311(&tuple(&[&code311(EMPTY_TUPLE, &s)]), &reference(0))
        };
        let moved = relocate(&interned("/a/x.py"), (3, 13), "/a/x.py", "/b/y.py").unwrap();
        assert_eq!(moved, interned("/b/y.py"));
        // 3.11 never interns co_filename: an interned one is not what it writes.
        assert_eq!(
            relocate(&interned("/a/x.py"), (3, 11), "/a/x.py", "/b/y.py"),
            Err(NotRelocatable::UnexpectedFilename)
        );
        // Nor does 3.13 write a non-interned one.
        assert_eq!(
            relocate(&module("/a/x.py", b"N"), (3, 13), "/a/x.py", "/b/y.py"),
            Err(NotRelocatable::UnexpectedFilename)
        );
    }

    #[test]
    fn refuses_what_it_cannot_prove() {
        let body = module("/a/x.py", b"N");
        // The filename object also used as a constant.
        assert_eq!(
            relocate(
                &module("/a/x.py", &reference(0)),
                (3, 11),
                "/a/x.py",
                "/b.py"
            ),
            Err(NotRelocatable::SharedFilename)
        );
        // A constant equal to the old or the new path.
        let constant = short_str("/a/x.py", false);
        assert_eq!(
            relocate(&module("/a/x.py", &constant), (3, 11), "/a/x.py", "/b.py"),
            Err(NotRelocatable::PathInConstants)
        );
        assert_eq!(
            relocate(&module("/q.py", &constant), (3, 11), "/q.py", "/a/x.py"),
            Err(NotRelocatable::PathInConstants)
        );
        // Another filename than the one the entry was compiled with.
        assert!(matches!(
            relocate(&body, (3, 11), "/z.py", "/b.py"),
            Err(NotRelocatable::OtherFilename { .. })
        ));
        for version in [(3, 7), (3, 14), (3, 15), (2, 7)] {
            assert_eq!(
                relocate(&body, version, "/a/x.py", "/b.py"),
                Err(NotRelocatable::UnprovenVersion(version.0, version.1))
            );
        }
        for path in ["", "x", "/a\0.py"] {
            assert_eq!(
                relocate(&body, (3, 11), "/a/x.py", path),
                Err(NotRelocatable::UnusablePath(path.into()))
            );
        }
        assert_eq!(
            relocate(b"N", (3, 11), "/a/x.py", "/b.py"),
            Err(NotRelocatable::NotCode)
        );
        assert!(matches!(
            relocate(&body[..body.len() - 1], (3, 11), "/a/x.py", "/b.py"),
            Err(NotRelocatable::Unparseable(_))
        ));
    }

    #[test]
    fn deepest_accepted_nesting_relocates_on_a_small_stack() {
        // Code objects nested in constant tuples, two levels each, as deep as the reader goes.
        let mut body = code311(EMPTY_TUPLE, &short_str("/a/x.py", true));
        let mut depth = 2;
        while depth + 2 <= MAX_DEPTH {
            body = code311(&tuple(&[&body]), &reference(0));
            depth += 2;
        }
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let moved = relocate(&body, (3, 11), "/a/x.py", "/b/y.py").unwrap();
                relocate(&moved, (3, 11), "/b/y.py", "/a/x.py").unwrap() == body
            })
            .unwrap()
            .join()
            .map(|same| assert!(same))
            .unwrap();
    }
}
