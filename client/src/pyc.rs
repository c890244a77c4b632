//! The .pyc file: where it goes, its 16-byte header, whether it is up to date, and writing it
//! the way `py_compile` does (same checks, same mode, atomic replace).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use siphasher::sip::{SipHasher13, SipHasher24};
use std::hash::Hasher;

/// How a .pyc says whether it is current (PEP 552).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidationMode {
    /// Source mtime and size in the header.
    Timestamp,
    /// Source hash in the header, checked at import.
    CheckedHash,
    /// Source hash in the header, not checked at import.
    UncheckedHash,
}

impl InvalidationMode {
    /// Parses compileall's `--invalidation-mode` choice.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "timestamp" => Some(Self::Timestamp),
            "checked-hash" => Some(Self::CheckedHash),
            "unchecked-hash" => Some(Self::UncheckedHash),
            _ => None,
        }
    }

    /// py_compile's default: checked-hash when `SOURCE_DATE_EPOCH` is set and non-empty.
    pub fn default_for(source_date_epoch: bool) -> Self {
        if source_date_epoch {
            Self::CheckedHash
        } else {
            Self::Timestamp
        }
    }
}

/// What the header of a pyc is computed from.
#[derive(Clone, Copy, Debug)]
pub struct HeaderInputs<'a> {
    /// The interpreter's magic number.
    pub magic: [u8; 4],
    /// Which SipHash variant `importlib.util.source_hash` uses.
    pub siphash13: bool,
    /// The source file's bytes (for hash modes).
    pub source: &'a [u8],
    /// `int(st_mtime)` of the source.
    pub mtime: i64,
    /// `st_size` of the source.
    pub size: u64,
}

/// Builds the 16-byte header exactly as `importlib._bootstrap_external` does.
pub fn header(mode: InvalidationMode, inputs: &HeaderInputs<'_>) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&inputs.magic);
    match mode {
        InvalidationMode::Timestamp => {
            h[8..12].copy_from_slice(&((inputs.mtime as u64 & 0xFFFF_FFFF) as u32).to_le_bytes());
            h[12..16].copy_from_slice(&((inputs.size & 0xFFFF_FFFF) as u32).to_le_bytes());
        }
        InvalidationMode::CheckedHash | InvalidationMode::UncheckedHash => {
            let flags: u32 = if mode == InvalidationMode::CheckedHash {
                0b11
            } else {
                0b01
            };
            h[4..8].copy_from_slice(&flags.to_le_bytes());
            h[8..16].copy_from_slice(&source_hash(inputs.magic, inputs.siphash13, inputs.source));
        }
    }
    h
}

/// `importlib.util.source_hash`: SipHash keyed with the magic number (k0) and zero (k1).
pub fn source_hash(magic: [u8; 4], siphash13: bool, source: &[u8]) -> [u8; 8] {
    let k0 = u64::from(u32::from_le_bytes(magic));
    let value = if siphash13 {
        let mut h = SipHasher13::new_with_keys(k0, 0);
        h.write(source);
        h.finish()
    } else {
        let mut h = SipHasher24::new_with_keys(k0, 0);
        h.write(source);
        h.finish()
    };
    value.to_le_bytes()
}

/// `int(os.stat(path).st_mtime)`, with the same float rounding CPython applies.
pub fn python_mtime(meta: &fs::Metadata) -> i64 {
    let float = meta.mtime() as f64 + meta.mtime_nsec() as f64 * 1e-9;
    float.trunc() as i64
}

/// The 12 bytes compileall expects at the start of an up-to-date pyc: magic, zero flags, mtime.
pub fn expected_timestamp_prefix(magic: [u8; 4], mtime: i64) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&magic);
    p[8..12].copy_from_slice(&((mtime as u64 & 0xFFFF_FFFF) as u32).to_le_bytes());
    p
}

/// Whether `pyc` starts with `expect` (compileall reads 12 bytes; any error means "not").
pub fn starts_with(pyc: &Path, expect: &[u8]) -> bool {
    let Ok(mut f) = fs::File::open(pyc) else {
        return false;
    };
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < expect.len() {
        match f.read(&mut buf[got..expect.len()]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    got == expect.len() && buf[..got] == *expect
}

/// `importlib.util.cache_from_source(path, optimization=...)` for POSIX paths.
///
/// `optimization` is the already-resolved level (0 means no `.opt-N` part).
pub fn cache_from_source(
    path: &OsStr,
    cache_tag: &str,
    optimization: u8,
    pycache_prefix: Option<&OsStr>,
    cwd: &Path,
) -> OsString {
    let bytes = path.as_bytes();
    let (head, tail) = match bytes.iter().rposition(|&b| b == b'/') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&b""[..], bytes),
    };
    let (base, sep, rest) = match tail.iter().rposition(|&b| b == b'.') {
        Some(i) => (&tail[..i], &b"."[..], &tail[i + 1..]),
        None => (&b""[..], &b""[..], tail),
    };
    let mut filename = Vec::with_capacity(tail.len() + cache_tag.len() + 12);
    filename.extend_from_slice(if base.is_empty() { rest } else { base });
    filename.extend_from_slice(sep);
    filename.extend_from_slice(cache_tag.as_bytes());
    if optimization > 0 {
        filename.extend_from_slice(format!(".opt-{optimization}").as_bytes());
    }
    filename.extend_from_slice(b".pyc");
    let joined = match pycache_prefix {
        Some(prefix) => {
            let mut abs_head = head.to_vec();
            if !head.starts_with(b"/") {
                abs_head = path_join(&[cwd.as_os_str().as_bytes(), head]);
            }
            let trimmed: &[u8] = {
                let mut s = &abs_head[..];
                while let Some(rest) = s.strip_prefix(b"/") {
                    s = rest;
                }
                s
            };
            path_join(&[prefix.as_bytes(), trimmed, &filename])
        }
        None => path_join(&[head, b"__pycache__", &filename]),
    };
    OsString::from_vec(joined)
}

