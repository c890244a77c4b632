//! `pycache-client`: parses the command line, sets up logging and the console, runs the command,
//! owns the exit status.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use pycache_client::cli::{Cli, Command};
use pycache_client::commands;
use pycache_client::output::{error_is_closed_stdout, Console, Streams};
use pycache_client::session::Session;
use pycache_client::settings::{split_compileall_args, Settings};

fn main() -> ExitCode {
    let started = Instant::now();
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
    let compileall = matches!(cli.command, Command::Compileall { .. });
    let console = Console::new(Streams::Process, compileall);
    match run(cli, &console, started) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) if error_is_closed_stdout(&e) => {
            // What compileall's own print() raises when its reader went away.
            if compileall {
                console.stderr_text("BrokenPipeError: [Errno 32] Broken pipe\n");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            console.stderr_text(&format!("pycache: error: {e:#}\n"));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, console: &Console, started: Instant) -> anyhow::Result<i32> {
    // Needs no settings: a broken pyproject.toml must not break the shell's completion.
    if let Command::Completions { shell } = cli.command {
        return commands::completions::run(shell);
    }
    // Neither: making a key must not depend on a project's settings (or on a key file they name).
    if let Command::Key(command) = &cli.command {
        return commands::key::run(command, console);
    }
    let cwd = std::env::current_dir()?;
    let settings = Settings::resolve(&cli, &cwd)?;
    init_logging(settings.log_filter.as_deref(), console);
    match cli.command {
        Command::Compileall { args } => {
            let session = Session::open(settings, console.clone())?;
            commands::compileall::run(&session, args)
        }
        Command::Sync(args) => {
            let mut settings = settings;
            let venv = match &args.venv {
                Some(path) => Some(pycache_client::venv::Environment::locate(
                    path.as_deref(),
                    &cwd,
                    settings.project_env.as_deref(),
                )?),
                None => None,
            };
            if let Some(env) = &venv {
                settings.python = Some(env.target_interpreter(settings.python.as_deref(), console));
            }
            let session = Session::open_project(settings, console.clone())?;
            commands::sync::run(&session, &args, started, venv)
        }
        Command::Verify(args) => {
            let session = Session::open_project(settings, console.clone())?;
            commands::verify::run(&session, &args, started)
        }
        Command::Status => commands::status::status(&settings, console),
        Command::Stats => commands::status::stats(&settings, console),
        Command::Cache(command) => commands::cache::run(&command, &settings, console),
        Command::Completions { shell } => commands::completions::run(shell),
        Command::Key(command) => commands::key::run(&command, console),
    }
}

/// The client's log on stderr, through the console, when `PYCACHE_LOG` (or `--log`) asks.
fn init_logging(filter: Option<&str>, console: &Console) {
    let Some(filter) = filter else { return };
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        console.stderr_text(&format!(
            "pycache: warning: the log filter {filter:?} is invalid ({e}); logging at debug level\n"
        ));
        tracing_subscriber::EnvFilter::new("debug")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(console.clone())
        // Colours for a person at a terminal only: a log piped to a file or CI stays plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(true)
        .without_time()
        .try_init();
}
