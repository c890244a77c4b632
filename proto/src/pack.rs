//! The binary pack that carries many entries in one request or response body.
//!
//! ```text
//! pack      = "PYCPACK" 0x02, frame*, end
//! frame     = u32 key_len (> 0), key (CacheKey::encode), u32 entry_len, entry (Entry::encode),
//!             32-byte frame digest, u8 count (<= 8), signature*
//! signature = u8 name_len (1..=64), key name, 64-byte ed25519 signature
//! end       = u32 0, u32 frame count
//! ```
//! The frame digest binds the entry to its key ([`FrameDigest::bind`]): a body served under
//! another key fails it. Signatures ([`crate::signature`]) sign the key digest and the entry
//! digest.
//! All integers little-endian. The end marker with its frame count makes a truncated pack
//! detectable: a pack that stops anywhere before the end marker is an error, never a shorter
//! batch. [`PackDecoder`] accepts bytes in arbitrary chunks, so both sides can stream.

use crate::entry::{Entry, EntryDigest, EntryError};
use crate::key::{CacheKey, KeyDigest, KeyError};
use crate::reader::Reader;
use crate::signature::{decode_signatures, encode_signatures, EntrySignature, SignatureListError};

/// The first 8 bytes of every pack (version 2: frame digests bound to keys, signatures).
pub const PACK_MAGIC: &[u8; 8] = b"PYCPACK\x02";

/// A frame's integrity digest: blake3 over a domain tag, the key digest and the entry digest,
/// so the entry bytes check out only under the key they were stored for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameDigest(pub [u8; 32]);

impl FrameDigest {
    /// The digest binding the entry of digest `entry` to the key of digest `key`.
    pub fn bind(key: &KeyDigest, entry: &EntryDigest) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"pycache frame v2\0");
        hasher.update(&key.0);
        hasher.update(&entry.0);
        FrameDigest(*hasher.finalize().as_bytes())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for FrameDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrameDigest({})", self.to_hex())
    }
}

/// Media type of a pack body.
pub const PACK_CONTENT_TYPE: &str = "application/x-pycache-pack";

/// Largest key encoding a frame may carry.
const MAX_KEY_LEN: usize = 3 * crate::key::MAX_KEY_STRING + 64;

/// One entry in a pack, with its key, the digest the sender computed and any signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The entry's key.
    pub key: CacheKey,
    /// The entry exactly as encoded by the sender.
    pub entry_bytes: Vec<u8>,
    /// The sender's [`FrameDigest::bind`] of the key digest and the entry bytes' digest.
    pub digest: FrameDigest,
    /// Signatures over the key digest and the entry digest.
    pub signatures: Vec<EntrySignature>,
}

impl Frame {
    /// Writes what comes before the entry bytes in a pack: the key's length and encoding, then
    /// the entry's length. A frame on the wire is this head, the entry bytes, then
    /// [`Frame::write_tail`]'s output; [`PackWriter::push`] writes the three together, a server
    /// streaming large entries may send the entry bytes as they are, without a copy.
    pub fn write_head(&self, out: &mut Vec<u8>) {
        self.write_head_of_length(self.entry_bytes.len(), out);
    }

