//! `pycache-server`: parse the command line, run, print the error chain and set the exit code.

use clap::Parser;
use pycache_server::cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PYCACHE_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
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
