//! The entry decoder on arbitrary bytes: never a panic; what decodes re-encodes to the same
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pycache_proto::Entry;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = Entry::decode(data) {
        assert_eq!(entry.encode(), data);
    }
});
