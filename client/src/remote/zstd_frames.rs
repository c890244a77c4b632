//! A zstd answer decoded frame by frame.
//!
//! The server answers a batch get as a sequence of zstd frames: each body as it stores it, one
//! frame each, and everything else in frames of its own. Decoding each frame apart means a body
//! damaged at rest costs that entry alone: its bytes are replaced by as many zeros as the frame
//! says it holds, so the pack stays in step and the entry fails its digest like any corrupt
//! entry, while the rest of the answer is used.

/// What a frame decoded to.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The frame's content.
    Bytes(Vec<u8>),
    /// The frame did not decode: this many zeros stand for its content.
    Damaged(usize),
}

/// Splits a zstd stream into frames as its bytes arrive and decodes each.
pub struct FrameDecoder {
    pending: Vec<u8>,
    consumed: usize,
    /// Most bytes one frame may announce (and so decode to, or stand for when damaged).
    max_content: u64,
    /// One decompression context for every frame (making one per frame cost more than
    /// decoding a small body); `None` if zstd could not make one.
    context: Option<zstd::bulk::Decompressor<'static>>,
}

impl FrameDecoder {
    /// A decoder refusing frames that announce more than `max_content` bytes (the server puts
    /// one entry, or the heads and small entries of one chunk, in a frame).
    pub fn new(max_content: u64) -> Self {
        FrameDecoder {
            pending: Vec::new(),
            consumed: 0,
            max_content,
            context: zstd::bulk::Decompressor::new().ok(),
        }
    }

    /// Takes more of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.consumed > 0 && self.consumed == self.pending.len() {
            self.pending.clear();
            self.consumed = 0;
        } else if self.consumed > (1 << 20) {
            self.pending.drain(..self.consumed);
            self.consumed = 0;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// The next whole frame's content, `Ok(None)` until one has arrived. An error means the
    /// stream is not a sequence of frames this decoder can follow (the answer is unusable).
    pub fn next(&mut self) -> Result<Option<Decoded>, String> {
        let rest = &self.pending[self.consumed..];
        let Some(frame) = frame_extent(rest)? else {
            return Ok(None);
        };
        let bytes = &rest[..frame.len];
        self.consumed += frame.len;
        if frame.skippable {
            return Ok(Some(Decoded::Bytes(Vec::new())));
        }
        let size = frame
            .content_size
            .ok_or("a zstd frame without its content size")?;
        if size > self.max_content {
            return Err(format!(
                "a zstd frame announces {size} bytes, more than {} an answer's frame may hold",
                self.max_content
            ));
        }
        let plain = match &mut self.context {
            Some(context) => context.decompress(bytes, size as usize),
            None => zstd::bulk::decompress(bytes, size as usize),
        };
        Ok(Some(match plain {
            Ok(plain) if plain.len() as u64 == size => Decoded::Bytes(plain),
            _ => Decoded::Damaged(size as usize),
        }))
    }

    /// Whether the stream ended between frames.
    pub fn is_clean_end(&self) -> bool {
        self.consumed == self.pending.len()
    }
}

/// Where a frame at the start of `bytes` ends.
struct Extent {
    len: usize,
    content_size: Option<u64>,
    skippable: bool,
}

