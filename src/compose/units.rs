//! Durations, memory sizes and decimal amounts as compose writes them, parsed with integer
//! arithmetic only: floats would make `0.1` CPUs come out as 99 or 100 milli depending on rounding,
//! and specs must compare exactly on every node.

/// Parses a Go-style duration (`1m30s`, `10s`, `500ms`, `1.5h`, `2us`, `0`) into whole
/// milliseconds, rounding half up. Negative durations and values past `u64` are errors.
pub(crate) fn duration_ms(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad = |why: &str| format!("invalid duration {text:?}: {why}");
    if s.is_empty() {
        return Err(bad("empty (use e.g. 10s or 1m30s)"));
    }
    if s.starts_with('-') {
        return Err(bad("durations cannot be negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(0);
    }
    let mut total_ns: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        rest = &rest[number_len..];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(bad("expected a number before each unit (e.g. 1m30s)"));
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(bad("missing unit (use ns, us, ms, s, m or h, e.g. 10s)")),
            other => {
                return Err(bad(&format!(
                    "unknown unit {other:?} (use ns, us, ms, s, m or h, e.g. 1m30s)"
                )))
            }
        };
        let part = scaled(number, unit_ns).ok_or_else(|| bad("too large"))?;
        total_ns = total_ns.checked_add(part).ok_or_else(|| bad("too large"))?;
    }
    let ms = total_ns.saturating_add(500_000) / 1_000_000;
    u64::try_from(ms).map_err(|_| bad("too large"))
}

/// `number` (digits with an optional fraction) times `scale`, truncating what is below 1.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let mut value: u128 = 0;
    for d in int.bytes() {
        value = value.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
    }
    value = value.checked_mul(scale)?;
    // 18 fraction digits are far below a nanosecond or a byte, and 10^18 times the largest
    // scale (2^50) still fits in a u128.
    let mut divisor: u128 = 1;
    let mut fraction: u128 = 0;
    for d in frac.bytes().take(18) {
        fraction = fraction * 10 + u128::from(d - b'0');
        divisor *= 10;
    }
    value.checked_add(fraction.checked_mul(scale)? / divisor)
}

/// Parses a memory size like Docker's `RAMInBytes`: a number with an optional fraction, an
/// optional space, then an optional `k`/`m`/`g`/`t`/`p` (binary multiples, any case), optional `i`
/// and optional `b`: `512M`, `1g`, `100k`, `1.5GiB`, `1024`.
pub(crate) fn memory_bytes(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad = |why: &str| format!("invalid memory size {text:?}: {why}");
    let number_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let number = &s[..number_len];
    if s.starts_with('-') {
        return Err(bad("cannot be negative"));
    }
    if number.is_empty()
        || number.starts_with('.')
        || number.ends_with('.')
        || number.matches('.').count() > 1
    {
        return Err(bad("expected a number and a unit such as 512M or 1g"));
    }
    let unit = s[number_len..]
        .strip_prefix(' ')
        .unwrap_or(&s[number_len..]);
    let lower = unit.to_ascii_lowercase();
    let mut chars = lower.chars();
    let shift = match chars.clone().next() {
        Some('k') => 10,
        Some('m') => 20,
        Some('g') => 30,
        Some('t') => 40,
        Some('p') => 50,
        _ => 0,
    };
    if shift != 0 {
        chars.next();
    }
    let suffix: String = chars.collect();
    if !matches!(suffix.as_str(), "" | "b" | "i" | "ib") || (shift == 0 && suffix.contains('i')) {
        return Err(bad(&format!(
            "unknown unit {unit:?} (use b, k, m, g, t or p, e.g. 512M)"
        )));
    }
    let bytes = scaled(number, 1u128 << shift).ok_or_else(|| bad("too large"))?;
    u64::try_from(bytes).map_err(|_| bad("too large"))
}

