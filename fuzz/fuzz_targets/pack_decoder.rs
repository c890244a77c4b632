//! The pack decoder on arbitrary bytes, whole and split at an arbitrary point: never a panic,
//! and the same answer both ways; what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pycache_proto::pack::{decode_pack, encode_pack, PackDecoder};

fuzz_target!(|data: &[u8]| {
    let whole = decode_pack(data, 1 << 16);
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut decoder = PackDecoder::new(1 << 16);
    let mut frames = Vec::new();
    let mut failed = false;
    for part in [&data[..split], &data[split..]] {
        decoder.feed(part);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break;
        }
    }
    let chunked_ok = !failed && decoder.finish().is_ok();
    assert_eq!(whole.is_ok(), chunked_ok);
    if let Ok(decoded) = whole {
        assert_eq!(decoded, frames);
        assert_eq!(encode_pack(&decoded), data);
    }
});