    /// [`Frame::write_head`] for entry bytes of `entry_len` sent in another form (a server
    /// holding this frame's entry compressed sends the head of the entry it decompresses to).
    pub fn write_head_of_length(&self, entry_len: usize, out: &mut Vec<u8>) {
        let key = self.key.encode();
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&key);
        out.extend_from_slice(&(entry_len as u32).to_le_bytes());
    }

    /// Writes what follows the entry bytes in a pack: the frame digest and the signatures.
    pub fn write_tail(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.digest.0);
        encode_signatures(&self.signatures, out);
    }

    /// A frame for `entry` under `key`, with its digest computed and no signature.
    pub fn new(key: CacheKey, entry: &Entry) -> Self {
        Frame::from_encoded(key, entry.encode())
    }

    /// A frame for already encoded entry bytes under `key`, with its digest computed.
    pub fn from_encoded(key: CacheKey, entry_bytes: Vec<u8>) -> Self {
        let digest = FrameDigest::bind(&key.digest(), &EntryDigest::of(&entry_bytes));
        Frame {
            key,
            entry_bytes,
            digest,
            signatures: Vec::new(),
        }
    }

    /// The key's digest.
    pub fn key_digest(&self) -> KeyDigest {
        self.key.digest()
    }

    /// blake3 of the entry bytes (what bodies are stored by, and what signatures sign).
    pub fn entry_digest(&self) -> EntryDigest {
        EntryDigest::of(&self.entry_bytes)
    }

    /// Checks that the digest binds these entry bytes to this key, and decodes the entry; any
    /// mismatch is an error, never a silent use.
    pub fn verify(&self) -> Result<Entry, FrameError> {
        if FrameDigest::bind(&self.key_digest(), &self.entry_digest()) != self.digest {
            return Err(FrameError::DigestMismatch);
        }
        Entry::decode(&self.entry_bytes).map_err(FrameError::Entry)
    }
}

/// Why a frame's entry cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes and the key do not hash to the digest the sender sent.
    #[error("the frame digest does not match the entry's bytes and key")]
    DigestMismatch,
    /// The bytes hash right but are not a valid entry.
    #[error(transparent)]
    Entry(EntryError),
}

/// Why a pack cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    /// The body does not start with [`PACK_MAGIC`].
    #[error("not a pycache pack (bad magic bytes)")]
    BadMagic,
    /// The body ended before the end marker.
    #[error(
        "the pack is truncated: it ended after {frames} complete entries, before its end marker"
    )]
    Truncated {
        /// Complete frames read before the body ended.
        frames: u64,
    },
    /// A frame's key is not a valid key encoding.
    #[error("entry {index} of the pack has a malformed key: {source}")]
    BadKey {
        /// Zero-based frame index.
        index: u64,
        /// What is wrong with the key.
        source: KeyError,
    },
    /// A length field is beyond what this side accepts.
    #[error("entry {index} of the pack is {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// Zero-based frame index.
        index: u64,
        /// The announced length.
        len: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The end marker's count differs from the frames read.
    #[error("the pack's end marker counts {expected} entries but {found} were sent")]
    CountMismatch {
        /// Count in the end marker.
        expected: u64,
        /// Frames actually read.
        found: u64,
    },
    /// Bytes follow the end marker.
    #[error("the pack has bytes after its end marker")]
    TrailingBytes,
    /// A frame's signature list is malformed (too many, or a bad key name).
    #[error("entry {index} of the pack has malformed signatures (at most 8, key names of 1 to 64 letters, digits, . _ -)")]
    BadSignature {
        /// Zero-based frame index.
        index: u64,
    },
}

/// Writes a pack into a byte vector, frame by frame.
#[derive(Debug)]
pub struct PackWriter {
    buf: Vec<u8>,
    frames: u32,
}

impl Default for PackWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PackWriter {
    /// A writer holding just the pack header.
    pub fn new() -> Self {
        PackWriter {
            buf: PACK_MAGIC.to_vec(),
            frames: 0,
        }
    }

    /// Appends one frame.
    pub fn push(&mut self, frame: &Frame) {
        frame.write_head(&mut self.buf);
        self.buf.extend_from_slice(&frame.entry_bytes);
        frame.write_tail(&mut self.buf);
        self.frames += 1;
    }

    /// Bytes written so far (without the end marker).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no frame was pushed.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Frames pushed so far.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Appends the end marker and returns the whole pack.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        self.buf.extend_from_slice(&self.frames.to_le_bytes());
        self.buf
    }
}

