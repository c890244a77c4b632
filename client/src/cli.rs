//! The command line (clap derive). Global options come before the subcommand; `compileall`
//! takes compileall's own arguments verbatim.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

/// The heading of the options every subcommand takes, listed after the subcommand's own.
const GLOBAL: &str = "Global options";

/// A shared build cache for Python bytecode: a faster, drop-in `python -m compileall`.
#[derive(Debug, Parser)]
#[command(name = "pycache-client", version, about, propagate_version = true)]
pub struct Cli {
    /// The target Python interpreter (else PYCACHE_PYTHON, [tool.pycache] python, the active
    /// virtualenv, for sync and verify the project's .venv, the virtualenv pycache-client is
    /// installed in, python3).
    #[arg(long, global = true, help_heading = GLOBAL, env = "PYCACHE_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// The local cache directory (default: the user's cache dir, e.g. ~/.cache/pycache).
    #[arg(long, global = true, help_heading = GLOBAL, env = "PYCACHE_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The most the local cache may hold (e.g. 500MiB, 10GiB; default 2GiB); least recently
    /// used entries are evicted past it.
    #[arg(long, global = true, help_heading = GLOBAL, env = "PYCACHE_CACHE_SIZE", value_name = "SIZE", value_parser = parse_cache_size)]
    pub cache_size: Option<u64>,
    /// Do not read the user config file ($XDG_CONFIG_HOME/pycache/config.toml, or
    /// PYCACHE_CONFIG_FILE).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_config: bool,
    /// Do not read or write the local cache.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_local_cache: bool,
    /// Number of Python worker processes for cache misses (default: one per core).
    #[arg(short = 'j', long = "jobs", global = true, help_heading = GLOBAL, env = "PYCACHE_JOBS", value_name = "N")]
    pub jobs: Option<usize>,
    /// The pycache server URL.
    #[arg(long, global = true, help_heading = GLOBAL, env = "PYCACHE_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The bearer token for the server.
    #[arg(
        long,
        global = true, help_heading = GLOBAL,
        env = "PYCACHE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The server namespace this client writes to and looks in first (e.g. main, pr/1234; default:
    /// the one the token names).
    #[arg(long, global = true, help_heading = GLOBAL, env = "PYCACHE_NAMESPACE", value_name = "NAME")]
    pub namespace: Option<String>,
    /// A PEM file of CA certificates to trust for an https:// server, besides the built-in roots
    /// (`SSL_CERT_FILE` is trusted too).
    #[arg(long, global = true, help_heading = GLOBAL, env = "PYCACHE_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Send the token over plain http:// to a server that is not on this machine (anyone on the
    /// network path can read it and change what is served).
    #[arg(long, global = true, help_heading = GLOBAL, env = "PYCACHE_ALLOW_INSECURE_HTTP",
          value_parser = clap::builder::FalseyValueParser::new())]
    pub allow_insecure_http: bool,
    /// A file holding the secret key (`NAME:BASE64`, from `pycache-client key generate`) that
    /// signs every entry this client uploads.
    #[arg(
        long = "signing-key",
        global = true, help_heading = GLOBAL,
        env = "PYCACHE_SIGNING_KEY_FILE",
        value_name = "FILE"
    )]
    pub signing_key_file: Option<PathBuf>,
    /// A public key (`NAME:BASE64`) whose signature makes a server entry usable (repeatable;
    /// else PYCACHE_TRUSTED_KEYS, space or comma separated). With any set, entries no trusted
    /// key signed are compiled locally.
    #[arg(long = "trusted-key", global = true, help_heading = GLOBAL, value_name = "NAME:BASE64")]
    pub trusted_keys: Vec<String>,
    /// Fail the run when the server cannot be used (default: warn and compile locally).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub require_server: bool,
    /// Deadline of one request to the server, in seconds (default 10).
    #[arg(long, global = true, help_heading = GLOBAL, env = "PYCACHE_TIMEOUT", value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// How long the server may take to accept a connection and answer the first request (its
    /// limits), in seconds (default 2); past it the run compiles without the server.
    #[arg(
        long,
        global = true,
        env = "PYCACHE_CONNECT_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub connect_timeout: Option<f64>,
    /// How long one file may take to compile before its worker is killed, in seconds (default 120).
    #[arg(
        long,
        global = true, help_heading = GLOBAL,
        env = "PYCACHE_COMPILE_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub compile_timeout: Option<f64>,
    /// What the client logs on stderr, as a `tracing` filter (`debug`, `pycache_client=trace`).
    #[arg(long, global = true, help_heading = GLOBAL, env = "PYCACHE_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drop-in for `python -m compileall [ARGS]`: same options, output, exit status and files.
    #[command(disable_help_flag = true)]
    Compileall {
        /// compileall's arguments, passed as they are.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Bring the __pycache__ of a project up to date (default: the current directory), for the
    /// project's interpreter.
    Sync(SyncArgs),
    /// Recompile what the local cache and the server would serve for a project and compare;
    /// exit 1 on any mismatch. Writes no .pyc file.
    Verify(VerifyArgs),
    /// Show the resolved settings, the interpreter, the local cache and the server's answer.
    Status,
    /// Show the server's statistics (JSON).
    Stats,
    /// Inspect and manage the local cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Make and show signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a shell completion script (e.g. `pycache-client completions bash > ~/.local/share/bash-completion/completions/pycache-client`).
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// `pycache-client cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Entries, bytes, the size limit, and hits (this cache's and the server's) and compiles
    /// per interpreter and day.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Then set the statistics to zero (the entries stay), as `ccache -z` does.
        #[arg(short = 'z', long)]
        zero_stats: bool,
    },
    /// Evict least recently used entries down to the size limit and delete earlier layouts'
    /// directories. A limit given (`--cache-size`) is kept by the store for later runs that
    /// set none.
    Prune {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete every entry (the statistics stay).
    Clear {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the local cache directory.
    Path,
}

/// `pycache-client key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make an ed25519 key pair: the secret key goes to FILE (created with mode 0600, never
    /// overwritten) or to stdout, and the public key `NAME:BASE64` — the line readers put in
    /// `trusted-keys` — is printed.
    Generate {
        /// The key's name (1 to 64 letters, digits, `.`, `_`, `-`), e.g. `ci.example.org-1`.
        #[arg(value_name = "NAME")]
        name: String,
        /// Where to write the secret key (default: stdout, before the public key).
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
    },
}

