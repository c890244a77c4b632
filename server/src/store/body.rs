//! Bodies at rest: compressed once when stored (one zstd frame each, when that is smaller),
//! sent as stored.

/// The zstd level bodies are compressed with when stored: once per body, so a slower level
/// than a per-request one pays.
const LEVEL: i32 = 3;

thread_local! {
    /// Each thread's compression context: making one per body (and zeroing its tables) cost
    /// about as much as compressing a small body.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// A context that writes frames recording their content size, without a checksum (the
/// entry's digest checks it).
fn new_compressor() -> Option<zstd::bulk::Compressor<'static>> {
    let mut compressor = zstd::bulk::Compressor::new(LEVEL).ok()?;
    compressor.include_contentsize(true).ok()?;
    compressor.include_checksum(false).ok()?;
    Some(compressor)
}

/// An entry's bytes as they are stored.
pub enum AtRest<'a> {
    /// One zstd frame of the entry (its content size recorded in the frame header).
    Zstd(Vec<u8>),
    /// The entry itself: compression did not make it smaller.
    Plain(&'a [u8]),
}

impl<'a> AtRest<'a> {
    /// `entry` compressed when that is smaller.
    pub fn of(entry: &'a [u8]) -> AtRest<'a> {
        let frame = COMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = new_compressor();
            }
            cell.as_mut().and_then(|c| c.compress(entry).ok())
        });
        match frame {
            Some(frame) if frame.len() < entry.len() => AtRest::Zstd(frame),
            _ => AtRest::Plain(entry),
        }
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            AtRest::Zstd(frame) => frame,
            AtRest::Plain(entry) => entry,
        }
    }

    /// Whether they are a zstd frame.
    pub fn is_zstd(&self) -> bool {
        matches!(self, AtRest::Zstd(_))
    }

    /// Stored length.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether nothing is stored (an empty entry).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Largest entry a stored frame may decompress to.
const MAX_ENTRY: u64 = 256 << 20;

/// The length of the entry a stored zstd frame holds, from its header (the frame records it).
pub fn frame_content_size(frame: &[u8]) -> Result<u64, String> {
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) if size <= MAX_ENTRY => Ok(size),
        Ok(Some(size)) => Err(format!("the frame announces {size} bytes")),
        Ok(None) => Err("the frame does not record its size".to_owned()),
        Err(_) => Err("not a zstd frame".to_owned()),
    }
}

/// The entry bytes of a stored body: `bytes` themselves, or decompressed when `zstd` (to the
/// length its frame records; anything else is corruption). `_entry_size` is what the entry row
/// recorded, kept for the callers' sake: the frame's own record is the one decoded against.
pub fn plain_bytes(bytes: Vec<u8>, zstd: bool, _entry_size: u64) -> Result<Vec<u8>, String> {
    if !zstd {
        return Ok(bytes);
    }
    let size = frame_content_size(&bytes)? as usize;
    let plain = zstd::bulk::decompress(&bytes, size).map_err(|e| format!("zstd: {e}"))?;
    if plain.len() != size {
        return Err(format!(
            "decompresses to {} bytes, the entry has {size}",
            plain.len()
        ));
    }
    Ok(plain)
}

/// Largest block of a raw zstd frame (the format's block maximum).
const RAW_BLOCK: usize = 128 << 10;

/// `data` as one zstd frame of raw (uncompressed) blocks: how a zstd answer carries bytes the
/// server does not compress (pack headers, bodies stored plain) beside bodies sent as stored.
/// The frame records its content size, so it needs no window descriptor.
pub fn raw_zstd_frame(data: &[u8]) -> Vec<u8> {
    let blocks = data.len().div_ceil(RAW_BLOCK).max(1);
    let mut out = Vec::with_capacity(4 + 1 + 8 + 3 * blocks + data.len());
    out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    // Frame header descriptor: an 8-byte content size, single segment, no checksum, no
    // dictionary.
    out.push(0b1110_0000);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let mut chunks = data.chunks(RAW_BLOCK).peekable();
    if chunks.peek().is_none() {
        // One empty last raw block.
        out.extend_from_slice(&[0b001, 0, 0]);
        return out;
    }
    while let Some(chunk) = chunks.next() {
        let last = u32::from(chunks.peek().is_none());
        // Block header: last-block bit, block type 0 (raw), then the size.
        let header = last | ((chunk.len() as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_frames_and_stored_frames_decode_as_one_stream() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let entry = b"an entry that repeats, repeats, repeats, repeats itself".repeat(20);
        let stored = AtRest::of(&entry);
        assert!(stored.is_zstd(), "a repetitive entry compresses");
        let mut stream = raw_zstd_frame(b"head");
        stream.extend(raw_zstd_frame(&[]));
        stream.extend_from_slice(stored.bytes());
        stream.extend(raw_zstd_frame(&big));
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&entry);
        expected.extend_from_slice(&big);
        let decoded = zstd::stream::decode_all(&stream[..]).unwrap();
        assert_eq!(decoded, expected);
        assert_eq!(
            plain_bytes(stored.bytes().to_vec(), true, entry.len() as u64).unwrap(),
            entry
        );
        assert_eq!(frame_content_size(stored.bytes()), Ok(entry.len() as u64));
        let mut damaged = stored.bytes().to_vec();
        damaged[0] ^= 1;
        assert!(plain_bytes(damaged, true, entry.len() as u64).is_err());
    }

    #[test]
    fn an_entry_compression_does_not_shrink_stays_plain() {
        let noise: Vec<u8> = (0..64u32)
            .flat_map(|i| blake3::hash(&i.to_le_bytes()).as_bytes().to_vec())
            .collect();
        assert!(!AtRest::of(&noise).is_zstd());
    }
}
