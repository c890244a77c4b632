//! The key decoder on arbitrary bytes: never a panic; what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pycache_proto::CacheKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = CacheKey::decode(data) {
        assert_eq!(key.encode(), data);
    }
});
