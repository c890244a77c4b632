//! Python's text conventions, reproduced so pycache's output matches compileall's to the byte.
//!
//! Paths are `str` in Python, decoded from bytes with `surrogateescape`; compileall prints them
//! with `repr()`, and prints `OSError`s as `[Errno N] strerror: 'filename'`. This module owns
//! those three conversions.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;

/// Code points of a path as Python sees it: UTF-8 decoded, each undecodable byte `b` mapped to
/// the lone surrogate `U+DC00 + b` (`surrogateescape`).
pub fn code_points(path: &OsStr) -> Vec<u32> {
    let mut out = Vec::with_capacity(path.len());
    let mut rest = path.as_bytes();
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.extend(s.chars().map(u32::from));
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.extend(
                    std::str::from_utf8(good)
                        .expect("valid prefix")
                        .chars()
                        .map(u32::from),
                );
                let n = e.error_len().unwrap_or(bad.len());
                out.extend(bad[..n].iter().map(|&b| 0xDC00 + u32::from(b)));
                rest = &bad[n..];
            }
        }
    }
    out
}

/// Python's `repr()` of a path string.
pub fn repr(path: &OsStr) -> String {
    repr_code_points(&code_points(path))
}

/// Python's `repr()` of a `str` given as text.
pub fn repr_str(text: &str) -> String {
    repr_code_points(&text.chars().map(u32::from).collect::<Vec<_>>())
}

fn repr_code_points(cps: &[u32]) -> String {
    let has_single = cps.contains(&u32::from('\''));
    let has_double = cps.contains(&u32::from('"'));
    let quote = if has_single && !has_double { '"' } else { '\'' };
    let mut out = String::with_capacity(cps.len() + 2);
    out.push(quote);
    for &cp in cps {
        match char::from_u32(cp) {
            Some(c) if c == quote || c == '\\' => {
                out.push('\\');
                out.push(c);
            }
            Some('\t') => out.push_str("\\t"),
            Some('\n') => out.push_str("\\n"),
            Some('\r') => out.push_str("\\r"),
            Some(c) if is_printable(c) => out.push(c),
            _ if cp < 0x100 => out.push_str(&format!("\\x{cp:02x}")),
            _ if cp < 0x10000 => out.push_str(&format!("\\u{cp:04x}")),
            _ => out.push_str(&format!("\\U{cp:08x}")),
        }
    }
    out.push(quote);
    out
}

/// An approximation of `str.isprintable()` for one character: false for controls, separators
/// other than the space, format characters and private-use code points.
fn is_printable(c: char) -> bool {
    let cp = u32::from(c);
    if c == ' ' {
        return true;
    }
    if c.is_control() {
        return false;
    }
    !matches!(cp,
        0xA0 | 0xAD | 0x34F | 0x61C | 0x1680 | 0x180E
        | 0x2000..=0x200F | 0x2028..=0x202F | 0x205F..=0x206F
        | 0x3000 | 0xD800..=0xDFFF | 0xE000..=0xF8FF | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xFFFE | 0xFFFF | 0x110BD | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0001 | 0xE0020..=0xE007F | 0xF0000..=0x10FFFF)
}

/// The name of the `OSError` subclass Python raises for an errno.
pub fn os_error_class(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::ENOENT) => "FileNotFoundError",
        Some(libc::EACCES) | Some(libc::EPERM) => "PermissionError",
        Some(libc::EEXIST) => "FileExistsError",
        Some(libc::ENOTDIR) => "NotADirectoryError",
        Some(libc::EISDIR) => "IsADirectoryError",
        Some(libc::EINTR) => "InterruptedError",
        Some(libc::ETIMEDOUT) => "TimeoutError",
        Some(libc::EAGAIN) => "BlockingIOError",
        _ => "OSError",
    }
}

/// `str(OSError)` for an error about `filename`: `[Errno 2] No such file or directory: 'x'`.
pub fn os_error_text(err: &io::Error, filename: &OsStr) -> String {
    match err.raw_os_error() {
        Some(code) => format!("[Errno {code}] {}: {}", strerror(code), repr(filename)),
        None => format!("{err}: {}", repr(filename)),
    }
}

/// The C library's message for an errno, as Python's `os.strerror` gives it.
pub fn strerror(code: i32) -> String {
    let text = io::Error::from_raw_os_error(code).to_string();
    // std renders "<strerror> (os error N)"; keep the C library's part.
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Python's `str.encode(encoding, 'backslashreplace').decode(encoding)` for the encodings
/// compileall's stdout may have; lone surrogates are already escaped by the worker.
pub fn backslashreplace(text: &str, encoding: &str) -> String {
    let limit = match encoding.to_ascii_lowercase().replace('_', "-").as_str() {
        "ascii" | "us-ascii" | "ansi-x3.4-1968" | "646" => 0x7F,
        "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" => 0xFF,
        _ => return text.to_owned(),
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let cp = u32::from(c);
        if cp <= limit {
            out.push(c);
        } else if cp < 0x100 {
            out.push_str(&format!("\\x{cp:02x}"));
        } else if cp < 0x10000 {
            out.push_str(&format!("\\u{cp:04x}"));
        } else {
            out.push_str(&format!("\\U{cp:08x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn repr_matches_python() {
        assert_eq!(repr(OsStr::new("a/b.py")), "'a/b.py'");
        assert_eq!(repr(OsStr::new("it's")), "\"it's\"");
        assert_eq!(repr(OsStr::new("a\"'b")), "'a\"\\'b'");
        assert_eq!(
            repr(OsStr::new("\u{a0}\u{ad}\u{200b}é")),
            "'\\xa0\\xad\\u200bé'"
        );
        assert_eq!(repr(OsStr::new("tab\there\\")), "'tab\\there\\\\'");
        let raw = OsString::from_vec(b"a\xffb".to_vec());
        assert_eq!(repr(&raw), "'a\\udcffb'");
    }

    #[test]
    fn os_errors_read_like_python() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(os_error_class(&e), "FileNotFoundError");
        assert_eq!(
            os_error_text(&e, OsStr::new("x.py")),
            "[Errno 2] No such file or directory: 'x.py'"
        );
    }

    #[test]
    fn backslashreplace_for_narrow_encodings() {
        assert_eq!(backslashreplace("é€", "ascii"), "\\xe9\\u20ac");
        assert_eq!(backslashreplace("é€", "latin-1"), "é\\u20ac");
        assert_eq!(backslashreplace("é€", "utf-8"), "é€");
    }
}
