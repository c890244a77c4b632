//! pycache's client: a drop-in, cache-backed `python -m compileall` and the `sync` command.

pub mod child;
pub mod cli;
pub mod commands;
pub mod compileall;
pub mod engine;
pub mod fsutil;
pub mod interpreter;
pub mod local_cache;
pub mod marshal;
pub mod output;
pub mod pyc;
pub mod pyrepr;
pub mod remote;
pub mod session;
pub mod settings;
pub mod venv;
pub mod verify;
pub mod workers;
