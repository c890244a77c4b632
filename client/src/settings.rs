//! Settings, resolved once: command line > environment > `[tool.pycache]` in pyproject.toml >
//! defaults.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use pycache_proto::signature::{SigningKey, TrustedKey};
use serde::Deserialize;

use crate::cli::{Cli, PYCACHE_FLAGS, PYCACHE_OPTIONS_WITH_VALUE};

/// A secret that never shows in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// Environment variables that carry a secret or say where one is. Every interpreter process the
/// client starts has them removed: the interpreter runs code the client does not control (a
/// dependency's `.pth` file, `sitecustomize`), which must not read the client's credentials.
pub const SECRET_ENV_VARS: [&str; 2] = ["PYCACHE_TOKEN", "PYCACHE_SIGNING_KEY_FILE"];

/// Removes [`SECRET_ENV_VARS`] from the environment `command` will run with.
pub fn hide_secrets(command: &mut std::process::Command) -> &mut std::process::Command {
    for name in SECRET_ENV_VARS {
        command.env_remove(name);
    }
    command
}

/// `[tool.pycache]` of pyproject.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProjectConfig {
    /// Server URL.
    pub server: Option<String>,
    /// Server namespace to write to and look in first (e.g. `main`, `pr/1234`).
    pub namespace: Option<String>,
    /// Target interpreter.
    pub python: Option<PathBuf>,
    /// A file holding the secret key that signs uploads (relative to the pyproject's folder).
    pub signing_key_file: Option<PathBuf>,
    /// Public keys (`NAME:BASE64`) whose signatures make server entries usable.
    pub trusted_keys: Option<Vec<String>>,
    /// Optimization levels for `sync`.
    pub optimize: Option<Vec<i64>>,
    /// Exclude regex for `sync`.
    pub exclude: Option<String>,
    /// Local cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Local cache size limit: bytes, or a size like "500MiB".
    pub cache_size: Option<SizeSetting>,
    /// Worker count.
    pub jobs: Option<usize>,
    /// Deadline of one server request, in seconds.
    pub timeout: Option<f64>,
    /// How long connecting to the server and its first answer may take, in seconds.
    pub connect_timeout: Option<f64>,
    /// Per-file compile timeout, in seconds.
    pub compile_timeout: Option<f64>,
}

/// A size in pyproject.toml: a number of bytes or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeSetting {
    /// Bytes.
    Bytes(u64),
    /// `500MiB`, `10GiB` …
    Text(String),
}

/// Deadline of one server request when nothing sets it.
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to the server and its first answer may take when nothing sets it: a
/// server that accepts connections and never answers costs this, not the request deadline.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Per-file compile timeout when nothing sets it.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// How the client reaches servers: certificate authorities to trust besides the built-in roots,
/// and whether a token may cross a network in the clear.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// PEM files of CA certificates to trust (`--ca-cert`, `SSL_CERT_FILE`).
    pub ca_certs: Vec<PathBuf>,
    /// Send a token over plain `http://` to a host that is not this machine.
    pub allow_insecure_http: bool,
}

/// Everything a command needs, resolved once. Every setting the client reads is here; the
/// modules below the commands get plain values taken from it, never the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Explicit interpreter (`--python`, `PYCACHE_PYTHON`, `[tool.pycache] python`), if any.
    pub python: Option<PathBuf>,
    /// The active virtualenv (`VIRTUAL_ENV`), the next choice of interpreter.
    pub virtual_env: Option<PathBuf>,
    /// Local cache directory.
    pub cache_dir: PathBuf,
    /// Use the local cache.
    pub local_cache: bool,
    /// The most the local cache may hold.
    pub cache_size: u64,
    /// Worker count.
    pub jobs: usize,
    /// Server URL.
    pub server: Option<String>,
    /// Server token.
    pub token: Option<Secret>,
    /// The server namespace this client writes to and looks in first (`--namespace`,
    /// `PYCACHE_NAMESPACE`, `[tool.pycache] namespace`), validated; `None`: the token's own.
    pub namespace: Option<String>,
    /// CA certificates to trust (`--ca-cert`, `SSL_CERT_FILE`) and whether a token may go over
    /// plain http across a network (`--allow-insecure-http`).
    pub transport: Transport,
    /// The secret key that signs every upload (`--signing-key`, `PYCACHE_SIGNING_KEY_FILE`,
    /// `[tool.pycache] signing-key-file`), read once.
    pub signing_key: Option<Arc<SigningKey>>,
    /// The public keys a server entry must be signed by to be used (`--trusted-key`,
    /// `PYCACHE_TRUSTED_KEYS`, `[tool.pycache] trusted-keys`); empty: entries are not checked
    /// for signatures.
    pub trusted_keys: Arc<[TrustedKey]>,
    /// Server failures are fatal.
    pub require_server: bool,
    /// Deadline of one request to the server.
    pub remote_timeout: Duration,
    /// How long connecting to the server and its first answer may take.
    pub connect_timeout: Duration,
    /// How long one compile may take before its worker is killed.
    pub compile_timeout: Duration,
    /// The `tracing` filter for the client's log on stderr (`PYCACHE_LOG`; `PYCACHE_DEBUG`
    /// means `debug`); `None`: warnings of the client's own modules only.
    pub log_filter: Option<String>,
    /// `SOURCE_DATE_EPOCH` is set and non-empty: py_compile's default mode is checked-hash.
    pub source_date_epoch: bool,
    /// Test hook (`PYCACHE_TEST_WORKER_GATE`): workers start only once this file exists.
    pub worker_gate: Option<PathBuf>,
    /// `[tool.pycache]` optimize levels.
    pub optimize: Option<Vec<i64>>,
    /// `[tool.pycache]` exclude.
    pub exclude: Option<String>,
    /// Where the project config came from.
    pub config_file: Option<PathBuf>,
}

