//! compileall's command line and its walk, reproduced per interpreter version.

pub mod args;
pub mod exclude;
pub mod narrow_stdout;
pub mod plan;
pub mod pypy_cold;
