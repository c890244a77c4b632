//! `pycache-client completions SHELL`: the shell completion script, generated from the command
//! line definition so it never drifts from it.

use clap::CommandFactory;

use crate::cli::Cli;

/// Writes the completion script for `shell` on stdout.
pub fn run(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut command = Cli::command();
    clap_complete::generate(
        shell,
        &mut command,
        "pycache-client",
        &mut std::io::stdout(),
    );
    Ok(0)
}
