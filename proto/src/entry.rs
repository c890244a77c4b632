//! A cache entry: the result of compiling one source file for one key.
//!
//! On success an entry holds the .pyc *body* (everything after the 16-byte header, i.e. the
//! marshalled code object); on failure, the error text compileall prints. Either way it also
//! holds the warnings the compile printed on stderr, so a hit can replay them. The header is
//! never cached: it depends on the local file (mtime and size, or its SipHash).
//!
//! The encoding is the same in the client's local cache and in the server's store, and an
//! entry's integrity digest is blake3 of that encoding ([`EntryDigest`]).

use std::fmt;

use crate::reader::Reader;

/// Version tag that starts an entry encoding without a recorded dfile.
const ENTRY_ENCODING_TAG: &[u8; 8] = b"pyce\x00\x00\x00\x01";
/// Version tag of an entry that also records the dfile it was compiled with (relocatable
/// entries, stored under a key without dfile).
const ENTRY_ENCODING_TAG_DFILE: &[u8; 8] = b"pyce\x00\x00\x00\x02";

/// marshal's type code for a code object (`'c'`), without and with `FLAG_REF`.
const MARSHAL_CODE: u8 = b'c';
const MARSHAL_FLAG_REF: u8 = 0x80;

/// What the compile produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The marshalled code object that follows the .pyc header.
    Compiled {
        /// The .pyc bytes after the 16-byte header.
        body: Vec<u8>,
    },
    /// The compile failed; `message` is `PyCompileError.msg`, as compileall prints it.
    Failed {
        /// The error text, unescaped.
        message: String,
    },
}

/// One cached compile result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Success with a body, or failure with a message.
    pub outcome: Outcome,
    /// What the compile wrote to stderr (SyntaxWarning and friends), replayed on a hit.
    pub warnings: String,
    /// The path recorded in the code object (`co_filename`), for entries stored under a key
    /// without dfile: a hit for another path is rewritten from it.
    pub dfile: Option<String>,
}

/// Why bytes are not a valid entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    /// The encoding is cut short, has trailing bytes or an unknown outcome.
    #[error("the entry encoding is malformed: {0}")]
    Malformed(&'static str),
    /// The version tag is not this one.
    #[error("the entry encoding has an unknown version")]
    UnknownVersion,
    /// A success body does not start like a marshalled code object.
    #[error("the compiled body does not start with a marshalled code object")]
    NotCodeObject,
}

impl Entry {
    /// A successful compile.
    pub fn compiled(body: Vec<u8>, warnings: String) -> Self {
        Entry {
            outcome: Outcome::Compiled { body },
            warnings,
            dfile: None,
        }
    }

    /// A failed compile.
    pub fn failed(message: String, warnings: String) -> Self {
        Entry {
            outcome: Outcome::Failed { message },
            warnings,
            dfile: None,
        }
    }

    /// The same entry, recording the dfile it was compiled with.
    pub fn with_dfile(self, dfile: String) -> Self {
        Entry {
            dfile: Some(dfile),
            ..self
        }
    }

