//! The cache key: what identifies one compile of one source file by one interpreter setup.
//!
//! A key is made of the blake3 hash of the source bytes, the interpreter's 4 magic bytes, its
//! `sys.implementation.cache_tag`, the optimization level, a fingerprint of the interpreter
//! settings that change the compiled output (for example `no_debug_ranges` or warnings turned
//! into errors), and `dfile`, the path compileall records as `co_filename` — left out
//! ([`ANY_DFILE`]) where [`dfile_leaves_key`] says the client can relocate a body. Its canonical
//! encoding is versioned and length-prefixed, and its identity is the blake3 digest of that
//! encoding ([`KeyDigest`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Version tag that starts every canonical key encoding; bump it when the encoding changes.
const KEY_ENCODING_TAG: &[u8; 8] = b"pyck\x00\x00\x00\x01";

/// Longest `cache_tag`, settings fingerprint or `dfile` a key may hold, in bytes.
pub const MAX_KEY_STRING: usize = 4096;
/// Longest settings fingerprint a server accepts, in bytes (real ones are about 120).
pub const MAX_SETTINGS: usize = 512;

/// The `dfile` of a key whose entries serve every recorded path (see [`dfile_leaves_key`]).
///
/// Empty, because compileall never records an empty path, so no path-bound key has it.
pub const ANY_DFILE: &str = "";

/// Whether keys for this interpreter leave `dfile` out ([`CacheKey::without_dfile`]).
///
/// True where the client's relocation of `co_filename` was measured exact against the
/// interpreter's own `py_compile` (`client/tests/marshal_relocation.rs`): CPython 3.8–3.13.
/// An entry stored under such a key must keep the dfile it was compiled with, and a hit for
/// another dfile must go through the client's `marshal::relocate`, which refuses the bodies it
/// cannot rewrite exactly; other implementations and versions keep `dfile` in the key.
pub fn dfile_leaves_key(implementation: &str, version: (u32, u32)) -> bool {
    implementation == "cpython" && version.0 == 3 && (8..=13).contains(&version.1)
}

/// The parts of a cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey {
    /// blake3 of the source file's bytes.
    #[serde(with = "hex_32")]
    pub source_hash: [u8; 32],
    /// The interpreter's magic number: 2 bytes of version, then `\r\n`.
    #[serde(with = "hex_4")]
    pub magic: [u8; 4],
    /// `sys.implementation.cache_tag`, e.g. `cpython-311`.
    pub cache_tag: String,
    /// Optimization level the body was compiled with (0, 1 or 2).
    pub optimization: u8,
    /// Opaque fingerprint of the interpreter settings that change the output.
    pub settings: String,
    /// The path recorded in the code object (`co_filename`).
    pub dfile: String,
}

/// Why a byte string is not a valid key or digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text is not 64 lower- or upper-case hex digits.
    #[error("a key digest is 64 hexadecimal digits, got {0:?}")]
    BadDigest(String),
    /// The canonical encoding is cut short or has trailing bytes.
    #[error("the key encoding is malformed: {0}")]
    Malformed(&'static str),
    /// The encoding's version tag is not this one.
    #[error("the key encoding has an unknown version")]
    UnknownVersion,
}

impl CacheKey {
    /// Checks that every field holds a value real interpreters produce: optimization 0 to 2, a
    /// magic number ending in `\r\n`, a short cache tag of letters, digits, `.`, `_` and `-`,
    /// and settings and dfile without control characters. The error names the field.
    pub fn check_fields(&self) -> Result<(), String> {
        if self.optimization > 2 {
            return Err(format!(
                "optimization is {}; interpreters have levels 0, 1 and 2",
                self.optimization
            ));
        }
        if self.magic[2..] != *b"\r\n" {
            return Err(format!(
                "magic is {}; a magic number ends in 0d 0a",
                hex::encode(self.magic)
            ));
        }
        let tag_ok = !self.cache_tag.is_empty()
            && self.cache_tag.len() <= 64
            && self
                .cache_tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !tag_ok {
            return Err(format!(
                "cache_tag {:?} is not a cache tag (1 to 64 letters, digits, . _ -)",
                self.cache_tag.chars().take(80).collect::<String>()
            ));
        }
        if self.settings.len() > MAX_SETTINGS {
            return Err(format!(
                "settings is {} bytes long; fingerprints of real interpreters are at most {MAX_SETTINGS}",
                self.settings.len()
            ));
        }
        for (field, text) in [("settings", &self.settings), ("dfile", &self.dfile)] {
            if text.chars().any(char::is_control) {
                return Err(format!("{field} holds control characters"));
            }
        }
        Ok(())
    }

