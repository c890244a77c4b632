//! Code-object equality, decided by the target interpreter: CPython's bytes can depend on the
//! compiling process's history (DESIGN §6), so two bodies that differ may still hold equal
//! code objects.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::interpreter::Interpreter;

/// The checker the interpreter runs (`python -c`).
const CHECKER: &str = include_str!("code_equal.py");

/// For each `(a, b)` pair of marshalled bodies, whether both load as equal code objects (names
/// and file names of nested code included), in one run of the interpreter.
pub fn code_equal(interp: &Interpreter, pairs: &[(&[u8], &[u8])]) -> Result<Vec<bool>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let mut input = Vec::new();
    for body in pairs.iter().flat_map(|(a, b)| [a, b]) {
        input.extend_from_slice(&(body.len() as u32).to_le_bytes());
        input.extend_from_slice(body);
    }
    let mut child = Command::new(&interp.executable)
        .args(["-E", "-s", "-S", "-c", CHECKER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", interp.executable.display()))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written beside the read, so a large input never waits on a full pipe.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut stdout)?;
    let output = child.wait_with_output()?;
    let _ = writer.join();
    let verdicts: Vec<bool> = stdout.lines().map(|l| l == "1").collect();
    if !output.status.success() || verdicts.len() != pairs.len() {
        bail!(
            "{} could not compare code objects ({}): {}",
            interp.executable.display(),
            output.status,
            crate::output::escape_replayed(String::from_utf8_lossy(&output.stderr).trim())
        );
    }
    Ok(verdicts)
}
