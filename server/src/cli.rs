//! The command line (clap derive), with `PYCACHE_*` environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use pycache_proto::api::Scope;
use pycache_proto::namespace::{parse_patterns, NamespacePattern};
use pycache_proto::KeyDigest;

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
    /// Delete stored entries (an admin's clean-up after an incident).
    #[command(subcommand)]
    Entries(EntriesCommand),
}

/// Entry management.
#[derive(Debug, Subcommand)]
pub enum EntriesCommand {
    /// Delete the entries that match every condition given (at least one is needed), and the
    /// bodies no entry holds any more.
    #[command(arg_required_else_help = true)]
    Purge {
        /// The conditions.
        #[command(flatten)]
        filter: PurgeArgs,
        /// The database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Which entries a purge deletes.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = true)]
pub struct PurgeArgs {
    /// Entries written by the token of this name.
    #[arg(long, value_name = "NAME", group = "condition")]
    pub written_by: Option<String>,
    /// Entries in this namespace.
    #[arg(long, value_name = "NS", group = "condition")]
    pub namespace: Option<String>,
    /// Entries of this key digest (64 hex digits), in every namespace unless one is given.
    #[arg(long, value_name = "KEY", group = "condition")]
    pub key: Option<KeyDigest>,
    /// Entries written at or after TIME: RFC 3339 (`2026-12-01T00:00:00Z`) or Unix seconds.
    #[arg(long, value_name = "TIME", value_parser = parse_time, group = "condition")]
    pub since: Option<i64>,
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
        /// Namespaces it may write, comma-separated: names (`main`), `PREFIX/*` (`pr/*`) or
        /// `*`. Default: `default` for write and admin tokens, none for read tokens.
        #[arg(long, value_name = "PATTERNS", value_parser = parse_pattern_list)]
        writes: Option<PatternList>,
        /// Namespaces it reads after the one its client names, in order, comma-separated
        /// (patterns let its client name any matching namespace). Default: `default`.
        #[arg(long, value_name = "NAMESPACES", value_parser = parse_pattern_list)]
        reads: Option<PatternList>,
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
        /// Also delete every entry the token wrote.
        #[arg(long)]
        purge: bool,
        /// The database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Where the store lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Directory for the default SQLite database (`pycache.db`) [default: pycache-data]; `serve`
    /// and `migrate` create it, the other commands need the server's own.
    #[arg(long, env = "PYCACHE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
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
    /// The namespaces a caller without a token reads, in order, comma-separated (with
    /// --public-read).
    #[arg(long, env = "PYCACHE_PUBLIC_NAMESPACES", default_value = "default",
          value_name = "NAMESPACES", value_parser = parse_pattern_list)]
    pub public_namespaces: PatternList,
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
    #[arg(long, env = "PYCACHE_MAX_HEAVY_REQUESTS",
          default_value_t = crate::config::DEFAULT_MAX_HEAVY_REQUESTS)]
    pub max_heavy_requests: usize,
    /// Most of those slots one token holds at once (all callers without a token count as one);
    /// past it its requests wait, then get 503 busy. Default: three quarters of
    /// --max-heavy-requests.
    #[arg(long, env = "PYCACHE_MAX_HEAVY_PER_TOKEN", value_name = "SLOTS")]
    pub max_heavy_per_token: Option<usize>,
    /// Seconds a batch request waits for a slot before it is answered 503 (busy, retry).
    #[arg(long, env = "PYCACHE_SLOT_WAIT", default_value_t = 5.0)]
    pub slot_wait: f64,
    /// Seconds an answer may wait for the client to read it before the connection is closed
    /// (a client that stops reading frees what it held).
    #[arg(long, env = "PYCACHE_SEND_TIMEOUT", default_value_t = 30.0)]
    pub send_timeout: f64,
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
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(
        long,
        env = "PYCACHE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "PYCACHE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Answer only requests addressed to HOST (the `Host` header, port ignored); others get 421.
    /// Repeatable; the environment variable takes a comma-separated list. With --public-read
    /// on a loopback address the default is localhost, 127.0.0.1 and ::1 (so that a web page
    /// of another site cannot read the cache by DNS rebinding); else every host is answered.
    #[arg(
        long = "allowed-host",
        env = "PYCACHE_ALLOWED_HOSTS",
        value_name = "HOST",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Directory where uploads are spooled while they arrive and are checked (unnamed
    /// temporary files; at most --max-heavy-requests uploads of --max-request-size each);
    /// default: the system's temporary directory (`TMPDIR`).
    #[arg(long, env = "PYCACHE_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    text.parse()
}

/// A comma-separated list of namespace patterns (one command-line value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternList(pub Vec<NamespacePattern>);

fn parse_pattern_list(text: &str) -> Result<PatternList, String> {
    parse_patterns(text)
        .map(PatternList)
        .map_err(|e| e.to_string())
}

/// A time on the command line: RFC 3339, or Unix seconds; as Unix milliseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.trim().parse::<i64>() {
        return seconds
            .checked_mul(1000)
            .ok_or_else(|| format!("{text:?} is out of range"));
    }
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            format!(
                "{text:?} is not a time ({e}): use RFC 3339 (2026-12-01T00:00:00Z) or Unix seconds"
            )
        })
}
