//! The subcommands; each returns `anyhow::Result` and `main` prints the error chain.

mod entries;
mod serve;
mod token;

use std::sync::Arc;

use std::os::unix::fs::DirBuilderExt;

use anyhow::Context;

use crate::cli::{Cli, Command, DatabaseArgs};
use crate::store::{self, Store};

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve::serve(cli.serve).await,
        Some(Command::Serve(args)) => serve::serve(args).await,
        Some(Command::Migrate(database)) => {
            let store = open_store(&database).await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Some(Command::Token(command)) => token::run(command).await,
        Some(Command::Entries(command)) => entries::run(command).await,
    }
}

/// The database URL: `--database-url`, else a SQLite file in `--data-dir` (created if missing).
pub fn database_url(args: &DatabaseArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.database_url {
        return Ok(url.clone());
    }
    let dir = &args.data_dir;
    // The data directory holds the tokens' hashes and every entry: only its owner reads it.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create the data directory {}: pick a writable --data-dir",
                dir.display()
            )
        })?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve the data directory {}", dir.display()))?;
    Ok(format!("sqlite://{}", dir.join("pycache.db").display()))
}

/// Opens and migrates the store the arguments name.
pub async fn open_store(args: &DatabaseArgs) -> anyhow::Result<Arc<dyn Store>> {
    let url = database_url(args)?;
    Ok(store::connect(&url).await?)
}