    /// Canonical encoding: tag, outcome byte (0 compiled, 1 failed), u32-length-prefixed
    /// warnings, u32-length-prefixed payload (body or UTF-8 message), and — tag version 2 only —
    /// the u32-length-prefixed UTF-8 dfile.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, &[u8]) = match &self.outcome {
            Outcome::Compiled { body } => (0, body),
            Outcome::Failed { message } => (1, message.as_bytes()),
        };
        let mut out = Vec::with_capacity(8 + 1 + 8 + self.warnings.len() + payload.len());
        out.extend_from_slice(match self.dfile {
            None => ENTRY_ENCODING_TAG,
            Some(_) => ENTRY_ENCODING_TAG_DFILE,
        });
        out.push(kind);
        out.extend_from_slice(&(self.warnings.len() as u32).to_le_bytes());
        out.extend_from_slice(self.warnings.as_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        if let Some(dfile) = &self.dfile {
            out.extend_from_slice(&(dfile.len() as u32).to_le_bytes());
            out.extend_from_slice(dfile.as_bytes());
        }
        out
    }

    /// Parses [`Entry::encode`]'s output and checks that a body looks like a code object.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let short = |_| EntryError::Malformed("too short");
        let mut r = Reader::new(bytes);
        let has_dfile = match r.take(8).map_err(short)? {
            tag if tag == ENTRY_ENCODING_TAG => false,
            tag if tag == ENTRY_ENCODING_TAG_DFILE => true,
            _ => return Err(EntryError::UnknownVersion),
        };
        let kind = r.take(1).map_err(short)?[0];
        let wlen = r.u32().map_err(short)? as usize;
        let warnings = std::str::from_utf8(r.take(wlen).map_err(short)?)
            .map_err(|_| EntryError::Malformed("warnings are not UTF-8"))?
            .to_owned();
        let plen = r.u32().map_err(short)? as usize;
        let payload = r.take(plen).map_err(short)?;
        let dfile = if has_dfile {
            let dlen = r.u32().map_err(short)? as usize;
            Some(
                std::str::from_utf8(r.take(dlen).map_err(short)?)
                    .map_err(|_| EntryError::Malformed("dfile is not UTF-8"))?
                    .to_owned(),
            )
        } else {
            None
        };
        if !r.is_empty() {
            return Err(EntryError::Malformed("trailing bytes"));
        }
        let outcome = match kind {
            0 => {
                if !looks_like_code_object(payload) {
                    return Err(EntryError::NotCodeObject);
                }
                Outcome::Compiled {
                    body: payload.to_vec(),
                }
            }
            1 => Outcome::Failed {
                message: std::str::from_utf8(payload)
                    .map_err(|_| EntryError::Malformed("message is not UTF-8"))?
                    .to_owned(),
            },
            _ => return Err(EntryError::Malformed("unknown outcome")),
        };
        Ok(Entry {
            outcome,
            warnings,
            dfile,
        })
    }

    /// Whether this entry records a successful compile.
    pub fn is_success(&self) -> bool {
        matches!(self.outcome, Outcome::Compiled { .. })
    }
}

/// Whether `body` starts like `marshal.dumps(code)`: a code-object type byte, with or
/// without the reference flag.
pub fn looks_like_code_object(body: &[u8]) -> bool {
    matches!(body.first(), Some(&b) if b & !MARSHAL_FLAG_REF == MARSHAL_CODE) && body.len() > 1
}

/// blake3 of an entry's encoding: checked by whoever receives an entry before using it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryDigest(pub [u8; 32]);

impl EntryDigest {
    /// The digest of encoded entry bytes.
    pub fn of(encoded: &[u8]) -> Self {
        EntryDigest(*blake3::hash(encoded).as_bytes())
    }

    /// Lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for EntryDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EntryDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryDigest({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_outcomes() {
        let ok = Entry::compiled(vec![0xe3, 0, 0, 0], "x.py:1: SyntaxWarning: hi\n".into());
        assert_eq!(Entry::decode(&ok.encode()).unwrap(), ok);
        let relocatable =
            Entry::compiled(vec![0xe3, 1], String::new()).with_dfile("/a/é.py".into());
        let encoded = relocatable.encode();
        assert_eq!(&encoded[..8], b"pyce\x00\x00\x00\x02");
        assert_eq!(Entry::decode(&encoded).unwrap(), relocatable);
        assert!(Entry::decode(&encoded[..encoded.len() - 1]).is_err());
        let bad = Entry::failed(
            "  File \"x.py\", line 1\nSyntaxError: bad\n".into(),
            "".into(),
        );
        assert_eq!(Entry::decode(&bad.encode()).unwrap(), bad);
    }

    #[test]
    fn refuses_non_code_bodies_and_truncation() {
        let not_code = Entry::compiled(b"hello".to_vec(), String::new());
        assert_eq!(
            Entry::decode(&not_code.encode()),
            Err(EntryError::NotCodeObject)
        );
        let ok = Entry::compiled(vec![b'c', 1, 2], String::new()).encode();
        for cut in 0..ok.len() {
            assert!(Entry::decode(&ok[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn digest_detects_any_flipped_bit() {
        let enc = Entry::compiled(vec![0xe3, 9, 9], String::new()).encode();
        let d = EntryDigest::of(&enc);
        let mut bad = enc.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_ne!(EntryDigest::of(&bad), d);
    }
}
