//! compileall's command line and its walk, reproduced per interpreter version.

pub mod args;
pub mod exclude;
pub mod plan;
