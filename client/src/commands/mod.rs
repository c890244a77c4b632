//! One module per subcommand.

pub mod compileall;
pub mod sync;