/// Encodes frames into one pack.
pub fn encode_pack<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Vec<u8> {
    let mut w = PackWriter::new();
    for f in frames {
        w.push(f);
    }
    w.finish()
}

/// An incremental pack reader: feed it chunks, take frames as they complete.
#[derive(Debug)]
pub struct PackDecoder {
    buf: Vec<u8>,
    pos: usize,
    header_seen: bool,
    frames: u64,
    finished: bool,
    max_entry: usize,
}

impl PackDecoder {
    /// A decoder refusing entries longer than `max_entry` bytes.
    pub fn new(max_entry: usize) -> Self {
        PackDecoder {
            buf: Vec::new(),
            pos: 0,
            header_seen: false,
            frames: 0,
            finished: false,
            max_entry,
        }
    }

    /// Adds received bytes.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.pos > 0 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Frames read so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The next complete frame, `None` when more bytes are needed or the pack has ended.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, PackError> {
        if self.finished {
            return if self.pos < self.buf.len() {
                Err(PackError::TrailingBytes)
            } else {
                Ok(None)
            };
        }
        let avail = &self.buf[self.pos..];
        if !self.header_seen {
            if avail.len() < PACK_MAGIC.len() {
                if !PACK_MAGIC.starts_with(avail) {
                    return Err(PackError::BadMagic);
                }
                return Ok(None);
            }
            if &avail[..8] != PACK_MAGIC {
                return Err(PackError::BadMagic);
            }
            self.pos += 8;
            self.header_seen = true;
            return self.next_frame();
        }
        let mut r = Reader::new(avail);
        let Ok(key_len) = r.u32() else {
            return Ok(None);
        };
        let index = self.frames;
        if key_len == 0 {
            let Ok(count) = r.u32() else { return Ok(None) };
            self.pos += 8;
            self.finished = true;
            if u64::from(count) != self.frames {
                return Err(PackError::CountMismatch {
                    expected: count.into(),
                    found: self.frames,
                });
            }
            return if self.pos < self.buf.len() {
                Err(PackError::TrailingBytes)
            } else {
                Ok(None)
            };
        }
        let key_len = key_len as usize;
        if key_len > MAX_KEY_LEN {
            return Err(PackError::TooLarge {
                index,
                len: key_len as u64,
                limit: MAX_KEY_LEN as u64,
            });
        }
        let Ok(key_bytes) = r.take(key_len) else {
            return Ok(None);
        };
        let Ok(entry_len) = r.u32() else {
            return Ok(None);
        };
        let entry_len = entry_len as usize;
        if entry_len > self.max_entry {
            return Err(PackError::TooLarge {
                index,
                len: entry_len as u64,
                limit: self.max_entry as u64,
            });
        }
        let Ok(entry_bytes) = r.take(entry_len) else {
            return Ok(None);
        };
        let Ok(digest) = r.take(32) else {
            return Ok(None);
        };
        let signatures = match decode_signatures(r.rest()) {
            Ok((signatures, len)) => {
                r.take(len).expect("decoded from these bytes");
                signatures
            }
            Err(SignatureListError::Short) => return Ok(None),
            Err(SignatureListError::Malformed) => return Err(PackError::BadSignature { index }),
        };
        let key =
            CacheKey::decode(key_bytes).map_err(|source| PackError::BadKey { index, source })?;
        let frame = Frame {
            key,
            entry_bytes: entry_bytes.to_vec(),
            digest: FrameDigest(digest.try_into().expect("32 bytes")),
            signatures,
        };
        self.pos += r.consumed();
        self.frames += 1;
        Ok(Some(frame))
    }

    /// Call when the body has ended: an error unless the end marker was read.
    pub fn finish(&self) -> Result<(), PackError> {
        if !self.finished {
            if !self.header_seen && self.buf.len() - self.pos < PACK_MAGIC.len() && self.frames == 0
            {
                return Err(PackError::Truncated { frames: 0 });
            }
            return Err(PackError::Truncated {
                frames: self.frames,
            });
        }
        Ok(())
    }
}

