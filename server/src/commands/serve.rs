//! `pycache-server serve`: open the store, bind, print the address, serve until a signal.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use super::{database_url, open_store, NewDatabase};
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::connections::{fit_to_fd_limit, ConnectionLimits};
use crate::state::AppState;
use crate::store::redact_url;

/// Serves until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = config(&args)?;
    let url = database_url(&args.database, NewDatabase::Create)?;
    let store = open_store(&args.database, NewDatabase::Create).await?;
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {}: is another server using the port? pick another --listen",
            args.listen
        )
    })?;
    let addr = listener
        .local_addr()
        .context("the listener has no address")?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, scheme, database = %redact_url(&url), ?config, "pycache-server ready");
    // Scripts and tests read this line to learn the port when --listen ends in :0.
    println!("listening on {addr}");
    std::io::stdout().flush().ok();
    crate::serve(listener, AppState::new(store, config), shutdown_signal())
        .await
        .context("the server stopped with an error")?;
    tracing::info!("stopped");
    Ok(())
}

/// Longest timeout or interval accepted: a week.
const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

fn config(args: &ServeArgs) -> anyhow::Result<Config> {
    // Bounds that keep every timer meaningful: below them connections or the maintenance task
    // spin, above them a duration overflows.
    let seconds = |value: f64, flag: &str, min: f64| -> anyhow::Result<Duration> {
        anyhow::ensure!(
            value.is_finite() && (min..=MAX_SECONDS).contains(&value),
            "{flag} must be between {min} and {MAX_SECONDS} seconds, not {value}"
        );
        Ok(Duration::from_secs_f64(value))
    };
    let maintenance_interval = seconds(args.maintenance_interval, "--maintenance-interval", 0.01)?;
    let max_connections = fit_to_fd_limit(args.max_connections.max(1));
    if max_connections < args.max_connections {
        tracing::warn!(
            wanted = args.max_connections,
            max_connections,
            "the open-file limit allows fewer connections than --max-connections"
        );
    }
    let max_heavy_requests = args.max_heavy_requests.max(1);
    let max_heavy_per_token = match args.max_heavy_per_token {
        None => crate::config::default_heavy_per_token(max_heavy_requests),
        Some(share) => {
            anyhow::ensure!(
                (1..=max_heavy_requests).contains(&share),
                "--max-heavy-per-token must be between 1 and --max-heavy-requests                  ({max_heavy_requests}), not {share}: it is the most of those slots one token                  holds at once"
            );
            share
        }
    };
    Ok(Config {
        public_read: args.public_read,
        public_namespaces: args.public_namespaces.0.clone(),
        max_entry_bytes: args.max_entry_size,
        max_request_bytes: args.max_request_size,
        max_compression_ratio: args.max_compression_ratio,
        max_batch_keys: args.max_batch_keys,
        max_store_bytes: (args.max_size > 0).then_some(args.max_size),
        maintenance_interval,
        max_heavy_requests,
        max_heavy_per_token,
        slot_wait: seconds(args.slot_wait, "--slot-wait", 0.01)?,
        body_timeout: seconds(args.body_timeout, "--body-timeout", 1.0)?,
        connections: ConnectionLimits {
            max_connections,
            header_timeout: seconds(args.header_timeout, "--header-timeout", 1.0)?,
            idle_timeout: seconds(args.idle_timeout, "--idle-timeout", 1.0)?,
            send_timeout: seconds(args.send_timeout, "--send-timeout", 1.0)?,
        },
        allowed_hosts: allowed_hosts(args),
        spool_dir: crate::spool::check_dir(
            &args.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
        )?,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(crate::config::tls_config(cert, key)?),
            _ => None,
        },
    })
}

/// The hosts the server answers: `--allowed-host`; with `--public-read` on a loopback address,
/// the loopback names; else every host (`None`, with a warning when anyone may read).
/// Empty names (`PYCACHE_ALLOWED_HOSTS=`) count as none given.
fn allowed_hosts(args: &ServeArgs) -> Option<Vec<String>> {
    use crate::routes::host::{normalize_host, LOOPBACK_HOSTS};
    let listed: Vec<String> = args
        .allowed_hosts
        .iter()
        .map(|h| normalize_host(h))
        .filter(|h| !h.is_empty())
        .collect();
    if !listed.is_empty() {
        return Some(listed);
    }
    if !args.public_read {
        return None;
    }
    if args.listen.ip().is_loopback() {
        return Some(LOOPBACK_HOSTS.map(str::to_owned).to_vec());
    }
    tracing::warn!(
        listen = %args.listen,
        "--public-read without --allowed-host: the server answers requests for any host name, \
         so a web page of another site that makes its name resolve to this address (DNS \
         rebinding) can read the cache from a browser inside your network; name the hosts \
         clients use with --allowed-host (PYCACHE_ALLOWED_HOSTS)"
    );
    None
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
