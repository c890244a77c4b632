//! The repository's own `pyproject.toml` (the client's wheel, built by maturin) is not a
//! pycache project configuration: run inside this repository the client reads no settings
//! from it and works as anywhere else.

use std::path::Path;
use std::process::Command;

const CLIENT: &str = env!("CARGO_BIN_EXE_pycache-client");

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn the_wheels_pyproject_sets_no_client_settings() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("pyproject.toml")).unwrap();
    assert!(text.contains("build-backend = \"maturin\""), "{text}");
    let (config, file) = pycache_client::settings::load_project_config(&root.join("client/src"))
        .expect("the root pyproject.toml reads as a project file without [tool.pycache]");
    assert_eq!(file.as_deref(), Some(root.join("pyproject.toml").as_path()));
    assert!(config.server.is_none() && config.python.is_none() && config.cache_dir.is_none());
    assert!(config.optimize.is_none() && config.exclude.is_none() && config.jobs.is_none());

    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(CLIENT)
        .current_dir(root.join("client"))
        .env("PYCACHE_CACHE_DIR", cache.path())
        .env("PYCACHE_PYTHON", "python3")
        .env_remove("PYCACHE_SERVER")
        .arg("status")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("server:       not configured"), "{stdout}");
}
