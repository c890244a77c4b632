//! Writing files so that no reader ever sees half of one: the one `write_atomic` of the client,
//! used for .pyc files and for local cache entries.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why an atomic write failed, and the path to blame in a message (the directory that could not
/// be created, or the temporary file).
#[derive(Debug)]
pub struct AtomicWriteError {
    /// What failed.
    pub error: io::Error,
    /// The path it failed on.
    pub path: PathBuf,
}

/// Writes `parts` to `tmp` (created new, with `mode` less the umask), then renames it over
/// `path`. A missing parent directory is created when the first open finds it missing (one
/// syscall fewer per file than creating it every time). On failure `tmp` is removed.
pub fn write_atomic(
    path: &Path,
    tmp: &Path,
    mode: u32,
    parts: &[&[u8]],
) -> Result<(), AtomicWriteError> {
    let open = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(tmp)
    };
    let opened = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if let Err(error) = fs::create_dir_all(dir) {
                    if error.kind() != io::ErrorKind::AlreadyExists {
                        return Err(AtomicWriteError {
                            error,
                            path: dir.to_path_buf(),
                        });
                    }
                }
            }
            open()
        }
        other => other,
    };
    let result = opened.and_then(|mut f| {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut data = Vec::with_capacity(total);
        for part in parts {
            data.extend_from_slice(part);
        }
        f.write_all(&data)?;
        drop(f);
        fs::rename(tmp, path)
    });
    result.map_err(|error| {
        let _ = fs::remove_file(tmp);
        AtomicWriteError {
            error,
            path: tmp.to_path_buf(),
        }
    })
}

/// Whether process `pid` is alive (Linux: it has a `/proc` entry).
pub fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the temporary files a killed writer left in `dir`: names `owner_of` maps to the
/// writing process's id, when that process is gone and the file is older than a moment (a live
/// writer renames within milliseconds). Errors are ignored: this is housekeeping.
pub fn sweep_abandoned(dir: &Path, owner_of: impl Fn(&str) -> Option<u32>) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let me = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(&owner_of) else {
            continue;
        };
        if pid == me || process_alive(pid) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(2));
        if old && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
