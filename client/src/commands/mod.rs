//! One module per subcommand.

pub mod cache;
pub mod compileall;
pub mod completions;
pub mod key;
pub mod status;
pub mod sync;
pub mod verify;
