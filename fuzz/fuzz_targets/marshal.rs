//! The marshal reader, writer and relocation on arbitrary bytes: never a panic; a stream that
//! reads writes back the same bytes; a body that relocates relocates back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pycache_client::marshal::{read, relocate, to_bytes, Format};

const OLD: &str = "/a/old.py";
const NEW: &str = "/b/a-longer-path/new.py";

fuzz_target!(|data: &[u8]| {
    // The first byte picks the Python version the rest is read as.
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let version = (3, 8 + u32::from(selector % 8));
    let format = Format::for_python(version.0, version.1).expect("3.8 to 3.15");
    if let Ok(tree) = read(body, format) {
        assert_eq!(to_bytes(&tree).expect("a read tree writes"), body);
    }
    if let Ok(moved) = relocate(body, version, OLD, NEW) {
        let back = relocate(&moved, version, NEW, OLD).expect("a relocated body relocates back");
        assert_eq!(back, body);
    }
});
