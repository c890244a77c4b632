//! The probe script's JSON answer, and the settings fingerprint built from it.

use std::hash::Hasher;
use std::path::Path;

use serde::Deserialize;
use siphasher::sip::{SipHasher13, SipHasher24};

use super::Interpreter;

/// The bytes the probe script hashes with `importlib.util.source_hash`.
const HASH_PROBE_INPUT: &[u8] = b"pycache probe";

/// What `probe.py` prints. Everything but `version` is optional, so that an old interpreter's
/// partial answer still parses and can be reported as too old.
#[derive(Debug, Deserialize)]
pub(super) struct ProbeAnswer {
    version: Vec<u32>,
    error: Option<String>,
    implementation: Option<String>,
    magic: Option<String>,
    cache_tag: Option<String>,
    optimize: Option<u8>,
    pycache_prefix: Option<String>,
    stdout_encoding: Option<String>,
    sys_path: Option<Vec<String>>,
    #[serde(default)]
    safe_path: bool,
    source_hash: Option<String>,
    recursion_limit: Option<u32>,
    debug_ranges: Option<bool>,
    warnings_filters: Option<String>,
    #[serde(default)]
    dev_mode: bool,
    #[serde(default)]
    bytes_warning: u8,
    int_max_str_digits: Option<i64>,
    #[serde(default)]
    old_parser: bool,
    hash_seed: Option<String>,
    /// `sys.version_info` in full, e.g. `3.13.5final0`.
    release: Option<String>,
    /// `sys.implementation.version` in full (PyPy's own version on PyPy).
    implementation_version: Option<String>,
    /// `sys.executable` as the interpreter sees itself (the real binary behind a wrapper).
    real_executable: Option<String>,
    process_pool: Option<bool>,
    hardlinks: Option<bool>,
}

impl ProbeAnswer {
    /// Parses the JSON after the probe marker.
    pub(super) fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// `sys.version_info[:3]`.
    pub(super) fn version_tuple(&self) -> Result<(u32, u32, u32), String> {
        match self.version[..] {
            [major, minor, micro, ..] => Ok((major, minor, micro)),
            _ => Err(format!("unexpected version {:?}", self.version)),
        }
    }

