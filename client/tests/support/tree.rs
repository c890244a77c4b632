//! Source trees for the parity cases, written with `std::fs` (no process per file), and a copy
//! that keeps modes, mtimes, symlinks and hard links.
//!
//! Every file gets a fixed, distinct mtime, so building the same tree twice gives two trees that
//! compileall cannot tell apart (the .pyc header records the source mtime).

use std::collections::HashMap;
use std::fs::{self, File, FileTimes};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The mtime of the first file a `Tree` writes; each later file gets one second more.
pub const BASE_MTIME: u64 = 1_700_000_000;

/// Builds a tree of files under `root`.
pub struct Tree {
    root: PathBuf,
    next_mtime: u64,
}

/// Sets a file's mtime (and atime) to `secs` after the epoch.
pub fn set_mtime(path: &Path, secs: u64) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let file = File::options()
        .write(true)
        .open(path)
        .or_else(|_| File::open(path))
        .unwrap_or_else(|e| panic!("open {} to set its mtime: {e}", path.display()));
    file.set_times(FileTimes::new().set_modified(time).set_accessed(time))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// Sets the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

impl Tree {
    /// A builder writing under `root` (created if missing).
    pub fn new(root: &Path) -> Tree {
        fs::create_dir_all(root).unwrap();
        Tree {
            root: root.to_path_buf(),
            next_mtime: BASE_MTIME,
        }
    }

    /// The directory this builder writes under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes a file (and its parent directories) with the next fixed mtime.
    pub fn file(&mut self, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) -> &mut Tree {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        set_mtime(&path, self.next_mtime);
        self.next_mtime += 1;
        self
    }

    /// Writes a file and gives it the permission bits `mode`.
    pub fn file_mode(&mut self, rel: impl AsRef<Path>, content: &str, mode: u32) -> &mut Tree {
        self.file(rel.as_ref(), content);
        set_mode(&self.root.join(rel), mode);
        self
    }

    /// Creates a directory (and its parents).
    pub fn dir(&mut self, rel: impl AsRef<Path>) -> &mut Tree {
        fs::create_dir_all(self.root.join(rel)).unwrap();
        self
    }

    /// Creates a symlink at `rel` whose target is `target`, exactly as given.
    pub fn symlink(&mut self, rel: impl AsRef<Path>, target: impl AsRef<Path>) -> &mut Tree {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        std::os::unix::fs::symlink(target, &path)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
        self
    }

    /// Creates a named pipe (a non-regular file a careless walker would block on).
    pub fn fifo(&mut self, rel: impl AsRef<Path>) -> &mut Tree {
        let path = self.root.join(rel);
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("run mkfifo");
        assert!(status.success(), "mkfifo {}", path.display());
        self
    }

    /// Gives an existing file or directory the permission bits `mode`.
    pub fn chmod(&mut self, rel: impl AsRef<Path>, mode: u32) -> &mut Tree {
        set_mode(&self.root.join(rel), mode);
        self
    }
}

/// Copies `src` to `dst` (which must not exist): directories, regular files with their mode and
/// mtime, symlinks as symlinks, and hard links as hard links. Other kinds of files are skipped,
/// and so is every path for which `skip` (given the path relative to `src`) says so.
pub fn copy_tree(src: &Path, dst: &Path, skip: &dyn Fn(&Path) -> bool) {
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    copy_dir(src, dst, Path::new(""), skip, &mut inodes);
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    rel: &Path,
    skip: &dyn Fn(&Path) -> bool,
    inodes: &mut HashMap<(u64, u64), PathBuf>,
) {
    fs::create_dir(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let rel = rel.join(entry.file_name());
        if skip(&rel) {
            continue;
        }
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).unwrap();
        let kind = meta.file_type();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &to).unwrap();
        } else if kind.is_dir() {
            copy_dir(&from, &to, &rel, skip, inodes);
            fs::set_permissions(&to, meta.permissions()).unwrap();
        } else if kind.is_file() {
            let inode = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = inodes.get(&inode) {
                    fs::hard_link(first, &to).unwrap();
                    continue;
                }
                inodes.insert(inode, to.clone());
            }
            fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
            fs::set_permissions(&to, meta.permissions()).unwrap();
            let mtime = meta.modified().unwrap();
            let file = File::options().write(true).open(&to).unwrap();
            file.set_times(FileTimes::new().set_modified(mtime).set_accessed(mtime))
                .unwrap();
        }
    }
}

/// Every `.pyc` below `root`, by path relative to it.
pub fn all_pycs(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "pyc") {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Removes every `__pycache__` below `dir`.
pub fn remove_pycache(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "__pycache__") {
                fs::remove_dir_all(&path).unwrap();
            } else {
                remove_pycache(&path);
            }
        }
    }
}
