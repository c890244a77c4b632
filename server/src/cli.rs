//! The command line (clap derive), with `PYCACHE_*` environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use pycache_proto::api::Scope;

use crate::config::parse_size;

/// The shared pycache server. Without a subcommand it serves.
#[derive(Debug, Parser)]
#[command(
    name = "pycache-server",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve` when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the cache over HTTP (the default).
    Serve(ServeArgs),
    /// Apply database migrations and exit (serve also does this at start-up).
    Migrate(DatabaseArgs),
    /// Create, list or revoke bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// Token management.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once, alone on the last line of stdout.
    Create {
        /// What the token may do: read, write or admin.
        #[arg(long, value_parser = parse_scope)]
        scope: Scope,
        /// A unique name, used to list and revoke it.
        #[arg(long)]
        name: String,
        /// The database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List tokens (names and scopes, never the token text).
    List {
        /// The database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke the token called NAME.
    Revoke {
        /// The token's name.
        name: String,
        /// The database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Where the store lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Directory for the default SQLite database (`pycache.db`), created if missing.
    #[arg(long, env = "PYCACHE_DATA_DIR", default_value = "pycache-data")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`; overrides --data-dir.
    #[arg(long, env = "PYCACHE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long, env = "PYCACHE_LISTEN", default_value = "127.0.0.1:8437")]
    pub listen: SocketAddr,
    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Let anyone read entries and stats without a token (writes still need one).
    #[arg(long, env = "PYCACHE_PUBLIC_READ")]
    pub public_read: bool,
    /// Total size of stored entries; least-recently-used entries are evicted past it.
    /// `0` means no limit.
    #[arg(long, env = "PYCACHE_MAX_SIZE", default_value = "10GiB", value_parser = parse_size)]
    pub max_size: u64,
    /// Largest encoded entry accepted.
    #[arg(long, env = "PYCACHE_MAX_ENTRY_SIZE", default_value = "8MiB", value_parser = parse_size)]
    pub max_entry_size: u64,
    /// Largest request body accepted (a batch put or a batch get's JSON).
    #[arg(long, env = "PYCACHE_MAX_REQUEST_SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub max_request_size: u64,
    /// Most times its compressed size a zstd upload may decode to, past its first MiB (a zstd
    /// bomb is refused with 413 there); `0` means no such limit.
    #[arg(long, env = "PYCACHE_MAX_COMPRESSION_RATIO", default_value_t = 32)]
    pub max_compression_ratio: u64,
    /// Most keys in one batch get.
    #[arg(long, env = "PYCACHE_MAX_BATCH_KEYS", default_value_t = 50_000)]
    pub max_batch_keys: u64,
    /// Seconds between flushes of hit counts and eviction rounds.
    #[arg(long, env = "PYCACHE_MAINTENANCE_INTERVAL", default_value_t = 10.0)]
    pub maintenance_interval: f64,
    /// Heavy requests (batch get, uploads) served at once; more wait for a slot.
    #[arg(long, env = "PYCACHE_MAX_HEAVY_REQUESTS", default_value_t = 16)]
    pub max_heavy_requests: usize,
    /// Open connections at most (lowered to fit the open-file limit, whose soft value is
    /// raised to the hard one at start).
    #[arg(long, env = "PYCACHE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers.
    #[arg(long, env = "PYCACHE_HEADER_TIMEOUT", default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds a request body may take to arrive in full.
    #[arg(long, env = "PYCACHE_BODY_TIMEOUT", default_value_t = 60.0)]
    pub body_timeout: f64,
    /// Seconds a connection may sit idle (no request, no traffic) before it is closed.
    #[arg(long, env = "PYCACHE_IDLE_TIMEOUT", default_value_t = 60.0)]
    pub idle_timeout: f64,
    /// Directory where uploads are spooled while they arrive and are checked (unnamed
    /// temporary files; at most --max-heavy-requests uploads of --max-request-size each);
    /// default: the system's temporary directory (`TMPDIR`).
    #[arg(long, env = "PYCACHE_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    text.parse()
}