impl Settings {
    /// Resolves the settings from the parsed command line and the project file found from `cwd`.
    pub fn resolve(cli: &Cli, cwd: &Path) -> Result<Self> {
        let (project, config_file) = load_project_config(cwd)?;
        let cache_dir = cli
            .cache_dir
            .clone()
            .or_else(|| project.cache_dir.clone())
            .or_else(|| dirs::cache_dir().map(|d| d.join("pycache")))
            .unwrap_or_else(|| PathBuf::from(".pycache-cache"));
        let jobs = cli
            .jobs
            .or(project.jobs)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1);
        let seconds = |value: Option<f64>, what: &str| -> Result<Option<Duration>> {
            match value {
                None => Ok(None),
                Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
                Some(s) => anyhow::bail!(
                    "{what} must be a positive number of seconds, not {s} (check the command line, the environment and [tool.pycache])"
                ),
            }
        };
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let cache_size = match (cli.cache_size, &project.cache_size) {
            (Some(n), _) => n,
            (None, Some(SizeSetting::Bytes(n))) => *n,
            (None, Some(SizeSetting::Text(t))) => pycache_proto::size::parse_size(t)
                .map_err(|e| anyhow::anyhow!("[tool.pycache] cache-size: {e}"))?,
            (None, None) => crate::local_cache::DEFAULT_SIZE_LIMIT,
        };
        let namespace = resolve_namespace(cli.namespace.as_deref(), project.namespace.as_deref())
            .with_context(|| {
            match (
                cli.namespace.as_deref().filter(|n| !n.is_empty()),
                &config_file,
            ) {
                (Some(_), _) | (None, None) => {
                    "the namespace setting (--namespace / PYCACHE_NAMESPACE) is invalid".to_owned()
                }
                (None, Some(file)) => {
                    format!("[tool.pycache] namespace in {} is invalid", file.display())
                }
            }
        })?;
        let signing_key = resolve_signing_key(
            cli.signing_key_file.as_deref(),
            project.signing_key_file.as_deref(),
            config_file.as_deref(),
        )?;
        let trusted_keys = resolve_trusted_keys(
            &cli.trusted_keys,
            env("PYCACHE_TRUSTED_KEYS").as_deref(),
            project.trusted_keys.as_deref(),
            config_file.as_deref(),
        )?;
        Ok(Settings {
            python: cli.python.clone().or(project.python.clone()),
            virtual_env: env("VIRTUAL_ENV").map(PathBuf::from),
            cache_dir,
            local_cache: !cli.no_local_cache,
            cache_size,
            jobs,
            server: cli
                .server
                .clone()
                .or(project.server.clone())
                .filter(|s| !s.is_empty()),
            token: cli.token.clone().filter(|t| !t.is_empty()).map(Secret),
            namespace,
            transport: Transport {
                ca_certs: cli
                    .ca_cert
                    .iter()
                    .cloned()
                    .chain(env("SSL_CERT_FILE").map(PathBuf::from))
                    .collect(),
                allow_insecure_http: cli.allow_insecure_http,
            },
            signing_key,
            trusted_keys,
            require_server: cli.require_server,
            remote_timeout: seconds(cli.timeout.or(project.timeout), "the server timeout")?
                .unwrap_or(DEFAULT_REMOTE_TIMEOUT),
            connect_timeout: seconds(
                cli.connect_timeout.or(project.connect_timeout),
                "the server connect timeout",
            )?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            compile_timeout: seconds(
                cli.compile_timeout.or(project.compile_timeout),
                "the compile timeout",
            )?
            .unwrap_or(DEFAULT_COMPILE_TIMEOUT),
            log_filter: cli
                .log
                .clone()
                .filter(|l| !l.is_empty())
                .or_else(|| env("PYCACHE_DEBUG").map(|_| "debug".to_owned())),
            source_date_epoch: env("SOURCE_DATE_EPOCH").is_some(),
            worker_gate: env("PYCACHE_TEST_WORKER_GATE").map(PathBuf::from),
            optimize: project.optimize,
            exclude: project.exclude,
            config_file,
        })
    }
}

