//! CPython's marshal format, as the body of a .pyc holds it: a reader into a tree that keeps
//! every byte-level detail ([`read`]), a writer that gives the same bytes back ([`write`]), and
//! the rewrite of the recorded filename that lets one cache entry serve a tree at any path
//! ([`relocate`]).
//!
//! Supported: the code object layouts of CPython 3.8–3.10 and 3.11 and later, marshal version 4
//! (3.8–3.13) and 5 (3.14: slice constants). Marshal version 6 (3.15) adds a frozendict type whose
//! encoding is not known here: a stream holding one is refused as unparseable, never guessed.
//! Relocation is enabled only for the versions it was measured on (3.8–3.13); see
//! [`relocate::is_proven`].

mod object;
mod read;
pub mod relocate;
mod write;

pub use object::{Code, CodeLayout, Object, Str, StrKind, Value};
pub use read::{read, MarshalError, MAX_DEPTH};
pub use relocate::{relocate, NotRelocatable};
pub use write::{to_bytes, write, WriteError};

/// Why a body is not one whole code object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// It is not a marshal stream the reader accepts (truncated, trailing bytes, bad codes).
    #[error(transparent)]
    Marshal(#[from] MarshalError),
    /// It is a whole marshal stream, but its object is not a code object.
    #[error("the marshalled object is not a code object")]
    NotCode,
}

/// Checks that `body` is exactly one marshalled code object in `format`: what an interpreter
/// can load from a .pyc. Anything else (`c\0`, a truncated stream, bytes left over) would make
/// the import fail with no fallback to the source.
pub fn check_code_body(body: &[u8], format: Format) -> Result<(), BodyError> {
    match read(body, format)?.value {
        Value::Code(_) => Ok(()),
        _ => Err(BodyError::NotCode),
    }
}

/// What the reader must know about the interpreter that wrote a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// The code object field list.
    pub layout: CodeLayout,
    /// Whether slice constants (`:`, marshal version 5, CPython 3.14+) may appear.
    pub slices: bool,
}

impl Format {
    /// The format CPython `major.minor` writes .pyc bodies in; `None` before 3.8 or past 3.15.
    pub fn for_python(major: u32, minor: u32) -> Option<Format> {
        match (major, minor) {
            (3, 8..=10) => Some(Format {
                layout: CodeLayout::Py38,
                slices: false,
            }),
            (3, 11..=13) => Some(Format {
                layout: CodeLayout::Py311,
                slices: false,
            }),
            (3, 14..=15) => Some(Format {
                layout: CodeLayout::Py311,
                slices: true,
            }),
            _ => None,
        }
    }
}