/// The extent of the frame `bytes` starts with, once all of it is there (the zstd format:
/// frame header, then blocks up to the last one, then an optional checksum).
fn frame_extent(bytes: &[u8]) -> Result<Option<Extent>, String> {
    if bytes.len() < 4 {
        return Ok(None);
    }
    let magic = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
        if bytes.len() < 8 {
            return Ok(None);
        }
        let size = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
        let len = 8 + size;
        return Ok((bytes.len() >= len).then_some(Extent {
            len,
            content_size: None,
            skippable: true,
        }));
    }
    if magic != 0xFD2F_B528 {
        return Err(format!("not a zstd frame (magic {magic:#010x})"));
    }
    let Some(&descriptor) = bytes.get(4) else {
        return Ok(None);
    };
    let fcs_flag = descriptor >> 6;
    let single_segment = descriptor & 0b0010_0000 != 0;
    let checksum = descriptor & 0b0000_0100 != 0;
    let dict_id_len = [0usize, 1, 2, 4][usize::from(descriptor & 0b11)];
    let fcs_len = match (fcs_flag, single_segment) {
        (0, false) => 0,
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let mut at = 5 + usize::from(!single_segment) + dict_id_len;
    let header_end = at + fcs_len;
    if bytes.len() < header_end {
        return Ok(None);
    }
    let content_size = match fcs_len {
        0 => None,
        1 => Some(u64::from(bytes[at])),
        2 => Some(u64::from(u16::from_le_bytes([bytes[at], bytes[at + 1]])) + 256),
        4 => Some(u64::from(u32::from_le_bytes(
            bytes[at..at + 4].try_into().expect("4 bytes"),
        ))),
        _ => Some(u64::from_le_bytes(
            bytes[at..at + 8].try_into().expect("8 bytes"),
        )),
    };
    at = header_end;
    loop {
        if bytes.len() < at + 3 {
            return Ok(None);
        }
        let header =
            u32::from(bytes[at]) | u32::from(bytes[at + 1]) << 8 | u32::from(bytes[at + 2]) << 16;
        let last = header & 1 != 0;
        let block_size = (header >> 3) as usize;
        let data = match (header >> 1) & 0b11 {
            0 | 2 => block_size,
            1 => 1,
            _ => return Err("a zstd block of the reserved type".to_owned()),
        };
        at += 3 + data;
        if last {
            break;
        }
    }
    if checksum {
        at += 4;
    }
    Ok((bytes.len() >= at).then_some(Extent {
        len: at,
        content_size,
        skippable: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(stream: &[u8], step: usize) -> (Vec<Decoded>, bool) {
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            decoder.feed(piece);
            while let Some(decoded) = decoder.next().unwrap() {
                out.push(decoded);
            }
        }
        (out, decoder.is_clean_end())
    }

    #[test]
    fn frames_decode_one_by_one_however_the_bytes_arrive() {
        let a = b"first ".repeat(100);
        let b: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        let mut stream = zstd::bulk::compress(&a, 3).unwrap();
        stream.extend(zstd::bulk::compress(&b, 19).unwrap());
        stream.extend(zstd::bulk::compress(b"", 1).unwrap());
        for step in [1, 7, 4096, stream.len()] {
            let (out, clean) = decode_all(&stream, step);
            assert!(clean);
            assert_eq!(
                out,
                vec![
                    Decoded::Bytes(a.clone()),
                    Decoded::Bytes(b.clone()),
                    Decoded::Bytes(Vec::new())
                ]
            );
        }
    }

    #[test]
    fn a_damaged_frame_costs_itself_alone() {
        let a = b"an entry, an entry, an entry".repeat(50);
        let mut damaged = zstd::bulk::compress(&a, 3).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xFF;
        let mut stream = damaged;
        stream.extend(zstd::bulk::compress(b"after", 3).unwrap());
        let (out, clean) = decode_all(&stream, 64);
        assert!(clean);
        assert_eq!(out.len(), 2);
        match &out[0] {
            Decoded::Damaged(n) => assert_eq!(*n, a.len()),
            Decoded::Bytes(bytes) => assert_ne!(bytes, &a, "damage went unnoticed"),
        }
        assert_eq!(out[1], Decoded::Bytes(b"after".to_vec()));
    }

    #[test]
    fn a_frame_announcing_more_than_its_bound_is_refused_before_it_is_decoded() {
        let big = vec![7u8; 4096];
        let mut decoder = FrameDecoder::new(1024);
        decoder.feed(&zstd::bulk::compress(&big, 3).unwrap());
        let err = decoder.next().unwrap_err();
        assert!(err.contains("4096"), "{err}");
    }

    #[test]
    fn bytes_that_are_no_frame_are_an_error() {
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.feed(b"PYCPACK\x02 not zstd");
        assert!(decoder.next().is_err());
    }
}