/// The namespace from the command line or environment (clap merges the two), else the project
/// file; an empty value counts as unset. Checked against the server's rules here, so a bad name
/// fails before anything runs.
fn resolve_namespace(cli: Option<&str>, project: Option<&str>) -> Result<Option<String>> {
    let Some(name) = cli.filter(|n| !n.is_empty()).or(project) else {
        return Ok(None);
    };
    pycache_proto::namespace::validate_namespace(name)?;
    Ok(Some(name.to_owned()))
}

/// Reads the signing key from the file the command line or environment names (clap merges the
/// two), else the one `[tool.pycache] signing-key-file` names (relative to the pyproject's
/// folder). The error names the file and the setting that chose it.
fn resolve_signing_key(
    cli: Option<&Path>,
    project: Option<&Path>,
    config_file: Option<&Path>,
) -> Result<Option<Arc<SigningKey>>> {
    let (file, setting) = match (cli.filter(|f| !f.as_os_str().is_empty()), project) {
        (Some(file), _) => (
            file.to_path_buf(),
            "--signing-key / PYCACHE_SIGNING_KEY_FILE".to_owned(),
        ),
        (None, Some(file)) => {
            let base = config_file.and_then(Path::parent).unwrap_or(Path::new(""));
            let shown = config_file.map_or_else(String::new, |f| format!(" in {}", f.display()));
            (
                base.join(file),
                format!("[tool.pycache] signing-key-file{shown}"),
            )
        }
        (None, None) => return Ok(None),
    };
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "could not read the signing key file {} (set by {setting})",
            file.display()
        )
    })?;
    let key = SigningKey::parse(text.trim()).with_context(|| {
        format!(
            "the signing key file {} (set by {setting}) does not hold a secret key as `pycache-client key generate` writes it",
            file.display()
        )
    })?;
    Ok(Some(Arc::new(key)))
}

/// The trusted keys from the command line, else `PYCACHE_TRUSTED_KEYS` (space or comma
/// separated), else `[tool.pycache] trusted-keys`; each layer replaces the ones below it.
fn resolve_trusted_keys(
    cli: &[String],
    env: Option<&std::ffi::OsStr>,
    project: Option<&[String]>,
    config_file: Option<&Path>,
) -> Result<Arc<[TrustedKey]>> {
    let parse = |texts: &[&str], setting: &str| -> Result<Arc<[TrustedKey]>> {
        let mut keys = Vec::new();
        for text in texts {
            keys.extend(
                pycache_proto::signature::parse_trusted_keys(text)
                    .with_context(|| format!("{setting} holds an invalid trusted key"))?,
            );
        }
        Ok(keys.into())
    };
    if !cli.is_empty() {
        let texts: Vec<&str> = cli.iter().map(String::as_str).collect();
        return parse(&texts, "--trusted-key");
    }
    if let Some(env) = env {
        let text = env
            .to_str()
            .context("PYCACHE_TRUSTED_KEYS is not valid UTF-8")?;
        return parse(&[text], "PYCACHE_TRUSTED_KEYS");
    }
    let Some(project) = project else {
        return Ok(Arc::from([]));
    };
    let texts: Vec<&str> = project.iter().map(String::as_str).collect();
    let shown = config_file.map_or_else(String::new, |f| format!(" in {}", f.display()));
    parse(&texts, &format!("[tool.pycache] trusted-keys{shown}"))
}

/// Finds the nearest pyproject.toml at or above `cwd` and reads `[tool.pycache]`.
pub fn load_project_config(cwd: &Path) -> Result<(ProjectConfig, Option<PathBuf>)> {
    for dir in cwd.ancestors() {
        let file = dir.join("pyproject.toml");
        if !file.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("could not read {}", file.display()))?;
        let doc: toml::Value = toml::from_str(&text).with_context(|| {
            format!("{} is not valid TOML; fix it or remove it", file.display())
        })?;
        let Some(section) = doc.get("tool").and_then(|t| t.get("pycache")) else {
            return Ok((ProjectConfig::default(), Some(file)));
        };
        let config: ProjectConfig = section
            .clone()
            .try_into()
            .with_context(|| format!("[tool.pycache] in {} is invalid", file.display()))?;
        return Ok((config, Some(file)));
    }
    Ok((ProjectConfig::default(), None))
}

