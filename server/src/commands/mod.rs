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
            let store = open_store(&database, NewDatabase::Create).await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Some(Command::Token(command)) => token::run(command).await,
        Some(Command::Entries(command)) => entries::run(command).await,
    }
}

/// Where the SQLite database lives when neither `--data-dir` nor `--database-url` says.
pub const DEFAULT_DATA_DIR: &str = "pycache-data";

/// Whether a command may make a new database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewDatabase {
    /// `serve`, `migrate`: create the data directory and the database when missing.
    Create,
    /// `token create`: only in a data directory named on purpose (`--data-dir`,
    /// `PYCACHE_DATA_DIR`), never in the default one by accident.
    CreateWhereNamed,
    /// `token list|revoke`, `entries purge`: the server's database must be there.
    MustExist,
}

/// The database URL: `--database-url`, else a SQLite file in `--data-dir`, made when `new`
/// allows it. A command that reads or changes a server's data refuses to invent an empty
/// database (tokens made there would not be the server's; a list of it would be empty).
pub fn database_url(args: &DatabaseArgs, new: NewDatabase) -> anyhow::Result<String> {
    if let Some(url) = &args.database_url {
        return Ok(url.clone());
    }
    let named = args.data_dir.is_some();
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_DATA_DIR));
    let file = dir.join("pycache.db");
    let may_create = match new {
        NewDatabase::Create => true,
        NewDatabase::CreateWhereNamed => named,
        NewDatabase::MustExist => false,
    };
    if !may_create && !file.exists() {
        anyhow::bail!(
            "there is no pycache database at {}: name the server's data directory with \
             --data-dir (or PYCACHE_DATA_DIR), or its database with --database-url (or \
             PYCACHE_DATABASE_URL){}",
            file.display(),
            if named {
                ""
            } else {
                "; without them the default ./pycache-data is used"
            }
        );
    }
    let dir = &dir;
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
pub async fn open_store(args: &DatabaseArgs, new: NewDatabase) -> anyhow::Result<Arc<dyn Store>> {
    let url = database_url(args, new)?;
    Ok(store::connect(&url).await?)
}
