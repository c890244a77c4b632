//! CPython's marshal format: the shared `pyc` crate (a byte-exact reader and writer, the check
//! that a body is one whole code object, relocation), under the name the client's code uses.

pub use pyc::*;
