//! `pycache-server entries purge`, straight against the database.

use super::{open_store, NewDatabase};
use crate::cli::{EntriesCommand, PurgeArgs};
use crate::store::PurgeFilter;

/// Runs one entries subcommand.
pub async fn run(command: EntriesCommand) -> anyhow::Result<()> {
    match command {
        EntriesCommand::Purge { filter, database } => {
            let filter = purge_filter(filter)?;
            let store = open_store(&database, NewDatabase::MustExist).await?;
            let purged = store.purge(&filter).await;
            store.close().await;
            let purged = purged?;
            println!(
                "purged {} entries ({} bytes freed)",
                purged.entries, purged.bytes
            );
        }
    }
    Ok(())
}

/// The store's filter for the command line's conditions.
fn purge_filter(args: PurgeArgs) -> anyhow::Result<PurgeFilter> {
    if let Some(namespace) = &args.namespace {
        pycache_proto::namespace::validate_namespace(namespace)?;
    }
    let filter = PurgeFilter {
        written_by: args.written_by,
        namespace: args.namespace,
        key: args.key,
        since: args.since,
    };
    anyhow::ensure!(
        !filter.is_empty(),
        "name at least one of --written-by, --namespace, --key, --since"
    );
    Ok(filter)
}
