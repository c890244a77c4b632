//! Signed entries: a writer with an ed25519 secret key signs what it uploads, and a reader that
//! pins trusted public keys uses a remote entry only when one of them verifies.
//!
//! A signature covers the key digest and the entry digest (blake3 of the entry bytes), so it
//! binds exactly these bytes to exactly this key; the server stores signatures beside the entry
//! and never needs a secret. Keys are written as Nix writes them: `NAME:BASE64`, the public key
//! 32 bytes, the secret key 64 (the seed, then the public key).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer, Verifier};

use crate::entry::EntryDigest;
use crate::key::KeyDigest;

/// Most signatures one entry carries (several writers, or a key rotation).
pub const MAX_SIGNATURES: usize = 8;
/// Longest key name.
pub const MAX_KEY_NAME: usize = 64;

/// What a signature signs: a domain tag, the key digest and the entry digest.
fn message(key: &KeyDigest, entry: &EntryDigest) -> [u8; 24 + 64] {
    let mut msg = [0u8; 24 + 64];
    msg[..24].copy_from_slice(b"pycache entry v1\0\0\0\0\0\0\0\0");
    msg[24..56].copy_from_slice(&key.0);
    msg[56..].copy_from_slice(&entry.0);
    msg
}

/// Why a key or signature is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not `NAME:BASE64` with a valid name.
    #[error(
        "{0:?} is not a key: write it as NAME:BASE64 (NAME of 1 to 64 letters, digits, . _ -)"
    )]
    Format(String),
    /// The base64 part does not decode to a key of the right length.
    #[error("the key {name:?} is not a valid ed25519 {kind} key (expected {len} bytes of base64)")]
    Key {
        /// The key's name.
        name: String,
        /// `public` or `secret`.
        kind: &'static str,
        /// Bytes expected.
        len: usize,
    },
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_KEY_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn split(text: &str) -> Result<(&str, Vec<u8>), SignatureError> {
    let text = text.trim();
    let (name, b64) = text
        .split_once(':')
        .filter(|(name, _)| valid_name(name))
        .ok_or_else(|| SignatureError::Format(text.chars().take(80).collect()))?;
    let bytes = STANDARD
        .decode(b64.trim())
        .map_err(|_| SignatureError::Format(format!("{name}:…")))?;
    Ok((name, bytes))
}

/// One signature of an entry, by the key called `key_name`.
#[derive(Clone, PartialEq, Eq)]
pub struct EntrySignature {
    /// The name of the key that made it.
    pub key_name: String,
    /// The ed25519 signature.
    pub signature: [u8; 64],
}

impl std::fmt::Debug for EntrySignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EntrySignature({})", self.key_name)
    }
}

impl EntrySignature {
    /// Whether `key_name` is acceptable (the pack decoder refuses others).
    pub fn valid_key_name(key_name: &str) -> bool {
        valid_name(key_name)
    }
}

/// The encoding of a signature list, as packs and the server's database carry it: a count
/// byte, then per signature a name length byte, the name and the 64 signature bytes. At most
/// [`MAX_SIGNATURES`] are written.
pub fn encode_signatures(signatures: &[EntrySignature], out: &mut Vec<u8>) {
    let signatures = &signatures[..signatures.len().min(MAX_SIGNATURES)];
    out.push(signatures.len() as u8);
    for sig in signatures {
        let name = &sig.key_name.as_bytes()[..sig.key_name.len().min(MAX_KEY_NAME)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&sig.signature);
    }
}

/// Why a signature list does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureListError {
    /// The bytes end inside the list.
    Short,
    /// Too many signatures, or a bad key name.
    Malformed,
}

/// Decodes one signature list from the start of `bytes`; returns it and the bytes it took.
pub fn decode_signatures(bytes: &[u8]) -> Result<(Vec<EntrySignature>, usize), SignatureListError> {
    let mut r = crate::reader::Reader::new(bytes);
    let short = |_| SignatureListError::Short;
    let count = r.u8().map_err(short)?;
    if usize::from(count) > MAX_SIGNATURES {
        return Err(SignatureListError::Malformed);
    }
    let mut signatures = Vec::with_capacity(count.into());
    for _ in 0..count {
        let name_len = r.u8().map_err(short)?;
        let name = r.take(name_len.into()).map_err(short)?;
        let signature = r.take(64).map_err(short)?;
        let key_name = std::str::from_utf8(name)
            .ok()
            .filter(|n| valid_name(n))
            .ok_or(SignatureListError::Malformed)?;
        signatures.push(EntrySignature {
            key_name: key_name.to_owned(),
            signature: signature.try_into().expect("64 bytes"),
        });
    }
    Ok((signatures, r.consumed()))
}

/// A secret key that signs uploads.
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, <secret>)", self.name)
    }
}

