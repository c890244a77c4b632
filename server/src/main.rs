//! `pycache-server`: parse the command line, run, print the error chain and set the exit code.

use clap::Parser;
use pycache_server::cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pycache_server::memory::large_blocks_from_the_system();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PYCACHE_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a log file or a pipe.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let cli = Cli::parse();
    match pycache_server::commands::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pycache-server: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
