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
    /// A `co_filename` is not a string, or its interning is not what this version does.
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
/// (`client/tests/marshal_relocation.rs`).
pub fn is_proven(major: u32, minor: u32) -> bool {
    major == 3 && (8..=13).contains(&minor)
}

/// Whether CPython `major.minor` interns `co_filename` (3.13 does; 3.8–3.12 do not).
fn interns_filename(minor: u32) -> bool {
    minor >= 13
}

/// Rewrites `body` (a .pyc body compiled by CPython `version` with `old_dfile` as the recorded
/// path) into the body the same compile with `new_dfile` gives.
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
                if s.kind.is_interned() != self.interned {
                    return Err(NotRelocatable::UnexpectedFilename);
                }
                s.kind = StrKind::for_content(self.new, self.interned);
                s.data = self.new;
                if let Some(slot) = slot {
                    self.refs[slot] = true;
                }
            }
            (Value::Ref(index), role) => {
                let is_filename = self.refs[*index as usize];
                if is_filename != (role == Role::Filename) {
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