    /// The [`Interpreter`] this answer describes; an error names the missing part.
    pub(super) fn into_interpreter(self, executable: &Path) -> Result<Interpreter, String> {
        if let Some(error) = &self.error {
            return Err(format!("the probe failed: {error}"));
        }
        let missing = |what: &str| format!("the probe's answer has no {what}");
        let magic_hex = self
            .magic
            .as_deref()
            .ok_or_else(|| missing("magic number"))?;
        let magic: [u8; 4] = hex::decode(magic_hex)
            .ok()
            .and_then(|m| m.try_into().ok())
            .ok_or_else(|| format!("bad magic number {magic_hex:?}"))?;
        let source_hash = self
            .source_hash
            .as_deref()
            .ok_or_else(|| missing("source hash"))?;
        let hash_based_siphash13 = siphash_variant(magic, source_hash)?;
        let settings = self.settings_fingerprint();
        let mut sys_path = self.sys_path.ok_or_else(|| missing("sys.path"))?;
        if !self.safe_path && !sys_path.is_empty() {
            sys_path.remove(0);
        }
        // A wrapper (a pyenv shim) runs the real interpreter: the workers run that one directly.
        let real_executable = self
            .real_executable
            .as_deref()
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_file())
            .unwrap_or_else(|| executable.to_path_buf());
        Ok(Interpreter {
            executable: executable.to_path_buf(),
            real_executable,
            version: match self.version[..] {
                [a, b, c, ..] => (a, b, c),
                _ => return Err(missing("version")),
            },
            implementation: self
                .implementation
                .ok_or_else(|| missing("implementation"))?,
            magic,
            // None is a real answer (3.15's compileall reports it): see `support.rs`.
            cache_tag: self.cache_tag.unwrap_or_default(),
            optimize: self.optimize.ok_or_else(|| missing("optimization level"))?,
            pycache_prefix: self.pycache_prefix,
            settings,
            stdout_encoding: self.stdout_encoding.unwrap_or_else(|| "utf-8".into()),
            sys_path_tail: sys_path,
            safe_path: self.safe_path,
            hash_based_siphash13,
            recursion_limit: self
                .recursion_limit
                .ok_or_else(|| missing("recursion limit"))?,
            process_pool: self
                .process_pool
                .ok_or_else(|| missing("process pool check"))?,
            hardlinks: self.hardlinks.ok_or_else(|| missing("os.link check"))?,
        })
    }

    /// The settings fingerprint: `v2;` then `;`-separated `name=value` parts, in this order:
    /// - `impl` — the implementation and its exact version (`cpython-3.13.5final0`): bytecode
    ///   changed within 3.13 patch releases without a new magic number (GH-135171 in 3.13.4);
    /// - `py` — `sys.version_info` in full;
    /// - `ndr` — 1 when `no_debug_ranges` is on (3.11+; measured by compiling, `-` before 3.11);
    /// - `w` — 16 hex digits of blake3 over the effective `warnings.filters` (`PYTHONWARNINGS`,
    ///   `-W`, dev mode): `error` turns a compile warning into a failure, `ignore` silences it;
    /// - `dev`, `bw` — dev mode and `-b` (only when set);
    /// - `oldparser` — 3.9 running its pgen parser (`PYTHONOLDPARSER`; only when set);
    /// - `digits` — `sys.get_int_max_str_digits()` (a long int literal is a SyntaxError past it);
    /// - `rl` — the recursion limit (deep nesting is a RecursionError below it, up to 3.11);
    /// - `seed` — `PYTHONHASHSEED` when fixed, on CPython < 3.11 and PyPy, whose bodies depend on
    ///   the string hash seed (3.11+ bodies do not).
    fn settings_fingerprint(&self) -> String {
        let ndr = match self.debug_ranges {
            Some(true) => "0",
            Some(false) => "1",
            None => "-",
        };
        let filters = self.warnings_filters.as_deref().unwrap_or("");
        let warn = &blake3::hash(filters.as_bytes()).to_hex()[..16];
        let implementation = self.implementation.as_deref().unwrap_or("?");
        let release = self.release.as_deref().unwrap_or("?");
        let impl_release = self.implementation_version.as_deref().unwrap_or("?");
        let mut out =
            format!("v2;impl={implementation}-{impl_release};py={release};ndr={ndr};w={warn}");
        if self.dev_mode {
            out.push_str(";dev=1");
        }
        if self.bytes_warning != 0 {
            out.push_str(&format!(";bw={}", self.bytes_warning));
        }
        if self.old_parser {
            out.push_str(";oldparser=1");
        }
        if let Some(digits) = self.int_max_str_digits {
            out.push_str(&format!(";digits={digits}"));
        }
        if let Some(limit) = self.recursion_limit {
            out.push_str(&format!(";rl={limit}"));
        }
        let seed_matters = self.implementation.as_deref() != Some("cpython")
            || (self.version.first(), self.version.get(1)) < (Some(&3), Some(&11));
        if let (true, Some(seed)) = (seed_matters, &self.hash_seed) {
            out.push_str(&format!(";seed={seed}"));
        }
        out
    }
}

