//! `pycache-client status`: the resolved settings (token redacted), the interpreter, the local
//! cache, and whether the server answers and with which scope. `pycache-client stats`: the
//! server's statistics.

use anyhow::{bail, Result};

use crate::interpreter::{resolve_interpreter, Interpreter};
use crate::remote::{timeout_from_env, Remote};
use crate::settings::Settings;

/// Prints what pycache would use; exit 0 unless something is broken (an interpreter that does
/// not work, or a server that fails with `--require-server`).
pub fn status(settings: &Settings) -> Result<i32> {
    let mut healthy = true;
    match &settings.config_file {
        Some(f) => println!("config:       {}", f.display()),
        None => println!("config:       (no pyproject.toml found)"),
    }
    match resolve_interpreter(settings.python.as_deref())
        .and_then(|p| Interpreter::probe(&p, &settings.cache_dir).map_err(anyhow::Error::from))
    {
        Ok(i) => println!(
            "python:       {} ({} {}.{}.{}, cache tag {}, magic {})",
            i.executable.display(),
            i.implementation,
            i.version.0,
            i.version.1,
            i.version.2,
            i.cache_tag,
            hex::encode(i.magic)
        ),
        Err(e) => {
            healthy = false;
            println!("python:       error: {e:#}");
        }
    }
    println!(
        "local cache:  {}{}",
        settings.cache_dir.display(),
        if settings.local_cache {
            ""
        } else {
            " (disabled)"
        }
    );
    println!("jobs:         {}", settings.jobs);
    println!(
        "token:        {}",
        if settings.token.is_some() {
            "set (redacted)"
        } else {
            "not set"
        }
    );
    match &settings.server {
        None => println!(
            "server:       not configured (--server, PYCACHE_SERVER or [tool.pycache] server)"
        ),
        Some(url) => match asked(url, settings)?.info() {
            Ok(info) => println!(
                "server:       {url}: answers (version {}, scope {}, public read {})",
                info.version,
                info.scope
                    .map_or("none".to_owned(), |s| format!("{s:?}").to_lowercase()),
                info.public_read
            ),
            Err(e) => {
                if settings.require_server {
                    healthy = false;
                }
                println!("server:       {url}: {e}");
            }
        },
    }
    Ok(if healthy { 0 } else { 1 })
}

/// Prints the server's statistics as JSON.
pub fn stats(settings: &Settings) -> Result<i32> {
    let Some(url) = &settings.server else {
        bail!("no server configured: pass --server URL or set PYCACHE_SERVER");
    };
    let stats = asked(url, settings)?.stats()?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(0)
}

/// A server asked directly by a command, where every failure is the answer.
fn asked(url: &str, settings: &Settings) -> Result<Remote> {
    Remote::new(url, settings.token.clone(), true, timeout_from_env())
}