/// Moves pycache's own long options out of compileall's arguments and back in front of the
/// subcommand, so `pycache-client compileall --python X -q dir` works too.
pub fn split_compileall_args(args: Vec<OsString>) -> (Vec<OsString>, Vec<OsString>) {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let text = arg.to_str().unwrap_or("");
        if text == "--" {
            theirs.push(arg);
            theirs.extend(it.by_ref());
            break;
        }
        let name = text.split('=').next().unwrap_or("");
        if PYCACHE_OPTIONS_WITH_VALUE.contains(&name) {
            let has_inline = text.contains('=');
            ours.push(arg);
            if !has_inline {
                if let Some(v) = it.next() {
                    ours.push(v);
                }
            }
        } else if PYCACHE_FLAGS.contains(&text) {
            ours.push(arg);
        } else {
            theirs.push(arg);
        }
    }
    (ours, theirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pycache_options_are_split_from_compileall_ones() {
        let args: Vec<OsString> = [
            "--python",
            "/x/python",
            "-q",
            "--jobs=3",
            "--workers",
            "2",
            "dir",
            "--no-local-cache",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let (ours, theirs) = split_compileall_args(args);
        assert_eq!(
            ours,
            ["--python", "/x/python", "--jobs=3", "--no-local-cache"].map(OsString::from)
        );
        assert_eq!(theirs, ["-q", "--workers", "2", "dir"].map(OsString::from));
    }

    #[test]
    fn command_line_beats_project_beats_defaults() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.pycache]\ntimeout = 3\ncompile-timeout = 7\njobs = 5\n",
        )
        .unwrap();
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(["pycache-client"].iter().chain(args).chain(&["status"]))
                .unwrap();
            Settings::resolve(&cli, dir.path()).unwrap()
        };
        let from_project = parse(&[]);
        assert_eq!(from_project.remote_timeout, Duration::from_secs(3));
        assert_eq!(from_project.compile_timeout, Duration::from_secs(7));
        assert_eq!(from_project.jobs, 5);
        let from_cli = parse(&["--timeout", "1.5", "--jobs", "2"]);
        assert_eq!(from_cli.remote_timeout, Duration::from_millis(1500));
        assert_eq!(from_cli.jobs, 2);
        assert_eq!(from_cli.compile_timeout, Duration::from_secs(7));
        let cli = Cli::try_parse_from(["pycache-client", "--timeout=0", "status"]).unwrap();
        let err = Settings::resolve(&cli, dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("positive number of seconds"),
            "{err:#}"
        );
        std::fs::remove_file(dir.path().join("pyproject.toml")).unwrap();
        let defaults = parse(&[]);
        assert_eq!(defaults.remote_timeout, DEFAULT_REMOTE_TIMEOUT);
        assert_eq!(defaults.compile_timeout, DEFAULT_COMPILE_TIMEOUT);
    }

    #[test]
    fn namespace_comes_from_the_command_line_else_the_project_and_is_checked() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let pyproject = dir.path().join("pyproject.toml");
        std::fs::write(&pyproject, "[tool.pycache]\nnamespace = 'pr/7'\n").unwrap();
        let resolve = |args: &[&str]| {
            let cli = Cli::try_parse_from(["pycache-client"].iter().chain(args).chain(&["status"]))
                .unwrap();
            Settings::resolve(&cli, dir.path())
        };
        assert_eq!(resolve(&[]).unwrap().namespace.as_deref(), Some("pr/7"));
        let named = resolve(&["--namespace", "main"]).unwrap();
        assert_eq!(named.namespace.as_deref(), Some("main"));
        let err = resolve(&["--namespace", "../x"]).unwrap_err();
        assert!(format!("{err:#}").contains("--namespace"), "{err:#}");
        std::fs::write(&pyproject, "[tool.pycache]\nnamespace = 'a b'\n").unwrap();
        let err = resolve(&[]).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("[tool.pycache] namespace") && text.contains("not a valid namespace"),
            "{text}"
        );
        std::fs::remove_file(&pyproject).unwrap();
        assert_eq!(resolve(&[]).unwrap().namespace, None);
    }

    #[test]
    fn project_config_is_read_from_the_nearest_pyproject() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.pycache]\noptimize = [0, 1]\nexclude = 'tests/'\n",
        )
        .unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let (cfg, file) = load_project_config(&sub).unwrap();
        assert_eq!(cfg.optimize, Some(vec![0, 1]));
        assert_eq!(cfg.exclude.as_deref(), Some("tests/"));
        assert_eq!(file.unwrap(), dir.path().join("pyproject.toml"));
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.pycache]\nbogus = 1\n",
        )
        .unwrap();
        let err = load_project_config(&sub).unwrap_err();
        assert!(format!("{err:#}").contains("[tool.pycache]"), "{err:#}");
    }
}
