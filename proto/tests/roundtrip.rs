//! Property tests of the wire formats: every encoding decodes back to what was encoded, a pack
//! decodes the same in any chunking, and no byte string makes a decoder panic.

use proptest::prelude::*;
use pycache_proto::api::{decode_key_list, encode_key_list};
use pycache_proto::pack::{decode_pack, encode_pack, Frame, PackDecoder};
use pycache_proto::{CacheKey, Entry, KeyDigest};

fn key() -> impl Strategy<Value = CacheKey> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 4]>(),
        ".{0,40}",
        0u8..3,
        ".{0,60}",
        ".{0,120}",
    )
        .prop_map(
            |(source_hash, magic, cache_tag, optimization, settings, dfile)| CacheKey {
                source_hash,
                magic,
                cache_tag,
                optimization,
                settings,
                dfile,
            },
        )
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        (proptest::collection::vec(any::<u8>(), 1..2000), ".{0,80}").prop_map(|(rest, w)| {
            let mut body = vec![0xe3];
            body.extend(rest);
            Entry::compiled(body, w)
        }),
        (".{0,200}", ".{0,80}").prop_map(|(m, w)| Entry::failed(m, w)),
    ]
}

proptest! {
    #[test]
    fn keys_round_trip(k in key()) {
        prop_assert_eq!(CacheKey::decode(&k.encode()).unwrap(), k.clone());
        let digest = k.digest();
        prop_assert_eq!(digest.to_hex().parse::<KeyDigest>().unwrap(), digest);
    }

    #[test]
    fn entries_round_trip(e in entry()) {
        prop_assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn packs_round_trip_in_any_chunking(
        parts in proptest::collection::vec((key(), entry()), 0..8),
        chunk in 1usize..300,
    ) {
        let frames: Vec<Frame> = parts.into_iter().map(|(k, e)| Frame::new(k, &e)).collect();
        let pack = encode_pack(&frames);
        prop_assert_eq!(decode_pack(&pack, 1 << 20).unwrap(), frames.clone());
        let mut decoder = PackDecoder::new(1 << 20);
        let mut got = Vec::new();
        for c in pack.chunks(chunk) {
            decoder.feed(c);
            while let Some(f) = decoder.next_frame().unwrap() {
                got.push(f);
            }
        }
        decoder.finish().unwrap();
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn key_lists_round_trip(raw in proptest::collection::vec(any::<[u8; 32]>(), 0..50)) {
        let keys: Vec<KeyDigest> = raw.into_iter().map(KeyDigest).collect();
        prop_assert_eq!(decode_key_list(&encode_key_list(&keys)).unwrap(), keys);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = CacheKey::decode(&bytes);
        let _ = Entry::decode(&bytes);
        let _ = decode_pack(&bytes, 1 << 16);
        let _ = decode_key_list(&bytes);
        let mut with_magic = pycache_proto::pack::PACK_MAGIC.to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = decode_pack(&with_magic, 1 << 16);
    }
}
