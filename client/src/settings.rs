//! Settings, resolved once: command line > environment > `[tool.pycache]` in pyproject.toml >
//! the user config file (`$XDG_CONFIG_HOME/pycache/config.toml`) > defaults.

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

/// Names the user config file in place of `$XDG_CONFIG_HOME/pycache/config.toml`.
pub const CONFIG_FILE_ENV: &str = "PYCACHE_CONFIG_FILE";

/// `[tool.pycache]` of pyproject.toml; the user config file holds the same keys at its top
/// level (all but `python`).
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
    /// Exclude regexes for `sync`: one, or a list (a path matching any is skipped).
    pub exclude: Option<Patterns>,
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

/// One regular expression or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Patterns {
    /// `exclude = "tests/"`.
    One(String),
    /// `exclude = ["tests/", "docs/"]`.
    Many(Vec<String>),
}

impl Patterns {
    /// The patterns as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Patterns::One(p) => vec![p],
            Patterns::Many(ps) => ps,
        }
    }
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
    /// The project's virtualenv: `.venv` beside the nearest pyproject.toml (as uv finds a
    /// project's environment), the choice after the active one for `sync` and `verify`.
    pub project_env: Option<PathBuf>,
    /// Local cache directory.
    pub cache_dir: PathBuf,
    /// Use the local cache.
    pub local_cache: bool,
    /// The most the local cache may hold, when a setting says; `None`: the limit the store
    /// remembers (`cache prune --cache-size`), else the default.
    pub cache_size: Option<u64>,
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
    /// `[tool.pycache]` exclude patterns (else the user config file's).
    pub exclude: Vec<String>,
    /// Where the project config came from.
    pub config_file: Option<PathBuf>,
    /// The user config file that was read, if any.
    pub user_config_file: Option<PathBuf>,
}

impl Settings {
    /// Resolves the settings from the parsed command line and the project file found from `cwd`.
    pub fn resolve(cli: &Cli, cwd: &Path) -> Result<Self> {
        let (project, config_file) = load_project_config(cwd)?;
        let (user, user_config_file) = if cli.no_config {
            (ProjectConfig::default(), None)
        } else {
            load_user_config(&UserConfigPlace::from_env())?
        };
        let cache_dir = cli
            .cache_dir
            .clone()
            .or_else(|| project.cache_dir.clone())
            .or_else(|| user.cache_dir.clone())
            .or_else(|| dirs::cache_dir().map(|d| d.join("pycache")))
            .unwrap_or_else(|| PathBuf::from(".pycache-cache"));
        let jobs = cli
            .jobs
            .or(project.jobs)
            .or(user.jobs)
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
                    "{what} must be a positive number of seconds, not {s} (check the command line, the environment, [tool.pycache] and the user config file)"
                ),
            }
        };
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        // Which file a file setting came from, for messages and relative paths.
        let project_layer = Layer::Project(config_file.as_deref());
        let user_layer = Layer::User(user_config_file.as_deref());
        let size_from = |layer: Layer<'_>, size: &SizeSetting| -> Result<u64> {
            match size {
                SizeSetting::Bytes(n) => Ok(*n),
                SizeSetting::Text(t) => pycache_proto::size::parse_size(t)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", layer.setting("cache-size"))),
            }
        };
        let cache_size = match (cli.cache_size, &project.cache_size, &user.cache_size) {
            (Some(n), _, _) => Some(n),
            (None, Some(size), _) => Some(size_from(project_layer, size)?),
            (None, None, Some(size)) => Some(size_from(user_layer, size)?),
            (None, None, None) => None,
        };
        let cli_namespace = cli.namespace.as_deref().filter(|n| !n.is_empty());
        let (namespace_text, namespace_layer) = match (cli_namespace, &project.namespace) {
            (Some(n), _) => (Some(n), None),
            (None, Some(n)) => (Some(n.as_str()), Some(project_layer)),
            (None, None) => (user.namespace.as_deref(), Some(user_layer)),
        };
        let namespace =
            resolve_namespace(namespace_text).with_context(|| match namespace_layer {
                None => {
                    "the namespace setting (--namespace / PYCACHE_NAMESPACE) is invalid".to_owned()
                }
                Some(layer) => format!("{} is invalid", layer.setting("namespace")),
            })?;
        let signing_key = resolve_signing_key(
            cli.signing_key_file.as_deref(),
            match (&project.signing_key_file, &user.signing_key_file) {
                (Some(file), _) => Some((file.as_path(), project_layer)),
                (None, Some(file)) => Some((file.as_path(), user_layer)),
                (None, None) => None,
            },
        )?;
        let trusted_keys = resolve_trusted_keys(
            &cli.trusted_keys,
            env("PYCACHE_TRUSTED_KEYS").as_deref(),
            match (&project.trusted_keys, &user.trusted_keys) {
                (Some(keys), _) => Some((keys.as_slice(), project_layer)),
                (None, Some(keys)) => Some((keys.as_slice(), user_layer)),
                (None, None) => None,
            },
        )?;
        Ok(Settings {
            python: cli.python.clone().or(project.python.clone()),
            virtual_env: env("VIRTUAL_ENV").map(PathBuf::from),
            project_env: config_file
                .as_deref()
                .and_then(crate::venv::project_environment),
            cache_dir,
            local_cache: !cli.no_local_cache,
            cache_size,
            jobs,
            server: cli
                .server
                .clone()
                .or(project.server.clone())
                .or(user.server.clone())
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
            remote_timeout: seconds(
                cli.timeout.or(project.timeout).or(user.timeout),
                "the server timeout",
            )?
            .unwrap_or(DEFAULT_REMOTE_TIMEOUT),
            connect_timeout: seconds(
                cli.connect_timeout
                    .or(project.connect_timeout)
                    .or(user.connect_timeout),
                "the server connect timeout",
            )?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            compile_timeout: seconds(
                cli.compile_timeout
                    .or(project.compile_timeout)
                    .or(user.compile_timeout),
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
            optimize: project.optimize.or(user.optimize),
            exclude: project
                .exclude
                .or(user.exclude)
                .map(Patterns::into_vec)
                .unwrap_or_default(),
            config_file,
            user_config_file,
        })
    }
}

