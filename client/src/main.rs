//! `pycache-client`: parses the command line, runs the command, owns the exit status.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use pycache_client::cli::{Cli, Command};
use pycache_client::commands;
use pycache_client::settings::{split_compileall_args, Settings};

fn main() -> ExitCode {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    // pycache options written after `compileall` move in front of it.
    if let Some(pos) = argv.iter().position(|a| a == "compileall") {
        let tail = argv.split_off(pos + 1);
        let (ours, theirs) = split_compileall_args(tail);
        argv.truncate(pos);
        argv.extend(ours);
        argv.push("compileall".into());
        if !theirs.is_empty() {
            argv.push("--".into());
            argv.extend(theirs);
        }
    }
    let cli = Cli::parse_from(argv);
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("pycache: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    // Needs no settings: a broken pyproject.toml must not break the shell's completion.
    if let Command::Completions { shell } = cli.command {
        return commands::completions::run(shell);
    }
    let cwd = std::env::current_dir()?;
    let settings = Settings::resolve(&cli, &cwd)?;
    match cli.command {
        Command::Compileall { args } => commands::compileall::run(&settings, args),
        Command::Sync(args) => commands::sync::run(&settings, &args),
        Command::Status => commands::status::status(&settings),
        Command::Stats => commands::status::stats(&settings),
        Command::Completions { shell } => commands::completions::run(shell),
    }
}
