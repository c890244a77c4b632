//! One module per subcommand.

pub mod compileall;
pub mod status;
pub mod sync;