/// Where a file setting came from.
#[derive(Clone, Copy, Debug)]
enum Layer<'a> {
    /// `[tool.pycache]` of this pyproject.toml.
    Project(Option<&'a Path>),
    /// The user config file.
    User(Option<&'a Path>),
}

impl Layer<'_> {
    /// A setting of this layer as a message names it: `[tool.pycache] KEY in FILE`, `KEY in
    /// the user config file FILE`.
    fn setting(&self, key: &str) -> String {
        match self {
            Layer::Project(Some(file)) => format!("[tool.pycache] {key} in {}", file.display()),
            Layer::Project(None) => format!("[tool.pycache] {key}"),
            Layer::User(Some(file)) => {
                format!("{key} in the user config file {}", file.display())
            }
            Layer::User(None) => format!("{key} in the user config file"),
        }
    }

    /// The folder a relative path in it starts from.
    fn base(&self) -> &Path {
        match self {
            Layer::Project(file) | Layer::User(file) => {
                file.and_then(Path::parent).unwrap_or(Path::new(""))
            }
        }
    }
}

/// The namespace the layers chose (an empty one on the command line counts as unset), checked
/// against the server's rules here, so a bad name fails before anything runs.
fn resolve_namespace(name: Option<&str>) -> Result<Option<String>> {
    let Some(name) = name else {
        return Ok(None);
    };
    pycache_proto::namespace::validate_namespace(name)?;
    Ok(Some(name.to_owned()))
}