    /// Canonical encoding: tag, source hash, magic, optimization, then three u32-length-prefixed
    /// UTF-8 strings (cache tag, settings, dfile).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            8 + 32 + 4 + 1 + 12 + self.cache_tag.len() + self.settings.len() + self.dfile.len(),
        );
        out.extend_from_slice(KEY_ENCODING_TAG);
        out.extend_from_slice(&self.source_hash);
        out.extend_from_slice(&self.magic);
        out.push(self.optimization);
        for s in [&self.cache_tag, &self.settings, &self.dfile] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    /// Parses [`CacheKey::encode`]'s output; the whole input must be one key.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let mut r = crate::reader::Reader::new(bytes);
        let tag = r.take(8).map_err(|_| KeyError::Malformed("too short"))?;
        if tag != KEY_ENCODING_TAG {
            return Err(KeyError::UnknownVersion);
        }
        let short = |_| KeyError::Malformed("too short");
        let source_hash: [u8; 32] = r.take(32).map_err(short)?.try_into().expect("32 bytes");
        let magic: [u8; 4] = r.take(4).map_err(short)?.try_into().expect("4 bytes");
        let optimization = r.take(1).map_err(short)?[0];
        let mut strings = Vec::with_capacity(3);
        for _ in 0..3 {
            let len = r.u32().map_err(short)? as usize;
            if len > MAX_KEY_STRING {
                return Err(KeyError::Malformed("a string is too long"));
            }
            let raw = r.take(len).map_err(short)?;
            let s = std::str::from_utf8(raw).map_err(|_| KeyError::Malformed("not UTF-8"))?;
            strings.push(s.to_owned());
        }
        if !r.is_empty() {
            return Err(KeyError::Malformed("trailing bytes"));
        }
        let dfile = strings.pop().expect("3 strings");
        let settings = strings.pop().expect("3 strings");
        let cache_tag = strings.pop().expect("3 strings");
        Ok(CacheKey {
            source_hash,
            magic,
            cache_tag,
            optimization,
            settings,
            dfile,
        })
    }

    /// The same key for any recorded path: `dfile` set to [`ANY_DFILE`]. Only for an interpreter
    /// [`dfile_leaves_key`] accepts.
    pub fn without_dfile(self) -> Self {
        CacheKey {
            dfile: ANY_DFILE.to_owned(),
            ..self
        }
    }

    /// The key's identity: blake3 of its canonical encoding.
    pub fn digest(&self) -> KeyDigest {
        KeyDigest(*blake3::hash(&self.encode()).as_bytes())
    }

    /// The magic number as the 2-byte little-endian version number CPython compares.
    pub fn magic_number(&self) -> u16 {
        u16::from_le_bytes([self.magic[0], self.magic[1]])
    }
}

/// The blake3 digest of a key's canonical encoding; shown as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// Lower-case hex form, as used in URLs and file names.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({})", self.to_hex())
    }
}

impl FromStr for KeyDigest {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(KeyError::BadDigest(s.chars().take(80).collect()));
        }
        Ok(KeyDigest(out))
    }
}

impl Serialize for KeyDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for KeyDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! hex_array {
    ($name:ident, $n:expr) => {
        mod $name {
            use serde::{Deserialize, Deserializer, Serializer};

            pub fn serialize<S: Serializer>(v: &[u8; $n], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&hex::encode(v))
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; $n], D::Error> {
                let s = String::deserialize(d)?;
                let mut out = [0u8; $n];
                hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
                Ok(out)
            }
        }
    };
}
hex_array!(hex_32, 32);
hex_array!(hex_4, 4);

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> CacheKey {
        CacheKey {
            source_hash: *blake3::hash(b"print('hi')\n").as_bytes(),
            magic: [0xa7, 0x0d, b'\r', b'\n'],
            cache_tag: "cpython-311".into(),
            optimization: 0,
            settings: "w=default".into(),
            dfile: "pkg/mod.py".into(),
        }
    }

    #[test]
    fn encoding_round_trips() {
        let key = sample();
        assert_eq!(CacheKey::decode(&key.encode()).unwrap(), key);
    }

    #[test]
    fn every_part_changes_the_digest() {
        let base = sample().digest();
        let mut k = sample();
        k.optimization = 1;
        assert_ne!(k.digest(), base);
        let mut k = sample();
        k.dfile = "pkg/other.py".into();
        assert_ne!(k.digest(), base);
        let mut k = sample();
        k.settings = "w=error".into();
        assert_ne!(k.digest(), base);
        let mut k = sample();
        k.magic[0] ^= 1;
        assert_ne!(k.digest(), base);
        // Moving bytes between adjacent strings must not collide.
        let mut a = sample();
        a.cache_tag = "ab".into();
        a.settings = "c".into();
        let mut b = sample();
        b.cache_tag = "a".into();
        b.settings = "bc".into();
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn keys_without_dfile_match_across_paths_and_differ_from_path_bound_ones() {
        let mut other = sample();
        other.dfile = "/elsewhere/pkg/mod.py".into();
        assert_eq!(
            sample().without_dfile().digest(),
            other.clone().without_dfile().digest()
        );
        assert_ne!(sample().without_dfile().digest(), sample().digest());
        assert_ne!(other.clone().without_dfile().digest(), other.digest());
        let mut k = sample().without_dfile();
        k.source_hash[0] ^= 1;
        assert_ne!(k.digest(), sample().without_dfile().digest());
    }

    #[test]
    fn only_measured_interpreters_leave_dfile_out() {
        for minor in 8..=13 {
            assert!(dfile_leaves_key("cpython", (3, minor)));
        }
        assert!(!dfile_leaves_key("cpython", (3, 7)));
        assert!(!dfile_leaves_key("cpython", (3, 14)));
        assert!(!dfile_leaves_key("cpython", (2, 7)));
        assert!(!dfile_leaves_key("pypy", (3, 9)));
    }

    #[test]
    fn digest_parses_from_hex_and_rejects_garbage() {
        let d = sample().digest();
        assert_eq!(d.to_hex().parse::<KeyDigest>().unwrap(), d);
        assert!("abc".parse::<KeyDigest>().is_err());
        assert!("zz".repeat(32).parse::<KeyDigest>().is_err());
    }

    #[test]
    fn truncated_and_padded_encodings_are_refused() {
        let enc = sample().encode();
        assert!(CacheKey::decode(&enc[..enc.len() - 1]).is_err());
        let mut longer = enc.clone();
        longer.push(0);
        assert!(CacheKey::decode(&longer).is_err());
    }

    #[test]
    fn json_form_is_hex() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["magic"], "a70d0d0a");
        let back: CacheKey = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample());
    }
}