/// importlib's `_path_join` on POSIX: non-empty parts, trailing slashes stripped, joined by '/'.
fn path_join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut first = true;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        let mut p = *part;
        while let Some(s) = p.strip_suffix(b"/") {
            p = s;
        }
        if !first {
            out.push(b'/');
        }
        out.extend_from_slice(p);
        first = false;
    }
    out
}

/// Why a pyc could not be written, with what Python would have raised.
#[derive(Debug)]
pub struct WriteError {
    /// The exception class compileall prints (`FileExistsError`, `PermissionError`, ...).
    pub class_name: &'static str,
    /// `str(exception)`.
    pub text: String,
}

/// py_compile's refusal to replace a symlink or a non-regular file at `cfile`; checked before
/// compiling, as py_compile does.
pub fn check_target(cfile: &OsStr) -> Result<(), WriteError> {
    let shown = String::from_utf8_lossy(cfile.as_bytes()).into_owned();
    match fs::symlink_metadata(cfile) {
        Ok(m) if m.file_type().is_symlink() => Err(WriteError {
            class_name: "FileExistsError",
            text: format!(
                "{shown} is a symlink and will be changed into a regular file if import writes a byte-compiled file to it"
            ),
        }),
        Ok(m) if !m.is_file() => Err(WriteError {
            class_name: "FileExistsError",
            text: format!(
                "{shown} is a non-regular file and will be changed into a regular one if import writes a byte-compiled file to it"
            ),
        }),
        _ => Ok(()),
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `header + body` to `cfile` like py_compile: `makedirs` the parent (an existing one is
/// fine), write `cfile.<n>` with mode `(source mode | 0o200) & 0o666` (less the umask), then
/// rename over `cfile`. A failed write leaves no temporary file behind.
pub fn write_pyc(
    cfile: &OsStr,
    source_mode: Option<u32>,
    header: &[u8; 16],
    body: &[u8],
) -> Result<(), WriteError> {
    let mode = (source_mode.unwrap_or(0o666) | 0o200) & 0o666;
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed) % 100_000;
    let mut tmp = cfile.to_os_string();
    // `<cfile>.<pid:7><n:5>`: digits, as py_compile's own suffix, and the writer's pid for
    // `temp_owner`.
    tmp.push(format!(".{:07}{n:05}", std::process::id()));
    crate::fsutil::write_atomic(Path::new(cfile), Path::new(&tmp), mode, &[header, body]).map_err(
        |e| WriteError {
            class_name: crate::pyrepr::os_error_class(&e.error),
            text: crate::pyrepr::os_error_text(&e.error, e.path.as_os_str()),
        },
    )
}

/// The pid of the pycache process that wrote temporary pyc file `name` (`x.pyc.<pid:7><n:5>`).
pub fn temp_owner(name: &str) -> Option<u32> {
    let (_, suffix) = name.rsplit_once(".pyc.")?;
    if suffix.len() != 12 || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    suffix[..7].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_paths_follow_importlib() {
        let cwd = Path::new("/work");
        let p = |s: &str, opt, pre: Option<&str>| {
            cache_from_source(OsStr::new(s), "cpython-311", opt, pre.map(OsStr::new), cwd)
                .into_string()
                .unwrap()
        };
        assert_eq!(p("a/b.py", 0, None), "a/__pycache__/b.cpython-311.pyc");
        assert_eq!(p("b.py", 2, None), "__pycache__/b.cpython-311.opt-2.pyc");
        assert_eq!(p("a//b.py", 0, None), "a/__pycache__/b.cpython-311.pyc");
        assert_eq!(p("a/.py", 0, None), "a/__pycache__/py.cpython-311.pyc");
        assert_eq!(
            p("a/b.py", 1, Some("/tmp/pfx")),
            "/tmp/pfx/work/a/b.cpython-311.opt-1.pyc"
        );
        assert_eq!(
            p("/abs/b.py", 0, Some("/tmp/pfx/")),
            "/tmp/pfx/abs/b.cpython-311.pyc"
        );
    }

    #[test]
    fn source_hash_matches_importlib() {
        // Values printed by importlib.util.source_hash(b"print(1)\n") on CPython 3.8 and 3.11.
        assert_eq!(
            hex::encode(source_hash(*b"\x55\x0d\r\n", false, b"print(1)\n")),
            "9bf71decb71ddb20"
        );
        assert_eq!(
            hex::encode(source_hash(*b"\xa7\x0d\r\n", true, b"print(1)\n")),
            "da812d7f407a3059"
        );
    }

    #[test]
    fn temp_names_tell_their_writer() {
        assert_eq!(temp_owner("m.cpython-311.pyc.001234500007"), Some(12345));
        assert_eq!(temp_owner("m.cpython-311.pyc.140234234"), None);
        assert_eq!(temp_owner("m.cpython-311.pyc"), None);
        assert_eq!(temp_owner("m.py.001234500007"), None);
    }

    #[test]
    fn timestamp_header_layout() {
        let h = header(
            InvalidationMode::Timestamp,
            &HeaderInputs {
                magic: *b"\xa7\x0d\r\n",
                siphash13: true,
                source: b"",
                mtime: 0x1_0000_0002,
                size: 7,
            },
        );
        assert_eq!(&h[..4], b"\xa7\x0d\r\n");
        assert_eq!(&h[4..8], &[0, 0, 0, 0]);
        assert_eq!(&h[8..12], &[2, 0, 0, 0]);
        assert_eq!(&h[12..16], &[7, 0, 0, 0]);
    }
}
