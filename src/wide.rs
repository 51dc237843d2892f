//! Exact decimal text <-> little-endian integers up to 256 bits.
//!
//! Owns: parsing decimal strings (sign, fraction, exponent) into the
//! two's-complement bytes of Int/UInt 8..256 and Decimal(P, S) values, with
//! range checks, and formatting those bytes back. The 256-bit arithmetic is
//! `bnum`'s (already in the graph through `clickhouse`); the decimal syntax
//! and scaling are ours. Must not: go through floating point (it would lose
//! digits), or panic on any input.

use bnum::types::U256;

/// What a parsed number must fit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// Bytes written: 1, 2, 4, 8, 16 or 32.
    pub bytes: usize,
    pub signed: bool,
    /// Digits after the point (Decimal scale; 0 for integers).
    pub scale: u32,
    /// Decimal precision: at most this many digits in total.
    pub precision: Option<u32>,
}

/// 2^bits as a 256-bit magnitude; `None` for 2^256.
fn pow2(bits: u32) -> Option<U256> {
    U256::ONE.checked_shl(bits)
}

/// Parses `text` exactly into `out[..target.bytes]` (little-endian two's
/// complement). Fraction digits beyond the scale are truncated, as
/// ClickHouse does.
pub(crate) fn parse(text: &str, t: Target, out: &mut [u8; 32]) -> Result<(), &'static str> {
    let s = text.as_bytes();
    let mut i = 0;
    let neg = match s.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut digits: Vec<u8> = Vec::with_capacity(s.len());
    let mut frac_len: i64 = 0;
    let mut seen_point = false;
    while i < s.len() {
        match s[i] {
            c @ b'0'..=b'9' => {
                digits.push(c - b'0');
                if seen_point {
                    frac_len += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            b'e' | b'E' => break,
            _ => return Err("not a number"),
        }
        i += 1;
    }
    if digits.is_empty() {
        return Err("not a number");
    }
    let mut exp: i64 = 0;
    if i < s.len() {
        let e = std::str::from_utf8(&s[i + 1..]).map_err(|_| "not a number")?;
        exp = e.parse::<i64>().map_err(|_| "bad exponent")?;
        if exp.abs() > 400 {
            return Err("exponent out of range");
        }
    }
    let shift = t.scale as i64 + exp - frac_len;
    if shift < 0 {
        let keep = digits.len().saturating_sub((-shift) as usize);
        // Integers must be whole; decimals drop extra digits like ClickHouse.
        if t.precision.is_none() && t.scale == 0 && digits[keep..].iter().any(|&d| d != 0) {
            return Err("not a whole number");
        }
        digits.truncate(keep);
    }
    let mut m = U256::ZERO;
    for &d in &digits {
        m = m
            .checked_mul(U256::TEN)
            .and_then(|m| m.checked_add(U256::from(d)))
            .ok_or("out of range")?;
    }
    if shift > 0 && !m.is_zero() {
        let scale = u32::try_from(shift)
            .ok()
            .and_then(|p| U256::TEN.checked_pow(p))
            .ok_or("out of range")?;
        m = m.checked_mul(scale).ok_or("out of range")?;
    }
    if let Some(limit) = t.precision.and_then(|p| U256::TEN.checked_pow(p)) {
        if m >= limit {
            return Err("more digits than the decimal's precision");
        }
    }
    let bits = (t.bytes * 8) as u32;
    if t.signed {
        // |min| = 2^(bits-1); the largest positive value is one less.
        let min_magnitude = pow2(bits - 1).unwrap_or(U256::MAX);
        if m > min_magnitude || (!neg && m == min_magnitude) {
            return Err("out of range");
        }
    } else {
        if neg && !m.is_zero() {
            return Err("negative value for an unsigned type");
        }
        if pow2(bits).is_some_and(|limit| m >= limit) {
            return Err("out of range");
        }
    }
    if neg {
        m = m.wrapping_neg();
    }
    for (chunk, digit) in out.chunks_exact_mut(8).zip(m.digits()) {
        chunk.copy_from_slice(&digit.to_le_bytes());
    }
    Ok(())
}

/// Formats little-endian bytes (1..=32 of them) as decimal text with `scale`
/// digits after the point.
pub(crate) fn format(bytes: &[u8], signed: bool, scale: u32) -> String {
    let n = bytes.len().min(32);
    let neg = signed && n > 0 && bytes[n - 1] & 0x80 != 0;
    let mut buf = [if neg { 0xff } else { 0 }; 32];
    buf[..n].copy_from_slice(&bytes[..n]);
    let mut m = U256::from_le_slice(&buf).unwrap_or(U256::ZERO);
    if neg {
        m = m.wrapping_neg();
    }
    let digits = m.to_string();
    let scale = scale as usize;
    let mut s = String::with_capacity(digits.len() + scale + 3);
    if neg {
        s.push('-');
    }
    if digits.len() <= scale {
        s.push('0');
        if scale > 0 {
            s.push('.');
            s.extend(std::iter::repeat_n('0', scale - digits.len()));
        }
        s.push_str(&digits);
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        s.push_str(int);
        if scale > 0 {
            s.push('.');
            s.push_str(frac);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str, bytes: usize, signed: bool, scale: u32) -> Result<String, &'static str> {
        let mut out = [0u8; 32];
        parse(
            text,
            Target {
                bytes,
                signed,
                scale,
                precision: None,
            },
            &mut out,
        )?;
        Ok(format(&out[..bytes], signed, scale))
    }

    #[test]
    fn exact_round_trips_and_ranges() {
        assert_eq!(
            p("18446744073709551615", 8, false, 0).unwrap(),
            "18446744073709551615"
        );
        assert!(p("18446744073709551616", 8, false, 0).is_err());
        assert_eq!(
            p("-170141183460469231731687303715884105728", 16, true, 0).unwrap(),
            "-170141183460469231731687303715884105728"
        );
        assert!(p("170141183460469231731687303715884105728", 16, true, 0).is_err());
        assert_eq!(p("1.23456", 8, true, 4).unwrap(), "1.2345");
        assert_eq!(p("-0.5", 4, true, 2).unwrap(), "-0.50");
        assert_eq!(p("1e3", 4, true, 0).unwrap(), "1000");
        assert_eq!(p("-0", 1, false, 0).unwrap(), "0");
        assert!(p("-1", 1, false, 0).is_err());
        assert!(p("1.2.3", 8, true, 0).is_err());
        assert!(p("", 8, true, 0).is_err());
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(p(max, 32, false, 0).unwrap(), max);
        let mut out = [0u8; 32];
        let t = Target {
            bytes: 4,
            signed: true,
            scale: 2,
            precision: Some(9),
        };
        assert!(parse("10000000.00", t, &mut out).is_err());
        assert!(parse("9999999.99", t, &mut out).is_ok());
    }
}
