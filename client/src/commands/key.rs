//! `pycache-client key generate NAME`: an ed25519 key pair for signing uploads. The secret key
//! is written once, readable by its owner only; the public key is the line readers trust.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use pycache_proto::signature::SigningKey;
use rand::RngCore;

use crate::cli::KeyCommand;
use crate::output::Console;

/// Runs a `key` subcommand.
pub fn run(command: &KeyCommand, console: &Console) -> Result<i32> {
    match command {
        KeyCommand::Generate { name, secret_file } => {
            generate(name, secret_file.as_deref(), console)
        }
    }
}

/// Makes a key from 32 bytes of the operating system's randomness. With `secret_file`, the
/// secret goes there and stdout gets only the public key (so `> NAME.pub` keeps it); without,
/// stdout gets only the secret key and the public key goes to stderr.
fn generate(name: &str, secret_file: Option<&Path>, console: &Console) -> Result<i32> {
    if !pycache_proto::signature::EntrySignature::valid_key_name(name) {
        anyhow::bail!(
            "{name:?} is not a valid key name: use 1 to {} letters, digits, `.`, `_` or `-` (e.g. ci.example.org-1)",
            pycache_proto::signature::MAX_KEY_NAME
        );
    }
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .context("could not read randomness from the operating system")?;
    let key = SigningKey::from_seed(name, seed)?;
    seed.fill(0);
    let secret = key.to_secret_string();
    let public = key.trusted_key().to_string();
    match secret_file {
        Some(file) => {
            write_secret(file, &secret)?;
            console.stdout_line(&public)?;
            console.stderr_text(&format!(
                "pycache: wrote the secret key {name:?} to {} (mode 0600); give it to writers with --signing-key or PYCACHE_SIGNING_KEY_FILE, and the public key above to readers' trusted-keys\n",
                file.display()
            ));
        }
        None => {
            console.stdout_line(&secret)?;
            console.stderr_text(&format!("pycache: public key: {public}\n"));
        }
    }
    Ok(0)
}

/// Creates `file` with mode 0600 and writes `secret` to it; an existing file is never touched.
fn write_secret(file: &Path, secret: &str) -> Result<()> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} already exists; refusing to overwrite a key (remove it first, or choose another file)",
                file.display()
            ),
            _ => anyhow::Error::new(e)
                .context(format!("could not create the secret key file {}", file.display())),
        })?;
    out.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("could not write the secret key file {}", file.display()))
}