/// Which SipHash `importlib.util.source_hash` uses, found by recomputing the probe's hash
/// (key: the magic number as a little-endian integer, and zero).
fn siphash_variant(magic: [u8; 4], answer_hex: &str) -> Result<bool, String> {
    let k0 = u64::from(u32::from_le_bytes(magic));
    let mut h13 = SipHasher13::new_with_keys(k0, 0);
    h13.write(HASH_PROBE_INPUT);
    let mut h24 = SipHasher24::new_with_keys(k0, 0);
    h24.write(HASH_PROBE_INPUT);
    let answer = answer_hex.to_ascii_lowercase();
    if answer == hex::encode(h13.finish().to_le_bytes()) {
        Ok(true)
    } else if answer == hex::encode(h24.finish().to_le_bytes()) {
        Ok(false)
    } else {
        Err(format!(
            "source_hash {answer_hex} is neither SipHash-1-3 nor SipHash-2-4"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> ProbeAnswer {
        ProbeAnswer::parse(json).unwrap()
    }

    #[test]
    fn siphash_variants_are_told_apart() {
        // Values printed by CPython 3.11.7 and 3.10.13 for importlib.util.source_hash(b"pycache probe").
        let m311 = [0xa7, 0x0d, 0x0d, 0x0a];
        let m310 = [0x6f, 0x0d, 0x0d, 0x0a];
        let k = |m: [u8; 4]| u64::from(u32::from_le_bytes(m));
        let mut h = SipHasher13::new_with_keys(k(m311), 0);
        h.write(HASH_PROBE_INPUT);
        assert_eq!(
            siphash_variant(m311, &hex::encode(h.finish().to_le_bytes())),
            Ok(true)
        );
        let mut h = SipHasher24::new_with_keys(k(m310), 0);
        h.write(HASH_PROBE_INPUT);
        assert_eq!(
            siphash_variant(m310, &hex::encode(h.finish().to_le_bytes())),
            Ok(false)
        );
        assert!(siphash_variant(m310, "0000000000000000").is_err());
    }

    #[test]
    fn fingerprint_lists_what_changes_bytes() {
        let base = r#"{"version":[3,11,7],"implementation":"cpython","debug_ranges":true,
            "warnings_filters":"[]","int_max_str_digits":4300,"recursion_limit":1000,"hash_seed":"0"}"#;
        let fp = answer(base).settings_fingerprint();
        assert!(fp.starts_with("v2;impl=cpython-?;py=?;ndr=0;w="), "{fp}");
        assert!(fp.ends_with(";digits=4300;rl=1000"), "{fp}");
        let no_ranges = base.replace(r#""debug_ranges":true"#, r#""debug_ranges":false"#);
        assert!(answer(&no_ranges).settings_fingerprint().contains("ndr=1"));
        let errors = base.replace(r#""[]""#, r#""[('error', None, 'Warning', None, 0)]""#);
        assert_ne!(answer(&errors).settings_fingerprint(), fp);
        let old = base.replace("[3,11,7]", "[3,10,13]");
        assert!(answer(&old).settings_fingerprint().ends_with(";seed=0"));
    }

    #[test]
    fn fingerprint_holds_the_exact_interpreter_build() {
        // 3.13.0 and 3.13.5 share a magic number but not their comprehension bytecode.
        let build = |release: &str| {
            let json = format!(
                r#"{{"version":[3,13,0],"implementation":"cpython","release":"{release}",
                "implementation_version":"{release}","warnings_filters":"[]"}}"#
            );
            answer(&json).settings_fingerprint()
        };
        assert_ne!(build("3.13.0final0"), build("3.13.5final0"));
        assert_ne!(build("3.13.0candidate1"), build("3.13.0final0"));
        assert!(build("3.13.5final0").contains("impl=cpython-3.13.5final0"));
        let pypy = r#"{"version":[3,9,16],"implementation":"pypy","release":"3.9.16final0",
            "implementation_version":"7.3.11final0","warnings_filters":"[]"}"#;
        assert!(answer(pypy)
            .settings_fingerprint()
            .contains("impl=pypy-7.3.11final0"));
    }

    #[test]
    fn partial_answer_from_an_old_python_still_parses() {
        let a = answer(r#"{"version": [2, 7, 18], "error": "ImportError: No module named util"}"#);
        assert_eq!(a.version_tuple(), Ok((2, 7, 18)));
        assert!(a
            .into_interpreter(Path::new("/x"))
            .unwrap_err()
            .contains("ImportError"));
    }
}
