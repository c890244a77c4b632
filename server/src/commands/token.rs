//! `pycache-server token create|list|revoke`, straight against the database.

use anyhow::bail;

use super::open_store;
use crate::auth::{new_token, token_hash};
use crate::cli::TokenCommand;
use crate::store::unix_millis;

/// Runs one token subcommand.
pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            scope,
            name,
            database,
        } => {
            if name.trim().is_empty() {
                bail!("a token needs a non-empty --name");
            }
            let store = open_store(&database).await?;
            let token = new_token();
            let result = store
                .create_token(&token_hash(&token), &name, scope, unix_millis())
                .await;
            store.close().await;
            result?;
            println!(
                "created token {name:?} with scope {}; it is shown only once:",
                scope.as_str()
            );
            // Alone on the last line, so scripts can take it with `tail -n 1`.
            println!("{token}");
        }
        TokenCommand::List { database } => {
            let store = open_store(&database).await?;
            let tokens = store.list_tokens().await;
            store.close().await;
            println!(
                "{:<24} {:<6} {:<14} revoked_at",
                "name", "scope", "created_at"
            );
            for t in tokens? {
                let revoked = t.revoked_at.map_or("-".to_owned(), |r| r.to_string());
                println!(
                    "{:<24} {:<6} {:<14} {revoked}",
                    t.name,
                    t.scope.as_str(),
                    t.created_at
                );
            }
        }
        TokenCommand::Revoke { name, database } => {
            let store = open_store(&database).await?;
            let revoked = store.revoke_token(&name, unix_millis()).await;
            store.close().await;
            if !revoked? {
                bail!("no valid token named {name:?}: see `pycache-server token list`");
            }
            println!("revoked token {name:?}");
        }
    }
    Ok(())
}
