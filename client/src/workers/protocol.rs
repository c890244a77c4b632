//! The binary frames exchanged with `worker.py` (all integers little endian).
//!
//! Request: `u32 len`, then `u64 id, i32 optimize, u32 source_len, u32 dfile_len` (`u32::MAX` for
//! no dfile), the source path and the dfile (raw bytes; the worker applies `os.fsdecode`).
//! Response: `u32 len`, then `u64 id, u8 kind, u32 warnings_len, u32 a_len, u32 b_len`, the
//! warnings text, `a`, `b`. Kind 0: compiled (`a` = body); 1: failed (`a` = message);
//! 2: raised (`a` = class name, `b` = text).

use super::{CompileJob, CompileOutcome, SourceRead};
use std::os::unix::ffi::OsStrExt;

/// What the worker writes on stdout once it is ready; anything before it (a `sitecustomize`
/// that prints) is skipped.
pub(super) const READY_MARKER: &[u8] = b"\x00PYCACHE-WORKER-READY\n";
/// Size of the fixed part of a response, after the length prefix.
const RESPONSE_HEAD: usize = 8 + 1 + 4 + 4 + 4;
/// Largest response accepted (a body is a few MB at most).
pub(super) const MAX_FRAME: u32 = 1 << 30;

/// Encodes `job` as one request frame, length prefix included.
pub(super) fn encode_request(job: &CompileJob) -> Vec<u8> {
    let source = job.source.as_bytes();
    let dfile = job.dfile.as_deref().map(OsStrExt::as_bytes);
    let len = 8 + 4 + 4 + 4 + source.len() + dfile.map_or(0, <[u8]>::len);
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&job.id.to_le_bytes());
    out.extend_from_slice(&job.optimize.to_le_bytes());
    out.extend_from_slice(&(source.len() as u32).to_le_bytes());
    out.extend_from_slice(&dfile.map_or(u32::MAX, |d| d.len() as u32).to_le_bytes());
    out.extend_from_slice(source);
    out.extend_from_slice(dfile.unwrap_or(b""));
    out
}

/// Decodes a response frame (without its length prefix) into the job id and its outcome.
pub(super) fn decode_response(frame: &[u8]) -> Result<(u64, CompileOutcome), String> {
    let head = frame
        .get(..RESPONSE_HEAD)
        .ok_or_else(|| format!("short response frame ({} bytes)", frame.len()))?;
    let u32_at =
        |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes")) as usize;
    let id = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let kind = head[8];
    let (warn_len, a_len, b_len) = (u32_at(9), u32_at(13), u32_at(17));
    let rest = &frame[RESPONSE_HEAD..];
    if rest.len() != warn_len + a_len + b_len {
        return Err(format!(
            "response frame sizes disagree ({} bytes of payload)",
            rest.len()
        ));
    }
    let (warnings, rest) = rest.split_at(warn_len);
    let (a, b) = rest.split_at(a_len);
    let warnings = String::from_utf8_lossy(warnings).into_owned();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let outcome = match kind {
        0 => {
            if a.len() < 16 {
                return Err(format!(
                    "a compiled answer of {} bytes has no pyc header",
                    a.len()
                ));
            }
            let u32_of = |at: usize| u32::from_le_bytes(a[at..at + 4].try_into().expect("4 bytes"));
            CompileOutcome::Compiled {
                body: a[16..].to_vec(),
                warnings,
                read: SourceRead {
                    bytes: b.to_vec(),
                    mtime: u32_of(8),
                    size: u32_of(12),
                },
            }
        }
        1 => CompileOutcome::Failed {
            message: text(a),
            warnings,
        },
        2 => CompileOutcome::Raised {
            class_name: text(a),
            text: text(b),
            warnings,
        },
        other => return Err(format!("unknown response kind {other}")),
    };
    Ok((id, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(id: u64, kind: u8, warnings: &[u8], a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut out = id.to_le_bytes().to_vec();
        out.push(kind);
        for part in [warnings, a, b] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        }
        for part in [warnings, a, b] {
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn request_layout() {
        let job = CompileJob {
            id: 7,
            source: "a.py".into(),
            dfile: None,
            optimize: -1,
        };
        let frame = encode_request(&job);
        assert_eq!(&frame[..4], &24u32.to_le_bytes());
        assert_eq!(&frame[4..12], &7u64.to_le_bytes());
        assert_eq!(&frame[12..16], &(-1i32).to_le_bytes());
        assert_eq!(&frame[20..24], &u32::MAX.to_le_bytes());
        assert_eq!(&frame[24..], b"a.py");
        let with_dfile = CompileJob {
            dfile: Some("/d/a.py".into()),
            ..job
        };
        let frame = encode_request(&with_dfile);
        assert_eq!(&frame[20..24], &7u32.to_le_bytes());
        assert!(frame.ends_with(b"a.py/d/a.py"));
    }

    #[test]
    fn responses_decode() {
        let mut pyc = b"\xa7\x0d\r\n\0\0\0\0\x01\0\0\0\x02\0\0\0".to_vec();
        pyc.extend_from_slice(b"\xe3body");
        let (id, out) = decode_response(&response(3, 0, b"w", &pyc, b"src")).unwrap();
        assert_eq!(id, 3);
        assert_eq!(
            out,
            CompileOutcome::Compiled {
                body: b"\xe3body".to_vec(),
                warnings: "w".into(),
                read: SourceRead {
                    bytes: b"src".to_vec(),
                    mtime: 1,
                    size: 2
                }
            }
        );
        let (_, out) = decode_response(&response(4, 2, b"", b"OSError", b"nope")).unwrap();
        assert!(
            matches!(out, CompileOutcome::Raised { class_name, text, .. } if class_name == "OSError" && text == "nope")
        );
        assert!(decode_response(&response(4, 9, b"", b"", b"")).is_err());
        assert!(decode_response(&response(4, 0, b"", b"x", b"")[..20]).is_err());
        assert!(decode_response(&response(4, 0, b"", b"no header", b"")).is_err());
        let mut long = response(4, 0, b"", b"x", b"");
        long.push(0);
        assert!(decode_response(&long).is_err());
    }
}