/// A size setting: `512MiB`, `10GiB`, `2G`, bytes.
pub fn parse_cache_size(text: &str) -> Result<u64, String> {
    pycache_proto::size::parse_size(text)
}

/// `pycache-client sync` options.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Files and directories to compile.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Compile a virtual environment's site-packages with that environment's own interpreter
    /// (default: the active environment, else the project's .venv beside the nearest
    /// pyproject.toml, else ./.venv).
    #[arg(long, value_name = "PATH", num_args = 0..=1, conflicts_with = "paths")]
    pub venv: Option<Option<PathBuf>>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Recompile even when the .pyc files are up to date.
    #[arg(short, long)]
    pub force: bool,
    /// Optimization level to compile for: -1 (the interpreter's own), 0, 1 (-O) or 2 (-OO);
    /// repeatable (default: the interpreter's).
    #[arg(short = 'o', long = "optimize", value_name = "LEVEL", allow_negative_numbers = true, value_parser = parse_optimization_level)]
    pub optimize: Vec<i64>,
    /// Skip files whose path matches this regular expression (repeatable; replaces
    /// `[tool.pycache] exclude`).
    #[arg(short = 'x', long = "exclude", value_name = "REGEX")]
    pub exclude: Vec<String>,
    /// Walk into every directory, also those skipped by default (.venv, venv, .git, .tox,
    /// .nox, node_modules, site-packages, build, dist, ... the ones ruff skips).
    #[arg(long)]
    pub no_default_excludes: bool,
    /// How the .pyc records freshness: timestamp, checked-hash or unchecked-hash.
    #[arg(long, value_name = "MODE")]
    pub invalidation_mode: Option<String>,
    /// -q: no progress bar (the summary and compile errors stay); -qq: nothing on stderr but
    /// pycache's warnings (the exit status still says whether every file compiled).
    #[arg(short, long, action = ArgAction::Count)]
    pub quiet: u8,
}

/// `pycache-client verify` options.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Files and directories to verify (default: the current directory).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print a JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print a line for every entry checked, not only mismatches.
    #[arg(short, long)]
    pub verbose: bool,
    /// Delete every mismatching entry: from the server (needs an admin token) and from the
    /// local cache.
    #[arg(long)]
    pub purge_mismatches: bool,
    /// Optimization level to verify: -1 (the interpreter's own), 0, 1 (-O) or 2 (-OO);
    /// repeatable (default: the interpreter's).
    #[arg(short = 'o', long = "optimize", value_name = "LEVEL", allow_negative_numbers = true, value_parser = parse_optimization_level)]
    pub optimize: Vec<i64>,
    /// Skip files whose path matches this regular expression (repeatable; replaces
    /// `[tool.pycache] exclude`).
    #[arg(short = 'x', long = "exclude", value_name = "REGEX")]
    pub exclude: Vec<String>,
    /// Walk into every directory, also those `sync` skips by default.
    #[arg(long)]
    pub no_default_excludes: bool,
}

/// An optimization level of `-o`: what it means and which values exist, when it is none.
pub fn parse_optimization_level(text: &str) -> Result<i64, String> {
    match text.trim().parse::<i64>() {
        Ok(level) if (-1..=2).contains(&level) => Ok(level),
        _ => Err(format!(
            "{text:?} is not an optimization level: -o/--optimize is the level to compile for, \
             one of -1, 0, 1 or 2 (-1: the interpreter's own; 1: as python -O, asserts removed; \
             2: as python -OO, docstrings removed too)"
        )),
    }
}

/// Long options of pycache that may also follow `compileall` (none clashes with compileall's).
pub const PYCACHE_OPTIONS_WITH_VALUE: [&str; 14] = [
    "--python",
    "--cache-dir",
    "--cache-size",
    "--jobs",
    "--server",
    "--token",
    "--namespace",
    "--ca-cert",
    "--signing-key",
    "--trusted-key",
    "--timeout",
    "--connect-timeout",
    "--compile-timeout",
    "--log",
];
/// Flag options of pycache that may also follow `compileall`.
pub const PYCACHE_FLAGS: [&str; 4] = [
    "--no-config",
    "--no-local-cache",
    "--require-server",
    "--allow-insecure-http",
];
