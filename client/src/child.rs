//! What every process the client starts is run without.

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