/// Decodes a whole pack held in memory.
pub fn decode_pack(bytes: &[u8], max_entry: usize) -> Result<Vec<Frame>, PackError> {
    let mut d = PackDecoder::new(max_entry);
    d.feed(bytes);
    let mut frames = Vec::new();
    while let Some(f) = d.next_frame()? {
        frames.push(f);
    }
    d.finish()?;
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey {
            source_hash: [n; 32],
            magic: [0xcb, 0x0d, b'\r', b'\n'],
            cache_tag: "cpython-312".into(),
            optimization: 0,
            settings: String::new(),
            dfile: format!("m{n}.py"),
        }
    }

    fn frames() -> Vec<Frame> {
        (0..3)
            .map(|n| Frame::new(key(n), &Entry::compiled(vec![0xe3, n, n], String::new())))
            .collect()
    }

    #[test]
    fn round_trip_in_any_chunking() {
        let fs = frames();
        let pack = encode_pack(&fs);
        assert_eq!(decode_pack(&pack, 1 << 20).unwrap(), fs);
        for chunk in [1, 3, 7, 64] {
            let mut d = PackDecoder::new(1 << 20);
            let mut got = Vec::new();
            for c in pack.chunks(chunk) {
                d.feed(c);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            d.finish().unwrap();
            assert_eq!(got, fs, "chunk size {chunk}");
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let pack = encode_pack(&frames());
        for cut in 0..pack.len() {
            assert!(decode_pack(&pack[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_pack(&encode_pack(&[]), 10).unwrap(), vec![]);
    }

    #[test]
    fn bad_magic_oversize_and_count_are_refused() {
        assert_eq!(decode_pack(b"GARBAGE!", 10), Err(PackError::BadMagic));
        let pack = encode_pack(&frames());
        assert!(matches!(
            decode_pack(&pack, 2),
            Err(PackError::TooLarge { index: 0, .. })
        ));
        let mut wrong_count = pack.clone();
        let n = wrong_count.len();
        wrong_count[n - 4] = 9;
        assert!(matches!(
            decode_pack(&wrong_count, 1 << 20),
            Err(PackError::CountMismatch { .. })
        ));
        let mut trailing = pack;
        trailing.push(0);
        assert_eq!(
            decode_pack(&trailing, 1 << 20),
            Err(PackError::TrailingBytes)
        );
    }

    #[test]
    fn signatures_round_trip_and_bad_ones_are_refused() {
        let signer = crate::signature::SigningKey::from_seed("ci", [3; 32]).unwrap();
        let mut fs = frames();
        for f in &mut fs {
            f.signatures
                .push(signer.sign(&f.key_digest(), &f.entry_digest()));
        }
        let pack = encode_pack(&fs);
        assert_eq!(decode_pack(&pack, 1 << 20).unwrap(), fs);
        for cut in 0..pack.len() {
            assert!(decode_pack(&pack[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        // A key name with a space where the first frame's name starts.
        let mut bad = pack.clone();
        let at = bad.windows(3).position(|w| w == [1, 2, b'c']).unwrap() + 2;
        bad[at] = b' ';
        assert!(matches!(
            decode_pack(&bad, 1 << 20),
            Err(PackError::BadSignature { index: 0 })
        ));
    }

    #[test]
    fn a_body_under_another_key_fails_its_digest() {
        let fs = frames();
        let swapped = Frame {
            key: fs[1].key.clone(),
            ..fs[0].clone()
        };
        assert_eq!(swapped.verify(), Err(FrameError::DigestMismatch));
    }

    #[test]
    fn verify_catches_corruption() {
        let mut f = frames().remove(0);
        assert!(f.verify().is_ok());
        f.entry_bytes[10] ^= 0xff;
        assert_eq!(f.verify(), Err(FrameError::DigestMismatch));
    }
}
