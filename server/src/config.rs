//! Validated server settings, and the parsing of human sizes such as `10GiB`.

use std::time::Duration;

use crate::connections::ConnectionLimits;

/// What the running server enforces and advertises.
#[derive(Clone, Debug)]
pub struct Config {
    /// Anyone may read without a token.
    pub public_read: bool,
    /// Largest encoded entry accepted, in bytes.
    pub max_entry_bytes: u64,
    /// Largest request body accepted, in bytes; also the most a compressed upload may decode
    /// to.
    pub max_request_bytes: u64,
    /// Most times its compressed size a zstd upload may decode to (past its first MiB); `0`
    /// means no such limit.
    pub max_compression_ratio: u64,
    /// Most keys in one batch get.
    pub max_batch_keys: u64,
    /// Total bytes of entries kept; least-recently-used entries are evicted past it.
    pub max_store_bytes: Option<u64>,
    /// How often hit counts are flushed and eviction runs.
    pub maintenance_interval: Duration,
    /// Heavy requests (batch get, uploads) served at once; more wait for a slot.
    pub max_heavy_requests: usize,
    /// Time a request body may take to arrive in full.
    pub body_timeout: Duration,
    /// Open connections, header and idle timeouts.
    pub connections: ConnectionLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            public_read: false,
            max_entry_bytes: 8 << 20,
            max_request_bytes: 256 << 20,
            max_compression_ratio: 32,
            max_batch_keys: 50_000,
            max_store_bytes: Some(10 << 30),
            maintenance_interval: Duration::from_secs(10),
            max_heavy_requests: 16,
            body_timeout: Duration::from_secs(60),
            connections: ConnectionLimits::default(),
        }
    }
}

/// Parses `123`, `64KiB`, `10GiB`, `1.5GB`, `0` …: binary units (KiB, MiB, GiB, TiB) are powers
/// of 1024, decimal ones (KB, MB, GB, TB) of 1000; a bare number or `B` is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
            "unknown size unit {unit:?} in {text:?}: use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB"
        ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: write e.g. 512MiB or 10GiB"))?;
    let bytes = value * factor as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5 KB").unwrap(), 1500);
        assert_eq!(parse_size("64kib").unwrap(), 65536);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