/// Parses a non-negative decimal (`0.5`, `2`, `.25`) into thousandths, rounding half up:
/// CPUs (`0.5` → 500) and failure ratios (`0.1` → 100).
pub(crate) fn thousandths(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad = |why: &str| format!("invalid number {text:?}: {why}");
    if s.starts_with('-') {
        return Err(bad("cannot be negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits_only = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_only(int) || !digits_only(frac) {
        return Err(bad("expected a decimal number such as 0.5"));
    }
    let mut value: u64 = 0;
    for d in int.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| bad("too large"))?;
    }
    let mut milli: u64 = 0;
    let frac = frac.as_bytes();
    for i in 0..3 {
        let d = frac.get(i).map_or(0, |d| u64::from(d - b'0'));
        milli = milli * 10 + d;
    }
    if frac.get(3).is_some_and(|d| *d >= b'5') {
        milli += 1;
    }
    value
        .checked_mul(1000)
        .and_then(|v| v.checked_add(milli))
        .ok_or_else(|| bad("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("10s"), Ok(10_000));
        assert_eq!(duration_ms("1m30s"), Ok(90_000));
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("1h"), Ok(3_600_000));
        assert_eq!(duration_ms("1.5h"), Ok(5_400_000));
        assert_eq!(duration_ms("2us"), Ok(0));
        assert_eq!(duration_ms("1500us"), Ok(2));
        assert_eq!(duration_ms("1499us"), Ok(1));
        assert_eq!(duration_ms("2µs"), Ok(0));
        assert_eq!(duration_ms("1h2m3s4ms5us6ns"), Ok(3_723_004));
        assert_eq!(duration_ms("0"), Ok(0));
        assert_eq!(duration_ms(" 0s "), Ok(0));
        assert_eq!(duration_ms(".5s"), Ok(500));
        assert_eq!(duration_ms("+3s"), Ok(3000));
    }

    #[test]
    fn bad_durations() {
        let e = duration_ms("10 parsecs").unwrap_err();
        assert!(e.contains("unknown unit \" parsecs\""), "{e}");
        assert!(duration_ms("10").unwrap_err().contains("missing unit"));
        assert!(duration_ms("").is_err());
        assert!(duration_ms("-1s").unwrap_err().contains("negative"));
        assert!(duration_ms("s").is_err());
        assert!(duration_ms("1..2s").is_err());
        assert!(duration_ms(".s").is_err());
        assert!(duration_ms("1d").unwrap_err().contains("\"d\""));
        assert!(duration_ms("99999999999999999999999999999999999999h")
            .unwrap_err()
            .contains("too large"));
        assert!(duration_ms(&"9".repeat(100)).is_err());
        assert!(duration_ms(&format!("{}h", "9".repeat(40))).is_err());
    }

    #[test]
    fn memory() {
        assert_eq!(memory_bytes("512M"), Ok(512 << 20));
        assert_eq!(memory_bytes("1g"), Ok(1 << 30));
        assert_eq!(memory_bytes("100k"), Ok(102_400));
        assert_eq!(memory_bytes("1024"), Ok(1024));
        assert_eq!(memory_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(memory_bytes("64 MB"), Ok(64 << 20));
        assert_eq!(memory_bytes("10b"), Ok(10));
        assert_eq!(memory_bytes("2T"), Ok(2 << 40));
        for bad in [
            "",
            "m",
            "1x",
            "-1m",
            "1.m",
            "1..5m",
            "1 2m",
            "1mm",
            "1i",
            "99999999p",
        ] {
            assert!(memory_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decimals() {
        assert_eq!(thousandths("0.5"), Ok(500));
        assert_eq!(thousandths("2"), Ok(2000));
        assert_eq!(thousandths(".25"), Ok(250));
        assert_eq!(thousandths("0.1"), Ok(100));
        assert_eq!(thousandths("0.0005"), Ok(1));
        assert_eq!(thousandths("0.0004"), Ok(0));
        assert_eq!(thousandths("1."), Ok(1000));
        for bad in [
            "",
            ".",
            "-0.5",
            "abc",
            "1e3",
            "1.2.3",
            "99999999999999999999",
        ] {
            assert!(thousandths(bad).is_err(), "{bad}");
        }
    }
}
