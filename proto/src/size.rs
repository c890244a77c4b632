//! Sizes as people write them, for the server's and the client's settings.

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
