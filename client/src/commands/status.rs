//! `pycache-client status`: the resolved settings (token redacted), the interpreter, the local
//! cache, and whether the server answers and with which scope. `pycache-client stats`: the
//! server's statistics.

use std::fmt::Write as _;

use anyhow::{bail, Result};

use crate::interpreter::{resolve_interpreter, Interpreter};
use crate::output::{escape_replayed, Console};
use crate::remote::ServerClient;
use crate::settings::Settings;

/// Appends one formatted line to the report.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Prints what pycache would use; exit 0 unless something is broken (an interpreter that does
/// not work, or a server that fails with `--require-server`).
pub fn status(settings: &Settings, console: &Console) -> Result<i32> {
    let mut healthy = true;
    let mut out = String::new();
    match &settings.config_file {
        Some(f) => say!(out, "config:       {}", f.display()),
        None => say!(out, "config:       (no pyproject.toml found)"),
    }
    match &settings.user_config_file {
        Some(f) => say!(out, "user config:  {}", f.display()),
        None => say!(out, "user config:  (none read)"),
    }
    match resolve_interpreter(settings.python.as_deref(), settings.virtual_env.as_deref())
        .and_then(|p| Interpreter::probe(&p, &settings.cache_dir).map_err(anyhow::Error::from))
    {
        Ok(i) => say!(
            out,
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
            say!(out, "python:       error: {e:#}");
        }
    }
    if let Some(env) = &settings.project_env {
        say!(
            out,
            "project venv: {} (what sync and verify compile for, unless an interpreter is named \
             or a virtualenv is active)",
            env.display()
        );
    }
    say!(
        out,
        "local cache:  {}{}",
        settings.cache_dir.display(),
        if settings.local_cache {
            ""
        } else {
            " (disabled)"
        }
    );
    say!(out, "jobs:         {}", settings.jobs);
    say!(
        out,
        "namespace:    {}",
        settings
            .namespace
            .as_deref()
            .unwrap_or("not set (the server picks the token's)")
    );
    say!(
        out,
        "token:        {}",
        if settings.token.is_some() {
            "set (redacted)"
        } else {
            "not set"
        }
    );
    say!(
        out,
        "signing key:  {}",
        settings
            .signing_key
            .as_ref()
            .map_or("not set (uploads are not signed)", |k| k.name())
    );
    let trusted: Vec<&str> = settings.trusted_keys.iter().map(|k| k.name()).collect();
    say!(
        out,
        "trusted keys: {}",
        if trusted.is_empty() {
            "not set (server entries are used unsigned)".to_owned()
        } else {
            trusted.join(", ")
        }
    );
    match &settings.server {
        None => say!(
            out,
            "server:       not configured (--server, PYCACHE_SERVER or [tool.pycache] server)"
        ),
        Some(url) => match asked(url, settings)?.info() {
            Ok(info) => {
                say!(
                    out,
                    "server:       {url}: answers (version {}, scope {}, public read {})",
                    escape_replayed(&info.version),
                    info.scope
                        .map_or("none".to_owned(), |s| format!("{s:?}").to_lowercase()),
                    info.public_read
                );
                say!(
                    out,
                    "uploads to:   {}",
                    match &info.namespace {
                        Some(ns) => escape_replayed(ns).into_owned(),
                        None => "nowhere (this caller may not write)".to_owned(),
                    }
                );
                say!(
                    out,
                    "reads from:   {}",
                    if info.reads.is_empty() {
                        "(none)".to_owned()
                    } else {
                        escape_replayed(&info.reads.join(" > ")).into_owned()
                    }
                );
            }
            Err(e) => {
                if settings.require_server {
                    healthy = false;
                }
                say!(out, "server:       {url}: {e}");
            }
        },
    }
    console.stdout_line(out.trim_end())?;
    console.flush()?;
    Ok(if healthy { 0 } else { 1 })
}

/// Prints the server's statistics as JSON.
pub fn stats(settings: &Settings, console: &Console) -> Result<i32> {
    let Some(url) = &settings.server else {
        bail!("no server configured: pass --server URL or set PYCACHE_SERVER");
    };
    let stats = asked(url, settings)?.stats()?;
    console.stdout_line(&serde_json::to_string_pretty(&stats)?)?;
    console.flush()?;
    Ok(0)
}

/// A server asked directly by a command, where every failure is the answer.
fn asked(url: &str, settings: &Settings) -> Result<ServerClient> {
    Ok(ServerClient::with_transport(
        url,
        settings.token.clone(),
        settings.remote_timeout,
        &settings.transport,
    )?
    .with_connect_timeout(settings.connect_timeout)
    .with_namespace(settings.namespace.clone()))
}
