//! One module per subcommand.

pub mod compileall;
pub mod completions;
pub mod status;
pub mod sync;
