//! `pycache-client completions SHELL`: the shell completion script, generated from the command
//! line definition so it never drifts from it.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;

/// The binary's name, as shells see it.
const BIN: &str = "pycache-client";

/// Writes the completion script for `shell` on stdout.
pub fn run(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, BIN, &mut script);
    if shell == clap_complete::Shell::Bash {
        script = bash_fixed(&String::from_utf8_lossy(&script)).into_bytes();
    }
    std::io::stdout().write_all(&script)?;
    Ok(0)
}

/// The generated bash script names a subcommand's state two ways when the binary's name has a
/// hyphen: the loop that follows the words typed sets `pycache__client__subcmd__sync`, the
/// branch that offers its options is labelled `pycache__subcmd__client__subcmd__sync`, so
/// nothing is offered after a subcommand. One spelling, the loop's, for both.
fn bash_fixed(script: &str) -> String {
    script.replace("pycache__subcmd__client", "pycache__client")
}