/// Reads the signing key from the file the command line or environment names (clap merges the
/// two), else the one `signing-key-file` of a config file names (relative to that file's
/// folder). The error names the file and the setting that chose it.
fn resolve_signing_key(
    cli: Option<&Path>,
    from_file: Option<(&Path, Layer<'_>)>,
) -> Result<Option<Arc<SigningKey>>> {
    let (file, setting) = match (cli.filter(|f| !f.as_os_str().is_empty()), from_file) {
        (Some(file), _) => (
            file.to_path_buf(),
            "--signing-key / PYCACHE_SIGNING_KEY_FILE".to_owned(),
        ),
        (None, Some((file, layer))) => (layer.base().join(file), layer.setting("signing-key-file")),
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
/// separated), else `trusted-keys` of a config file; each layer replaces the ones below it.
fn resolve_trusted_keys(
    cli: &[String],
    env: Option<&std::ffi::OsStr>,
    from_file: Option<(&[String], Layer<'_>)>,
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
    let Some((keys, layer)) = from_file else {
        return Ok(Arc::from([]));
    };
    let texts: Vec<&str> = keys.iter().map(String::as_str).collect();
    parse(&texts, &layer.setting("trusted-keys"))
}

/// Where the user config file is looked for: what the environment says.
#[derive(Debug, Default, Clone)]
pub struct UserConfigPlace {
    /// `PYCACHE_CONFIG_FILE`: this file, which must exist.
    pub named: Option<PathBuf>,
    /// `XDG_CONFIG_HOME` (used when absolute).
    pub xdg_config_home: Option<PathBuf>,
    /// `HOME`: `~/.config` when `XDG_CONFIG_HOME` is not set.
    pub home: Option<PathBuf>,
}

impl UserConfigPlace {
    /// The place the process environment names.
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        UserConfigPlace {
            named: var(CONFIG_FILE_ENV),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            home: var("HOME").or_else(dirs::home_dir),
        }
    }

    /// The file to read, and whether it must exist.
    fn file(&self) -> Option<(PathBuf, bool)> {
        if let Some(named) = &self.named {
            return Some((named.clone(), true));
        }
        let base = match &self.xdg_config_home {
            // The XDG spec: a relative value is invalid and ignored.
            Some(dir) if dir.is_absolute() => dir.clone(),
            _ => self.home.as_ref()?.join(".config"),
        };
        Some((base.join("pycache").join("config.toml"), false))
    }
}

/// Reads the user config file (`PYCACHE_CONFIG_FILE`, else
/// `$XDG_CONFIG_HOME/pycache/config.toml`, else `~/.config/pycache/config.toml`): the keys of
/// `[tool.pycache]` at its top level. A missing default file is no error; a named one is.
pub fn load_user_config(place: &UserConfigPlace) -> Result<(ProjectConfig, Option<PathBuf>)> {
    let Some((file, required)) = place.file() else {
        return Ok((ProjectConfig::default(), None));
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok((ProjectConfig::default(), None))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "the user config file {} ({CONFIG_FILE_ENV}) does not exist; create it or unset \
             {CONFIG_FILE_ENV}",
            file.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "could not read the user config file {} (--no-config skips it)",
                    file.display()
                )
            })
        }
    };
    let config: ProjectConfig = toml::from_str(&text).with_context(|| {
        format!(
            "the user config file {} is invalid (it takes the keys of [tool.pycache] at its top \
             level); fix it, or pass --no-config",
            file.display()
        )
    })?;
    if config.python.is_some() {
        anyhow::bail!(
            "the user config file {} sets python, which would pick one interpreter for every \
             project; set it in [tool.pycache] or PYCACHE_PYTHON instead",
            file.display()
        );
    }
    Ok((config, Some(file)))
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
        assert_eq!(
            cfg.exclude.map(Patterns::into_vec),
            Some(vec!["tests/".to_owned()])
        );
        assert_eq!(file.unwrap(), dir.path().join("pyproject.toml"));
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.pycache]\nbogus = 1\n",
        )
        .unwrap();
        let err = load_project_config(&sub).unwrap_err();
        assert!(format!("{err:#}").contains("[tool.pycache]"), "{err:#}");
    }

    #[test]
    fn the_user_config_file_is_where_xdg_says_and_takes_exclude_lists() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let xdg = dir.path().join("xdg");
        let place = |xdg: Option<PathBuf>, named: Option<PathBuf>| UserConfigPlace {
            named,
            xdg_config_home: xdg,
            home: Some(home.clone()),
        };
        let (_, file) = load_user_config(&place(None, None)).unwrap();
        assert_eq!(file, None, "no file: the defaults, no error");
        let default_file = home.join(".config/pycache/config.toml");
        std::fs::create_dir_all(default_file.parent().unwrap()).unwrap();
        std::fs::write(&default_file, "exclude = ['a/', 'b/']\njobs = 3\n").unwrap();
        let (config, file) = load_user_config(&place(None, None)).unwrap();
        assert_eq!(file.as_deref(), Some(default_file.as_path()));
        assert_eq!(
            config.exclude.map(Patterns::into_vec),
            Some(vec!["a/".to_owned(), "b/".to_owned()])
        );
        assert_eq!(config.jobs, Some(3));
        // XDG_CONFIG_HOME replaces ~/.config; a relative one is ignored, as the spec says.
        let (_, file) = load_user_config(&place(Some(xdg.clone()), None)).unwrap();
        assert_eq!(file, None);
        let (_, file) = load_user_config(&place(Some("rel".into()), None)).unwrap();
        assert_eq!(file.as_deref(), Some(default_file.as_path()));
        // A named file must exist; `python` is refused with the reason.
        let named = dir.path().join("named.toml");
        let err = load_user_config(&place(None, Some(named.clone()))).unwrap_err();
        assert!(format!("{err:#}").contains(CONFIG_FILE_ENV), "{err:#}");
        std::fs::write(&named, "python = '/usr/bin/python3'\n").unwrap();
        let err = load_user_config(&place(None, Some(named))).unwrap_err();
        assert!(format!("{err:#}").contains("every project"), "{err:#}");
    }
}