impl SigningKey {
    /// A key called `name` from a 32-byte seed (random, from the operating system).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, SignatureError> {
        if !valid_name(name) {
            return Err(SignatureError::Format(name.to_owned()));
        }
        Ok(SigningKey {
            name: name.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// Parses `NAME:BASE64` of 64 bytes (seed and public key, as Nix writes secret keys).
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let (name, bytes) = split(text)?;
        let bad = || SignatureError::Key {
            name: name.to_owned(),
            kind: "secret",
            len: 64,
        };
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| bad())?;
        let key = ed25519_dalek::SigningKey::from_keypair_bytes(&bytes).map_err(|_| bad())?;
        Ok(SigningKey {
            name: name.to_owned(),
            key,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `NAME:BASE64` of the secret key (keep it secret).
    pub fn to_secret_string(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            STANDARD.encode(self.key.to_keypair_bytes())
        )
    }

    /// The public key readers pin.
    pub fn trusted_key(&self) -> TrustedKey {
        TrustedKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs the entry of digest `entry` under the key of digest `key`.
    pub fn sign(&self, key: &KeyDigest, entry: &EntryDigest) -> EntrySignature {
        EntrySignature {
            key_name: self.name.clone(),
            signature: self.key.sign(&message(key, entry)).to_bytes(),
        }
    }
}

/// A public key a reader trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKey {
    name: String,
    key: ed25519_dalek::VerifyingKey,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl std::fmt::Display for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, STANDARD.encode(self.key.as_bytes()))
    }
}

impl std::str::FromStr for TrustedKey {
    type Err = SignatureError;

    /// Parses `NAME:BASE64` of 32 bytes.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, bytes) = split(text)?;
        let bad = || SignatureError::Key {
            name: name.to_owned(),
            kind: "public",
            len: 32,
        };
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        Ok(TrustedKey {
            name: name.to_owned(),
            key,
        })
    }
}

impl TrustedKey {
    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Parses a list of trusted keys separated by white space or commas.
pub fn parse_trusted_keys(text: &str) -> Result<Vec<TrustedKey>, SignatureError> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// The name of the first of `trusted` whose signature among `signatures` verifies for this key
/// and entry digest; `None` when none does (an unsigned, wrongly signed or untrusted entry).
pub fn verify<'a>(
    trusted: &'a [TrustedKey],
    signatures: &[EntrySignature],
    key: &KeyDigest,
    entry: &EntryDigest,
) -> Option<&'a str> {
    let msg = message(key, entry);
    trusted.iter().find_map(|t| {
        signatures
            .iter()
            .filter(|s| s.key_name == t.name)
            .any(|s| {
                t.key
                    .verify(&msg, &ed25519_dalek::Signature::from_bytes(&s.signature))
                    .is_ok()
            })
            .then_some(t.name.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> KeyDigest {
        KeyDigest([n; 32])
    }

    fn entry(n: u8) -> EntryDigest {
        EntryDigest([n; 32])
    }

    #[test]
    fn signatures_verify_only_for_their_key_entry_and_signer() {
        let ci = SigningKey::from_seed("ci-1", [7; 32]).unwrap();
        let other = SigningKey::from_seed("ci-1", [8; 32]).unwrap();
        let trusted = vec![ci.trusted_key()];
        let sig = ci.sign(&key(1), &entry(2));
        assert_eq!(
            verify(&trusted, std::slice::from_ref(&sig), &key(1), &entry(2)),
            Some("ci-1")
        );
        // Another entry, another key, no signature, a forged signature under the same name.
        assert_eq!(
            verify(&trusted, std::slice::from_ref(&sig), &key(1), &entry(3)),
            None
        );
        assert_eq!(
            verify(&trusted, std::slice::from_ref(&sig), &key(4), &entry(2)),
            None
        );
        assert_eq!(verify(&trusted, &[], &key(1), &entry(2)), None);
        let forged = other.sign(&key(1), &entry(2));
        assert_eq!(
            verify(&trusted, std::slice::from_ref(&forged), &key(1), &entry(2)),
            None
        );
        // Several trusted keys (a rotation): either verifies.
        let next = SigningKey::from_seed("ci-2", [9; 32]).unwrap();
        let both = vec![ci.trusted_key(), next.trusted_key()];
        let new_sig = next.sign(&key(1), &entry(2));
        assert_eq!(
            verify(&both, &[forged, new_sig], &key(1), &entry(2)),
            Some("ci-2")
        );
    }

    #[test]
    fn keys_round_trip_as_name_colon_base64() {
        let ci = SigningKey::from_seed("ci", [7; 32]).unwrap();
        let secret = ci.to_secret_string();
        let back = SigningKey::parse(&secret).unwrap();
        assert_eq!(back.trusted_key(), ci.trusted_key());
        let public = ci.trusted_key().to_string();
        assert!(
            public.starts_with("ci:") && public.len() == 3 + 44,
            "{public}"
        );
        assert_eq!(public.parse::<TrustedKey>().unwrap(), ci.trusted_key());
        let list = parse_trusted_keys(&format!("{public}, {public}\n")).unwrap();
        assert_eq!(list.len(), 2);
        for bad in ["ci", ":abc", "ci:!!", "c i:AAAA", "ci:AAAA"] {
            assert!(bad.parse::<TrustedKey>().is_err(), "{bad}");
        }
        assert!(
            SigningKey::parse(&public).is_err(),
            "a public key is not a secret key"
        );
    }
}
