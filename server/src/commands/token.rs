//! `pycache-server token create|list|revoke`, straight against the database.

use anyhow::bail;
use pycache_proto::namespace::join_patterns;

use super::{open_store, NewDatabase};
use crate::auth::{default_grants, new_token, token_hash};
use crate::cli::TokenCommand;
use crate::store::{unix_millis, NewToken, PurgeFilter};

/// Runs one token subcommand.
pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            scope,
            name,
            writes,
            reads,
            database,
        } => {
            if let Err(e) = crate::auth::validate_token_name(&name) {
                bail!("--name: {e}");
            }
            let (default_writes, default_reads) = default_grants(scope);
            let token_text = new_token();
            let token = NewToken {
                name,
                scope,
                writes: writes.map_or(default_writes, |w| w.0),
                reads: reads.map_or(default_reads, |r| r.0),
            };
            let store = open_store(&database, NewDatabase::CreateWhereNamed).await?;
            let result = store
                .create_token(&token_hash(&token_text), &token, unix_millis())
                .await;
            store.close().await;
            result?;
            println!(
                "created token {:?} with scope {}, writing {} and reading {}; it is shown only once:",
                token.name,
                scope.as_str(),
                shown(&join_patterns(&token.writes)),
                shown(&join_patterns(&token.reads)),
            );
            // Alone on the last line, so scripts can take it with `tail -n 1`.
            println!("{token_text}");
        }
        TokenCommand::List { database } => {
            let store = open_store(&database, NewDatabase::MustExist).await?;
            let tokens = store.list_tokens().await;
            store.close().await;
            println!(
                "{:<24} {:<6} {:<20} {:<20} {:<20} revoked_at",
                "name", "scope", "writes", "reads", "created_at"
            );
            for t in tokens? {
                let revoked = t.revoked_at.map_or("-".to_owned(), when);
                println!(
                    "{:<24} {:<6} {:<20} {:<20} {:<20} {revoked}",
                    t.name,
                    t.scope.as_str(),
                    shown(&join_patterns(&t.writes)),
                    shown(&join_patterns(&t.reads)),
                    when(t.created_at)
                );
            }
        }
        TokenCommand::Revoke {
            name,
            purge,
            database,
        } => {
            let store = open_store(&database, NewDatabase::MustExist).await?;
            let revoked = store.revoke_token(&name, unix_millis()).await;
            let purged = match (&revoked, purge) {
                (Ok(true), true) => Some(
                    store
                        .purge(&PurgeFilter {
                            written_by: Some(name.clone()),
                            ..PurgeFilter::default()
                        })
                        .await,
                ),
                _ => None,
            };
            store.close().await;
            if !revoked? {
                bail!("no valid token named {name:?}: see `pycache-server token list`");
            }
            println!("revoked token {name:?}");
            if let Some(purged) = purged {
                let purged = purged?;
                println!(
                    "purged {} entries it wrote ({} bytes freed)",
                    purged.entries, purged.bytes
                );
            }
        }
    }
    Ok(())
}

/// A time in Unix milliseconds for people: UTC, to the second.
fn when(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis).map_or_else(
        || millis.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

/// A pattern list for people: `-` when empty.
fn shown(list: &str) -> &str {
    if list.is_empty() {
        "-"
    } else {
        list
    }
}
