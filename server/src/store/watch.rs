//! Watching the SQLite database file: the store remembers which file it opened (device and
//! inode) and, before each write and in `/readyz`, looks whether that file is still at its path
//! and writable. A file deleted or replaced under a running server would otherwise take writes
//! that are acknowledged and lost (SQLite keeps writing the open, unlinked file); a read-only
//! one would turn every write into an internal error while the server says it is ready.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why the store cannot take writes now; the message says which file, what happened and what
/// to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageProblem {
    /// The database file is no longer at its path (deleted or moved away).
    #[error(
        "the database file {} was deleted or moved away while the server runs, so nothing \
         written now would be kept: move it back if it was moved, else restart the server \
         (which then starts an empty database, without tokens)",
        .path.display()
    )]
    Gone {
        /// The file's path.
        path: PathBuf,
    },
    /// Another file is at the database's path now.
    #[error(
        "the database file {} was replaced by another file while the server runs; the server \
         still holds the one it opened, so nothing written now would be kept: restart the \
         server to use the new file",
        .path.display()
    )]
    Replaced {
        /// The file's path.
        path: PathBuf,
    },
    /// The server's user may not write the file or its directory (permissions, a read-only
    /// mount).
    #[error(
        "the database {} cannot be written: {reason}. Make the file, its -wal and -shm files \
         and its directory writable by the user the server runs as (or mount the disk \
         read-write), then restart the server",
        .path.display()
    )]
    ReadOnly {
        /// The database file's path.
        path: PathBuf,
        /// What is not writable, and the system's word for it.
        reason: String,
    },
}

impl StorageProblem {
    /// Whether writes could resume by themselves (the file made writable again), as opposed to
    /// a file gone or replaced, which needs a restart.
    pub fn is_read_only(&self) -> bool {
        matches!(self, StorageProblem::ReadOnly { .. })
    }
}

/// The database file as opened, and the last state reported in the log.
#[derive(Debug)]
pub(super) struct FileWatch {
    path: PathBuf,
    device: u64,
    inode: u64,
    reported: Mutex<Option<StorageProblem>>,
}

impl FileWatch {
    /// Remembers the file at `path`; `None` when there is no such file (an in-memory database).
    pub(super) fn new(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileWatch {
            path: path.to_owned(),
            device: meta.dev(),
            inode: meta.ino(),
            reported: Mutex::new(None),
        })
    }

    /// The file's problem now, if any (one `stat` and two `access` calls). A change of state is
    /// logged once: an error when a problem appears, a note when it is gone.
    pub(super) fn check(&self) -> Option<StorageProblem> {
        let problem = self.look();
        let mut reported = self.reported.lock().expect("never poisoned");
        if *reported != problem {
            match &problem {
                Some(problem) => tracing::error!(
                    path = %self.path.display(),
                    "THE DATABASE CANNOT TAKE WRITES: {problem}; writes are refused and /readyz \
                     answers 503 until this is fixed"
                ),
                None => tracing::info!(
                    path = %self.path.display(),
                    "the database file is back in order; writes are accepted again"
                ),
            }
            reported.clone_from(&problem);
        }
        problem
    }

    fn look(&self) -> Option<StorageProblem> {
        let path = self.path.clone();
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Some(StorageProblem::Gone { path })
            }
            Err(err) => {
                return Some(StorageProblem::ReadOnly {
                    path,
                    reason: format!("the server cannot look at the file ({err})"),
                })
            }
        };
        if (meta.dev(), meta.ino()) != (self.device, self.inode) {
            return Some(StorageProblem::Replaced { path });
        }
        if let Err(err) = writable(&self.path) {
            return Some(StorageProblem::ReadOnly {
                path,
                reason: format!("the file is not writable ({err})"),
            });
        }
        // SQLite creates the -wal and -shm files beside the database when it opens it again.
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Err(err) = writable(dir.unwrap_or(Path::new("."))) {
            return Some(StorageProblem::ReadOnly {
                path,
                reason: format!(
                    "its directory {} is not writable ({err})",
                    dir.unwrap_or(Path::new(".")).display()
                ),
            });
        }
        None
    }
}

/// `access(path, W_OK)`: whether this process may write `path` (permissions, read-only mounts).
#[allow(unsafe_code)]
fn writable(path: &Path) -> std::io::Result<()> {
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(name.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_or_replaced_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pycache.db");
        std::fs::write(&path, b"x").unwrap();
        let watch = FileWatch::new(&path).unwrap();
        assert_eq!(watch.check(), None);
        // Open, as SQLite holds it: its inode cannot be reused by the next file.
        let _open = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let gone = watch.check().unwrap();
        assert_eq!(gone, StorageProblem::Gone { path: path.clone() });
        assert!(gone.to_string().contains(&*path.to_string_lossy()));
        assert!(gone.to_string().contains("restart the server"));
        std::fs::write(&path, b"another").unwrap();
        assert_eq!(
            watch.check(),
            Some(StorageProblem::Replaced { path: path.clone() })
        );
        assert!(FileWatch::new(&dir.path().join("missing")).is_none());
    }
}
